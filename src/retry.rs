//! Every "later" in the relay, in one place. Each user passes its own policy:
//! - [`until_done`]: infrastructure steps (PostgreSQL, the broker) retried in process while
//!   the message being handled stays unacked;
//! - [`Backoff`]: exponential backoff with [`Jitter`] (advices, outbox publishes, consumer
//!   reconnects);
//! - [`Schedule`]: a fixed list of waits (callback deliveries);
//! - [`Tiers`] and [`publish_after`] / [`publish_in_tier`]: wake-ups that ride the delay-tier
//!   queues, so nothing sleeps in a worker and a wait survives restarts.
//!
//! The rate limiter's wait for a send slot is not a retry: it is a reservation, bounded by
//! the lease (`providers::http`).

use std::future::Future;
use std::time::Duration;

use backon::{ExponentialBuilder, Retryable};
use lapin::BasicProperties;
use rand::Rng;

use crate::broker::Publisher;
use crate::broker::publisher::json_properties;
use crate::config::{Config, DelayTier};
use crate::error::{ErrorClass, RelayError};

/// How a wait is drawn around its nominal length, so that many waits that started together
/// do not end together.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Jitter {
    None,
    /// A factor drawn from `low..=high` of the nominal wait.
    Between(f64, f64),
}

impl Jitter {
    pub fn apply(self, wait: Duration) -> Duration {
        match self {
            Jitter::None => wait,
            Jitter::Between(low, high) => wait.mul_f64(rand::rng().random_range(low..=high)),
        }
    }
}

/// Exponential backoff: `base` doubled per earlier attempt, up to `cap`, then jittered.
#[derive(Debug, Clone, Copy)]
pub struct Backoff {
    pub base: Duration,
    pub cap: Duration,
    pub jitter: Jitter,
}

impl Backoff {
    /// The wait after failed attempt `attempt` (1-based).
    pub fn wait(&self, attempt: i32) -> Duration {
        let doublings = u32::try_from(attempt.saturating_sub(1))
            .unwrap_or(0)
            .min(30);
        self.jitter
            .apply(self.base.saturating_mul(1u32 << doublings).min(self.cap))
    }
}

/// An in-process retry, run by backon: waits from `base` doubling to `cap`, `max_times`
/// times. With `jitter`, backon adds a random part of the wait to each wait.
#[derive(Debug, Clone, Copy)]
pub struct InProcess {
    pub base: Duration,
    pub cap: Duration,
    pub jitter: bool,
    pub max_times: usize,
}

/// Infrastructure steps: 100 ms doubling to 5 s with jitter, 40 times (about two minutes).
/// A PostgreSQL or broker restart should delay work, never drop it.
pub const INFRASTRUCTURE: InProcess = InProcess {
    base: Duration::from_millis(100),
    cap: Duration::from_secs(5),
    jitter: true,
    max_times: 40,
};

/// Runs `op` under [`INFRASTRUCTURE`] until it succeeds or fails with a non-retryable
/// error. The message being handled stays unacked meanwhile, so even a crash loses nothing.
pub async fn until_done<T, F, Fut>(what: &str, op: F) -> Result<T, RelayError>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<T, RelayError>>,
{
    retry_in_process(&INFRASTRUCTURE, what, op).await
}

/// While PostgreSQL or the broker is away, every handler in flight retries, and the
/// dispatcher and the sweeper keep asking: one line a second says so, process-wide, not one
/// per task and attempt.
pub static INFRA_LOG: LogThrottle = LogThrottle::new();

/// Lets one log line through per second, process-wide, and counts the ones held back.
pub struct LogThrottle {
    /// Milliseconds since [`LogThrottle::epoch`] at the last line let through, plus one
    /// (0: none yet).
    last_ms: std::sync::atomic::AtomicU64,
    suppressed: std::sync::atomic::AtomicU64,
}

impl LogThrottle {
    pub const fn new() -> LogThrottle {
        LogThrottle {
            last_ms: std::sync::atomic::AtomicU64::new(0),
            suppressed: std::sync::atomic::AtomicU64::new(0),
        }
    }

    fn epoch() -> std::time::Instant {
        static EPOCH: std::sync::OnceLock<std::time::Instant> = std::sync::OnceLock::new();
        *EPOCH.get_or_init(std::time::Instant::now)
    }

    /// `Some(lines held back since the last one)` if a line may go out now.
    pub fn may_log(&self) -> Option<u64> {
        let now = u64::try_from(Self::epoch().elapsed().as_millis()).unwrap_or(u64::MAX - 1);
        self.may_log_at(now + 1)
    }

    /// [`may_log`](Self::may_log) at `now`, in milliseconds since the epoch plus one.
    fn may_log_at(&self, now: u64) -> Option<u64> {
        use std::sync::atomic::Ordering::Relaxed;
        let last = self.last_ms.load(Relaxed);
        if last != 0 && now.saturating_sub(last) < 1000 {
            self.suppressed.fetch_add(1, Relaxed);
            return None;
        }
        if self
            .last_ms
            .compare_exchange(last, now, Relaxed, Relaxed)
            .is_err()
        {
            self.suppressed.fetch_add(1, Relaxed);
            return None;
        }
        Some(self.suppressed.swap(0, Relaxed))
    }
}

impl Default for LogThrottle {
    fn default() -> Self {
        LogThrottle::new()
    }
}

/// Runs `op` until it succeeds, fails with a non-retryable error, or `policy` gives up.
pub async fn retry_in_process<T, F, Fut>(
    policy: &InProcess,
    what: &str,
    op: F,
) -> Result<T, RelayError>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<T, RelayError>>,
{
    let mut schedule = ExponentialBuilder::default()
        .with_min_delay(policy.base)
        .with_max_delay(policy.cap)
        .with_max_times(policy.max_times);
    if policy.jitter {
        schedule = schedule.with_jitter();
    }
    op.retry(schedule)
        .when(|e: &RelayError| e.class() == ErrorClass::Retryable)
        .notify(|e: &RelayError, wait: Duration| {
            if let Some(suppressed) = INFRA_LOG.may_log() {
                tracing::warn!(error = %e, step = what, retry_in_ms = wait.as_millis() as u64, similar_lines_suppressed = suppressed, "retrying");
            }
        })
        .await
}

/// A fixed list of attempt times, each wait jittered; past the list, give up.
#[derive(Debug, Clone, Copy)]
pub struct Schedule<'a> {
    /// When each attempt is made: `steps[0]` after the outcome (the claim holds a first
    /// attempt back that long), `steps[n]` after failed attempt `n`.
    pub steps: &'a [Duration],
    pub jitter: Jitter,
}

impl Schedule<'_> {
    /// The wait after failed attempt `attempt` (1-based), or `None` when that was the last.
    pub fn wait_after(&self, attempt: i32) -> Option<Duration> {
        let i = usize::try_from(attempt).ok().filter(|i| *i >= 1)?;
        let wait = self.steps.get(i)?;
        Some(self.jitter.apply(*wait))
    }
}

/// The delay tiers of `queues.toml`: queues whose TTL brings a message back to
/// `voucher.retry` after the tier's wait.
#[derive(Debug, Clone, Copy)]
pub struct Tiers<'a>(pub &'a [DelayTier]);

impl<'a> Tiers<'a> {
    /// The wait before poll attempt `attempt` (1-based): the tiers in order, then the
    /// longest one again.
    pub fn wait_before(&self, attempt: i32) -> Duration {
        let i = usize::try_from(attempt.max(1) - 1).unwrap_or(0);
        self.at(i)
            .map_or(Duration::from_secs(2), |t| Duration::from_millis(t.ttl_ms))
    }

    /// How long attempts before `attempt` waited in all (one tier each).
    pub fn waited_before(&self, attempt: i32) -> Duration {
        (1..attempt).map(|a| self.wait_before(a)).sum()
    }

    /// Tier `index`, clamped to the slowest.
    pub fn at(&self, index: usize) -> Option<&'a DelayTier> {
        self.0.get(index.min(self.0.len().saturating_sub(1)))
    }

    /// The tier that brings a message back after about `wait`: the longest not longer than
    /// `wait` (the shortest if `wait` is shorter). An early arrival finds its row not yet
    /// due and waits again.
    pub fn for_wait(&self, wait: Duration) -> Option<&'a DelayTier> {
        self.0
            .iter()
            .filter(|t| Duration::from_millis(t.ttl_ms) <= wait)
            .max_by_key(|t| t.ttl_ms)
            .or_else(|| self.0.iter().min_by_key(|t| t.ttl_ms))
    }
}

/// Publishes `body` under `routing_key` through the delay tier that brings it back to
/// `voucher.retry` after about `wait`.
pub async fn publish_after(
    publisher: &Publisher,
    config: &Config,
    routing_key: &str,
    body: &[u8],
    wait: Duration,
) -> Result<(), RelayError> {
    let tier = Tiers(&config.delay_tiers)
        .for_wait(wait)
        .ok_or_else(|| RelayError::Poison("no delay tier configured".into()))?;
    publisher
        .publish_routed(
            &config.name(&tier.name),
            routing_key,
            body,
            json_properties(),
        )
        .await
}

/// Publishes a message with its own properties through delay tier `index` (clamped to the
/// slowest), retrying while the broker is away.
pub async fn publish_in_tier(
    publisher: &Publisher,
    config: &Config,
    routing_key: &str,
    body: &[u8],
    properties: &BasicProperties,
    index: usize,
) -> Result<(), RelayError> {
    let tier = Tiers(&config.delay_tiers)
        .at(index)
        .ok_or_else(|| RelayError::Poison("no delay tier configured".into()))?;
    let exchange = config.name(&tier.name);
    until_done("delay", || {
        publisher.publish_routed(&exchange, routing_key, body, properties.clone())
    })
    .await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_retry_line_a_second_with_the_rest_counted() {
        let throttle = LogThrottle::new();
        assert_eq!(throttle.may_log_at(1), Some(0), "the first goes out");
        assert_eq!(
            throttle.may_log_at(500),
            None,
            "the next within a second is held back"
        );
        assert_eq!(throttle.may_log_at(900), None);
        // A second later the next line says how many were held back.
        assert_eq!(throttle.may_log_at(1001), Some(2));
        assert_eq!(throttle.may_log_at(1002), None);
    }

    #[test]
    fn backoff_doubles_up_to_the_cap_with_jitter() {
        let b = Backoff {
            base: Duration::from_secs(2),
            cap: Duration::from_secs(60),
            jitter: Jitter::Between(0.5, 1.0),
        };
        for _ in 0..50 {
            let first = b.wait(1);
            assert!(
                first >= Duration::from_secs(1) && first <= b.base,
                "{first:?}"
            );
            let third = b.wait(3);
            assert!(third >= Duration::from_secs(4) && third <= Duration::from_secs(8));
            let late = b.wait(40);
            assert!(late >= Duration::from_secs(30) && late <= b.cap, "{late:?}");
        }
    }

    #[test]
    fn schedule_waits_per_attempt_then_gives_up() {
        let steps = [
            Duration::ZERO,
            Duration::from_secs(1),
            Duration::from_secs(5),
        ];
        let s = Schedule {
            steps: &steps,
            jitter: Jitter::Between(0.8, 1.2),
        };
        let first = s.wait_after(1).unwrap();
        assert!(first >= Duration::from_millis(800) && first <= Duration::from_millis(1200));
        assert!(s.wait_after(2).is_some());
        // Three steps, three attempts: after the third, the delivery is dead.
        assert!(s.wait_after(3).is_none());
        assert!(s.wait_after(0).is_none());
    }

    #[test]
    fn tiers_pick_the_longest_not_longer_than_the_wait() {
        let tiers = [
            DelayTier {
                name: "d2".into(),
                ttl_ms: 2000,
            },
            DelayTier {
                name: "d10".into(),
                ttl_ms: 10_000,
            },
        ];
        let t = Tiers(&tiers);
        assert_eq!(t.for_wait(Duration::from_secs(1)).unwrap().name, "d2");
        assert_eq!(t.for_wait(Duration::from_secs(12)).unwrap().name, "d10");
        assert_eq!(t.wait_before(1), Duration::from_secs(2));
        assert_eq!(t.wait_before(9), Duration::from_secs(10));
        assert_eq!(t.waited_before(3), Duration::from_secs(12));
        assert_eq!(t.at(7).unwrap().name, "d10");
    }
}
