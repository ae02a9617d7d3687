//! Every parser of a provider's JSON answer on arbitrary JSON: none panics, and none sees a
//! success in an answer that is not well formed. Bytes that are not JSON never reach these
//! parsers (the HTTP path makes them unknown), so they are skipped.

#![no_main]

use libfuzzer_sys::fuzz_target;
use serde_json::Value;
use uuid::Uuid;
use voucher_relay::command::Status;
use voucher_relay::providers::csq::mapping::{
    Decision, PurchaseRef, balance_step, products_list, purchase_decision, refusal,
};
use voucher_relay::providers::electrum::mapping::{
    advice_verdict, financial_step, lookup_redemption_step, lookup_step, provision_step, unreadable,
};
use voucher_relay::providers::{CallError, Step};

fn succeeded(step: &Step) -> bool {
    matches!(
        step,
        Step::Done {
            status: Status::Succeeded,
            ..
        }
    )
}

fuzz_target!(|data: &[u8]| {
    let Ok(answer) = serde_json::from_slice::<Value>(data) else {
        return;
    };
    // CSQ: a sale needs an integer rc 0 and one receipt with an integer finalstatus 0.
    let reference = PurchaseRef {
        terminal_id: 1,
        operator_id: 1001,
        local_reference: 1,
        product_id: None,
    };
    if let Decision::Final {
        status: Status::Succeeded,
        ..
    } = purchase_decision(&answer, reference)
    {
        assert_eq!(answer["rc"].as_i64(), Some(0));
        let receipt = match answer.get("items") {
            Some(Value::Array(items)) => {
                assert_eq!(items.len(), 1);
                &items[0]
            }
            _ => &answer,
        };
        assert_eq!(receipt["finalstatus"].as_i64(), Some(0));
    }
    if let Ok(list) = products_list(&answer) {
        assert!(list.as_array().is_some());
    }
    if succeeded(&balance_step(&answer, 1)) {
        assert_eq!(answer["rc"].as_i64(), Some(0));
    }
    assert!(!succeeded(&refusal(400, &answer)));

    // Electrum: a success needs the documented response; a refusal never is one.
    let id = Uuid::from_u128(7);
    for step in [
        financial_step(Ok(answer.clone()), id),
        provision_step(Ok(answer.clone()), id, true),
        lookup_redemption_step(Ok(answer.clone()), id),
    ] {
        assert!(!succeeded(&step) || unreadable(&answer, id).is_none());
    }
    if succeeded(&lookup_step(Ok(answer.clone()))) {
        assert!(
            answer["voucher"]["code"]
                .as_str()
                .is_some_and(|c| !c.is_empty())
        );
    }
    let refused = || {
        Err(CallError::Refused {
            status: 400,
            body: answer.clone(),
        })
    };
    assert!(!succeeded(&financial_step(refused(), id)));
    assert!(!succeeded(&lookup_step(refused())));
    let _ = advice_verdict(&refused(), Some(400));
});
