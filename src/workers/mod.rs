//! The workers. None of them names a provider: each finds its provider in the registry by
//! the name its command or row carries.
//! - [`executor`]: runs commands, from intake to ack;
//! - [`poller`]: asks the provider again about transactions that wait on it;
//! - [`advice`]: store-and-forward: reversals and confirmations are retried there;
//! - [`sweeper`]: republishes lost wake-ups and takes over from workers that died;
//! - [`callbacks`]: drains the outbox into events, replies and signed callbacks.
//!
//! [`Relay`] starts them; [`consumer`] is the frame every queue consumer runs in, and
//! [`follow_up`] is what happens after a provider step that is not yet an outcome.

pub mod advice;
pub mod callbacks;
pub mod consumer;
pub mod dead_letters;
pub mod executor;
pub mod follow_up;
pub mod gauges;
pub mod liveness;
pub mod poller;
pub mod relay;
pub mod shared;
pub mod sweeper;

pub use relay::Relay;
pub use shared::Shared;
