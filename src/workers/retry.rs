//! Retrying infrastructure steps while their message stays safely unacked.

use std::future::Future;
use std::time::Duration;

use backon::{ExponentialBuilder, Retryable};

use crate::error::{ErrorClass, RelayError};

/// Runs `op` until it succeeds, fails with a non-retryable error, or about two minutes pass.
/// A PostgreSQL or broker
/// restart should delay work, never drop it: the message being handled stays unacked
/// meanwhile, so even a crash here loses nothing.
pub async fn until_done<T, F, Fut>(what: &str, op: F) -> Result<T, RelayError>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<T, RelayError>>,
{
    let schedule = ExponentialBuilder::default()
        .with_min_delay(Duration::from_millis(100))
        .with_max_delay(Duration::from_secs(5))
        .with_jitter()
        .with_max_times(40);
    op.retry(schedule)
        .when(|e: &RelayError| e.class() == ErrorClass::Retryable)
        .notify(|e: &RelayError, wait: Duration| {
            tracing::warn!(error = %e, step = what, retry_in_ms = wait.as_millis() as u64, "retrying");
        })
        .await
}
