//! The GovStack voucher engine simulator, in either dialect of
//! `shared/provider-apis/govstack-readings.md` (`govstack`: the 23Q4 texts; `mifos`: the
//! Mifos Payment Hub EE engine):
//! - `POST /vouchers` pre-activates a batch of vouchers (one per instruction); the answer is
//!   synchronous (200 `{ResponseCode, ResponseDescription, RequestID}`, or 202 camelCase in
//!   `mifos`), and the voucher details follow as a callback to the URL of the dialect's
//!   callback header (`X-Callback-URL` / `X-CallbackURL`);
//! - `PUT /vouchers?command=activate` and `POST /vouchers?command=cancel` change each
//!   serial number on its own, answer at once, and confirm by callback `{requestID,
//!   registerRequestID, numberFailedCases, failedCases}` (only failures listed);
//! - `POST /vouchers?command=redeem` redeems synchronously: `{status, message,
//!   serialNumber, value, timestamp, transactionId}`, `status` 1/0 (`"01"`/`"00"` in
//!   `mifos`), a refusal is HTTP 200 too;
//! - `GET /vouchers/{serialNumber}?fields=status` answers the state's code (01
//!   pre-activated … 06 suspended, 08 blocked: our reading), an integer in `govstack`, a
//!   two-digit string in `mifos`; an unknown serial is 400 (`mifos`: with an empty body).
//!
//! Every call needs `Authorization: Bearer <token>` (401 otherwise). Field limits are
//! checked as the 23Q4 YAMLs set them (400 naming the field). A `requestID` seen before is
//! the same request: the same body gets the stored answer and its callback again, with no
//! second effect; another body under it is 409. In `mifos`, PascalCase keys in activate and
//! cancel bodies, and an `X-` header outside the engine's allow-list, are 400.
//!
//! Callbacks go after [`SandboxOptions::callback_delay`] and are retried (doubling from
//! 100 ms to 5 s) until the caller answers 2xx, so one sent while the caller is down
//! arrives once it is back. Faults ([`Fault`]) are injected per operation, in order.

mod ledger;
mod routes;

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use axum::Router;

pub use ledger::Voucher;
use ledger::{Callback, Ledger};

use super::dialect::Dialect;

/// The token the sandbox accepts unless told otherwise.
pub const SANDBOX_TOKEN: &str = "sandbox-token";

/// The operations faults are injected into.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Operation {
    Create,
    Activate,
    Redeem,
    Status,
    Cancel,
}

/// What an injected fault does to the next call of its operation.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fault {
    /// Answer 503 without applying anything.
    Unavailable,
    /// Apply, then hold the answer for [`SandboxOptions::slow_answer`] (a client with a
    /// shorter timeout sees a timeout after the effect).
    TimeoutAfterEffect,
    /// Send the callback twice.
    DuplicateCallback,
    /// Leave the last `n` instructions out of a creation: they are not created, and the
    /// callback does not list them.
    OmitInstructions(usize),
    /// Deliver the callback (one attempt, then retried as usual) before answering the
    /// request.
    CallbackBeforeAnswer,
}

#[derive(Debug, Clone)]
pub struct SandboxOptions {
    pub dialect: Dialect,
    pub token: String,
    /// How long after a request its callback is first sent.
    pub callback_delay: Duration,
    /// How long a [`Fault::TimeoutAfterEffect`] holds its answer.
    pub slow_answer: Duration,
}

impl Default for SandboxOptions {
    fn default() -> Self {
        SandboxOptions {
            dialect: Dialect::Govstack,
            token: SANDBOX_TOKEN.into(),
            callback_delay: Duration::from_millis(200),
            slow_answer: Duration::from_secs(30),
        }
    }
}

/// Counters a test can read.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize)]
pub struct Stats {
    pub creations: u32,
    pub vouchers_created: u32,
    pub activations: u32,
    pub redemptions_applied: u32,
    pub cancellations: u32,
    /// Callback attempts, and those answered 2xx.
    pub callback_attempts: u32,
    pub callbacks_delivered: u32,
    pub faults: u32,
}

struct Inner {
    options: SandboxOptions,
    state: Mutex<State>,
    http: reqwest::Client,
}

#[derive(Default)]
struct State {
    ledger: Ledger,
    faults: HashMap<Operation, VecDeque<(Fault, u32)>>,
    stats: Stats,
    /// For fresh secrets and request ids (xorshift: no cryptographic use).
    roll: u64,
}

/// A GovStack voucher engine simulator. Cheap to clone; clones share state.
#[derive(Clone)]
pub struct GovstackSandbox {
    inner: Arc<Inner>,
}

/// Waits between callback attempts: 100 ms doubling to 5 s.
fn retry_after(attempts: u32) -> Duration {
    Duration::from_millis(100u64.saturating_mul(1 << attempts.min(6))).min(Duration::from_secs(5))
}

impl GovstackSandbox {
    pub fn new(options: SandboxOptions) -> GovstackSandbox {
        let http = reqwest::Client::builder()
            .timeout(Duration::from_secs(5))
            .redirect(reqwest::redirect::Policy::none())
            .build()
            .unwrap_or_default();
        GovstackSandbox {
            inner: Arc::new(Inner {
                options,
                state: Mutex::new(State {
                    roll: 0x9e37_79b9_7f4a_7c15,
                    ..Default::default()
                }),
                http,
            }),
        }
    }

    pub fn dialect(&self) -> Dialect {
        self.inner.options.dialect
    }

    pub fn router(&self) -> Router {
        routes::router(self.clone())
    }

    /// Serves on `listener`, and sends the callbacks owed, until the task is dropped.
    pub async fn serve(self, listener: tokio::net::TcpListener) -> std::io::Result<()> {
        let sender = tokio::spawn(self.clone().send_callbacks());
        let served = axum::serve(listener, self.router()).await;
        sender.abort();
        served
    }

    /// The next `times` calls of `operation` get `fault`, after those injected before.
    pub fn inject(&self, operation: Operation, fault: Fault, times: u32) {
        if times > 0 {
            self.state()
                .faults
                .entry(operation)
                .or_default()
                .push_back((fault, times));
        }
    }

    pub fn stats(&self) -> Stats {
        self.state().stats.clone()
    }

    /// A voucher as the engine holds it (its secret included: for tests).
    pub fn voucher(&self, serial: &str) -> Option<Voucher> {
        self.state().ledger.vouchers.get(serial).cloned()
    }

    /// Sets a voucher's state, as the engine's own operators do (blocking, suspending).
    pub fn set_state(&self, serial: &str, state: super::dialect::VoucherState) -> bool {
        match self.state().ledger.vouchers.get_mut(serial) {
            Some(v) => {
                v.state = state;
                true
            }
            None => false,
        }
    }

    /// Callbacks not yet answered 2xx.
    pub fn callbacks_owed(&self) -> usize {
        self.state().ledger.callbacks.len()
    }

    fn state(&self) -> MutexGuard<'_, State> {
        // Every update under the lock is a few inserts that cannot panic halfway.
        self.inner.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The fault the next call of `operation` meets, if any.
    fn take_fault(&self, operation: Operation) -> Option<Fault> {
        let mut s = self.state();
        let queue = s.faults.get_mut(&operation)?;
        let (fault, left) = queue.front_mut()?;
        let fault = *fault;
        *left -= 1;
        if *left == 0 {
            queue.pop_front();
        }
        s.stats.faults += 1;
        Some(fault)
    }

    /// A fresh number from the sandbox's generator.
    fn roll(&self) -> u64 {
        crate::sandbox::next_roll(&mut self.state().roll)
    }

    /// Queues `body` for `url`, after the callback delay.
    fn owe(&self, url: &str, body: serde_json::Value, copies: usize) -> Callback {
        let cb = Callback {
            url: url.to_owned(),
            body,
            attempts: 0,
            due: Instant::now() + self.inner.options.callback_delay,
        };
        let mut s = self.state();
        for _ in 0..copies {
            s.ledger.callbacks.push(cb.clone());
        }
        cb
    }

    /// One attempt; true if answered 2xx.
    async fn deliver(&self, cb: &Callback) -> bool {
        let method = self.inner.options.dialect.callback_method();
        let sent = self
            .inner
            .http
            .request(method, &cb.url)
            .json(&cb.body)
            .send()
            .await;
        let ok = sent.is_ok_and(|r| r.status().is_success());
        let mut s = self.state();
        s.stats.callback_attempts += 1;
        if ok {
            s.stats.callbacks_delivered += 1;
        }
        ok
    }

    /// Sends the callbacks that are due, every 20 ms, until dropped.
    async fn send_callbacks(self) {
        loop {
            tokio::time::sleep(Duration::from_millis(20)).await;
            let now = Instant::now();
            let due: Vec<Callback> = {
                let mut s = self.state();
                let (due, later) = std::mem::take(&mut s.ledger.callbacks)
                    .into_iter()
                    .partition(|c| c.due <= now);
                s.ledger.callbacks = later;
                due
            };
            for mut cb in due {
                if !self.deliver(&cb).await {
                    cb.attempts += 1;
                    cb.due = Instant::now() + retry_after(cb.attempts);
                    self.state().ledger.callbacks.push(cb);
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn callbacks_back_off_to_five_seconds() {
        assert_eq!(retry_after(0), Duration::from_millis(100));
        assert_eq!(retry_after(1), Duration::from_millis(200));
        assert_eq!(retry_after(20), Duration::from_secs(5));
    }

    #[test]
    fn faults_are_met_in_order_and_counted() {
        let s = GovstackSandbox::new(SandboxOptions::default());
        s.inject(Operation::Create, Fault::Unavailable, 2);
        s.inject(Operation::Create, Fault::DuplicateCallback, 1);
        assert_eq!(s.take_fault(Operation::Redeem), None);
        assert_eq!(s.take_fault(Operation::Create), Some(Fault::Unavailable));
        assert_eq!(s.take_fault(Operation::Create), Some(Fault::Unavailable));
        assert_eq!(
            s.take_fault(Operation::Create),
            Some(Fault::DuplicateCallback)
        );
        assert_eq!(s.take_fault(Operation::Create), None);
        assert_eq!(s.stats().faults, 3);
    }
}
