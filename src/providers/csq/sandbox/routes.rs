//! The axum router and handlers of the CSQ sandbox, with the checks every request passes
//! first: the U / SH / ST headers, int32 path parameters and, for a purchase, the body.

use std::time::Instant;

use axum::Router;
use axum::body::Bytes;
use axum::extract::rejection::PathRejection;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use serde_json::json;

use super::ledger::{ChaosFault, Ledger, Purchase};
use super::operators::dynamic_products;
use super::{
    CsqSandbox, OPERATOR_DYNAMIC, OPERATOR_FLAKY, OPERATOR_SLOW, OPERATOR_UNAVAILABLE, Stats,
};
use crate::providers::csq::auth;
use crate::providers::csq::params::PurchaseBody;

/// The HTTP routes of `sandbox`.
pub(super) fn router(sandbox: CsqSandbox) -> Router {
    Router::new()
        .route(
            "/pre-paid/vouchers/purchase/{terminal}/{operator}/{reference}",
            post(purchase),
        )
        .route(
            "/pre-paid/vouchers/additional-data/{terminal}/{operator}/{reference}",
            get(additional_data),
        )
        .route(
            "/pre-paid/vouchers/products/{terminal}/{operator}",
            get(products),
        )
        .route(
            "/pre-paid/vouchers/finished/{terminal}/{operator}/{reference}",
            get(finished),
        )
        .route("/utils/balances/{terminal}", get(balances))
        .route("/ping", get(|| async { axum::Json(json!({"rc": 0})) }))
        // Every request to the provider's API counts against its rate limit; the sandbox's
        // own endpoints below do not.
        .route_layer(axum::middleware::from_fn_with_state(
            sandbox.clone(),
            note_arrival,
        ))
        .route("/sandbox/stats", get(stats))
        .route("/sandbox/sales", get(sales))
        .route("/sandbox/reset", post(reset))
        .with_state(sandbox)
}

/// `GET /sandbox/stats`.
async fn stats(State(sandbox): State<CsqSandbox>) -> axum::Json<Stats> {
    axum::Json(sandbox.stats())
}

/// `POST /sandbox/reset`.
async fn reset(State(sandbox): State<CsqSandbox>) -> StatusCode {
    *sandbox.ledger() = Ledger::default();
    StatusCode::NO_CONTENT
}

/// A CSQ error body `{rc, resultmessage}` with `status`.
fn refuse(status: StatusCode, rc: i64, message: &str) -> Response {
    (
        status,
        axum::Json(json!({"rc": rc, "resultmessage": message})),
    )
        .into_response()
}

/// Checks U / SH / ST; returns why when they are wrong.
fn check_auth(sandbox: &CsqSandbox, headers: &HeaderMap) -> Result<(), &'static str> {
    let get = |name: &str| headers.get(name).and_then(|v| v.to_str().ok());
    let (Some(u), Some(sh), Some(st)) = (get("U"), get("SH"), get("ST")) else {
        return Err("missing U, SH or ST header");
    };
    let Ok(ts) = st.parse::<i64>() else {
        return Err("ST is not a Unix timestamp");
    };
    if (chrono::Utc::now().timestamp() - ts).abs() > auth::MAX_CLOCK_SKEW_SECS {
        return Err("ST is too far from the server clock");
    }
    let expected = auth::signature(&sandbox.inner.user, st, &sandbox.inner.password);
    if u != sandbox.inner.user || sh != expected {
        return Err("bad credentials");
    }
    Ok(())
}

/// Notes when a request to the provider's API arrived, whatever it asks.
async fn note_arrival(
    State(sandbox): State<CsqSandbox>,
    request: axum::extract::Request,
    next: axum::middleware::Next,
) -> Response {
    sandbox.note_arrival();
    next.run(request).await
}

/// `POST /pre-paid/vouchers/purchase/{terminal}/{operator}/{reference}`.
async fn purchase(
    State(sandbox): State<CsqSandbox>,
    path: Result<Path<(i32, i32, i32)>, PathRejection>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    if let Err(why) = check_auth(&sandbox, &headers) {
        return refuse(StatusCode::UNAUTHORIZED, 401, why);
    }
    let Ok(Path(path)) = path else {
        return refuse(
            StatusCode::BAD_REQUEST,
            400,
            "path parameters must be int32",
        );
    };
    let body = match purchase_body(&headers, &body) {
        Ok(body) => body,
        Err(refusal) => return *refusal,
    };
    let (_terminal, operator, _reference) = path;
    let fails = operator == OPERATOR_UNAVAILABLE
        || (operator == OPERATOR_FLAKY && sandbox.ledger().flaky_fails());
    if fails {
        sandbox.ledger().stats.purchase_calls += 1;
        return refuse(
            StatusCode::SERVICE_UNAVAILABLE,
            -1,
            "service temporarily unavailable",
        );
    }
    let options = &sandbox.inner.options;
    let fault = sandbox.ledger().chaos_fault(options.fault_per_mille);
    if fault == Some(ChaosFault::Unavailable) {
        sandbox.ledger().stats.purchase_calls += 1;
        return refuse(
            StatusCode::SERVICE_UNAVAILABLE,
            -1,
            "service temporarily unavailable (chaos)",
        );
    }
    let purchase = sandbox.ledger().purchase(options, path, &body);
    let answer = match purchase {
        Purchase::Known(answer) => return axum::Json(answer).into_response(),
        Purchase::Decided(answer) => answer,
    };
    match fault {
        Some(ChaosFault::AnswerHeld) => tokio::time::sleep(options.slow_answer).await,
        Some(ChaosFault::ConnectionDropped) => return dropped_mid_answer(),
        _ => {}
    }
    if operator == OPERATOR_SLOW {
        // Sold and recorded; the answer now arrives after the client has given up.
        sandbox.ledger().stats.answers_held += 1;
        tokio::time::sleep(sandbox.inner.options.slow_answer).await;
        sandbox.ledger().stats.answers_held -= 1;
    }
    axum::Json(answer).into_response()
}

/// An answer whose body breaks off after its headers: the client sees the connection
/// dropped, with the sale already made.
fn dropped_mid_answer() -> Response {
    let broken = futures_util::stream::once(async {
        Err::<Bytes, std::io::Error>(std::io::Error::new(
            std::io::ErrorKind::ConnectionReset,
            "chaos: connection dropped",
        ))
    });
    let mut response = axum::body::Body::from_stream(broken).into_response();
    response.headers_mut().insert(
        axum::http::header::CONTENT_TYPE,
        axum::http::HeaderValue::from_static("application/json"),
    );
    response
}

/// `GET /sandbox/sales`.
async fn sales(State(sandbox): State<CsqSandbox>) -> axum::Json<Vec<super::SaleRecord>> {
    axum::Json(sandbox.sales())
}

/// The body of a purchase, if it is JSON (by its Content-Type) with exactly the documented
/// fields and a date-time in `localDateTime`; else the refusal.
fn purchase_body(headers: &HeaderMap, body: &[u8]) -> Result<PurchaseBody, Box<Response>> {
    let is_json = headers
        .get("content-type")
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with("application/json"));
    if !is_json {
        return Err(Box::new(refuse(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            415,
            "Content-Type must be application/json",
        )));
    }
    let body: PurchaseBody = serde_json::from_slice(body).map_err(|e| {
        Box::new(refuse(
            StatusCode::BAD_REQUEST,
            400,
            &format!("bad body: {e}"),
        ))
    })?;
    if let Some(t) = &body.local_date_time {
        if chrono::DateTime::parse_from_rfc3339(t).is_err() {
            return Err(Box::new(refuse(
                StatusCode::BAD_REQUEST,
                400,
                "localDateTime is not a date-time",
            )));
        }
    }
    Ok(body)
}

/// Checks the headers and the path of a GET; returns the path or the refusal.
fn get_preamble<T>(
    sandbox: &CsqSandbox,
    headers: &HeaderMap,
    path: Result<Path<T>, PathRejection>,
) -> Result<T, Box<Response>> {
    check_auth(sandbox, headers)
        .map_err(|why| Box::new(refuse(StatusCode::UNAUTHORIZED, 401, why)))?;
    path.map(|Path(p)| p).map_err(|_| {
        Box::new(refuse(
            StatusCode::BAD_REQUEST,
            400,
            "path parameters must be int32",
        ))
    })
}

/// `GET /pre-paid/vouchers/products/{terminal}/{operator}`: operator 1003's products.
async fn products(
    State(sandbox): State<CsqSandbox>,
    path: Result<Path<(i32, i32)>, PathRejection>,
    headers: HeaderMap,
) -> Response {
    let (_terminal, operator) = match get_preamble(&sandbox, &headers, path) {
        Ok(p) => p,
        Err(refusal) => return *refusal,
    };
    sandbox.ledger().stats.products_calls += 1;
    if operator == OPERATOR_DYNAMIC {
        axum::Json(json!({"rc": 0, "items": dynamic_products()})).into_response()
    } else {
        refuse(
            StatusCode::NOT_FOUND,
            404,
            "no dynamic products for this operator",
        )
    }
}

/// `GET /pre-paid/vouchers/finished/{terminal}/{operator}/{reference}`: a raffle ticket's
/// result once drawn; any other sale as it is.
async fn finished(
    State(sandbox): State<CsqSandbox>,
    path: Result<Path<(i32, i32, i32)>, PathRejection>,
    headers: HeaderMap,
) -> Response {
    let (terminal, operator, reference) = match get_preamble(&sandbox, &headers, path) {
        Ok(p) => p,
        Err(refusal) => return *refusal,
    };
    let mut ledger = sandbox.ledger();
    ledger.stats.finished_calls += 1;
    let win_per_mille = sandbox.inner.options.win_per_mille;
    let Some(sale) = ledger.sale(terminal, operator, reference) else {
        return no_such_sale();
    };
    match sale.draw_at {
        Some(draw_at) if Instant::now() < draw_at => axum::Json(json!({"rc": 0, "items": [{
            "finalstatus": 2, "resultcode": "DRAW_PENDING", "resultmessage": "the draw has not taken place yet"}]}))
        .into_response(),
        Some(_) => {
            let ticket = sale.full["items"][0]["extraInfo"]["redeemCode"].clone();
            // Deterministic per ticket, so asking twice gives the same result.
            let roll = (u64::from(reference.unsigned_abs()).wrapping_mul(2_654_435_761)) % 1000;
            let win = roll < u64::from(win_per_mille);
            let (result, prize) = if win { ("win", "Gift card 50 EUR") } else { ("loss", "") };
            axum::Json(json!({"rc": 0, "items": [{
                "finalstatus": 0, "resultcode": "00", "resultmessage": result.to_uppercase(),
                "extraInfo": {"resultcode": 0, "resultmessage": result.to_uppercase(), "redeemCode": ticket,
                    "additionalData": [{"key": "raffle_result", "value": result}, {"key": "prize", "value": prize}]}
            }]}))
            .into_response()
        }
        // Not a raffle: the voucher is as finished as it will ever be.
        None => axum::Json(sale.full.clone()).into_response(),
    }
}

/// `GET /utils/balances/{terminal}`.
async fn balances(
    State(sandbox): State<CsqSandbox>,
    path: Result<Path<i32>, PathRejection>,
    headers: HeaderMap,
) -> Response {
    if let Err(refusal) = get_preamble(&sandbox, &headers, path) {
        return *refusal;
    }
    let balance = sandbox.ledger().stats.balance_x100;
    axum::Json(json!({"rc": 0, "items": [{"currency": "EUR", "balanceX100": balance, "creditLimitX100": 0}]}))
        .into_response()
}

/// `GET /pre-paid/vouchers/additional-data/{terminal}/{operator}/{reference}`: the full
/// receipt once it is ready.
async fn additional_data(
    State(sandbox): State<CsqSandbox>,
    path: Result<Path<(i32, i32, i32)>, PathRejection>,
    headers: HeaderMap,
) -> Response {
    let (terminal, operator, reference) = match get_preamble(&sandbox, &headers, path) {
        Ok(p) => p,
        Err(refusal) => return *refusal,
    };
    let mut ledger = sandbox.ledger();
    ledger.stats.additional_data_calls += 1;
    let Some(sale) = ledger.sale(terminal, operator, reference) else {
        return no_such_sale();
    };
    if Instant::now() < sale.ready_at {
        axum::Json(
            json!({"rc": 0, "items": [{"finalstatus": 2, "resultcode": "PENDING",
            "resultmessage": "additional data not ready yet", "hasAdditionalData": true}]}),
        )
        .into_response()
    } else {
        axum::Json(sale.full.clone()).into_response()
    }
}

/// CSQ's answer for a reference it never sold.
fn no_such_sale() -> Response {
    refuse(
        StatusCode::NOT_FOUND,
        404,
        "no transaction with this localReference",
    )
}
