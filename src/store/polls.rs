//! Polls: the durable schedule of work that waits on a provider (additional data,
//! unknown-outcome resolution, a raffle's draw). The row is the truth; a RabbitMQ
//! delay-tier message only wakes a worker up, and the sweeper republishes wake-ups that
//! were lost. The purpose is the provider's own word.

use std::time::Duration;

use tokio_postgres::Transaction;
use uuid::Uuid;

use super::Store;
use super::state::TxState;
use crate::command::Subject;
use crate::error::{RelayError, Result};
use crate::providers::work::{PollJob, PollPlan};

/// A claimed poll: the provider's part, and what the worker needs to finish or
/// reschedule it.
#[derive(Debug, Clone)]
pub struct ClaimedPoll {
    pub job: PollJob,
    /// Proves this worker's claim when it reschedules.
    pub token: Uuid,
    /// The transaction's state (what a finish moves it from).
    pub state: TxState,
    /// Time left until the deadline (zero once past it).
    pub deadline_left: Duration,
}

/// When a poll is due: now, later (wait this long), or not at all (finished or taken).
#[derive(Debug, Clone)]
pub enum Due {
    Now(Box<ClaimedPoll>),
    /// Due after `wait`; `provider` routes its wake-up.
    Later {
        wait: Duration,
        provider: String,
    },
    Gone,
}

/// Creates or replaces the poll of `id` inside the caller's database transaction. A plan
/// without `first_in` is due at once (the workers fill it from the delay tiers).
pub(crate) async fn schedule(tx: &Transaction<'_>, id: Uuid, plan: &PollPlan) -> Result<()> {
    tx.execute(
        "INSERT INTO polls (transaction_id, purpose, next_at, deadline)
         VALUES ($1, $2, now() + make_interval(secs => $3), now() + make_interval(secs => $4))
         ON CONFLICT (transaction_id) DO UPDATE
             SET purpose = EXCLUDED.purpose, attempts = 0, next_at = EXCLUDED.next_at,
                 deadline = EXCLUDED.deadline, locked_until = NULL, updated_at = now()",
        &[
            &id,
            &plan.purpose,
            &plan.first_in.unwrap_or_default().as_secs_f64(),
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
                        (p.locked_until IS NOT NULL AND p.locked_until > now()) AS locked,
                        t.provider
                 FROM polls p JOIN transactions t ON t.id = p.transaction_id
                 WHERE p.transaction_id = $1 AND p.parked_at IS NULL",
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
            return Ok(Due::Later {
                wait: Duration::from_secs_f64(wait),
                provider: row.get("provider"),
            });
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
                           t.provider_ref, t.local_reference, t.partial_sealed,
                           EXTRACT(EPOCH FROM (now() - t.sent_at))::float8 AS since_sent",
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
        Ok(Due::Now(Box::new(ClaimedPoll {
            job: PollJob {
                transaction_id: id,
                purpose: row.get("purpose"),
                attempt: row.get("attempts"),
                past_deadline: row.get("past_deadline"),
                subject: Subject {
                    command_id: row.get("command_id"),
                    source: row.get("source"),
                    kind: row.get("kind"),
                    provider: row.get("provider"),
                },
                local_reference: row.get("local_reference"),
                refs: row.get("provider_ref"),
                partial,
                since_sent: row
                    .get::<_, Option<f64>>("since_sent")
                    .map(|s| Duration::from_secs_f64(s.max(0.0))),
            },
            token,
            state: TxState::parse(row.get("state"))?,
            deadline_left: Duration::from_secs_f64(row.get::<_, f64>("deadline_left")),
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
