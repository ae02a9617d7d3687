//! Advices: store-and-forward messages (confirmations and reversals) repeated until the
//! provider answers finally.
//!
//! The row is the truth. A RabbitMQ message only says "try the advices of transaction X";
//! it rides the delay tiers between attempts and is republished explicitly each time (never
//! requeued), so the quorum delivery limit can never drop one. Advices of one transaction
//! go one at a time in `seq` order, and a confirmation is never recorded after a reversal.

use std::time::Duration;

use serde_json::{Value, json};
use tokio_postgres::Transaction;
use uuid::Uuid;

use super::Store;
use super::resend::{Resending, SendAgain};
use super::state::TxState;
use crate::command::{Outcome, Subject};
use crate::error::{RelayError, Result};
use crate::providers::work::{AdviceJob, AdviceKind, NewAdvice};

/// Records `a` for `transaction_id` inside the caller's database transaction, after every
/// advice it already has. A confirmation is not recorded once a reversal of the same
/// provider request exists (whichever transaction recorded it): "completed" can never
/// follow "undo it". Returns its id.
pub(crate) async fn insert(
    tx: &Transaction<'_>,
    transaction_id: Uuid,
    a: &NewAdvice,
) -> Result<Option<Uuid>> {
    let id = Uuid::now_v7();
    // `None` is the transaction's own request: the one of its current send.
    let request_id: Uuid = match a.request_id {
        Some(r) => r,
        None => tx
            .query_one(
                "SELECT COALESCE(request_id, id) FROM transactions WHERE id = $1",
                &[&transaction_id],
            )
            .await?
            .get(0),
    };
    let row = tx
        .query_opt(
            "INSERT INTO advices (id, transaction_id, seq, provider, operation, kind, request_id,
                                  reversal_reason, detail, data, deadline)
             SELECT $1, $2, COALESCE((SELECT max(seq) FROM advices WHERE transaction_id = $2), 0) + 1,
                    $3, $4, $5, $6, $7, $8, $9, now() + make_interval(secs => $10)
             WHERE $5 <> 'confirmation'
                OR NOT EXISTS (SELECT 1 FROM advices WHERE request_id = $6 AND kind = 'reversal')
             RETURNING id",
            &[
                &id,
                &transaction_id,
                &a.provider,
                &a.operation,
                &a.kind.as_str(),
                &request_id,
                &a.reversal_reason,
                &a.detail,
                &a.data,
                &a.budget.as_secs_f64(),
            ],
        )
        .await?;
    if row.is_none() {
        tracing::warn!(transaction_id = %transaction_id, "confirmation not recorded: the transaction is being reversed");
    }
    Ok(row.map(|r| r.get(0)))
}

/// A claimed advice: the provider's part, and what the worker needs to settle, repeat or
/// park it.
#[derive(Debug, Clone)]
pub struct ClaimedAdvice {
    pub job: AdviceJob,
    /// Proves this worker's claim.
    pub token: Uuid,
    pub past_budget: bool,
    /// Seconds since the advice was recorded.
    pub age_secs: f64,
    /// The transaction's state: a reversal's answer makes the outcome only while it is
    /// `reversing`.
    pub tx_state: TxState,
}

/// Records the final answer of a claimed advice, if this worker's claim still holds.
async fn mark_settled(
    tx: &Transaction<'_>,
    claimed: &ClaimedAdvice,
    status: Option<u16>,
    answer: Option<&Value>,
) -> Result<bool> {
    let status = status.map(i32::from);
    let n = tx
        .execute(
            "UPDATE advices SET state = 'done', final_status = $3, final_body = $4,
                    settled_at = now(), locked_until = NULL, locked_by = NULL, updated_at = now()
             WHERE id = $1 AND locked_by = $2 AND state = 'pending'",
            &[&claimed.job.id, &claimed.token, &status, &answer],
        )
        .await?;
    Ok(n == 1)
}

/// When the head advice of a transaction is due.
#[derive(Debug, Clone)]
pub enum AdviceDue {
    Now(Box<ClaimedAdvice>),
    /// Due after `wait`; `provider` routes its wake-up.
    Later {
        wait: Duration,
        provider: String,
    },
    /// Nothing pending, taken by another worker, or blocked behind a parked advice.
    Gone,
}

impl Store {
    /// Claims the first unsettled advice of `transaction_id` if it is due, for `lease`.
    pub async fn claim_advice(&self, transaction_id: Uuid, lease: Duration) -> Result<AdviceDue> {
        let mut client = self.pool.get().await?;
        let tx = client.transaction().await?;
        let row = tx
            .query_opt(
                "SELECT a.id, a.state, a.provider, a.operation, a.kind, a.request_id,
                        a.reversal_reason, a.data, a.body, a.attempts,
                        a.deadline <= now() AS past_budget,
                        EXTRACT(EPOCH FROM (now() - a.created_at))::float8 AS age,
                        GREATEST(EXTRACT(EPOCH FROM (a.next_at - now())), 0)::float8 AS wait,
                        (a.locked_until IS NOT NULL AND a.locked_until > now()) AS locked,
                        t.state AS tx_state, t.command_id, t.source, t.kind AS tx_kind
                 FROM advices a JOIN transactions t ON t.id = a.transaction_id
                 WHERE a.transaction_id = $1 AND a.state IN ('pending', 'parked')
                 ORDER BY a.seq LIMIT 1
                 FOR UPDATE OF a",
                &[&transaction_id],
            )
            .await?;
        let Some(row) = row else {
            return Ok(AdviceDue::Gone);
        };
        // A parked advice holds back the ones after it until an operator replays it.
        if row.get::<_, &str>("state") == "parked" || row.get::<_, bool>("locked") {
            return Ok(AdviceDue::Gone);
        }
        let wait: f64 = row.get("wait");
        if wait > 0.5 {
            return Ok(AdviceDue::Later {
                wait: Duration::from_secs_f64(wait),
                provider: row.get("provider"),
            });
        }
        let id: Uuid = row.get("id");
        let token = Uuid::now_v7();
        tx.execute(
            "UPDATE advices SET locked_until = now() + make_interval(secs => $2), locked_by = $3,
                    attempts = attempts + 1, first_sent_at = COALESCE(first_sent_at, now()),
                    updated_at = now()
             WHERE id = $1",
            &[&id, &lease.as_secs_f64(), &token],
        )
        .await?;
        tx.commit().await?;
        let kind: String = row.get("kind");
        let kind = AdviceKind::parse(&kind)
            .ok_or_else(|| RelayError::Corrupt(format!("advice {id} has kind {kind:?}")))?;
        Ok(AdviceDue::Now(Box::new(ClaimedAdvice {
            job: AdviceJob {
                id,
                transaction_id,
                provider: row.get("provider"),
                operation: row.get("operation"),
                kind,
                request_id: row.get("request_id"),
                reversal_reason: row.get("reversal_reason"),
                data: row.get("data"),
                body: row.get("body"),
                attempt: row.get::<_, i32>("attempts") + 1,
                subject: Subject {
                    command_id: row.get("command_id"),
                    source: row.get("source"),
                    kind: row.get("tx_kind"),
                    provider: row.get("provider"),
                },
            },
            token,
            past_budget: row.get("past_budget"),
            age_secs: row.get("age"),
            tx_state: TxState::parse(row.get("tx_state"))?,
        })))
    }

    /// Keeps the message as first built, so every repetition sends the same one; returns
    /// the stored one (another worker's, if it got there first).
    pub async fn keep_advice_body(&self, id: Uuid, body: &Value) -> Result<Value> {
        let client = self.pool.get().await?;
        let row = client
            .query_one(
                "UPDATE advices SET body = COALESCE(body, $2) WHERE id = $1 RETURNING body",
                &[&id, body],
            )
            .await?;
        Ok(row.get(0))
    }

    /// Not final: try again after `wait`. False if this worker's claim was overtaken.
    pub async fn retry_advice(
        &self,
        id: Uuid,
        token: Uuid,
        error: &str,
        wait: Duration,
    ) -> Result<bool> {
        let client = self.pool.get().await?;
        let n = client
            .execute(
                "UPDATE advices SET next_at = now() + make_interval(secs => $4), last_error = $3,
                        locked_until = NULL, locked_by = NULL, enqueued_at = now(), updated_at = now()
                 WHERE id = $1 AND locked_by = $2 AND state = 'pending'",
                &[&id, &token, &error, &wait.as_secs_f64()],
            )
            .await?;
        Ok(n == 1)
    }

    /// The provider answered finally. With `outcome`, the transaction (waiting in
    /// `reversing`) is completed in the same database transaction. False if this worker's
    /// claim was overtaken.
    pub async fn settle_advice(
        &self,
        claimed: &ClaimedAdvice,
        status: Option<u16>,
        answer: Option<&Value>,
        outcome: Option<&Outcome>,
    ) -> Result<bool> {
        let job = &claimed.job;
        let mut client = self.pool.get().await?;
        let tx = client.transaction().await?;
        if !mark_settled(&tx, claimed, status, answer).await? {
            return Ok(false);
        }
        if let Some(outcome) = outcome {
            self.complete_in(&tx, job.transaction_id, TxState::Reversing, outcome)
                .await?;
        }
        tx.commit().await?;
        Ok(true)
    }

    /// A reversal found its request never received, in one database transaction: the
    /// advice is settled and, if it reversed the command's own current request, the
    /// command is sent again under a fresh request id (within `budget`; past it, or for
    /// another request, `outcome` ends it). `None` if another worker took the advice over;
    /// `Some(None)` if the transaction had moved on (nothing to do).
    pub async fn settle_advice_and_resend(
        &self,
        claimed: &ClaimedAdvice,
        status: Option<u16>,
        answer: Option<&Value>,
        outcome: &Outcome,
        budget: u32,
    ) -> Result<Option<Option<SendAgain>>> {
        let job = &claimed.job;
        let mut client = self.pool.get().await?;
        let tx = client.transaction().await?;
        if !mark_settled(&tx, claimed, status, answer).await? {
            return Ok(None);
        }
        let own: bool = tx
            .query_one(
                "SELECT COALESCE(request_id, id) = $2 FROM transactions WHERE id = $1",
                &[&job.transaction_id, &job.request_id],
            )
            .await?
            .get(0);
        let why = format!(
            "Electrum never received request {}: its reversal found no record",
            job.request_id
        );
        let result = if own {
            let again = Resending {
                from: TxState::Reversing,
                budget,
                why: &why,
                subject: &job.subject,
                past_budget: Some(outcome),
            };
            self.resend_unapplied_in(&tx, job.transaction_id, &again)
                .await?
        } else {
            self.complete_in(&tx, job.transaction_id, TxState::Reversing, outcome)
                .await?
                .then(|| SendAgain::Exhausted(Box::new(outcome.clone())))
        };
        tx.commit().await?;
        Ok(Some(result))
    }

    /// The retry budget is spent: the advice is parked. Returns the record operators need
    /// to replay it (for `advice.parked`), or `None` if the claim was overtaken.
    pub async fn park_advice(&self, claimed: &ClaimedAdvice, error: &str) -> Result<Option<Value>> {
        let job = &claimed.job;
        let client = self.pool.get().await?;
        let row = client
            .query_opt(
                "UPDATE advices SET state = 'parked', last_error = $3, locked_until = NULL,
                        locked_by = NULL, updated_at = now()
                 WHERE id = $1 AND locked_by = $2 AND state = 'pending'
                 RETURNING attempts, created_at, first_sent_at, body, detail",
                &[&job.id, &claimed.token, &error],
            )
            .await?;
        Ok(row.map(|r| {
            let created: chrono::DateTime<chrono::Utc> = r.get("created_at");
            let first: Option<chrono::DateTime<chrono::Utc>> = r.get("first_sent_at");
            json!({
                "advice_id": job.id,
                "transaction_id": job.transaction_id,
                "command_id": job.subject.command_id,
                "source": job.subject.source,
                "provider": job.provider,
                "operation": job.operation,
                "kind": job.kind.as_str(),
                "request_id": job.request_id,
                "reversal_reason": job.reversal_reason,
                "detail": r.get::<_, Option<String>>("detail"),
                "body": r.get::<_, Option<Value>>("body"),
                "attempts": r.get::<_, i32>("attempts"),
                "recorded_at": created.to_rfc3339(),
                "first_sent_at": first.map(|t| t.to_rfc3339()),
                "last_error": error,
            })
        }))
    }

    /// Transactions with a pending advice overdue by more than `grace` whose wake-up was
    /// lost (a killed worker, a broker that lost it), with their provider; marks them
    /// re-enqueued. At most 500 at a time.
    pub async fn overdue_advices(&self, grace: Duration) -> Result<Vec<(Uuid, String)>> {
        let client = self.pool.get().await?;
        let rows = client
            .query(
                "WITH due AS (
                     SELECT id FROM advices
                     WHERE state = 'pending'
                       AND next_at < now() - make_interval(secs => $1)
                       AND (enqueued_at IS NULL OR enqueued_at < now() - make_interval(secs => $1))
                       AND (locked_until IS NULL OR locked_until < now())
                     ORDER BY next_at LIMIT 500
                     FOR UPDATE SKIP LOCKED)
                 UPDATE advices a SET enqueued_at = now()
                 FROM due WHERE a.id = due.id
                 RETURNING a.transaction_id, a.provider",
                &[&grace.as_secs_f64()],
            )
            .await?;
        let mut out: Vec<(Uuid, String)> = rows.iter().map(|r| (r.get(0), r.get(1))).collect();
        out.sort();
        out.dedup();
        Ok(out)
    }
}

impl Store {
    /// Parked advices, oldest first, for operators: what they are about and why they stopped.
    pub async fn parked_advices(&self) -> Result<Vec<Value>> {
        let client = self.pool.get().await?;
        let rows = client
            .query(
                "SELECT a.id, a.transaction_id, t.source, t.command_id, a.provider, a.operation,
                        a.kind, a.request_id, a.reversal_reason, a.attempts, a.last_error,
                        a.created_at, a.updated_at
                 FROM advices a JOIN transactions t ON t.id = a.transaction_id
                 WHERE a.state = 'parked' ORDER BY a.updated_at LIMIT 1000",
                &[],
            )
            .await?;
        Ok(rows
            .iter()
            .map(|r| {
                let at = |i: usize| r.get::<_, chrono::DateTime<chrono::Utc>>(i).to_rfc3339();
                json!({
                    "advice_id": r.get::<_, Uuid>(0),
                    "transaction_id": r.get::<_, Uuid>(1),
                    "source": r.get::<_, String>(2),
                    "command_id": r.get::<_, String>(3),
                    "provider": r.get::<_, String>(4),
                    "operation": r.get::<_, String>(5),
                    "kind": r.get::<_, String>(6),
                    "request_id": r.get::<_, Uuid>(7),
                    "reversal_reason": r.get::<_, Option<String>>(8),
                    "attempts": r.get::<_, i32>(9),
                    "last_error": r.get::<_, Option<String>>(10),
                    "recorded_at": at(11),
                    "parked_at": at(12),
                })
            })
            .collect())
    }

    /// The provider of parked advice `id`, if there is one.
    pub async fn parked_advice_provider(&self, id: Uuid) -> Result<Option<String>> {
        let client = self.pool.get().await?;
        let row = client
            .query_opt(
                "SELECT provider FROM advices WHERE id = $1 AND state = 'parked'",
                &[&id],
            )
            .await?;
        Ok(row.map(|r| r.get(0)))
    }

    /// Puts a parked advice back to work with a fresh `budget` and a fresh backoff, due now
    /// (same message, same `id`: the provider treats it as the repetition it is; every
    /// earlier attempt stays in `provider_exchanges`). Returns its transaction, or `None` if
    /// no such advice is parked.
    /// With `rebuild`, the stored message is dropped and built anew at the next attempt (for
    /// a message the provider refused as malformed, which it never recorded).
    pub async fn replay_advice(
        &self,
        id: Uuid,
        budget: Duration,
        rebuild: bool,
    ) -> Result<Option<Uuid>> {
        let client = self.pool.get().await?;
        let row = client
            .query_opt(
                "UPDATE advices SET state = 'pending', next_at = now(), attempts = 0,
                        body = CASE WHEN $3 THEN NULL ELSE body END,
                        deadline = now() + make_interval(secs => $2), locked_until = NULL,
                        locked_by = NULL, enqueued_at = now(), updated_at = now()
                 WHERE id = $1 AND state = 'parked'
                 RETURNING transaction_id",
                &[&id, &budget.as_secs_f64(), &rebuild],
            )
            .await?;
        Ok(row.map(|r| r.get(0)))
    }
}
