//! The callback worker: drains the outbox into `voucher.events`, AMQP replies and signed
//! HTTP callbacks.
//!
//! Rows are claimed with a lock that expires, so several processes can drain one outbox and
//! a crashed worker's rows are picked up again. Delivery is at least once; the event id is
//! the `webhook-id` and the AMQP `message_id`, so receivers can deduplicate.

use std::sync::Arc;
use std::time::Duration;

use tracing::Instrument;

use super::shared::Shared;
use crate::broker::publisher::json_properties;
use crate::retry::{Backoff, Jitter, Schedule};
use crate::shutdown::Shutdown;
use crate::store::outbox::{Channel, OutboxItem};
use crate::webhook::CallbackResult;

/// Rows claimed per round.
const BATCH: i64 = 64;
/// Added to the callback timeout to make a claim: the longest one delivery can take (a
/// callback POST, or a publish and its confirm, both bounded by about that long). A worker
/// that dies holding rows delays them by no more than this.
const CLAIM_MARGIN: Duration = Duration::from_secs(5);
/// Poll interval when nothing woke the worker: picks up rows written by other processes
/// and retries that came due.
const IDLE_POLL: Duration = Duration::from_millis(250);
/// Broker publishes are retried forever, 2 s doubling to no slower than 30 s: the broker
/// coming back is only a matter of time, and an outcome must never be dropped.
const BROKER_RETRY: Backoff = Backoff {
    base: Duration::from_secs(2),
    cap: Duration::from_secs(30),
    jitter: CALLBACK_JITTER,
};
/// Plus or minus 20 %, so retries from many rows do not arrive together.
const CALLBACK_JITTER: Jitter = Jitter::Between(0.8, 1.2);

/// Drains the outbox until shutdown.
pub async fn deliver_outbox_until_shutdown(shared: Arc<Shared>, mut shutdown: Shutdown) {
    loop {
        if shutdown.is_triggered() {
            return;
        }
        let claim_for = Duration::from_millis(shared.config.webhook.timeout_ms) + CLAIM_MARGIN;
        let items = match shared.store.claim_outbox(BATCH, claim_for).await {
            Ok(items) => items,
            Err(e) => {
                tracing::warn!(error = %e, "cannot read the outbox; retrying");
                Vec::new()
            }
        };
        let idle = items.is_empty();
        let mut tasks = tokio::task::JoinSet::new();
        for item in items {
            let shared = shared.clone();
            tasks.spawn(async move { deliver(&shared, item).await });
        }
        while tasks.join_next().await.is_some() {}
        if idle {
            tokio::select! {
                _ = shutdown.wait() => return,
                _ = shared.outbox_wakeup.notified() => {}
                _ = tokio::time::sleep(IDLE_POLL) => {}
            }
        }
    }
}

async fn deliver(shared: &Shared, item: OutboxItem) {
    let transaction_id = item
        .transaction_id
        .map(|t| t.to_string())
        .unwrap_or_default();
    let span = tracing::error_span!("outbox", transaction_id = %transaction_id, event_id = %item.event_id, channel = ?item.channel, attempt = item.attempts);
    deliver_one(shared, item).instrument(span).await
}

async fn deliver_one(shared: &Shared, item: OutboxItem) {
    let result = match item.channel {
        Channel::Event | Channel::Reply => {
            let mut props = json_properties()
                .with_message_id(item.event_id.as_str().into())
                .with_type(outcome_type(&item.payload).as_str().into());
            let (exchange, key) = match item.channel {
                Channel::Event => (
                    shared.config.name(&shared.config.broker.events_exchange),
                    item.target.clone(),
                ),
                _ => (String::new(), item.target.clone()),
            };
            if let Some(c) = item.correlation_id.as_deref().filter(|c| !c.is_empty()) {
                props = props.with_correlation_id(c.into());
            }
            match shared
                .publisher
                .publish(&exchange, &key, &item.payload, props)
                .await
            {
                Ok(()) => Ok(()),
                Err(e) => Err((e.to_string(), Some(BROKER_RETRY.wait(item.attempts)))),
            }
        }
        Channel::Callback => match shared
            .deliverer
            .deliver(&item.target, &item.event_id, &item.payload)
            .await
        {
            CallbackResult::Delivered { status } => {
                tracing::info!(status, "callback delivered");
                Ok(())
            }
            CallbackResult::Failed {
                status,
                reason,
                retry_after,
            } => {
                let schedule = Schedule {
                    steps_ms: &shared.config.webhook.retry_schedule_ms,
                    jitter: CALLBACK_JITTER,
                };
                let next = schedule
                    .wait_after(item.attempts)
                    .map(|wait| retry_after.map_or(wait, |ra| wait.max(ra)));
                tracing::warn!(?status, reason = %reason, gives_up = next.is_none(), "callback failed");
                Err((reason, next))
            }
        },
    };
    let channel = format!("{:?}", item.channel).to_lowercase();
    let recorded = match result {
        Ok(()) => {
            metrics::counter!("voucher_deliveries_total", "channel" => channel, "result" => "delivered").increment(1);
            shared.store.outbox_delivered(item.id).await
        }
        Err((reason, next)) => {
            let result = if next.is_some() { "retry" } else { "dead" };
            metrics::counter!("voucher_deliveries_total", "channel" => channel, "result" => result)
                .increment(1);
            if next.is_none() {
                tracing::error!(reason = %reason, "callback retries used up; dead-lettered in the outbox");
            }
            shared.store.outbox_failed(item.id, &reason, next).await
        }
    };
    if let Err(e) = recorded {
        // The claim expires and the row is delivered again: at least once.
        tracing::warn!(error = %e, "could not record the delivery result");
    }
}

/// The `type` of the outcome in `payload`, for the AMQP `type` property.
fn outcome_type(payload: &[u8]) -> String {
    serde_json::from_slice::<serde_json::Value>(payload)
        .ok()
        .and_then(|v| v.get("type").and_then(|t| t.as_str()).map(str::to_string))
        .unwrap_or_default()
}
