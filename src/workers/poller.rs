//! The poller: work that waits on a provider, driven by the `polls` table.
//!
//! A wake-up message (`<provider>.poll`, body `{"transaction_id": …}`) rides a delay tier and
//! comes back on `polls.<provider>`. The worker claims the poll row, asks the provider once,
//! and either finishes the transaction or reschedules: the next wait grows through the delay
//! tiers (2 s, 10 s, 1 min, 5 min, 30 min). Nothing sleeps in a worker, so a poll survives
//! restarts of the relay and of the broker; the sweeper republishes wake-ups that were lost.

use std::sync::Arc;
use std::time::Duration;

use lapin::message::Delivery;
use lapin::options::{BasicAckOptions, BasicNackOptions};
use serde_json::{Value, json};
use tracing::Instrument;
use uuid::Uuid;

use super::relay::Shared;
use super::retry::until_done;
use crate::broker::publisher::json_properties;
use crate::command::{Outcome, OutcomeError, Status};
use crate::error::RelayError;
use crate::providers::CallError;
use crate::providers::csq::{self, Decision, PurchaseRef};
use crate::shutdown::Shutdown;
use crate::store::polls::{Due, PollJob, Purpose};

/// How long a worker owns a poll it is running.
const POLL_LEASE: Duration = Duration::from_secs(60);
/// A poll this late has lost its wake-up message.
const OVERDUE: Duration = Duration::from_secs(60);
/// How often the sweeper looks for lost wake-ups.
const SWEEP_EVERY: Duration = Duration::from_secs(15);

/// The wait before poll attempt `attempt` (1-based): the delay tiers in order, then the
/// longest one again.
pub fn wait_before(shared: &Shared, attempt: i32) -> Duration {
    let tiers = &shared.config.delay_tiers;
    let i = usize::try_from(attempt.max(1) - 1)
        .unwrap_or(0)
        .min(tiers.len().saturating_sub(1));
    tiers
        .get(i)
        .map_or(Duration::from_secs(2), |t| Duration::from_millis(t.ttl_ms))
}

/// Publishes a wake-up for `id` that arrives after about `wait`. Picks the longest tier not
/// longer than `wait` (the shortest if `wait` is shorter); an early arrival waits again.
pub async fn wake(
    shared: &Shared,
    provider: &str,
    id: Uuid,
    wait: Duration,
) -> Result<(), RelayError> {
    let tiers = &shared.config.delay_tiers;
    let tier = tiers
        .iter()
        .filter(|t| Duration::from_millis(t.ttl_ms) <= wait)
        .max_by_key(|t| t.ttl_ms)
        .or_else(|| tiers.iter().min_by_key(|t| t.ttl_ms))
        .ok_or_else(|| RelayError::Poison("no delay tier configured".into()))?;
    let body = serde_json::to_vec(&json!({"transaction_id": id})).unwrap_or_default();
    shared
        .publisher
        .publish(
            &shared.config.name(&tier.name),
            &format!("{provider}.poll"),
            &body,
            json_properties(),
        )
        .await
}

/// Handles one wake-up delivery.
pub async fn handle(shared: Arc<Shared>, delivery: Delivery) {
    let id = serde_json::from_slice::<Value>(&delivery.data)
        .ok()
        .and_then(|v| {
            v.get("transaction_id")
                .and_then(Value::as_str)
                .and_then(|s| s.parse::<Uuid>().ok())
        });
    let span = tracing::info_span!("poll", transaction_id = %id.map(|i| i.to_string()).unwrap_or_default());
    async move {
        let result = match id {
            Some(id) => run(&shared, id).await,
            None => {
                tracing::error!("wake-up message without a transaction id; dropped");
                Ok(())
            }
        };
        let settled = match result {
            Ok(()) => delivery.ack(BasicAckOptions::default()).await,
            Err(e) => {
                tracing::error!(error = %e, "poll failed; handing the wake-up back");
                delivery
                    .nack(BasicNackOptions {
                        requeue: true,
                        ..Default::default()
                    })
                    .await
            }
        };
        if let Err(e) = settled {
            tracing::warn!(error = %e, "could not settle the wake-up");
        }
        shared.outbox_wakeup.notify_one();
    }
    .instrument(span)
    .await
}

async fn run(shared: &Shared, id: Uuid) -> Result<(), RelayError> {
    let job = match until_done("claim poll", || shared.store.claim_poll(id, POLL_LEASE)).await? {
        Due::Now(job) => job,
        Due::Later(wait) => return wake(shared, "csq", id, wait).await,
        Due::Gone => return Ok(()),
    };
    let (Some(terminal_id), Some(operator_id), Some(local_reference)) =
        (job.terminal_id, job.operator_id, job.local_reference)
    else {
        return Err(RelayError::Corrupt(
            "polled transaction without CSQ references".into(),
        ));
    };
    let (answer, exchange) = shared
        .csq
        .additional_data(terminal_id, operator_id, local_reference)
        .await;
    until_done("record exchange", || {
        shared.store.record_exchange(id, &exchange)
    })
    .await?;
    let reference = PurchaseRef {
        terminal_id,
        operator_id,
        local_reference,
        product_id: job
            .partial
            .as_ref()
            .and_then(|p| p.get("product_id"))
            .and_then(Value::as_str),
    };
    let decision = answer.map(|a| csq::purchase_decision(&a, reference));
    let outcome = match (job.purpose, decision) {
        (
            _,
            Ok(Decision::Final {
                status,
                result,
                error,
            }),
        ) => Some(finish(&job, status, result, error)),
        (Purpose::Resolve, Err(CallError::Refused { status: 404, .. })) if job.past_deadline => {
            Some(finish(
                &job,
                Status::Failed,
                None,
                Some(error(
                    "not_applied",
                    "the provider has no record of this purchase: nothing was bought",
                )),
            ))
        }
        (Purpose::Resolve, _) if job.past_deadline => Some(finish(
            &job,
            Status::Failed,
            None,
            Some(error(
                "outcome_unresolved",
                "the provider never confirmed or denied the purchase before the deadline; check with the provider",
            )),
        )),
        (Purpose::AdditionalData, _) if job.past_deadline => Some(finish(
            &job,
            Status::Expired,
            job.partial.clone(),
            Some(error(
                "additional_data_not_received",
                "the voucher was sold but its additional data never arrived; `result` has what the sale returned",
            )),
        )),
        _ => None,
    };
    match outcome {
        Some(outcome) => {
            let stored = until_done("complete", || {
                shared.store.complete(id, job.state, &outcome)
            })
            .await?;
            if stored {
                tracing::info!(
                    status = outcome.status.as_str(),
                    purpose = job.purpose.as_str(),
                    attempt = job.attempt,
                    "poll finished the transaction"
                );
                metrics::counter!("voucher_outcomes_total", "provider" => "csq", "kind" => job.kind.clone(), "status" => outcome.status.as_str()).increment(1);
            }
            Ok(())
        }
        None => {
            let wait = wait_before(shared, job.attempt + 1);
            tracing::info!(
                purpose = job.purpose.as_str(),
                attempt = job.attempt,
                next_in_ms = wait.as_millis() as u64,
                "not final yet; polling again"
            );
            until_done("reschedule poll", || shared.store.reschedule_poll(id, wait)).await?;
            wake(shared, "csq", id, wait).await
        }
    }
}

fn error(code: &str, message: &str) -> OutcomeError {
    OutcomeError {
        code: code.into(),
        message: message.into(),
        provider_code: None,
    }
}

fn finish(
    job: &PollJob,
    status: Status,
    result: Option<Value>,
    error: Option<OutcomeError>,
) -> Outcome {
    Outcome::new(
        Some(job.command_id.clone()),
        Some(job.source.clone()),
        &job.kind,
        &job.provider,
        status,
        result,
        error,
    )
}

/// Republishes the wake-ups of overdue polls until shutdown.
pub async fn sweep(shared: Arc<Shared>, mut shutdown: Shutdown) {
    loop {
        tokio::select! {
            _ = shutdown.wait() => return,
            _ = tokio::time::sleep(SWEEP_EVERY) => {}
        }
        match shared.store.overdue_polls(OVERDUE).await {
            Ok(ids) => {
                for id in ids {
                    tracing::warn!(transaction_id = %id, "poll wake-up was lost; publishing it again");
                    if let Err(e) = wake(&shared, "csq", id, Duration::ZERO).await {
                        tracing::warn!(transaction_id = %id, error = %e, "could not republish the wake-up");
                    }
                }
            }
            Err(e) => tracing::warn!(error = %e, "cannot read overdue polls"),
        }
    }
}
