//! The outbox: deliveries owed, written with the outcome, drained by the callback worker.
//!
//! Callback rows are claimed per destination (scheme, host and port), never more at once
//! than the destination's room, and not at all while the destination is paused by a
//! `Retry-After`, its circuit is open, or its URL is disabled. What one attempt did to a row
//! (and to its destination) is written in one transaction with the attempt's log line
//! ([`Store::record_callback`]).

use std::time::Duration;

use chrono::{DateTime, Utc};
use tokio_postgres::Transaction;
use uuid::Uuid;

use super::Store;
use super::fast_path::{Delivered, DeliveredCallback};
use crate::command::Outcome;
use crate::error::Result;
use crate::webhook::Attempt;

/// Where an outbox row goes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Channel {
    /// `voucher.events`, routing key in `target`.
    Event,
    /// The command's AMQP `reply_to` queue, in `target`.
    Reply,
    /// HTTP POST to the URL in `target`.
    Callback,
    /// The notice of a dead callback (`origin_id`), for the queue in `target`.
    Dead,
}

impl Channel {
    pub(crate) fn as_str(self) -> &'static str {
        match self {
            Channel::Event => "event",
            Channel::Reply => "reply",
            Channel::Callback => "callback",
            Channel::Dead => "dead",
        }
    }

    fn parse(s: &str) -> Channel {
        match s {
            "event" => Channel::Event,
            "reply" => Channel::Reply,
            "dead" => Channel::Dead,
            _ => Channel::Callback,
        }
    }
}

/// One claimed delivery.
#[derive(Debug, Clone)]
pub struct OutboxItem {
    pub id: i64,
    pub event_id: String,
    /// The transaction or rejection the outcome belongs to, for the logs.
    pub transaction_id: Option<Uuid>,
    pub channel: Channel,
    pub target: String,
    /// `scheme://host:port` of a callback; empty for the AMQP channels.
    pub destination: String,
    pub correlation_id: Option<String>,
    /// The callback row a dead-letter notice is about.
    pub origin_id: Option<i64>,
    /// The outcome JSON, decrypted; for a dead-letter notice, the notice.
    pub payload: Vec<u8>,
    /// Attempts already made that used a step of the schedule (this one not included).
    pub attempts: i32,
    /// Attempts already answered with `Retry-After` without using a step.
    pub throttled: i32,
    /// This claim's lock: results are written only while the row still carries it, so a
    /// worker whose claim expired (another one took the row) writes nothing.
    pub claim: DateTime<Utc>,
}

/// What one callback attempt means for its row.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum AfterAttempt {
    Delivered,
    /// A step of the schedule is used; the next attempt after `wait`.
    Retry {
        wait: Duration,
    },
    /// The receiver asked for time: no step is used, and the whole destination waits.
    Throttled {
        wait: Duration,
    },
    /// 410 Gone: no step is used; the URL waits until an operator enables it.
    Disabled,
    /// Nothing more will be tried: a notice goes to the dead queue. `failed` when the
    /// destination failed (the last step used), not when the URL was refused.
    Dead {
        failed: bool,
    },
}

/// When a destination's circuit opens, and for how long.
#[derive(Debug, Clone, Copy)]
pub struct Circuit {
    pub failures: u32,
    pub open_for: Duration,
}

/// `scheme://host:port` of a URL, the unit of per-destination limits and backpressure.
pub fn destination_of(url: &str) -> String {
    match reqwest::Url::parse(url) {
        Ok(u) => format!(
            "{}://{}:{}",
            u.scheme(),
            u.host_str().unwrap_or_default(),
            u.port_or_known_default().unwrap_or_default()
        ),
        Err(_) => url.to_ascii_lowercase(),
    }
}

/// Adds one row inside the caller's database transaction.
#[allow(clippy::too_many_arguments)]
pub(crate) async fn insert(
    tx: &Transaction<'_>,
    outcome: &Outcome,
    sealed: &[u8],
    transaction_id: Option<Uuid>,
    rejection_id: Option<Uuid>,
    channel: Channel,
    target: &str,
    correlation_id: Option<&str>,
) -> Result<()> {
    let destination = match channel {
        Channel::Callback => destination_of(target),
        _ => String::new(),
    };
    // A callback to a URL disabled by a 410 waits out of the claim's sight until enabled.
    tx.execute(
        "INSERT INTO outbox (event_id, transaction_id, rejection_id, channel, target, correlation_id,
                             payload_sealed, destination, next_attempt_at)
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8,
                 CASE WHEN $4 = 'callback'
                           AND EXISTS (SELECT 1 FROM callback_disabled_urls WHERE url = $5)
                      THEN 'infinity'::timestamptz ELSE now() END)",
        &[&outcome.event_id, &transaction_id, &rejection_id, &channel.as_str(), &target, &correlation_id, &sealed, &destination],
    )
    .await?;
    Ok(())
}

/// What a claim must leave alone: deliveries this process already has in flight, per
/// destination, and the cap per destination.
#[derive(Debug, Clone, Default)]
pub struct Busy {
    pub destinations: Vec<String>,
    pub in_flight: Vec<i32>,
    /// Rows this process is still working on, whatever their claim says.
    pub rows: Vec<i64>,
    pub per_destination: i32,
    /// The schedule's first step: how long a callback waits before its first attempt.
    pub first_wait: Duration,
    /// This process: its claims hold while it lives (see `store::processes`).
    pub owner: uuid::Uuid,
}

/// The claim. Due rows, minus paused or open-circuit destinations, disabled URLs and
/// destinations that already have all their room in flight, are taken in due order, at
/// most eight times the limit of them (`due`: a walk of the `outbox_due` index that stops
/// there, so a backlog of thousands costs a claim no more than a backlog of hundreds). Those
/// are numbered per destination; a callback row is taken only while its number fits the room
/// left at its destination (one probe at a time while a circuit is half-open). A row
/// claimed by a process that has died is free at once, whatever its claim's time says
/// (`live` is worked out once per claim, over the processes not known to be stopped).
const CLAIM: &str = "
WITH busy AS (
    SELECT * FROM unnest($3::text[], $4::int[]) AS b(destination, in_flight)
), live AS (
    SELECT id FROM relay_processes WHERE stopped_at IS NULL AND relay_process_alive(id, $9)
), due AS (
    SELECT o.id, o.channel, o.destination, o.next_attempt_at,
           (CASE WHEN d.circuit_open_until IS NOT NULL THEN 1 ELSE $5 END)
               - coalesce(b.in_flight, 0) AS room
    FROM outbox o
    LEFT JOIN callback_destinations d ON d.destination = o.destination AND o.channel = 'callback'
    LEFT JOIN busy b ON b.destination = o.destination
    WHERE o.delivered_at IS NULL AND o.dead_at IS NULL AND o.next_attempt_at <= now()
      AND NOT (o.channel = 'callback' AND o.attempts = 0
               AND o.created_at > now() - make_interval(secs => $6))
      AND o.id <> ALL($7::bigint[])
      AND (o.locked_until IS NULL OR o.locked_until < now()
           OR (o.locked_by IS NOT NULL AND o.locked_by NOT IN (SELECT id FROM live)))
      AND (d.paused_until IS NULL OR d.paused_until <= now())
      AND (d.circuit_open_until IS NULL OR d.circuit_open_until <= now())
      AND (o.channel <> 'callback'
           OR ((CASE WHEN d.circuit_open_until IS NOT NULL THEN 1 ELSE $5 END)
                   > coalesce(b.in_flight, 0)
               AND NOT EXISTS (SELECT 1 FROM callback_disabled_urls u WHERE u.url = o.target)))
    ORDER BY o.next_attempt_at, o.id
    LIMIT $1::bigint * 8
), candidates AS (
    SELECT id, channel, next_attempt_at, room,
           row_number() OVER (PARTITION BY destination ORDER BY next_attempt_at, id) AS n
    FROM due
)
UPDATE outbox SET locked_until = now() + make_interval(secs => $2), locked_by = $8
WHERE id IN (
    SELECT id FROM outbox WHERE id IN (
        SELECT id FROM candidates
        WHERE channel <> 'callback' OR n <= room
        ORDER BY next_attempt_at, id
        LIMIT $1)
    FOR UPDATE SKIP LOCKED)
  AND (locked_until IS NULL OR locked_until < now()
       OR (locked_by IS NOT NULL AND locked_by NOT IN (SELECT id FROM live)))
RETURNING id, event_id, coalesce(transaction_id, rejection_id) AS transaction_id, channel,
          target, destination, correlation_id, origin_id, payload_sealed, attempts, throttled,
          locked_until";

impl Store {
    /// Claims up to `limit` due rows for `lock_for`; a crashed worker's claims expire and
    /// its rows are delivered again (at least once, with the same event id).
    pub async fn claim_outbox(
        &self,
        limit: i64,
        lock_for: Duration,
        busy: &Busy,
    ) -> Result<Vec<OutboxItem>> {
        let client = self.pool.get().await?;
        let secs = lock_for.as_secs_f64();
        let claim = client.prepare_cached(CLAIM).await?;
        let rows = client
            .query(
                &claim,
                &[
                    &limit,
                    &secs,
                    &busy.destinations,
                    &busy.in_flight,
                    &busy.per_destination,
                    &busy.first_wait.as_secs_f64(),
                    &busy.rows,
                    &busy.owner,
                    &super::processes::GRACE.as_secs_f64(),
                ],
            )
            .await?;
        let mut items = Vec::with_capacity(rows.len());
        for row in rows {
            let id: i64 = row.get("id");
            let sealed: Vec<u8> = row.get("payload_sealed");
            let channel = Channel::parse(row.get("channel"));
            let payload = match channel {
                Channel::Dead => self.open_notice(&sealed),
                _ => self
                    .open_outcome(&sealed)
                    .map(|o| serde_json::to_vec(&o).unwrap_or_default()),
            };
            let payload = match payload {
                Ok(p) => p,
                Err(e) => {
                    // One unreadable row (a changed DATA_ENCRYPTION_KEY) must not block
                    // every delivery behind it: it is set aside for operators.
                    tracing::error!(outbox_id = id, error = %e, "outbox row cannot be read; marked dead");
                    client
                        .execute(
                            "UPDATE outbox SET dead_at = now(), locked_until = NULL, last_error = $2 WHERE id = $1",
                            &[&id, &e.to_string()],
                        )
                        .await?;
                    continue;
                }
            };
            items.push(OutboxItem {
                id,
                event_id: row.get("event_id"),
                transaction_id: row.get("transaction_id"),
                channel,
                target: row.get("target"),
                destination: row.get("destination"),
                correlation_id: row.get("correlation_id"),
                origin_id: row.get("origin_id"),
                payload,
                attempts: row.get("attempts"),
                throttled: row.get("throttled"),
                claim: row.get("locked_until"),
            });
        }
        Ok(items)
    }

    /// An AMQP publish failed: it is tried again after `retry_in` (the broker coming back is
    /// only a matter of time, so these rows never die).
    pub async fn outbox_failed(
        &self,
        item: &OutboxItem,
        error: &str,
        retry_in: Duration,
    ) -> Result<()> {
        let client = self.pool.get().await?;
        client
            .execute(
                "UPDATE outbox SET locked_until = NULL, last_error = $3, attempts = attempts + 1,
                     next_attempt_at = now() + make_interval(secs => $4)
                 WHERE id = $1 AND locked_until = $2",
                &[&item.id, &item.claim, &error, &retry_in.as_secs_f64()],
            )
            .await?;
        Ok(())
    }

    /// Records one callback attempt and what it means, in one transaction: the row, the
    /// attempt log line, its destination's backpressure state, and the dead-letter notice.
    /// Returns false, writing nothing, when this worker's claim has expired and the row is
    /// another worker's now.
    pub async fn record_callback(
        &self,
        item: &OutboxItem,
        attempt: &Attempt,
        after: AfterAttempt,
        circuit: Circuit,
        dead_queue: &str,
    ) -> Result<bool> {
        if after == AfterAttempt::Delivered {
            return self.record_delivered(item, attempt).await;
        }
        let reason = attempt.reason();
        let mut client = self.pool.get().await?;
        let tx = client.transaction().await?;
        if !settle_row(&tx, item, after, &reason).await? {
            return Ok(false);
        }
        log_attempt(&tx, item, attempt).await?;
        match after {
            AfterAttempt::Delivered | AfterAttempt::Dead { failed: false } => {}
            AfterAttempt::Retry { .. } | AfterAttempt::Dead { failed: true } => {
                count_failure(&tx, &item.destination, circuit).await?
            }
            AfterAttempt::Throttled { wait } => {
                pause_destination(&tx, &item.destination, wait).await?
            }
            AfterAttempt::Disabled => {
                tx.execute(
                    "INSERT INTO callback_disabled_urls (url, reason) VALUES ($1, $2)
                     ON CONFLICT (url) DO NOTHING",
                    &[&item.target, &reason],
                )
                .await?;
            }
        }
        match after {
            AfterAttempt::Dead { .. } => self.queue_dead_notice(&tx, item, dead_queue).await?,
            // Whatever is pending for a disabled URL waits out of the claim's sight, this row
            // included.
            _ => super::callbacks::park_disabled(&*tx, Some(&item.target)).await?,
        }
        tx.commit().await?;
        Ok(true)
    }

    /// The common case, written as the batched path writes it (see
    /// [`fast_path::DeliveredWrite`](super::fast_path::DeliveredWrite)).
    async fn record_delivered(&self, item: &OutboxItem, attempt: &Attempt) -> Result<bool> {
        use super::group_commit::BatchWrite;
        let delivered = [delivered(item, Some(attempt))];
        let settled = super::fast_path::DeliveredWrite(self.clone())
            .write(&delivered)
            .await?;
        Ok(settled.first().copied().unwrap_or(false))
    }

    /// Queues the notice for the dead queue as a `dead` outbox row, published like any other
    /// (with confirms, retried). It is built now, in the transaction that ends the callback,
    /// so it says why it died even if an operator replays it before it is published.
    async fn queue_dead_notice(
        &self,
        tx: &Transaction<'_>,
        item: &OutboxItem,
        dead_queue: &str,
    ) -> Result<()> {
        let notice = super::callbacks::dead_letter_notice(tx, item.id, &item.payload).await?;
        let sealed = self.sealer.seal(&notice);
        tx.execute(
            "INSERT INTO outbox (event_id, transaction_id, rejection_id, channel, target,
                                 payload_sealed, origin_id)
             SELECT event_id, transaction_id, rejection_id, 'dead', $2, $3, id
             FROM outbox WHERE id = $1",
            &[&item.id, &dead_queue, &sealed],
        )
        .await?;
        Ok(())
    }
}

/// Writes what an attempt means for its row, if this claim still holds it.
async fn settle_row(
    tx: &Transaction<'_>,
    item: &OutboxItem,
    after: AfterAttempt,
    reason: &str,
) -> Result<bool> {
    use tokio_postgres::types::Type;
    let (set, wait) = match after {
        AfterAttempt::Delivered => (
            "delivered_at = now(), last_error = NULL, attempts = attempts + 1",
            Duration::ZERO,
        ),
        AfterAttempt::Retry { wait } => (
            "next_attempt_at = now() + make_interval(secs => $4), last_error = $3,
             attempts = attempts + 1",
            wait,
        ),
        AfterAttempt::Throttled { wait } => (
            "next_attempt_at = now() + make_interval(secs => $4), last_error = $3,
             throttled = throttled + 1",
            wait,
        ),
        // Out of the claim's sight until an operator enables the URL.
        AfterAttempt::Disabled => (
            "next_attempt_at = 'infinity', last_error = $3",
            Duration::ZERO,
        ),
        AfterAttempt::Dead { .. } => (
            "dead_at = now(), last_error = $3, attempts = attempts + 1",
            Duration::ZERO,
        ),
    };
    // Typed, since each form uses only some of the parameters.
    let statement = tx
        .prepare_typed(
            &format!(
                "UPDATE outbox SET locked_until = NULL, {set}
                 WHERE id = $1 AND locked_until = $2 AND delivered_at IS NULL AND dead_at IS NULL"
            ),
            &[Type::INT8, Type::TIMESTAMPTZ, Type::TEXT, Type::FLOAT8],
        )
        .await?;
    let updated = tx
        .execute(
            &statement,
            &[&item.id, &item.claim, &reason, &wait.as_secs_f64()],
        )
        .await?;
    Ok(updated == 1)
}

/// Holds every delivery to `destination` back for `wait` (never shortening a longer pause).
async fn pause_destination(tx: &Transaction<'_>, destination: &str, wait: Duration) -> Result<()> {
    tx.execute(
        "INSERT INTO callback_destinations (destination, paused_until)
         VALUES ($1, now() + make_interval(secs => $2))
         ON CONFLICT (destination) DO UPDATE
         SET paused_until = greatest(callback_destinations.paused_until, excluded.paused_until),
             updated_at = now()",
        &[&destination, &wait.as_secs_f64()],
    )
    .await?;
    Ok(())
}

/// One more consecutive failure at `destination`; enough of them open its circuit (again,
/// when a half-open probe failed).
async fn count_failure(tx: &Transaction<'_>, destination: &str, circuit: Circuit) -> Result<()> {
    let failures = i32::try_from(circuit.failures).unwrap_or(i32::MAX);
    tx.execute(
        "INSERT INTO callback_destinations (destination, consecutive_failures)
         VALUES ($1, 1)
         ON CONFLICT (destination) DO UPDATE
         SET consecutive_failures = callback_destinations.consecutive_failures + 1,
             updated_at = now()",
        &[&destination],
    )
    .await?;
    tx.execute(
        "UPDATE callback_destinations
         SET circuit_open_until = now() + make_interval(secs => $3)
         WHERE destination = $1 AND consecutive_failures >= $2",
        &[&destination, &failures, &circuit.open_for.as_secs_f64()],
    )
    .await?;
    Ok(())
}

/// What marks `item` delivered: for a callback, with its attempt's log line.
pub fn delivered(item: &OutboxItem, attempt: Option<&Attempt>) -> Delivered {
    Delivered {
        id: item.id,
        claim: item.claim,
        callback: attempt.map(|attempt| {
            let (status, latency_ms, dialled_ip) = attempt_columns(attempt);
            DeliveredCallback {
                at: attempt.at,
                dialled_ip,
                status,
                latency_ms,
                response_body: attempt.response_body.clone(),
                destination: item.destination.clone(),
            }
        }),
    }
}

/// An attempt's status, latency and dialled address as the attempt log stores them.
fn attempt_columns(attempt: &Attempt) -> (Option<i32>, i32, Option<String>) {
    (
        attempt.status.map(i32::from),
        i32::try_from(attempt.latency.as_millis()).unwrap_or(i32::MAX),
        attempt.dialled_ip.map(|ip| ip.to_string()),
    )
}

/// The attempt log line (a delivered one is written by `DELIVERED`).
async fn log_attempt(tx: &Transaction<'_>, item: &OutboxItem, attempt: &Attempt) -> Result<()> {
    let (status, latency_ms, dialled) = attempt_columns(attempt);
    tx.execute(
        "INSERT INTO callback_attempts (outbox_id, event_id, attempted_at, url, dialled_ip, status,
                                        latency_ms, result, error, response_body)
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10)",
        &[
            &item.id,
            &item.event_id,
            &attempt.at,
            &item.target,
            &dialled,
            &status,
            &latency_ms,
            &attempt.result(),
            &attempt.error,
            &attempt.response_body,
        ],
    )
    .await?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn destinations_are_scheme_host_and_port() {
        assert_eq!(
            destination_of("https://Hooks.Example.com/a?b=1"),
            "https://hooks.example.com:443"
        );
        assert_eq!(
            destination_of("http://127.0.0.2:9000/x"),
            "http://127.0.0.2:9000"
        );
        assert_eq!(destination_of("http://[::1]/"), "http://[::1]:80");
    }
}
