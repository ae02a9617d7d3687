//! The executor: one command delivery from intake to ack.
//!
//! Order of effects, which is what keeps guarantees 1 and 2:
//! 1. validate; a bad command is recorded as a rejection, its original kept in
//!    `voucher.rejected`, and only then acked;
//! 2. intake: the transaction and this message's reply target are committed;
//! 3. claim the lease (`received -> sending`), so no other worker calls the provider;
//! 4. call the provider and record the exchange;
//! 5. commit the outcome together with its outbox rows;
//! 6. ack.
//!
//! A crash anywhere before 6 redelivers the message, and intake then finds the transaction
//! in the state the crash left it: `received` is claimed again (nothing was sent),
//! `sending` under a live lease waits in a delay tier, `sending` with an expired lease
//! becomes `unknown` (it may have been applied, so it is never sent again blindly, and the
//! poller resolves it by query), and `completed` answers with the stored outcome.

use std::sync::Arc;
use std::time::Duration;

use lapin::message::Delivery;
use lapin::options::{BasicAckOptions, BasicNackOptions};
use serde_json::Value;
use tracing::Instrument;

use super::relay::Shared;
use super::retry::until_done;
use super::{advice, poller};
use crate::broker::publisher::with_header;
use crate::command::{self, Action, Command, OutcomeError, Status};
use crate::error::{ErrorClass, RelayError};
use crate::mask::mask_json;
use crate::providers::Step;
use crate::providers::csq::flows;
use crate::providers::electrum::{Operation, mapping};
use crate::store::advices::{self, NewAdvice};
use crate::store::polls::{PollPlan, Purpose};
use crate::store::transactions::{Intake, ReplyTarget, TxRef, TxState};

/// Attempts after which a provider that never answered makes the command `failed`.
const MAX_NOT_SENT_ATTEMPTS: i32 = 5;

/// Handles one delivery from a command queue. Never panics on input; always acks, nacks or
/// leaves the message to be redelivered.
pub async fn handle(shared: Arc<Shared>, delivery: Delivery) {
    let routing_key = delivery.routing_key.to_string();
    let span = tracing::error_span!("command", routing_key = %routing_key, transaction_id = tracing::field::Empty, command_id = tracing::field::Empty);
    async move {
        let result = process(&shared, &delivery).await;
        let settled = match result {
            Ok(()) => delivery.ack(BasicAckOptions::default()).await,
            Err(e) => give_back(&delivery, &e).await,
        };
        if let Err(e) = settled {
            // The channel is gone; the broker redelivers the message elsewhere.
            tracing::warn!(error = %e, "could not settle the delivery");
        }
        shared.outbox_wakeup.notify_one();
    }
    .instrument(span)
    .await
}

/// Settles a delivery whose handling failed. Infrastructure that failed for minutes: back
/// to the queue. Anything that will fail the same way again: to the dead-letter exchange
/// (`voucher.dlx` -> `voucher.dead`), where operators see it; never dropped, never looped.
pub async fn give_back(delivery: &Delivery, e: &RelayError) -> Result<bool, lapin::Error> {
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
}

fn reply_target(delivery: &Delivery, callback_url: Option<&str>) -> ReplyTarget {
    let p = &delivery.properties;
    ReplyTarget {
        reply_to: p
            .reply_to()
            .as_ref()
            .map(|s| s.to_string())
            .unwrap_or_default(),
        correlation_id: p
            .correlation_id()
            .as_ref()
            .map(|s| s.to_string())
            .unwrap_or_default(),
        callback_url: callback_url.unwrap_or_default().to_string(),
    }
}

async fn process(shared: &Shared, delivery: &Delivery) -> Result<(), RelayError> {
    let routing_key = delivery.routing_key.as_str();
    let cmd = match command::parse(routing_key, &delivery.data) {
        Ok(cmd) => cmd,
        Err(rejection) => return reject(shared, delivery, &rejection).await,
    };
    let span = tracing::Span::current();
    span.record("command_id", cmd.command_id.as_str());
    let target = reply_target(delivery, cmd.callback_url.as_deref());
    let masked = mask_json(&params_json(&cmd));
    let resolve = resolve_plan(shared);
    let budget = reversal_budget(shared);
    let intake = until_done("intake", || {
        shared
            .store
            .intake(&cmd, &masked, &target, &resolve, budget)
    })
    .await?;
    let (r, state) = match intake {
        Intake::New(r) => (r, TxState::Received),
        Intake::Pending(r, state) => (r, state),
        Intake::Completed(r) => {
            span.record("transaction_id", r.id.to_string());
            tracing::info!("duplicate of a finished command: stored outcome queued again");
            metrics::counter!("voucher_duplicates_total").increment(1);
            return Ok(());
        }
        Intake::Conflict(r) => {
            tracing::warn!(existing_transaction = %r.id, "idempotency key reused by another kind of command");
            let rejection = command::Rejection {
                reason: command::RejectReason::KeyReused,
                envelope: command::Envelope {
                    command_id: Some(cmd.command_id.clone()),
                    source: Some(cmd.source.clone()),
                    kind: Some(cmd.action.kind().to_string()),
                    provider: Some(cmd.action.provider().as_str().to_string()),
                    callback_url: cmd.callback_url.clone(),
                },
            };
            return reject(shared, delivery, &rejection).await;
        }
        Intake::Busy(r) => {
            span.record("transaction_id", r.id.to_string());
            tracing::info!("another worker holds this command; retrying after a delay");
            return delay(shared, delivery, 0).await;
        }
    };
    span.record("transaction_id", r.id.to_string());
    match state {
        TxState::Received => execute(shared, delivery, &cmd, r).await,
        TxState::Unknown => {
            // Resolution is scheduled in the database; this wake-up only makes it prompt
            // (a second one is harmless: the poll row decides).
            tracing::warn!("outcome unknown; resolving by query, not sending again");
            poller::wake(
                shared,
                cmd.action.provider().as_str(),
                r.id,
                resolve.first_in,
            )
            .await
        }
        // Registered as a reply target; the running poll answers it.
        TxState::AwaitingData | TxState::AwaitingDraw => Ok(()),
        // Registered as a reply target; the reversal's final answer makes the outcome. The
        // wake-up is harmless if the advice is already under way.
        TxState::Reversing => advice::kick(shared, r.id).await,
        // Intake never reports these as pending.
        TxState::Sending | TxState::Completed => Ok(()),
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

/// Sends the message to a delay tier; it comes back to its work queue when the tier's TTL
/// ends. `tier` is clamped to the slowest tier.
async fn delay(shared: &Shared, delivery: &Delivery, tier: usize) -> Result<(), RelayError> {
    let tiers = &shared.config.delay_tiers;
    let Some(t) = tiers.get(tier.min(tiers.len().saturating_sub(1))) else {
        return Err(RelayError::Poison("no delay tier configured".into()));
    };
    let exchange = shared.config.name(&t.name);
    until_done("delay", || {
        shared.publisher.publish_routed(
            &exchange,
            delivery.routing_key.as_str(),
            &delivery.data,
            delivery.properties.clone(),
        )
    })
    .await
}

/// The poll that resolves an unknown outcome.
pub fn resolve_plan(shared: &Shared) -> PollPlan {
    PollPlan {
        purpose: Purpose::Resolve,
        first_in: poller::wait_before(shared, 1),
        deadline_in: Duration::from_millis(shared.config.providers.csq.resolve_deadline_ms),
    }
}

/// How long an advice is repeated before it is parked.
pub fn reversal_budget(shared: &Shared) -> Duration {
    Duration::from_millis(shared.config.providers.electrum.advice_budget_ms)
}

/// How long a worker owns a transaction it is sending ([`HttpLimits::lease`]). Only a
/// redelivery (the owner's channel died) looks at it; a lease that runs out under a live
/// owner costs a resolution poll or a reversal, never a second purchase.
///
/// [`HttpLimits::lease`]: crate::config::HttpLimits::lease
pub fn lease(shared: &Shared, cmd: &Command) -> Duration {
    let p = &shared.config.providers;
    match cmd.action.provider() {
        crate::command::Provider::Csq => p.csq.limits().lease(),
        crate::command::Provider::Electrum => p.electrum.limits().lease(),
    }
}

/// Whether a lookup that keeps answering "still processing" has been asked long enough:
/// the waits so far follow the delay tiers, one per attempt.
fn processing_expired(shared: &Shared, attempt: i32) -> bool {
    let waited: Duration = (1..attempt).map(|a| poller::wait_before(shared, a)).sum();
    waited >= Duration::from_millis(shared.config.providers.electrum.processing_deadline_ms)
}

/// The confirmation that must follow a successful Electrum operation in dual messaging.
fn confirmation<'a>(shared: &Shared, cmd: &'a Command, r: TxRef) -> Option<NewAdvice<'a>> {
    let (operation, tender) = match &cmd.action {
        Action::ElectrumProvision(p) => (
            Operation::Provision,
            p.tender.as_ref().map(
                |t| serde_json::json!({"amount_minor": t.amount_minor, "currency": t.currency}),
            ),
        ),
        Action::ElectrumRedeem(_) => (Operation::Redeem, None),
        Action::ElectrumRefund(_) => (Operation::Refund, None),
        _ => return None,
    };
    shared.electrum.is_dual(operation).then(|| NewAdvice {
        provider: "electrum",
        operation: operation.as_str(),
        kind: advices::CONFIRMATION,
        request_id: r.id,
        reversal_reason: None,
        detail: None,
        tender,
        budget: reversal_budget(shared),
    })
}

/// Records the reversal of `request_id` (an unknown outcome) and wakes its sender. The
/// command's outcome comes from the reversal's final answer.
async fn reverse(
    shared: &Shared,
    id: uuid::Uuid,
    operation: &str,
    request_id: uuid::Uuid,
    why: &str,
) -> Result<(), RelayError> {
    let reason = mapping::reversal_reason(why);
    tracing::error!(reason = %why, reversal_reason = reason, "provider outcome unknown; reversing it (store-and-forward)");
    metrics::counter!("voucher_unknown_outcomes_total", "provider" => "electrum").increment(1);
    let advice = NewAdvice::reversal(
        "electrum",
        operation,
        request_id,
        reason,
        why,
        reversal_budget(shared),
    );
    until_done("start reversal", || {
        shared.store.start_reversal(id, TxState::Sending, &advice)
    })
    .await?;
    advice::kick(shared, id).await
}

async fn execute(
    shared: &Shared,
    delivery: &Delivery,
    cmd: &Command,
    r: TxRef,
) -> Result<(), RelayError> {
    let Some(attempt) =
        until_done("claim", || shared.store.claim(r.id, lease(shared, cmd))).await?
    else {
        tracing::info!("another worker claimed this command first");
        return Ok(());
    };
    let csq = &shared.csq;
    let (step, exchanges) = match &cmd.action {
        Action::CsqPurchase(params) => {
            let Some(local_reference) = r.local_reference else {
                return Err(RelayError::Corrupt(
                    "CSQ purchase without localReference".into(),
                ));
            };
            flows::purchase(csq, params, local_reference).await
        }
        Action::CsqProducts(params) => flows::products(csq, params).await,
        Action::CsqBalance(params) => flows::balance(csq, params).await,
        Action::ElectrumProvision(p) => {
            let (answer, ex) = shared.electrum.provision(r.id, p).await;
            (mapping::financial_step(answer, r.id), vec![ex])
        }
        Action::ElectrumRedeem(p) | Action::ElectrumRefund(p) => {
            let op = if matches!(cmd.action, Action::ElectrumRedeem(_)) {
                Operation::Redeem
            } else {
                Operation::Refund
            };
            let (answer, ex) = shared.electrum.voucher_operation(op, r.id, p).await;
            (mapping::financial_step(answer, r.id), vec![ex])
        }
        Action::ElectrumLookup(p) => {
            let (answer, ex) = shared.electrum.lookup_voucher(p).await;
            (mapping::lookup_step(answer), vec![ex])
        }
        Action::ElectrumLookupRedemption(p) => {
            let (answer, ex) = shared.electrum.lookup_redemption(p.request_id).await;
            (
                mapping::lookup_redemption_step(answer, p.request_id),
                vec![ex],
            )
        }
    };
    for exchange in &exchanges {
        until_done("record exchange", || {
            shared.store.record_exchange(r.id, exchange)
        })
        .await?;
    }
    let kind = cmd.action.kind();
    let provider = cmd.action.provider().as_str();
    let subject = poller::Subject {
        command_id: &cmd.command_id,
        source: &cmd.source,
        kind,
        provider,
    };
    let outcome_of = |status, result, error| subject.outcome(status, result, error);
    // A read that may not have arrived is simply asked again.
    let step = match step {
        Step::Unknown(reason) if !cmd.action.has_financial_effect() => Step::Retry(reason),
        other => other,
    };
    let outcome = match step {
        Step::Done {
            status,
            result,
            error,
        } => outcome_of(status, result, error),
        Step::Unknown(reason) if cmd.action.provider() == crate::command::Provider::Electrum => {
            return reverse(shared, r.id, kind, r.id, &reason).await;
        }
        Step::Processing(reason) if !processing_expired(shared, attempt) => {
            tracing::info!(reason = %reason, attempt, "provider still processing; asking again after a delay");
            until_done("release", || shared.store.release(r.id, &reason)).await?;
            return delay(shared, delivery, usize::try_from(attempt - 1).unwrap_or(0)).await;
        }
        Step::Processing(reason) => {
            // Still processing past its deadline: the redemption's outcome is unknown, and
            // an unknown redemption is reversed.
            let Action::ElectrumLookupRedemption(p) = &cmd.action else {
                return Err(RelayError::Corrupt(format!("{kind} answered 'processing'")));
            };
            let own = until_done("own request", || shared.store.own_request(p.request_id)).await?;
            match own {
                // The relay's own redemption is decided by its own command (which reverses
                // it if its answer never came); a lookup must never undo a redemption the
                // relay reported as succeeded.
                Some(command_id) => outcome_of(
                    Status::Failed,
                    None,
                    Some(OutcomeError {
                        code: "still_processing".into(),
                        message: format!(
                            "Electrum was still processing after {attempt} lookups; this redemption is the relay's command {command_id:?}, whose outcome decides it"
                        ),
                        provider_code: None,
                    }),
                ),
                None => {
                    let why = format!("still processing after {attempt} lookups: {reason}");
                    return reverse(shared, r.id, Operation::Redeem.as_str(), p.request_id, &why)
                        .await;
                }
            }
        }
        Step::Unknown(reason) => {
            tracing::error!(reason = %reason, "provider outcome unknown; resolving by query, not sending again");
            metrics::counter!("voucher_unknown_outcomes_total", "provider" => provider)
                .increment(1);
            let plan = resolve_plan(shared);
            until_done("mark unknown", || {
                shared.store.mark_unknown(r.id, &reason, &plan)
            })
            .await?;
            return poller::wake(shared, provider, r.id, plan.first_in).await;
        }
        Step::Retry(reason) if attempt < MAX_NOT_SENT_ATTEMPTS => {
            tracing::warn!(reason = %reason, attempt, "provider not reached; retrying after a delay");
            until_done("release", || shared.store.release(r.id, &reason)).await?;
            return delay(shared, delivery, usize::try_from(attempt).unwrap_or(0)).await;
        }
        Step::Retry(reason) => outcome_of(
            Status::Failed,
            None,
            Some(OutcomeError {
                code: "provider_unreachable".into(),
                message: format!(
                    "the provider could not be reached after {attempt} attempts: {reason}"
                ),
                provider_code: None,
            }),
        ),
        waiting @ (Step::AwaitData(_) | Step::AwaitDraw { .. }) => {
            return poller::start_waiting(shared, r.id, TxState::Sending, waiting, subject).await;
        }
    };
    let latency_ms: u128 = exchanges.iter().map(|e| e.latency.as_millis()).sum();
    let confirm = (outcome.status == Status::Succeeded)
        .then(|| confirmation(shared, cmd, r))
        .flatten();
    let stored = until_done("complete", || {
        shared
            .store
            .complete_with_advice(r.id, TxState::Sending, &outcome, confirm.as_ref())
    })
    .await?;
    if stored && confirm.is_some() {
        // The first attempt goes now, so the voucher is redeemable by the time its holder
        // tries; if it fails, the advice worker repeats it.
        if let Err(e) = advice::run(shared, r.id).await {
            tracing::warn!(error = %e, "confirmation not sent yet; the sweeper retries it");
        }
    }
    if !stored {
        // The lease ran out while this worker waited (a redelivery moved the transaction to
        // `unknown`): this answer is dropped and the resolve poll finds the same facts.
        tracing::error!(
            status = outcome.status.as_str(),
            "answer arrived after the lease expired; left to the resolve poll"
        );
    } else {
        tracing::info!(status = outcome.status.as_str(), event_id = %outcome.event_id, latency_ms = latency_ms as u64, "command finished");
        metrics::counter!("voucher_outcomes_total", "provider" => provider, "kind" => kind, "status" => outcome.status.as_str()).increment(1);
    }
    Ok(())
}

/// The command's params as JSON, for the (masked) audit copy.
fn params_json(cmd: &Command) -> Value {
    match &cmd.action {
        Action::CsqPurchase(p) => serde_json::json!({
            "terminal_id": p.terminal_id,
            "operator_id": p.operator_id,
            "product_id": p.product_id,
            "body": serde_json::to_value(&p.body).unwrap_or(Value::Null),
        }),
        Action::CsqProducts(p) => serde_json::json!({
            "terminal_id": p.terminal_id,
            "operator_id": p.operator_id,
        }),
        Action::CsqBalance(p) => serde_json::json!({"terminal_id": p.terminal_id}),
        Action::ElectrumProvision(p) => serde_json::json!({
            "originator": p.originator,
            "receiver": p.receiver,
            "amount_minor": p.tender.as_ref().map(|t| t.amount_minor),
            "currency": p.tender.as_ref().map(|t| t.currency.clone()),
        }),
        Action::ElectrumRedeem(p) | Action::ElectrumRefund(p) => serde_json::json!({
            "originator": p.originator,
            "receiver": p.receiver,
            "voucher_code": p.voucher_code,
        }),
        Action::ElectrumLookup(p) => serde_json::json!({
            "voucher_code": p.voucher_code,
            "provision_request_id": p.provision_request_id,
            "voucher_serial_number": p.voucher_serial_number,
        }),
        Action::ElectrumLookupRedemption(p) => serde_json::json!({"request_id": p.request_id}),
    }
}
