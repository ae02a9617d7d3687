//! The request schema validator, step 1 of the checks: every POSTed message is checked
//! against its shape in `electrum-suv-examples/`, and every missing required field,
//! malformed UUID or date-time, wrongly typed value and unexpected field is listed in one
//! 400 FORMAT_ERROR whose `detailMessage.formatErrors` holds `{field, msg, value}`. The
//! `msg` of a missing field and of a malformed UUID are the reference server's words
//! ("originator.merchant.merchantName.city may not be null", "UUID must conform to the format
//! 8-4-4-4-12 hexadecimal values"), so a client's error handling meets the real texts here.

use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde_json::{Map, Value, json};
use uuid::Uuid;

use super::answer::{ErrorIds, error_detail};
use super::operation::{Family, Step};

/// The `msg` of a malformed UUID, in the reference server's words.
pub(super) const UUID_FORMAT: &str =
    "UUID must conform to the format 8-4-4-4-12 hexadecimal values";

/// A POSTed message that passed validation.
pub(super) struct Valid {
    /// The message, with numeric tender currencies turned into their 3-digit strings.
    pub(super) msg: Map<String, Value>,
    /// The request it is about: a request's `id`, an advice's `requestId`.
    pub(super) key: Uuid,
    /// Whom an ErrorDetail about it answers.
    pub(super) ids: ErrorIds,
}

/// Checks `body`, a POSTed message of `step` in `family`: answers the [`Valid`] message, or
/// the FORMAT_ERROR listing every problem.
pub(super) fn validate(family: Family, step: Step, body: &[u8]) -> Result<Valid, Box<Response>> {
    let value: Value = match serde_json::from_slice(body) {
        Ok(v) => v,
        Err(e) => {
            let problem = format_problem("body", &format!("not valid JSON: {e}"), &Value::Null);
            return Err(Box::new(format_error(ErrorIds::fresh(None), vec![problem])));
        }
    };
    let uuid_at = |field: &str| {
        value
            .get(field)
            .and_then(Value::as_str)
            .and_then(canonical_uuid)
    };
    let own = uuid_at("id");
    let request_id = (step != Step::Request)
        .then(|| uuid_at("requestId"))
        .flatten();
    // An advice is answered under its own id, about the request it names.
    let ids = match own {
        Some(id) => ErrorIds {
            id,
            original: request_id,
        },
        None => ErrorIds::fresh(request_id),
    };
    let mut problems = Vec::new();
    check(&value, shape(family, step), "", &mut problems);
    let key = if step == Step::Request {
        own
    } else {
        request_id
    };
    match (value, key) {
        (Value::Object(mut msg), Some(key)) if problems.is_empty() => {
            normalize_currencies(&mut msg);
            Ok(Valid { msg, key, ids })
        }
        // Without problems the body is an object with canonical ids, so this arm only ever
        // sees the problems it lists.
        _ => Err(Box::new(format_error(ids, problems))),
    }
}

/// The 400 FORMAT_ERROR listing `errors`.
pub(super) fn format_error(ids: ErrorIds, errors: Vec<Value>) -> Response {
    let body = error_detail(
        ids,
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

/// Electrum's server reads a tender's `currency` into a string, so a client that sends the
/// ISO 4217 numeric code as a JSON number (710) gets it echoed as the code ("710"). Codes
/// below 100 keep their leading zeros ("036"): that is the code, the number only lost them.
fn normalize_currencies(msg: &mut Map<String, Value>) {
    let Some(Value::Array(tenders)) = msg.get_mut("tenders") else {
        return;
    };
    for tender in tenders {
        let currency = tender.pointer_mut("/amount/currency");
        if let Some(currency) = currency {
            if let Some(code) = currency.as_u64() {
                *currency = json!(format!("{code:03}"));
            }
        }
    }
}

// ---------------------------------------------------------------------------------------
// Message shapes

/// What a JSON value must be.
#[derive(Clone, Copy)]
enum Ty {
    Str,
    /// A non-empty string.
    Code,
    Int,
    /// An ISO 4217 numeric code: a string, or an integer from 1 to 999.
    Currency,
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
        Ty::Obj(&[req("amount", Ty::Int), req("currency", Ty::Currency)]),
    ),
    opt("tenderType", Ty::Str),
]));

/// The voucher a client may ask a provision for (interface 1.2.0): only its code. Expiry and
/// instructions are the provider's to set, so in a provision they are unexpected fields.
const PROVISION_VOUCHER: Ty = Ty::Obj(&[req("code", Ty::Code)]);

const PROVISION_REQUEST: Ty = Ty::Obj(&[
    req("id", Ty::Uuid),
    req("time", Ty::Time),
    req("originator", ORIGINATOR),
    req("client", INSTITUTION),
    opt("receiver", INSTITUTION),
    opt("thirdPartyIdentifiers", THIRD_PARTY_IDS),
    opt("voucher", PROVISION_VOUCHER),
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
    match ty {
        Ty::Obj(fields) => check_object(value, fields, path, problems),
        Ty::List(item) => {
            let Some(items) = value.as_array() else {
                return problems.push(format_problem(path, "must be an array", value));
            };
            for (i, v) in items.iter().enumerate() {
                check(v, *item, &format!("{path}[{i}]"), problems);
            }
        }
        scalar => {
            if let Some(msg) = scalar_problem(value, scalar) {
                let field = if path.is_empty() { "body" } else { path };
                problems.push(format_problem(field, &msg, value));
            }
        }
    }
}

/// Appends every way `value` differs from the object with `fields` to `problems`. A missing
/// field's `msg` names its full path, as the reference server's validator does
/// ("originator.merchant.merchantName.city may not be null").
fn check_object(value: &Value, fields: &[Field], path: &str, problems: &mut Vec<Value>) {
    let Some(map) = value.as_object() else {
        let field = if path.is_empty() { "body" } else { path };
        return problems.push(format_problem(field, "must be an object", value));
    };
    for f in fields {
        let path = child(path, f.name);
        match map.get(f.name) {
            None | Some(Value::Null) if f.required => {
                let msg = format!("{path} may not be null");
                problems.push(format_problem(&path, &msg, &Value::Null));
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

/// What is wrong with `value` as the scalar `ty`, if anything.
fn scalar_problem(value: &Value, ty: Ty) -> Option<String> {
    let problem = match ty {
        Ty::Str if !value.is_string() => "must be a string",
        Ty::Code if value.as_str().is_none_or(str::is_empty) => "must be a non-empty string",
        Ty::Int if !(value.is_i64() || value.is_u64()) => "must be an integer",
        Ty::Currency
            if !(value.is_string() || value.as_u64().is_some_and(|n| (1..=999).contains(&n))) =>
        {
            "must be an ISO 4217 numeric code (a string, or an integer from 1 to 999)"
        }
        Ty::Uuid if value.as_str().and_then(canonical_uuid).is_none() => UUID_FORMAT,
        Ty::Time
            if value
                .as_str()
                .is_none_or(|t| chrono::DateTime::parse_from_rfc3339(t).is_err()) =>
        {
            "must be an RFC 3339 date-time"
        }
        Ty::OneOf(allowed) if !value.as_str().is_some_and(|v| allowed.contains(&v)) => {
            return Some(format!("must be one of {}", allowed.join(", ")));
        }
        _ => return None,
    };
    Some(problem.to_string())
}
