//! The one error taxonomy: every failure is retryable, final or poison.
//!
//! External errors (AMQP, PostgreSQL, HTTP) are mapped into [`RelayError`] at the boundary,
//! so the workers decide what to do from [`ErrorClass`] alone:
//! - **retryable**: the same work may succeed later (broker down, database restart, 5xx before
//!   anything was applied). Leave the message unacked or schedule a retry.
//! - **final**: the answer is known and will not change (a decline, a 4xx). Record it.
//! - **poison**: the input itself is bad. Reject it once, never retry it.

/// How a worker must treat an error.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorClass {
    Retryable,
    Final,
    Poison,
}

/// Every error the relay's workers can meet.
#[derive(Debug, thiserror::Error)]
pub enum RelayError {
    #[error("database: {0}")]
    Database(#[from] tokio_postgres::Error),
    #[error("database pool: {0}")]
    Pool(#[from] deadpool_postgres::PoolError),
    #[error("broker: {0}")]
    Broker(#[from] lapin::Error),
    #[error("broker did not confirm the publish to {0}")]
    NotConfirmed(String),
    #[error("no queue is bound for {0}: run `voucher-relay topology declare`")]
    Unroutable(String),
    #[error("timed out: {0}")]
    Timeout(&'static str),
    #[error("stored data is corrupt: {0}")]
    Corrupt(String),
    #[error("bad input: {0}")]
    Poison(String),
    /// The batched database writer has stopped (the relay is shutting down).
    #[error("the batched database writer has stopped")]
    WriterGone,
}

impl RelayError {
    /// The class that decides what the worker does next.
    pub fn class(&self) -> ErrorClass {
        match self {
            RelayError::Database(e) => {
                // Bad data (class 22) is the input's fault; a constraint or syntax error
                // (23, 42) will fail the same way again.
                match e.code() {
                    Some(code) if code.code().starts_with("22") => ErrorClass::Poison,
                    Some(code)
                        if code.code().starts_with("23") || code.code().starts_with("42") =>
                    {
                        ErrorClass::Final
                    }
                    _ => ErrorClass::Retryable,
                }
            }
            RelayError::Pool(_)
            | RelayError::Broker(_)
            | RelayError::NotConfirmed(_)
            | RelayError::Unroutable(_)
            | RelayError::Timeout(_)
            | RelayError::WriterGone => ErrorClass::Retryable,
            RelayError::Corrupt(_) => ErrorClass::Final,
            RelayError::Poison(_) => ErrorClass::Poison,
        }
    }
}

pub type Result<T, E = RelayError> = std::result::Result<T, E>;

/// An error and the causes its `Display` leaves out (reqwest prints "error sending request",
/// tokio-postgres "error connecting to server", each without the I/O error beneath), as
/// `a: b: c`; a cause already in the text is not repeated.
pub fn with_causes(e: &dyn std::error::Error) -> String {
    let mut text = e.to_string();
    let mut cause = e.source();
    while let Some(c) = cause {
        let part = c.to_string();
        if !text.contains(&part) {
            text.push_str(": ");
            text.push_str(&part);
        }
        cause = c.source();
    }
    text
}
