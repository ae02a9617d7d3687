//! Per-provider rate limits that hold across every worker process (guarantee 5), without a
//! database round trip per request.
//!
//! Each process **leases a share** of a provider's rate from PostgreSQL and spends it
//! locally with governor. [`keep_leases`] renews every lease each [`RENEW`]; a lease lasts
//! [`LEASE_TTL`]. A grant is made under the provider's `rate_limits` row lock, and is at
//! most what the other unexpired leases leave of the rate, so the shares alive at any
//! moment never add up to more than the rate:
//! - the fair share of `n` live holders is `rate / n`, the remainder going one each to the
//!   holders first in owner order, so the shares add up to the rate exactly;
//! - a newcomer gets what is left (perhaps nothing) and its fair share once the others have
//!   renewed down to theirs: within two renewals;
//! - a process that dies stops renewing; its lease expires within [`LEASE_TTL`] and the others
//!   take its share at their next renewal. A process that stops cleanly gives its share
//!   back at once;
//! - a process that cannot renew (PostgreSQL away) stops sending when its lease ends: it
//!   could not record an answer anyway, and going on would let its share be spent twice.
//!
//! Each process's governor allows a burst of [`burst`] (10 ms of its share, at least two
//! requests), so over any second a provider receives at most its rate plus one burst per
//! process.
//!
//! A provider answering 429 is slowed down for a while: sends to it pause for its
//! `Retry-After` (or, without one, 1 s doubling per 429 in a row, up to 30 s), in this
//! process at once and, through the provider's row (`paused_until`, read at each renewal),
//! in every other within a second. Other providers are not affected.
//! `voucher_provider_throttle_seconds{provider}` shows the pause, and
//! `voucher_provider_throttled_total{provider}` counts the 429s.

use std::num::NonZeroU32;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use deadpool_postgres::Pool;
use governor::clock::{Clock, DefaultClock};
use governor::{DefaultDirectRateLimiter, Quota, RateLimiter};
use tokio::sync::Notify;
use tokio::time::Instant;
use uuid::Uuid;

use crate::retry::INFRA_LOG;
use crate::shutdown::Shutdown;

/// How long a lease lasts without renewal.
pub const LEASE_TTL: Duration = Duration::from_secs(3);
/// How often leases are renewed.
pub const RENEW: Duration = Duration::from_secs(1);

/// The burst a process may send on a share of `share` a second: 10 ms of it, and at least
/// two. Waiting turns wake on the runtime's 1 ms timer, a little late each time; a burst of
/// one would lose that lateness at every turn (5 % at 50/s), and a share above a thousand a
/// second could never be spent.
pub fn burst(share: u32) -> u32 {
    (share / 100).max(2)
}

/// The pause after a 429 without `Retry-After`: 1 s, doubling per 429 in a row.
const PAUSE_BASE: Duration = Duration::from_secs(1);
/// The longest pause, whatever the provider asks: a provider that asks for an hour still
/// gets a request a half-minute later, whose answer says again.
const PAUSE_CAP: Duration = Duration::from_secs(30);

/// The limit of one provider in this process.
pub struct ProviderLimit {
    provider: &'static str,
    rate: u32,
    pool: Option<Pool>,
    /// What this process may spend now.
    lease: Mutex<Lease>,
    /// Rung when the lease changes, for sends waiting for one.
    renewed: Notify,
    /// Until when sends pause after a 429.
    paused_until: Mutex<Option<Instant>>,
    /// 429s in a row, for the pause without `Retry-After`.
    strikes: AtomicU32,
}

/// A share of the rate and until when it may be spent (`None`: for ever, the share of a
/// process without a database).
#[derive(Clone)]
struct Lease {
    share: u32,
    until: Option<Instant>,
    limiter: Option<Arc<DefaultDirectRateLimiter>>,
}

impl Lease {
    fn new(share: u32, until: Option<Instant>) -> Lease {
        let limiter = NonZeroU32::new(share).map(|s| {
            let burst = NonZeroU32::new(burst(share)).unwrap_or(NonZeroU32::MIN);
            Arc::new(RateLimiter::direct(Quota::per_second(s).allow_burst(burst)))
        });
        Lease {
            share,
            until,
            limiter,
        }
    }

    /// The limiter to spend from now, if the lease holds a share and has not ended.
    fn spendable(&self, now: Instant) -> Option<Arc<DefaultDirectRateLimiter>> {
        match self.until {
            Some(until) if until <= now => None,
            _ => self.limiter.clone(),
        }
    }
}

/// What one renewal granted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Grant {
    pub share: u32,
    /// Holders of an unexpired lease, this process included.
    pub holders: u32,
}

impl ProviderLimit {
    /// `rate_per_sec` requests per second for `provider`. With `pool` (best a small pool of
    /// its own, so busy workers cannot starve the renewals) the rate is shared by leases
    /// and nothing is sent before the first one ([`keep_leases`]); without, this process
    /// alone spends `rate_per_sec / max_processes`.
    pub fn new(
        provider: &'static str,
        rate_per_sec: u32,
        max_processes: u32,
        pool: Option<Pool>,
    ) -> ProviderLimit {
        let rate = rate_per_sec.max(1);
        let lease = match pool {
            Some(_) => Lease::new(0, Some(Instant::now())),
            None => Lease::new((rate / max_processes.max(1)).max(1), None),
        };
        ProviderLimit {
            provider,
            rate,
            pool,
            lease: Mutex::new(lease),
            renewed: Notify::new(),
            paused_until: Mutex::new(None),
            strikes: AtomicU32::new(0),
        }
    }

    pub fn provider(&self) -> &'static str {
        self.provider
    }

    /// The share this process holds now (0 without a lease or after it ended).
    pub fn share(&self) -> u32 {
        let lease = lock(&self.lease);
        match lease.spendable(Instant::now()) {
            Some(_) => lease.share,
            None => 0,
        }
    }

    /// Renews this process's (`owner`'s) lease: one database transaction under the
    /// provider's row lock. Also picks up a pause another process recorded after a 429.
    pub async fn renew(&self, owner: Uuid) -> anyhow::Result<Grant> {
        let Some(pool) = &self.pool else {
            anyhow::bail!("no database for the shared limit");
        };
        let asked_at = Instant::now();
        let mut client = tokio::time::timeout(Duration::from_secs(2), pool.get()).await??;
        let tx = client.transaction().await?;
        // The row lock makes grants one at a time; what the others hold is read after it is
        // taken, so it includes every grant committed before.
        let pause = tx
            .query_one(
                "INSERT INTO rate_limits AS r (provider, paused_until) VALUES ($1, now())
                 ON CONFLICT (provider) DO UPDATE SET paused_until = r.paused_until
                 RETURNING EXTRACT(EPOCH FROM (r.paused_until - clock_timestamp()))::float8",
                &[&self.provider],
            )
            .await?;
        let others = tx
            .query_one(
                "SELECT count(*)::integer, coalesce(sum(share), 0)::integer,
                        (count(*) FILTER (WHERE owner < $2))::integer
                 FROM rate_leases
                 WHERE provider = $1 AND owner <> $2 AND expires_at > clock_timestamp()",
                &[&self.provider, &owner],
            )
            .await?;
        let (count, held, rank): (i32, i32, i32) = (others.get(0), others.get(1), others.get(2));
        let grant = grant(self.rate, count, held, rank);
        let share = i32::try_from(grant.share).unwrap_or(i32::MAX);
        tx.execute(
            "INSERT INTO rate_leases (provider, owner, share, expires_at)
             VALUES ($1, $2, $3, clock_timestamp() + make_interval(secs => $4))
             ON CONFLICT (provider, owner)
             DO UPDATE SET share = excluded.share, expires_at = excluded.expires_at",
            &[&self.provider, &owner, &share, &LEASE_TTL.as_secs_f64()],
        )
        .await?;
        tx.commit().await?;
        // Measured from before the request: this process's lease ends no later than the
        // others believe it does.
        self.set_lease(Lease::new(grant.share, Some(asked_at + LEASE_TTL)));
        let paused: f64 = pause.get(0);
        if paused > 0.0 {
            self.pause_here(Duration::from_secs_f64(paused.min(PAUSE_CAP.as_secs_f64())));
        }
        metrics::gauge!("voucher_rate_share_per_second", "provider" => self.provider)
            .set(f64::from(grant.share));
        Ok(grant)
    }

    /// Gives this process's share back at once (a clean stop), so the others take it at
    /// their next renewal instead of after the lease's end.
    pub async fn release(&self, owner: Uuid) -> anyhow::Result<()> {
        self.set_lease(Lease::new(0, Some(Instant::now())));
        let Some(pool) = &self.pool else {
            return Ok(());
        };
        let client = tokio::time::timeout(Duration::from_secs(2), pool.get()).await??;
        client
            .execute(
                "DELETE FROM rate_leases WHERE provider = $1 AND owner = $2",
                &[&self.provider, &owner],
            )
            .await?;
        Ok(())
    }

    fn set_lease(&self, lease: Lease) {
        let mut current = lock(&self.lease);
        // A limiter with the same share keeps its state: recreating it would grant a fresh
        // burst at every renewal.
        if current.share == lease.share && current.limiter.is_some() {
            current.until = lease.until;
        } else {
            *current = lease;
        }
        drop(current);
        self.renewed.notify_waiters();
    }

    /// The provider answered 429: pause sends for `retry_after`, or for the next step of
    /// the doubling pause, here and (through the provider's row) in every process.
    pub async fn slow_down(&self, retry_after: Option<Duration>) {
        let strikes = self.strikes.fetch_add(1, Ordering::Relaxed);
        let doubled = PAUSE_BASE.saturating_mul(1u32 << strikes.min(5));
        let pause = retry_after.unwrap_or(doubled).min(PAUSE_CAP);
        self.pause_here(pause);
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

    fn pause_here(&self, pause: Duration) {
        let until = Instant::now() + pause;
        let mut paused = lock(&self.paused_until);
        *paused = Some(paused.map_or(until, |p| p.max(until)));
    }

    /// The provider answered something else than 429: the doubling starts over.
    pub fn answered(&self) {
        if self.strikes.swap(0, Ordering::Relaxed) > 0 {
            metrics::gauge!("voucher_provider_throttle_seconds", "provider" => self.provider)
                .set(0.0);
        }
    }

    /// Moves the provider's shared pause to at least `pause` from now.
    async fn push_shared(&self, pause: Duration) -> anyhow::Result<()> {
        let Some(pool) = &self.pool else {
            return Ok(());
        };
        let client = tokio::time::timeout(Duration::from_secs(2), pool.get()).await??;
        client
            .execute(
                "INSERT INTO rate_limits AS r (provider, paused_until)
                 VALUES ($1, clock_timestamp() + make_interval(secs => $2))
                 ON CONFLICT (provider) DO UPDATE
                 SET paused_until = GREATEST(r.paused_until, excluded.paused_until)",
                &[&self.provider, &pause.as_secs_f64()],
            )
            .await?;
        Ok(())
    }

    /// How long sends still pause after a 429.
    fn paused_for(&self) -> Duration {
        lock(&self.paused_until).map_or(Duration::ZERO, |p| {
            p.saturating_duration_since(Instant::now())
        })
    }

    /// Waits for this process's turn to send one request, if that turn comes within
    /// `max_wait`; false (and no turn taken) if it would not. The wait of every turn taken
    /// is `voucher_rate_limit_wait_seconds{provider}`.
    pub async fn wait_turn(&self, max_wait: Duration) -> bool {
        let started = Instant::now();
        let turn = self.next_turn(max_wait).await;
        if turn {
            metrics::histogram!("voucher_rate_limit_wait_seconds", "provider" => self.provider)
                .record(started.elapsed().as_secs_f64());
        }
        turn
    }

    async fn next_turn(&self, max_wait: Duration) -> bool {
        let deadline = Instant::now() + max_wait;
        loop {
            let now = Instant::now();
            let paused = self.paused_for();
            if !paused.is_zero() {
                if now + paused > deadline {
                    return false;
                }
                tokio::time::sleep(paused).await;
                continue;
            }
            // Registered before the lease is read, so a renewal in between is not missed.
            let renewed = self.renewed.notified();
            let (limiter, lease_end) = {
                let lease = lock(&self.lease);
                (lease.spendable(now), lease.until)
            };
            let Some(limiter) = limiter else {
                // No share now: wait for a renewal that brings one.
                if tokio::time::timeout_at(deadline, renewed).await.is_err() {
                    return false;
                }
                continue;
            };
            let wait = match limiter.check() {
                Ok(()) => return true,
                Err(not_until) => not_until.wait_time_from(DefaultClock::default().now()),
            };
            let wake = now + wait;
            if wake > deadline {
                return false;
            }
            // Look again when the turn comes, or when the lease ends or changes first.
            let wake = lease_end.map_or(wake, |end| wake.min(end));
            tokio::select! {
                _ = tokio::time::sleep_until(wake) => {}
                _ = renewed => {}
            }
        }
    }
}

/// What a process gets when `others` other holders hold `held` of `rate` between them, and
/// `rank` of them come before it in owner order.
fn grant(rate: u32, others: i32, held: i32, rank: i32) -> Grant {
    let holders = u32::try_from(others).unwrap_or(0) + 1;
    let rank = u32::try_from(rank).unwrap_or(0);
    let fair = rate / holders + u32::from(rank < rate % holders);
    let left = rate.saturating_sub(u32::try_from(held).unwrap_or(0));
    Grant {
        share: fair.min(left),
        holders,
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    // Plain values behind the lock: a panic elsewhere leaves nothing half-written.
    m.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// Renews `limits`' leases for `owner` every [`RENEW`] until `shutdown`, then gives them
/// back.
pub async fn keep_leases(limits: Vec<Arc<ProviderLimit>>, owner: Uuid, mut shutdown: Shutdown) {
    loop {
        for limit in &limits {
            if let Err(e) = limit.renew(owner).await {
                if let Some(n) = INFRA_LOG.may_log() {
                    tracing::warn!(provider = limit.provider, error = %e, similar_lines_suppressed = n,
                        "cannot renew the rate lease; sends stop when it ends");
                }
            }
        }
        tokio::select! {
            _ = shutdown.wait() => break,
            _ = tokio::time::sleep(RENEW) => {}
        }
    }
    for limit in &limits {
        if let Err(e) = limit.release(owner).await {
            tracing::warn!(provider = limit.provider, error = %e, "could not give the rate share back; it ends with its lease");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn grants_add_up_to_the_rate_and_never_beyond() {
        // Alone: everything.
        assert_eq!(grant(50, 0, 0, 0).share, 50);
        // Three holders: 17 + 17 + 16, whoever asks in whatever order, once settled.
        let shares: Vec<u32> = (0..3).map(|rank| grant(50, 2, 0, rank).share).collect();
        assert_eq!(shares, vec![17, 17, 16]);
        // A newcomer while one holder still has everything: nothing yet.
        assert_eq!(grant(50, 1, 50, 0).share, 0);
        // ... and its fair share once the other renewed down to 25.
        assert_eq!(grant(50, 1, 25, 1).share, 25);
        // Never more than what is left.
        assert_eq!(grant(50, 2, 40, 0).share, 10);
        assert_eq!(grant(50, 2, 60, 0).share, 0);
    }

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

    #[tokio::test]
    async fn turns_are_spaced_by_the_share_and_an_ended_lease_sends_nothing() {
        let limit = ProviderLimit::new("p", 10, 1, None);
        // A burst of two, then 100 ms apart: the fourth turn is not within 50 ms.
        assert!(limit.wait_turn(Duration::ZERO).await);
        assert!(limit.wait_turn(Duration::ZERO).await);
        assert!(limit.wait_turn(Duration::from_millis(150)).await);
        assert!(!limit.wait_turn(Duration::from_millis(50)).await);
        // A lease that has ended: no turn at all until a renewal.
        limit.set_lease(Lease::new(10, Some(Instant::now())));
        assert_eq!(limit.share(), 0);
        assert!(!limit.wait_turn(Duration::from_millis(300)).await);
    }
}
