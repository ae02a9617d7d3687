//! The executor: one command delivery from intake to ack.
//!
//! Order of effects, which is what keeps guarantees 1 and 2:
//! 1. validate; a bad command is recorded as a rejection, its original kept in
//!    `voucher.rejected`, and only then acked;
//! 2. intake: the transaction and this message's reply target are committed;
//! 3. claim the lease (`received -> sending`), so no other worker calls the provider;
//! 4. call the provider and record the exchange;
//! 5. commit the outcome together with its outbox rows (or what follows: a poll, an
//!    advice);
//! 6. ack.
//!
//! A crash anywhere before 6 redelivers the message, and intake then finds the transaction
//! in the state the crash left it: `received` is claimed again (nothing was sent),
//! `sending` under a live lease waits in a delay tier, `sending` with an expired lease gets
//! the provider's plan for an unknown outcome (it may have been applied, so it is never
//! sent again blindly), and `completed` answers with the stored outcome.

use std::sync::Arc;

use lapin::message::Delivery;
use tracing::Instrument;

use super::advice;
use super::follow_up::{self, Wake, plan_for_unknown};
use super::shared::{Shared, count_outcome};
use crate::broker::publisher::with_header;
use crate::command::{self, Command, Outcome, Status};
use crate::error::RelayError;
use crate::mask::mask_json;
use crate::providers::step::error;
use crate::providers::work::{TxContext, UnknownPlan};
use crate::providers::{Action, Exchange, Provider, Step, parse_command};
use crate::retry::{publish_in_tier, until_done};
use crate::store::ReplyTarget;
use crate::store::TxState;
use crate::store::fast_path::{Finish, NewIntake};
use crate::store::resend::RESEND_HEADER;
use crate::store::transactions::{Intake, LOST_WORKER, NewTransaction, TxRef};

/// Attempts after which a provider that never answered makes the command `failed`.
const MAX_NOT_SENT_ATTEMPTS: i32 = 5;

/// Handles one delivery from a command queue. Never panics on input; the consumer frame
/// settles the delivery from what this returns.
pub async fn run_command(shared: Arc<Shared>, delivery: Arc<Delivery>) -> Result<(), RelayError> {
    let span = tracing::error_span!("command", routing_key = %delivery.routing_key, transaction_id = tracing::field::Empty, command_id = tracing::field::Empty);
    take_command(&shared, &delivery).instrument(span).await
}

/// A command this relay accepted, with its provider and transaction.
struct Job<'a> {
    delivery: &'a Delivery,
    cmd: &'a Command,
    action: &'a Action,
    provider: &'a dyn Provider,
    r: TxRef,
}

async fn take_command(shared: &Shared, delivery: &Delivery) -> Result<(), RelayError> {
    let names = shared.providers.names();
    let (cmd, action) = match parse_command(delivery.routing_key.as_str(), &delivery.data, &names) {
        Ok(parsed) => parsed,
        Err(rejection) => return reject(shared, delivery, &rejection).await,
    };
    let span = tracing::Span::current();
    span.record("command_id", cmd.command_id.as_str());
    let provider = shared.provider(&cmd.provider)?;
    let Some((r, admitted)) = intake(shared, delivery, &cmd, &action, provider).await? else {
        return Ok(());
    };
    span.record("transaction_id", r.id.to_string());
    let job = Job {
        delivery,
        cmd: &cmd,
        action: &action,
        provider,
        r,
    };
    let state = match admitted {
        Admitted::Claimed(attempt) => return send(shared, &job, attempt).await,
        Admitted::Pending(state) => state,
    };
    match state {
        TxState::Received => execute(shared, &job).await,
        TxState::Unknown => {
            // Resolution is scheduled in the database; this wake-up only makes it prompt
            // (a second one is harmless: the poll row decides).
            tracing::warn!("outcome unknown; resolving by query, not sending again");
            let wait = shared.tiers().wait_before(1);
            follow_up::wake_later(shared, provider.name(), Wake::Poll, r.id, wait).await
        }
        // Registered as a reply target; the reversal's final answer makes the outcome. The
        // wake-up is harmless if the advice is already under way.
        TxState::Reversing => follow_up::wake_advice_now(shared, provider.name(), r.id).await,
        // Registered as a reply target; the running poll answers it.
        TxState::AwaitingData | TxState::AwaitingDraw => Ok(()),
        // Intake never reports these as pending.
        TxState::Sending | TxState::Completed => Ok(()),
    }
}

/// How intake admitted a command.
enum Admitted {
    /// Seen for the first time, recorded and claimed by this process: attempt 1.
    Claimed(i32),
    /// Seen before and not finished: in this state.
    Pending(TxState),
}

/// Records the command; `None` when intake answered it already (a duplicate, a reused key,
/// a command another worker holds).
///
/// A command its sender publishes for the first time goes the batched way: recorded and
/// claimed in one write shared with the other commands arriving meanwhile. One whose key
/// exists (a redelivery, a duplicate, a command the relay sent again) takes the
/// one-command intake, which knows every state it can be found in.
async fn intake(
    shared: &Shared,
    delivery: &Delivery,
    cmd: &Command,
    action: &Action,
    provider: &dyn Provider,
) -> Result<Option<(TxRef, Admitted)>, RelayError> {
    // Read before any wait: the action's view is not shared across threads.
    let (kind, params_masked, (local_reference, refs)) = {
        let info = action.info();
        (
            info.kind(),
            mask_json(&info.audit_params()),
            info.intake_refs(),
        )
    };
    let resend = is_resend(delivery);
    if !resend && !delivery.redelivered {
        let new = NewIntake {
            id: uuid::Uuid::now_v7(),
            source: cmd.source.clone(),
            command_id: cmd.command_id.clone(),
            kind,
            provider: provider.name(),
            params_masked: params_masked.clone(),
            local_reference,
            refs: refs.clone(),
            command_sealed: shared.store.seal(&delivery.data),
            routing_key: delivery.routing_key.to_string(),
            target: reply_target(delivery, cmd.callback_url.as_deref()),
            lease_secs: provider.limits().lease().as_secs_f64(),
            owner: shared.process.id,
        };
        let claimed = until_done("intake", || shared.batches.intake.submit(new.clone())).await?;
        if let Some(r) = claimed {
            return Ok(Some((r, Admitted::Claimed(1))));
        }
    }
    let new = NewTransaction {
        source: &cmd.source,
        command_id: &cmd.command_id,
        kind,
        provider: provider.name(),
        params_masked,
        local_reference,
        refs,
        command: &delivery.data,
        routing_key: delivery.routing_key.as_str(),
    };
    // A command the relay published again has its targets registered already.
    let target = if resend {
        ReplyTarget::default()
    } else {
        reply_target(delivery, cmd.callback_url.as_deref())
    };
    let on_lost = provider
        .has_financial_effect(kind)
        .then(|| plan_for_unknown(shared, provider, kind, LOST_WORKER));
    let intake = until_done("intake", || {
        shared.store.intake(&new, &target, on_lost.as_ref())
    })
    .await?;
    let span = tracing::Span::current();
    match intake {
        Intake::New(r) => Ok(Some((r, Admitted::Pending(TxState::Received)))),
        Intake::Pending(r, state) => Ok(Some((r, Admitted::Pending(state)))),
        Intake::Completed(r) => {
            span.record("transaction_id", r.id.to_string());
            tracing::info!("duplicate of a finished command: stored outcome queued again");
            metrics::counter!("voucher_duplicates_total").increment(1);
            Ok(None)
        }
        Intake::Conflict(r) => {
            tracing::warn!(existing_transaction = %r.id, "idempotency key reused by another kind of command");
            let rejection = command::Rejection {
                reason: command::RejectReason::KeyReused,
                envelope: cmd.envelope(),
            };
            reject(shared, delivery, &rejection).await.map(|()| None)
        }
        Intake::Busy(r) => {
            span.record("transaction_id", r.id.to_string());
            tracing::info!("another worker holds this command; retrying after a delay");
            delay(shared, delivery, 0).await.map(|()| None)
        }
    }
}

fn is_resend(delivery: &Delivery) -> bool {
    delivery
        .properties
        .headers()
        .as_ref()
        .is_some_and(|h| h.inner().keys().any(|k| k.as_str() == RESEND_HEADER))
}

fn reply_target(delivery: &Delivery, callback_url: Option<&str>) -> ReplyTarget {
    let p = &delivery.properties;
    let text = |v: &Option<lapin::types::ShortString>| {
        v.as_ref().map(|s| s.to_string()).unwrap_or_default()
    };
    ReplyTarget {
        reply_to: text(p.reply_to()),
        correlation_id: text(p.correlation_id()),
        callback_url: callback_url.unwrap_or_default().to_string(),
    }
}

/// Records a rejection, keeps the original in `voucher.rejected`, and queues the outcome.
async fn reject(
    shared: &Shared,
    delivery: &Delivery,
    rejection: &command::Rejection,
) -> Result<(), RelayError> {
    let target = reply_target(delivery, rejection.envelope.callback_url.as_deref());
    let routing_key = delivery.routing_key.as_str();
    let (rejection_id, event_id) = until_done("record rejection", || {
        shared
            .store
            .record_rejection(rejection, routing_key, &delivery.data, &target)
    })
    .await?;
    tracing::Span::current().record("transaction_id", rejection_id.to_string());
    let props = with_header(
        with_header(
            delivery.properties.clone(),
            "x-rejection-reason",
            rejection.reason.code(),
        ),
        "x-original-routing-key",
        routing_key,
    );
    let queue = shared.config.name(&shared.config.broker.rejected_queue);
    until_done("keep rejected original", || {
        shared
            .publisher
            .publish_routed("", &queue, &delivery.data, props.clone())
    })
    .await?;
    tracing::warn!(reason = rejection.reason.code(), event_id = %event_id, "command rejected");
    metrics::counter!("voucher_rejections_total", "reason" => rejection.reason.code()).increment(1);
    Ok(())
}

/// Sends the command to delay tier `tier`; it comes back to its work queue when the tier's
/// TTL ends.
async fn delay(shared: &Shared, delivery: &Delivery, tier: usize) -> Result<(), RelayError> {
    publish_in_tier(
        &shared.publisher,
        &shared.config,
        delivery.routing_key.as_str(),
        &delivery.data,
        &delivery.properties,
        tier,
    )
    .await
}

/// Claims the command, then [`send`]s it.
async fn execute(shared: &Shared, job: &Job<'_>) -> Result<(), RelayError> {
    let lease = job.provider.limits().lease();
    let claim = || shared.store.claim(job.r.id, lease, shared.process);
    let Some(attempt) = until_done("claim", claim).await? else {
        tracing::info!("another worker claimed this command first");
        return Ok(());
    };
    send(shared, job, attempt).await
}

/// Asks the provider once about a command this process claimed, and acts on what that
/// came to.
async fn send(shared: &Shared, job: &Job<'_>, attempt: i32) -> Result<(), RelayError> {
    let subject_owner = match job.provider.subject_request(job.action) {
        Some(request) => until_done("own request", || shared.store.command_of(request)).await?,
        None => None,
    };
    let tx = TxContext {
        id: job.r.id,
        request_id: job.r.request_id,
        local_reference: job.r.local_reference,
        attempt,
        waited: shared.tiers().waited_before(attempt),
        subject_owner,
    };
    let (step, exchanges) = job.provider.execute(job.action, tx).await;
    act_on(shared, job, attempt, step, exchanges).await
}

/// Stores what the provider exchanged, when it is not stored with the outcome.
async fn record_exchanges(
    shared: &Shared,
    job: &Job<'_>,
    exchanges: &[Exchange],
) -> Result<(), RelayError> {
    for exchange in exchanges {
        until_done("record exchange", || {
            shared.store.record_exchange(job.r.id, exchange)
        })
        .await?;
    }
    Ok(())
}

/// What the executor does with one step: finish, resolve or reverse, ask again, or wait.
async fn act_on(
    shared: &Shared,
    job: &Job<'_>,
    attempt: i32,
    step: Step,
    exchanges: Vec<Exchange>,
) -> Result<(), RelayError> {
    let (id, kind) = (job.r.id, job.action.kind());
    let subject = job.cmd.subject();
    let step = match step {
        // A read that may not have arrived is simply asked again.
        Step::Unknown(reason) if !job.provider.has_financial_effect(kind) => Step::Retry(reason),
        other => other,
    };
    let gives_up = attempt >= MAX_NOT_SENT_ATTEMPTS;
    // An outcome is written together with its exchanges (`finish`); any other step
    // stores them first.
    let ends_here = match &step {
        Step::Done { .. } => true,
        Step::Retry(_) => gives_up,
        _ => false,
    };
    if !ends_here {
        record_exchanges(shared, job, &exchanges).await?;
    }
    let outcome = match step {
        Step::Done {
            status,
            result,
            error,
        } => subject.outcome(status, result, error),
        Step::Unknown(why) => {
            let plan = plan_for_unknown(shared, job.provider, kind, &why);
            return follow_up::record_unknown(shared, job.provider.name(), id, plan, &why).await;
        }
        Step::Reverse(reversal) => {
            let why = reversal.detail.clone().unwrap_or_default();
            let plan = UnknownPlan::Reverse(reversal);
            return follow_up::record_unknown(shared, job.provider.name(), id, plan, &why).await;
        }
        Step::Processing(reason) => {
            tracing::info!(reason = %reason, attempt, "provider still processing; asking again after a delay");
            return ask_again(shared, job, &reason, attempt - 1).await;
        }
        Step::Retry(reason) if !gives_up => {
            tracing::warn!(reason = %reason, attempt, "provider not reached; retrying after a delay");
            return ask_again(shared, job, &reason, attempt).await;
        }
        Step::Retry(reason) => subject.outcome(
            Status::Failed,
            None,
            Some(error(
                "provider_unreachable",
                format!("the provider could not be reached after {attempt} attempts: {reason}"),
                None,
            )),
        ),
        Step::Wait(waiting) => {
            return follow_up::start_waiting(shared, id, TxState::Sending, *waiting, &subject)
                .await;
        }
    };
    finish(shared, job, outcome, exchanges).await
}

/// `sending -> received`, and the command back through delay tier `tier`.
async fn ask_again(
    shared: &Shared,
    job: &Job<'_>,
    reason: &str,
    tier: i32,
) -> Result<(), RelayError> {
    until_done("release", || shared.store.release(job.r.id, reason)).await?;
    delay(shared, job.delivery, usize::try_from(tier).unwrap_or(0)).await
}

/// Commits the outcome with the provider's exchanges and the confirmation that must follow
/// it, and sends that confirmation's first attempt at once. An outcome without a
/// confirmation (the common case) goes with the others finishing meanwhile.
async fn finish(
    shared: &Shared,
    job: &Job<'_>,
    outcome: Outcome,
    exchanges: Vec<Exchange>,
) -> Result<(), RelayError> {
    let id = job.r.id;
    let confirm = (outcome.status == Status::Succeeded)
        .then(|| job.provider.confirmation(job.action))
        .flatten();
    let latency_ms: u128 = exchanges.iter().map(|e| e.latency.as_millis()).sum();
    let stored = match &confirm {
        None => {
            let write = Finish {
                id,
                status: outcome.status.as_str(),
                event_id: outcome.event_id.clone(),
                outcome_sealed: shared.store.seal_outcome(&outcome),
                event_key: outcome.routing_key(),
                exchanges,
            };
            until_done("complete", || shared.batches.finish.submit(write.clone())).await?
        }
        Some(advice) => {
            record_exchanges(shared, job, &exchanges).await?;
            until_done("complete", || {
                shared
                    .store
                    .complete_with_advice(id, TxState::Sending, &outcome, Some(advice))
            })
            .await?
        }
    };
    if !stored {
        // The lease ran out while this worker waited (a redelivery took the transaction
        // over): this answer is dropped, and the resolution or reversal decides.
        tracing::error!(
            status = outcome.status.as_str(),
            "answer arrived after the lease expired; left to the resolution or reversal"
        );
        return Ok(());
    }
    tracing::info!(latency_ms = latency_ms as u64, "provider answered");
    count_outcome(&outcome, "command finished");
    if confirm.is_some() {
        // The first attempt goes now, so the voucher is usable by the time its holder
        // tries; if it fails, the advice worker repeats it.
        if let Err(e) = advice::send_due(shared, id).await {
            tracing::warn!(error = %e, "confirmation not sent yet; the sweeper retries it");
        }
    }
    Ok(())
}
