//! The advice worker: store-and-forward of Electrum confirmations and reversals.
//!
//! A wake-up message (`{"transaction_id": …}`) arrives on `advice.<provider>`, straight
//! after the advice was recorded or back from a delay tier. The worker claims the
//! transaction's first unsettled advice, sends it, and records the answer:
//! - final (anything but a 5xx, a timeout or "not sent"): the advice is settled, and a
//!   reversal's answer makes the command's outcome (`reversed`, or `failed` with why);
//!   the transaction's next advice, if any, goes right after;
//! - not final: the next attempt is scheduled with exponential backoff and jitter, and a
//!   new wake-up is published to the matching delay tier (an explicit republish: the
//!   delivery itself is acked, so the quorum delivery limit never counts retries);
//! - past the retry budget: the advice is parked, its full record goes to `advice.parked`,
//!   and a metric and an error log say so.
//!
//! Nothing sleeps in a worker. A lost wake-up (killed worker, broker restart) is found by
//! the sweeper from the `advices` table and published again.

use std::sync::Arc;
use std::time::Duration;

use lapin::message::Delivery;
use lapin::options::BasicAckOptions;
use rand::Rng;
use serde_json::json;
use tracing::Instrument;
use uuid::Uuid;

use super::poller;
use super::relay::Shared;
use super::retry::until_done;
use crate::broker::Publisher;
use crate::broker::publisher::json_properties;
use crate::command::{Outcome, OutcomeError, Status};
use crate::config::Config;
use crate::error::RelayError;
use crate::providers::electrum::mapping::{self, AdviceVerdict, RelayFault, advice_verdict};
use crate::providers::electrum::params::Tender;
use crate::providers::electrum::{AdviceKind, Operation};
use crate::store::advices::{AdviceDue, AdviceJob};
use crate::store::transactions::TxState;

/// Publishes a wake-up for the advices of `transaction_id` that is delivered at once,
/// retrying while the broker is away.
pub async fn kick(shared: &Shared, transaction_id: Uuid) -> Result<(), RelayError> {
    until_done("advice wake-up", || {
        publish_wake_up(&shared.publisher, &shared.config, transaction_id)
    })
    .await
}

/// One attempt at the immediate wake-up, straight to the advice queue; also what
/// `voucher-relay advices replay` sends to a running relay.
pub async fn publish_wake_up(
    publisher: &Publisher,
    config: &Config,
    transaction_id: Uuid,
) -> Result<(), RelayError> {
    let queue = config.name(&config.providers.electrum.advice_queue);
    let body = poller::wake_up_body(transaction_id);
    publisher
        .publish_routed("", &queue, &body, json_properties())
        .await
}

/// Publishes a wake-up that arrives after about `wait`, through the delay tiers.
pub async fn wake(
    shared: &Shared,
    provider: &str,
    transaction_id: Uuid,
    wait: Duration,
) -> Result<(), RelayError> {
    poller::publish_delayed(
        shared,
        &format!("{provider}.advice"),
        &poller::wake_up_body(transaction_id),
        wait,
    )
    .await
}

/// The wait before attempt `attempt + 1`: the base doubled per attempt up to the cap, then
/// drawn between half and all of it, so advices that failed together do not retry together.
pub fn backoff(base: Duration, cap: Duration, attempt: i32) -> Duration {
    let doublings = u32::try_from(attempt.saturating_sub(1))
        .unwrap_or(0)
        .min(30);
    let full = base.saturating_mul(1u32 << doublings).min(cap);
    full.mul_f64(rand::rng().random_range(0.5..=1.0))
}

/// Handles one wake-up delivery.
pub async fn handle(shared: Arc<Shared>, delivery: Delivery) {
    let id = poller::woken_transaction(&delivery);
    let span = tracing::error_span!("advice", transaction_id = %id.map(|i| i.to_string()).unwrap_or_default());
    async move {
        let result = match id {
            Some(id) => run(&shared, id).await,
            None => {
                tracing::error!("advice wake-up without a transaction id; dropped");
                Ok(())
            }
        };
        // Always acked: the advice row is the truth, and the sweeper wakes any advice whose
        // wake-up was lost, so a failed attempt never loops through the dead-letter queue.
        if let Err(e) = result {
            tracing::error!(error = %e, class = ?e.class(), "advice attempt failed; the sweeper wakes it again");
        }
        let settled = delivery.ack(BasicAckOptions::default()).await;
        if let Err(e) = settled {
            tracing::warn!(error = %e, "could not settle the advice wake-up");
        }
        shared.outbox_wakeup.notify_one();
    }
    .instrument(span)
    .await
}

/// Sends the transaction's advices in order, for as long as each is answered finally.
pub async fn run(shared: &Shared, transaction_id: Uuid) -> Result<(), RelayError> {
    let cfg = &shared.config.providers.electrum;
    // No other worker repeats the advice while this one may still be sending it.
    let lease = cfg.limits().lease();
    loop {
        let job = match until_done("claim advice", || {
            shared.store.claim_advice(transaction_id, lease)
        })
        .await?
        {
            AdviceDue::Now(job) => job,
            AdviceDue::Later(wait) => return wake(shared, "electrum", transaction_id, wait).await,
            AdviceDue::Gone => return Ok(()),
        };
        if !attempt(shared, &job).await? {
            return Ok(());
        }
    }
}

/// One attempt of one advice. True if it was answered finally.
async fn attempt(shared: &Shared, job: &AdviceJob) -> Result<bool, RelayError> {
    let (Some(operation), Some(kind)) = (
        Operation::parse(&job.operation),
        AdviceKind::parse(&job.kind),
    ) else {
        return Err(RelayError::Corrupt(format!(
            "advice {} has operation {:?} kind {:?}",
            job.id, job.operation, job.kind
        )));
    };
    let electrum = &shared.electrum;
    let body = match &job.body {
        Some(b) => b.clone(),
        None => {
            let tender: Option<Tender> = job.tender.as_ref().and_then(|t| {
                Some(Tender {
                    amount_minor: i32::try_from(t["amount_minor"].as_i64()?).ok()?,
                    currency: t["currency"].as_str()?.to_string(),
                })
            });
            let b = electrum.advice_body(
                job.id,
                job.request_id,
                kind,
                job.reversal_reason.as_deref(),
                tender.as_ref(),
            );
            until_done("keep advice body", || {
                shared.store.keep_advice_body(job.id, &b)
            })
            .await?
        }
    };
    let (answer, exchange) = electrum.send_advice(operation, kind, &body).await;
    until_done("record exchange", || {
        shared.store.record_exchange(job.transaction_id, &exchange)
    })
    .await?;
    let verdict = advice_verdict(&answer, exchange.status);
    let log = |msg: &str| {
        tracing::info!(
            advice_id = %job.id,
            operation = %job.operation,
            kind = %job.kind,
            attempt = job.attempt,
            status = exchange.status,
            waited_s = job.age_secs as u64,
            "{msg}"
        );
    };
    let fault = match &verdict {
        AdviceVerdict::Refused { status, error_type } => {
            mapping::relay_fault(*status, error_type.as_deref())
        }
        _ => None,
    };
    let reason = match verdict {
        AdviceVerdict::Again(reason) => reason,
        AdviceVerdict::Refused { status, .. } if fault == Some(RelayFault::Credentials) => {
            tracing::error!(advice_id = %job.id, status, "Electrum refused the relay's credentials; check client_id and ELECTRUM_PASSWORD (the advice is repeated meanwhile)");
            format!("credentials refused (HTTP {status})")
        }
        AdviceVerdict::Refused { status, .. } if fault == Some(RelayFault::Message) => {
            let why = format!(
                "Electrum refused the relay's message as malformed (HTTP {status} FORMAT_ERROR): fix the relay, then `advices replay --rebuild`"
            );
            park(shared, job, &why).await?;
            return Ok(false);
        }
        verdict => {
            let outcome = (kind == AdviceKind::Reversal && job.tx_state == TxState::Reversing)
                .then(|| reversal_outcome(job, &verdict))
                .flatten();
            let answer_body = match &answer {
                Ok(v) => Some(crate::mask::mask_json(v)),
                Err(crate::providers::CallError::Refused { body, .. }) => {
                    Some(crate::mask::mask_json(body))
                }
                Err(_) => None,
            };
            let settled = until_done("settle advice", || {
                shared.store.settle_advice(
                    job,
                    exchange.status,
                    answer_body.as_ref(),
                    outcome.as_ref(),
                )
            })
            .await?;
            if !settled {
                tracing::warn!(advice_id = %job.id, "another worker took this advice over");
                return Ok(false);
            }
            metrics::counter!("voucher_advices_settled_total", "provider" => job.provider.clone(), "kind" => job.kind.clone(), "verdict" => verdict_name(&verdict)).increment(1);
            match &verdict {
                AdviceVerdict::Accepted => log("advice accepted"),
                _ => {
                    tracing::warn!(advice_id = %job.id, operation = %job.operation, kind = %job.kind, attempt = job.attempt, status = exchange.status, verdict = verdict_name(&verdict), "advice answered finally with a refusal")
                }
            }
            if let Some(o) = &outcome {
                tracing::info!(status = o.status.as_str(), event_id = %o.event_id, "reversal decided the outcome");
                metrics::counter!("voucher_outcomes_total", "provider" => job.provider.clone(), "kind" => job.tx_kind.clone(), "status" => o.status.as_str()).increment(1);
            }
            return Ok(true);
        }
    };
    if job.past_budget {
        park(
            shared,
            job,
            &format!("retry budget used up; last error: {reason}"),
        )
        .await?;
        return Ok(false);
    }
    let cfg = &shared.config.providers.electrum;
    let wait = backoff(
        Duration::from_millis(cfg.advice_backoff_base_ms),
        Duration::from_millis(cfg.advice_backoff_cap_ms),
        job.attempt,
    );
    tracing::warn!(advice_id = %job.id, operation = %job.operation, kind = %job.kind, attempt = job.attempt, error = %reason, next_in_ms = wait.as_millis() as u64, "advice not answered finally; repeating it later");
    metrics::counter!("voucher_advice_retries_total", "provider" => job.provider.clone(), "kind" => job.kind.clone()).increment(1);
    let still_ours = until_done("reschedule advice", || {
        shared.store.retry_advice(job.id, job.token, &reason, wait)
    })
    .await?;
    if still_ours {
        wake(shared, &job.provider, job.transaction_id, wait).await?;
    }
    Ok(false)
}

/// Sets an advice aside for operators: the log line and the metric first (so the alert
/// fires even if what follows fails), then the row, then its full record on `advice.parked`.
/// `voucher-relay advices parked` lists the row whatever became of the message.
async fn park(shared: &Shared, job: &AdviceJob, why: &str) -> Result<(), RelayError> {
    tracing::error!(advice_id = %job.id, operation = %job.operation, kind = %job.kind, attempts = job.attempt, waited_s = job.age_secs as u64, error = %why, "advice parked for operators on advice.parked");
    metrics::counter!("voucher_advices_parked_total", "provider" => job.provider.clone(), "kind" => job.kind.clone()).increment(1);
    let record = until_done("park advice", || shared.store.park_advice(job, why)).await?;
    let Some(record) = record else {
        tracing::warn!(advice_id = %job.id, "not parked after all: another worker took the advice over");
        return Ok(());
    };
    let queue = shared
        .config
        .name(&shared.config.providers.electrum.parked_queue);
    let bytes = serde_json::to_vec(&record).unwrap_or_default();
    until_done("publish parked advice", || {
        shared
            .publisher
            .publish_routed("", &queue, &bytes, json_properties())
    })
    .await
}

fn verdict_name(v: &AdviceVerdict) -> &'static str {
    match v {
        AdviceVerdict::Accepted => "accepted",
        AdviceVerdict::NotFound => "not_found",
        AdviceVerdict::Refused { .. } => "refused",
        AdviceVerdict::Again(_) => "again",
    }
}

/// The command's outcome once its reversal was answered finally; none while it was not.
fn reversal_outcome(job: &AdviceJob, verdict: &AdviceVerdict) -> Option<Outcome> {
    let subject = poller::Subject {
        command_id: &job.command_id,
        source: &job.source,
        kind: &job.tx_kind,
        provider: &job.provider,
    };
    let result = json!({"request_id": job.request_id, "reversal_reason": job.reversal_reason, "advice_id": job.id});
    let error = |code: &str, message: String, provider_code: Option<String>| {
        Some(OutcomeError {
            code: code.into(),
            message,
            provider_code,
        })
    };
    let already_reversed = matches!(verdict, AdviceVerdict::Refused { error_type: Some(t), .. } if t.ends_with("_ALREADY_REVERSED"));
    let outcome = match verdict {
        // Reversed before (an earlier repetition whose answer was lost): the same end.
        _ if already_reversed => subject.outcome(
            Status::Reversed,
            Some(result),
            error(
                "reversed",
                format!(
                    "no final answer came for the {}; Electrum had already reversed it",
                    job.operation
                ),
                None,
            ),
        ),
        AdviceVerdict::Accepted => subject.outcome(
            Status::Reversed,
            Some(result),
            error(
                "reversed",
                format!(
                    "no final answer came for the {}; it was reversed and Electrum accepted the reversal",
                    job.operation
                ),
                None,
            ),
        ),
        AdviceVerdict::NotFound => subject.outcome(
            Status::Failed,
            Some(result),
            error(
                "not_received",
                format!(
                    "Electrum never received the {}: nothing was applied",
                    job.operation
                ),
                Some("UNABLE_TO_LOCATE_RECORD".into()),
            ),
        ),
        AdviceVerdict::Refused { status, error_type } => subject.outcome(
            Status::Failed,
            Some(result),
            error(
                "reversal_refused",
                format!(
                    "Electrum refused the reversal (HTTP {status}): the {} stands as Electrum recorded it; check with Electrum",
                    job.operation
                ),
                error_type.clone(),
            ),
        ),
        AdviceVerdict::Again(_) => return None,
    };
    Some(outcome)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn job() -> AdviceJob {
        AdviceJob {
            id: Uuid::now_v7(),
            transaction_id: Uuid::now_v7(),
            token: Uuid::now_v7(),
            provider: "electrum".into(),
            operation: "redeem".into(),
            kind: "reversal".into(),
            request_id: Uuid::now_v7(),
            reversal_reason: Some("TIMEOUT".into()),
            tender: None,
            body: None,
            attempt: 3,
            past_budget: false,
            age_secs: 1.0,
            tx_state: TxState::Reversing,
            command_id: "c-1".into(),
            source: "pos-1".into(),
            tx_kind: "redeem".into(),
        }
    }

    #[test]
    fn a_reversals_final_answer_makes_the_outcome() {
        let refused = |t: &str| AdviceVerdict::Refused {
            status: 400,
            error_type: Some(t.into()),
        };
        let cases = [
            (AdviceVerdict::Accepted, Status::Reversed, "reversed"),
            (AdviceVerdict::NotFound, Status::Failed, "not_received"),
            (
                refused("REDEMPTION_ALREADY_CONFIRMED"),
                Status::Failed,
                "reversal_refused",
            ),
            (
                refused("REDEMPTION_ALREADY_REVERSED"),
                Status::Reversed,
                "reversed",
            ),
        ];
        for (verdict, status, code) in cases {
            let o = reversal_outcome(&job(), &verdict).expect("a final answer");
            assert_eq!(o.status, status, "{verdict:?}");
            assert_eq!(o.error.unwrap().code, code, "{verdict:?}");
            assert_eq!(o.kind, "redeem");
            assert_eq!(o.command_id.as_deref(), Some("c-1"));
        }
        assert!(reversal_outcome(&job(), &AdviceVerdict::Again("HTTP 503".into())).is_none());
    }

    #[test]
    fn backoff_doubles_up_to_the_cap_with_jitter() {
        let base = Duration::from_secs(2);
        let cap = Duration::from_secs(60);
        for _ in 0..50 {
            let first = backoff(base, cap, 1);
            assert!(
                first >= Duration::from_secs(1) && first <= base,
                "{first:?}"
            );
            let third = backoff(base, cap, 3);
            assert!(third >= Duration::from_secs(4) && third <= Duration::from_secs(8));
            let late = backoff(base, cap, 40);
            assert!(late >= Duration::from_secs(30) && late <= cap, "{late:?}");
        }
    }
}
