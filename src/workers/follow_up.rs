//! What happens after a provider step that is not yet an outcome, wherever it was seen
//! (the executor, intake of a redelivered command, the sweeper, a poll):
//! - an unknown outcome: the provider's plan is recorded, then its resolve poll or its
//!   reversal is woken;
//! - waiting on the provider: the poll is scheduled and woken;
//! - the wake-up messages themselves (`{"transaction_id": …}`), which ride the delay tiers
//!   back to `polls.<provider>` and `advice.<provider>`.
//!
//! The rows are the truth; a wake-up only makes the work prompt, and the sweeper
//! republishes lost ones.

use std::time::Duration;

use lapin::message::Delivery;
use serde_json::{Value, json};
use uuid::Uuid;

use super::shared::{Shared, count_outcome};
use crate::broker::publisher::{json_properties, with_header};
use crate::command::Subject;
use crate::error::RelayError;
use crate::providers::Provider;
use crate::providers::work::{UnknownPlan, Waiting};
use crate::retry::{publish_after, until_done};
use crate::store::TxState;
use crate::store::resend::{RESEND_HEADER, Resend, SendAgain};

/// The provider's plan for an unknown outcome of `kind`, its first wait filled in.
pub fn plan_for_unknown(
    shared: &Shared,
    provider: &dyn Provider,
    kind: &str,
    why: &str,
) -> UnknownPlan {
    match provider.on_unknown(kind, why) {
        UnknownPlan::Resolve(poll) => UnknownPlan::Resolve(shared.first_in(poll)),
        reverse => reverse,
    }
}

/// `sending -> unknown | reversing` by `plan`, then its wake-up. The command's outcome
/// comes from the resolution or the reversal.
pub async fn record_unknown(
    shared: &Shared,
    provider: &str,
    id: Uuid,
    plan: UnknownPlan,
    why: &str,
) -> Result<(), RelayError> {
    let what = match plan {
        UnknownPlan::Resolve(_) => {
            "provider outcome unknown; resolving by query, not sending again"
        }
        UnknownPlan::Reverse(_) => "provider outcome unknown; reversing it (store-and-forward)",
    };
    tracing::error!(reason = %why, "{what}");
    metrics::counter!("voucher_unknown_outcomes_total", "provider" => provider.to_string())
        .increment(1);
    let moved = until_done("mark unknown", || shared.store.mark_unknown(id, why, &plan)).await?;
    match moved {
        Some(_) => wake_unknown(shared, provider, id, &plan).await,
        None => Ok(()),
    }
}

/// Wakes what resolves an unknown outcome recorded with `plan`.
pub async fn wake_unknown(
    shared: &Shared,
    provider: &str,
    id: Uuid,
    plan: &UnknownPlan,
) -> Result<(), RelayError> {
    match plan {
        UnknownPlan::Resolve(poll) => {
            wake_later(
                shared,
                provider,
                Wake::Poll,
                id,
                poll.first_in.unwrap_or_default(),
            )
            .await
        }
        UnknownPlan::Reverse(_) => wake_advice_now(shared, provider, id).await,
    }
}

/// Moves a transaction (from `sending`, or `unknown` once resolved) into waiting on the
/// provider, with its progress event, and wakes the poll that will finish it.
pub async fn start_waiting(
    shared: &Shared,
    id: Uuid,
    from: TxState,
    waiting: Waiting,
    subject: &Subject,
) -> Result<(), RelayError> {
    let waiting = Waiting {
        plan: shared.first_in(waiting.plan),
        ..waiting
    };
    tracing::info!(
        purpose = waiting.plan.purpose,
        first_in_s = waiting.plan.first_in.unwrap_or_default().as_secs(),
        "taken; waiting for the provider"
    );
    let progress = waiting.progress.as_ref().map(|(event_type, result)| {
        subject
            .outcome(crate::command::Status::Pending, Some(result.clone()), None)
            .with_type(event_type)
    });
    until_done("await provider", || {
        shared
            .store
            .await_provider(id, from, &waiting, progress.as_ref())
    })
    .await?;
    let first_in = waiting.plan.first_in.unwrap_or_default();
    wake_later(shared, &subject.provider, Wake::Poll, id, first_in).await
}

/// What a wake-up wakes. It rides the delay tiers under `<provider>.poll` or
/// `<provider>.advice`, which `voucher.retry` routes to that provider's queue.
#[derive(Debug, Clone, Copy)]
pub enum Wake {
    Poll,
    Advice,
}

/// Publishes a wake-up of `what` for `id` that arrives after about `wait`.
pub async fn wake_later(
    shared: &Shared,
    provider: &str,
    what: Wake,
    id: Uuid,
    wait: Duration,
) -> Result<(), RelayError> {
    let key = match what {
        Wake::Poll => format!("{provider}.poll"),
        Wake::Advice => format!("{provider}.advice"),
    };
    let body = wake_up_body(id);
    publish_after(&shared.publisher, &shared.config, &key, &body, wait).await
}

/// Publishes an advice wake-up for `id` straight to the provider's advice queue, retrying
/// while the broker is away.
pub async fn wake_advice_now(shared: &Shared, provider: &str, id: Uuid) -> Result<(), RelayError> {
    let queue = shared
        .provider(provider)?
        .advices()
        .map(|a| shared.config.name(a.advice_queue()));
    let Some(queue) = queue else {
        return wake_later(shared, provider, Wake::Advice, id, Duration::ZERO).await;
    };
    let body = wake_up_body(id);
    until_done("advice wake-up", || {
        shared
            .publisher
            .publish_routed("", &queue, &body, json_properties())
    })
    .await
}

/// Publishes a command the relay sends again to the commands exchange, marked so that it
/// registers no reply target of its own, retrying while the broker is away. If this
/// process dies before it is confirmed, the sweeper publishes it again.
pub async fn publish_resend(shared: &Shared, resend: &Resend) -> Result<(), RelayError> {
    tracing::warn!(transaction_id = %resend.transaction_id, "the provider never received it; sending it again under a fresh reference");
    metrics::counter!("voucher_resends_total").increment(1);
    let exchange = shared.config.name(&shared.config.broker.commands_exchange);
    let id = resend.transaction_id.to_string();
    let props = with_header(json_properties(), RESEND_HEADER, &id);
    until_done("publish the command again", || {
        shared
            .publisher
            .publish_routed(&exchange, &resend.routing_key, &resend.body, props.clone())
    })
    .await
}

/// What a "never arrived" answer came to, acted on: the command published again, or the
/// outcome it ended with counted.
pub async fn act_on_send_again(
    shared: &Shared,
    result: Option<SendAgain>,
) -> Result<(), RelayError> {
    match result {
        Some(SendAgain::Resend(resend)) => publish_resend(shared, &resend).await,
        Some(SendAgain::Exhausted(outcome)) => {
            count_outcome(&outcome, "never received after every resend");
            shared.outbox_wakeup.notify_one();
            Ok(())
        }
        None => Ok(()),
    }
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
