//! The CSQ simulator: serves the eVSB voucher API as the provider texts describe it.
//!
//! Dummy operators (the "dummy product usage guide", also in the README):
//! - **1001**: always succeeds, with a voucher code and redeem instructions;
//! - **1005**: always declines, `finalstatus` 1 with the final result code `14`;
//! - any other operator: `rc` 21, operator not found.
//!
//! It checks what a certification endpoint checks: the U / SH / ST headers (see [`auth`]),
//! int32 path parameters, a JSON body with exactly the documented fields and types. A
//! `localReference` reused on the same terminal replays the first answer without selling a
//! second voucher, so tests can tell calls from effects.
//!
//! `GET /sandbox/stats` reports the counters; `POST /sandbox/reset` clears them.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard};

use axum::Router;
use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use rand::Rng;
use serde_json::{Value, json};

use super::auth;
use super::params::PurchaseBody;

/// Operator that always sells.
pub const OPERATOR_OK: i32 = 1001;
/// Operator that always declines.
pub const OPERATOR_DECLINE: i32 = 1005;

/// Counters a test or the demo can read.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize)]
pub struct Stats {
    /// Purchase requests that passed authentication and validation.
    pub purchase_calls: u64,
    /// Vouchers actually sold (a replayed `localReference` does not count).
    pub purchases_applied: u64,
}

#[derive(Default)]
struct Ledger {
    stats: Stats,
    /// (terminal, localReference) -> (operator, first answer).
    purchases: HashMap<(i32, i32), (i32, Value)>,
}

struct Inner {
    user: String,
    password: String,
    ledger: Mutex<Ledger>,
}

/// A running or runnable CSQ simulator. Cheap to clone; clones share state.
#[derive(Clone)]
pub struct CsqSandbox {
    inner: Arc<Inner>,
}

impl CsqSandbox {
    /// A simulator that accepts these credentials.
    pub fn new(user: &str, password: &str) -> CsqSandbox {
        CsqSandbox {
            inner: Arc::new(Inner {
                user: user.to_string(),
                password: password.to_string(),
                ledger: Mutex::new(Ledger::default()),
            }),
        }
    }

    /// The HTTP routes.
    pub fn router(&self) -> Router {
        Router::new()
            .route(
                "/pre-paid/vouchers/purchase/{terminal}/{operator}/{reference}",
                post(purchase),
            )
            .route("/ping", get(|| async { axum::Json(json!({"rc": 0})) }))
            .route("/sandbox/stats", get(stats))
            .route("/sandbox/reset", post(reset))
            .with_state(self.clone())
    }

    /// Serves on `listener` until the task is dropped.
    pub async fn serve(self, listener: tokio::net::TcpListener) -> std::io::Result<()> {
        axum::serve(listener, self.router()).await
    }

    /// The counters so far.
    pub fn stats(&self) -> Stats {
        self.ledger().stats
    }

    fn ledger(&self) -> MutexGuard<'_, Ledger> {
        // A panic while holding the lock cannot leave the ledger half-written (every update
        // is a single insert or increment), so a poisoned lock is still safe to use.
        self.inner
            .ledger
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

async fn stats(State(sandbox): State<CsqSandbox>) -> axum::Json<Stats> {
    axum::Json(sandbox.stats())
}

async fn reset(State(sandbox): State<CsqSandbox>) -> StatusCode {
    *sandbox.ledger() = Ledger::default();
    StatusCode::NO_CONTENT
}

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

async fn purchase(
    State(sandbox): State<CsqSandbox>,
    path: Result<Path<(i32, i32, i32)>, axum::extract::rejection::PathRejection>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    if let Err(why) = check_auth(&sandbox, &headers) {
        return refuse(StatusCode::UNAUTHORIZED, 401, why);
    }
    let Ok(Path((terminal, operator, reference))) = path else {
        return refuse(
            StatusCode::BAD_REQUEST,
            400,
            "path parameters must be int32",
        );
    };
    let is_json = headers
        .get("content-type")
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with("application/json"));
    if !is_json {
        return refuse(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            415,
            "Content-Type must be application/json",
        );
    }
    let body: PurchaseBody = match serde_json::from_slice(&body) {
        Ok(b) => b,
        Err(e) => return refuse(StatusCode::BAD_REQUEST, 400, &format!("bad body: {e}")),
    };
    if let Some(t) = &body.local_date_time {
        if chrono::DateTime::parse_from_rfc3339(t).is_err() {
            return refuse(
                StatusCode::BAD_REQUEST,
                400,
                "localDateTime is not a date-time",
            );
        }
    }

    let mut ledger = sandbox.ledger();
    ledger.stats.purchase_calls += 1;
    if let Some((first_operator, answer)) = ledger.purchases.get(&(terminal, reference)) {
        if *first_operator == operator {
            return axum::Json(answer.clone()).into_response();
        }
        return axum::Json(
            json!({"rc": 12, "resultmessage": "localReference already used on this terminal"}),
        )
        .into_response();
    }
    let answer = match operator {
        OPERATOR_OK => match body.amount_to_send_x100 {
            Some(amount) if amount > 0 => sold(amount),
            _ => json!({"rc": 0, "items": [{"finalstatus": 1, "resultcode": "13",
                        "resultmessage": "amountToSendX100 is required and must be positive"}]}),
        },
        OPERATOR_DECLINE => json!({"rc": 0, "items": [{"finalstatus": 1, "resultcode": "14",
                        "resultmessage": "Operation declined by the operator"}]}),
        _ => json!({"rc": 21, "resultmessage": "operator not found"}),
    };
    let applied = answer["items"][0]["finalstatus"] == 0;
    if applied {
        ledger.stats.purchases_applied += 1;
    }
    ledger
        .purchases
        .insert((terminal, reference), (operator, answer.clone()));
    axum::Json(answer).into_response()
}

/// A successful sale with a fresh voucher code.
fn sold(amount_x100: i32) -> Value {
    let mut rng = rand::rng();
    let code: String = (0..16)
        .map(|_| char::from(b'0' + rng.random_range(0..10u8)))
        .collect();
    let supplier_ref = format!("CSQ{}", rng.random_range(10_000_000u32..99_999_999));
    json!({
        "rc": 0,
        "items": [{
            "finalstatus": 0,
            "resultcode": "00",
            "resultmessage": "OK",
            "supplierreference": supplier_ref,
            "suppliertoken": format!("tok-{supplier_ref}"),
            "extraInfo": {
                "resultcode": 0,
                "resultmessage": "OK",
                "redeemAccount": null,
                "redeemInstructions": "Enter the code at checkout or in the store app.",
                "redeemCode": code,
                "expiration": (chrono::Utc::now() + chrono::Duration::days(365)).format("%Y-%m-%d").to_string(),
                "additionalData": {"key": "face_value_x100", "value": amount_x100.to_string()}
            },
            "hasAdditionalData": false,
            "destinationcurrency": "EUR",
            "destinationamount": f64::from(amount_x100) / 100.0
        }]
    })
}
