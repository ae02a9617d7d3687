//! The poller: work that waits on a provider, driven by the `polls` table.
//!
//! A wake-up message (`<provider>.poll`, body `{"transaction_id": …}`) rides a delay tier and
//! comes back on `polls.<provider>`. The worker claims the poll row, lets the provider ask
//! once, and either finishes the transaction, starts it waiting (an unknown outcome found to
//! be a sale with more to come), or reschedules it: the next wait grows through the delay
//! tiers, never past the deadline. Nothing sleeps in a worker, so a poll survives restarts
//! of the relay and of the broker; the sweeper republishes wake-ups that were lost.

use std::sync::Arc;
use std::time::Duration;

use lapin::message::Delivery;
use tracing::Instrument;
use uuid::Uuid;

use super::follow_up::{self, Wake, woken_transaction};
use super::shared::{Shared, count_outcome};
use crate::error::{ErrorClass, RelayError};
use crate::providers::work::PollStep;
use crate::retry::until_done;
use crate::store::polls::{ClaimedPoll, Due};
use crate::store::resend::Resending;

/// Handles one poll wake-up. A poll that fails the same way every time is parked for
/// operators rather than looping through the dead-letter queue forever. A wake-up for a
/// provider this relay does not run is dead-lettered, the poll left as it is.
pub async fn run_poll_wake_up(
    shared: Arc<Shared>,
    delivery: Arc<Delivery>,
) -> Result<(), RelayError> {
    let id = woken_transaction(&delivery);
    let span = tracing::error_span!("poll", transaction_id = %id.map(|i| i.to_string()).unwrap_or_default());
    async move {
        let Some(id) = id else {
            tracing::error!("wake-up message without a transaction id; dropped");
            return Ok(());
        };
        match poll_once(&shared, id).await {
            Err(e @ RelayError::Poison(_)) => Err(e),
            Err(e) if e.class() != ErrorClass::Retryable => {
                tracing::error!(error = %e, "poll parked for operators");
                metrics::counter!("voucher_polls_parked_total").increment(1);
                if let Err(e) = shared.store.park_poll(id, &e.to_string()).await {
                    tracing::error!(error = %e, "could not park the poll");
                }
                Ok(())
            }
            other => other,
        }
    }
    .instrument(span)
    .await
}

async fn poll_once(shared: &Shared, id: Uuid) -> Result<(), RelayError> {
    let lease = shared.longest_lease();
    let claimed = match until_done("claim poll", || shared.store.claim_poll(id, lease)).await? {
        Due::Now(claimed) => claimed,
        Due::Later { wait, provider } => {
            return follow_up::wake_later(shared, &provider, Wake::Poll, id, wait).await;
        }
        Due::Gone => return Ok(()),
    };
    let name = &claimed.job.subject.provider;
    let polling = shared
        .provider(name)?
        .polling()
        .ok_or_else(|| RelayError::Poison(format!("provider {name} does not poll")))?;
    let job = &claimed.job;
    let (step, exchanges) = polling.poll(job).await;
    for exchange in &exchanges {
        until_done("record exchange", || {
            shared.store.record_exchange(id, exchange)
        })
        .await?;
    }
    match step {
        PollStep::Again => reschedule(shared, &claimed, None).await,
        PollStep::AgainAfter(wait) => reschedule(shared, &claimed, Some(wait)).await,
        PollStep::Resend(why) => {
            let budget = shared.config.recovery.resend_budget;
            let again = Resending {
                from: claimed.state,
                budget,
                why: &why,
                subject: &job.subject,
                past_budget: None,
            };
            let resend =
                until_done("send again", || shared.store.resend_unapplied(id, &again)).await?;
            follow_up::act_on_send_again(shared, resend).await
        }
        PollStep::Park(why) => Err(RelayError::Corrupt(why)),
        PollStep::Wait(waiting) => {
            follow_up::start_waiting(shared, id, claimed.state, *waiting, &job.subject).await
        }
        PollStep::Finish {
            status,
            result,
            error,
            event_type,
        } => {
            let outcome = job.subject.outcome(status, result, error);
            let outcome = match event_type {
                Some(t) => outcome.with_type(t),
                None => outcome,
            };
            let stored = until_done("complete", || {
                shared.store.complete(id, claimed.state, &outcome)
            })
            .await?;
            if stored {
                count_outcome(&outcome, "poll finished the transaction");
            }
            Ok(())
        }
    }
}

/// Not final yet: poll again after `wait` (the provider's choice) or else the next delay
/// tier, but never past the deadline, so the last poll comes on time.
async fn reschedule(
    shared: &Shared,
    claimed: &ClaimedPoll,
    wait: Option<Duration>,
) -> Result<(), RelayError> {
    let job = &claimed.job;
    let wait = wait
        .unwrap_or_else(|| shared.tiers().wait_before(job.attempt + 1))
        .min(claimed.deadline_left.max(Duration::from_millis(100)));
    tracing::info!(
        purpose = %job.purpose,
        attempt = job.attempt,
        next_in_ms = wait.as_millis() as u64,
        "not final yet; polling again"
    );
    let id = job.transaction_id;
    let still_ours = until_done("reschedule poll", || {
        shared.store.reschedule_poll(id, claimed.token, wait)
    })
    .await?;
    if !still_ours {
        tracing::warn!("another worker took this poll over; leaving it to them");
        return Ok(());
    }
    follow_up::wake_later(shared, &job.subject.provider, Wake::Poll, id, wait).await
}
