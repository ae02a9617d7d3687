//! The CSQ simulator: serves the eVSB voucher API as the provider texts describe it.
//!
//! Dummy operators (the "dummy product usage guide", also in `docs/providers/csq.md`):
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
//! - **1008**: a flaky gateway: the 1st, 3rd, 5th... purchase call to it answers 503
//!   without selling anything, the others sell like 1001 (a command sent again succeeds);
//! - any other operator: `rc` 21, operator not found.
//!
//! `GET /pre-paid/vouchers/additional-data/{terminalId}/{operatorId}/{localReference}`
//! answers 404 for a reference it never sold, `finalstatus` 2 while the data is not ready,
//! and the full receipt once it is.
//!
//! It checks what a certification endpoint checks: the U / SH / ST headers (see
//! [`auth`](super::auth)), int32 path parameters, a JSON body with exactly the documented
//! fields and types. A `localReference` reused on the same terminal replays the first answer
//! without selling a second voucher, so tests can tell calls from effects.
//!
//! `GET /sandbox/stats` reports the counters; `GET /sandbox/sales` lists every voucher sold
//! (terminal, `localReference`, operator), the ledger `voucher-relay verify --sandbox`
//! compares with the relay's records; `POST /sandbox/reset` clears them.
//!
//! # Where each part lives
//! - `operators`: what each dummy operator answers to a purchase, and the receipts it sells;
//! - `ledger`: the sales made so far, by terminal and `localReference`, and the counters;
//! - `routes`: the axum router and handlers, with the checks every request passes.

mod ledger;
mod operators;
mod routes;

use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use axum::Router;

use ledger::Ledger;

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
/// Operator whose every other purchase call fails with 503 before applying anything.
pub const OPERATOR_FLAKY: i32 = 1008;

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
    /// Purchase calls per thousand, to any operator, that meet a fault (for chaos runs):
    /// in turn a 503 before selling, a sale whose answer is held for `slow_answer` (a
    /// timeout after the effect), and a sale whose connection is dropped mid-answer.
    pub fault_per_mille: u16,
}

impl Default for SandboxOptions {
    fn default() -> Self {
        SandboxOptions {
            slow_answer: Duration::from_secs(60),
            additional_data_delay: Duration::from_secs(5),
            draw_delay: Duration::from_secs(30),
            win_per_mille: 300,
            fault_per_mille: 0,
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

/// One voucher sold, as `GET /sandbox/sales` lists it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct SaleRecord {
    pub terminal_id: i32,
    pub local_reference: i32,
    pub operator_id: i32,
}

struct Inner {
    user: String,
    password: String,
    options: SandboxOptions,
    ledger: Mutex<Ledger>,
    /// When each request to the provider's API arrived, for rate measurements; the first
    /// million only.
    arrivals: Mutex<Vec<std::time::Instant>>,
}

/// Arrivals kept at most: a million instants is 16 MB.
const MAX_ARRIVALS: usize = 1_000_000;

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
                arrivals: Mutex::new(Vec::new()),
            }),
        }
    }

    /// The HTTP routes.
    pub fn router(&self) -> Router {
        routes::router(self.clone())
    }

    /// Serves on `listener` until the task is dropped.
    pub async fn serve(self, listener: tokio::net::TcpListener) -> std::io::Result<()> {
        axum::serve(listener, self.router()).await
    }

    /// The counters so far.
    pub fn stats(&self) -> Stats {
        self.ledger().stats
    }

    /// Every voucher sold so far.
    pub fn sales(&self) -> Vec<SaleRecord> {
        self.ledger().sold()
    }

    /// When each request to the provider's API arrived, in order.
    pub fn request_arrivals(&self) -> Vec<std::time::Instant> {
        self.inner
            .arrivals
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .clone()
    }

    pub(super) fn note_arrival(&self) {
        let mut arrivals = self
            .inner
            .arrivals
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        if arrivals.len() < MAX_ARRIVALS {
            arrivals.push(std::time::Instant::now());
        }
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
