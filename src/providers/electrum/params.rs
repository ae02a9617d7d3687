//! Params of the `electrum` commands.
//!
//! Upstream systems name the merchant and terminal in Electrum's own `Originator` shape
//! (camelCase, as in `electrum-suv-examples/`): payment engineers wiring a POS already hold
//! it in that form, and passing it through unchanged leaves nothing to mistranslate. The
//! relay adds `client` (from the config) and its own ids.

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};
use uuid::Uuid;

use crate::command::{RejectReason, amount_field, only_params};

/// Longest accepted text field.
const MAX_TEXT: usize = 128;

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Institution {
    pub id: String,
    pub name: String,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct MerchantName {
    pub name: String,
    pub city: String,
    pub region: String,
    pub country: String,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Merchant {
    pub merchant_type: String,
    pub merchant_id: String,
    pub merchant_name: MerchantName,
}

/// Who is transacting: merchant, terminal and acquiring institution.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Originator {
    pub institution: Institution,
    pub terminal_id: String,
    pub merchant: Merchant,
}

/// What the consumer paid for a provisioned voucher; sent in the confirmation's `tenders`.
#[derive(Debug, Clone, PartialEq)]
pub struct Tender {
    pub amount_minor: i32,
    /// ISO 4217 numeric, as Electrum's examples write it ("710").
    pub currency: String,
}

/// `provision.electrum`: request a voucher.
#[derive(Debug, Clone, PartialEq)]
pub struct ProvisionParams {
    pub originator: Originator,
    pub receiver: Option<Institution>,
    pub tender: Option<Tender>,
    /// A code the client chose for the voucher (SUV interface 1.2.0: `voucher.code`); the
    /// provider issues its own when absent.
    pub voucher_code: Option<String>,
}

/// `redeem.electrum` and `refund.electrum`: act on a voucher by its code.
#[derive(Debug, Clone, PartialEq)]
pub struct VoucherParams {
    pub originator: Originator,
    pub receiver: Option<Institution>,
    pub voucher_code: String,
}

/// `lookup.electrum` (lookupVoucher): at least one of the two keys.
#[derive(Debug, Clone, PartialEq)]
pub struct LookupParams {
    pub voucher_code: Option<String>,
    pub provision_request_id: Option<Uuid>,
    pub voucher_serial_number: Option<String>,
    pub receiver_inst_id: Option<String>,
    pub settlement_entity_inst_id: Option<String>,
}

/// `lookup_redemption.electrum`: the outcome of an earlier redemption, by its request id
/// (the `request_id` of a `redeem` outcome).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LookupRedemptionParams {
    pub request_id: Uuid,
}

impl ProvisionParams {
    pub fn from_params(p: &Map<String, Value>) -> Result<ProvisionParams, RejectReason> {
        only_params(
            p,
            &[
                "originator",
                "receiver",
                "amount_minor",
                "currency",
                "voucher_code",
            ],
        )?;
        let amount = amount_field(p, "amount_minor")?;
        let currency = text(p, "currency")?;
        let tender = match (amount, currency) {
            (None, None) => None,
            (Some(amount_minor), Some(currency)) => {
                if currency.len() != 3 || !currency.bytes().all(|b| b.is_ascii_digit()) {
                    return Err(RejectReason::InvalidField(
                        "params.currency".into(),
                        "must be an ISO 4217 numeric code such as \"710\"".into(),
                    ));
                }
                Some(Tender {
                    amount_minor,
                    currency,
                })
            }
            (Some(_), None) => return Err(RejectReason::MissingField("params.currency")),
            (None, Some(_)) => return Err(RejectReason::MissingField("params.amount_minor")),
        };
        Ok(ProvisionParams {
            originator: object(p, "originator")?
                .ok_or(RejectReason::MissingField("params.originator"))?,
            receiver: object(p, "receiver")?,
            tender,
            voucher_code: text(p, "voucher_code")?,
        })
    }
}

impl VoucherParams {
    pub fn from_params(p: &Map<String, Value>) -> Result<VoucherParams, RejectReason> {
        only_params(p, &["originator", "receiver", "voucher_code"])?;
        Ok(VoucherParams {
            originator: object(p, "originator")?
                .ok_or(RejectReason::MissingField("params.originator"))?,
            receiver: object(p, "receiver")?,
            voucher_code: text(p, "voucher_code")?
                .ok_or(RejectReason::MissingField("params.voucher_code"))?,
        })
    }
}

impl LookupParams {
    pub fn from_params(p: &Map<String, Value>) -> Result<LookupParams, RejectReason> {
        only_params(
            p,
            &[
                "voucher_code",
                "provision_request_id",
                "voucher_serial_number",
                "receiver_inst_id",
                "settlement_entity_inst_id",
            ],
        )?;
        let params = LookupParams {
            voucher_code: text(p, "voucher_code")?,
            provision_request_id: uuid(p, "provision_request_id")?,
            voucher_serial_number: text(p, "voucher_serial_number")?,
            receiver_inst_id: text(p, "receiver_inst_id")?,
            settlement_entity_inst_id: text(p, "settlement_entity_inst_id")?,
        };
        if params.voucher_code.is_none() && params.provision_request_id.is_none() {
            return Err(RejectReason::MissingField(
                "params.voucher_code or params.provision_request_id",
            ));
        }
        Ok(params)
    }

    /// The query string of `GET /vouchers`, in Electrum's parameter names.
    pub fn query(&self) -> Vec<(&'static str, String)> {
        let mut q = Vec::new();
        let mut add = |k: &'static str, v: Option<String>| {
            if let Some(v) = v {
                q.push((k, v));
            }
        };
        add("voucherCode", self.voucher_code.clone());
        add(
            "provisionRequestId",
            self.provision_request_id.map(|u| u.to_string()),
        );
        add("voucherSerialNumber", self.voucher_serial_number.clone());
        add("receiverInstId", self.receiver_inst_id.clone());
        add(
            "settlementEntityInstId",
            self.settlement_entity_inst_id.clone(),
        );
        q
    }
}

impl LookupRedemptionParams {
    pub fn from_params(p: &Map<String, Value>) -> Result<LookupRedemptionParams, RejectReason> {
        only_params(p, &["request_id"])?;
        Ok(LookupRedemptionParams {
            request_id: uuid(p, "request_id")?
                .ok_or(RejectReason::MissingField("params.request_id"))?,
        })
    }
}

fn text(p: &Map<String, Value>, field: &str) -> Result<Option<String>, RejectReason> {
    let invalid = |why: &str| RejectReason::InvalidField(format!("params.{field}"), why.into());
    match p.get(field) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(s)) if s.is_empty() => Err(invalid("must not be empty")),
        Some(Value::String(s)) if s.len() > MAX_TEXT => {
            Err(invalid(&format!("longer than {MAX_TEXT} bytes")))
        }
        Some(Value::String(s)) => Ok(Some(s.clone())),
        Some(_) => Err(invalid("must be a string")),
    }
}

fn uuid(p: &Map<String, Value>, field: &str) -> Result<Option<Uuid>, RejectReason> {
    text(p, field)?
        .map(|s| {
            s.parse::<Uuid>().map_err(|_| {
                RejectReason::InvalidField(format!("params.{field}"), "not a UUID".into())
            })
        })
        .transpose()
}

/// An Electrum-shaped object; serde names the missing or unknown field. Values are never
/// echoed: a type error says only which type was expected.
fn object<T: serde::de::DeserializeOwned>(
    p: &Map<String, Value>,
    field: &str,
) -> Result<Option<T>, RejectReason> {
    match p.get(field) {
        None | Some(Value::Null) => Ok(None),
        Some(v @ Value::Object(_)) => {
            if has_long_string(v) {
                return Err(RejectReason::InvalidField(
                    format!("params.{field}"),
                    format!("a value is longer than {MAX_TEXT} bytes"),
                ));
            }
            serde_json::from_value(v.clone()).map(Some).map_err(|e| {
                let why = e.to_string();
                // serde says "missing field `x`" / "unknown field `x`, expected ..." without
                // values; an invalid-type message would quote the value, so it is replaced.
                let why = if why.starts_with("missing field") || why.starts_with("unknown field") {
                    why
                } else {
                    "every field must be a string, as in Electrum's examples".into()
                };
                RejectReason::InvalidField(format!("params.{field}"), why)
            })
        }
        Some(_) => Err(RejectReason::InvalidField(
            format!("params.{field}"),
            "must be an object".into(),
        )),
    }
}

fn has_long_string(v: &Value) -> bool {
    match v {
        Value::String(s) => s.len() > MAX_TEXT,
        Value::Object(m) => m.values().any(has_long_string),
        Value::Array(a) => a.iter().any(has_long_string),
        _ => false,
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use serde_json::json;

    pub fn originator() -> Value {
        json!({
            "institution": {"id": "11111111", "name": "Buy Stuff Shop"},
            "terminalId": "term0001",
            "merchant": {"merchantType": "4444", "merchantId": "merchant1234567",
                "merchantName": {"name": "Buy Stuff Shop", "city": "Cape Town", "region": "WP", "country": "ZA"}}
        })
    }

    #[test]
    fn provision_reads_originator_and_tender() {
        let p = json!({"originator": originator(), "amount_minor": 1000, "currency": "710"});
        let p = ProvisionParams::from_params(p.as_object().unwrap()).unwrap();
        assert_eq!(p.originator.terminal_id, "term0001");
        assert_eq!(p.tender.unwrap().amount_minor, 1000);
        assert_eq!(p.voucher_code, None);
    }

    #[test]
    fn provision_takes_an_optional_client_chosen_code() {
        let p = json!({"originator": originator(), "voucher_code": "4242424242"});
        let p = ProvisionParams::from_params(p.as_object().unwrap()).unwrap();
        assert_eq!(p.voucher_code.as_deref(), Some("4242424242"));
        for bad in [json!(""), json!(4242), json!("x".repeat(600))] {
            let p = json!({"originator": originator(), "voucher_code": bad});
            let e = ProvisionParams::from_params(p.as_object().unwrap()).unwrap_err();
            assert_eq!(e.code(), "invalid_field", "{bad}");
        }
    }

    #[test]
    fn bad_params_are_named() {
        let mut o = originator();
        o["merchant"].as_object_mut().unwrap().remove("merchantId");
        let p = json!({"originator": o});
        let e = ProvisionParams::from_params(p.as_object().unwrap()).unwrap_err();
        assert!(e.message().contains("merchantId"), "{}", e.message());
        let p = json!({"originator": originator(), "amount_minor": 10.5, "currency": "710"});
        let e = ProvisionParams::from_params(p.as_object().unwrap()).unwrap_err();
        assert_eq!(e.code(), "amount_not_integer");
        let p = json!({"originator": originator(), "amount_minor": 10});
        let e = ProvisionParams::from_params(p.as_object().unwrap()).unwrap_err();
        assert_eq!(e.code(), "missing_field");
        let p = json!({"originator": originator()});
        let e = VoucherParams::from_params(p.as_object().unwrap()).unwrap_err();
        assert_eq!(e.code(), "missing_field");
        let p = json!({});
        assert!(LookupParams::from_params(p.as_object().unwrap()).is_err());
        let p = json!({"request_id": "nope"});
        let e = LookupRedemptionParams::from_params(p.as_object().unwrap()).unwrap_err();
        assert_eq!(e.code(), "invalid_field");
    }
}
