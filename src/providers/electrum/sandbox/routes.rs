//! The axum router, and the handlers of every POST: the API's messages, which run the four
//! checks in order (see the module doc of [`sandbox`](super)), and the admin routes (reset,
//! faults, stats). The two GET lookups are in `lookups`. Every path is served with and
//! without a trailing slash, as Electrum's server serves them.

use std::time::Instant;

use axum::Router;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{MethodRouter, get, post};
use serde_json::json;

use super::auth::{NO_BASIC_AUTH, authentication_error, basic_user, check_client};
use super::faults::{hold_or_fail, parse_fault_spec};
use super::ledger::TxHeader;
use super::lookups::{lookup_redemption, lookup_voucher};
use super::operation::{Family, Step, operation};
use super::schema::validate;
use super::stats::bump;
use super::table::apply_message;
use super::{ElectrumSandbox, Stats};

/// The HTTP routes of `sandbox`.
pub(super) fn router(sandbox: ElectrumSandbox) -> Router {
    use Family::{Provision, Redemption, Refund};
    use Step::{Confirm, Request, Reverse};
    let route = |family: Family, step: Step| {
        post(
            move |State(sandbox): State<ElectrumSandbox>, headers: HeaderMap, body: Bytes| {
                posted(sandbox, family, step, headers, body)
            },
        )
    };
    let routes: [(&str, MethodRouter<ElectrumSandbox>); 14] = [
        (
            "/suv/v1/vouchers",
            route(Provision, Request).get(lookup_voucher),
        ),
        ("/suv/v1/vouchers/confirmations", route(Provision, Confirm)),
        ("/suv/v1/vouchers/reversals", route(Provision, Reverse)),
        ("/suv/v1/redemptions", route(Redemption, Request)),
        (
            "/suv/v1/redemptions/confirmations",
            route(Redemption, Confirm),
        ),
        ("/suv/v1/redemptions/reversals", route(Redemption, Reverse)),
        ("/suv/v1/redemptions/{request_id}", get(lookup_redemption)),
        ("/suv/v1/refunds", route(Refund, Request)),
        ("/suv/v1/refunds/confirmations", route(Refund, Confirm)),
        ("/suv/v1/refunds/reversals", route(Refund, Reverse)),
        ("/suv/v1/testServerAdmin/reset", post(reset)),
        ("/sandbox/faults", post(inject_over_http)),
        ("/sandbox/stats", get(stats)),
        ("/sandbox/effects", get(effects)),
    ];
    let mut router = Router::new();
    for (path, methods) in routes {
        router = router
            .route(&format!("{path}/"), methods.clone())
            .route(path, methods);
    }
    router.with_state(sandbox)
}

/// Every POST of the API: validation, authentication, fault, state table, effect.
async fn posted(
    sandbox: ElectrumSandbox,
    family: Family,
    step: Step,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let op = operation(family, step);
    sandbox.count_call(op);
    let message = match validate(family, step, &body) {
        Ok(valid) => valid,
        Err(format_error) => return *format_error,
    };
    let Some(user) = basic_user(&headers) else {
        return authentication_error(message.ids, NO_BASIC_AUTH);
    };

    let slow_answer = sandbox.slow_answer();
    let (answer, hold) = {
        let mut ledger = sandbox.ledger();
        if let Err(refusal) = check_client(&ledger, family, step, &message, &user) {
            return *refusal;
        }
        let hold = match hold_or_fail(ledger.take_fault(op), message.ids) {
            Ok(hold) => hold,
            Err(fault_error) => return *fault_error,
        };
        let tx = TxHeader {
            id: message.key,
            client: user,
            held_until: hold.then(|| Instant::now() + slow_answer),
        };
        let answer = apply_message(&mut ledger, family, step, tx, &message);
        if answer.effect {
            bump(&mut ledger.stats.effects, op);
        }
        (answer, hold)
    };
    if hold {
        tokio::time::sleep(slow_answer).await;
    }
    answer.into_response()
}

/// `POST /suv/v1/testServerAdmin/reset`.
async fn reset(State(sandbox): State<ElectrumSandbox>) -> StatusCode {
    sandbox.reset();
    StatusCode::NO_CONTENT
}

/// `GET /sandbox/stats`.
async fn stats(State(sandbox): State<ElectrumSandbox>) -> axum::Json<Stats> {
    axum::Json(sandbox.stats())
}

/// `GET /sandbox/effects`.
async fn effects(State(sandbox): State<ElectrumSandbox>) -> axum::Json<Vec<super::EffectRecord>> {
    axum::Json(sandbox.effects())
}

/// `POST /sandbox/faults`: [`ElectrumSandbox::inject`] over HTTP.
async fn inject_over_http(State(sandbox): State<ElectrumSandbox>, body: Bytes) -> Response {
    match parse_fault_spec(&body) {
        Ok((operation, fault, times)) => {
            sandbox.inject(operation, fault, times);
            StatusCode::NO_CONTENT.into_response()
        }
        Err(why) => (StatusCode::BAD_REQUEST, axum::Json(json!({"error": why}))).into_response(),
    }
}
