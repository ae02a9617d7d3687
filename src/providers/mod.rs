//! Provider adapters. Each provider is one folder: params, client, mapping to outcomes and
//! sandbox side by side. All of them send through [`http::ProviderHttp`], the one path for
//! rate limits, timeouts, exchange records and error classification.

pub mod csq;
pub mod electrum;
pub mod http;
pub mod step;

pub use http::{CallError, Exchange, ProviderHttp};
pub use step::Step;
