//! The outbox: deliveries owed, written with the outcome, drained by the callback worker.

use std::time::Duration;

use tokio_postgres::Transaction;
use uuid::Uuid;

use super::Store;
use crate::command::Outcome;
use crate::error::Result;

/// Where an outbox row goes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Channel {
    /// `voucher.events`, routing key in `target`.
    Event,
    /// The command's AMQP `reply_to` queue, in `target`.
    Reply,
    /// HTTP POST to the URL in `target`.
    Callback,
}

impl Channel {
    fn as_str(self) -> &'static str {
        match self {
            Channel::Event => "event",
            Channel::Reply => "reply",
            Channel::Callback => "callback",
        }
    }

    fn parse(s: &str) -> Channel {
        match s {
            "event" => Channel::Event,
            "reply" => Channel::Reply,
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
    pub correlation_id: Option<String>,
    /// The outcome JSON, decrypted.
    pub payload: Vec<u8>,
    /// Attempts including the current one.
    pub attempts: i32,
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
    tx.execute(
        "INSERT INTO outbox (event_id, transaction_id, rejection_id, channel, target, correlation_id, payload_sealed)
         VALUES ($1, $2, $3, $4, $5, $6, $7)",
        &[&outcome.event_id, &transaction_id, &rejection_id, &channel.as_str(), &target, &correlation_id, &sealed],
    )
    .await?;
    Ok(())
}

impl Store {
    /// Claims up to `limit` due rows for `lock_for`; a crashed worker's claims expire.
    pub async fn claim_outbox(&self, limit: i64, lock_for: Duration) -> Result<Vec<OutboxItem>> {
        let client = self.pool.get().await?;
        let secs = lock_for.as_secs_f64();
        let rows = client
            .query(
                "UPDATE outbox SET locked_until = now() + make_interval(secs => $2), attempts = attempts + 1
                 WHERE id IN (
                     SELECT id FROM outbox
                     WHERE delivered_at IS NULL AND dead_at IS NULL AND next_attempt_at <= now()
                       AND (locked_until IS NULL OR locked_until < now())
                     ORDER BY next_attempt_at, id
                     LIMIT $1
                     FOR UPDATE SKIP LOCKED)
                 RETURNING id, event_id, coalesce(transaction_id, rejection_id) AS transaction_id, channel, target, correlation_id, payload_sealed, attempts",
                &[&limit, &secs],
            )
            .await?;
        let mut items = Vec::with_capacity(rows.len());
        for row in rows {
            let id: i64 = row.get("id");
            let sealed: Vec<u8> = row.get("payload_sealed");
            let outcome = match self.open_outcome(&sealed) {
                Ok(o) => o,
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
                channel: Channel::parse(row.get("channel")),
                target: row.get("target"),
                correlation_id: row.get("correlation_id"),
                payload: serde_json::to_vec(&outcome).unwrap_or_default(),
                attempts: row.get("attempts"),
            });
        }
        Ok(items)
    }

    /// The row was delivered.
    pub async fn outbox_delivered(&self, id: i64) -> Result<()> {
        let client = self.pool.get().await?;
        client
            .execute(
                "UPDATE outbox SET delivered_at = now(), locked_until = NULL, last_error = NULL WHERE id = $1",
                &[&id],
            )
            .await?;
        Ok(())
    }

    /// The attempt failed: retry after `retry_in`, or give up when it is `None`.
    pub async fn outbox_failed(
        &self,
        id: i64,
        error: &str,
        retry_in: Option<Duration>,
    ) -> Result<()> {
        let client = self.pool.get().await?;
        match retry_in {
            Some(wait) => {
                client
                    .execute(
                        "UPDATE outbox SET locked_until = NULL, last_error = $2,
                             next_attempt_at = now() + make_interval(secs => $3)
                         WHERE id = $1",
                        &[&id, &error, &wait.as_secs_f64()],
                    )
                    .await?
            }
            None => {
                client
                    .execute(
                        "UPDATE outbox SET locked_until = NULL, last_error = $2, dead_at = now() WHERE id = $1",
                        &[&id, &error],
                    )
                    .await?
            }
        };
        Ok(())
    }
}
