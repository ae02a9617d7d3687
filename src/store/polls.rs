//! Polls: the durable schedule of work that waits on a provider (additional data,
//! unknown-outcome resolution). The row is the truth; a RabbitMQ delay-tier message only
//! wakes a worker up, and the sweeper republishes wake-ups that were lost.

use std::time::Duration;

use serde_json::Value;
use tokio_postgres::Transaction;
use uuid::Uuid;

use super::Store;
use super::transactions::TxState;
use crate::error::{RelayError, Result};

/// Why a transaction is being polled.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Purpose {
    /// The outcome is unknown: query the provider by the transaction's reference.
    Resolve,
    /// Sold; fetch the additional data.
    AdditionalData,
    /// A raffle ticket; fetch the draw's result.
    Finished,
}

impl Purpose {
    pub fn as_str(self) -> &'static str {
        match self {
            Purpose::Resolve => "resolve",
            Purpose::AdditionalData => "additional_data",
            Purpose::Finished => "finished",
        }
    }

    fn parse(s: &str) -> Result<Purpose> {
        match s {
            "resolve" => Ok(Purpose::Resolve),
            "additional_data" => Ok(Purpose::AdditionalData),
            "finished" => Ok(Purpose::Finished),
            other => Err(RelayError::Corrupt(format!("poll purpose {other:?}"))),
        }
    }
}

/// A poll to start: what for, when first, and until when at the latest.
#[derive(Debug, Clone, Copy)]
pub struct PollPlan {
    pub purpose: Purpose,
    pub first_in: Duration,
    pub deadline_in: Duration,
}

/// A claimed poll with what a worker needs to run it.
#[derive(Debug, Clone)]
pub struct PollJob {
    pub transaction_id: Uuid,
    pub purpose: Purpose,
    /// Attempts including this one.
    pub attempt: i32,
    pub past_deadline: bool,
    /// Time left until the deadline (zero once past it).
    pub deadline_left: Duration,
    /// Proves this worker's claim when it reschedules.
    pub token: Uuid,
    pub state: TxState,
    pub source: String,
    pub command_id: String,
    pub kind: String,
    pub provider: String,
    pub terminal_id: Option<i32>,
    pub operator_id: Option<i32>,
    pub local_reference: Option<i32>,
    /// What the sale returned before its additional data, if anything.
    pub partial: Option<Value>,
}

/// When a poll is due: now, later (wait this long), or not at all (finished or taken).
#[derive(Debug, Clone)]
pub enum Due {
    Now(Box<PollJob>),
    Later(Duration),
    Gone,
}

/// Creates or replaces the poll of `id` inside the caller's database transaction.
pub(crate) async fn schedule(tx: &Transaction<'_>, id: Uuid, plan: &PollPlan) -> Result<()> {
    tx.execute(
        "INSERT INTO polls (transaction_id, purpose, next_at, deadline)
         VALUES ($1, $2, now() + make_interval(secs => $3), now() + make_interval(secs => $4))
         ON CONFLICT (transaction_id) DO UPDATE
             SET purpose = EXCLUDED.purpose, attempts = 0, next_at = EXCLUDED.next_at,
                 deadline = EXCLUDED.deadline, locked_until = NULL, updated_at = now()",
        &[
            &id,
            &plan.purpose.as_str(),
            &plan.first_in.as_secs_f64(),
            &plan.deadline_in.as_secs_f64(),
        ],
    )
    .await?;
    Ok(())
}

impl Store {
    /// Claims the poll of `id` if it is due, for `lease`; else says when it will be.
    pub async fn claim_poll(&self, id: Uuid, lease: Duration) -> Result<Due> {
        let client = self.pool.get().await?;
        let row = client
            .query_opt(
                "SELECT GREATEST(EXTRACT(EPOCH FROM (p.next_at - now())), 0)::float8 AS wait,
                        (p.locked_until IS NOT NULL AND p.locked_until > now()) AS locked
                 FROM polls p WHERE p.transaction_id = $1 AND p.parked_at IS NULL",
                &[&id],
            )
            .await?;
        let Some(row) = row else {
            return Ok(Due::Gone);
        };
        let wait: f64 = row.get("wait");
        if row.get::<_, bool>("locked") {
            return Ok(Due::Gone);
        }
        // Wake-ups may come early (a tier shorter than the wait); more than half a second
        // early means wait again.
        if wait > 0.5 {
            return Ok(Due::Later(Duration::from_secs_f64(wait)));
        }
        // One statement decides: due, unlocked, not parked, transaction still waiting. Two
        // wake-ups for the same poll cannot both pass it.
        let token = Uuid::now_v7();
        let row = client
            .query_opt(
                "UPDATE polls p SET locked_until = now() + make_interval(secs => $2), locked_by = $3,
                        attempts = p.attempts + 1, updated_at = now()
                 FROM transactions t
                 WHERE p.transaction_id = $1 AND t.id = p.transaction_id
                   AND t.state IN ('unknown', 'awaiting_data', 'awaiting_draw')
                   AND p.parked_at IS NULL
                   AND p.next_at <= now() + interval '0.5 seconds'
                   AND (p.locked_until IS NULL OR p.locked_until <= now())
                 RETURNING p.purpose, p.attempts, p.deadline <= now() AS past_deadline,
                           GREATEST(EXTRACT(EPOCH FROM (p.deadline - now())), 0)::float8 AS deadline_left,
                           t.state, t.source, t.command_id, t.kind, t.provider,
                           t.terminal_id, t.operator_id, t.local_reference, t.partial_sealed",
                &[&id, &lease.as_secs_f64(), &token],
            )
            .await?;
        let Some(row) = row else {
            return Ok(Due::Gone);
        };
        let partial = match row.get::<_, Option<Vec<u8>>>("partial_sealed") {
            Some(sealed) => {
                let plain = self.sealer.open(&sealed).ok_or_else(|| {
                    RelayError::Corrupt("partial result cannot be decrypted".into())
                })?;
                Some(
                    serde_json::from_slice(&plain)
                        .map_err(|e| RelayError::Corrupt(e.to_string()))?,
                )
            }
            None => None,
        };
        Ok(Due::Now(Box::new(PollJob {
            transaction_id: id,
            purpose: Purpose::parse(row.get("purpose"))?,
            attempt: row.get("attempts"),
            past_deadline: row.get("past_deadline"),
            deadline_left: Duration::from_secs_f64(row.get::<_, f64>("deadline_left")),
            token,
            state: TxState::parse(row.get("state"))?,
            source: row.get("source"),
            command_id: row.get("command_id"),
            kind: row.get("kind"),
            provider: row.get("provider"),
            terminal_id: row.get("terminal_id"),
            operator_id: row.get("operator_id"),
            local_reference: row.get("local_reference"),
            partial,
        })))
    }

    /// Not final yet: poll again after `wait` and release the claim. Does nothing if this
    /// worker's claim (`token`) was overtaken meanwhile.
    pub async fn reschedule_poll(&self, id: Uuid, token: Uuid, wait: Duration) -> Result<bool> {
        let client = self.pool.get().await?;
        let n = client
            .execute(
                "UPDATE polls SET next_at = now() + make_interval(secs => $3), locked_until = NULL,
                        locked_by = NULL, enqueued_at = now(), updated_at = now()
                 WHERE transaction_id = $1 AND locked_by = $2",
                &[&id, &token, &wait.as_secs_f64()],
            )
            .await?;
        Ok(n == 1)
    }

    /// Sets a poll aside for operators: it fails the same way every time. The transaction
    /// keeps its waiting state, and the sweeper no longer wakes it.
    pub async fn park_poll(&self, id: Uuid, reason: &str) -> Result<()> {
        let client = self.pool.get().await?;
        client
            .execute(
                "UPDATE polls SET parked_at = now(), parked_reason = $2, locked_until = NULL,
                        locked_by = NULL, updated_at = now()
                 WHERE transaction_id = $1",
                &[&id, &reason],
            )
            .await?;
        Ok(())
    }

    /// Polls overdue by more than `grace` whose wake-up was lost, with their provider; marks
    /// them re-enqueued. At most 500 at a time, so a backlog is spread over sweeps.
    pub async fn overdue_polls(&self, grace: Duration) -> Result<Vec<(Uuid, String)>> {
        let client = self.pool.get().await?;
        let rows = client
            .query(
                "WITH due AS (
                     SELECT transaction_id FROM polls
                     WHERE next_at < now() - make_interval(secs => $1)
                       AND parked_at IS NULL
                       AND (enqueued_at IS NULL OR enqueued_at < now() - make_interval(secs => $1))
                       AND (locked_until IS NULL OR locked_until < now())
                     ORDER BY next_at LIMIT 500
                     FOR UPDATE SKIP LOCKED)
                 UPDATE polls p SET enqueued_at = now()
                 FROM due, transactions t
                 WHERE p.transaction_id = due.transaction_id AND t.id = p.transaction_id
                 RETURNING p.transaction_id, t.provider",
                &[&grace.as_secs_f64()],
            )
            .await?;
        Ok(rows.iter().map(|r| (r.get(0), r.get(1))).collect())
    }
}
