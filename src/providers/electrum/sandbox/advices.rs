//! The state table, step 4 of the checks, for advices: the row that answers a confirmation
//! or reversal of a provision, redemption or refund, and its effect on the [`Ledger`].
//! Requests are in `table`.

use axum::http::StatusCode;
use serde_json::Value;

use super::answer::{Answer, refuse};
use super::ledger::{Advised, Ledger, Voucher};
use super::operation::{Family, Step};
use super::schema::Valid;

/// The errorTypes an advice can meet, per family.
struct AdviceRules {
    /// Confirming a confirmed transaction: `None` is an idempotent 202.
    confirmed_twice: Option<&'static str>,
    /// Confirming a reversed transaction.
    confirm_reversed: &'static str,
    /// Reversing a confirmed transaction.
    already_confirmed: &'static str,
}

/// The errorTypes of `family`'s advices.
fn advice_rules(family: Family) -> AdviceRules {
    match family {
        Family::Provision => AdviceRules {
            confirmed_twice: None,
            confirm_reversed: "VOUCHER_ALREADY_REVERSED",
            already_confirmed: "VOUCHER_ALREADY_CONFIRMED",
        },
        // Electrum's server confirms a redemption only while its voucher is redeemed; a
        // confirmed or reversed one is not, hence VOUCHER_NOT_REDEEMED for both.
        Family::Redemption => AdviceRules {
            confirmed_twice: Some("VOUCHER_NOT_REDEEMED"),
            confirm_reversed: "VOUCHER_NOT_REDEEMED",
            already_confirmed: "REDEMPTION_ALREADY_CONFIRMED",
        },
        Family::Refund => AdviceRules {
            confirmed_twice: Some("VOUCHER_NOT_REFUNDED"),
            confirm_reversed: "REFUND_ALREADY_REVERSED",
            already_confirmed: "REFUND_ALREADY_CONFIRMED",
        },
    }
}

/// The refusal of a `confirm` (or reversal) of a transaction in `state`, if it is refused.
fn advice_refusal(
    family: Family,
    state: Advised,
    confirm: bool,
) -> Option<(&'static str, &'static str)> {
    let rules = advice_rules(family);
    match (state, confirm) {
        (Advised::Open, _) | (Advised::Reversed, false) => None,
        (Advised::Confirmed, true) => rules
            .confirmed_twice
            .map(|t| (t, "The request was confirmed already.")),
        (Advised::Confirmed, false) => Some((
            rules.already_confirmed,
            "The request was confirmed and cannot be reversed.",
        )),
        (Advised::Reversed, true) => Some((
            rules.confirm_reversed,
            "The request was reversed and cannot be confirmed.",
        )),
    }
}

/// A confirmation or reversal (`step`) of the `family` request `message.key`: about the
/// latest approved request with that id.
pub(super) fn advise(ledger: &mut Ledger, family: Family, step: Step, message: &Valid) -> Answer {
    let (ids, request_id) = (message.ids, message.key);
    let confirm = step == Step::Confirm;
    let state = ledger.book(family).advised(request_id).map(|tx| tx.state);
    let Some(state) = state else {
        if !confirm {
            // Remembered, so that the request, should it arrive after all, is refused.
            ledger
                .book_mut(family)
                .remember_reversal(request_id, ids.id);
        }
        return refuse(
            StatusCode::NOT_FOUND,
            ids,
            "UNABLE_TO_LOCATE_RECORD",
            "No approved request with this requestId was received.",
        );
    };
    if let Some((error_type, why)) = advice_refusal(family, state, confirm) {
        return refuse(StatusCode::BAD_REQUEST, ids, error_type, why);
    }
    if !confirm {
        ledger
            .book_mut(family)
            .remember_reversal(request_id, ids.id);
    }
    let echo = Value::Object(message.msg.clone());
    let Some(tx) = ledger.book_mut(family).advised_mut(request_id) else {
        return Answer::new(StatusCode::ACCEPTED, echo, false);
    };
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
