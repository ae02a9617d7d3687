//! The plain data a provider and the generic workers hand each other: what the executor
//! knows when it asks a provider, what a provider asks to be done later (a poll, an
//! advice), and the claimed polls and advices it is asked to run.
//!
//! None of it touches the database or the broker, so every provider decision is a plain
//! function of these values and can be unit-tested.

use std::time::Duration;

use serde_json::Value;
use uuid::Uuid;

use crate::command::{OutcomeError, Status, Subject};

/// What the executor knows about the transaction it asks a provider to run.
#[derive(Debug, Clone)]
pub struct TxContext {
    /// The relay's transaction id.
    pub id: Uuid,
    /// The request id of providers that take one: the transaction id on the first send, a
    /// fresh one each time the command is sent again (the provider never received it).
    pub request_id: Uuid,
    /// The number the relay allocated for providers that need one (CSQ's `localReference`).
    pub local_reference: Option<i32>,
    /// Attempts including this one.
    pub attempt: i32,
    /// How long earlier attempts waited in the delay tiers before this one.
    pub waited: Duration,
    /// For a command about an earlier provider request
    /// ([`Provider::subject_request`](super::Provider::subject_request)): the command id
    /// of the relay's own transaction behind that request, if it is one.
    pub subject_owner: Option<String>,
}

/// What a transaction whose outcome is unknown needs: the provider decides.
#[derive(Debug, Clone, PartialEq)]
pub enum UnknownPlan {
    /// Ask the provider what happened, by polling until the plan's deadline.
    Resolve(PollPlan),
    /// Undo it by a reversal repeated until final; the reversal's answer makes the outcome.
    Reverse(Box<NewAdvice>),
}

/// A poll to start: what for (the provider's own word), when first, and until when.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct PollPlan {
    pub purpose: &'static str,
    /// `None`: after the first delay tier.
    pub first_in: Option<Duration>,
    pub deadline_in: Duration,
}

/// What a waiting transaction waits for; each is a state of the transaction.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WaitFor {
    /// Sold; the additional data comes later.
    Data,
    /// A raffle ticket; its result comes after the draw.
    Draw,
}

/// The provider took the request and the rest comes later.
#[derive(Debug, Clone, PartialEq)]
pub struct Waiting {
    pub wait_for: WaitFor,
    /// What the provider returned so far (kept sealed: it may hold a voucher code).
    pub partial: Value,
    pub plan: PollPlan,
    /// A progress event for everyone waiting (status `pending`), of this type.
    pub progress: Option<(&'static str, Value)>,
}

/// Store-and-forward advices: a confirmation says "completed", a reversal says "undo it".
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AdviceKind {
    Confirmation,
    Reversal,
}

impl AdviceKind {
    pub fn as_str(self) -> &'static str {
        match self {
            AdviceKind::Confirmation => "confirmation",
            AdviceKind::Reversal => "reversal",
        }
    }

    pub fn parse(s: &str) -> Option<AdviceKind> {
        match s {
            "confirmation" => Some(AdviceKind::Confirmation),
            "reversal" => Some(AdviceKind::Reversal),
            _ => None,
        }
    }
}

/// An advice to record, repeated until the provider answers it finally.
#[derive(Debug, Clone, PartialEq)]
pub struct NewAdvice {
    pub provider: &'static str,
    /// The provider operation the advice is about (`redeem`, ...).
    pub operation: String,
    pub kind: AdviceKind,
    /// The provider request it is about; `None` is the transaction's own request.
    pub request_id: Option<Uuid>,
    /// The provider's own word for why a reversal (Electrum's `reversalReason`).
    pub reversal_reason: Option<&'static str>,
    /// What the relay saw, for operators.
    pub detail: Option<String>,
    /// Anything else the provider needs to build the message later.
    pub data: Option<Value>,
    /// How long it is repeated before it is parked.
    pub budget: Duration,
}

/// How a provider's advices are repeated.
#[derive(Debug, Clone, Copy)]
pub struct AdvicePolicy {
    /// The first wait, doubled per attempt up to `backoff_cap`, each with jitter.
    pub backoff_base: Duration,
    pub backoff_cap: Duration,
}

/// A claimed poll: what the provider needs to ask once more.
#[derive(Debug, Clone)]
pub struct PollJob {
    pub transaction_id: Uuid,
    pub purpose: String,
    /// Attempts including this one.
    pub attempt: i32,
    pub past_deadline: bool,
    pub subject: Subject,
    pub local_reference: Option<i32>,
    /// The provider's own references, as it gave them at intake.
    pub refs: Option<Value>,
    /// What the provider returned before, if the transaction is waiting.
    pub partial: Option<Value>,
    /// How long ago the transaction's last request was sent (`None`: never sent, or a row
    /// from before this was kept). A provider's "unknown reference" proves the request
    /// never arrived only once the request's own timeout is past.
    pub since_sent: Option<Duration>,
}

/// What one poll came to.
#[derive(Debug, Clone, PartialEq)]
pub enum PollStep {
    /// The transaction ends with this outcome; `event_type` replaces `<kind>.<status>`.
    Finish {
        status: Status,
        result: Option<Value>,
        error: Option<OutcomeError>,
        event_type: Option<&'static str>,
    },
    /// Resolved as taken, with more to come: wait for it like a fresh one.
    Wait(Box<Waiting>),
    /// Not final yet: ask again later.
    Again,
    /// Not final yet: ask again after this long (no later than the deadline).
    AgainAfter(Duration),
    /// The provider shows the request never arrived: send the command again under a fresh
    /// reference, within the relay's resend budget. The reason is for the record.
    Resend(String),
    /// The poll cannot be asked (its row lacks what the provider needs): set aside for
    /// operators, the transaction left waiting, never finished by guesswork.
    Park(String),
}

/// A claimed advice: what the provider needs to send it.
#[derive(Debug, Clone)]
pub struct AdviceJob {
    pub id: Uuid,
    pub transaction_id: Uuid,
    pub provider: String,
    pub operation: String,
    pub kind: AdviceKind,
    pub request_id: Uuid,
    pub reversal_reason: Option<String>,
    pub data: Option<Value>,
    /// The message as first sent, if it was.
    pub body: Option<Value>,
    /// Attempts including this one.
    pub attempt: i32,
    pub subject: Subject,
}

/// What one advice attempt came to, as the provider judges its answer.
#[derive(Debug, Clone, PartialEq)]
pub enum AdviceJudgement {
    /// Answered finally.
    Settled(FinalAnswer),
    /// Not final: repeat it later.
    Again(String),
    /// Repeating cannot help (the message itself was refused): set aside for operators.
    Park(String),
}

/// An advice's final answer.
#[derive(Debug, Clone, PartialEq)]
pub struct FinalAnswer {
    /// Names the answer in metrics (`accepted`, `not_found`, `refused`).
    pub verdict: &'static str,
    /// The reversal found that the provider never received the request it reverses: the
    /// command may be sent again under a fresh request id.
    pub never_received: bool,
    /// False for a final refusal.
    pub accepted: bool,
    /// What a reversal's answer makes of its command; the worker applies it only while the
    /// command waits for it.
    pub outcome: Option<(Status, Value, OutcomeError)>,
}
