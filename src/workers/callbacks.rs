//! The callback dispatcher: drains the outbox into `voucher.events`, AMQP replies, signed
//! HTTP callbacks and dead-letter notices.
//!
//! Deliveries run as independent tasks, never in lock-step batches, and the claim leaves
//! alone a destination (scheme, host and port) that already has its share in flight, is
//! paused by a `Retry-After`, has its circuit open or its URL disabled. So one slow or failing
//! receiver never delays the others.
//!
//! Rows are claimed with a lock that expires, so several processes can drain one outbox and
//! a crashed worker's rows are delivered again. Delivery is at least once; the event id is
//! the `webhook-id` and the AMQP `message_id`, so receivers can deduplicate.

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::Notify;
use tracing::Instrument;

use super::shared::Shared;
use crate::broker::publisher::json_properties;
use crate::retry::{Backoff, INFRA_LOG, Jitter, Schedule};
use crate::shutdown::Shutdown;
use crate::store::outbox::{AfterAttempt, Busy, Channel, Circuit, OutboxItem, delivered};
use crate::webhook::{Attempt, Verdict};

/// Deliveries in flight at once in this process, all destinations together.
const MAX_IN_FLIGHT: usize = 256;
/// Rows claimed per round at most.
const BATCH: usize = 64;
/// Added to the callback timeout, with the database timeout, to make a claim: the longest
/// one delivery and the recording of its result can take. A worker that dies holding rows
/// delays them by no more than this; a live one never loses a row it is still working on
/// to itself (the rows in flight are left out of its claims).
const CLAIM_MARGIN: Duration = Duration::from_secs(5);
/// Poll interval when nothing woke the worker: picks up rows written by other processes,
/// retries that came due and destinations that reopened.
const IDLE_POLL: Duration = Duration::from_millis(250);
/// How long a wake-up waits for others before claiming: a little latency for far fewer
/// claim queries under load.
const COALESCE: Duration = Duration::from_millis(5);
/// Broker publishes are retried forever, 2 s doubling to no slower than 30 s: the broker
/// coming back is only a matter of time, and an outcome must never be dropped.
const BROKER_RETRY: Backoff = Backoff {
    base: Duration::from_secs(2),
    cap: Duration::from_secs(30),
    jitter: CALLBACK_JITTER,
};
/// Plus or minus 20 %, so retries from many rows do not arrive together.
const CALLBACK_JITTER: Jitter = Jitter::Between(0.8, 1.2);

/// Deliveries this process has in flight: their rows (never claimed again by this
/// process while a task still works on them, even if the claim expired) and, for callbacks,
/// how many per destination.
#[derive(Default)]
struct InFlight {
    state: Mutex<Counts>,
    /// Rung when a delivery ends: its destination has room again.
    done: Notify,
}

#[derive(Default)]
struct Counts {
    rows: HashSet<i64>,
    by_destination: HashMap<String, i32>,
}

impl InFlight {
    fn add(&self, item: &OutboxItem) {
        let mut state = self.lock();
        state.rows.insert(item.id);
        if item.channel == Channel::Callback {
            *state
                .by_destination
                .entry(item.destination.clone())
                .or_default() += 1;
        }
    }

    fn remove(&self, id: Option<i64>, destination: Option<&str>) {
        let mut state = self.lock();
        if let Some(id) = id {
            state.rows.remove(&id);
        }
        if let Some(destination) = destination {
            if let Some(n) = state.by_destination.get_mut(destination) {
                *n -= 1;
                if *n <= 0 {
                    state.by_destination.remove(destination);
                }
            }
        }
        drop(state);
        self.done.notify_one();
    }

    /// Whether some destination has all the deliveries it may have in flight.
    fn any_at(&self, per_destination: i32) -> bool {
        self.lock()
            .by_destination
            .values()
            .any(|n| *n >= per_destination)
    }

    fn busy(&self, per_destination: i32, first_wait: Duration, owner: uuid::Uuid) -> Busy {
        let state = self.lock();
        let (destinations, in_flight) = state
            .by_destination
            .iter()
            .map(|(d, n)| (d.clone(), *n))
            .unzip();
        Busy {
            destinations,
            in_flight,
            rows: state.rows.iter().copied().collect(),
            per_destination,
            first_wait,
            owner,
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Counts> {
        // A panic while holding this lock leaves plain counters behind; keep using them.
        self.state
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

/// One delivery counted in [`InFlight`] until dropped, so a delivery that panics still
/// gives its row and its destination's room back.
struct Slot {
    in_flight: Arc<InFlight>,
    id: i64,
    destination: Option<String>,
}

impl Slot {
    fn take(in_flight: &Arc<InFlight>, item: &OutboxItem) -> Slot {
        in_flight.add(item);
        Slot {
            in_flight: in_flight.clone(),
            id: item.id,
            destination: (item.channel == Channel::Callback).then(|| item.destination.clone()),
        }
    }
}

impl Slot {
    /// The request to the destination has ended: it has room for another while this
    /// delivery's result is still being recorded (the row stays this process's until then).
    fn request_done(&mut self) {
        if let Some(destination) = self.destination.take() {
            self.in_flight.remove(None, Some(&destination));
        }
    }
}

impl Drop for Slot {
    fn drop(&mut self) {
        self.in_flight
            .remove(Some(self.id), self.destination.as_deref());
    }
}

/// Drains the outbox until shutdown, then lets the deliveries in flight finish (each is
/// bounded by the callback timeout).
pub async fn deliver_outbox_until_shutdown(shared: Arc<Shared>, mut shutdown: Shutdown) {
    let in_flight = Arc::new(InFlight::default());
    let per_destination =
        i32::try_from(shared.config.webhook.per_destination_concurrency).unwrap_or(i32::MAX);
    let claim_for = Duration::from_millis(shared.config.webhook.timeout_ms)
        + Duration::from_millis(shared.config.database.timeout_ms)
        + CLAIM_MARGIN;
    let first_wait = shared
        .config
        .webhook
        .retry_schedule
        .first()
        .copied()
        .unwrap_or_default();
    let mut tasks = tokio::task::JoinSet::new();
    while !shutdown.is_triggered() {
        while tasks.try_join_next().is_some() {}
        let room = MAX_IN_FLIGHT.saturating_sub(tasks.len()).min(BATCH);
        let items = if room == 0 {
            Vec::new()
        } else {
            let busy = in_flight.busy(per_destination, first_wait, shared.process.id);
            let limit = i64::try_from(room).unwrap_or(0);
            match shared
                .outbox_store
                .claim_outbox(limit, claim_for, &busy)
                .await
            {
                Ok(items) => items,
                Err(e) => {
                    if let Some(n) = INFRA_LOG.may_log() {
                        tracing::warn!(error = %e, similar_lines_suppressed = n, "cannot read the outbox; retrying");
                    }
                    Vec::new()
                }
            }
        };
        let claimed = items.len();
        for item in items {
            let slot = Slot::take(&in_flight, &item);
            let shared = shared.clone();
            tasks.spawn(async move {
                let mut slot = slot;
                deliver(&shared, item, &mut slot).await;
            });
        }
        // A full claim may have left due rows behind: claim again at once. Otherwise wait
        // for news, so the claim query runs about once per wake-up, not once per delivery.
        if room > 0 && claimed == room {
            continue;
        }
        // A delivery ending matters only when room was what held rows back.
        let held_back = room == 0 || in_flight.any_at(per_destination);
        tokio::select! {
            _ = shutdown.wait() => {}
            _ = shared.outbox_wakeup.notified() => {}
            _ = in_flight.done.notified(), if held_back => {}
            _ = tokio::time::sleep(IDLE_POLL) => {}
        }
        // Under load, outcomes commit hundreds of times a second: gather a few per claim
        // instead of claiming once per outcome.
        tokio::time::sleep(COALESCE).await;
    }
    while tasks.join_next().await.is_some() {}
}

async fn deliver(shared: &Shared, item: OutboxItem, slot: &mut Slot) {
    let transaction_id = item
        .transaction_id
        .map(|t| t.to_string())
        .unwrap_or_default();
    let span = tracing::error_span!("outbox", transaction_id = %transaction_id, event_id = %item.event_id, channel = item.channel.as_str(), attempt = item.attempts + 1);
    async {
        match item.channel {
            Channel::Callback => deliver_callback(shared, &item, slot).await,
            Channel::Event | Channel::Reply | Channel::Dead => publish(shared, &item).await,
        }
    }
    .instrument(span)
    .await
}

/// One AMQP publish with confirms: an event, a reply, or a dead-letter notice.
async fn publish(shared: &Shared, item: &OutboxItem) {
    let (exchange, key, body) = match item.channel {
        Channel::Event => (
            shared.config.name(&shared.config.broker.events_exchange),
            item.target.clone(),
            item.payload.clone(),
        ),
        _ => (String::new(), item.target.clone(), item.payload.clone()),
    };
    let mut props = json_properties()
        .with_message_id(item.event_id.as_str().into())
        .with_type(outcome_type(&body).as_str().into());
    if let Some(c) = item.correlation_id.as_deref().filter(|c| !c.is_empty()) {
        props = props.with_correlation_id(c.into());
    }
    // A notice must land in its queue: a missing `callbacks.dead` is an error, retried,
    // not a silent drop. An event nobody subscribed to, or a reply queue gone, is fine.
    let sent = match item.channel {
        Channel::Dead => {
            shared
                .publisher
                .publish_routed(&exchange, &key, &body, props)
                .await
        }
        _ => {
            shared
                .publisher
                .publish(&exchange, &key, &body, props)
                .await
        }
    }
    .map_err(|e| e.to_string());
    record_publish(shared, item, sent).await
}

async fn record_publish(shared: &Shared, item: &OutboxItem, sent: Result<(), String>) {
    let channel = item.channel.as_str();
    let recorded = match sent {
        Ok(()) => {
            metrics::counter!("voucher_deliveries_total", "channel" => channel, "result" => "delivered").increment(1);
            shared
                .batches
                .delivered
                .submit(delivered(item, None))
                .await
                .map(|_| ())
        }
        Err(reason) => {
            tracing::warn!(reason = %reason, "publish failed; will retry");
            metrics::counter!("voucher_deliveries_total", "channel" => channel, "result" => "retry").increment(1);
            let wait = BROKER_RETRY.wait(item.attempts + 1);
            shared.outbox_store.outbox_failed(item, &reason, wait).await
        }
    };
    if let Err(e) = recorded {
        // The claim expires and the row is delivered again: at least once.
        tracing::warn!(error = %e, "could not record the delivery result");
    }
}

/// One signed HTTP callback, its attempt log line, and what follows.
async fn deliver_callback(shared: &Shared, item: &OutboxItem, slot: &mut Slot) {
    let attempt = shared
        .deliverer
        .deliver(&item.target, &item.event_id, &item.payload)
        .await;
    slot.request_done();
    let webhook = &shared.config.webhook;
    let schedule = Schedule {
        steps: &webhook.retry_schedule,
        jitter: CALLBACK_JITTER,
    };
    let after = after_attempt(&attempt, item, &schedule);
    log_attempt(&attempt, after);
    metrics::counter!("voucher_deliveries_total", "channel" => "callback", "result" => attempt.result())
        .increment(1);
    let circuit = Circuit {
        failures: webhook.circuit_failures,
        open_for: Duration::from_millis(webhook.circuit_open_ms),
    };
    let dead_queue = shared.config.name(&webhook.dead_queue);
    let recorded = match after {
        // The common case goes with the others delivered meanwhile.
        AfterAttempt::Delivered => {
            let done = delivered(item, Some(&attempt));
            shared.batches.delivered.submit(done).await
        }
        _ => {
            shared
                .outbox_store
                .record_callback(item, &attempt, after, circuit, &dead_queue)
                .await
        }
    };
    match recorded {
        Ok(true) => {}
        Ok(false) => {
            tracing::warn!(
                "the claim expired during the attempt; the worker that took the row over decides"
            )
        }
        // The claim expires and the callback is sent again: at least once.
        Err(e) => tracing::warn!(error = %e, "could not record the callback attempt"),
    }
}

/// What an attempt at `item` means. A `Retry-After` uses no step of the schedule, up to as
/// many times as the schedule has steps: past that, a receiver that only ever throttles is
/// failing, and each further answer uses a step (waiting at least what it asked).
fn after_attempt(attempt: &Attempt, item: &OutboxItem, schedule: &Schedule<'_>) -> AfterAttempt {
    let number = item.attempts + 1;
    let step = || match schedule.wait_after(number) {
        Some(wait) => AfterAttempt::Retry { wait },
        None => AfterAttempt::Dead { failed: true },
    };
    match &attempt.verdict {
        Verdict::Delivered => AfterAttempt::Delivered,
        Verdict::Throttled(wait) if (item.throttled as usize) < schedule.steps.len() => {
            AfterAttempt::Throttled { wait: *wait }
        }
        Verdict::Throttled(asked) => match step() {
            AfterAttempt::Retry { wait } => AfterAttempt::Retry {
                wait: wait.max(*asked),
            },
            dead => dead,
        },
        Verdict::Gone => AfterAttempt::Disabled,
        Verdict::Refused(_) => AfterAttempt::Dead { failed: false },
        Verdict::Failed => step(),
    }
}

fn log_attempt(attempt: &Attempt, after: AfterAttempt) {
    let status = attempt.status;
    let latency_ms = attempt.latency.as_millis();
    let dialled = attempt
        .dialled_ip
        .map(|ip| ip.to_string())
        .unwrap_or_default();
    match after {
        AfterAttempt::Delivered => {
            tracing::info!(?status, latency_ms, dialled, "callback delivered")
        }
        AfterAttempt::Retry { wait } => {
            tracing::warn!(?status, latency_ms, reason = %attempt.reason(), retry_in_ms = wait.as_millis(), "callback failed; will retry")
        }
        AfterAttempt::Throttled { wait } => {
            tracing::warn!(
                ?status,
                retry_in_ms = wait.as_millis(),
                "receiver asked to wait; its destination is paused"
            )
        }
        AfterAttempt::Disabled => {
            tracing::error!(
                ?status,
                "410 Gone: callback URL disabled until an operator enables it (voucher-relay callbacks enable)"
            )
        }
        AfterAttempt::Dead { .. } => {
            tracing::error!(?status, reason = %attempt.reason(), "callback dead; notice sent to the dead queue (voucher-relay callbacks replay)")
        }
    }
}

/// The `type` of the JSON in `payload`, for the AMQP `type` property.
fn outcome_type(payload: &[u8]) -> String {
    serde_json::from_slice::<serde_json::Value>(payload)
        .ok()
        .and_then(|v| v.get("type").and_then(|t| t.as_str()).map(str::to_string))
        .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn attempt(verdict: Verdict) -> Attempt {
        Attempt {
            verdict,
            at: chrono::Utc::now(),
            status: None,
            dialled_ip: None,
            latency: Duration::ZERO,
            error: None,
            response_body: None,
        }
    }

    fn item(attempts: i32, throttled: i32) -> OutboxItem {
        OutboxItem {
            id: 1,
            event_id: "evt".into(),
            transaction_id: None,
            channel: Channel::Callback,
            target: "https://hooks.example.com/x".into(),
            destination: "https://hooks.example.com:443".into(),
            correlation_id: None,
            origin_id: None,
            payload: Vec::new(),
            attempts,
            throttled,
            claim: chrono::Utc::now(),
        }
    }

    #[test]
    fn the_schedule_decides_only_failures() {
        let steps = [
            Duration::ZERO,
            Duration::from_secs(5),
            Duration::from_secs(300),
        ];
        let schedule = Schedule {
            steps: &steps,
            jitter: Jitter::None,
        };
        let failed = attempt(Verdict::Failed);
        assert_eq!(
            after_attempt(&failed, &item(0, 0), &schedule),
            AfterAttempt::Retry {
                wait: Duration::from_secs(5)
            }
        );
        assert_eq!(
            after_attempt(&failed, &item(1, 0), &schedule),
            AfterAttempt::Retry {
                wait: Duration::from_secs(300)
            }
        );
        assert_eq!(
            after_attempt(&failed, &item(2, 0), &schedule),
            AfterAttempt::Dead { failed: true }
        );
        // Backpressure and a disabled URL use no step, whatever the count.
        assert_eq!(
            after_attempt(
                &attempt(Verdict::Throttled(Duration::from_secs(2))),
                &item(2, 2),
                &schedule
            ),
            AfterAttempt::Throttled {
                wait: Duration::from_secs(2)
            }
        );
        assert_eq!(
            after_attempt(&attempt(Verdict::Gone), &item(2, 0), &schedule),
            AfterAttempt::Disabled
        );
        assert_eq!(
            after_attempt(
                &attempt(Verdict::Refused("loopback".into())),
                &item(0, 0),
                &schedule
            ),
            AfterAttempt::Dead { failed: false }
        );
    }

    #[test]
    fn a_receiver_that_only_throttles_uses_up_the_schedule_at_last() {
        let steps = [Duration::ZERO, Duration::from_secs(5)];
        let schedule = Schedule {
            steps: &steps,
            jitter: Jitter::None,
        };
        let throttled = attempt(Verdict::Throttled(Duration::from_secs(60)));
        assert_eq!(
            after_attempt(&throttled, &item(0, 1), &schedule),
            AfterAttempt::Throttled {
                wait: Duration::from_secs(60)
            }
        );
        // Throttled as often as the schedule has steps: now each answer uses a step, waiting
        // at least what the receiver asked.
        assert_eq!(
            after_attempt(&throttled, &item(0, 2), &schedule),
            AfterAttempt::Retry {
                wait: Duration::from_secs(60)
            }
        );
        assert_eq!(
            after_attempt(&throttled, &item(1, 2), &schedule),
            AfterAttempt::Dead { failed: true }
        );
    }
}
