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
use lapin::options::BasicAckOptions;
use serde_json::{Value, json};
use tracing::Instrument;
use uuid::Uuid;

use super::relay::Shared;
use super::retry::until_done;
use crate::broker::publisher::json_properties;
use crate::command::{Outcome, OutcomeError, Status};
use crate::error::{ErrorClass, RelayError};
use crate::providers::csq::{self, Decision, PurchaseRef, flows};
use crate::providers::{CallError, Step};
use crate::shutdown::Shutdown;
use crate::store::polls::{Due, PollPlan, Purpose};
use crate::store::transactions::TxState;

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

/// Publishes a poll wake-up for `id` that arrives after about `wait`.
pub async fn wake(
    shared: &Shared,
    provider: &str,
    id: Uuid,
    wait: Duration,
) -> Result<(), RelayError> {
    publish_delayed(shared, &format!("{provider}.poll"), &wake_up_body(id), wait).await
}

/// Publishes `body` under `routing_key` through the delay tier that brings it back to
/// `voucher.retry` after about `wait`: the longest tier not longer than `wait` (the shortest
/// if `wait` is shorter). An early arrival finds its row not yet due and waits again.
pub async fn publish_delayed(
    shared: &Shared,
    routing_key: &str,
    body: &[u8],
    wait: Duration,
) -> Result<(), RelayError> {
    let tiers = &shared.config.delay_tiers;
    let tier = tiers
        .iter()
        .filter(|t| Duration::from_millis(t.ttl_ms) <= wait)
        .max_by_key(|t| t.ttl_ms)
        .or_else(|| tiers.iter().min_by_key(|t| t.ttl_ms))
        .ok_or_else(|| RelayError::Poison("no delay tier configured".into()))?;
    shared
        .publisher
        .publish_routed(
            &shared.config.name(&tier.name),
            routing_key,
            body,
            json_properties(),
        )
        .await
}

/// A wake-up message for the polls or advices of `id`.
pub fn wake_up_body(id: Uuid) -> Vec<u8> {
    serde_json::to_vec(&json!({"transaction_id": id})).unwrap_or_default()
}

/// The transaction a wake-up message (`{"transaction_id": …}`) is about.
pub fn woken_transaction(delivery: &Delivery) -> Option<Uuid> {
    serde_json::from_slice::<Value>(&delivery.data)
        .ok()
        .and_then(|v| {
            v.get("transaction_id")
                .and_then(Value::as_str)
                .and_then(|s| s.parse::<Uuid>().ok())
        })
}

/// Handles one wake-up delivery.
pub async fn handle(shared: Arc<Shared>, delivery: Delivery) {
    let id = woken_transaction(&delivery);
    let span = tracing::error_span!("poll", transaction_id = %id.map(|i| i.to_string()).unwrap_or_default());
    async move {
        let result = match id {
            Some(id) => run(&shared, id).await.map_err(|e| (id, e)),
            None => {
                tracing::error!("wake-up message without a transaction id; dropped");
                Ok(())
            }
        };
        let settled = match result {
            Ok(()) => delivery.ack(BasicAckOptions::default()).await,
            Err((_, e)) if e.class() == ErrorClass::Retryable => {
                super::executor::give_back(&delivery, &e).await
            }
            Err((id, e)) => {
                // It would fail the same way at every wake-up: set it aside for operators
                // rather than loop through the dead-letter queue forever.
                tracing::error!(error = %e, "poll parked for operators");
                metrics::counter!("voucher_polls_parked_total").increment(1);
                if let Err(e) = shared.store.park_poll(id, &e.to_string()).await {
                    tracing::error!(error = %e, "could not park the poll");
                }
                delivery.ack(BasicAckOptions::default()).await
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

/// Whose outcome an event is: everything an [`Outcome`] needs besides the result.
#[derive(Debug, Clone, Copy)]
pub struct Subject<'a> {
    pub command_id: &'a str,
    pub source: &'a str,
    pub kind: &'a str,
    pub provider: &'a str,
}

impl Subject<'_> {
    pub fn outcome(
        &self,
        status: Status,
        result: Option<Value>,
        error: Option<OutcomeError>,
    ) -> Outcome {
        Outcome::new(
            Some(self.command_id.to_string()),
            Some(self.source.to_string()),
            self.kind,
            self.provider,
            status,
            result,
            error,
        )
    }
}

/// Moves a sold transaction (from `sending`, or `unknown` once resolved) into waiting for
/// its additional data or its raffle draw, and wakes the poll that will finish it.
pub async fn start_waiting(
    shared: &Shared,
    id: Uuid,
    from: TxState,
    step: Step,
    subject: Subject<'_>,
) -> Result<(), RelayError> {
    let csq = &shared.config.providers.csq;
    let (to, partial, plan, progress) = match step {
        Step::AwaitData(partial) => {
            tracing::info!("sold; waiting for the additional data");
            let plan = PollPlan {
                purpose: Purpose::AdditionalData,
                first_in: wait_before(shared, 1),
                deadline_in: csq.additional_data_deadline(partial["operator_id"].as_i64()),
            };
            (TxState::AwaitingData, partial, plan, None)
        }
        Step::AwaitDraw { ticket, draw_in } => {
            tracing::info!(
                draw_in_s = draw_in.as_secs(),
                "raffle ticket issued; waiting for the draw"
            );
            let plan = PollPlan {
                purpose: Purpose::Finished,
                first_in: draw_in,
                deadline_in: draw_in + Duration::from_millis(csq.raffle_deadline_ms),
            };
            let progress = subject
                .outcome(Status::Pending, Some(ticket.clone()), None)
                .with_type("purchase.ticket_issued");
            (TxState::AwaitingDraw, ticket, plan, Some(progress))
        }
        // Only the two waiting steps reach here; naming the variant keeps voucher codes out
        // of the error text.
        _ => {
            return Err(RelayError::Corrupt(
                "start_waiting without a waiting step".into(),
            ));
        }
    };
    until_done("await provider", || {
        shared
            .store
            .await_provider(id, from, to, &partial, &plan, progress.as_ref())
    })
    .await?;
    wake(shared, subject.provider, id, plan.first_in).await
}

async fn run(shared: &Shared, id: Uuid) -> Result<(), RelayError> {
    let lease = shared.config.providers.csq.limits().lease();
    let job = match until_done("claim poll", || shared.store.claim_poll(id, lease)).await? {
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
    let csq = &shared.csq;
    let (answer, exchange) = match job.purpose {
        Purpose::Resolve | Purpose::AdditionalData => {
            csq.additional_data(terminal_id, operator_id, local_reference)
                .await
        }
        Purpose::Finished => {
            csq.finished(terminal_id, operator_id, local_reference)
                .await
        }
    };
    until_done("record exchange", || {
        shared.store.record_exchange(id, &exchange)
    })
    .await?;
    let subject = Subject {
        command_id: &job.command_id,
        source: &job.source,
        kind: &job.kind,
        provider: &job.provider,
    };
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
    let pending_with_data = answer.as_ref().is_ok_and(|a| {
        let receipt = &a["items"][0];
        receipt["finalstatus"] == 2 && receipt["hasAdditionalData"] == true
    });
    let decision = answer.map(|a| csq::purchase_decision(&a, reference));
    let outcome = match (job.purpose, decision) {
        // Resolved as sold, but the sale has more to come: wait for it like a fresh sale.
        (Purpose::Resolve, Ok(Decision::Final { status: Status::Succeeded, result: Some(r), .. }))
            if csq.is_raffle(operator_id) =>
        {
            let draw_in = flows::draw_in(&r);
            return start_waiting(shared, id, job.state, Step::AwaitDraw { ticket: r, draw_in }, subject).await;
        }
        (Purpose::Resolve, Ok(Decision::Final { status: Status::Succeeded, result: Some(r), .. }))
            if r["has_additional_data"] == true =>
        {
            return start_waiting(shared, id, job.state, Step::AwaitData(r), subject).await;
        }
        // Found, sold, and its data still being prepared: the sale happened.
        (Purpose::Resolve, _) if pending_with_data => {
            let partial = json!({"terminal_id": terminal_id, "operator_id": operator_id,
                                 "local_reference": local_reference, "has_additional_data": true});
            return start_waiting(shared, id, job.state, Step::AwaitData(partial), subject).await;
        }
        (Purpose::Resolve, Ok(Decision::Final { status, result, error })) => Some(subject.outcome(status, result, error)),
        // The sale is made: only its data or its result may finish it. Anything else
        // (a refusal, an rc, a decline) is asked again until the deadline.
        (Purpose::AdditionalData, Ok(Decision::Final { status: Status::Succeeded, result, .. })) => {
            Some(subject.outcome(Status::Succeeded, result, None))
        }
        (Purpose::Finished, Ok(Decision::Final { status: Status::Succeeded, result: Some(r), .. })) => {
            Some(subject.outcome(Status::Succeeded, Some(raffle_result(&r, job.partial.as_ref())), None).with_type("raffle.resolved"))
        }
        (Purpose::Resolve, Err(CallError::Refused { status: 404, .. })) if job.past_deadline => Some(subject.outcome(
            Status::Failed,
            None,
            Some(error("not_applied", "the provider has no record of this purchase: nothing was bought")),
        )),
        (Purpose::Resolve, _) if job.past_deadline => Some(subject.outcome(
            Status::Failed,
            None,
            Some(error(
                "outcome_unresolved",
                "the provider never confirmed or denied the purchase before the deadline; check with the provider",
            )),
        )),
        (Purpose::AdditionalData, _) if job.past_deadline => Some(subject.outcome(
            Status::Expired,
            job.partial.clone(),
            Some(error(
                "additional_data_not_received",
                "the voucher was sold but its additional data never arrived; `result` has what the sale returned",
            )),
        )),
        (Purpose::Finished, _) if job.past_deadline => Some(subject.outcome(
            Status::Expired,
            job.partial.clone(),
            Some(error(
                "raffle_result_not_received",
                "the ticket was sold but the draw's result never arrived; `result` has the ticket",
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
                metrics::counter!("voucher_outcomes_total", "provider" => job.provider.clone(), "kind" => job.kind.clone(), "status" => outcome.status.as_str()).increment(1);
            }
            Ok(())
        }
        None => {
            // Never sleep past the deadline: the last poll comes on time.
            let wait = wait_before(shared, job.attempt + 1)
                .min(job.deadline_left.max(Duration::from_millis(100)));
            tracing::info!(
                purpose = job.purpose.as_str(),
                attempt = job.attempt,
                next_in_ms = wait.as_millis() as u64,
                "not final yet; polling again"
            );
            let still_ours = until_done("reschedule poll", || {
                shared.store.reschedule_poll(id, job.token, wait)
            })
            .await?;
            if !still_ours {
                tracing::warn!("another worker took this poll over; leaving it to them");
                return Ok(());
            }
            wake(shared, &job.provider, id, wait).await
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

/// The `raffle.resolved` result: the ticket, win or loss, and the prize.
fn raffle_result(finished: &Value, ticket: Option<&Value>) -> Value {
    let data = &finished["additional_data"];
    let prize = data["prize"].as_str().filter(|p| !p.is_empty());
    json!({
        "ticket": finished["redeem_code"].as_str().or_else(|| ticket.and_then(|t| t["redeem_code"].as_str())),
        "result": data["raffle_result"],
        "prize": prize,
        "terminal_id": finished["terminal_id"],
        "operator_id": finished["operator_id"],
        "local_reference": finished["local_reference"],
        "draw_at": ticket.map(|t| t["additional_data"]["draw_at"].clone()),
    })
}

/// Until shutdown: republishes the wake-ups of overdue polls, and takes over transactions
/// whose worker died while sending and whose message went to the dead-letter queue.
pub async fn sweep(shared: Arc<Shared>, mut shutdown: Shutdown) {
    loop {
        tokio::select! {
            _ = shutdown.wait() => return,
            _ = tokio::time::sleep(SWEEP_EVERY) => {}
        }
        match shared.store.overdue_polls(OVERDUE).await {
            Ok(due) => {
                for (id, provider) in due {
                    tracing::warn!(transaction_id = %id, "poll wake-up was lost; publishing it again");
                    if let Err(e) = wake(&shared, &provider, id, Duration::ZERO).await {
                        tracing::warn!(transaction_id = %id, error = %e, "could not republish the wake-up");
                    }
                }
            }
            Err(e) => tracing::warn!(error = %e, "cannot read overdue polls"),
        }
        match shared.store.overdue_advices(OVERDUE).await {
            Ok(due) => {
                for (id, _provider) in due {
                    tracing::warn!(transaction_id = %id, "advice wake-up was lost; publishing it again");
                    if let Err(e) = super::advice::kick(&shared, id).await {
                        tracing::warn!(transaction_id = %id, error = %e, "could not republish the advice wake-up");
                    }
                }
            }
            Err(e) => tracing::warn!(error = %e, "cannot read overdue advices"),
        }
        let resolve = super::executor::resolve_plan(&shared);
        let budget = super::executor::reversal_budget(&shared);
        match shared.store.expire_leases(OVERDUE, &resolve, budget).await {
            Ok(moved) => {
                for (id, provider, state) in moved {
                    let woken = if state == TxState::Reversing {
                        tracing::warn!(transaction_id = %id, "worker died while sending; reversing");
                        super::advice::kick(&shared, id).await
                    } else {
                        tracing::warn!(transaction_id = %id, "worker died while sending; resolving by query");
                        wake(&shared, &provider, id, resolve.first_in).await
                    };
                    if let Err(e) = woken {
                        tracing::warn!(transaction_id = %id, error = %e, "could not publish the wake-up");
                    }
                }
            }
            Err(e) => tracing::warn!(error = %e, "cannot read expired leases"),
        }
    }
}
