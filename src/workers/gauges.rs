//! Gauges that no event updates, sampled every [`EVERY`]: what waits in each dead-letter and
//! parked place (`voucher_dlq_items{place}`, `voucher_dlq_oldest_age_seconds{place}`) and
//! the depth of every configured queue (`voucher_queue_depth{queue}`), which also tells
//! `/readyz` whether the topology is whole. Every relay process exports the same values;
//! alert rules take the max (deploy/prometheus/alerts.yml).

use std::sync::Arc;
use std::time::Duration;

use lapin::options::QueueDeclareOptions;
use lapin::types::FieldTable;

use super::shared::Shared;
use crate::shutdown::Shutdown;

const EVERY: Duration = Duration::from_secs(15);

/// Samples until shutdown. A failed sample is skipped: the gauges keep their last value,
/// and `/readyz` is where an outage shows.
pub async fn sample_until_shutdown(shared: Arc<Shared>, mut shutdown: Shutdown) {
    loop {
        sample_places(&shared).await;
        if let Err(e) = sample_queues(&shared).await {
            tracing::debug!(error = %e, "queue depths not sampled");
        }
        tokio::select! {
            _ = shutdown.wait() => return,
            _ = tokio::time::sleep(EVERY) => {}
        }
    }
}

async fn sample_places(shared: &Shared) {
    let summaries = match shared.store.dlq_summaries().await {
        Ok(s) => s,
        Err(e) => return tracing::debug!(error = %e, "dead-letter places not sampled"),
    };
    let now = chrono::Utc::now();
    for s in summaries {
        let place = s.place.name();
        metrics::gauge!("voucher_dlq_items", "place" => place).set(s.count as f64);
        let age = s
            .oldest
            .map_or(0.0, |o| (now - o).num_milliseconds().max(0) as f64 / 1000.0);
        metrics::gauge!("voucher_dlq_oldest_age_seconds", "place" => place).set(age);
    }
}

async fn sample_queues(shared: &Shared) -> anyhow::Result<()> {
    let conn = crate::broker::connect(&shared.config.broker.url, "voucher-relay gauges").await?;
    let mut channel = conn.create_channel().await?;
    let mut missing = Vec::new();
    for q in &shared.config.queues {
        let name = shared.config.name(&q.name);
        let passive = QueueDeclareOptions {
            passive: true,
            ..Default::default()
        };
        match channel
            .queue_declare(name.as_str().into(), passive, FieldTable::default())
            .await
        {
            Ok(queue) => metrics::gauge!("voucher_queue_depth", "queue" => q.name.clone())
                .set(f64::from(queue.message_count())),
            // A missing queue closes the channel.
            Err(_) => {
                missing.push(name);
                channel = conn.create_channel().await?;
            }
        }
    }
    let topology = if missing.is_empty() {
        Ok(())
    } else {
        Err(format!(
            "topology: queue(s) {} missing (voucher-relay topology declare)",
            missing.join(", ")
        ))
    };
    *shared.topology.lock().unwrap_or_else(|p| p.into_inner()) = topology;
    let _ = conn.close(200, "sampled".into()).await;
    Ok(())
}
