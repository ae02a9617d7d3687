//! The Electrum SUV simulator: serves the single-use voucher API under `/suv/v1` as
//! `electrum-suv-behaviour.md` describes it, every row of its state table included.
//!
//! Messages are the shapes of `electrum-suv-examples/` (camelCase JSON):
//! - `POST /vouchers` provisions a voucher (201, a fresh 12 to 16 digit code valid for a
//!   year); `POST /vouchers/confirmations` (TenderAdvice) makes it redeemable;
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
//! # Where the texts are silent
//! - An unknown `voucher.code` on a redemption or refund is 400 `UNKNOWN_VOUCHER` (Electrum's
//!   reference test server answers VOUCHER_NOT_REDEEMABLE there; UNKNOWN_VOUCHER tells an
//!   adapter what happened).
//! - Redeeming a voucher whose provision was reversed is 400 `VOUCHER_NOT_REDEEMABLE`, like
//!   an unconfirmed one: neither was ever confirmed. Refunding a voucher that no redemption
//!   holds (never redeemed, unconfirmed, reversed) is 400 `VOUCHER_NOT_REDEEMED`.
//! - A redemption or refund id is remembered with its answer, refused or approved, so the
//!   same id again is 400 `DUPLICATE_RECORD` (`REDEMPTION_ALREADY_REVERSED` /
//!   `REFUND_ALREADY_REVERSED` once reversed) and lookupRedemption can replay a refusal.
//!   Advices about a refused one answer 404 `UNABLE_TO_LOCATE_RECORD`: nothing was redeemed.
//! - Confirming a provision twice, and reversing anything twice, is 202 again with no second
//!   effect ("may be called repeatedly ... without negative effect").
//! - A redemption confirmed twice is 400 `VOUCHER_NOT_REDEEMED`, literally as the table says;
//!   confirming a reversed redemption is 400 `REDEMPTION_ALREADY_REVERSED`.
//! - Refund confirmations mirror the redemption rows: refunded -> 202, not refunded -> 404,
//!   confirmed twice -> 400 `VOUCHER_NOT_REFUNDED` (the mirror of VOUCHER_NOT_REDEEMED, and
//!   what Electrum's reference test server answers), reversed -> 400
//!   `REFUND_ALREADY_REVERSED`.
//! - While a refund awaits confirmation the voucher stays redeemed: a redemption is 400
//!   `VOUCHER_ALREADY_REDEEMED` until the refund is confirmed.
//! - `originalId` of an ErrorDetail is the request's `id`, or for an advice its `requestId`
//!   (in the provider's ErrorDetail example `originalId` is the voucher, not the advice).
//!   403 and 404 answers carry an ErrorDetail too, although the operations text names none.
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
//! known afterwards (its lookup is 404, its reversal 404, the same id may be sent again).
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

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use axum::Router;
use axum::body::Bytes;
use axum::extract::rejection::{PathRejection, QueryRejection};
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use base64::Engine;
use rand::Rng;
use serde_json::{Map, Value, json};
use uuid::Uuid;

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

/// One operation of the SUV API; faults and counters are per operation.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, serde::Serialize, serde::Deserialize,
)]
#[serde(rename_all = "snake_case")]
pub enum Operation {
    Provision,
    ProvisionConfirmation,
    ProvisionReversal,
    Redeem,
    RedeemConfirmation,
    RedeemReversal,
    Refund,
    RefundConfirmation,
    RefundReversal,
    LookupVoucher,
    LookupRedemption,
}

impl Operation {
    /// Every operation, in declaration order.
    pub const ALL: [Operation; 11] = [
        Operation::Provision,
        Operation::ProvisionConfirmation,
        Operation::ProvisionReversal,
        Operation::Redeem,
        Operation::RedeemConfirmation,
        Operation::RedeemReversal,
        Operation::Refund,
        Operation::RefundConfirmation,
        Operation::RefundReversal,
        Operation::LookupVoucher,
        Operation::LookupRedemption,
    ];
}

/// What an injected fault does to a call.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fault {
    /// Apply the effect, then hold the answer for [`SandboxOptions::slow_answer`] before
    /// sending it (a client with a shorter timeout sees a timeout).
    TimeoutAfterEffect,
    /// Answer this 5xx status (ErrorDetail body, errorType GENERAL_ERROR or
    /// UPSTREAM_UNAVAILABLE) without applying anything. A value that is no HTTP status is
    /// sent as 500.
    ErrorBeforeEffect(u16),
}

/// Counters per operation. Every operation is present, with 0 when nothing happened; the
/// `*_of` methods read one. Serialized as
/// `{"calls": {"redeem": 2, ...}, "effects": {...}, "faults": {...}}`.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Stats {
    /// Requests received on the operation's route, whatever their answer (malformed,
    /// refused and faulted ones included).
    pub calls: BTreeMap<Operation, u32>,
    /// State changes applied: approved provisions, redemptions and refunds, and the first
    /// confirmation or reversal of each. A repeated, idempotent 202 changes nothing and is not
    /// counted; lookups never count.
    pub effects: BTreeMap<Operation, u32>,
    /// Calls answered by an injected fault (both kinds).
    pub faults: BTreeMap<Operation, u32>,
}

impl Stats {
    fn zero() -> Stats {
        let zeros: BTreeMap<Operation, u32> = Operation::ALL.iter().map(|op| (*op, 0)).collect();
        Stats {
            calls: zeros.clone(),
            effects: zeros.clone(),
            faults: zeros,
        }
    }

    /// Requests received for `operation`.
    pub fn calls_of(&self, operation: Operation) -> u32 {
        self.calls.get(&operation).copied().unwrap_or(0)
    }

    /// Effects applied by `operation`.
    pub fn effects_of(&self, operation: Operation) -> u32 {
        self.effects.get(&operation).copied().unwrap_or(0)
    }

    /// Calls of `operation` answered by an injected fault.
    pub fn faults_of(&self, operation: Operation) -> u32 {
        self.faults.get(&operation).copied().unwrap_or(0)
    }
}

fn bump(counters: &mut BTreeMap<Operation, u32>, operation: Operation) {
    let count = counters.entry(operation).or_insert(0);
    *count = count.saturating_add(1);
}

/// The three kinds of transaction, each with its request, confirmation and reversal.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Family {
    Provision,
    Redemption,
    Refund,
}

/// Which message of a family.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Step {
    Request,
    Confirm,
    Reverse,
}

fn operation(family: Family, step: Step) -> Operation {
    match (family, step) {
        (Family::Provision, Step::Request) => Operation::Provision,
        (Family::Provision, Step::Confirm) => Operation::ProvisionConfirmation,
        (Family::Provision, Step::Reverse) => Operation::ProvisionReversal,
        (Family::Redemption, Step::Request) => Operation::Redeem,
        (Family::Redemption, Step::Confirm) => Operation::RedeemConfirmation,
        (Family::Redemption, Step::Reverse) => Operation::RedeemReversal,
        (Family::Refund, Step::Request) => Operation::Refund,
        (Family::Refund, Step::Confirm) => Operation::RefundConfirmation,
        (Family::Refund, Step::Reverse) => Operation::RefundReversal,
    }
}

/// Where a transaction stands after its advices.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Advised {
    Open,
    Confirmed,
    Reversed,
}

/// The errorTypes an advice can meet, per family.
struct AdviceRules {
    /// Confirming a confirmed transaction: `None` is an idempotent 202.
    confirmed_twice: Option<&'static str>,
    /// Confirming a reversed transaction.
    already_reversed: &'static str,
    /// Reversing a confirmed transaction.
    already_confirmed: &'static str,
}

fn advice_rules(family: Family) -> AdviceRules {
    match family {
        Family::Provision => AdviceRules {
            confirmed_twice: None,
            already_reversed: "VOUCHER_ALREADY_REVERSED",
            already_confirmed: "VOUCHER_ALREADY_CONFIRMED",
        },
        Family::Redemption => AdviceRules {
            confirmed_twice: Some("VOUCHER_NOT_REDEEMED"),
            already_reversed: "REDEMPTION_ALREADY_REVERSED",
            already_confirmed: "REDEMPTION_ALREADY_CONFIRMED",
        },
        Family::Refund => AdviceRules {
            confirmed_twice: Some("VOUCHER_NOT_REFUNDED"),
            already_reversed: "REFUND_ALREADY_REVERSED",
            already_confirmed: "REFUND_ALREADY_CONFIRMED",
        },
    }
}

/// One provision, redemption or refund the sandbox has answered.
struct Tx {
    /// `client.id` of the request; advices and lookups must come from the same username.
    client: String,
    /// The voucher it is about.
    code: String,
    /// Refused ones are kept for duplicate detection and lookupRedemption only.
    approved: bool,
    state: Advised,
    /// The original answer, replayed by lookupRedemption.
    status: StatusCode,
    answer: Value,
    /// Until when a [`Fault::TimeoutAfterEffect`] holds the original answer.
    held_until: Option<Instant>,
}

struct Voucher {
    /// Its provision request's id.
    provision: Uuid,
    /// The provision request's `time`.
    time: Value,
    expiry: String,
    /// The approved redemption that holds the voucher (open or confirmed).
    holder: Option<Uuid>,
    /// The approved refund awaiting confirmation or reversal.
    pending_refund: Option<Uuid>,
    /// A refund was confirmed and nothing redeemed the voucher since.
    refunded: bool,
}

struct Ledger {
    stats: Stats,
    faults: HashMap<Operation, VecDeque<(Fault, u32)>>,
    provisions: HashMap<Uuid, Tx>,
    redemptions: HashMap<Uuid, Tx>,
    refunds: HashMap<Uuid, Tx>,
    /// By voucher code.
    vouchers: HashMap<String, Voucher>,
}

impl Default for Ledger {
    fn default() -> Self {
        Ledger {
            stats: Stats::zero(),
            faults: HashMap::new(),
            provisions: HashMap::new(),
            redemptions: HashMap::new(),
            refunds: HashMap::new(),
            vouchers: HashMap::new(),
        }
    }
}

impl Ledger {
    fn txs(&mut self, family: Family) -> &mut HashMap<Uuid, Tx> {
        match family {
            Family::Provision => &mut self.provisions,
            Family::Redemption => &mut self.redemptions,
            Family::Refund => &mut self.refunds,
        }
    }

    /// Consumes the next fault injected for `operation`, if any.
    fn take_fault(&mut self, operation: Operation) -> Option<Fault> {
        let queue = self.faults.get_mut(&operation)?;
        let (fault, left) = queue.front_mut()?;
        let fault = *fault;
        *left -= 1;
        if *left == 0 {
            queue.pop_front();
        }
        bump(&mut self.stats.faults, operation);
        Some(fault)
    }

    /// The provision state of a voucher; a voucher without its provision cannot exist, but
    /// if it did it would be as good as reversed.
    fn provision_state(&self, voucher: &Voucher) -> Advised {
        self.provisions
            .get(&voucher.provision)
            .map_or(Advised::Reversed, |tx| tx.state)
    }

    /// A voucher code no other voucher has.
    fn fresh_code(&self) -> String {
        let mut rng = rand::rng();
        loop {
            let len = rng.random_range(12..=16);
            let code: String = (0..len)
                .map(|i| {
                    let low = if i == 0 { 1 } else { 0 };
                    char::from(b'0' + rng.random_range(low..10u8))
                })
                .collect();
            if !self.vouchers.contains_key(&code) {
                return code;
            }
        }
    }
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
        use Family::{Provision, Redemption, Refund};
        use Step::{Confirm, Request, Reverse};
        let route = |family: Family, step: Step| {
            post(
                move |State(sandbox): State<ElectrumSandbox>, headers: HeaderMap, body: Bytes| {
                    posted(sandbox, family, step, headers, body)
                },
            )
        };
        Router::new()
            .route(
                "/suv/v1/vouchers",
                route(Provision, Request).get(lookup_voucher),
            )
            .route("/suv/v1/vouchers/confirmations", route(Provision, Confirm))
            .route("/suv/v1/vouchers/reversals", route(Provision, Reverse))
            .route("/suv/v1/redemptions", route(Redemption, Request))
            .route(
                "/suv/v1/redemptions/confirmations",
                route(Redemption, Confirm),
            )
            .route("/suv/v1/redemptions/reversals", route(Redemption, Reverse))
            .route("/suv/v1/redemptions/{request_id}", get(lookup_redemption))
            .route("/suv/v1/refunds", route(Refund, Request))
            .route("/suv/v1/refunds/confirmations", route(Refund, Confirm))
            .route("/suv/v1/refunds/reversals", route(Refund, Reverse))
            .route("/suv/v1/testServerAdmin/reset", post(reset))
            .route("/sandbox/faults", post(inject_over_http))
            .route("/sandbox/stats", get(stats))
            .with_state(self.clone())
    }

    /// Serves on `listener` until the task is dropped.
    pub async fn serve(self, listener: tokio::net::TcpListener) -> std::io::Result<()> {
        axum::serve(listener, self.router()).await
    }

    /// The next `times` calls of `operation` get `fault`, after any faults injected before.
    pub fn inject(&self, operation: Operation, fault: Fault, times: u32) {
        if times > 0 {
            self.ledger()
                .faults
                .entry(operation)
                .or_default()
                .push_back((fault, times));
        }
    }

    /// The counters so far.
    pub fn stats(&self) -> Stats {
        self.ledger().stats.clone()
    }

    /// Forgets every voucher, transaction, pending fault and counter, like
    /// `POST /suv/v1/testServerAdmin/reset`.
    pub fn reset(&self) {
        *self.ledger() = Ledger::default();
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

/// A decided answer: status, body, and whether it changed any state.
struct Answer {
    status: StatusCode,
    body: Value,
    effect: bool,
}

impl Answer {
    fn new(status: StatusCode, body: Value, effect: bool) -> Answer {
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

/// An ErrorDetail with a fresh id.
fn error_detail(
    original_id: Option<&str>,
    error_type: &str,
    message: &str,
    detail: Value,
) -> Value {
    json!({
        "id": Uuid::now_v7().to_string(),
        "originalId": original_id,
        "errorType": error_type,
        "errorMessage": message,
        "detailMessage": detail,
    })
}

/// A refusal whose detailMessage is a `freeString`.
fn refuse(status: StatusCode, original_id: &str, error_type: &str, why: &str) -> Answer {
    let body = error_detail(
        Some(original_id),
        error_type,
        why,
        json!({"freeString": why}),
    );
    Answer::new(status, body, false)
}

fn format_error(original_id: Option<&str>, errors: Vec<Value>) -> Response {
    let body = error_detail(
        original_id,
        "FORMAT_ERROR",
        "Bad formatting",
        json!({"formatErrors": errors}),
    );
    (StatusCode::BAD_REQUEST, axum::Json(body)).into_response()
}

fn format_problem(field: &str, msg: &str, value: &Value) -> Value {
    json!({"field": field, "msg": msg, "value": value})
}

fn authentication_error(original_id: &str, why: &str) -> Response {
    refuse(
        StatusCode::BAD_REQUEST,
        original_id,
        "AUTHENTICATION_ERROR",
        why,
    )
    .into_response()
}

/// The answer of an [`Fault::ErrorBeforeEffect`].
fn fault_error(status: u16, original_id: Option<&str>) -> Response {
    let status = StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    let (error_type, why) = match status.as_u16() {
        502..=504 => (
            "UPSTREAM_UNAVAILABLE",
            "The upstream voucher vendor is unavailable.",
        ),
        _ => (
            "GENERAL_ERROR",
            "An error occurred while processing the request.",
        ),
    };
    let body = error_detail(original_id, error_type, why, json!({"freeString": why}));
    (status, axum::Json(body)).into_response()
}

/// The username of a well-formed `Authorization: Basic` header.
fn basic_user(headers: &HeaderMap) -> Option<String> {
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

/// A UUID in its 8-4-4-4-12 form; other spellings `Uuid` accepts (braced, simple, URN) are
/// malformed here.
fn canonical_uuid(text: &str) -> Option<Uuid> {
    if text.len() == 36 {
        Uuid::try_parse(text).ok()
    } else {
        None
    }
}

// ---------------------------------------------------------------------------------------
// Message shapes

#[derive(Clone, Copy)]
enum Ty {
    Str,
    Int,
    Uuid,
    Time,
    OneOf(&'static [&'static str]),
    Obj(&'static [Field]),
    List(&'static Ty),
}

#[derive(Clone, Copy)]
struct Field {
    name: &'static str,
    required: bool,
    ty: Ty,
}

const fn req(name: &'static str, ty: Ty) -> Field {
    Field {
        name,
        required: true,
        ty,
    }
}

const fn opt(name: &'static str, ty: Ty) -> Field {
    Field {
        name,
        required: false,
        ty,
    }
}

const INSTITUTION: Ty = Ty::Obj(&[req("id", Ty::Str), req("name", Ty::Str)]);
const MERCHANT_NAME: Ty = Ty::Obj(&[
    req("name", Ty::Str),
    req("city", Ty::Str),
    req("region", Ty::Str),
    req("country", Ty::Str),
]);
const MERCHANT: Ty = Ty::Obj(&[
    req("merchantType", Ty::Str),
    req("merchantId", Ty::Str),
    req("merchantName", MERCHANT_NAME),
]);
const ORIGINATOR: Ty = Ty::Obj(&[
    req("merchant", MERCHANT),
    req("terminalId", Ty::Str),
    req("institution", INSTITUTION),
]);
const THIRD_PARTY_IDS: Ty = Ty::List(&Ty::Obj(&[
    req("institutionId", Ty::Str),
    req("transactionIdentifier", Ty::Str),
]));
const VOUCHER: Ty = Ty::Obj(&[
    req("code", Ty::Str),
    opt("expiryDate", Ty::Time),
    opt("redeemInstructions", Ty::List(&Ty::Str)),
]);
const TENDERS: Ty = Ty::List(&Ty::Obj(&[
    opt("accountType", Ty::Str),
    req(
        "amount",
        Ty::Obj(&[req("amount", Ty::Int), req("currency", Ty::Str)]),
    ),
    opt("tenderType", Ty::Str),
]));

const PROVISION_REQUEST: Ty = Ty::Obj(&[
    req("id", Ty::Uuid),
    req("time", Ty::Time),
    req("originator", ORIGINATOR),
    req("client", INSTITUTION),
    opt("receiver", INSTITUTION),
    opt("thirdPartyIdentifiers", THIRD_PARTY_IDS),
]);
/// RedemptionRequest and RefundRequest have the same shape.
const VOUCHER_REQUEST: Ty = Ty::Obj(&[
    req("id", Ty::Uuid),
    req("time", Ty::Time),
    req("originator", ORIGINATOR),
    req("client", INSTITUTION),
    opt("receiver", INSTITUTION),
    opt("thirdPartyIdentifiers", THIRD_PARTY_IDS),
    req("voucher", VOUCHER),
]);
const BASIC_ADVICE: Ty = Ty::Obj(&[
    req("id", Ty::Uuid),
    req("requestId", Ty::Uuid),
    req("time", Ty::Time),
    opt("thirdPartyIdentifiers", THIRD_PARTY_IDS),
]);
const TENDER_ADVICE: Ty = Ty::Obj(&[
    req("id", Ty::Uuid),
    req("requestId", Ty::Uuid),
    req("time", Ty::Time),
    opt("thirdPartyIdentifiers", THIRD_PARTY_IDS),
    opt("tenders", TENDERS),
]);
const BASIC_REVERSAL: Ty = Ty::Obj(&[
    req("id", Ty::Uuid),
    req("requestId", Ty::Uuid),
    req("time", Ty::Time),
    opt("thirdPartyIdentifiers", THIRD_PARTY_IDS),
    req(
        "reversalReason",
        Ty::OneOf(&["TIMEOUT", "CANCELLED", "RESPONSE_NOT_FINAL"]),
    ),
]);

fn shape(family: Family, step: Step) -> Ty {
    match (family, step) {
        (Family::Provision, Step::Request) => PROVISION_REQUEST,
        (_, Step::Request) => VOUCHER_REQUEST,
        (Family::Provision, Step::Confirm) => TENDER_ADVICE,
        (_, Step::Confirm) => BASIC_ADVICE,
        (_, Step::Reverse) => BASIC_REVERSAL,
    }
}

fn child(path: &str, name: &str) -> String {
    if path.is_empty() {
        name.to_string()
    } else {
        format!("{path}.{name}")
    }
}

/// Appends every way `value` differs from `ty` to `problems`.
fn check(value: &Value, ty: Ty, path: &str, problems: &mut Vec<Value>) {
    let field = if path.is_empty() { "body" } else { path };
    let mut problem = |msg: &str| problems.push(format_problem(field, msg, value));
    match ty {
        Ty::Str if !value.is_string() => problem("must be a string"),
        Ty::Int if !(value.is_i64() || value.is_u64()) => problem("must be an integer"),
        Ty::Uuid if value.as_str().and_then(canonical_uuid).is_none() => {
            problem("must be a UUID (8-4-4-4-12 hexadecimal digits)")
        }
        Ty::Time
            if value
                .as_str()
                .is_none_or(|t| chrono::DateTime::parse_from_rfc3339(t).is_err()) =>
        {
            problem("must be an RFC 3339 date-time")
        }
        Ty::OneOf(allowed) if !value.as_str().is_some_and(|v| allowed.contains(&v)) => {
            problem(&format!("must be one of {}", allowed.join(", ")))
        }
        Ty::Obj(fields) => {
            let Some(map) = value.as_object() else {
                return problem("must be an object");
            };
            for f in fields {
                let path = child(path, f.name);
                match map.get(f.name) {
                    None | Some(Value::Null) if f.required => {
                        problems.push(format_problem(&path, "may not be null", &Value::Null));
                    }
                    None | Some(Value::Null) => {}
                    Some(v) => check(v, f.ty, &path, problems),
                }
            }
            for (name, v) in map {
                if !fields.iter().any(|f| f.name == name) {
                    problems.push(format_problem(&child(path, name), "unexpected field", v));
                }
            }
        }
        Ty::List(item) => {
            let Some(items) = value.as_array() else {
                return problem("must be an array");
            };
            for (i, v) in items.iter().enumerate() {
                check(v, *item, &format!("{path}[{i}]"), problems);
            }
        }
        _ => {}
    }
}

// ---------------------------------------------------------------------------------------
// The API

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
    let id_field = if step == Step::Request {
        "id"
    } else {
        "requestId"
    };
    let value: Value = match serde_json::from_slice(&body) {
        Ok(v) => v,
        Err(e) => {
            let problem = format_problem("body", &format!("not valid JSON: {e}"), &Value::Null);
            return format_error(None, vec![problem]);
        }
    };
    let original_id = value.get(id_field).and_then(Value::as_str);
    let mut problems = Vec::new();
    check(&value, shape(family, step), "", &mut problems);
    // Validation guarantees an object with a canonical UUID; the `else` arms are for the
    // compiler, not for any input.
    let (Value::Object(msg), Some(key)) = (&value, original_id.and_then(canonical_uuid)) else {
        return format_error(original_id, problems);
    };
    if !problems.is_empty() {
        return format_error(original_id, problems);
    }
    let original_id = key.to_string();
    let Some(user) = basic_user(&headers) else {
        return authentication_error(
            &original_id,
            "The request has no well-formed HTTP Basic Authorization header.",
        );
    };

    let slow_answer = sandbox.inner.options.slow_answer;
    let (answer, hold) = {
        let mut ledger = sandbox.ledger();
        let owner = match step {
            Step::Request => msg
                .get("client")
                .and_then(|c| c.get("id"))
                .and_then(Value::as_str)
                .map(str::to_string),
            Step::Confirm | Step::Reverse => {
                ledger.txs(family).get(&key).map(|tx| tx.client.clone())
            }
        };
        if let Some(owner) = owner {
            if owner != user {
                let why =
                    format!("The Basic username {user} is not the request's client.id {owner}.");
                return authentication_error(&original_id, &why);
            }
        }
        let hold = match ledger.take_fault(op) {
            Some(Fault::ErrorBeforeEffect(status)) => {
                return fault_error(status, Some(&original_id));
            }
            Some(Fault::TimeoutAfterEffect) => true,
            None => false,
        };
        let held_until = hold.then(|| Instant::now() + slow_answer);
        let answer = match step {
            Step::Request => {
                let tx = TxHeader {
                    id: key,
                    client: user,
                    held_until,
                };
                match family {
                    Family::Provision => provision(&mut ledger, tx, msg),
                    Family::Redemption => redeem(&mut ledger, tx, msg),
                    Family::Refund => refund(&mut ledger, tx, msg),
                }
            }
            Step::Confirm | Step::Reverse => advise(&mut ledger, family, step, key, &value),
        };
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

/// What every new transaction record starts with.
struct TxHeader {
    id: Uuid,
    client: String,
    held_until: Option<Instant>,
}

impl TxHeader {
    fn record(self, ledger: &mut Ledger, family: Family, code: &str, answer: &Answer) {
        let tx = Tx {
            client: self.client,
            code: code.to_string(),
            approved: answer.effect,
            state: Advised::Open,
            status: answer.status,
            answer: answer.body.clone(),
            held_until: self.held_until,
        };
        ledger.txs(family).insert(self.id, tx);
    }
}

const SETTLEMENT_ENTITY: &str = "33333333";
const DEFAULT_RECEIVER: &str = "44444444";

fn redeem_instructions() -> Value {
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
fn approved_echo(msg: &Map<String, Value>) -> Map<String, Value> {
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

fn voucher_code(msg: &Map<String, Value>) -> String {
    msg.get("voucher")
        .and_then(|v| v.get("code"))
        .and_then(Value::as_str)
        .unwrap_or_default()
        .to_string()
}

/// The same request id again: the table's DUPLICATE_RECORD, or `reversed` once reversed.
fn duplicate(tx: &Tx, id: &str, reversed: &str) -> Answer {
    if tx.state == Advised::Reversed {
        refuse(
            StatusCode::BAD_REQUEST,
            id,
            reversed,
            "A request with this id was reversed already.",
        )
    } else {
        refuse(
            StatusCode::BAD_REQUEST,
            id,
            "DUPLICATE_RECORD",
            "A request with this id was received already.",
        )
    }
}

fn provision(ledger: &mut Ledger, tx: TxHeader, msg: &Map<String, Value>) -> Answer {
    let id = tx.id.to_string();
    if let Some(known) = ledger.provisions.get(&tx.id) {
        return duplicate(known, &id, "VOUCHER_ALREADY_REVERSED");
    }
    let code = ledger.fresh_code();
    let expiry = (chrono::Utc::now() + chrono::Duration::days(365))
        .to_rfc3339_opts(chrono::SecondsFormat::Millis, true);
    let mut response = approved_echo(msg);
    response.insert(
        "voucher".into(),
        json!({"code": code, "expiryDate": expiry, "redeemInstructions": redeem_instructions()}),
    );
    ledger.vouchers.insert(
        code.clone(),
        Voucher {
            provision: tx.id,
            time: msg.get("time").cloned().unwrap_or(Value::Null),
            expiry,
            holder: None,
            pending_refund: None,
            refunded: false,
        },
    );
    let answer = Answer::new(StatusCode::CREATED, Value::Object(response), true);
    tx.record(ledger, Family::Provision, &code, &answer);
    answer
}

fn redeem(ledger: &mut Ledger, tx: TxHeader, msg: &Map<String, Value>) -> Answer {
    let id = tx.id.to_string();
    if let Some(known) = ledger.redemptions.get(&tx.id) {
        return duplicate(known, &id, "REDEMPTION_ALREADY_REVERSED");
    }
    let code = voucher_code(msg);
    let refusal = match ledger.vouchers.get(&code) {
        None => Some(("UNKNOWN_VOUCHER", "No voucher has this code.")),
        Some(v) if ledger.provision_state(v) != Advised::Confirmed => Some((
            "VOUCHER_NOT_REDEEMABLE",
            "The voucher's provision is not confirmed; only confirmed vouchers can be redeemed.",
        )),
        Some(v) if v.holder.is_some() => Some((
            "VOUCHER_ALREADY_REDEEMED",
            "A redemption for this voucher has already been received.",
        )),
        Some(_) => None,
    };
    let answer = match refusal {
        Some((error_type, why)) => refuse(StatusCode::BAD_REQUEST, &id, error_type, why),
        None => {
            if let Some(v) = ledger.vouchers.get_mut(&code) {
                v.holder = Some(tx.id);
                v.refunded = false;
            }
            Answer::new(StatusCode::CREATED, Value::Object(approved_echo(msg)), true)
        }
    };
    tx.record(ledger, Family::Redemption, &code, &answer);
    answer
}

fn refund(ledger: &mut Ledger, tx: TxHeader, msg: &Map<String, Value>) -> Answer {
    let id = tx.id.to_string();
    if let Some(known) = ledger.refunds.get(&tx.id) {
        return duplicate(known, &id, "REFUND_ALREADY_REVERSED");
    }
    let code = voucher_code(msg);
    let holder_state = |holder: &Uuid| ledger.redemptions.get(holder).map(|r| r.state);
    let refusal = match ledger.vouchers.get(&code) {
        None => Some(("UNKNOWN_VOUCHER", "No voucher has this code.")),
        Some(v) if v.pending_refund.is_some() => Some((
            "VOUCHER_ALREADY_REFUNDED",
            "A refund for this voucher awaits confirmation.",
        )),
        Some(v) => match v.holder.as_ref().and_then(holder_state) {
            Some(Advised::Confirmed) => None,
            Some(Advised::Open) => Some((
                "REDEMPTION_NOT_CONFIRMED",
                "The voucher's redemption awaits confirmation; only confirmed ones are refunded.",
            )),
            _ => Some((
                "VOUCHER_NOT_REDEEMED",
                "The voucher is not redeemed, so there is nothing to refund.",
            )),
        },
    };
    let answer = match refusal {
        Some((error_type, why)) => refuse(StatusCode::BAD_REQUEST, &id, error_type, why),
        None => {
            if let Some(v) = ledger.vouchers.get_mut(&code) {
                v.pending_refund = Some(tx.id);
            }
            Answer::new(StatusCode::CREATED, Value::Object(approved_echo(msg)), true)
        }
    };
    tx.record(ledger, Family::Refund, &code, &answer);
    answer
}

/// A confirmation or reversal of the `family` transaction `request_id`.
fn advise(
    ledger: &mut Ledger,
    family: Family,
    step: Step,
    request_id: Uuid,
    advice: &Value,
) -> Answer {
    let id = request_id.to_string();
    let rules = advice_rules(family);
    let Some(tx) = ledger
        .txs(family)
        .get_mut(&request_id)
        .filter(|tx| tx.approved)
    else {
        return refuse(
            StatusCode::NOT_FOUND,
            &id,
            "UNABLE_TO_LOCATE_RECORD",
            "No approved request with this requestId was received.",
        );
    };
    let confirm = step == Step::Confirm;
    let refusal = match (tx.state, confirm) {
        (Advised::Open, _) => None,
        (Advised::Confirmed, true) => rules.confirmed_twice,
        (Advised::Confirmed, false) => Some(rules.already_confirmed),
        (Advised::Reversed, true) => Some(rules.already_reversed),
        (Advised::Reversed, false) => None,
    };
    if let Some(error_type) = refusal {
        let why = match (tx.state, confirm) {
            (Advised::Confirmed, true) => "The request was confirmed already.",
            (Advised::Confirmed, false) => "The request was confirmed and cannot be reversed.",
            _ => "The request was reversed and cannot be confirmed.",
        };
        return refuse(StatusCode::BAD_REQUEST, &id, error_type, why);
    }
    if tx.state != Advised::Open {
        // Confirmed again or reversed again: the same answer, no second effect.
        return Answer::new(StatusCode::ACCEPTED, advice.clone(), false);
    }
    tx.state = if confirm {
        Advised::Confirmed
    } else {
        Advised::Reversed
    };
    let code = tx.code.clone();
    if let Some(voucher) = ledger.vouchers.get_mut(&code) {
        match (family, confirm) {
            // The voucher is redeemable again.
            (Family::Redemption, false) => voucher.holder = None,
            // Refunded for good: redeemable again.
            (Family::Refund, true) => {
                voucher.holder = None;
                voucher.pending_refund = None;
                voucher.refunded = true;
            }
            // The redemption stays confirmed.
            (Family::Refund, false) => voucher.pending_refund = None,
            _ => {}
        }
    }
    Answer::new(StatusCode::ACCEPTED, advice.clone(), true)
}

/// `GET /redemptions/{requestId}`.
async fn lookup_redemption(
    State(sandbox): State<ElectrumSandbox>,
    path: Result<Path<String>, PathRejection>,
    headers: HeaderMap,
) -> Response {
    let op = Operation::LookupRedemption;
    sandbox.count_call(op);
    let raw = path.map(|Path(p)| p).unwrap_or_default();
    let Some(key) = canonical_uuid(&raw) else {
        let problem = format_problem(
            "requestId",
            "must be a UUID (8-4-4-4-12 hexadecimal digits)",
            &json!(raw),
        );
        return format_error(Some(&raw), vec![problem]);
    };
    let id = key.to_string();
    let Some(user) = basic_user(&headers) else {
        return authentication_error(
            &id,
            "The request has no well-formed HTTP Basic Authorization header.",
        );
    };
    let (hold, held_until) = {
        let mut ledger = sandbox.ledger();
        let owner = ledger.redemptions.get(&key).map(|tx| tx.client.clone());
        if owner.is_some_and(|owner| owner != user) {
            return refuse(
                StatusCode::FORBIDDEN,
                &id,
                "AUTHENTICATION_ERROR",
                "Another client sent this redemption.",
            )
            .into_response();
        }
        let hold = match ledger.take_fault(op) {
            Some(Fault::ErrorBeforeEffect(status)) => return fault_error(status, Some(&id)),
            Some(Fault::TimeoutAfterEffect) => true,
            None => false,
        };
        let held_until = ledger.redemptions.get(&key).and_then(|tx| tx.held_until);
        (hold, held_until)
    };
    // Still processing: say nothing until the redemption's own answer goes out (see the
    // module doc for why this stands in for 102).
    if let Some(until) = held_until {
        tokio::time::sleep_until(tokio::time::Instant::from_std(until)).await;
    }
    let answer = match sandbox.ledger().redemptions.get(&key) {
        None => refuse(
            StatusCode::NOT_FOUND,
            &id,
            "UNABLE_TO_LOCATE_RECORD",
            "No redemption with this requestId was received.",
        ),
        Some(tx) if tx.approved => Answer::new(StatusCode::OK, tx.answer.clone(), false),
        Some(tx) => Answer::new(tx.status, tx.answer.clone(), false),
    };
    if hold {
        tokio::time::sleep(sandbox.inner.options.slow_answer).await;
    }
    answer.into_response()
}

/// `GET /vouchers?voucherCode=..|provisionRequestId=..`.
async fn lookup_voucher(
    State(sandbox): State<ElectrumSandbox>,
    query: Result<Query<HashMap<String, String>>, QueryRejection>,
    headers: HeaderMap,
) -> Response {
    let op = Operation::LookupVoucher;
    sandbox.count_call(op);
    let Ok(Query(params)) = query else {
        let problem = format_problem("query", "not a valid query string", &Value::Null);
        return format_error(None, vec![problem]);
    };
    let param = |name: &str| params.get(name).filter(|v| !v.is_empty());
    let code = param("voucherCode");
    let provision = param("provisionRequestId");
    let provision_id = match provision.map(|p| canonical_uuid(p)) {
        Some(None) => {
            let problem = format_problem(
                "provisionRequestId",
                "must be a UUID (8-4-4-4-12 hexadecimal digits)",
                &json!(provision),
            );
            return format_error(None, vec![problem]);
        }
        Some(Some(id)) => Some(id),
        None => None,
    };
    if code.is_none() && provision_id.is_none() {
        let problem = format_problem(
            "voucherCode",
            "voucherCode or provisionRequestId is required",
            &Value::Null,
        );
        return format_error(None, vec![problem]);
    }
    let original_id = provision_id.map(|p| p.to_string());
    if basic_user(&headers).is_none() {
        return authentication_error(
            original_id.as_deref().unwrap_or_default(),
            "The request has no well-formed HTTP Basic Authorization header.",
        );
    }
    let (answer, hold) = {
        let mut ledger = sandbox.ledger();
        let hold = match ledger.take_fault(op) {
            Some(Fault::ErrorBeforeEffect(status)) => {
                return fault_error(status, original_id.as_deref());
            }
            Some(Fault::TimeoutAfterEffect) => true,
            None => false,
        };
        let by_provision = |p: &Uuid| ledger.provisions.get(p).map(|tx| tx.code.clone());
        let found = match (code, provision_id.as_ref().map(by_provision)) {
            // Both given: they must name the same voucher.
            (Some(code), Some(other)) => other.filter(|o| o == code),
            (Some(code), None) => Some(code.clone()),
            (None, Some(other)) => other,
            (None, None) => None,
        };
        let answer = match found.and_then(|c| voucher_lookup(&ledger, &c)) {
            Some(body) => Answer::new(StatusCode::OK, body, false),
            None => {
                let body = error_detail(
                    original_id.as_deref(),
                    "UNABLE_TO_LOCATE_RECORD",
                    "No such voucher.",
                    json!({"freeString": "No voucher matches the query."}),
                );
                Answer::new(StatusCode::NOT_FOUND, body, false)
            }
        };
        (answer, hold)
    };
    if hold {
        tokio::time::sleep(sandbox.inner.options.slow_answer).await;
    }
    answer.into_response()
}

/// The VoucherLookupResponse of the voucher `code` (shape in the module doc).
fn voucher_lookup(ledger: &Ledger, code: &str) -> Option<Value> {
    let v = ledger.vouchers.get(code)?;
    let redemption_state = |id: &Uuid| ledger.redemptions.get(id).map(|r| r.state);
    let state = match ledger.provision_state(v) {
        Advised::Open => "PROVISIONED",
        Advised::Reversed => "REVERSED",
        Advised::Confirmed if v.pending_refund.is_some() => "REFUND_PENDING",
        Advised::Confirmed => match v.holder.as_ref().and_then(redemption_state) {
            Some(Advised::Open) => "REDEEMED",
            Some(_) => "REDEMPTION_CONFIRMED",
            None if v.refunded => "REFUNDED",
            None => "CONFIRMED",
        },
    };
    let mut body = json!({
        "id": v.provision.to_string(),
        "time": v.time,
        "voucher": {"code": code, "expiryDate": v.expiry,
                    "redeemInstructions": redeem_instructions()},
        "state": state,
        "redeemable": matches!(state, "CONFIRMED" | "REFUNDED"),
    });
    if let Some(map) = body.as_object_mut() {
        if let Some(holder) = v.holder {
            map.insert("redemptionRequestId".into(), json!(holder.to_string()));
        }
        if let Some(refund) = v.pending_refund {
            map.insert("refundRequestId".into(), json!(refund.to_string()));
        }
    }
    Some(body)
}

async fn reset(State(sandbox): State<ElectrumSandbox>) -> StatusCode {
    sandbox.reset();
    StatusCode::NO_CONTENT
}

async fn stats(State(sandbox): State<ElectrumSandbox>) -> axum::Json<Stats> {
    axum::Json(sandbox.stats())
}

#[derive(serde::Deserialize)]
#[serde(rename_all = "snake_case")]
enum FaultKind {
    TimeoutAfterEffect,
    ErrorBeforeEffect,
}

/// The body of `POST /sandbox/faults`.
#[derive(serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct FaultSpec {
    operation: Operation,
    fault: FaultKind,
    status: Option<u16>,
    times: Option<u32>,
}

async fn inject_over_http(State(sandbox): State<ElectrumSandbox>, body: Bytes) -> Response {
    let bad =
        |why: String| (StatusCode::BAD_REQUEST, axum::Json(json!({"error": why}))).into_response();
    let spec: FaultSpec = match serde_json::from_slice(&body) {
        Ok(spec) => spec,
        Err(e) => return bad(format!("bad fault: {e}")),
    };
    let fault = match (spec.fault, spec.status) {
        (FaultKind::TimeoutAfterEffect, None) => Fault::TimeoutAfterEffect,
        (FaultKind::TimeoutAfterEffect, Some(_)) => {
            return bad("status is only for error_before_effect".into());
        }
        (FaultKind::ErrorBeforeEffect, Some(status)) if (500..=599).contains(&status) => {
            Fault::ErrorBeforeEffect(status)
        }
        (FaultKind::ErrorBeforeEffect, _) => {
            return bad("error_before_effect needs a 5xx status".into());
        }
    };
    sandbox.inject(spec.operation, fault, spec.times.unwrap_or(1));
    StatusCode::NO_CONTENT.into_response()
}
