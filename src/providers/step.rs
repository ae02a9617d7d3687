//! What running one provider operation came to: the executor acts on this alone.

use serde_json::Value;

use super::work::{NewAdvice, Waiting};
use crate::command::{OutcomeError, Status};

#[derive(Debug, Clone, PartialEq)]
pub enum Step {
    /// A terminal outcome.
    Done {
        status: Status,
        result: Option<Value>,
        error: Option<OutcomeError>,
    },
    /// The request may have been applied: resolve it, never send it again. What resolving
    /// means is the provider's [`on_unknown`](super::Provider::on_unknown).
    Unknown(String),
    /// Nothing was applied: sending again later is safe.
    Retry(String),
    /// The provider is still working on it (Electrum's 102 on a lookup): ask again later.
    /// The provider says when it has waited long enough (see [`TxContext::waited`]).
    ///
    /// [`TxContext::waited`]: super::work::TxContext::waited
    Processing(String),
    /// The provider took it; the rest comes later (additional data, a raffle draw), found
    /// by polling.
    Wait(Box<Waiting>),
    /// Another request's outcome is unknown and must be undone: record this reversal, and
    /// let its final answer make this command's outcome.
    Reverse(Box<NewAdvice>),
}

impl Step {
    pub fn done(status: Status, result: Option<Value>, error: Option<OutcomeError>) -> Step {
        Step::Done {
            status,
            result,
            error,
        }
    }

    pub fn failed(code: &str, message: impl Into<String>, provider_code: Option<String>) -> Step {
        Step::done(
            Status::Failed,
            None,
            Some(error(code, message, provider_code)),
        )
    }
}

/// An outcome's error.
pub fn error(
    code: &str,
    message: impl Into<String>,
    provider_code: Option<String>,
) -> OutcomeError {
    OutcomeError {
        code: code.into(),
        message: message.into(),
        provider_code,
    }
}
