//! The CSQ simulator: serves the eVSB voucher API as the provider texts describe it.
//!
//! Dummy operators (the "dummy product usage guide", also in the README):
//! - **1001**: always succeeds, with a voucher code and redeem instructions;
//! - **1002**: succeeds with `hasAdditionalData: true`; the additional data (instructions,
//!   PDF link, barcode, QR payload) is ready after [`SandboxOptions::additional_data_delay`];
//! - **1005**: always declines, `finalstatus` 1 with the final result code `14`;
//! - **1006**: sells the voucher, then answers only after [`SandboxOptions::slow_answer`],
//!   long after any sane client timeout (the effect is applied, the answer is lost);
//! - **1007**: answers 503 without selling anything;
//! - any other operator: `rc` 21, operator not found.
//!
//! `GET /pre-paid/vouchers/additional-data/{terminalId}/{operatorId}/{localReference}`
//! answers 404 for a reference it never sold, `finalstatus` 2 while the data is not ready,
//! and the full receipt once it is.
//!
//! It checks what a certification endpoint checks: the U / SH / ST headers (see [`auth`]),
//! int32 path parameters, a JSON body with exactly the documented fields and types. A
//! `localReference` reused on the same terminal replays the first answer without selling a
//! second voucher, so tests can tell calls from effects.
//!
//! `GET /sandbox/stats` reports the counters; `POST /sandbox/reset` clears them.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

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
/// Operator whose purchase has additional data that arrives later.
pub const OPERATOR_ADDITIONAL_DATA: i32 = 1002;
/// Operator that always declines.
pub const OPERATOR_DECLINE: i32 = 1005;
/// Operator that applies the purchase and then answers too late.
pub const OPERATOR_SLOW: i32 = 1006;
/// Operator that fails with 503 before applying anything.
pub const OPERATOR_UNAVAILABLE: i32 = 1007;

/// Timings of the fault operators.
#[derive(Debug, Clone, Copy)]
pub struct SandboxOptions {
    /// How long operator 1006 holds its answer after selling.
    pub slow_answer: Duration,
    /// How long operator 1002's additional data takes to be ready.
    pub additional_data_delay: Duration,
}

impl Default for SandboxOptions {
    fn default() -> Self {
        SandboxOptions {
            slow_answer: Duration::from_secs(60),
            additional_data_delay: Duration::from_secs(5),
        }
    }
}

/// Counters a test or the demo can read.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize)]
pub struct Stats {
    /// Purchase requests that passed authentication and validation.
    pub purchase_calls: u64,
    /// Vouchers actually sold (a replayed `localReference` does not count).
    pub purchases_applied: u64,
    /// Additional-data queries that passed authentication.
    pub additional_data_calls: u64,
}

/// One purchase the sandbox has answered.
struct Sale {
    operator: i32,
    /// The purchase answer, replayed for a reused `localReference`.
    answer: Value,
    /// The receipt with everything, served by additional-data once `ready_at` has passed.
    full: Value,
    ready_at: Instant,
}

#[derive(Default)]
struct Ledger {
    stats: Stats,
    /// (terminal, localReference) -> the sale.
    sales: HashMap<(i32, i32), Sale>,
}

struct Inner {
    user: String,
    password: String,
    options: SandboxOptions,
    ledger: Mutex<Ledger>,
}

/// A running or runnable CSQ simulator. Cheap to clone; clones share state.
#[derive(Clone)]
pub struct CsqSandbox {
    inner: Arc<Inner>,
}

impl CsqSandbox {
    /// A simulator that accepts these credentials, with default timings.
    pub fn new(user: &str, password: &str) -> CsqSandbox {
        Self::with_options(user, password, SandboxOptions::default())
    }

    /// A simulator with the given fault timings.
    pub fn with_options(user: &str, password: &str, options: SandboxOptions) -> CsqSandbox {
        CsqSandbox {
            inner: Arc::new(Inner {
                user: user.to_string(),
                password: password.to_string(),
                options,
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
            .route(
                "/pre-paid/vouchers/additional-data/{terminal}/{operator}/{reference}",
                get(additional_data),
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

    if operator == OPERATOR_UNAVAILABLE {
        sandbox.ledger().stats.purchase_calls += 1;
        return refuse(
            StatusCode::SERVICE_UNAVAILABLE,
            -1,
            "service temporarily unavailable",
        );
    }
    let answer = {
        let mut ledger = sandbox.ledger();
        ledger.stats.purchase_calls += 1;
        if let Some(sale) = ledger.sales.get(&(terminal, reference)) {
            if sale.operator == operator {
                return axum::Json(sale.answer.clone()).into_response();
            }
            return axum::Json(
                json!({"rc": 12, "resultmessage": "localReference already used on this terminal"}),
            )
            .into_response();
        }
        let (answer, full, delay) = match operator {
            OPERATOR_OK | OPERATOR_SLOW | OPERATOR_ADDITIONAL_DATA => {
                match body.amount_to_send_x100 {
                    Some(amount) if amount > 0 && operator == OPERATOR_ADDITIONAL_DATA => {
                        let full = sold(amount, true);
                        let mut answer = full.clone();
                        // The sale is made; the instructions and assets come later.
                        answer["items"][0]["hasAdditionalData"] = json!(true);
                        answer["items"][0]["extraInfo"]["redeemInstructions"] = Value::Null;
                        answer["items"][0]["extraInfo"]["additionalData"] = json!([]);
                        (answer, full, sandbox.inner.options.additional_data_delay)
                    }
                    Some(amount) if amount > 0 => {
                        let full = sold(amount, false);
                        (full.clone(), full, Duration::ZERO)
                    }
                    _ => {
                        let refused = json!({"rc": 0, "items": [{"finalstatus": 1, "resultcode": "13",
                        "resultmessage": "amountToSendX100 is required and must be positive"}]});
                        (refused.clone(), refused, Duration::ZERO)
                    }
                }
            }
            OPERATOR_DECLINE => {
                let declined = json!({"rc": 0, "items": [{"finalstatus": 1, "resultcode": "14",
                        "resultmessage": "Operation declined by the operator"}]});
                (declined.clone(), declined, Duration::ZERO)
            }
            _ => {
                let unknown = json!({"rc": 21, "resultmessage": "operator not found"});
                (unknown.clone(), unknown, Duration::ZERO)
            }
        };
        if answer["items"][0]["finalstatus"] == 0 {
            ledger.stats.purchases_applied += 1;
        }
        ledger.sales.insert(
            (terminal, reference),
            Sale {
                operator,
                answer: answer.clone(),
                full,
                ready_at: Instant::now() + delay,
            },
        );
        answer
    };
    if operator == OPERATOR_SLOW {
        // Sold and recorded; the answer now arrives after the client has given up.
        tokio::time::sleep(sandbox.inner.options.slow_answer).await;
    }
    axum::Json(answer).into_response()
}

async fn additional_data(
    State(sandbox): State<CsqSandbox>,
    path: Result<Path<(i32, i32, i32)>, axum::extract::rejection::PathRejection>,
    headers: HeaderMap,
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
    let mut ledger = sandbox.ledger();
    ledger.stats.additional_data_calls += 1;
    match ledger.sales.get(&(terminal, reference)) {
        Some(sale) if sale.operator == operator => {
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
        _ => refuse(
            StatusCode::NOT_FOUND,
            404,
            "no transaction with this localReference",
        ),
    }
}

/// A successful sale with a fresh voucher code.
fn sold(amount_x100: i32, with_assets: bool) -> Value {
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
                "additionalData": if with_assets {
                    json!([
                        {"key": "face_value_x100", "value": amount_x100.to_string()},
                        {"key": "pdf_url", "value": format!("https://vouchers.example/pdf/{supplier_ref}.pdf")},
                        {"key": "barcode", "value": format!("EAN13:{}", &code[..12])},
                        {"key": "qr_payload", "value": format!("VOUCHER:{supplier_ref}:{code}")}
                    ])
                } else {
                    json!({"key": "face_value_x100", "value": amount_x100.to_string()})
                }
            },
            "hasAdditionalData": false,
            "destinationcurrency": "EUR",
            "destinationamount": decimal(amount_x100)
        }]
    })
}

/// A JSON number with two decimals, built from text so no float rounding enters.
fn decimal(minor: i32) -> Value {
    let text = format!("{}.{:02}", minor / 100, (minor % 100).abs());
    serde_json::from_str(&text).unwrap_or(Value::Null)
}
