//! The bodies the sandbox answers with: a decided [`Answer`], the ErrorDetail of every
//! refusal, and the echo of an approved request with what the provider adds to it.

use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use rand::Rng;
use serde_json::{Map, Value, json};
use uuid::Uuid;

/// A decided answer: status, body, and whether it changed any state.
pub(super) struct Answer {
    pub(super) status: StatusCode,
    pub(super) body: Value,
    pub(super) effect: bool,
}

impl Answer {
    pub(super) fn new(status: StatusCode, body: Value, effect: bool) -> Answer {
        Answer {
            status,
            body,
            effect,
        }
    }
}

impl IntoResponse for Answer {
    fn into_response(self) -> Response {
        (self.status, axum::Json(self.body)).into_response()
    }
}

/// An ErrorDetail with a fresh id.
pub(super) fn error_detail(
    original_id: Option<&str>,
    error_type: &str,
    message: &str,
    detail: Value,
) -> Value {
    json!({
        "id": Uuid::now_v7().to_string(),
        "originalId": original_id,
        "errorType": error_type,
        "errorMessage": message,
        "detailMessage": detail,
    })
}

/// A refusal whose detailMessage is a `freeString`.
pub(super) fn refuse(status: StatusCode, original_id: &str, error_type: &str, why: &str) -> Answer {
    let body = error_detail(
        Some(original_id),
        error_type,
        why,
        json!({"freeString": why}),
    );
    Answer::new(status, body, false)
}

/// The provider's own institution, in approved answers.
const SETTLEMENT_ENTITY: &str = "33333333";
/// The receiver named in approved answers when the request names none.
const DEFAULT_RECEIVER: &str = "44444444";

/// The instructions of every provisioned voucher.
pub(super) fn redeem_instructions() -> Value {
    json!([
        "To redeem your voucher",
        "enter the USSD code below:",
        "*999*<pin>#"
    ])
}

fn slip_data() -> Value {
    let line = |text: &str| {
        json!({"text": text, "fontWidthScaleFactor": 1, "fontHeightScaleFactor": 1,
               "line": false, "cut": false})
    };
    json!({
        "messageLines": [
            line("For any queries please"),
            line("contact your network"),
            line("operator."),
        ],
        "slipWidth": 0
    })
}

fn provider_reference(len: usize) -> String {
    const ALPHABET: &[u8] = b"0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZ";
    let mut rng = rand::rng();
    (0..len)
        .map(|_| char::from(ALPHABET[rng.random_range(0..ALPHABET.len())]))
        .collect()
}

/// The request echoed with what the provider adds to every approved answer: settlement
/// entity, slip, and its own and the receiver's transaction identifiers.
pub(super) fn approved_echo(msg: &Map<String, Value>) -> Map<String, Value> {
    let mut response = msg.clone();
    let receiver = msg
        .get("receiver")
        .and_then(|r| r.get("id"))
        .and_then(Value::as_str)
        .unwrap_or(DEFAULT_RECEIVER)
        .to_string();
    response.insert(
        "settlementEntity".into(),
        json!({"id": SETTLEMENT_ENTITY, "name": "TransactionsRUs"}),
    );
    response.insert("slipData".into(), slip_data());
    let ours = [
        json!({"institutionId": SETTLEMENT_ENTITY, "transactionIdentifier": provider_reference(8)}),
        json!({"institutionId": receiver, "transactionIdentifier": provider_reference(12)}),
    ];
    match response.get_mut("thirdPartyIdentifiers") {
        Some(Value::Array(ids)) => ids.extend(ours),
        _ => {
            response.insert("thirdPartyIdentifiers".into(), Value::Array(ours.into()));
        }
    }
    response
}
