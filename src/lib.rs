//! voucher-relay: carries voucher transactions between upstream systems and voucher
//! providers over RabbitMQ, records them in PostgreSQL, and answers with signed callbacks.
//!
//! Start at [`workers::Relay`] for the running service and [`command`] for the public
//! contract. `DESIGN.md` in the shared folder has the architecture and the guarantees.

pub mod admin;
pub mod broker;
pub mod command;
pub mod config;
pub mod crypto;
pub mod demo;
pub mod error;
pub mod mask;
pub mod providers;
pub mod publish;
pub mod ratelimit;
pub mod sandbox;
pub mod shutdown;
pub mod store;
pub mod telemetry;
pub mod webhook;
pub mod workers;
