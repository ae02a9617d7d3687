//! Per-provider rate limits that hold across every worker process (guarantee 5).
//!
//! Each send reserves the provider's next free slot in PostgreSQL: one row per provider
//! holds `next_free`, and a reservation moves it on by `1 / rate`. Slots are therefore
//! spaced by the interval whatever the number of processes, and a worker sleeps until its
//! slot. If PostgreSQL cannot be asked, a per-process limiter (governor) holds each process
//! to `rate / max_processes` until it can, so a database hiccup slows sends instead of
//! multiplying them.

use std::num::NonZeroU32;
use std::time::Duration;

use deadpool_postgres::Pool;
use governor::{DefaultDirectRateLimiter, Quota, RateLimiter};

/// The limit of one provider.
pub struct ProviderLimit {
    provider: &'static str,
    interval: Duration,
    pool: Option<Pool>,
    local: DefaultDirectRateLimiter,
}

impl ProviderLimit {
    /// `rate_per_sec` requests per second for `provider`, shared through `pool` (best a
    /// small pool of its own, so busy workers cannot starve it) by up to `max_processes`.
    pub fn new(
        provider: &'static str,
        rate_per_sec: u32,
        max_processes: u32,
        pool: Option<Pool>,
    ) -> ProviderLimit {
        let rate = NonZeroU32::new(rate_per_sec).unwrap_or(NonZeroU32::MIN);
        let share = NonZeroU32::new(rate.get() / max_processes.max(1)).unwrap_or(NonZeroU32::MIN);
        ProviderLimit {
            provider,
            interval: Duration::from_secs(1) / rate.get(),
            pool,
            // Burst of one: never more than the share in any second.
            local: RateLimiter::direct(Quota::per_second(share).allow_burst(NonZeroU32::MIN)),
        }
    }

    /// Waits for this process's turn to send one request, if that turn comes within
    /// `max_wait`; false (and no slot taken) if it would not.
    pub async fn wait_turn(&self, max_wait: Duration) -> bool {
        match self.reserve(max_wait).await {
            Ok(Some(wait)) => {
                if !wait.is_zero() {
                    tokio::time::sleep(wait).await;
                }
                true
            }
            Ok(None) => false,
            Err(e) => {
                tracing::warn!(provider = self.provider, error = %e, "global rate limit unavailable; limiting this process alone");
                // Cancelling before the limiter is ready takes nothing from it.
                tokio::time::timeout(max_wait, self.local.until_ready())
                    .await
                    .is_ok()
            }
        }
    }

    /// Reserves the next global slot if it is at most `max_wait` away; returns how long to
    /// wait for it, or `None` without taking a slot. Never taking a slot it would not use
    /// keeps a backlog from pushing every later slot out of reach.
    pub async fn reserve(&self, max_wait: Duration) -> anyhow::Result<Option<Duration>> {
        let Some(pool) = &self.pool else {
            anyhow::bail!("no database for the global limit");
        };
        let client = tokio::time::timeout(Duration::from_secs(2), pool.get()).await??;
        let secs = self.interval.as_secs_f64();
        let row = client
            .query_opt(
                "INSERT INTO rate_limits AS r (provider, next_free)
                 VALUES ($1, clock_timestamp() + make_interval(secs => $2))
                 ON CONFLICT (provider) DO UPDATE
                     SET next_free = GREATEST(r.next_free, clock_timestamp()) + make_interval(secs => $2)
                     WHERE GREATEST(r.next_free, clock_timestamp()) <= clock_timestamp() + make_interval(secs => $3)
                 RETURNING EXTRACT(EPOCH FROM (r.next_free - make_interval(secs => $2) - clock_timestamp()))::float8",
                &[&self.provider, &secs, &max_wait.as_secs_f64()],
            )
            .await?;
        Ok(row.map(|r| Duration::from_secs_f64(r.get::<_, f64>(0).max(0.0))))
    }
}
