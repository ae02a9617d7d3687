//! The Electrum SUV simulator: serves the single-use voucher API under `/suv/v1` as
//! `electrum-suv-behaviour.md` describes it, every row of its state table included, except
//! where Electrum's reference test server answers otherwise: there the sandbox answers as the
//! server does (see "Where the reference server decides", below). The final state table is
//! in the sandbox manual, `docs/providers/electrum.md`.
//!
//! Messages are the shapes of `electrum-suv-examples/` (camelCase JSON); every path is also
//! served with a trailing slash (`/suv/v1/vouchers/`):
//! - `POST /vouchers` provisions a voucher (201, valid for a year) with the code the request
//!   asks for in `voucher.code` (interface 1.2.0), or a fresh 12 to 16 digit one;
//!   `POST /vouchers/confirmations` (TenderAdvice) makes it redeemable;
//!   `POST /vouchers/reversals` (BasicReversal) withdraws an unconfirmed one;
//! - `POST /redemptions` redeems a voucher found by `voucher.code`;
//!   `/redemptions/confirmations` and `/redemptions/reversals` settle the redemption. A
//!   reversed redemption puts the voucher back into its redeemable state;
//! - `POST /refunds` refunds a confirmed redemption; a confirmed refund makes the voucher
//!   redeemable again, a reversed refund leaves the redemption confirmed;
//! - `GET /redemptions/{requestId}` (lookupRedemption) replays the original answer of a
//!   redemption: 200 and the RedemptionResponse if it was approved, the original ErrorDetail
//!   with its original status if it was refused, 404 if it never arrived, 403 if another
//!   client sent it;
//! - `GET /vouchers?voucherCode=..|provisionRequestId=..` (lookupVoucher) answers a
//!   [`VoucherLookupResponse`](#voucherlookupresponse);
//! - `POST /suv/v1/testServerAdmin/reset` forgets every voucher, fault and counter.
//!
//! Outside the API, for tests that drive an out-of-process sandbox:
//! - `POST /sandbox/faults` with `{"operation": "redeem_reversal", "fault":
//!   "error_before_effect", "status": 503, "times": 5}` or `{"operation": "redeem", "fault":
//!   "timeout_after_effect", "times": 1}` does what [`ElectrumSandbox::inject`] does (`times`
//!   defaults to 1; `status` must be 5xx and is only for `error_before_effect`); 204, or 400
//!   with `{"error": ...}`;
//! - `GET /sandbox/stats` answers [`Stats`].
//!
//! # Checks, in this order
//! 1. The body is JSON with exactly the fields of its message type: every missing required
//!    field, malformed UUID (`id`, `requestId`: 8-4-4-4-12 hex digits; the version nibble is
//!    not checked because the provider's own examples carry non-RFC 4122 ones), bad RFC 3339
//!    `time` or `voucher.expiryDate`, wrongly typed value and unexpected field is listed in
//!    one 400 `FORMAT_ERROR` whose `detailMessage.formatErrors` holds `{field, msg, value}`.
//!    Response-only fields (`settlementEntity`, `slipData`) are unexpected in requests;
//!    `receiver` and `thirdPartyIdentifiers` are optional, `receiver` needs `id` and `name`
//!    like `client` (both are institutions).
//! 2. HTTP Basic authentication. The behaviour text ties only the username to `client.id`,
//!    so the password is not checked. A missing or malformed `Authorization` header, or a
//!    username other than `client.id`, is a 400 `AUTHENTICATION_ERROR`. Advices carry no
//!    client: their username must be the `client.id` of the request they refer to, checked
//!    when that request is known (an unknown one is the table's 404, below). lookupRedemption
//!    answers 403 to a username other than the original's `client.id`; lookupVoucher only
//!    needs a well-formed header (vouchers are redeemed by other clients than the one that
//!    bought them).
//! 3. Injected faults, consumed in the order they were injected. They come after
//!    validation and authentication, so a FORMAT_ERROR stays a FORMAT_ERROR, and before the
//!    lookup of the original request, so an advice whose original is unknown still gets its
//!    fault: a provider that is unavailable cannot tell what it knows.
//! 4. The state table, then the effect.
//!
//! # Where the reference server decides
//! Electrum's reference test server disagrees with `electrum-suv-behaviour.md` (or says more)
//! on these points, and the sandbox follows the server:
//! - Every path is served with a trailing slash too.
//! - A tender's `currency` may be a JSON number (710) as well as a string; it is taken as
//!   the 3-digit code ("710", and "036" for 36), which is what the confirmation echoes.
//! - An ErrorDetail's `id` is the id of the message answered: the request's `id`, or an
//!   advice's own `id`. `originalId` is the request an advice names (its `requestId`), and is
//!   absent when a request itself is refused.
//! - A missing field's `msg` names its full path ("originator.merchant.merchantName.city may
//!   not be null"); a malformed UUID's is "UUID must conform to the format 8-4-4-4-12
//!   hexadecimal values".
//! - A provision may carry `voucher: {code}` and is then provisioned with that code.
//! - A reversal of a request the sandbox does not know (never received, refused, or lost to
//!   a fault) is 404 `UNABLE_TO_LOCATE_RECORD`, but it is remembered: the request, arriving
//!   late, is refused as `VOUCHER_ALREADY_REVERSED`, `REDEMPTION_ALREADY_REVERSED` or
//!   `REFUND_ALREADY_REVERSED` (with `detailMessage.reversalId`), and applies nothing. A
//!   reversal refused with a 400 is not remembered.
//! - A provision sent again with the id of one already answered, reversed or not, is 400
//!   `DUPLICATE_RECORD` carrying the voucher in `detailMessage.voucher`.
//! - Redemptions and refunds are keyed on the request id and the voucher together: the same
//!   id for another voucher is a new request, the same id for the same voucher is 400
//!   `DUPLICATE_RECORD`. An advice names only the id: it is about the latest approved
//!   request with that id; lookupRedemption replays the latest received.
//! - Redeeming an unknown voucher code is 400 `VOUCHER_NOT_REDEEMABLE`; confirming a reversed
//!   redemption is 400 `VOUCHER_NOT_REDEEMED`.
//!
//! # Where the texts are silent
//! - Refunding an unknown voucher code is 400 `VOUCHER_NOT_REDEEMED`: nothing redeemed it.
//! - A provision asking for a code another voucher has (a reversed one's included: a code
//!   names one voucher for good) is 400 `DUPLICATE_RECORD`, without `detailMessage.voucher`.
//!   Not FORMAT_ERROR: the request is well formed, and an adapter reads FORMAT_ERROR as its
//!   own bug. Provisions are keyed on the id alone, so a provision sent again gets the same
//!   answer whatever code it asks. In a provision, `voucher` holds only `code` (non-empty):
//!   expiry and instructions are the provider's to set. A duplicate provision from another
//!   client than its original's gets no `detailMessage.voucher` either.
//! - Redeeming a voucher whose provision was reversed is 400 `VOUCHER_NOT_REDEEMABLE`, like
//!   an unconfirmed one: neither was ever confirmed. Refunding a voucher that no redemption
//!   holds (never redeemed, unconfirmed, reversed) is 400 `VOUCHER_NOT_REDEEMED`.
//! - A redemption or refund is remembered with its answer, refused or approved, so the same
//!   id for the same voucher again is 400 `DUPLICATE_RECORD` (`REDEMPTION_ALREADY_REVERSED` /
//!   `REFUND_ALREADY_REVERSED` once reversed) and lookupRedemption can replay a refusal.
//!   Advices about a refused one answer 404 `UNABLE_TO_LOCATE_RECORD`: nothing was redeemed.
//!   A reversal of an id refuses every later request with that id, whatever its voucher.
//! - Confirming a provision twice, and reversing anything twice, is 202 again with no second
//!   effect ("may be called repeatedly ... without negative effect").
//! - A redemption confirmed twice is 400 `VOUCHER_NOT_REDEEMED`, literally as the table says.
//! - Refund confirmations mirror the redemption rows: refunded -> 202, not refunded -> 404,
//!   confirmed twice -> 400 `VOUCHER_NOT_REFUNDED` (the mirror of VOUCHER_NOT_REDEEMED, and
//!   what Electrum's reference test server answers), reversed -> 400
//!   `REFUND_ALREADY_REVERSED`.
//! - While a refund awaits confirmation the voucher stays redeemed: a redemption is 400
//!   `VOUCHER_ALREADY_REDEEMED` until the refund is confirmed.
//! - An ErrorDetail's `id` is always a UUID: a message without a well-formed id of its own
//!   (not JSON, `id` missing or malformed) and the GET lookups are answered under a fresh
//!   one. lookupRedemption's errors carry the looked-up id as `originalId`, lookupVoucher's
//!   the `provisionRequestId` if one was given. 403 and 404 answers carry an ErrorDetail too,
//!   although the operations text names none.
//! - A ProvisionResponse adds `settlementEntity` 33333333 and one provider
//!   `thirdPartyIdentifiers` entry each for 33333333 and the receiver (44444444 by default);
//!   redemption and refund responses echo the request's `voucher` as the examples do.
//! - reversalReason is one of Electrum's `BasicReversal.ReversalReason` values: `TIMEOUT` (no
//!   answer in time), `CANCELLED` (the customer walked away) and `RESPONSE_NOT_FINAL` (a 5xx
//!   or other non-final answer).
//!
//! # VoucherLookupResponse
//! ```json
//! {"id": "<provision request id>", "time": "<provision request time>",
//!  "voucher": {"code": "...", "expiryDate": "...", "redeemInstructions": ["..."]},
//!  "state": "CONFIRMED", "redeemable": true,
//!  "redemptionRequestId": "<the redemption holding the voucher, if any>",
//!  "refundRequestId": "<the refund awaiting confirmation, if any>"}
//! ```
//! `state` is one of `PROVISIONED` (awaiting confirmation), `REVERSED` (provision reversed),
//! `CONFIRMED` (redeemable), `REDEEMED` (a redemption awaits confirmation or reversal),
//! `REDEMPTION_CONFIRMED`, `REFUND_PENDING` (a refund awaits confirmation or reversal),
//! `REFUNDED` (refund confirmed, redeemable again). Unknown voucher: 404
//! `UNABLE_TO_LOCATE_RECORD`; neither parameter: 400 `FORMAT_ERROR`.
//!
//! # Faults and HTTP 102
//! [`Fault::ErrorBeforeEffect`] answers its 5xx (`UPSTREAM_UNAVAILABLE` for 502, 503 and
//! 504, `GENERAL_ERROR` otherwise) and records nothing: a redemption refused that way is not
//! known afterwards (its lookup is 404, the same id may be sent again). Its reversal is 404,
//! and remembered like any early reversal: from then on the same id is refused.
//! [`Fault::TimeoutAfterEffect`] applies the effect, then holds the answer for
//! [`SandboxOptions::slow_answer`].
//!
//! lookupRedemption should answer 102 Processing while such a redemption's answer is held.
//! hyper 1 cannot send that: a handler's 1xx status is replaced by a 500 (`proto/h1/role.rs`,
//! "response with 1xx status code not supported"), and a hyper client (reqwest) treats a 1xx
//! as interim, skips it and keeps waiting for the final answer. So a client that received a
//! real 102 would see nothing until the final answer or its own timeout. The sandbox gives it
//! exactly that: the lookup is held open until the redemption's hold ends, then answers what
//! the redemption answered. The hold is a deadline stored with the redemption, not the
//! redemption handler's own future, because hyper drops that future when the client hangs up.
//!
//! # Where each part lives
//! - `schema`: step 1, the message shapes and the FORMAT_ERROR they produce;
//! - `auth`: step 2, HTTP Basic and the `client.id` a username must match;
//! - `faults`: step 3, [`Fault`], the queue of injected faults and `POST /sandbox/faults`;
//! - `table`: step 4, the behaviour rows of provisions, redemptions and refunds;
//! - `advices`: step 4 for confirmations and reversals;
//! - `ledger`: what the table reads and writes: requests, reversals, vouchers and their
//!   states;
//! - `answer`: the bodies every step answers with (ErrorDetail and whom it answers, the
//!   approved echo);
//! - `routes` and `lookups`: the axum handlers, which run the steps in order;
//! - `operation` and `stats`: [`Operation`] and the [`Stats`] counted per operation.

mod advices;
mod answer;
mod auth;
mod faults;
mod ledger;
mod lookups;
mod operation;
mod routes;
mod schema;
mod stats;
mod table;

use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use axum::Router;
use uuid::Uuid;

pub use faults::Fault;
pub use operation::Operation;
pub use stats::Stats;

use ledger::Ledger;
use stats::bump;

/// Timings of the faults.
#[derive(Debug, Clone, Copy)]
pub struct SandboxOptions {
    /// How long a [`Fault::TimeoutAfterEffect`] holds its answer after applying the effect.
    pub slow_answer: Duration,
}

impl Default for SandboxOptions {
    fn default() -> Self {
        SandboxOptions {
            slow_answer: Duration::from_secs(60),
        }
    }
}

/// One approved provision, redemption or refund, as `GET /sandbox/effects` lists it.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct EffectRecord {
    /// `provision`, `redeem` or `refund`.
    pub family: String,
    pub request_id: Uuid,
    pub reversed: bool,
}

struct Inner {
    options: SandboxOptions,
    ledger: Mutex<Ledger>,
}

/// A running or runnable Electrum SUV simulator. Cheap to clone; clones share state.
#[derive(Clone)]
pub struct ElectrumSandbox {
    inner: Arc<Inner>,
}

impl ElectrumSandbox {
    /// A simulator with the given fault timings and no state.
    pub fn new(options: SandboxOptions) -> ElectrumSandbox {
        ElectrumSandbox {
            inner: Arc::new(Inner {
                options,
                ledger: Mutex::new(Ledger::default()),
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

    /// The next `times` calls of `operation` get `fault`, after any faults injected before.
    pub fn inject(&self, operation: Operation, fault: Fault, times: u32) {
        if times > 0 {
            self.ledger().faults.push(operation, fault, times);
        }
    }

    /// Drops the injected faults not met yet: the provider is "fixed" (a test replays what
    /// parked while it was down).
    pub fn clear_faults(&self) {
        self.ledger().faults = Default::default();
    }

    /// The counters so far.
    pub fn stats(&self) -> Stats {
        self.ledger().stats.clone()
    }

    /// From now on, `per_mille` calls in a thousand that have no injected fault meet a
    /// random one: a 503 before the effect or a timeout after it (chaos runs).
    pub fn set_random_faults(&self, per_mille: u16) {
        self.ledger().random_faults = per_mille.min(1000);
    }

    /// Every approved provision, redemption and refund, with whether it was reversed: the
    /// ledger `voucher-relay verify --sandbox` compares (`GET /sandbox/effects`).
    pub fn effects(&self) -> Vec<EffectRecord> {
        self.ledger().effects()
    }

    /// Forgets every voucher, transaction, pending fault and counter, like
    /// `POST /suv/v1/testServerAdmin/reset`.
    pub fn reset(&self) {
        *self.ledger() = Ledger::default();
    }

    /// How long a [`Fault::TimeoutAfterEffect`] holds its answer.
    fn slow_answer(&self) -> Duration {
        self.inner.options.slow_answer
    }

    fn ledger(&self) -> MutexGuard<'_, Ledger> {
        // Every update under the lock is a handful of inserts that cannot panic halfway, so a
        // poisoned lock still holds a consistent ledger.
        self.inner
            .ledger
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    fn count_call(&self, operation: Operation) {
        bump(&mut self.ledger().stats.calls, operation);
    }
}
