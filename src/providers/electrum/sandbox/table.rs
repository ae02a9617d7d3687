//! The state table of `electrum-suv-behaviour.md`, step 4 of the checks: for a message that
//! passed validation, authentication and faults, the row that answers it, and its effect on
//! the [`Ledger`]. The rows where the texts are silent are listed in the module doc of
//! [`sandbox`](super).

use axum::http::StatusCode;
use serde_json::{Map, Value, json};
use uuid::Uuid;

use super::answer::{Answer, approved_echo, redeem_instructions, refuse};
use super::ledger::{Advised, Ledger, Tx, TxHeader, Voucher};
use super::operation::{Family, Step};

/// Answers the message `msg` of `step` in `family`, whose request id is `tx.id`, and applies
/// its effect.
pub(super) fn apply_message(
    ledger: &mut Ledger,
    family: Family,
    step: Step,
    tx: TxHeader,
    msg: &Map<String, Value>,
) -> Answer {
    match (step, family) {
        (Step::Request, Family::Provision) => provision(ledger, tx, msg),
        (Step::Request, Family::Redemption) => redeem(ledger, tx, msg),
        (Step::Request, Family::Refund) => refund(ledger, tx, msg),
        (Step::Confirm | Step::Reverse, _) => advise(ledger, family, step, tx.id, msg),
    }
}

/// The errorTypes an advice can meet, per family.
struct AdviceRules {
    /// Confirming a confirmed transaction: `None` is an idempotent 202.
    confirmed_twice: Option<&'static str>,
    /// Confirming a reversed transaction.
    already_reversed: &'static str,
    /// Reversing a confirmed transaction.
    already_confirmed: &'static str,
}

/// The errorTypes of `family`'s advices, as the table names them.
fn advice_rules(family: Family) -> AdviceRules {
    match family {
        Family::Provision => AdviceRules {
            confirmed_twice: None,
            already_reversed: "VOUCHER_ALREADY_REVERSED",
            already_confirmed: "VOUCHER_ALREADY_CONFIRMED",
        },
        Family::Redemption => AdviceRules {
            confirmed_twice: Some("VOUCHER_NOT_REDEEMED"),
            already_reversed: "REDEMPTION_ALREADY_REVERSED",
            already_confirmed: "REDEMPTION_ALREADY_CONFIRMED",
        },
        Family::Refund => AdviceRules {
            confirmed_twice: Some("VOUCHER_NOT_REFUNDED"),
            already_reversed: "REFUND_ALREADY_REVERSED",
            already_confirmed: "REFUND_ALREADY_CONFIRMED",
        },
    }
}

/// The `voucher.code` of a redemption or refund.
fn voucher_code(msg: &Map<String, Value>) -> String {
    msg.get("voucher")
        .and_then(|v| v.get("code"))
        .and_then(Value::as_str)
        .unwrap_or_default()
        .to_string()
}

/// The same request id again: the table's DUPLICATE_RECORD, or `reversed` once reversed.
fn duplicate(tx: &Tx, id: &str, reversed: &str) -> Answer {
    if tx.state == Advised::Reversed {
        refuse(
            StatusCode::BAD_REQUEST,
            id,
            reversed,
            "A request with this id was reversed already.",
        )
    } else {
        refuse(
            StatusCode::BAD_REQUEST,
            id,
            "DUPLICATE_RECORD",
            "A request with this id was received already.",
        )
    }
}

/// A ProvisionRequest: a fresh voucher, awaiting its confirmation.
fn provision(ledger: &mut Ledger, tx: TxHeader, msg: &Map<String, Value>) -> Answer {
    let id = tx.id.to_string();
    if let Some(known) = ledger.provisions.get(&tx.id) {
        return duplicate(known, &id, "VOUCHER_ALREADY_REVERSED");
    }
    let code = ledger.fresh_code();
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

/// A RedemptionRequest: the voucher's holder, if it is confirmed and nothing holds it.
fn redeem(ledger: &mut Ledger, tx: TxHeader, msg: &Map<String, Value>) -> Answer {
    let id = tx.id.to_string();
    if let Some(known) = ledger.redemptions.get(&tx.id) {
        return duplicate(known, &id, "REDEMPTION_ALREADY_REVERSED");
    }
    let code = voucher_code(msg);
    let refusal = match ledger.vouchers.get(&code) {
        None => Some(("UNKNOWN_VOUCHER", "No voucher has this code.")),
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
    let answer = match refusal {
        Some((error_type, why)) => refuse(StatusCode::BAD_REQUEST, &id, error_type, why),
        None => {
            if let Some(v) = ledger.vouchers.get_mut(&code) {
                v.holder = Some(tx.id);
                v.refunded = false;
            }
            Answer::new(StatusCode::CREATED, Value::Object(approved_echo(msg)), true)
        }
    };
    tx.record(ledger, Family::Redemption, &code, &answer);
    answer
}

/// A RefundRequest: a refund awaiting confirmation, if a confirmed redemption holds the
/// voucher.
fn refund(ledger: &mut Ledger, tx: TxHeader, msg: &Map<String, Value>) -> Answer {
    let id = tx.id.to_string();
    if let Some(known) = ledger.refunds.get(&tx.id) {
        return duplicate(known, &id, "REFUND_ALREADY_REVERSED");
    }
    let code = voucher_code(msg);
    let holder_state = |holder: &Uuid| ledger.redemptions.get(holder).map(|r| r.state);
    let refusal = match ledger.vouchers.get(&code) {
        None => Some(("UNKNOWN_VOUCHER", "No voucher has this code.")),
        Some(v) if v.pending_refund.is_some() => Some((
            "VOUCHER_ALREADY_REFUNDED",
            "A refund for this voucher awaits confirmation.",
        )),
        Some(v) => match v.holder.as_ref().and_then(holder_state) {
            Some(Advised::Confirmed) => None,
            Some(Advised::Open) => Some((
                "REDEMPTION_NOT_CONFIRMED",
                "The voucher's redemption awaits confirmation; only confirmed ones are refunded.",
            )),
            _ => Some((
                "VOUCHER_NOT_REDEEMED",
                "The voucher is not redeemed, so there is nothing to refund.",
            )),
        },
    };
    let answer = match refusal {
        Some((error_type, why)) => refuse(StatusCode::BAD_REQUEST, &id, error_type, why),
        None => {
            if let Some(v) = ledger.vouchers.get_mut(&code) {
                v.pending_refund = Some(tx.id);
            }
            Answer::new(StatusCode::CREATED, Value::Object(approved_echo(msg)), true)
        }
    };
    tx.record(ledger, Family::Refund, &code, &answer);
    answer
}

/// A confirmation or reversal of the `family` transaction `request_id`.
fn advise(
    ledger: &mut Ledger,
    family: Family,
    step: Step,
    request_id: Uuid,
    advice: &Map<String, Value>,
) -> Answer {
    let id = request_id.to_string();
    let rules = advice_rules(family);
    let Some(tx) = ledger
        .txs(family)
        .get_mut(&request_id)
        .filter(|tx| tx.approved)
    else {
        return refuse(
            StatusCode::NOT_FOUND,
            &id,
            "UNABLE_TO_LOCATE_RECORD",
            "No approved request with this requestId was received.",
        );
    };
    let confirm = step == Step::Confirm;
    let refusal = match (tx.state, confirm) {
        (Advised::Open, _) => None,
        (Advised::Confirmed, true) => rules.confirmed_twice,
        (Advised::Confirmed, false) => Some(rules.already_confirmed),
        (Advised::Reversed, true) => Some(rules.already_reversed),
        (Advised::Reversed, false) => None,
    };
    if let Some(error_type) = refusal {
        let why = match (tx.state, confirm) {
            (Advised::Confirmed, true) => "The request was confirmed already.",
            (Advised::Confirmed, false) => "The request was confirmed and cannot be reversed.",
            _ => "The request was reversed and cannot be confirmed.",
        };
        return refuse(StatusCode::BAD_REQUEST, &id, error_type, why);
    }
    let echo = Value::Object(advice.clone());
    if tx.state != Advised::Open {
        // Confirmed again or reversed again: the same answer, no second effect.
        return Answer::new(StatusCode::ACCEPTED, echo, false);
    }
    tx.state = if confirm {
        Advised::Confirmed
    } else {
        Advised::Reversed
    };
    let code = tx.code.clone();
    if let Some(voucher) = ledger.vouchers.get_mut(&code) {
        settle_voucher(voucher, family, confirm);
    }
    Answer::new(StatusCode::ACCEPTED, echo, true)
}

/// What the first confirmation (`confirm`) or reversal of a `family` transaction does to its
/// voucher.
fn settle_voucher(voucher: &mut Voucher, family: Family, confirm: bool) {
    match (family, confirm) {
        // The voucher is redeemable again.
        (Family::Redemption, false) => voucher.holder = None,
        // Refunded for good: redeemable again.
        (Family::Refund, true) => {
            voucher.holder = None;
            voucher.pending_refund = None;
            voucher.refunded = true;
        }
        // The redemption stays confirmed.
        (Family::Refund, false) => voucher.pending_refund = None,
        _ => {}
    }
}
