//! The advice worker: store-and-forward. Reversals and confirmations are retried here,
//! until the provider answers them finally.
//!
//! A wake-up message (`{"transaction_id": …}`) arrives on `advice.<provider>`, straight
//! after the advice was recorded or back from a delay tier. The worker claims the
//! transaction's first unsettled advice, sends it, and records what the provider's
//! judgement of the answer says:
//! - settled: a reversal's answer makes the command's outcome (`reversed`, or `failed` with
//!   why); the transaction's next advice, if any, goes right after;
//! - again: the next attempt is scheduled with exponential backoff and jitter, and a new
//!   wake-up is published to the matching delay tier (an explicit republish: the delivery
//!   itself is acked, so the quorum delivery limit never counts retries);
//! - past the retry budget, or a message repeating cannot help: the advice is parked, its
//!   full record goes to the provider's parked queue, and a metric and an error log say so.
//!
//! Nothing sleeps in a worker. A lost wake-up (killed worker, broker restart) is found by
//! the sweeper from the `advices` table and published again.

use std::sync::Arc;

use lapin::message::Delivery;
use serde_json::Value;
use tracing::Instrument;
use uuid::Uuid;

use super::follow_up::{self, Wake, woken_transaction};
use super::shared::{Shared, count_outcome};
use crate::broker::publisher::json_properties;
use crate::command::Outcome;
use crate::error::RelayError;
use crate::mask::mask_json;
use crate::providers::work::{AdviceJudgement, FinalAnswer};
use crate::providers::{Advices, CallError, Exchange};
use crate::retry::{Backoff, Jitter, until_done};
use crate::store::TxState;
use crate::store::advices::{AdviceDue, ClaimedAdvice};
use crate::store::resend::SendAgain;

/// Handles one advice wake-up. Always acked: the advice row is the truth, and the sweeper
/// wakes any advice whose wake-up was lost, so a failed attempt never loops through the
/// dead-letter queue.
pub async fn run_advice_wake_up(
    shared: Arc<Shared>,
    delivery: Arc<Delivery>,
) -> Result<(), RelayError> {
    let id = woken_transaction(&delivery);
    let span = tracing::error_span!("advice", transaction_id = %id.map(|i| i.to_string()).unwrap_or_default());
    async move {
        let Some(id) = id else {
            tracing::error!("advice wake-up without a transaction id; dropped");
            return Ok(());
        };
        if let Err(e) = send_due(&shared, id).await {
            tracing::error!(error = %e, class = ?e.class(), "advice attempt failed; the sweeper wakes it again");
        }
        Ok(())
    }
    .instrument(span)
    .await
}

/// Sends the transaction's due advices in order, for as long as each is answered finally.
pub async fn send_due(shared: &Shared, transaction_id: Uuid) -> Result<(), RelayError> {
    // No other worker repeats the advice while this one may still be sending it.
    let lease = shared.longest_lease();
    loop {
        let claimed = match until_done("claim advice", || {
            shared.store.claim_advice(transaction_id, lease)
        })
        .await?
        {
            AdviceDue::Now(claimed) => claimed,
            AdviceDue::Later { wait, provider } => {
                return follow_up::wake_later(
                    shared,
                    &provider,
                    Wake::Advice,
                    transaction_id,
                    wait,
                )
                .await;
            }
            AdviceDue::Gone => return Ok(()),
        };
        if !attempt(shared, &claimed).await? {
            return Ok(());
        }
    }
}

/// One attempt of one advice. True if it was answered finally.
async fn attempt(shared: &Shared, claimed: &ClaimedAdvice) -> Result<bool, RelayError> {
    let job = &claimed.job;
    let advices = shared
        .provider(&job.provider)?
        .advices()
        .ok_or_else(|| RelayError::Corrupt(format!("provider {} has no advices", job.provider)))?;
    let body = match &job.body {
        Some(b) => b.clone(),
        None => {
            let b = advices.advice_body(job);
            until_done("keep advice body", || {
                shared.store.keep_advice_body(job.id, &b)
            })
            .await?
        }
    };
    let (answer, exchange) = advices.send_advice(job, &body).await;
    until_done("record exchange", || {
        shared.store.record_exchange(job.transaction_id, &exchange)
    })
    .await?;
    match advices.judge_advice(job, &answer, exchange.status) {
        AdviceJudgement::Again(reason) => {
            repeat_later(shared, advices, claimed, &reason).await?;
            Ok(false)
        }
        AdviceJudgement::Park(why) => {
            park(shared, advices, claimed, &why).await?;
            Ok(false)
        }
        AdviceJudgement::Settled(answer_is) => {
            settle(shared, claimed, answer_is, &answer, &exchange).await
        }
    }
}

/// What recording an advice's final answer came to.
enum Settled {
    /// Another worker took the advice over; nothing was recorded.
    Overtaken,
    /// Recorded, with the outcome it made of a command waiting for it, if any.
    Outcome(Option<Box<Outcome>>),
    /// Recorded; the reversal found its request never received, and the command was sent
    /// again (or, past its budget, ended), if it still waited.
    SentAgain(Option<SendAgain>),
}

/// Records the final answer, and with it the outcome a reversal makes of a command that
/// waits for it. True unless another worker took the advice over.
async fn settle(
    shared: &Shared,
    claimed: &ClaimedAdvice,
    s: FinalAnswer,
    answer: &Result<Value, CallError>,
    exchange: &Exchange,
) -> Result<bool, RelayError> {
    let job = &claimed.job;
    let outcome = s
        .outcome
        .filter(|_| claimed.tx_state == TxState::Reversing)
        .map(|(status, result, error)| job.subject.outcome(status, Some(result), Some(error)));
    let answer_body = match answer {
        Ok(v) => Some(mask_json(v)),
        Err(CallError::Refused { body, .. }) => Some(mask_json(body)),
        Err(_) => None,
    };
    let settled = match (s.never_received, outcome) {
        // Nothing was applied: the command goes again rather than failing.
        (true, Some(outcome)) => {
            let budget = shared.config.recovery.resend_budget;
            let resent = until_done("settle advice and send again", || {
                shared.store.settle_advice_and_resend(
                    claimed,
                    exchange.status,
                    answer_body.as_ref(),
                    &outcome,
                    budget,
                )
            })
            .await?;
            resent.map_or(Settled::Overtaken, Settled::SentAgain)
        }
        (_, outcome) => {
            let stored = until_done("settle advice", || {
                shared.store.settle_advice(
                    claimed,
                    exchange.status,
                    answer_body.as_ref(),
                    outcome.as_ref(),
                )
            })
            .await?;
            if stored {
                Settled::Outcome(outcome.map(Box::new))
            } else {
                Settled::Overtaken
            }
        }
    };
    if let Settled::Overtaken = settled {
        tracing::warn!(advice_id = %job.id, "another worker took this advice over");
        return Ok(false);
    }
    metrics::counter!("voucher_advices_settled_total", "provider" => job.provider.clone(), "kind" => job.kind.as_str(), "verdict" => s.verdict).increment(1);
    if s.accepted {
        tracing::info!(advice_id = %job.id, operation = %job.operation, kind = job.kind.as_str(), attempt = job.attempt, status = exchange.status, waited_s = claimed.age_secs as u64, "advice accepted");
    } else {
        tracing::warn!(advice_id = %job.id, operation = %job.operation, kind = job.kind.as_str(), attempt = job.attempt, status = exchange.status, verdict = s.verdict, "advice answered finally with a refusal");
    }
    match settled {
        Settled::SentAgain(resent) => follow_up::act_on_send_again(shared, resent).await?,
        Settled::Outcome(Some(o)) => count_outcome(&o, "reversal decided the outcome"),
        _ => {}
    }
    Ok(true)
}

/// Not final: the next attempt after the provider's backoff, or parked past the budget.
async fn repeat_later(
    shared: &Shared,
    advices: &dyn Advices,
    claimed: &ClaimedAdvice,
    reason: &str,
) -> Result<(), RelayError> {
    let job = &claimed.job;
    if claimed.past_budget {
        let why = format!("retry budget used up; last error: {reason}");
        return park(shared, advices, claimed, &why).await;
    }
    let policy = advices.policy();
    let backoff = Backoff {
        base: policy.backoff_base,
        cap: policy.backoff_cap,
        // Between half and all of it, so advices that failed together do not retry together.
        jitter: Jitter::Between(0.5, 1.0),
    };
    let wait = backoff.wait(job.attempt);
    tracing::warn!(advice_id = %job.id, operation = %job.operation, kind = job.kind.as_str(), attempt = job.attempt, error = %reason, next_in_ms = wait.as_millis() as u64, "advice not answered finally; repeating it later");
    metrics::counter!("voucher_advice_retries_total", "provider" => job.provider.clone(), "kind" => job.kind.as_str()).increment(1);
    let still_ours = until_done("reschedule advice", || {
        shared
            .store
            .retry_advice(job.id, claimed.token, reason, wait)
    })
    .await?;
    if still_ours {
        follow_up::wake_later(
            shared,
            &job.provider,
            Wake::Advice,
            job.transaction_id,
            wait,
        )
        .await?;
    }
    Ok(())
}

/// Sets an advice aside for operators: the log line and the metric first (so the alert
/// fires even if what follows fails), then the row, then its full record on the parked
/// queue. `voucher-relay advices parked` lists the row whatever became of the message.
async fn park(
    shared: &Shared,
    advices: &dyn Advices,
    claimed: &ClaimedAdvice,
    why: &str,
) -> Result<(), RelayError> {
    let job = &claimed.job;
    tracing::error!(advice_id = %job.id, operation = %job.operation, kind = job.kind.as_str(), attempts = job.attempt, waited_s = claimed.age_secs as u64, error = %why, "advice parked for operators");
    metrics::counter!("voucher_advices_parked_total", "provider" => job.provider.clone(), "kind" => job.kind.as_str()).increment(1);
    let record = until_done("park advice", || shared.store.park_advice(claimed, why)).await?;
    let Some(record) = record else {
        tracing::warn!(advice_id = %job.id, "not parked after all: another worker took the advice over");
        return Ok(());
    };
    let queue = shared.config.name(advices.parked_queue());
    let bytes = serde_json::to_vec(&record).unwrap_or_default();
    until_done("publish parked advice", || {
        shared
            .publisher
            .publish_routed("", &queue, &bytes, json_properties())
    })
    .await
}
