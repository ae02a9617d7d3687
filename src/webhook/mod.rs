//! Callbacks: Standard Webhooks signing and HTTP delivery.

pub mod deliver;
pub mod sign;

pub use deliver::{CallbackResult, Deliverer};
pub use sign::SigningKey;
