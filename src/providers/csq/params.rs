//! `purchase.csq` params: the snake_case of CSQ's purchase body fields, plus the path
//! parameters `terminal_id` and `operator_id` and the relay-side `product_id`.
//!
//! Reading of `csq-vouchers-purchase.txt`: the purchase body has no product field; CSQ names a
//! fixed product by `operatorId` and a dynamic one by `dynamicProductId`. `product_id` is the
//! upstream system's own product reference: it is validated, stored with the transaction and
//! echoed in the outcome, but never sent, because a strict certification endpoint refuses
//! fields its schema does not list.

use serde::Serialize;
use serde_json::{Map, Value};

use crate::command::{RejectReason, amount_field, only_params};

/// CSQ's `documentType` enum.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, serde::Deserialize)]
pub enum DocumentType {
    #[serde(rename = "PASSPORT")]
    Passport,
    #[serde(rename = "ID_CARD")]
    IdCard,
}

/// Validated params of a CSQ purchase.
#[derive(Debug, Clone, PartialEq)]
pub struct PurchaseParams {
    pub terminal_id: i32,
    pub operator_id: i32,
    pub product_id: Option<String>,
    pub body: PurchaseBody,
}

/// The JSON body of `POST /pre-paid/vouchers/purchase/...`, field for field.
#[derive(Debug, Clone, Default, PartialEq, Serialize, serde::Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct PurchaseBody {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub amount_to_send_x100: Option<i32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub destination_amount_x100: Option<i32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub local_date_time: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub beneficiary_phone_number: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub dynamic_product_id: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub receiver_email: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub receiver_message: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub document_number: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub document_type: Option<DocumentType>,
}

const FIELDS: [&str; 12] = [
    "terminal_id",
    "operator_id",
    "product_id",
    "amount_to_send_x100",
    "destination_amount_x100",
    "local_date_time",
    "beneficiary_phone_number",
    "dynamic_product_id",
    "receiver_email",
    "receiver_message",
    "document_number",
    "document_type",
];

/// Longest free-text param accepted.
const MAX_TEXT: usize = 512;

impl PurchaseParams {
    /// Validates the `params` object of a `purchase.csq` command.
    pub fn from_params(p: &Map<String, Value>) -> Result<PurchaseParams, RejectReason> {
        only_params(p, &FIELDS)?;
        let local_date_time = text(p, "local_date_time")?;
        if let Some(t) = &local_date_time {
            chrono::DateTime::parse_from_rfc3339(t).map_err(|_| {
                RejectReason::InvalidField("params.local_date_time".into(), "not RFC 3339".into())
            })?;
        }
        let document_type = match p.get("document_type") {
            None | Some(Value::Null) => None,
            Some(v) => Some(serde_json::from_value(v.clone()).map_err(|_| {
                RejectReason::InvalidField(
                    "params.document_type".into(),
                    "must be PASSPORT or ID_CARD".into(),
                )
            })?),
        };
        let receiver_email = text(p, "receiver_email")?;
        if receiver_email.as_deref().is_some_and(|e| !e.contains('@')) {
            return Err(RejectReason::InvalidField(
                "params.receiver_email".into(),
                "not an e-mail address".into(),
            ));
        }
        Ok(PurchaseParams {
            terminal_id: positive_int32(p, "terminal_id")?,
            operator_id: positive_int32(p, "operator_id")?,
            product_id: text(p, "product_id")?,
            body: PurchaseBody {
                amount_to_send_x100: amount_field(p, "amount_to_send_x100")?,
                destination_amount_x100: amount_field(p, "destination_amount_x100")?,
                local_date_time,
                beneficiary_phone_number: text(p, "beneficiary_phone_number")?,
                dynamic_product_id: text(p, "dynamic_product_id")?,
                receiver_email,
                receiver_message: text(p, "receiver_message")?,
                document_number: text(p, "document_number")?,
                document_type,
            },
        })
    }
}

/// Params of `products.csq`: which operator's dynamic products to list.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ProductsParams {
    pub terminal_id: i32,
    pub operator_id: i32,
}

impl ProductsParams {
    pub fn from_params(p: &Map<String, Value>) -> Result<ProductsParams, RejectReason> {
        only_params(p, &["terminal_id", "operator_id"])?;
        Ok(ProductsParams {
            terminal_id: positive_int32(p, "terminal_id")?,
            operator_id: positive_int32(p, "operator_id")?,
        })
    }
}

/// Params of `balance.csq`: whose balance to read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BalanceParams {
    pub terminal_id: i32,
}

impl BalanceParams {
    pub fn from_params(p: &Map<String, Value>) -> Result<BalanceParams, RejectReason> {
        only_params(p, &["terminal_id"])?;
        Ok(BalanceParams {
            terminal_id: positive_int32(p, "terminal_id")?,
        })
    }
}

fn positive_int32(p: &Map<String, Value>, field: &'static str) -> Result<i32, RejectReason> {
    let invalid = |why: &str| RejectReason::InvalidField(format!("params.{field}"), why.into());
    match p.get(field) {
        None | Some(Value::Null) => Err(RejectReason::MissingField(match field {
            "terminal_id" => "params.terminal_id",
            _ => "params.operator_id",
        })),
        Some(Value::Number(n)) => n
            .as_i64()
            .and_then(|i| i32::try_from(i).ok())
            .filter(|i| *i > 0)
            .ok_or_else(|| invalid("must be a positive int32")),
        Some(_) => Err(invalid("must be an integer")),
    }
}

fn text(p: &Map<String, Value>, field: &str) -> Result<Option<String>, RejectReason> {
    match p.get(field) {
        None | Some(Value::Null) => Ok(None),
        // Absent (or null) is how a param is left out; an empty product or document
        // reference would be sent, stored and echoed as if it named something.
        Some(Value::String(s)) if s.is_empty() => Err(RejectReason::InvalidField(
            format!("params.{field}"),
            "must not be empty".into(),
        )),
        Some(Value::String(s)) if s.len() <= MAX_TEXT => Ok(Some(s.clone())),
        Some(Value::String(_)) => Err(RejectReason::InvalidField(
            format!("params.{field}"),
            format!("longer than {MAX_TEXT} bytes"),
        )),
        Some(_) => Err(RejectReason::InvalidField(
            format!("params.{field}"),
            "must be a string".into(),
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn parse(v: Value) -> Result<PurchaseParams, RejectReason> {
        PurchaseParams::from_params(v.as_object().unwrap())
    }

    #[test]
    fn body_serializes_in_csq_field_names() {
        let p = parse(json!({
            "terminal_id": 7, "operator_id": 1001, "amount_to_send_x100": 500,
            "document_type": "ID_CARD", "receiver_email": "a@b.c"
        }))
        .unwrap();
        let body = serde_json::to_value(&p.body).unwrap();
        assert_eq!(
            body,
            json!({"amountToSendX100": 500, "documentType": "ID_CARD", "receiverEmail": "a@b.c"})
        );
    }

    #[test]
    fn ids_must_be_positive_integers() {
        assert!(parse(json!({"operator_id": 1001})).is_err());
        assert!(parse(json!({"terminal_id": "7", "operator_id": 1001})).is_err());
        assert!(parse(json!({"terminal_id": 0, "operator_id": 1001})).is_err());
        assert!(parse(json!({"terminal_id": 3_000_000_000i64, "operator_id": 1001})).is_err());
        assert!(
            parse(json!({"terminal_id": 7, "operator_id": 1001, "document_type": "VISA"})).is_err()
        );
    }
}
