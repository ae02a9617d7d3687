//! Per-provider rate limits that hold across every worker process (guarantee 5).
//!
//! Each send reserves the provider's next free slot in PostgreSQL: one row per provider
//! holds `next_free`, and a reservation moves it on by `1 / rate`. Slots are therefore
//! spaced by the interval whatever the number of processes, and a worker sleeps until its
//! slot. If PostgreSQL cannot be asked, a per-process limiter (governor) holds each process
//! to `rate / max_processes` until it can, so a database hiccup slows sends instead of
//! multiplying them.
//!
//! A provider answering 429 is slowed down for a while: sends to it pause for its
//! `Retry-After` (or, without one, 1 s doubling per 429 in a row, up to 30 s), in this
//! process and, through the same row, in every other. Other providers are not affected.
//! `voucher_provider_throttle_seconds{provider}` shows the pause, and
//! `voucher_provider_throttled_total{provider}` counts the 429s.

use std::num::NonZeroU32;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

use tokio::time::Instant;

use deadpool_postgres::Pool;
use governor::{DefaultDirectRateLimiter, Quota, RateLimiter};

/// The limit of one provider.
pub struct ProviderLimit {
    provider: &'static str,
    interval: Duration,
    pool: Option<Pool>,
    local: DefaultDirectRateLimiter,
    /// Until when sends pause after a 429.
    paused_until: Mutex<Option<Instant>>,
    /// 429s in a row, for the pause without `Retry-After`.
    strikes: AtomicU32,
}

/// The pause after a 429 without `Retry-After`: 1 s, doubling per 429 in a row.
const PAUSE_BASE: Duration = Duration::from_secs(1);
/// The longest pause, whatever the provider asks: a provider that asks for an hour still
/// gets a request a half-minute later, whose answer says again.
const PAUSE_CAP: Duration = Duration::from_secs(30);

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
            paused_until: Mutex::new(None),
            strikes: AtomicU32::new(0),
        }
    }

    /// The provider answered 429: pause sends for `retry_after`, or for the next step of
    /// the doubling pause, here and (through the shared row) in every process.
    pub async fn slow_down(&self, retry_after: Option<Duration>) {
        let strikes = self.strikes.fetch_add(1, Ordering::Relaxed);
        let doubled = PAUSE_BASE.saturating_mul(1u32 << strikes.min(5));
        let pause = retry_after.unwrap_or(doubled).min(PAUSE_CAP);
        let until = Instant::now() + pause;
        {
            let mut paused = self
                .paused_until
                .lock()
                .unwrap_or_else(|poisoned| poisoned.into_inner());
            *paused = Some(paused.map_or(until, |p| p.max(until)));
        }
        metrics::counter!("voucher_provider_throttled_total", "provider" => self.provider)
            .increment(1);
        metrics::gauge!("voucher_provider_throttle_seconds", "provider" => self.provider)
            .set(pause.as_secs_f64());
        tracing::warn!(
            provider = self.provider,
            pause_ms = pause.as_millis() as u64,
            "provider answered 429; slowing down"
        );
        if let Err(e) = self.push_shared(pause).await {
            tracing::warn!(provider = self.provider, error = %e, "could not slow the other processes down");
        }
    }

    /// The provider answered something else than 429: the doubling starts over.
    pub fn answered(&self) {
        if self.strikes.swap(0, Ordering::Relaxed) > 0 {
            metrics::gauge!("voucher_provider_throttle_seconds", "provider" => self.provider)
                .set(0.0);
        }
    }

    /// Moves the provider's next free slot to at least `pause` from now.
    async fn push_shared(&self, pause: Duration) -> anyhow::Result<()> {
        let Some(pool) = &self.pool else {
            return Ok(());
        };
        let client = tokio::time::timeout(Duration::from_secs(2), pool.get()).await??;
        client
            .execute(
                "UPDATE rate_limits SET next_free = GREATEST(next_free, clock_timestamp() + make_interval(secs => $2))
                 WHERE provider = $1",
                &[&self.provider, &pause.as_secs_f64()],
            )
            .await?;
        Ok(())
    }

    /// How long sends still pause after a 429.
    fn paused_for(&self) -> Duration {
        let paused = self
            .paused_until
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        paused.map_or(Duration::ZERO, |p| {
            p.saturating_duration_since(Instant::now())
        })
    }

    /// Waits for this process's turn to send one request, if that turn comes within
    /// `max_wait`; false (and no slot taken) if it would not.
    pub async fn wait_turn(&self, max_wait: Duration) -> bool {
        let paused = self.paused_for();
        if paused > max_wait {
            return false;
        }
        if !paused.is_zero() {
            tokio::time::sleep(paused).await;
        }
        let max_wait = max_wait - paused;
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

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_429_pauses_this_provider_only_and_an_answer_resets_the_doubling() {
        let electrum = ProviderLimit::new("electrum", 1000, 1, None);
        let csq = ProviderLimit::new("csq", 1000, 1, None);
        electrum.slow_down(Some(Duration::from_secs(3600))).await;
        // Capped at 30 s, and a turn that cannot come within the bound is not taken.
        assert!(electrum.paused_for() <= PAUSE_CAP);
        assert!(electrum.paused_for() > Duration::from_secs(29));
        assert!(!electrum.wait_turn(Duration::from_millis(10)).await);
        assert!(
            csq.wait_turn(Duration::from_millis(100)).await,
            "CSQ unaffected"
        );
        // Without Retry-After the pause doubles per 429 in a row.
        let limit = ProviderLimit::new("p", 1000, 1, None);
        limit.slow_down(None).await;
        assert!(limit.paused_for() <= PAUSE_BASE);
        limit.slow_down(None).await;
        assert!(limit.paused_for() > PAUSE_BASE, "1 s, then 2 s");
        limit.answered();
        assert_eq!(limit.strikes.load(Ordering::Relaxed), 0);
    }
}
