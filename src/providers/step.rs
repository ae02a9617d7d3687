//! What running one provider operation came to: the executor acts on this alone.

use std::time::Duration;

use serde_json::Value;

use crate::command::{OutcomeError, Status};

#[derive(Debug, Clone, PartialEq)]
pub enum Step {
    /// A terminal outcome.
    Done {
        status: Status,
        result: Option<Value>,
        error: Option<OutcomeError>,
    },
    /// The request may have been applied: resolve it, never send it again.
    Unknown(String),
    /// Nothing was applied: sending again later is safe.
    Retry(String),
    /// The provider is still working on it (Electrum's 102 on a lookup): ask again later,
    /// until a deadline.
    Processing(String),
    /// Sold; the additional data comes later. Carries what the sale returned.
    AwaitData(Value),
    /// A raffle ticket; its result comes after the draw, `draw_in` from now.
    AwaitDraw { ticket: Value, draw_in: Duration },
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
            Some(OutcomeError {
                code: code.into(),
                message: message.into(),
                provider_code,
            }),
        )
    }
}
