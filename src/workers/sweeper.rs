//! The sweeper: until shutdown, it republishes the wake-ups of polls and advices that are
//! overdue (their message was lost with a killed worker or a broker), and takes over
//! transactions whose worker died while sending and whose message went to the dead-letter
//! queue, and puts back to work callbacks parked for a URL that has since been enabled.

use std::sync::Arc;
use std::time::Duration;

use uuid::Uuid;

use super::follow_up::{self, Wake, plan_for_unknown};
use super::shared::Shared;
use crate::shutdown::Shutdown;
use crate::store::transactions::LOST_WORKER;

/// A poll, an advice or a lease this late has lost its worker or its wake-up message.
const OVERDUE: Duration = Duration::from_secs(60);
/// How often the sweeper looks.
const SWEEP_EVERY: Duration = Duration::from_secs(15);

/// Sweeps every [`SWEEP_EVERY`] until shutdown.
pub async fn sweep_until_shutdown(shared: Arc<Shared>, mut shutdown: Shutdown) {
    loop {
        tokio::select! {
            _ = shutdown.wait() => return,
            _ = tokio::time::sleep(SWEEP_EVERY) => {}
        }
        wake_lost_polls(&shared).await;
        wake_lost_advices(&shared).await;
        take_over_dead_workers(&shared).await;
        unpark_enabled_callbacks(&shared).await;
    }
}

/// A callback written while its URL was being enabled may have been parked after the
/// enable put the others back to work: it goes now.
async fn unpark_enabled_callbacks(shared: &Shared) {
    match shared.store.unpark_enabled_callbacks().await {
        Ok(0) => {}
        Ok(n) => {
            tracing::info!(callbacks = n, "callbacks of enabled URLs put back to work");
            shared.outbox_wakeup.notify_one();
        }
        Err(e) => tracing::warn!(error = %e, "cannot read parked callbacks"),
    }
}

async fn wake_lost_polls(shared: &Shared) {
    let due = match shared.store.overdue_polls(OVERDUE).await {
        Ok(due) => due,
        Err(e) => return tracing::warn!(error = %e, "cannot read overdue polls"),
    };
    for (id, provider) in due {
        tracing::warn!(transaction_id = %id, "poll wake-up was lost; publishing it again");
        if let Err(e) =
            follow_up::wake_later(shared, &provider, Wake::Poll, id, Duration::ZERO).await
        {
            tracing::warn!(transaction_id = %id, error = %e, "could not republish the wake-up");
        }
    }
}

async fn wake_lost_advices(shared: &Shared) {
    let due = match shared.store.overdue_advices(OVERDUE).await {
        Ok(due) => due,
        Err(e) => return tracing::warn!(error = %e, "cannot read overdue advices"),
    };
    for (id, provider) in due {
        tracing::warn!(transaction_id = %id, "advice wake-up was lost; publishing it again");
        if let Err(e) = follow_up::wake_advice_now(shared, &provider, id).await {
            tracing::warn!(transaction_id = %id, error = %e, "could not republish the advice wake-up");
        }
    }
}

async fn take_over_dead_workers(shared: &Shared) {
    let names = shared.providers.names();
    let expired = match shared.store.expired_leases(OVERDUE, &names).await {
        Ok(expired) => expired,
        Err(e) => return tracing::warn!(error = %e, "cannot read expired leases"),
    };
    for (id, kind, provider) in expired {
        if let Err(e) = take_over(shared, id, &kind, &provider).await {
            tracing::warn!(transaction_id = %id, error = %e, "could not take over from the dead worker");
        }
    }
}

/// A financial request may have been applied: the provider's plan for an unknown outcome.
/// A read ends `failed` (`interrupted`).
async fn take_over(
    shared: &Shared,
    id: Uuid,
    kind: &str,
    name: &str,
) -> Result<(), crate::error::RelayError> {
    let provider = shared.provider(name)?;
    let plan = provider
        .has_financial_effect(kind)
        .then(|| plan_for_unknown(shared, provider, kind, LOST_WORKER));
    let moved = shared
        .store
        .take_over_lost(id, OVERDUE, plan.as_ref())
        .await?;
    match (moved, plan) {
        (Some(state), Some(plan)) => {
            tracing::warn!(transaction_id = %id, state = state.as_str(), "worker died while sending; its outcome is unknown");
            follow_up::wake_unknown(shared, name, id, &plan).await
        }
        (Some(_), None) => {
            tracing::warn!(transaction_id = %id, "worker died while reading; the read failed");
            shared.outbox_wakeup.notify_one();
            Ok(())
        }
        (None, _) => Ok(()),
    }
}
