//! voucher-relay: carries voucher transactions between upstream systems and voucher
//! providers over RabbitMQ, records them in PostgreSQL, and answers with signed callbacks.
//!
//! Start at [`workers::Relay`] for the running service, [`command`] for the public
//! contract and [`providers`] for the adapters. `docs/architecture.md` has the
//! architecture, the state machine and the module map.

pub mod admin;
pub mod broker;
pub mod command;
pub mod config;
pub mod console;
pub mod crypto;
pub mod demo;
pub mod error;
pub mod mask;
pub mod operator;
pub mod progress;
#[cfg(test)]
mod proptest_json;
pub mod providers;
pub mod publish;
pub mod ratelimit;
pub mod retry;
pub mod sandbox;
pub mod shutdown;
pub mod store;
pub mod telemetry;
pub mod verify;
pub mod webhook;
pub mod workers;
