//! The frame every queue consumer runs in: a connection kept up with backoff, one task per
//! delivery, and one place that settles a delivery by what its handling came to.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use lapin::message::Delivery;
use lapin::options::{BasicAckOptions, BasicNackOptions};

use super::dead_letters;
use super::shared::Shared;
use crate::broker;
use crate::error::{ErrorClass, RelayError};
use crate::retry::{Backoff, Jitter};
use crate::shutdown::Shutdown;

/// Waits between reconnects: 200 ms doubling to 10 s.
const RECONNECT: Backoff = Backoff {
    base: Duration::from_millis(200),
    cap: Duration::from_secs(10),
    jitter: Jitter::None,
};

/// Consumes `queue` (its name in the config file) with `handle` until shutdown,
/// reconnecting whenever the broker goes away. Every delivery is settled by
/// [`settle`] from what `handle` returned.
pub async fn consume_supervised<F, Fut>(
    shared: Arc<Shared>,
    queue: String,
    mut shutdown: Shutdown,
    handle: F,
) where
    F: Fn(Arc<Shared>, Arc<Delivery>) -> Fut + Copy + Send + Sync + 'static,
    Fut: Future<Output = Result<(), RelayError>> + Send + 'static,
{
    let name = shared.config.name(&queue);
    let mut failures = 0;
    while !shutdown.is_triggered() {
        let run = async {
            let conn =
                broker::connect(&shared.config.broker.url, &format!("voucher-relay {queue}"))
                    .await?;
            let shared = shared.clone();
            let prefetch = shared.config.broker.prefetch;
            let queue: Arc<str> = Arc::from(name.as_str());
            let result = broker::consume(&conn, &name, prefetch, shutdown.clone(), move |d| {
                settle_after(shared.clone(), queue.clone(), d, handle)
            })
            .await;
            let _ = conn.close(200, "consumer stopped".into()).await;
            result
        };
        match run.await {
            Ok(()) => return,
            Err(e) => {
                failures += 1;
                let wait = RECONNECT.wait(failures);
                tracing::warn!(queue = %name, error = %e, retry_in_ms = wait.as_millis() as u64, "consumer lost; reconnecting");
                tokio::select! {
                    _ = shutdown.wait() => return,
                    _ = tokio::time::sleep(wait) => {}
                }
            }
        }
    }
}

/// Runs `handle` on one delivery from `queue` (its broker name), settles it, and wakes the
/// callback worker (the handling may have committed an outcome). A message about to be
/// dead-lettered is first recorded with its error, for operators.
async fn settle_after<F, Fut>(shared: Arc<Shared>, queue: Arc<str>, delivery: Delivery, handle: F)
where
    F: Fn(Arc<Shared>, Arc<Delivery>) -> Fut,
    Fut: Future<Output = Result<(), RelayError>>,
{
    let delivery = Arc::new(delivery);
    let result = handle(shared.clone(), delivery.clone()).await;
    if let Err(e) = &result
        && e.class() != ErrorClass::Retryable
    {
        dead_letters::record_refused(&shared, &queue, &delivery, e).await;
    }
    if let Err(e) = settle(&delivery, result).await {
        // The channel is gone; the broker redelivers the message elsewhere.
        tracing::warn!(error = %e, "could not settle the delivery");
    }
    shared.outbox_wakeup.notify_one();
}

/// The one place a delivery is settled. Handled: acked. Infrastructure that failed for
/// minutes: back to the queue. Anything that will fail the same way again: to the
/// dead-letter exchange (`voucher.dlx` -> `voucher.dead`), where operators see it; never
/// dropped, never looped.
pub async fn settle(
    delivery: &Delivery,
    result: Result<(), RelayError>,
) -> Result<(), lapin::Error> {
    let e = match result {
        Ok(()) => return delivery.ack(BasicAckOptions::default()).await.map(|_| ()),
        Err(e) => e,
    };
    let requeue = e.class() == ErrorClass::Retryable;
    if requeue {
        tracing::error!(error = %e, "giving the message back to the queue");
    } else {
        tracing::error!(error = %e, class = ?e.class(), "dead-lettering the message");
        metrics::counter!("voucher_dead_lettered_total").increment(1);
    }
    delivery
        .nack(BasicNackOptions {
            requeue,
            ..Default::default()
        })
        .await
        .map(|_| ())
}
