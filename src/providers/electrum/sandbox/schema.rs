//! The request schema validator, step 1 of the checks: every POSTed message is checked
//! against its shape in `electrum-suv-examples/`, and every missing required field,
//! malformed UUID or date-time, wrongly typed value and unexpected field is listed in one
//! 400 FORMAT_ERROR whose `detailMessage.formatErrors` holds `{field, msg, value}`.

use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde_json::{Map, Value, json};
use uuid::Uuid;

use super::answer::error_detail;
use super::operation::{Family, Step};

/// Checks `body`, a POSTed message of `step` in `family`: answers the message and its
/// request id (`id`, or `requestId` for an advice), or the FORMAT_ERROR listing every problem.
pub(super) fn validate(
    family: Family,
    step: Step,
    body: &[u8],
) -> Result<(Map<String, Value>, Uuid), Box<Response>> {
    let id_field = if step == Step::Request {
        "id"
    } else {
        "requestId"
    };
    let value: Value = match serde_json::from_slice(body) {
        Ok(v) => v,
        Err(e) => {
            let problem = format_problem("body", &format!("not valid JSON: {e}"), &Value::Null);
            return Err(Box::new(format_error(None, vec![problem])));
        }
    };
    let original_id = value
        .get(id_field)
        .and_then(Value::as_str)
        .map(str::to_string);
    let key = original_id.as_deref().and_then(canonical_uuid);
    let mut problems = Vec::new();
    check(&value, shape(family, step), "", &mut problems);
    match (value, key) {
        (Value::Object(msg), Some(key)) if problems.is_empty() => Ok((msg, key)),
        // Without problems the body is an object with a canonical id, so this arm only
        // ever sees the problems it lists.
        _ => Err(Box::new(format_error(original_id.as_deref(), problems))),
    }
}

/// The 400 FORMAT_ERROR listing `errors`.
pub(super) fn format_error(original_id: Option<&str>, errors: Vec<Value>) -> Response {
    let body = error_detail(
        original_id,
        "FORMAT_ERROR",
        "Bad formatting",
        json!({"formatErrors": errors}),
    );
    (StatusCode::BAD_REQUEST, axum::Json(body)).into_response()
}

/// One entry of `formatErrors`.
pub(super) fn format_problem(field: &str, msg: &str, value: &Value) -> Value {
    json!({"field": field, "msg": msg, "value": value})
}

/// A UUID in its 8-4-4-4-12 form; other spellings `Uuid` accepts (braced, simple, URN) are
/// malformed here.
pub(super) fn canonical_uuid(text: &str) -> Option<Uuid> {
    if text.len() == 36 {
        Uuid::try_parse(text).ok()
    } else {
        None
    }
}

// ---------------------------------------------------------------------------------------
// Message shapes

/// What a JSON value must be.
#[derive(Clone, Copy)]
enum Ty {
    Str,
    Int,
    Uuid,
    Time,
    OneOf(&'static [&'static str]),
    Obj(&'static [Field]),
    List(&'static Ty),
}

/// A field of an object shape.
#[derive(Clone, Copy)]
struct Field {
    name: &'static str,
    required: bool,
    ty: Ty,
}

/// A field that must be present and not null.
const fn req(name: &'static str, ty: Ty) -> Field {
    Field {
        name,
        required: true,
        ty,
    }
}

/// A field that may be absent or null.
const fn opt(name: &'static str, ty: Ty) -> Field {
    Field {
        name,
        required: false,
        ty,
    }
}

const INSTITUTION: Ty = Ty::Obj(&[req("id", Ty::Str), req("name", Ty::Str)]);
const MERCHANT_NAME: Ty = Ty::Obj(&[
    req("name", Ty::Str),
    req("city", Ty::Str),
    req("region", Ty::Str),
    req("country", Ty::Str),
]);
const MERCHANT: Ty = Ty::Obj(&[
    req("merchantType", Ty::Str),
    req("merchantId", Ty::Str),
    req("merchantName", MERCHANT_NAME),
]);
const ORIGINATOR: Ty = Ty::Obj(&[
    req("merchant", MERCHANT),
    req("terminalId", Ty::Str),
    req("institution", INSTITUTION),
]);
const THIRD_PARTY_IDS: Ty = Ty::List(&Ty::Obj(&[
    req("institutionId", Ty::Str),
    req("transactionIdentifier", Ty::Str),
]));
const VOUCHER: Ty = Ty::Obj(&[
    req("code", Ty::Str),
    opt("expiryDate", Ty::Time),
    opt("redeemInstructions", Ty::List(&Ty::Str)),
]);
const TENDERS: Ty = Ty::List(&Ty::Obj(&[
    opt("accountType", Ty::Str),
    req(
        "amount",
        Ty::Obj(&[req("amount", Ty::Int), req("currency", Ty::Str)]),
    ),
    opt("tenderType", Ty::Str),
]));

const PROVISION_REQUEST: Ty = Ty::Obj(&[
    req("id", Ty::Uuid),
    req("time", Ty::Time),
    req("originator", ORIGINATOR),
    req("client", INSTITUTION),
    opt("receiver", INSTITUTION),
    opt("thirdPartyIdentifiers", THIRD_PARTY_IDS),
]);
/// RedemptionRequest and RefundRequest have the same shape.
const VOUCHER_REQUEST: Ty = Ty::Obj(&[
    req("id", Ty::Uuid),
    req("time", Ty::Time),
    req("originator", ORIGINATOR),
    req("client", INSTITUTION),
    opt("receiver", INSTITUTION),
    opt("thirdPartyIdentifiers", THIRD_PARTY_IDS),
    req("voucher", VOUCHER),
]);
const BASIC_ADVICE: Ty = Ty::Obj(&[
    req("id", Ty::Uuid),
    req("requestId", Ty::Uuid),
    req("time", Ty::Time),
    opt("thirdPartyIdentifiers", THIRD_PARTY_IDS),
]);
const TENDER_ADVICE: Ty = Ty::Obj(&[
    req("id", Ty::Uuid),
    req("requestId", Ty::Uuid),
    req("time", Ty::Time),
    opt("thirdPartyIdentifiers", THIRD_PARTY_IDS),
    opt("tenders", TENDERS),
]);
const BASIC_REVERSAL: Ty = Ty::Obj(&[
    req("id", Ty::Uuid),
    req("requestId", Ty::Uuid),
    req("time", Ty::Time),
    opt("thirdPartyIdentifiers", THIRD_PARTY_IDS),
    req(
        "reversalReason",
        Ty::OneOf(&["TIMEOUT", "CANCELLED", "RESPONSE_NOT_FINAL"]),
    ),
]);

/// The shape of the message of `step` in `family`.
fn shape(family: Family, step: Step) -> Ty {
    match (family, step) {
        (Family::Provision, Step::Request) => PROVISION_REQUEST,
        (_, Step::Request) => VOUCHER_REQUEST,
        (Family::Provision, Step::Confirm) => TENDER_ADVICE,
        (_, Step::Confirm) => BASIC_ADVICE,
        (_, Step::Reverse) => BASIC_REVERSAL,
    }
}

/// The dotted path of field `name` inside `path` (the body itself is the empty path).
fn child(path: &str, name: &str) -> String {
    if path.is_empty() {
        name.to_string()
    } else {
        format!("{path}.{name}")
    }
}

/// Appends every way `value` differs from `ty` to `problems`.
fn check(value: &Value, ty: Ty, path: &str, problems: &mut Vec<Value>) {
    let field = if path.is_empty() { "body" } else { path };
    let mut problem = |msg: &str| problems.push(format_problem(field, msg, value));
    match ty {
        Ty::Str if !value.is_string() => problem("must be a string"),
        Ty::Int if !(value.is_i64() || value.is_u64()) => problem("must be an integer"),
        Ty::Uuid if value.as_str().and_then(canonical_uuid).is_none() => {
            problem("must be a UUID (8-4-4-4-12 hexadecimal digits)")
        }
        Ty::Time
            if value
                .as_str()
                .is_none_or(|t| chrono::DateTime::parse_from_rfc3339(t).is_err()) =>
        {
            problem("must be an RFC 3339 date-time")
        }
        Ty::OneOf(allowed) if !value.as_str().is_some_and(|v| allowed.contains(&v)) => {
            problem(&format!("must be one of {}", allowed.join(", ")))
        }
        Ty::Obj(fields) => {
            let Some(map) = value.as_object() else {
                return problem("must be an object");
            };
            for f in fields {
                let path = child(path, f.name);
                match map.get(f.name) {
                    None | Some(Value::Null) if f.required => {
                        problems.push(format_problem(&path, "may not be null", &Value::Null));
                    }
                    None | Some(Value::Null) => {}
                    Some(v) => check(v, f.ty, &path, problems),
                }
            }
            for (name, v) in map {
                if !fields.iter().any(|f| f.name == name) {
                    problems.push(format_problem(&child(path, name), "unexpected field", v));
                }
            }
        }
        Ty::List(item) => {
            let Some(items) = value.as_array() else {
                return problem("must be an array");
            };
            for (i, v) in items.iter().enumerate() {
                check(v, *item, &format!("{path}[{i}]"), problems);
            }
        }
        _ => {}
    }
}
