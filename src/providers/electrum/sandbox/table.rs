//! The state table, step 4 of the checks, for requests: for a provision, redemption or refund
//! that passed validation, authentication and faults, the row that answers it, and its effect
//! on the [`Ledger`]. Confirmations and reversals are in `advices`. The rows are listed in
//! the module doc of [`sandbox`](super) and in the sandbox manual.

use axum::http::StatusCode;
use serde_json::{Map, Value, json};

use super::advices::advise;
use super::answer::{Answer, ErrorIds, approved_echo, redeem_instructions, refuse, refuse_with};
use super::ledger::{Advised, Ledger, TxHeader, Voucher};
use super::operation::{Family, Step};
use super::schema::Valid;

/// Answers the valid `message` of `step` in `family` and applies its effect. `tx` is the
/// record a request starts (its id is `message.key`).
pub(super) fn apply_message(
    ledger: &mut Ledger,
    family: Family,
    step: Step,
    tx: TxHeader,
    message: &Valid,
) -> Answer {
    match (step, family) {
        (Step::Request, Family::Provision) => provision(ledger, tx, &message.msg),
        (Step::Request, _) => voucher_request(ledger, family, tx, &message.msg),
        (Step::Confirm | Step::Reverse, _) => advise(ledger, family, step, message),
    }
}

/// The `voucher.code` of a message, if it has one.
fn code_of(msg: &Map<String, Value>) -> Option<String> {
    let code = msg.get("voucher")?.get("code")?.as_str()?;
    Some(code.to_string())
}

/// A refusal with status 400.
fn bad(ids: ErrorIds, error_type: &str, why: &str) -> Answer {
    refuse(StatusCode::BAD_REQUEST, ids, error_type, why)
}

/// A ProvisionRequest: a voucher awaiting its confirmation, with the code the request asks
/// for (interface 1.2.0) or a fresh one. Provisions are keyed on the id alone: the voucher is
/// what a provision makes, so a resent provision gets the same answer whatever code it asks.
fn provision(ledger: &mut Ledger, tx: TxHeader, msg: &Map<String, Value>) -> Answer {
    let ids = ErrorIds::request(tx.id);
    if ledger.provisions.latest(tx.id).is_some() {
        return duplicate_provision(ledger, &tx, ids);
    }
    if let Some(reversal) = ledger.provisions.reversal(tx.id) {
        return already_reversed(Family::Provision, ids, reversal);
    }
    let code = match code_of(msg) {
        // Codes are never reused, not even a reversed voucher's: a code names one voucher
        // for good. DUPLICATE_RECORD, not FORMAT_ERROR: the request is well formed, the code
        // is a record that exists already (see the sandbox manual).
        Some(code) if ledger.vouchers.contains_key(&code) => {
            return bad(
                ids,
                "DUPLICATE_RECORD",
                "Another voucher has this code already; ask for another code, or none.",
            );
        }
        Some(code) => code,
        None => ledger.fresh_code(),
    };
    let expiry = (chrono::Utc::now() + chrono::Duration::days(365))
        .to_rfc3339_opts(chrono::SecondsFormat::Millis, true);
    let mut response = approved_echo(msg);
    response.insert(
        "voucher".into(),
        json!({"code": code, "expiryDate": expiry, "redeemInstructions": redeem_instructions()}),
    );
    ledger.vouchers.insert(
        code.clone(),
        Voucher {
            provision: tx.id,
            time: msg.get("time").cloned().unwrap_or(Value::Null),
            expiry,
            holder: None,
            pending_refund: None,
            refunded: false,
        },
    );
    let answer = Answer::new(StatusCode::CREATED, Value::Object(response), true);
    tx.record(ledger, Family::Provision, &code, &answer);
    answer
}

/// A provision sent again with the id of one already answered (open, confirmed or
/// reversed): DUPLICATE_RECORD carrying the voucher it provisioned, so a client that lost
/// the first answer learns its voucher. Only its own client is told the code.
fn duplicate_provision(ledger: &Ledger, tx: &TxHeader, ids: ErrorIds) -> Answer {
    let mut detail = Map::new();
    let known = ledger.provisions.latest(tx.id);
    if let Some(known) = known.filter(|known| known.client == tx.client) {
        if let Some(voucher) = ledger.voucher_body(&known.code) {
            detail.insert("voucher".into(), voucher);
        }
    }
    refuse_with(
        StatusCode::BAD_REQUEST,
        ids,
        "DUPLICATE_RECORD",
        "A provision with this id was received already.",
        detail,
    )
}

/// A request whose id a reversal named before: VOUCHER_, REDEMPTION_ or
/// REFUND_ALREADY_REVERSED, with the reversal's id.
fn already_reversed(family: Family, ids: ErrorIds, reversal: uuid::Uuid) -> Answer {
    let error_type = match family {
        Family::Provision => "VOUCHER_ALREADY_REVERSED",
        Family::Redemption => "REDEMPTION_ALREADY_REVERSED",
        Family::Refund => "REFUND_ALREADY_REVERSED",
    };
    let mut detail = Map::new();
    detail.insert("reversalId".into(), json!(reversal.to_string()));
    refuse_with(
        StatusCode::BAD_REQUEST,
        ids,
        error_type,
        "A reversal of this request was received already; it is not applied.",
        detail,
    )
}

/// A RedemptionRequest or RefundRequest. A reversal of its id, early or not, refuses it
/// whatever the voucher; the same id for the same voucher is a DUPLICATE_RECORD; the same id
/// for another voucher is a new request.
fn voucher_request(
    ledger: &mut Ledger,
    family: Family,
    tx: TxHeader,
    msg: &Map<String, Value>,
) -> Answer {
    let ids = ErrorIds::request(tx.id);
    let code = code_of(msg).unwrap_or_default();
    let book = ledger.book(family);
    let known = book.find(tx.id, &code).is_some();
    let answer = match book.reversal(tx.id) {
        Some(reversal) => already_reversed(family, ids, reversal),
        None if known => bad(
            ids,
            "DUPLICATE_RECORD",
            "A request with this id for this voucher was received already.",
        ),
        None if family == Family::Redemption => redeem(ledger, &tx, &code, msg),
        None => refund(ledger, &tx, &code, msg),
    };
    // The first answer for this id and voucher is kept (lookupRedemption replays it); a
    // repetition does not replace it.
    if !known {
        tx.record(ledger, family, &code, &answer);
    }
    answer
}

/// A redemption of the voucher `code`: its holder, if it is confirmed and nothing holds it.
fn redeem(ledger: &mut Ledger, tx: &TxHeader, code: &str, msg: &Map<String, Value>) -> Answer {
    let ids = ErrorIds::request(tx.id);
    let refusal = match ledger.vouchers.get(code) {
        // An unknown code is not told apart from an unconfirmed voucher, as Electrum's
        // server does: neither is a confirmed voucher.
        None => Some((
            "VOUCHER_NOT_REDEEMABLE",
            "No confirmed voucher has this code; only confirmed vouchers can be redeemed.",
        )),
        Some(v) if ledger.provision_state(v) != Advised::Confirmed => Some((
            "VOUCHER_NOT_REDEEMABLE",
            "The voucher's provision is not confirmed; only confirmed vouchers can be redeemed.",
        )),
        Some(v) if v.holder.is_some() => Some((
            "VOUCHER_ALREADY_REDEEMED",
            "A redemption for this voucher has already been received.",
        )),
        Some(_) => None,
    };
    if let Some((error_type, why)) = refusal {
        return bad(ids, error_type, why);
    }
    if let Some(v) = ledger.vouchers.get_mut(code) {
        v.holder = Some(tx.id);
        v.refunded = false;
    }
    Answer::new(StatusCode::CREATED, Value::Object(approved_echo(msg)), true)
}

/// A refund of the voucher `code`: a refund awaiting confirmation, if a confirmed redemption
/// holds the voucher.
fn refund(ledger: &mut Ledger, tx: &TxHeader, code: &str, msg: &Map<String, Value>) -> Answer {
    let ids = ErrorIds::request(tx.id);
    let not_redeemed = (
        "VOUCHER_NOT_REDEEMED",
        "The voucher is not redeemed, so there is nothing to refund.",
    );
    let refusal = match ledger.vouchers.get(code) {
        // Nothing redeemed an unknown code either.
        None => Some(not_redeemed),
        Some(v) if v.pending_refund.is_some() => Some((
            "VOUCHER_ALREADY_REFUNDED",
            "A refund for this voucher awaits confirmation.",
        )),
        Some(_) => match ledger.holder_state(code) {
            Some(Advised::Confirmed) => None,
            Some(Advised::Open) => Some((
                "REDEMPTION_NOT_CONFIRMED",
                "The voucher's redemption awaits confirmation; only confirmed ones are refunded.",
            )),
            _ => Some(not_redeemed),
        },
    };
    if let Some((error_type, why)) = refusal {
        return bad(ids, error_type, why);
    }
    if let Some(v) = ledger.vouchers.get_mut(code) {
        v.pending_refund = Some(tx.id);
    }
    Answer::new(StatusCode::CREATED, Value::Object(approved_echo(msg)), true)
}
