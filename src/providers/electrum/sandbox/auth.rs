//! Authentication, step 2 of the checks: HTTP Basic, whose username must be the `client.id`
//! of the request (the one in the body, or for an advice the one its original carried).
//! The behaviour text ties only the username to `client.id`, so the password is not checked.

use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use base64::Engine;
use serde_json::Value;

use super::answer::{ErrorIds, refuse};
use super::ledger::Ledger;
use super::operation::{Family, Step};
use super::schema::Valid;

/// Why a request without usable credentials is refused.
pub(super) const NO_BASIC_AUTH: &str =
    "The request has no well-formed HTTP Basic Authorization header.";

/// The username of a well-formed `Authorization: Basic` header.
pub(super) fn basic_user(headers: &HeaderMap) -> Option<String> {
    let value = headers.get(header::AUTHORIZATION)?.to_str().ok()?;
    let (scheme, credentials) = value.trim().split_once(' ')?;
    if !scheme.eq_ignore_ascii_case("basic") {
        return None;
    }
    let decoded = base64::engine::general_purpose::STANDARD
        .decode(credentials.trim())
        .ok()?;
    let text = String::from_utf8(decoded).ok()?;
    let (user, _password) = text.split_once(':')?;
    Some(user.to_string())
}

/// The 400 AUTHENTICATION_ERROR.
pub(super) fn authentication_error(ids: ErrorIds, why: &str) -> Response {
    refuse(StatusCode::BAD_REQUEST, ids, "AUTHENTICATION_ERROR", why).into_response()
}

/// Checks that `user` is the `client.id` of the POSTed message: a request's own, or for an
/// advice the one of the request it refers to (the latest with that id). An advice about an
/// unknown request passes here: the state table answers it with its 404.
pub(super) fn check_client(
    ledger: &Ledger,
    family: Family,
    step: Step,
    message: &Valid,
    user: &str,
) -> Result<(), Box<Response>> {
    let owner = match step {
        Step::Request => message
            .msg
            .get("client")
            .and_then(|c| c.get("id"))
            .and_then(Value::as_str)
            .map(str::to_string),
        Step::Confirm | Step::Reverse => ledger
            .book(family)
            .latest(message.key)
            .map(|tx| tx.client.clone()),
    };
    match owner {
        Some(owner) if owner != user => {
            let why = format!("The Basic username {user} is not the request's client.id {owner}.");
            Err(Box::new(authentication_error(message.ids, &why)))
        }
        _ => Ok(()),
    }
}
