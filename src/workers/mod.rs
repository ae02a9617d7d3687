//! The workers: the executor runs commands, the callback worker drains the outbox.
//! [`Relay`] wires them to the broker, the database and the providers.

pub mod advice;
pub mod callbacks;
pub mod executor;
pub mod poller;
pub mod relay;
pub mod retry;

pub use relay::Relay;
