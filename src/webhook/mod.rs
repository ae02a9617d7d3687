//! Callbacks: Standard Webhooks signing, the SSRF guard and HTTP delivery.

pub mod deliver;
pub mod guard;
pub mod sign;

pub use deliver::{Attempt, Deliverer, Verdict};
pub use sign::{SigningKey, SigningKeys};
