//! The CSQ simulator: serves the eVSB voucher API as the provider texts describe it.
//!
//! Dummy operators (the "dummy product usage guide", also in the README):
//! - **1001**: always succeeds, with a voucher code and redeem instructions;
//! - **1002**: succeeds with `hasAdditionalData: true`; the additional data (instructions,
//!   PDF link, barcode, QR payload) is ready after [`SandboxOptions::additional_data_delay`];
//! - **1003**: dynamic products: `GET /pre-paid/vouchers/products/...` lists three, and a
//!   purchase must name one of them in `dynamicProductId` (other operators answer 404 there);
//! - **1004**: raffle: sells a ticket whose draw is [`SandboxOptions::draw_delay`] later;
//!   `GET /pre-paid/vouchers/finished/...` answers `finalstatus` 2 until the draw, then the
//!   result, a win for about [`SandboxOptions::win_per_mille`] tickets in a thousand;
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
/// Operator with dynamic products.
pub const OPERATOR_DYNAMIC: i32 = 1003;
/// Operator that sells raffle tickets.
pub const OPERATOR_RAFFLE: i32 = 1004;
/// Operator that always declines.
pub const OPERATOR_DECLINE: i32 = 1005;
/// Balance of a fresh sandbox, in minor units: one million.
pub const INITIAL_BALANCE_X100: i64 = 100_000_000;
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
    /// How long after the sale operator 1004 draws.
    pub draw_delay: Duration,
    /// Winning tickets per thousand for operator 1004.
    pub win_per_mille: u16,
}

impl Default for SandboxOptions {
    fn default() -> Self {
        SandboxOptions {
            slow_answer: Duration::from_secs(60),
            additional_data_delay: Duration::from_secs(5),
            draw_delay: Duration::from_secs(30),
            win_per_mille: 300,
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
    /// Product-list queries that passed authentication.
    pub products_calls: u64,
    /// Finished (raffle result) queries that passed authentication.
    pub finished_calls: u64,
    /// What is left to sell, in minor units.
    pub balance_x100: i64,
    /// Operator-1006 answers being held back right now (sold, not yet answered).
    pub answers_held: u64,
}

/// One purchase the sandbox has answered.
struct Sale {
    operator: i32,
    /// The purchase answer, replayed for a reused `localReference`.
    answer: Value,
    /// The receipt with everything, served by additional-data once `ready_at` has passed.
    full: Value,
    ready_at: Instant,
    /// For raffle tickets: when the draw takes place.
    draw_at: Option<Instant>,
}

struct Ledger {
    stats: Stats,
    /// (terminal, localReference) -> the sale.
    sales: HashMap<(i32, i32), Sale>,
}

impl Ledger {
    /// The sale of `reference` on `terminal`, if it was made with `operator`.
    fn sale(&self, terminal: i32, operator: i32, reference: i32) -> Option<&Sale> {
        self.sales
            .get(&(terminal, reference))
            .filter(|sale| sale.operator == operator)
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

impl Default for Ledger {
    fn default() -> Self {
        Ledger {
            stats: Stats {
                balance_x100: INITIAL_BALANCE_X100,
                ..Stats::default()
            },
            sales: HashMap::new(),
        }
    }
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
        let (answer, full, delay) = decide_sale(&sandbox.inner.options, operator, &body);
        let draw_at = (operator == OPERATOR_RAFFLE && answer["items"][0]["finalstatus"] == 0)
            .then(|| Instant::now() + sandbox.inner.options.draw_delay);
        if answer["items"][0]["finalstatus"] == 0 {
            ledger.stats.purchases_applied += 1;
            ledger.stats.balance_x100 -= i64::from(body.amount_to_send_x100.unwrap_or(0));
        }
        ledger.sales.insert(
            (terminal, reference),
            Sale {
                operator,
                answer: answer.clone(),
                full,
                ready_at: Instant::now() + delay,
                draw_at,
            },
        );
        answer
    };
    if operator == OPERATOR_SLOW {
        // Sold and recorded; the answer now arrives after the client has given up.
        sandbox.ledger().stats.answers_held += 1;
        tokio::time::sleep(sandbox.inner.options.slow_answer).await;
        sandbox.ledger().stats.answers_held -= 1;
    }
    axum::Json(answer).into_response()
}

/// The three products of operator 1003.
fn dynamic_products() -> Value {
    json!([
        {"dynamicProductId": "DYN-1003-0500", "name": "Streaming card 5", "amountX100": 500, "currency": "EUR"},
        {"dynamicProductId": "DYN-1003-1000", "name": "Streaming card 10", "amountX100": 1000, "currency": "EUR"},
        {"dynamicProductId": "DYN-1003-2500", "name": "Streaming card 25", "amountX100": 2500, "currency": "EUR"}
    ])
}

/// What a purchase answers: (the answer, the full receipt, delay until additional data).
fn decide_sale(
    options: &SandboxOptions,
    operator: i32,
    body: &PurchaseBody,
) -> (Value, Value, Duration) {
    let declined = |code: &str, message: &str| {
        let v = json!({"rc": 0, "items": [{"finalstatus": 1, "resultcode": code, "resultmessage": message}]});
        (v.clone(), v, Duration::ZERO)
    };
    let amount = body.amount_to_send_x100.filter(|a| *a > 0);
    match operator {
        OPERATOR_OK | OPERATOR_SLOW => match amount {
            Some(amount) => {
                let full = sold(amount, false);
                (full.clone(), full, Duration::ZERO)
            }
            None => declined("13", "amountToSendX100 is required and must be positive"),
        },
        OPERATOR_ADDITIONAL_DATA => match amount {
            Some(amount) => {
                let full = sold(amount, true);
                let mut answer = full.clone();
                // The sale is made; the instructions and assets come later.
                answer["items"][0]["hasAdditionalData"] = json!(true);
                answer["items"][0]["extraInfo"]["redeemInstructions"] = Value::Null;
                answer["items"][0]["extraInfo"]["additionalData"] = json!([]);
                (answer, full, options.additional_data_delay)
            }
            None => declined("13", "amountToSendX100 is required and must be positive"),
        },
        OPERATOR_DYNAMIC => {
            let products = dynamic_products();
            let chosen = products.as_array().and_then(|list| {
                list.iter()
                    .find(|p| {
                        Some(p["dynamicProductId"].as_str().unwrap_or_default())
                            == body.dynamic_product_id.as_deref()
                    })
                    .cloned()
            });
            match chosen {
                Some(p) => {
                    let price = p["amountX100"]
                        .as_i64()
                        .and_then(|a| i32::try_from(a).ok())
                        .unwrap_or(0);
                    if amount.is_some_and(|a| a != price) {
                        declined("31", "amountToSendX100 does not match the product's price")
                    } else {
                        let full = sold(price, false);
                        (full.clone(), full, Duration::ZERO)
                    }
                }
                None => declined(
                    "30",
                    "dynamicProductId is missing or unknown for this operator",
                ),
            }
        }
        OPERATOR_RAFFLE => match amount {
            Some(amount) => {
                let mut full = sold(amount, false);
                let draw_at = chrono::Utc::now()
                    + chrono::Duration::from_std(options.draw_delay).unwrap_or_default();
                let draw_at = draw_at.to_rfc3339_opts(chrono::SecondsFormat::Secs, true);
                let ticket = format!(
                    "T{}",
                    &full["items"][0]["extraInfo"]["redeemCode"]
                        .as_str()
                        .unwrap_or_default()[..10]
                );
                let extra = &mut full["items"][0]["extraInfo"];
                extra["redeemCode"] = json!(ticket);
                extra["redeemInstructions"] = json!(format!(
                    "Keep this ticket. The draw takes place at {draw_at}."
                ));
                extra["additionalData"] = json!([{"key": "draw_at", "value": draw_at}]);
                (full.clone(), full, Duration::ZERO)
            }
            None => declined("13", "amountToSendX100 is required and must be positive"),
        },
        OPERATOR_DECLINE => declined("14", "Operation declined by the operator"),
        _ => {
            let unknown = json!({"rc": 21, "resultmessage": "operator not found"});
            (unknown.clone(), unknown, Duration::ZERO)
        }
    }
}

/// Checks the headers and the path of a GET; returns the path or the refusal.
fn get_preamble<T>(
    sandbox: &CsqSandbox,
    headers: &HeaderMap,
    path: Result<Path<T>, axum::extract::rejection::PathRejection>,
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

async fn products(
    State(sandbox): State<CsqSandbox>,
    path: Result<Path<(i32, i32)>, axum::extract::rejection::PathRejection>,
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

async fn finished(
    State(sandbox): State<CsqSandbox>,
    path: Result<Path<(i32, i32, i32)>, axum::extract::rejection::PathRejection>,
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

async fn balances(
    State(sandbox): State<CsqSandbox>,
    path: Result<Path<i32>, axum::extract::rejection::PathRejection>,
    headers: HeaderMap,
) -> Response {
    if let Err(refusal) = get_preamble(&sandbox, &headers, path) {
        return *refusal;
    }
    let balance = sandbox.ledger().stats.balance_x100;
    axum::Json(json!({"rc": 0, "items": [{"currency": "EUR", "balanceX100": balance, "creditLimitX100": 0}]}))
        .into_response()
}

async fn additional_data(
    State(sandbox): State<CsqSandbox>,
    path: Result<Path<(i32, i32, i32)>, axum::extract::rejection::PathRejection>,
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
