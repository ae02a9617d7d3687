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

/// Whom an ErrorDetail answers. `id` is the id of the message being answered: the request's
/// own id, or an advice's own id (not the request it names). `originalId` is the request an
/// advice refers to, and is left out when a request itself is refused. A message whose own id
/// is unusable (not JSON, missing, not 8-4-4-4-12) is answered under a fresh id, because an
/// ErrorDetail's `id` is always a UUID.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct ErrorIds {
    pub(super) id: Uuid,
    pub(super) original: Option<Uuid>,
}

impl ErrorIds {
    /// A provision, redemption or refund answered under its own id.
    pub(super) fn request(id: Uuid) -> ErrorIds {
        ErrorIds { id, original: None }
    }

    /// Something without an id of its own (a GET, or a body whose id is unusable), about
    /// `original` if it names a request.
    pub(super) fn fresh(original: Option<Uuid>) -> ErrorIds {
        ErrorIds {
            id: Uuid::now_v7(),
            original,
        }
    }
}

/// An ErrorDetail answering the message `ids` names; `originalId` only when there is one.
pub(super) fn error_detail(ids: ErrorIds, error_type: &str, message: &str, detail: Value) -> Value {
    let mut body = json!({
        "id": ids.id.to_string(),
        "errorType": error_type,
        "errorMessage": message,
        "detailMessage": detail,
    });
    if let (Some(original), Some(map)) = (ids.original, body.as_object_mut()) {
        map.insert("originalId".into(), json!(original.to_string()));
    }
    body
}

/// A refusal whose detailMessage is a `freeString`.
pub(super) fn refuse(status: StatusCode, ids: ErrorIds, error_type: &str, why: &str) -> Answer {
    refuse_with(status, ids, error_type, why, Map::new())
}

/// A refusal whose detailMessage is a `freeString` and the fields of `detail` (e.g. the
/// `voucher` of a duplicate provision).
pub(super) fn refuse_with(
    status: StatusCode,
    ids: ErrorIds,
    error_type: &str,
    why: &str,
    mut detail: Map<String, Value>,
) -> Answer {
    detail.insert("freeString".into(), json!(why));
    let body = error_detail(ids, error_type, why, Value::Object(detail));
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
