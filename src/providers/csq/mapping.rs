//! From a CSQ purchase answer to an outcome.
//!
//! Classification (also in `docs/providers/csq.md`). CSQ answers with a top-level `rc` and one
//! `VoucherSaleReceipt` in `items` (some deployments flatten the receipt into the top
//! level; both are read):
//!
//! | field | value | meaning | class |
//! |---|---|---|---|
//! | `rc` | 0 | CSQ processed the request; the receipt decides | - |
//! | `rc` | any other | CSQ refused the request before the supplier saw it | final: `declined` |
//! | `finalstatus` | 0 | the supplier sold the voucher | final: `succeeded` |
//! | `finalstatus` | 1 | the supplier refused (`resultcode` says why) | final: `declined` |
//! | `finalstatus` | 2 | still processing at the supplier | pending (outcome unknown) |
//! | `finalstatus` | missing or other | cannot tell | unknown |
//!
//! `resultcode` is the supplier's own code: carried as `provider_code`, never interpreted on
//! its own. An `rc` of 0 with no receipt at all is unknown, never a silent success.

use serde_json::{Map, Value, json};

use crate::command::{OutcomeError, Status};

/// What a CSQ answer means for the command.
#[derive(Debug, Clone, PartialEq)]
pub enum Decision {
    /// A terminal outcome.
    Final {
        status: Status,
        result: Option<Value>,
        error: Option<OutcomeError>,
    },
    /// The voucher may or may not have been sold.
    Unknown(String),
}

/// Identifies the purchase in the outcome's `result`.
#[derive(Debug, Clone, Copy)]
pub struct PurchaseRef<'a> {
    pub terminal_id: i32,
    pub operator_id: i32,
    pub local_reference: i32,
    pub product_id: Option<&'a str>,
}

/// Classifies a purchase answer.
pub fn purchase_decision(answer: &Value, r: PurchaseRef<'_>) -> Decision {
    let Some(rc) = answer.get("rc").and_then(Value::as_i64) else {
        return Decision::Unknown("answer has no rc".into());
    };
    if rc != 0 {
        return Decision::Final {
            status: Status::Declined,
            result: None,
            error: Some(OutcomeError {
                code: "provider_refused".into(),
                message: text(answer, "resultmessage")
                    .unwrap_or_else(|| format!("CSQ refused the request (rc {rc})")),
                provider_code: Some(format!("rc:{rc}")),
            }),
        };
    }
    let receipt = match answer.get("items").and_then(Value::as_array) {
        Some(items) => match items.first() {
            Some(Value::Object(first)) => first,
            _ => return Decision::Unknown("rc 0 with an empty receipt list".into()),
        },
        None => match answer.as_object() {
            Some(top) if top.contains_key("finalstatus") => top,
            _ => return Decision::Unknown("rc 0 without a receipt".into()),
        },
    };
    match receipt.get("finalstatus").and_then(Value::as_i64) {
        Some(0) => Decision::Final {
            status: Status::Succeeded,
            result: Some(success_result(receipt, r)),
            error: None,
        },
        Some(1) => Decision::Final {
            status: Status::Declined,
            result: None,
            error: Some(OutcomeError {
                code: "provider_declined".into(),
                message: text_of(receipt, "resultmessage")
                    .unwrap_or_else(|| "the supplier declined the purchase".into()),
                provider_code: text_of(receipt, "resultcode"),
            }),
        },
        Some(2) => Decision::Unknown("finalstatus 2: still processing".into()),
        other => Decision::Unknown(format!("unexpected finalstatus {other:?}")),
    }
}

/// A 4xx refusal: the request was not accepted, so nothing happened. Final `failed`.
pub fn refusal(status: u16, body: &Value) -> crate::providers::Step {
    let message = body
        .get("resultmessage")
        .or_else(|| body.get("message"))
        .and_then(Value::as_str)
        .map(str::to_string)
        .unwrap_or_else(|| format!("the provider refused the request (HTTP {status})"));
    crate::providers::Step::failed(
        "provider_refused_request",
        message,
        Some(format!("http:{status}")),
    )
}

fn text(v: &Value, key: &str) -> Option<String> {
    v.as_object().and_then(|o| text_of(o, key))
}

fn text_of(o: &Map<String, Value>, key: &str) -> Option<String> {
    match o.get(key)? {
        Value::String(s) => Some(s.clone()),
        Value::Number(n) => Some(n.to_string()),
        _ => None,
    }
}

/// The `result` of a successful purchase, in the contract's snake_case.
fn success_result(receipt: &Map<String, Value>, r: PurchaseRef<'_>) -> Value {
    let extra = receipt
        .get("extraInfo")
        .and_then(Value::as_object)
        .cloned()
        .unwrap_or_default();
    json!({
        "terminal_id": r.terminal_id,
        "operator_id": r.operator_id,
        "local_reference": r.local_reference,
        "product_id": r.product_id,
        "redeem_code": text_of(&extra, "redeemCode"),
        "redeem_instructions": text_of(&extra, "redeemInstructions"),
        "redeem_account": text_of(&extra, "redeemAccount"),
        "expiration": text_of(&extra, "expiration"),
        "additional_data": additional_data(extra.get("additionalData")),
        "supplier_reference": text_of(receipt, "supplierreference"),
        "result_code": text_of(receipt, "resultcode"),
        "result_message": text_of(receipt, "resultmessage"),
        "has_additional_data": receipt.get("hasAdditionalData").and_then(Value::as_bool).unwrap_or(false),
        "destination_currency": text_of(receipt, "destinationcurrency"),
        "destination_amount_x100": receipt.get("destinationamount").and_then(|v| match v {
            Value::Number(n) => decimal_to_minor(&n.to_string()),
            _ => None,
        }),
    })
}

/// CSQ documents `additionalData` as one `{key, value}` pair; lists of pairs and plain maps
/// are seen too. All become one map from key to value.
fn additional_data(v: Option<&Value>) -> Value {
    fn pair(o: &Map<String, Value>, out: &mut Map<String, Value>) -> bool {
        match (o.get("key").and_then(Value::as_str), o.get("value")) {
            (Some(k), Some(v)) if o.len() == 2 => {
                out.insert(k.to_string(), v.clone());
                true
            }
            _ => false,
        }
    }
    let mut out = Map::new();
    match v {
        Some(Value::Object(o)) if !pair(o, &mut out) => out = o.clone(),
        Some(Value::Array(items)) => {
            for item in items.iter().filter_map(Value::as_object) {
                pair(item, &mut out);
            }
        }
        _ => {}
    }
    Value::Object(out)
}

/// Converts a decimal amount as written by the provider ("12.5", "7", "0.07") to minor units
/// without going through a float. More than two decimals, or a negative amount, is refused.
pub fn decimal_to_minor(s: &str) -> Option<i64> {
    let (whole, frac) = s.split_once('.').unwrap_or((s, ""));
    if whole.is_empty() || !whole.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let frac = frac.trim_end_matches('0');
    if frac.len() > 2 || !frac.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let cents: i64 = format!("{frac:0<2}").parse().ok()?;
    whole
        .parse::<i64>()
        .ok()?
        .checked_mul(100)?
        .checked_add(cents)
}

#[cfg(test)]
mod tests {
    use super::*;

    const REF: PurchaseRef<'static> = PurchaseRef {
        terminal_id: 1,
        operator_id: 1001,
        local_reference: 42,
        product_id: Some("gift"),
    };

    #[test]
    fn success_carries_the_voucher() {
        let answer = json!({"rc": 0, "items": [{"finalstatus": 0, "resultcode": "00",
            "extraInfo": {"redeemCode": "1111222233334444", "redeemInstructions": "Use online",
                          "expiration": "2027-01-01", "additionalData": {"key": "pin", "value": "99"}},
            "hasAdditionalData": false, "destinationamount": 12.5}]});
        let Decision::Final {
            status,
            result: Some(r),
            ..
        } = purchase_decision(&answer, REF)
        else {
            panic!("final expected")
        };
        assert_eq!(status, Status::Succeeded);
        assert_eq!(r["redeem_code"], "1111222233334444");
        assert_eq!(r["additional_data"]["pin"], "99");
        assert_eq!(r["destination_amount_x100"], 1250);
        assert_eq!(r["local_reference"], 42);
    }

    #[test]
    fn decline_and_refusal_are_final() {
        let d = purchase_decision(
            &json!({"rc": 0, "items": [{"finalstatus": 1, "resultcode": "14"}]}),
            REF,
        );
        assert!(matches!(
            d,
            Decision::Final {
                status: Status::Declined,
                ..
            }
        ));
        let d = purchase_decision(&json!({"rc": 17}), REF);
        let Decision::Final { error: Some(e), .. } = d else {
            panic!()
        };
        assert_eq!(e.provider_code.as_deref(), Some("rc:17"));
    }

    #[test]
    fn anything_unclear_is_unknown() {
        for a in [
            json!({}),
            json!({"rc": 0}),
            json!({"rc": 0, "items": []}),
            json!({"rc": 0, "items": [{"finalstatus": 2}]}),
            json!({"rc": 0, "items": [{"finalstatus": 9}]}),
        ] {
            assert!(
                matches!(purchase_decision(&a, REF), Decision::Unknown(_)),
                "{a}"
            );
        }
    }

    #[test]
    fn decimals_convert_without_floats() {
        assert_eq!(decimal_to_minor("12.5"), Some(1250));
        assert_eq!(decimal_to_minor("0.07"), Some(7));
        assert_eq!(decimal_to_minor("7"), Some(700));
        assert_eq!(decimal_to_minor("1.230"), Some(123));
        assert_eq!(decimal_to_minor("1.234"), None);
        assert_eq!(decimal_to_minor("-1"), None);
        assert_eq!(decimal_to_minor("1e3"), None);
    }
}
