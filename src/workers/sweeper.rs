//! The sweeper: until shutdown, it takes over transactions whose worker died while
//! sending (every second: a dead process is seen within seconds, see
//! [`crate::store::processes`]), and every 15 s republishes the wake-ups of polls and
//! advices that are overdue (their message was lost with a killed worker or a broker),
//! republishes commands sent again whose message was lost, and puts back to work callbacks
//! parked for a URL that has since been enabled.

use std::sync::Arc;
use std::time::{Duration, Instant};

use uuid::Uuid;

use super::follow_up::{self, Wake, plan_for_unknown};
use super::shared::Shared;
use crate::retry::INFRA_LOG;
use crate::shutdown::Shutdown;
use crate::store::transactions::{LOST_WORKER, Lost};

/// A poll, an advice or a resent command this late has lost its wake-up message.
const OVERDUE: Duration = Duration::from_secs(60);
/// How often the sweeper looks for lost wake-ups.
const SWEEP_EVERY: Duration = Duration::from_secs(15);
/// How often it looks for work held by dead processes.
const TAKEOVER_EVERY: Duration = Duration::from_secs(1);

/// Sweeps until shutdown.
pub async fn sweep_until_shutdown(shared: Arc<Shared>, mut shutdown: Shutdown) {
    let mut last_sweep = Instant::now();
    loop {
        tokio::select! {
            _ = shutdown.wait() => return,
            _ = tokio::time::sleep(TAKEOVER_EVERY) => {}
        }
        // While PostgreSQL is away there is nothing to sweep, and nothing more to say.
        if !take_over_dead_workers(&shared).await || last_sweep.elapsed() < SWEEP_EVERY {
            continue;
        }
        last_sweep = Instant::now();
        wake_lost_polls(&shared).await;
        wake_lost_advices(&shared).await;
        republish_lost_resends(&shared).await;
        unpark_enabled_callbacks(&shared).await;
    }
}

/// A command sent again whose message never came back (the process died before the
/// publish was confirmed): published again. A second copy is harmless: the claim decides.
async fn republish_lost_resends(shared: &Shared) {
    let names = shared.providers.names();
    let lost = match shared.store.lost_resends(OVERDUE, &names).await {
        Ok(lost) => lost,
        Err(e) => return tracing::warn!(error = %e, "cannot read resent commands"),
    };
    for resend in lost {
        if let Err(e) = follow_up::publish_resend(shared, &resend).await {
            tracing::warn!(transaction_id = %resend.transaction_id, error = %e, "could not publish the command again");
        }
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

/// Takes over the work of dead processes; false if PostgreSQL cannot be asked.
async fn take_over_dead_workers(shared: &Shared) -> bool {
    match shared.store.reap_dead_processes().await {
        Ok(0) => {}
        Ok(n) => tracing::warn!(
            processes = n,
            "relay processes found dead; their work is taken over"
        ),
        Err(e) => {
            // PostgreSQL is away: nothing to take over until it is back.
            if let Some(n) = INFRA_LOG.may_log() {
                tracing::warn!(error = %e, similar_lines_suppressed = n, "cannot check which relay processes are alive");
            }
            return false;
        }
    }
    let names = shared.providers.names();
    let lost = match shared.store.lost_sends(&names).await {
        Ok(lost) => lost,
        Err(e) => {
            tracing::warn!(error = %e, "cannot read work held by dead processes");
            return false;
        }
    };
    for (id, kind, provider) in lost {
        if let Err(e) = take_over(shared, id, &kind, &provider).await {
            tracing::warn!(transaction_id = %id, error = %e, "could not take over from the dead worker");
        }
    }
    true
}

/// A financial request may have been applied: the provider's plan for an unknown outcome.
/// A read is asked again.
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
    let lost = shared.store.take_over_lost(id, plan.as_ref()).await?;
    if lost.is_some() {
        metrics::counter!("voucher_takeovers_total", "provider" => name.to_string()).increment(1);
    }
    match (lost, plan) {
        (Some(Lost::Unknown(state)), Some(plan)) => {
            tracing::warn!(transaction_id = %id, state = state.as_str(), "worker died while sending; its outcome is unknown");
            follow_up::wake_unknown(shared, name, id, &plan).await
        }
        (Some(Lost::Resend(resend)), _) => {
            tracing::warn!(transaction_id = %id, "worker died while reading; asking again");
            follow_up::publish_resend(shared, &resend).await
        }
        (Some(Lost::Failed), _) => {
            tracing::warn!(transaction_id = %id, "worker died while reading a command kept from before V8; the read failed");
            shared.outbox_wakeup.notify_one();
            Ok(())
        }
        _ => Ok(()),
    }
}
