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
use crate::providers::Step;

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
        return Decision::Unknown("answer has no integer rc".into());
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
    let receipt = match receipt_of(answer) {
        Ok(receipt) => receipt,
        Err(why) => return Decision::Unknown(why.into()),
    };
    match receipt.get("finalstatus").and_then(Value::as_i64) {
        // A sale whose receipt has fields of the wrong types is not reported as a success
        // with those fields dropped: it stays unknown, and is resolved like any unknown sale
        // (ending `outcome_unresolved` if CSQ never answers readably).
        Some(0) => match success_result(receipt, r) {
            Ok(result) => Decision::Final {
                status: Status::Succeeded,
                result: Some(result),
                error: None,
            },
            Err(why) => Decision::Unknown(format!("finalstatus 0, but {why}")),
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

/// The one receipt of an `rc` 0 answer: the only element of `items`, or the top level of a
/// flattened answer (no `items`, or `items: null`, and a `finalstatus`).
///
/// An `items` that is not a list is not read as a flattened answer (the top level would
/// then decide beside a receipt list of the wrong type), and two receipts for one
/// `localReference` cannot be told apart: both are unknown.
fn receipt_of(answer: &Value) -> Result<&Map<String, Value>, &'static str> {
    match answer.get("items") {
        Some(Value::Array(items)) => match items.as_slice() {
            [Value::Object(only)] => Ok(only),
            [] => Err("rc 0 with an empty receipt list"),
            [_] => Err("the receipt is not an object"),
            _ => Err("more than one receipt for one purchase"),
        },
        None | Some(Value::Null) => match answer.as_object() {
            Some(top) if top.contains_key("finalstatus") => Ok(top),
            _ => Err("rc 0 without a receipt"),
        },
        Some(_) => Err("items is not a list"),
    }
}

/// A 4xx refusal: the request was not accepted, so nothing happened. Final `failed`.
pub fn refusal(status: u16, body: &Value) -> Step {
    let message = body
        .get("resultmessage")
        .or_else(|| body.get("message"))
        .and_then(Value::as_str)
        .map(str::to_string)
        .unwrap_or_else(|| format!("the provider refused the request (HTTP {status})"));
    Step::failed(
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

/// The `result` of a successful purchase, in the contract's snake_case, or which field
/// has a type CSQ's schema does not allow (`csq-vouchers-purchase.txt`: texts are strings,
/// numbers are read as text too; `hasAdditionalData` a boolean; `destinationamount` a
/// decimal number). Absent and `null` fields are allowed: the schema makes them optional.
fn success_result(receipt: &Map<String, Value>, r: PurchaseRef<'_>) -> Result<Value, String> {
    let extra = match receipt.get("extraInfo") {
        None | Some(Value::Null) => Map::new(),
        Some(Value::Object(extra)) => extra.clone(),
        Some(_) => return Err("extraInfo is not an object".into()),
    };
    let has_additional_data = match receipt.get("hasAdditionalData") {
        None | Some(Value::Null) => false,
        Some(Value::Bool(b)) => *b,
        Some(_) => return Err("hasAdditionalData is not a boolean".into()),
    };
    let destination_amount_x100 = match receipt.get("destinationamount") {
        None | Some(Value::Null) => None,
        Some(Value::Number(n)) => Some(
            decimal_to_minor(&n.to_string())
                .ok_or("destinationamount is not an amount with at most two decimals")?,
        ),
        Some(_) => return Err("destinationamount is not a number".into()),
    };
    if !matches!(
        extra.get("additionalData"),
        None | Some(Value::Null | Value::Object(_) | Value::Array(_))
    ) {
        return Err("additionalData is neither an object nor a list".into());
    }
    let extra_text = |key: &str| checked_text(&extra, key);
    let receipt_text = |key: &str| checked_text(receipt, key);
    Ok(json!({
        "terminal_id": r.terminal_id,
        "operator_id": r.operator_id,
        "local_reference": r.local_reference,
        "product_id": r.product_id,
        "redeem_code": extra_text("redeemCode")?,
        "redeem_instructions": extra_text("redeemInstructions")?,
        "redeem_account": extra_text("redeemAccount")?,
        "expiration": extra_text("expiration")?,
        "additional_data": additional_data(extra.get("additionalData")),
        "supplier_reference": receipt_text("supplierreference")?,
        "result_code": receipt_text("resultcode")?,
        "result_message": receipt_text("resultmessage")?,
        "has_additional_data": has_additional_data,
        "destination_currency": receipt_text("destinationcurrency")?,
        "destination_amount_x100": destination_amount_x100,
    }))
}

/// A text field of a receipt: absent, `null`, a string or a number (read as text, as
/// [`text_of`] does); anything else (an object, a list, a boolean) is refused by name.
fn checked_text(o: &Map<String, Value>, key: &str) -> Result<Option<String>, String> {
    match o.get(key) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(_) | Value::Number(_)) => Ok(text_of(o, key)),
        Some(_) => Err(format!("{key} is not text")),
    }
}

/// The product list of a `products` answer: `rc` 0 and `items`, a list of products, each
/// an object with a `dynamicProductId` string and, where given, an integer `amountX100`
/// and text `name` and `currency`. Anything else says why it cannot be read: a list read
/// loosely could make a purchase buy the wrong product, or report an empty list as
/// CSQ's.
pub fn products_list(answer: &Value) -> Result<Value, String> {
    match answer.get("rc").and_then(Value::as_i64) {
        Some(0) => {}
        Some(rc) => return Err(format!("products answer with rc {rc}")),
        None => return Err("products answer without an integer rc".into()),
    }
    let Some(items) = answer.get("items").and_then(Value::as_array) else {
        return Err("products answer whose items is not a list".into());
    };
    for product in items {
        let Some(p) = product.as_object() else {
            return Err("a product is not an object".into());
        };
        if !matches!(p.get("dynamicProductId"), Some(Value::String(id)) if !id.is_empty()) {
            return Err("a product without a dynamicProductId string".into());
        }
        if !matches!(p.get("amountX100"), None | Some(Value::Null))
            && p.get("amountX100").and_then(Value::as_i64).is_none()
        {
            return Err("a product whose amountX100 is not an integer".into());
        }
        for key in ["name", "currency"] {
            if !matches!(p.get(key), None | Some(Value::Null | Value::String(_))) {
                return Err(format!("a product whose {key} is not a string"));
            }
        }
    }
    Ok(Value::Array(items.clone()))
}

/// What a 2xx balance answer means: `rc` 0 with `items`, a list of
/// `{currency, balanceX100, creditLimitX100?}` (our reading: the texts list the endpoint
/// without a schema), is the balance; another integer `rc` is CSQ's refusal; an answer
/// that cannot be read is asked again, as a read may be.
pub fn balance_step(answer: &Value, terminal_id: i32) -> Step {
    let rc = match answer.get("rc").and_then(Value::as_i64) {
        Some(rc) => rc,
        None => return Step::Retry("balance answer without an integer rc".into()),
    };
    if rc != 0 {
        return Step::failed(
            "provider_refused",
            "CSQ refused the balance request",
            Some(format!("rc:{rc}")),
        );
    }
    let Some(items) = answer.get("items").and_then(Value::as_array) else {
        return Step::Retry("balance answer whose items is not a list".into());
    };
    let mut balances = Vec::with_capacity(items.len());
    for item in items {
        let currency = item.get("currency").and_then(Value::as_str);
        let balance = item.get("balanceX100").and_then(Value::as_i64);
        let credit = match item.get("creditLimitX100") {
            None | Some(Value::Null) => Some(None),
            Some(v) => v.as_i64().map(Some),
        };
        let (Some(currency), Some(balance), Some(credit)) = (currency, balance, credit) else {
            return Step::Retry(
                "a balance without a currency string and integer amounts in minor units".into(),
            );
        };
        balances.push(json!({
            "currency": currency,
            "balance_x100": balance,
            "credit_limit_x100": credit,
        }));
    }
    Step::done(
        Status::Succeeded,
        Some(json!({"terminal_id": terminal_id, "balances": balances})),
        None,
    )
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

    #[test]
    fn wrong_json_types_are_never_a_sale() {
        let sale = |receipt: Value| json!({"rc": 0, "items": [receipt]});
        for a in [
            json!({"rc": "0", "items": [{"finalstatus": 0}]}),
            json!({"rc": 0.0, "items": [{"finalstatus": 0}]}),
            json!({"rc": null, "items": [{"finalstatus": 0}]}),
            json!({"rc": 0, "items": {"finalstatus": 0}}),
            json!({"rc": 0, "items": {"finalstatus": 0}, "finalstatus": 0}),
            json!({"rc": 0, "items": "sold", "finalstatus": 0}),
            json!({"rc": 0, "items": [{"finalstatus": 0}, {"finalstatus": 1}]}),
            json!({"rc": 0, "items": [[0]]}),
            json!({"rc": 0, "items": [null]}),
            sale(json!({"finalstatus": "0"})),
            sale(json!({"finalstatus": 0.0})),
            sale(json!({"finalstatus": null})),
            sale(json!({"finalstatus": 0, "extraInfo": "code 1234"})),
            sale(json!({"finalstatus": 0, "extraInfo": {"redeemCode": {"code": "1"}}})),
            sale(json!({"finalstatus": 0, "extraInfo": {"redeemCode": ["1"]}})),
            sale(json!({"finalstatus": 0, "extraInfo": {"additionalData": "pin 99"}})),
            sale(json!({"finalstatus": 0, "hasAdditionalData": "false"})),
            sale(json!({"finalstatus": 0, "destinationamount": "12.50"})),
            sale(json!({"finalstatus": 0, "destinationamount": 12.345})),
            sale(json!({"finalstatus": 0, "destinationamount": -1})),
            sale(json!({"finalstatus": 0, "resultcode": true})),
            json!([{"rc": 0}]),
            json!(null),
        ] {
            let d = purchase_decision(&a, REF);
            assert!(matches!(d, Decision::Unknown(_)), "{a}: {d:?}");
        }
        // Absent and null optional fields are fine; so is the flattened form.
        for a in [
            sale(
                json!({"finalstatus": 0, "extraInfo": null, "hasAdditionalData": null,
                        "destinationamount": null, "destinationcurrency": null}),
            ),
            json!({"rc": 0, "items": null, "finalstatus": 0}),
            json!({"rc": 0, "finalstatus": 0, "resultcode": 0}),
        ] {
            let d = purchase_decision(&a, REF);
            assert!(
                matches!(
                    d,
                    Decision::Final {
                        status: Status::Succeeded,
                        ..
                    }
                ),
                "{a}: {d:?}"
            );
        }
    }

    #[test]
    fn products_and_balances_of_the_wrong_types_are_unreadable() {
        let list = |items: Value| json!({"rc": 0, "items": items});
        assert!(
            products_list(&list(json!([{"dynamicProductId": "a", "amountX100": 500}]))).is_ok()
        );
        assert!(products_list(&list(json!([]))).is_ok());
        for a in [
            json!({"rc": "0", "items": []}),
            json!({"rc": 3, "items": []}),
            list(json!({"dynamicProductId": "a"})),
            list(json!("a")),
            list(json!([{"dynamicProductId": 7}])),
            list(json!([{"dynamicProductId": ""}])),
            list(json!([{"dynamicProductId": "a", "amountX100": 5.5}])),
            list(json!([{"dynamicProductId": "a", "amountX100": "500"}])),
            list(json!([{"dynamicProductId": "a", "name": 5}])),
            list(json!(["a"])),
        ] {
            assert!(products_list(&a).is_err(), "{a}");
        }
        let ok = json!({"rc": 0, "items": [{"currency": "EUR", "balanceX100": 100, "creditLimitX100": 0}]});
        assert!(matches!(
            balance_step(&ok, 1),
            Step::Done {
                status: Status::Succeeded,
                ..
            }
        ));
        for a in [
            json!({"rc": "0", "items": []}),
            json!({"rc": 0, "items": {}}),
            json!({"rc": 0}),
            json!({"rc": 0, "items": [{"currency": "EUR", "balanceX100": 1.5}]}),
            json!({"rc": 0, "items": [{"currency": "EUR", "balanceX100": "100"}]}),
            json!({"rc": 0, "items": [{"currency": 978, "balanceX100": 100}]}),
            json!({"rc": 0, "items": [{"currency": "EUR", "balanceX100": 1, "creditLimitX100": "0"}]}),
        ] {
            assert!(matches!(balance_step(&a, 1), Step::Retry(_)), "{a}");
        }
        assert!(matches!(
            balance_step(&json!({"rc": 5}), 1),
            Step::Done {
                status: Status::Failed,
                ..
            }
        ));
    }

    /// A sale as the sandbox (and `csq-vouchers-purchase.txt`) writes it.
    fn valid_sale() -> Value {
        json!({"rc": 0, "items": [{
            "finalstatus": 0, "resultcode": "00", "resultmessage": "OK",
            "supplierreference": "CSQ12345678", "suppliertoken": "tok",
            "extraInfo": {"resultcode": 0, "resultmessage": "OK", "redeemAccount": null,
                "redeemInstructions": "Enter the code", "redeemCode": "1111222233334444",
                "expiration": "2027-01-01",
                "additionalData": [{"key": "face_value_x100", "value": "2500"}]},
            "hasAdditionalData": false, "destinationcurrency": "EUR", "destinationamount": 25.0
        }]})
    }

    /// An independent reading of a well-formed sale, with serde's typed deserialization
    /// of the schema in `csq-vouchers-purchase.txt` (optional fields may be null).
    fn is_well_formed_sale(answer: &Value) -> bool {
        use serde::Deserialize;
        #[derive(Deserialize)]
        struct Top {
            rc: i64,
            items: Option<Vec<Value>>,
        }
        #[derive(Deserialize)]
        #[allow(dead_code)]
        struct Receipt {
            finalstatus: i64,
            resultcode: Option<Text>,
            resultmessage: Option<Text>,
            supplierreference: Option<Text>,
            destinationcurrency: Option<Text>,
            #[serde(rename = "extraInfo")]
            extra_info: Option<Map<String, Value>>,
            #[serde(rename = "hasAdditionalData")]
            has_additional_data: Option<bool>,
            destinationamount: Option<serde_json::Number>,
        }
        #[derive(Deserialize)]
        #[serde(rename_all = "camelCase")]
        #[allow(dead_code)]
        struct Extra {
            redeem_code: Option<Text>,
            redeem_instructions: Option<Text>,
            redeem_account: Option<Text>,
            expiration: Option<Text>,
            additional_data: Option<Data>,
        }
        #[derive(Deserialize)]
        #[serde(untagged)]
        #[allow(dead_code)]
        enum Text {
            S(String),
            N(serde_json::Number),
        }
        #[derive(Deserialize)]
        #[serde(untagged)]
        #[allow(dead_code)]
        enum Data {
            M(Map<String, Value>),
            L(Vec<Value>),
        }
        // serde reads a struct from a list too: objects are checked by hand.
        let Ok(top) = Top::deserialize(answer) else {
            return false;
        };
        let receipt = match top.items {
            Some(items) if items.len() == 1 => items[0].clone(),
            Some(_) => return false,
            None => answer.clone(),
        };
        if !answer.is_object() || !receipt.is_object() {
            return false;
        }
        let Ok(r) = Receipt::deserialize(&receipt) else {
            return false;
        };
        let extra_ok = r
            .extra_info
            .is_none_or(|e| Extra::deserialize(&Value::Object(e)).is_ok());
        let amount_ok = r
            .destinationamount
            .is_none_or(|n| decimal_to_minor(&n.to_string()).is_some());
        top.rc == 0 && r.finalstatus == 0 && extra_ok && amount_ok
    }

    fn is_sale(d: &Decision) -> bool {
        matches!(
            d,
            Decision::Final {
                status: Status::Succeeded,
                ..
            }
        )
    }

    #[test]
    fn the_valid_sale_is_one() {
        assert!(is_well_formed_sale(&valid_sale()));
        assert!(is_sale(&purchase_decision(&valid_sale(), REF)));
    }

    proptest::proptest! {
        /// Any JSON never panics the classification, and is a sale only when well formed.
        #[test]
        fn arbitrary_answers_are_sales_only_when_well_formed(
            a in crate::proptest_json::arb_json(),
            receipt in crate::proptest_json::arb_json(),
        ) {
            for answer in [a.clone(), json!({"rc": 0, "items": [receipt.clone()]})] {
                let d = purchase_decision(&answer, REF);
                proptest::prop_assert!(!is_sale(&d) || is_well_formed_sale(&answer), "{}", answer);
            }
            let _ = refusal(400, &a);
            let _ = decimal_to_minor(&a.to_string());
        }

        /// A sale with one change anywhere is a sale exactly when it is still well formed.
        #[test]
        fn mutated_sales_are_sales_exactly_when_well_formed(
            (index, change) in crate::proptest_json::mutation(),
        ) {
            let (pointer, answer) = crate::proptest_json::mutate(&valid_sale(), &index, &change);
            let d = purchase_decision(&answer, REF);
            proptest::prop_assert_eq!(is_sale(&d), is_well_formed_sale(&answer), "{:?} at {}: {}", change, pointer, answer);
        }

        /// Product lists and balances: no panic, and nothing read from the wrong types.
        #[test]
        fn products_and_balances_never_read_wrong_types(
            a in crate::proptest_json::arb_json(),
            items in crate::proptest_json::arb_json(),
            (index, change) in crate::proptest_json::mutation(),
        ) {
            let products = json!({"rc": 0, "items": [{"dynamicProductId": "DYN-1", "name": "n",
                "amountX100": 500, "currency": "EUR"}]});
            let balances = json!({"rc": 0, "items": [{"currency": "EUR", "balanceX100": 100,
                "creditLimitX100": 0}]});
            let candidates = [
                a.clone(),
                json!({"rc": 0, "items": items.clone()}),
                crate::proptest_json::mutate(&products, &index, &change).1,
                crate::proptest_json::mutate(&balances, &index, &change).1,
            ];
            for answer in candidates {
                if let Ok(list) = products_list(&answer) {
                    proptest::prop_assert_eq!(answer["rc"].as_i64(), Some(0));
                    for p in list.as_array().unwrap() {
                        proptest::prop_assert!(p["dynamicProductId"].as_str().is_some_and(|s| !s.is_empty()));
                        proptest::prop_assert!(p["amountX100"].is_null() || p["amountX100"].is_i64());
                    }
                }
                if let Step::Done { status: Status::Succeeded, result, .. } = balance_step(&answer, 1) {
                    proptest::prop_assert_eq!(answer["rc"].as_i64(), Some(0));
                    let items = answer["items"].as_array().unwrap();
                    for b in items {
                        proptest::prop_assert!(b["currency"].is_string() && b["balanceX100"].is_i64());
                    }
                    proptest::prop_assert_eq!(result.unwrap()["balances"].as_array().unwrap().len(), items.len());
                }
            }
        }
    }
}
