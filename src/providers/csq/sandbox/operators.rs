//! The dummy operators of the "dummy product usage guide": what each answers to a purchase
//! (sold, declined, a raffle ticket, a sale whose additional data comes later), the
//! receipts it sells, and the dynamic products of operator 1003.

use std::time::Duration;

use rand::Rng;
use serde_json::{Value, json};

use super::{
    OPERATOR_ADDITIONAL_DATA, OPERATOR_DECLINE, OPERATOR_DYNAMIC, OPERATOR_FLAKY, OPERATOR_OK,
    OPERATOR_RAFFLE, OPERATOR_SLOW, SandboxOptions,
};
use crate::providers::csq::params::PurchaseBody;

/// What a purchase answers.
pub(super) struct Decision {
    /// The purchase answer.
    pub(super) answer: Value,
    /// The full receipt, served by additional-data (and finished) later.
    pub(super) full: Value,
    /// How long until the full receipt is ready.
    pub(super) ready_after: Duration,
}

impl Decision {
    /// An answer that is already the full receipt.
    fn complete(full: Value) -> Decision {
        Decision {
            answer: full.clone(),
            full,
            ready_after: Duration::ZERO,
        }
    }
}

/// What `operator` answers to a purchase of `body`.
pub(super) fn decide_sale(
    options: &SandboxOptions,
    operator: i32,
    body: &PurchaseBody,
) -> Decision {
    let amount = body.amount_to_send_x100.filter(|a| *a > 0);
    match (operator, amount) {
        (OPERATOR_OK | OPERATOR_SLOW | OPERATOR_FLAKY, Some(amount)) => {
            Decision::complete(sold(amount, false))
        }
        (OPERATOR_ADDITIONAL_DATA, Some(amount)) => sale_with_additional_data(options, amount),
        (OPERATOR_DYNAMIC, _) => dynamic_sale(body, amount),
        (OPERATOR_RAFFLE, Some(amount)) => raffle_sale(options, amount),
        (
            OPERATOR_OK
            | OPERATOR_SLOW
            | OPERATOR_FLAKY
            | OPERATOR_ADDITIONAL_DATA
            | OPERATOR_RAFFLE,
            None,
        ) => declined("13", "amountToSendX100 is required and must be positive"),
        (OPERATOR_DECLINE, _) => declined("14", "Operation declined by the operator"),
        _ => Decision::complete(json!({"rc": 21, "resultmessage": "operator not found"})),
    }
}

/// A final decline with CSQ's result `code`.
fn declined(code: &str, message: &str) -> Decision {
    Decision::complete(
        json!({"rc": 0, "items": [{"finalstatus": 1, "resultcode": code, "resultmessage": message}]}),
    )
}

/// Operator 1002: sold now, the instructions and assets after
/// [`SandboxOptions::additional_data_delay`].
fn sale_with_additional_data(options: &SandboxOptions, amount: i32) -> Decision {
    let full = sold(amount, true);
    let mut answer = full.clone();
    // The sale is made; the instructions and assets come later.
    answer["items"][0]["hasAdditionalData"] = json!(true);
    answer["items"][0]["extraInfo"]["redeemInstructions"] = Value::Null;
    answer["items"][0]["extraInfo"]["additionalData"] = json!([]);
    Decision {
        answer,
        full,
        ready_after: options.additional_data_delay,
    }
}

/// Operator 1003: one of its dynamic products, at the product's price (an amount, if
/// given, must match it).
fn dynamic_sale(body: &PurchaseBody, amount: Option<i32>) -> Decision {
    let products = dynamic_products();
    let chosen = products.as_array().and_then(|list| {
        list.iter()
            .find(|p| {
                Some(p["dynamicProductId"].as_str().unwrap_or_default())
                    == body.dynamic_product_id.as_deref()
            })
            .cloned()
    });
    let Some(product) = chosen else {
        return declined(
            "30",
            "dynamicProductId is missing or unknown for this operator",
        );
    };
    let price = product["amountX100"]
        .as_i64()
        .and_then(|a| i32::try_from(a).ok())
        .unwrap_or(0);
    if amount.is_some_and(|a| a != price) {
        declined("31", "amountToSendX100 does not match the product's price")
    } else {
        Decision::complete(sold(price, false))
    }
}

/// Operator 1004: a raffle ticket, drawn [`SandboxOptions::draw_delay`] after the sale.
fn raffle_sale(options: &SandboxOptions, amount: i32) -> Decision {
    let mut full = sold(amount, false);
    let draw_at =
        chrono::Utc::now() + chrono::Duration::from_std(options.draw_delay).unwrap_or_default();
    let draw_at = draw_at.to_rfc3339_opts(chrono::SecondsFormat::Secs, true);
    let ticket = format!(
        "T{}",
        &full["items"][0]["extraInfo"]["redeemCode"]
            .as_str()
            .unwrap_or_default()[..10]
    );
    let extra = &mut full["items"][0]["extraInfo"];
    extra["redeemCode"] = json!(ticket);
    extra["redeemInstructions"] = json!(format!(
        "Keep this ticket. The draw takes place at {draw_at}."
    ));
    extra["additionalData"] = json!([{"key": "draw_at", "value": draw_at}]);
    Decision::complete(full)
}

/// The three products of operator 1003.
pub(super) fn dynamic_products() -> Value {
    json!([
        {"dynamicProductId": "DYN-1003-0500", "name": "Streaming card 5", "amountX100": 500, "currency": "EUR"},
        {"dynamicProductId": "DYN-1003-1000", "name": "Streaming card 10", "amountX100": 1000, "currency": "EUR"},
        {"dynamicProductId": "DYN-1003-2500", "name": "Streaming card 25", "amountX100": 2500, "currency": "EUR"}
    ])
}

/// A successful sale with a fresh voucher code.
fn sold(amount_x100: i32, with_assets: bool) -> Value {
    let mut rng = rand::rng();
    let code: String = (0..16)
        .map(|_| char::from(b'0' + rng.random_range(0..10u8)))
        .collect();
    let supplier_ref = format!("CSQ{}", rng.random_range(10_000_000u32..99_999_999));
    json!({
        "rc": 0,
        "items": [{
            "finalstatus": 0,
            "resultcode": "00",
            "resultmessage": "OK",
            "supplierreference": supplier_ref,
            "suppliertoken": format!("tok-{supplier_ref}"),
            "extraInfo": {
                "resultcode": 0,
                "resultmessage": "OK",
                "redeemAccount": null,
                "redeemInstructions": "Enter the code at checkout or in the store app.",
                "redeemCode": code,
                "expiration": (chrono::Utc::now() + chrono::Duration::days(365)).format("%Y-%m-%d").to_string(),
                "additionalData": if with_assets {
                    json!([
                        {"key": "face_value_x100", "value": amount_x100.to_string()},
                        {"key": "pdf_url", "value": format!("https://vouchers.example/pdf/{supplier_ref}.pdf")},
                        {"key": "barcode", "value": format!("EAN13:{}", &code[..12])},
                        {"key": "qr_payload", "value": format!("VOUCHER:{supplier_ref}:{code}")}
                    ])
                } else {
                    json!({"key": "face_value_x100", "value": amount_x100.to_string()})
                }
            },
            "hasAdditionalData": false,
            "destinationcurrency": "EUR",
            "destinationamount": decimal(amount_x100)
        }]
    })
}

/// A JSON number with two decimals, built from text so no float rounding enters.
fn decimal(minor: i32) -> Value {
    let text = format!("{}.{:02}", minor / 100, (minor % 100).abs());
    serde_json::from_str(&text).unwrap_or(Value::Null)
}
