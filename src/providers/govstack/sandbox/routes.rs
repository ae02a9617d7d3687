//! The sandbox's HTTP side: authentication, the dialect's keys and field limits, the
//! repeated `requestID`, faults, then the ledger. See the module above for the API.

use std::collections::HashMap;
use std::time::Instant;

use axum::Router;
use axum::body::Bytes;
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use serde_json::{Map, Value, json};

use super::ledger::{Callback, Instruction, Ledger, Redeemed, Seen};
use super::{Fault, GovstackSandbox, Operation};
use crate::providers::govstack::dialect::Dialect;

pub fn router(sb: GovstackSandbox) -> Router {
    Router::new()
        .route("/vouchers", post(post_vouchers).put(put_vouchers))
        .route("/vouchers/{serial}", get(status))
        .with_state(sb)
}

type Answer = Result<Response, Problem>;

/// A request refused before anything was applied: its status and JSON body (`None`: an
/// empty body, as the Mifos engine sends for an unknown serial).
pub struct Problem {
    status: u16,
    body: Option<Value>,
}

impl IntoResponse for Problem {
    fn into_response(self) -> Response {
        match self.body {
            Some(b) => json_answer(self.status, b),
            None => StatusCode::from_u16(self.status)
                .unwrap_or(StatusCode::BAD_REQUEST)
                .into_response(),
        }
    }
}

fn json_answer(status: u16, body: Value) -> Response {
    let code = StatusCode::from_u16(status).unwrap_or(StatusCode::OK);
    (code, axum::Json(body)).into_response()
}

fn bad(message: impl Into<String>) -> Problem {
    Problem {
        status: 400,
        body: Some(json!({"responseCode": "01", "message": message.into()})),
    }
}

/// The headers the Mifos engine accepts beside the standard ones; any other `X-` header is
/// refused there.
const MIFOS_X_HEADERS: [&str; 4] = [
    "x-callbackurl",
    "x-registering-institution-id",
    "x-program-id",
    "x-platform-tenantid",
];

/// Step 1: the bearer token, and in `mifos` the header allow-list.
fn admit(sb: &GovstackSandbox, headers: &HeaderMap) -> Result<(), Problem> {
    let expected = format!("Bearer {}", sb.inner.options.token);
    let given = headers
        .get("authorization")
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default();
    if given != expected {
        return Err(Problem {
            status: 401,
            body: Some(json!({"responseCode": "01", "message": "unauthorized"})),
        });
    }
    if sb.dialect() == Dialect::Mifos
        && let Some(h) = headers
            .keys()
            .find(|k| k.as_str().starts_with("x-") && !MIFOS_X_HEADERS.contains(&k.as_str()))
    {
        return Err(bad(format!("header {h} is not allowed")));
    }
    Ok(())
}

/// A header's value, at most `max` characters.
fn header(
    headers: &HeaderMap,
    name: &str,
    max: usize,
    required: bool,
) -> Result<Option<String>, Problem> {
    match headers.get(name).and_then(|v| v.to_str().ok()) {
        None if required => Err(bad(format!("header {name} is required"))),
        None => Ok(None),
        Some(v) if v.chars().count() > max => {
            Err(bad(format!("header {name} is longer than {max}")))
        }
        Some(v) => Ok(Some(v.to_owned())),
    }
}

fn object(body: &Bytes) -> Result<Map<String, Value>, Problem> {
    match serde_json::from_slice(body) {
        Ok(Value::Object(m)) => Ok(m),
        _ => Err(bad("the body must be a JSON object")),
    }
}

/// The value of `key`: exactly so in `mifos`, in any case in `govstack` (whose texts spell
/// the same key `requestID` and `RequestID`).
fn lookup<'a>(m: &'a Map<String, Value>, key: &str, dialect: Dialect) -> Option<&'a Value> {
    match dialect {
        Dialect::Mifos => m.get(key),
        Dialect::Govstack => m
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(key))
            .map(|(_, v)| v),
    }
}

/// A text field of at most `max` characters (`None` when absent and not required).
fn text(
    m: &Map<String, Value>,
    key: &str,
    dialect: Dialect,
    max: Option<usize>,
    required: bool,
) -> Result<Option<String>, Problem> {
    match lookup(m, key, dialect) {
        None | Some(Value::Null) if required => Err(bad(format!("{key} is required"))),
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(s)) if s.is_empty() && required => {
            Err(bad(format!("{key} is required")))
        }
        Some(Value::String(s)) => match max {
            Some(max) if s.chars().count() > max => Err(bad(format!("{key} is longer than {max}"))),
            _ => Ok(Some(s.clone())),
        },
        Some(_) => Err(bad(format!("{key} must be a string"))),
    }
}

/// In `mifos`, activate and cancel bodies in PascalCase are refused.
fn camel_only(m: &Map<String, Value>, dialect: Dialect) -> Result<(), Problem> {
    if dialect == Dialect::Mifos
        && let Some(k) = m
            .keys()
            .find(|k| k.starts_with(|c: char| c.is_ascii_uppercase()))
    {
        return Err(bad(format!("unknown field {k}")));
    }
    Ok(())
}

/// The synchronous answer to create, activate and cancel.
fn accepted(dialect: Dialect, request_id: &str) -> (u16, Value) {
    match dialect {
        Dialect::Govstack => (
            200,
            json!({"ResponseCode": "00", "ResponseDescription": "Request accepted", "RequestID": request_id}),
        ),
        Dialect::Mifos => (
            202,
            json!({"responseCode": "00", "responseDescription": "Request accepted", "requestID": request_id}),
        ),
    }
}

/// A request id seen before: its stored answer (and its callback again) for the same body,
/// 409 for another. `None`: a new request.
fn repeated(sb: &GovstackSandbox, request_id: &str, fingerprint: &str) -> Option<Response> {
    let seen = sb.state().ledger.requests.get(request_id).cloned()?;
    if seen.fingerprint != fingerprint {
        return Some(json_answer(
            409,
            json!({"responseCode": "01", "message": format!("requestID {request_id} was used for another request")}),
        ));
    }
    if let Some(cb) = seen.callback {
        sb.owe(&cb.url, cb.body, 1);
    }
    Some(json_answer(seen.status, seen.answer))
}

/// Answers after the fault of the call: the callback first, or the answer held.
async fn finish(
    sb: &GovstackSandbox,
    fault: Option<Fault>,
    callback: Option<(String, Value)>,
    answer: Response,
) -> Response {
    if let Some((url, body)) = callback {
        match fault {
            Some(Fault::CallbackBeforeAnswer) => {
                let cb = Callback {
                    url,
                    body,
                    attempts: 0,
                    due: Instant::now(),
                };
                if !sb.deliver(&cb).await {
                    sb.owe(&cb.url, cb.body, 1);
                }
            }
            Some(Fault::DuplicateCallback) => {
                sb.owe(&url, body, 2);
            }
            _ => {
                sb.owe(&url, body, 1);
            }
        }
    }
    if fault == Some(Fault::TimeoutAfterEffect) {
        tokio::time::sleep(sb.inner.options.slow_answer).await;
    }
    answer
}

fn unavailable() -> Response {
    json_answer(
        503,
        json!({"responseCode": "01", "message": "service unavailable"}),
    )
}

async fn post_vouchers(
    State(sb): State<GovstackSandbox>,
    Query(q): Query<HashMap<String, String>>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let answer = match q.get("command").map(String::as_str) {
        None => create(&sb, &headers, &body).await,
        Some("redeem") => redeem(&sb, &headers, &body).await,
        Some("cancel") => change(&sb, Operation::Cancel, &headers, &body).await,
        Some(other) => Err(bad(format!("unknown command {other}"))),
    };
    answer.unwrap_or_else(IntoResponse::into_response)
}

async fn put_vouchers(
    State(sb): State<GovstackSandbox>,
    Query(q): Query<HashMap<String, String>>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let answer = match q.get("command").map(String::as_str) {
        Some("activate") => change(&sb, Operation::Activate, &headers, &body).await,
        other => Err(bad(format!(
            "unknown command {}",
            other.unwrap_or("(none)")
        ))),
    };
    answer.unwrap_or_else(IntoResponse::into_response)
}

/// A positive amount: a JSON number, or a string holding one (some callers send decimals
/// as text).
fn amount(v: Option<&Value>, at: &str) -> Result<serde_json::Number, Problem> {
    let n = match v {
        Some(Value::Number(n)) => n.clone(),
        Some(Value::String(s)) => s
            .parse::<serde_json::Number>()
            .map_err(|_| bad(format!("{at}.amount is not a number")))?,
        _ => return Err(bad(format!("{at}.amount is required"))),
    };
    match n.as_f64() {
        Some(x) if x > 0.0 && x.is_finite() => Ok(n),
        _ => Err(bad(format!("{at}.amount must be positive"))),
    }
}

async fn create(sb: &GovstackSandbox, headers: &HeaderMap, body: &Bytes) -> Answer {
    admit(sb, headers)?;
    let d = sb.dialect();
    let url = header(headers, d.callback_header(), 100, true)?.unwrap_or_default();
    header(headers, "X-Program-Id", 20, false)?;
    header(headers, "X-Registering-Institution-Id", 20, false)?;
    let m = object(body)?;
    let request_id = text(&m, "requestID", d, Some(12), true)?.unwrap_or_default();
    let batch_id = text(&m, "batchID", d, Some(12), false)?.unwrap_or_else(|| request_id.clone());
    let Some(Value::Array(list)) = lookup(&m, "voucherInstructions", d) else {
        return Err(bad("voucherInstructions is required"));
    };
    if list.is_empty() {
        return Err(bad("voucherInstructions is empty"));
    }
    let mut instructions = Vec::with_capacity(list.len());
    for (n, item) in list.iter().enumerate() {
        let at = format!("voucherInstructions[{n}]");
        let Value::Object(i) = item else {
            return Err(bad(format!("{at} must be an object")));
        };
        let instruction_id = text(i, "instructionID", d, Some(16), true)?.unwrap_or_default();
        if instructions
            .iter()
            .any(|x: &Instruction| x.instruction_id == instruction_id)
        {
            return Err(bad(format!("{at}.instructionID is repeated")));
        }
        text(i, "groupCode", d, Some(3), false)?;
        text(i, "payeeFunctionalID", d, Some(20), false)?;
        let currency = text(i, "currency", d, Some(3), true)?.unwrap_or_default();
        if currency.len() != 3 || !currency.chars().all(|c| c.is_ascii_alphabetic()) {
            return Err(bad(format!("{at}.currency must be 3 letters")));
        }
        instructions.push(Instruction {
            instruction_id,
            currency,
            amount: amount(lookup(i, "amount", d), &at)?,
            narration: text(i, "narration", d, Some(50), false)?,
        });
    }
    let fingerprint = format!("create {url} {}", Value::Object(m.clone()));
    if let Some(again) = repeated(sb, &request_id, &fingerprint) {
        return Ok(again);
    }
    let fault = sb.take_fault(Operation::Create);
    if fault == Some(Fault::Unavailable) {
        return Ok(unavailable());
    }
    if let Some(Fault::OmitInstructions(n)) = fault {
        instructions.truncate(instructions.len().saturating_sub(n));
    }
    let secret_len = d.secret_max().unwrap_or(24);
    let created = {
        let mut numbers = instructions
            .iter()
            .map(|_| secret(sb, secret_len))
            .collect::<Vec<_>>()
            .into_iter();
        let mut s = sb.state();
        let vouchers = s.ledger.create(&request_id, &batch_id, &instructions, || {
            numbers.next().unwrap_or_default()
        });
        s.stats.creations += 1;
        s.stats.vouchers_created += vouchers.len() as u32;
        vouchers
    };
    let details: Vec<Value> = created
        .iter()
        .zip(&instructions)
        .map(|(v, i)| {
            json!({"instructionID": v.instruction_id, "serialNumber": v.serial,
                   "voucherNumber": v.number, "currency": v.currency, "amount": v.amount,
                   "narration": i.narration})
        })
        .collect();
    let callback =
        json!({"requestID": request_id, "batchID": batch_id, "voucherInstructions": details});
    let (status, answer) = accepted(d, &request_id);
    remember(
        sb,
        &request_id,
        fingerprint,
        status,
        &answer,
        Some((&url, &callback)),
    );
    Ok(finish(
        sb,
        fault,
        Some((url, callback)),
        json_answer(status, answer),
    )
    .await)
}

/// A fresh secret of `len` digits (`govstack`) or characters (`mifos`).
fn secret(sb: &GovstackSandbox, len: usize) -> String {
    const ALPHABET: &[u8] = b"ABCDEFGHJKLMNPQRSTUVWXYZ23456789";
    let digits = sb.dialect() == Dialect::Govstack;
    (0..len)
        .map(|_| {
            let r = sb.roll();
            if digits {
                char::from(b'0' + (r % 10) as u8)
            } else {
                char::from(ALPHABET[(r % ALPHABET.len() as u64) as usize])
            }
        })
        .collect()
}

fn remember(
    sb: &GovstackSandbox,
    request_id: &str,
    fingerprint: String,
    status: u16,
    answer: &Value,
    callback: Option<(&str, &Value)>,
) {
    let callback = callback.map(|(url, body)| Callback {
        url: url.to_owned(),
        body: body.clone(),
        attempts: 0,
        due: Instant::now(),
    });
    sb.state().ledger.requests.insert(
        request_id.to_owned(),
        Seen {
            fingerprint,
            status,
            answer: answer.clone(),
            callback,
        },
    );
}

/// Activate or cancel: each serial on its own, confirmed by callback.
async fn change(sb: &GovstackSandbox, op: Operation, headers: &HeaderMap, body: &Bytes) -> Answer {
    admit(sb, headers)?;
    let d = sb.dialect();
    let url = header(headers, d.callback_header(), 100, true)?.unwrap_or_default();
    let m = object(body)?;
    camel_only(&m, d)?;
    let request_key = d.key("requestId");
    let request_id = text(&m, request_key, d, Some(12), true)?.unwrap_or_default();
    text(&m, d.key("batchId"), d, Some(12), false)?;
    let list_key = d.key("voucherInstructions");
    let Some(Value::Array(list)) = lookup(&m, list_key, d) else {
        return Err(bad(format!("{list_key} is required")));
    };
    let mut serials = Vec::with_capacity(list.len());
    for (n, item) in list.iter().enumerate() {
        let Value::Object(i) = item else {
            return Err(bad(format!("{list_key}[{n}] must be an object")));
        };
        serials.push(text(i, "serialNumber", d, Some(20), true)?.unwrap_or_default());
    }
    if serials.is_empty() {
        return Err(bad(format!("{list_key} is empty")));
    }
    let fingerprint = format!("{op:?} {url} {}", Value::Object(m.clone()));
    if let Some(again) = repeated(sb, &request_id, &fingerprint) {
        return Ok(again);
    }
    let fault = sb.take_fault(op);
    if fault == Some(Fault::Unavailable) {
        return Ok(unavailable());
    }
    let confirmation_id = secret_id(sb);
    let failed = {
        let mut s = sb.state();
        match op {
            Operation::Activate => {
                s.stats.activations += 1;
                s.ledger.activate(&serials, chrono::Utc::now())
            }
            _ => {
                s.stats.cancellations += 1;
                s.ledger.cancel(&serials)
            }
        }
    };
    let callback = Ledger::confirmation(&confirmation_id, &request_id, &failed);
    let (status, answer) = accepted(d, &request_id);
    remember(
        sb,
        &request_id,
        fingerprint,
        status,
        &answer,
        Some((&url, &callback)),
    );
    Ok(finish(
        sb,
        fault,
        Some((url, callback)),
        json_answer(status, answer),
    )
    .await)
}

/// A fresh 12-digit request id of the engine's own.
fn secret_id(sb: &GovstackSandbox) -> String {
    format!("{:012}", sb.roll() % 1_000_000_000_000)
}

async fn redeem(sb: &GovstackSandbox, headers: &HeaderMap, body: &Bytes) -> Answer {
    admit(sb, headers)?;
    let d = sb.dialect();
    let m = object(body)?;
    let request_key = match d {
        Dialect::Govstack => "requestID",
        Dialect::Mifos => "requestId",
    };
    let request_id = text(&m, request_key, d, Some(12), true)?.unwrap_or_default();
    text(&m, d.key("agentId"), d, Some(10), true)?;
    let serial = text(&m, "voucherSerialNumber", d, Some(20), true)?.unwrap_or_default();
    let secret = text(&m, "voucherSecretNumber", d, d.secret_max(), true)?.unwrap_or_default();
    let fingerprint = format!("redeem {}", Value::Object(m.clone()));
    if let Some(again) = repeated(sb, &request_id, &fingerprint) {
        return Ok(again);
    }
    let fault = sb.take_fault(Operation::Redeem);
    if fault == Some(Fault::Unavailable) {
        return Ok(unavailable());
    }
    let now = chrono::Utc::now();
    let outcome = {
        let mut s = sb.state();
        let r = s.ledger.redeem(&serial, &secret, now);
        if matches!(r, Redeemed::Done { .. }) {
            s.stats.redemptions_applied += 1;
        }
        r
    };
    let (ok, message, value) = match outcome {
        Redeemed::Done { value } => (true, "Redeemed", json!(value)),
        Redeemed::Refused(why) => (false, why, json!(0.0)),
    };
    let status = match (d, ok) {
        (Dialect::Govstack, ok) => json!(u8::from(ok)),
        (Dialect::Mifos, true) => json!("01"),
        (Dialect::Mifos, false) => json!("00"),
    };
    let answer = json!({"status": status, "message": message, "serialNumber": serial,
                        "value": value, "timestamp": now.to_rfc3339(),
                        "transactionId": secret_id(sb)});
    remember(sb, &request_id, fingerprint, 200, &answer, None);
    Ok(finish(sb, fault, None, json_answer(200, answer)).await)
}

async fn status(
    State(sb): State<GovstackSandbox>,
    Path(serial): Path<String>,
    Query(q): Query<HashMap<String, String>>,
    headers: HeaderMap,
) -> Response {
    if let Err(p) = admit(&sb, &headers) {
        return p.into_response();
    }
    if q.get("fields").map(String::as_str) != Some("status") {
        return bad("fields=status is required").into_response();
    }
    if serial.chars().count() > 20 {
        return bad("serialNumber is longer than 20").into_response();
    }
    let fault = sb.take_fault(Operation::Status);
    if fault == Some(Fault::Unavailable) {
        return unavailable();
    }
    let found = sb.state().ledger.vouchers.get(&serial).cloned();
    let answer = match (found, sb.dialect()) {
        (Some(v), Dialect::Govstack) => json_answer(
            200,
            json!({"status": v.state.code(), "serialNumber": v.serial, "value": v.amount}),
        ),
        (Some(v), Dialect::Mifos) => json_answer(
            200,
            json!({"status": format!("{:02}", v.state.code()), "serialNumber": v.serial, "value": v.amount}),
        ),
        (None, Dialect::Govstack) => json_answer(
            400,
            json!({"status": 9, "message": "Not Existing", "serialNumber": serial, "value": 0.0}),
        ),
        (None, Dialect::Mifos) => StatusCode::BAD_REQUEST.into_response(),
    };
    finish(&sb, fault, None, answer).await
}
