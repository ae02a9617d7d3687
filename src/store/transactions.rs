//! Transactions: intake, the lease to send, what happens when the outcome is unknown,
//! waiting for the provider, provider exchanges and rejections. State changes go through
//! [`state::transition`](super::state), outcomes through [`outcomes`](super::outcomes).

use std::time::Duration;

use serde_json::{Value, json};
use sha2::{Digest, Sha256};
use tokio_postgres::Transaction;
use uuid::Uuid;

use super::Store;
use super::advices;
use super::outbox::{self, Channel};
use super::outcomes::{ReplyTarget, add_target, queue_for_target, queue_for_waiting};
use super::polls;
use super::processes::{GRACE, ProcessId};
use super::resend::{Resend, send_again};
use super::state::{TxState, audit, transition};
use crate::command::{Outcome, Rejection, Status, Subject};
use crate::error::Result;
use crate::providers::Exchange;
use crate::providers::step::error;
use crate::providers::work::{NewAdvice, UnknownPlan, Waiting};

/// What the executor records at intake.
#[derive(Debug, Clone)]
pub struct NewTransaction<'a> {
    pub source: &'a str,
    pub command_id: &'a str,
    pub kind: &'a str,
    pub provider: &'a str,
    /// The params, masked, for the audit copy.
    pub params_masked: Value,
    /// Whether the relay allocates a local reference number for the provider.
    pub local_reference: bool,
    /// The provider's own references, kept for its polls.
    pub refs: Option<Value>,
    /// The command as received, and its routing key: kept (sealed) so a request that
    /// provably never arrived can be sent again.
    pub command: &'a [u8],
    pub routing_key: &'a str,
}

/// What intake found for a command.
#[derive(Debug, Clone, PartialEq)]
pub enum Intake {
    /// First sight of this (source, command_id).
    New(TxRef),
    /// Seen before, not finished; this message's reply target is registered.
    Pending(TxRef, TxState),
    /// Seen before and another worker holds a live lease on it: try again later.
    Busy(TxRef),
    /// Finished before: the stored outcome is queued again for this message's target.
    Completed(TxRef),
    /// The key is taken by a command of another kind or provider: nothing was recorded.
    Conflict(TxRef),
}

/// The identifiers a worker needs to act on a transaction.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TxRef {
    pub id: Uuid,
    pub local_reference: Option<i32>,
    /// The provider request id of the current send: the transaction's id, or a fresh one
    /// after it was sent again.
    pub request_id: Uuid,
}

/// What the audit trail says of a worker that died while sending.
pub const LOST_WORKER: &str = "the worker holding it is gone";

/// Whether a `sending` row is held: while the process that claimed it is alive (see
/// [`processes`](super::processes)); a row claimed before liveness existed, while its
/// lease runs. `grace` is the SQL parameter holding [`GRACE`] in seconds.
fn held_sql(grace: &str) -> String {
    format!(
        "(CASE WHEN lease_owner IS NOT NULL THEN relay_process_alive(lease_owner, {grace})
              ELSE lease_until > now() END)"
    )
}

/// The one way an outcome becomes unknown, inside the caller's database transaction:
/// `from -> unknown` with its resolve poll, or `from -> reversing` with its reversal, as
/// the provider's `plan` says. Returns the new state, or `None` (nothing recorded) if the
/// transaction was not in `from`.
async fn take_unknown(
    tx: &Transaction<'_>,
    id: Uuid,
    from: TxState,
    why: &str,
    plan: &UnknownPlan,
) -> Result<Option<TxState>> {
    match plan {
        UnknownPlan::Resolve(poll) => {
            if !transition(tx, id, from, TxState::Unknown, json!({"reason": why})).await? {
                return Ok(None);
            }
            polls::schedule(tx, id, poll).await?;
            Ok(Some(TxState::Unknown))
        }
        UnknownPlan::Reverse(advice) => {
            let detail = json!({"reason": why, "reversal_reason": advice.reversal_reason});
            if !transition(tx, id, from, TxState::Reversing, detail).await? {
                return Ok(None);
            }
            advices::insert(tx, id, advice).await?;
            Ok(Some(TxState::Reversing))
        }
    }
}

impl Store {
    /// Records a command idempotently and registers who wants its outcome. One database
    /// transaction; the AMQP message may be acked once this returns (except for `Busy`).
    ///
    /// A financial command found in `sending` after its lease expired may have been
    /// applied: `on_lost` (the provider's plan for an unknown outcome) is recorded in the
    /// same database transaction. A read is simply asked again.
    pub async fn intake(
        &self,
        new: &NewTransaction<'_>,
        target: &ReplyTarget,
        on_lost: Option<&UnknownPlan>,
    ) -> Result<Intake> {
        let sealed = self.sealer.seal(new.command);
        let mut client = self.pool.get().await?;
        let tx = client.transaction().await?;
        let result = match insert_new(&tx, new, &sealed, target).await? {
            Some(r) => Intake::New(r),
            None => self.intake_existing(&tx, new, target, on_lost).await?,
        };
        tx.commit().await?;
        Ok(result)
    }

    /// Intake of a key seen before, with its row locked.
    async fn intake_existing(
        &self,
        tx: &Transaction<'_>,
        new: &NewTransaction<'_>,
        target: &ReplyTarget,
        on_lost: Option<&UnknownPlan>,
    ) -> Result<Intake> {
        let sql = format!(
            "SELECT id, state, local_reference, {} AS leased, outcome_sealed, kind, provider,
                    COALESCE(request_id, id) AS request_id
             FROM transactions WHERE source = $1 AND command_id = $2 FOR UPDATE",
            held_sql("$3")
        );
        let grace = GRACE.as_secs_f64();
        let row = tx
            .query_one(&sql, &[&new.source, &new.command_id, &grace])
            .await?;
        let r = TxRef {
            id: row.get("id"),
            local_reference: row.get("local_reference"),
            request_id: row.get("request_id"),
        };
        if row.get::<_, &str>("kind") != new.kind || row.get::<_, &str>("provider") != new.provider
        {
            // The same key for a different operation is a producer's bug: acting on it
            // would run one command's params under another's transaction.
            return Ok(Intake::Conflict(r));
        }
        let state = TxState::parse(row.get("state"))?;
        let leased: Option<bool> = row.get("leased");
        if state == TxState::Completed {
            let sealed: Vec<u8> = row.get("outcome_sealed");
            let outcome = self.open_outcome(&sealed)?;
            queue_for_target(tx, &sealed, &outcome, Some(r.id), None, target).await?;
            return Ok(Intake::Completed(r));
        }
        if state == TxState::Sending && leased == Some(true) {
            return Ok(Intake::Busy(r));
        }
        add_target(tx, r.id, target).await?;
        let state = match (state, on_lost) {
            // The worker that held the lease is gone and may have sent the request.
            (TxState::Sending, Some(plan)) => take_unknown(tx, r.id, state, LOST_WORKER, plan)
                .await?
                .unwrap_or(state),
            // A read whose worker is gone: asking again changes nothing at the provider.
            (TxState::Sending, None) => {
                let why = json!({"reason": "lease expired while reading; asking again"});
                transition(tx, r.id, state, TxState::Received, why).await?;
                TxState::Received
            }
            (state, _) => state,
        };
        Ok(Intake::Pending(r, state))
    }

    /// Takes the transaction for this process (`owner`) to send the provider request:
    /// `received -> sending`. Returns the attempt number, or `None` if another worker got
    /// there first. `lease` is only for operators reading the row: liveness decides.
    pub async fn claim(&self, id: Uuid, lease: Duration, owner: ProcessId) -> Result<Option<i32>> {
        let mut client = self.pool.get().await?;
        let tx = client.transaction().await?;
        let secs = lease.as_secs_f64();
        let row = tx
            .query_opt(
                "UPDATE transactions SET state = 'sending', attempts = attempts + 1,
                     lease_until = now() + make_interval(secs => $2), lease_owner = $3,
                     sent_at = now(), updated_at = now()
                 WHERE id = $1 AND state = 'received'
                 RETURNING attempts",
                &[&id, &secs, &owner.id],
            )
            .await?;
        let attempt = row.map(|r| r.get::<_, i32>(0));
        if attempt.is_some() {
            audit(
                &tx,
                id,
                Some(TxState::Received),
                TxState::Sending,
                json!({}),
            )
            .await?;
        }
        tx.commit().await?;
        Ok(attempt)
    }

    /// `sending -> received`: the request provably never reached the provider.
    pub async fn release(&self, id: Uuid, reason: &str) -> Result<()> {
        let mut client = self.pool.get().await?;
        let tx = client.transaction().await?;
        let why = json!({"reason": reason});
        transition(&tx, id, TxState::Sending, TxState::Received, why).await?;
        tx.commit().await?;
        Ok(())
    }

    /// `sending -> unknown | reversing`: the request may have been applied; records the
    /// provider's `plan` for it. Returns the new state, or `None` if the transaction was no
    /// longer `sending`.
    pub async fn mark_unknown(
        &self,
        id: Uuid,
        why: &str,
        plan: &UnknownPlan,
    ) -> Result<Option<TxState>> {
        let mut client = self.pool.get().await?;
        let tx = client.transaction().await?;
        let moved = take_unknown(&tx, id, TxState::Sending, why, plan).await?;
        tx.commit().await?;
        Ok(moved)
    }

    /// `sending | unknown -> awaiting_*`: the provider took it and the rest comes later.
    /// Keeps what it returned (sealed), schedules the poll, and queues the progress event
    /// for every waiting target, all in one database transaction.
    pub async fn await_provider(
        &self,
        id: Uuid,
        from: TxState,
        waiting: &Waiting,
        progress: Option<&Outcome>,
    ) -> Result<()> {
        let partial = serde_json::to_vec(&waiting.partial).unwrap_or_default();
        let sealed = self.sealer.seal(&partial);
        let to = TxState::waiting_for(waiting.wait_for);
        let mut client = self.pool.get().await?;
        let tx = client.transaction().await?;
        if transition(&tx, id, from, to, json!({})).await? {
            tx.execute(
                "UPDATE transactions SET partial_sealed = $2 WHERE id = $1",
                &[&id, &sealed],
            )
            .await?;
            polls::schedule(&tx, id, &waiting.plan).await?;
            if let Some(event) = progress {
                let sealed_event = self.seal_outcome(event);
                // Progress goes to everyone waiting, who still wait for the end.
                queue_for_waiting(&tx, id, &sealed_event, event, false).await?;
            }
        }
        tx.commit().await?;
        Ok(())
    }

    /// Stores one provider exchange (already masked by the provider path).
    pub async fn record_exchange(&self, id: Uuid, e: &Exchange) -> Result<()> {
        let client = self.pool.get().await?;
        let latency_ms = e.latency_ms();
        let status = e.status.map(i32::from);
        client
            .execute(
                "INSERT INTO provider_exchanges
                     (transaction_id, provider, operation, method, url, request, status_code, response, error, latency_ms)
                 VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10)",
                &[&id, &e.provider, &e.operation, &e.method, &e.url, &e.request, &status, &e.response, &e.error, &latency_ms],
            )
            .await?;
        Ok(())
    }

    /// [`complete`](Self::complete), and in the same database transaction records the
    /// advice that must follow (a confirmation). Returns whether the outcome was stored;
    /// the advice is recorded only with it.
    pub async fn complete_with_advice(
        &self,
        id: Uuid,
        from: TxState,
        outcome: &Outcome,
        advice: Option<&NewAdvice>,
    ) -> Result<bool> {
        let mut client = self.pool.get().await?;
        let tx = client.transaction().await?;
        if !self.complete_in(&tx, id, from, outcome).await? {
            return Ok(false);
        }
        if let Some(a) = advice {
            advices::insert(&tx, id, a).await?;
        }
        tx.commit().await?;
        Ok(true)
    }

    /// The command id of the relay's own transaction `id`, if there is one: a provider
    /// request id that is one of the relay's own.
    pub async fn command_of(&self, id: Uuid) -> Result<Option<String>> {
        let client = self.pool.get().await?;
        let row = client
            .query_opt(
                "SELECT command_id FROM transactions WHERE id = $1 OR request_id = $1",
                &[&id],
            )
            .await?;
        Ok(row.map(|r| r.get(0)))
    }

    /// Records a refused command and queues its `rejected` outcome, in one transaction.
    /// The same message delivered again (same routing key, reply address and body) is the
    /// same rejection: nothing new is queued. Returns the rejection's id (it stands in for
    /// a transaction id in the logs) and its event id.
    pub async fn record_rejection(
        &self,
        rejection: &Rejection,
        routing_key: &str,
        body: &[u8],
        target: &ReplyTarget,
    ) -> Result<(Uuid, String)> {
        let hex = |bytes: &[u8]| -> String { bytes.iter().map(|b| format!("{b:02x}")).collect() };
        let digest = hex(&Sha256::digest(body));
        let mut key = Sha256::new();
        for part in [
            routing_key.as_bytes(),
            target.reply_to.as_bytes(),
            target.correlation_id.as_bytes(),
            body,
        ] {
            key.update((part.len() as u64).to_be_bytes());
            key.update(part);
        }
        let dedupe_key = hex(&key.finalize());
        let outcome = rejection.outcome();
        let id = Uuid::now_v7();
        let mut client = self.pool.get().await?;
        let tx = client.transaction().await?;
        let body_bytes = i32::try_from(body.len()).unwrap_or(i32::MAX);
        let inserted = tx
            .query_opt(
                "INSERT INTO rejections (id, source, command_id, routing_key, reason_code, reason, body_sha256, body_bytes, event_id, dedupe_key)
                 VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10)
                 ON CONFLICT (dedupe_key) DO NOTHING
                 RETURNING id",
                &[
                    &id,
                    &rejection.envelope.source,
                    &rejection.envelope.command_id,
                    &routing_key,
                    &rejection.reason.code(),
                    &rejection.reason.message(),
                    &digest,
                    &body_bytes,
                    &outcome.event_id,
                    &dedupe_key,
                ],
            )
            .await?;
        if inserted.is_none() {
            let row = tx
                .query_one(
                    "SELECT id, event_id FROM rejections WHERE dedupe_key = $1",
                    &[&dedupe_key],
                )
                .await?;
            tx.commit().await?;
            return Ok((row.get(0), row.get(1)));
        }
        let sealed = self.seal_outcome(&outcome);
        outbox::insert(
            &tx,
            &outcome,
            &sealed,
            None,
            Some(id),
            Channel::Event,
            &outcome.routing_key(),
            None,
        )
        .await?;
        queue_for_target(&tx, &sealed, &outcome, None, Some(id), target).await?;
        tx.commit().await?;
        Ok((id, outcome.event_id))
    }

    /// Transactions of `providers` whose worker died while sending: id, kind, provider.
    /// At most 100 at a time. Only the providers this relay runs: another provider's rows
    /// are for a relay that runs it, and must not hold these back.
    pub async fn lost_sends(&self, providers: &[&str]) -> Result<Vec<(Uuid, String, String)>> {
        let client = self.pool.get().await?;
        let sql = format!(
            "SELECT id, kind, provider FROM transactions
             WHERE state = 'sending' AND provider = ANY($1) AND NOT {}
             ORDER BY updated_at LIMIT 100",
            held_sql("$2")
        );
        let rows = client
            .query(&sql, &[&providers, &GRACE.as_secs_f64()])
            .await?;
        Ok(rows
            .iter()
            .map(|r| (r.get(0), r.get(1), r.get(2)))
            .collect())
    }

    /// Takes over a transaction whose worker died while sending. A financial one (with
    /// the provider's `plan`) may have been applied: its outcome is unknown. A read is
    /// asked again (`received`, and [`Lost::Resend`] says what to publish); one kept from
    /// before V8, without its command, ends `failed` (`interrupted`). `None` if another
    /// worker moved it meanwhile.
    pub async fn take_over_lost(
        &self,
        id: Uuid,
        plan: Option<&UnknownPlan>,
    ) -> Result<Option<Lost>> {
        let mut client = self.pool.get().await?;
        let tx = client.transaction().await?;
        let sql = format!(
            "SELECT command_id, source, kind, provider, command_sealed, routing_key
             FROM transactions
             WHERE id = $1 AND state = 'sending' AND NOT {}
             FOR UPDATE SKIP LOCKED",
            held_sql("$2")
        );
        let row = tx.query_opt(&sql, &[&id, &GRACE.as_secs_f64()]).await?;
        let Some(row) = row else {
            return Ok(None);
        };
        let moved = match (plan, row.get::<_, Option<Vec<u8>>>("command_sealed")) {
            (Some(plan), _) => take_unknown(&tx, id, TxState::Sending, LOST_WORKER, plan)
                .await?
                .map(Lost::Unknown),
            (None, Some(_)) => {
                let why = "the worker reading it is gone; asking again";
                send_again(&tx, &self.sealer, id, TxState::Sending, why)
                    .await?
                    .map(Lost::Resend)
            }
            (None, None) => {
                let subject = Subject {
                    command_id: row.get(0),
                    source: row.get(1),
                    kind: row.get(2),
                    provider: row.get(3),
                };
                let outcome = subject.outcome(
                    Status::Failed,
                    None,
                    Some(error(
                        "interrupted",
                        "the worker stopped while asking the provider; send the command again with a new command_id",
                        None,
                    )),
                );
                let done = self
                    .complete_in(&tx, id, TxState::Sending, &outcome)
                    .await?;
                done.then_some(Lost::Failed)
            }
        };
        tx.commit().await?;
        Ok(moved)
    }
}

/// What taking over from a dead worker came to.
#[derive(Debug)]
pub enum Lost {
    /// A financial request: its outcome is unknown (resolving or reversing).
    Unknown(TxState),
    /// A read, asked again: publish this.
    Resend(Resend),
    /// A read kept from before the command was stored: it ended `failed`.
    Failed,
}

/// Inserts a command seen for the first time, with its target and audit row; `None` if
/// its key exists.
async fn insert_new(
    tx: &Transaction<'_>,
    new: &NewTransaction<'_>,
    command_sealed: &[u8],
    target: &ReplyTarget,
) -> Result<Option<TxRef>> {
    let id = Uuid::now_v7();
    let inserted = tx
        .query_opt(
            "INSERT INTO transactions
                 (id, source, command_id, kind, provider, state, params_masked, provider_ref,
                  local_reference, command_sealed, routing_key)
             VALUES ($1, $2, $3, $4, $5, 'received', $6, $7,
                     CASE WHEN $8 THEN nextval('local_reference_seq')::integer END, $9, $10)
             ON CONFLICT (source, command_id) DO NOTHING
             RETURNING local_reference",
            &[
                &id,
                &new.source,
                &new.command_id,
                &new.kind,
                &new.provider,
                &new.params_masked,
                &new.refs,
                &new.local_reference,
                &command_sealed,
                &new.routing_key,
            ],
        )
        .await?;
    let Some(row) = inserted else {
        return Ok(None);
    };
    add_target(tx, id, target).await?;
    audit(tx, id, None, TxState::Received, json!({})).await?;
    Ok(Some(TxRef {
        id,
        local_reference: row.get(0),
        request_id: id,
    }))
}
