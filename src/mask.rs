//! Masking of voucher codes, PINs, secrets and personal data before anything is logged or
//! stored in the provider-exchange audit.

use serde_json::Value;

/// JSON keys whose values are never written out in clear, compared case-insensitively and
/// ignoring `_`, so `redeemCode`, `redeem_code` and `REDEEM_CODE` are all caught.
const SENSITIVE_KEYS: [&str; 19] = [
    "redeemcode",
    "vouchercode",
    "code",
    "pin",
    "password",
    "secret",
    "sh",
    "authorization",
    "documentnumber",
    "receiveremail",
    "email",
    "beneficiaryphonenumber",
    "phonenumber",
    "msisdn",
    "suppliertoken",
    "redeemaccount",
    "receivermessage",
    // CSQ's additional data carries the code again: a barcode of its digits, a QR payload.
    "barcode",
    "qrpayload",
];

fn is_sensitive(key: &str) -> bool {
    let norm: String = key
        .chars()
        .filter(|c| *c != '_' && *c != '-')
        .flat_map(char::to_lowercase)
        .collect();
    SENSITIVE_KEYS.contains(&norm.as_str())
}

/// Masks one sensitive string: keeps the last four characters of long values so an operator
/// can match a voucher with its holder, as receipts do with card numbers.
pub fn mask_str(s: &str) -> String {
    let n = s.chars().count();
    if n >= 12 {
        let tail: String = s.chars().skip(n - 4).collect();
        format!("****{tail}")
    } else {
        "****".to_string()
    }
}

/// Masks one value: strings keep their last four characters, anything else is hidden.
fn mask_value(v: &Value) -> Value {
    match v {
        Value::Null => Value::Null,
        Value::String(s) => Value::String(mask_str(s)),
        _ => Value::String("****".into()),
    }
}

/// Returns a copy of `value` with every sensitive field masked, at any depth. A
/// `{"key": <name>, "value": …}` pair (CSQ's `additionalData`) is masked when its name is.
pub fn mask_json(value: &Value) -> Value {
    match value {
        Value::Object(map)
            if map
                .get("key")
                .and_then(Value::as_str)
                .is_some_and(is_sensitive)
                && map.contains_key("value") =>
        {
            let mut out = map.clone();
            if let Some(v) = out.get_mut("value") {
                *v = mask_value(v);
            }
            Value::Object(out)
        }
        Value::Object(map) => Value::Object(
            map.iter()
                .map(|(k, v)| {
                    let masked = if is_sensitive(k) {
                        mask_value(v)
                    } else {
                        mask_json(v)
                    };
                    (k.clone(), masked)
                })
                .collect(),
        ),
        Value::Array(items) => Value::Array(items.iter().map(mask_json).collect()),
        other => other.clone(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn masks_at_any_depth_and_keeps_the_rest() {
        let v = json!({
            "rc": 0,
            "items": [{"extraInfo": {"redeemCode": "1234567890123456", "redeemInstructions": "go"}}],
            "documentNumber": "X123", "receiver_email": "a@b.c", "SH": "abc"
        });
        let m = mask_json(&v);
        assert_eq!(m["items"][0]["extraInfo"]["redeemCode"], "****3456");
        assert_eq!(m["items"][0]["extraInfo"]["redeemInstructions"], "go");
        assert_eq!(m["documentNumber"], "****");
        assert_eq!(m["receiver_email"], "****");
        assert_eq!(m["SH"], "****");
        assert_eq!(m["rc"], 0);
        assert!(!m.to_string().contains("1234567890123456"));
        let pairs = mask_json(
            &json!({"additionalData": [{"key": "pin", "value": "4321"}, {"key": "pdf", "value": "x"}]}),
        );
        assert_eq!(pairs["additionalData"][0]["value"], "****");
        assert_eq!(pairs["additionalData"][1]["value"], "x");
        // The code again, inside CSQ's assets.
        let assets = mask_json(&json!({"additionalData": [
            {"key": "barcode", "value": "EAN13:123456789012"},
            {"key": "qr_payload", "value": "VOUCHER:CSQ1:1234567890123456"}
        ]}));
        assert!(!assets.to_string().contains("123456789012"), "{assets}");
    }
}
