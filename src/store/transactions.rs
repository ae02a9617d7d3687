//! Transactions: intake, the state machine, provider exchanges and the audit trail.
//!
//! Every state change is one SQL `UPDATE ... WHERE state = <from>` inside a database
//! transaction that also writes the audit row, so two workers can never both move the same
//! transaction, and a transition the state machine does not allow cannot be written.

use std::time::Duration;

use serde_json::{Value, json};
use sha2::{Digest, Sha256};
use tokio_postgres::Transaction;
use uuid::Uuid;

use super::Store;
use super::advices::{self, NewAdvice};
use super::outbox::{self, Channel};
use super::polls::{self, PollPlan};
use crate::command::{Command, Outcome, Rejection};
use crate::error::{RelayError, Result};
use crate::providers::Exchange;

/// Where a transaction is in its life.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TxState {
    /// Accepted; no request sent yet (or provably never delivered).
    Received,
    /// A worker holds the lease and may have sent the request.
    Sending,
    /// The request may have been applied; the answer is not known. A `resolve` poll runs.
    Unknown,
    /// Sold; the additional data is not there yet. An `additional_data` poll runs.
    AwaitingData,
    /// A raffle ticket was sold; a `finished` poll waits for the draw's result.
    AwaitingDraw,
    /// The outcome was unknown; a reversal advice is repeated until final, and its answer
    /// makes the outcome.
    Reversing,
    /// A terminal outcome is stored.
    Completed,
}

impl TxState {
    pub fn as_str(self) -> &'static str {
        match self {
            TxState::Received => "received",
            TxState::Sending => "sending",
            TxState::Unknown => "unknown",
            TxState::AwaitingData => "awaiting_data",
            TxState::AwaitingDraw => "awaiting_draw",
            TxState::Reversing => "reversing",
            TxState::Completed => "completed",
        }
    }

    pub(crate) fn parse(s: &str) -> Result<TxState> {
        Ok(match s {
            "received" => TxState::Received,
            "sending" => TxState::Sending,
            "unknown" => TxState::Unknown,
            "awaiting_data" => TxState::AwaitingData,
            "awaiting_draw" => TxState::AwaitingDraw,
            "reversing" => TxState::Reversing,
            "completed" => TxState::Completed,
            other => return Err(RelayError::Corrupt(format!("transaction state {other:?}"))),
        })
    }

    /// The transitions the relay may make. Anything else is a bug.
    pub fn allows(self, to: TxState) -> bool {
        use TxState::*;
        matches!(
            (self, to),
            (Received, Sending)
                | (Sending, Received)
                | (Sending, Completed)
                | (Sending, Unknown)
                | (Sending, AwaitingData)
                | (Sending, AwaitingDraw)
                | (Unknown, Completed)
                | (Unknown, AwaitingData)
                | (Unknown, AwaitingDraw)
                | (AwaitingData, Completed)
                | (AwaitingDraw, Completed)
                | (Sending, Reversing)
                | (Reversing, Completed)
        )
    }
}

/// Who wants to hear the outcome of one command message. Empty strings mean "not asked".
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ReplyTarget {
    pub reply_to: String,
    pub correlation_id: String,
    pub callback_url: String,
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
}

async fn audit(
    tx: &Transaction<'_>,
    id: Uuid,
    from: Option<TxState>,
    to: TxState,
    detail: Value,
) -> Result<()> {
    tx.execute(
        "INSERT INTO audit_trail (transaction_id, from_state, to_state, detail) VALUES ($1, $2, $3, $4)",
        &[&id, &from.map(TxState::as_str), &to.as_str(), &detail],
    )
    .await?;
    Ok(())
}

/// Moves `id` from `from` to `to` with an audit row; false if it was not in `from`.
async fn transition(
    tx: &Transaction<'_>,
    id: Uuid,
    from: TxState,
    to: TxState,
    detail: Value,
) -> Result<bool> {
    if !from.allows(to) {
        return Err(RelayError::Corrupt(format!(
            "transition {} -> {} is not allowed",
            from.as_str(),
            to.as_str()
        )));
    }
    let n = tx
        .execute(
            "UPDATE transactions SET state = $3, updated_at = now(),
                 lease_until = CASE WHEN $3 = 'sending' THEN lease_until ELSE NULL END
             WHERE id = $1 AND state = $2",
            &[&id, &from.as_str(), &to.as_str()],
        )
        .await?;
    if n == 1 {
        audit(tx, id, Some(from), to, detail).await?;
    }
    Ok(n == 1)
}

async fn add_target(tx: &Transaction<'_>, id: Uuid, t: &ReplyTarget) -> Result<()> {
    tx.execute(
        "INSERT INTO reply_targets (transaction_id, reply_to, correlation_id, callback_url)
         VALUES ($1, $2, $3, $4) ON CONFLICT DO NOTHING",
        &[&id, &t.reply_to, &t.correlation_id, &t.callback_url],
    )
    .await?;
    Ok(())
}

/// Queues `outcome` for one target: its AMQP reply and its callback, where asked for.
async fn queue_for_target(
    tx: &Transaction<'_>,
    sealed: &[u8],
    outcome: &Outcome,
    tx_id: Option<Uuid>,
    rejection_id: Option<Uuid>,
    t: &ReplyTarget,
) -> Result<()> {
    if !t.reply_to.is_empty() {
        outbox::insert(
            tx,
            outcome,
            sealed,
            tx_id,
            rejection_id,
            Channel::Reply,
            &t.reply_to,
            Some(&t.correlation_id),
        )
        .await?;
    }
    if !t.callback_url.is_empty() {
        outbox::insert(
            tx,
            outcome,
            sealed,
            tx_id,
            rejection_id,
            Channel::Callback,
            &t.callback_url,
            None,
        )
        .await?;
    }
    Ok(())
}

/// Queues `outcome` on `voucher.events` and for every target of `id` still waiting for its
/// end; `answers` marks them answered (a terminal outcome), a progress event leaves them
/// waiting.
async fn queue_for_waiting(
    tx: &Transaction<'_>,
    id: Uuid,
    sealed: &[u8],
    outcome: &Outcome,
    answers: bool,
) -> Result<()> {
    outbox::insert(
        tx,
        outcome,
        sealed,
        Some(id),
        None,
        Channel::Event,
        &outcome.routing_key(),
        None,
    )
    .await?;
    let rows = tx
        .query(
            "UPDATE reply_targets SET answered_at = CASE WHEN $2 THEN now() END
             WHERE transaction_id = $1 AND answered_at IS NULL
             RETURNING reply_to, correlation_id, callback_url",
            &[&id, &answers],
        )
        .await?;
    for row in rows {
        let t = ReplyTarget {
            reply_to: row.get(0),
            correlation_id: row.get(1),
            callback_url: row.get(2),
        };
        queue_for_target(tx, sealed, outcome, Some(id), None, &t).await?;
    }
    Ok(())
}

/// A financial request whose worker died while sending may have been applied. CSQ resolves
/// it by query (`unknown` with a resolve poll); Electrum's rule is to reverse it
/// (`reversing` with a reversal advice). Returns the new state.
async fn lost_worker(
    tx: &Transaction<'_>,
    id: Uuid,
    provider: &str,
    kind: &str,
    resolve: &PollPlan,
    reversal_budget: Duration,
) -> Result<TxState> {
    let detail = "lease expired; the worker is gone";
    if provider == "electrum" {
        let advice = NewAdvice::reversal(provider, kind, id, "TIMEOUT", detail, reversal_budget);
        reverse_in(tx, id, TxState::Sending, &advice).await?;
        Ok(TxState::Reversing)
    } else {
        transition(
            tx,
            id,
            TxState::Sending,
            TxState::Unknown,
            json!({"reason": detail}),
        )
        .await?;
        polls::schedule(tx, id, resolve).await?;
        Ok(TxState::Unknown)
    }
}

/// `from -> reversing` with its reversal advice, inside the caller's database transaction.
/// False (and nothing recorded) if the transaction was not in `from`.
async fn reverse_in(
    tx: &Transaction<'_>,
    id: Uuid,
    from: TxState,
    advice: &NewAdvice<'_>,
) -> Result<bool> {
    let moved = transition(
        tx,
        id,
        from,
        TxState::Reversing,
        json!({"reason": advice.detail, "reversal_reason": advice.reversal_reason}),
    )
    .await?;
    if moved {
        advices::insert(tx, id, advice).await?;
    }
    Ok(moved)
}

impl Store {
    /// Records a command idempotently and registers who wants its outcome. One database
    /// transaction; the AMQP message may be acked once this returns (except for `Busy`).
    ///
    /// A transaction found in `sending` after its lease expired becomes `unknown`, and its
    /// resolution poll (`resolve`) is scheduled in the same database transaction.
    pub async fn intake(
        &self,
        cmd: &Command,
        params_masked: &Value,
        target: &ReplyTarget,
        resolve: &PollPlan,
        reversal_budget: Duration,
    ) -> Result<Intake> {
        let mut client = self.pool.get().await?;
        let tx = client.transaction().await?;
        let (terminal_id, operator_id, uses_local_ref) = match &cmd.action {
            crate::command::Action::CsqPurchase(p) => {
                (Some(p.terminal_id), Some(p.operator_id), true)
            }
            crate::command::Action::CsqProducts(p) => {
                (Some(p.terminal_id), Some(p.operator_id), false)
            }
            crate::command::Action::CsqBalance(p) => (Some(p.terminal_id), None, false),
            _ => (None, None, false),
        };
        let new_id = Uuid::now_v7();
        let inserted = tx
            .query_opt(
                "INSERT INTO transactions
                     (id, source, command_id, kind, provider, state, params_masked, terminal_id, operator_id, local_reference)
                 VALUES ($1, $2, $3, $4, $5, 'received', $6, $7, $9,
                         CASE WHEN $8 THEN nextval('csq_local_reference')::integer END)
                 ON CONFLICT (source, command_id) DO NOTHING
                 RETURNING local_reference",
                &[
                    &new_id,
                    &cmd.source,
                    &cmd.command_id,
                    &cmd.action.kind(),
                    &cmd.action.provider().as_str(),
                    params_masked,
                    &terminal_id,
                    &uses_local_ref,
                    &operator_id,
                ],
            )
            .await?;
        if let Some(row) = inserted {
            let r = TxRef {
                id: new_id,
                local_reference: row.get(0),
            };
            add_target(&tx, new_id, target).await?;
            audit(&tx, new_id, None, TxState::Received, json!({})).await?;
            tx.commit().await?;
            return Ok(Intake::New(r));
        }

        let row = tx
            .query_one(
                "SELECT id, state, local_reference, lease_until > now() AS leased, outcome_sealed,
                        kind, provider
                 FROM transactions WHERE source = $1 AND command_id = $2 FOR UPDATE",
                &[&cmd.source, &cmd.command_id],
            )
            .await?;
        let r = TxRef {
            id: row.get("id"),
            local_reference: row.get("local_reference"),
        };
        let state = TxState::parse(row.get("state"))?;
        let leased: Option<bool> = row.get("leased");
        if row.get::<_, &str>("kind") != cmd.action.kind()
            || row.get::<_, &str>("provider") != cmd.action.provider().as_str()
        {
            // The same key for a different operation is a producer's bug: acting on it
            // would run one command's params under another's transaction.
            return Ok(Intake::Conflict(r));
        }
        let result = match state {
            TxState::Completed => {
                let sealed: Vec<u8> = row.get("outcome_sealed");
                let outcome = self.open_outcome(&sealed)?;
                queue_for_target(&tx, &sealed, &outcome, Some(r.id), None, target).await?;
                Intake::Completed(r)
            }
            TxState::Sending if leased == Some(true) => Intake::Busy(r),
            TxState::Sending if cmd.action.has_financial_effect() => {
                // The worker that held the lease is gone and may have sent the request.
                add_target(&tx, r.id, target).await?;
                let provider = cmd.action.provider().as_str();
                let to = lost_worker(
                    &tx,
                    r.id,
                    provider,
                    cmd.action.kind(),
                    resolve,
                    reversal_budget,
                )
                .await?;
                Intake::Pending(r, to)
            }
            TxState::Sending => {
                // A read whose worker is gone: asking again changes nothing at the provider.
                add_target(&tx, r.id, target).await?;
                transition(
                    &tx,
                    r.id,
                    TxState::Sending,
                    TxState::Received,
                    json!({"reason": "lease expired while reading; asking again"}),
                )
                .await?;
                Intake::Pending(r, TxState::Received)
            }
            TxState::Received
            | TxState::Unknown
            | TxState::AwaitingData
            | TxState::AwaitingDraw
            | TxState::Reversing => {
                add_target(&tx, r.id, target).await?;
                Intake::Pending(r, state)
            }
        };
        tx.commit().await?;
        Ok(result)
    }

    /// Takes the lease to send the provider request: `received -> sending`. Returns the
    /// attempt number, or `None` if another worker got there first.
    pub async fn claim(&self, id: Uuid, lease: Duration) -> Result<Option<i32>> {
        let mut client = self.pool.get().await?;
        let tx = client.transaction().await?;
        let secs = lease.as_secs_f64();
        let row = tx
            .query_opt(
                "UPDATE transactions SET state = 'sending', attempts = attempts + 1,
                     lease_until = now() + make_interval(secs => $2), updated_at = now()
                 WHERE id = $1 AND state = 'received'
                 RETURNING attempts",
                &[&id, &secs],
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
        transition(
            &tx,
            id,
            TxState::Sending,
            TxState::Received,
            json!({"reason": reason}),
        )
        .await?;
        tx.commit().await?;
        Ok(())
    }

    /// `sending -> unknown`: the request may have been applied. Schedules its resolution.
    pub async fn mark_unknown(&self, id: Uuid, reason: &str, resolve: &PollPlan) -> Result<()> {
        let mut client = self.pool.get().await?;
        let tx = client.transaction().await?;
        if transition(
            &tx,
            id,
            TxState::Sending,
            TxState::Unknown,
            json!({"reason": reason}),
        )
        .await?
        {
            polls::schedule(&tx, id, resolve).await?;
        }
        tx.commit().await?;
        Ok(())
    }

    /// `sending | unknown -> awaiting_data | awaiting_draw`: sold, and the rest comes later. Keeps
    /// what the sale returned (sealed), schedules the poll, and queues the progress event
    /// for every waiting target, all in one database transaction.
    #[allow(clippy::too_many_arguments)]
    pub async fn await_provider(
        &self,
        id: Uuid,
        from: TxState,
        to: TxState,
        partial: &Value,
        plan: &PollPlan,
        progress: Option<&Outcome>,
    ) -> Result<()> {
        let sealed = self
            .sealer
            .seal(&serde_json::to_vec(partial).unwrap_or_default());
        let mut client = self.pool.get().await?;
        let tx = client.transaction().await?;
        if transition(&tx, id, from, to, json!({})).await? {
            tx.execute(
                "UPDATE transactions SET partial_sealed = $2 WHERE id = $1",
                &[&id, &sealed],
            )
            .await?;
            polls::schedule(&tx, id, plan).await?;
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
        let latency_ms = i32::try_from(e.latency.as_millis()).unwrap_or(i32::MAX);
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

    /// Stores the terminal outcome and, in the same database transaction, the outbox rows
    /// that deliver it: the event, and a reply and callback for every waiting target.
    /// False if the transaction was not in `from` (someone else finished it).
    pub async fn complete(&self, id: Uuid, from: TxState, outcome: &Outcome) -> Result<bool> {
        self.complete_with_advice(id, from, outcome, None).await
    }

    /// [`complete`](Self::complete), and in the same database transaction records the
    /// advice that must follow (a dual-messaging confirmation). Returns whether the outcome
    /// was stored; the advice is recorded only with it.
    pub async fn complete_with_advice(
        &self,
        id: Uuid,
        from: TxState,
        outcome: &Outcome,
        advice: Option<&NewAdvice<'_>>,
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

    /// The terminal outcome inside the caller's database transaction.
    pub(crate) async fn complete_in(
        &self,
        tx: &Transaction<'_>,
        id: Uuid,
        from: TxState,
        outcome: &Outcome,
    ) -> Result<bool> {
        if !from.allows(TxState::Completed) {
            return Ok(false);
        }
        let sealed = self.seal_outcome(outcome);
        let n = tx
            .execute(
                "UPDATE transactions SET state = 'completed', status = $3, event_id = $4,
                     outcome_sealed = $5, completed_at = now(), updated_at = now(), lease_until = NULL
                 WHERE id = $1 AND state = $2",
                &[&id, &from.as_str(), &outcome.status.as_str(), &outcome.event_id, &sealed],
            )
            .await?;
        if n == 0 {
            return Ok(false);
        }
        audit(
            tx,
            id,
            Some(from),
            TxState::Completed,
            json!({"status": outcome.status.as_str(), "event_id": outcome.event_id}),
        )
        .await?;
        // The transaction is finished: nothing may poll it again.
        tx.execute("DELETE FROM polls WHERE transaction_id = $1", &[&id])
            .await?;
        queue_for_waiting(tx, id, &sealed, outcome, true).await?;
        Ok(true)
    }

    /// `from -> reversing`: the outcome is unknown, so a reversal advice is recorded in the
    /// same database transaction. False if the transaction was not in `from`.
    pub async fn start_reversal(
        &self,
        id: Uuid,
        from: TxState,
        advice: &NewAdvice<'_>,
    ) -> Result<bool> {
        let mut client = self.pool.get().await?;
        let tx = client.transaction().await?;
        let moved = reverse_in(&tx, id, from, advice).await?;
        tx.commit().await?;
        Ok(moved)
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

    /// Transactions whose worker died while sending and whose message will not come back
    /// (it went to the dead-letter queue): a purchase becomes `unknown` with a resolve poll;
    /// a read ends `failed` (`interrupted`), since asking again needs the command again.
    /// An Electrum operation is reversed instead. Returns the transactions moved, with their
    /// provider and new state, for their wake-ups.
    pub async fn expire_leases(
        &self,
        grace: Duration,
        resolve: &PollPlan,
        reversal_budget: Duration,
    ) -> Result<Vec<(Uuid, String, TxState)>> {
        let mut client = self.pool.get().await?;
        let tx = client.transaction().await?;
        let rows = tx
            .query(
                "SELECT id, kind, provider FROM transactions
                 WHERE state = 'sending' AND lease_until < now() - make_interval(secs => $1)
                 ORDER BY lease_until LIMIT 100 FOR UPDATE SKIP LOCKED",
                &[&grace.as_secs_f64()],
            )
            .await?;
        let mut moved = Vec::new();
        let mut reads = Vec::new();
        for row in rows {
            let id: Uuid = row.get(0);
            let kind: String = row.get(1);
            let provider: String = row.get(2);
            if crate::command::FINANCIAL_KINDS.contains(&kind.as_str()) {
                let to = lost_worker(&tx, id, &provider, &kind, resolve, reversal_budget).await?;
                moved.push((id, provider, to));
            } else {
                reads.push(id);
            }
        }
        tx.commit().await?;
        for id in reads {
            let row = client
                .query_one(
                    "SELECT command_id, source, kind, provider FROM transactions WHERE id = $1",
                    &[&id],
                )
                .await?;
            let outcome = Outcome::new(
                Some(row.get(0)),
                Some(row.get(1)),
                row.get(2),
                row.get(3),
                crate::command::Status::Failed,
                None,
                Some(crate::command::OutcomeError {
                    code: "interrupted".into(),
                    message: "the worker stopped while asking the provider; send the command again with a new command_id".into(),
                    provider_code: None,
                }),
            );
            self.complete(id, TxState::Sending, &outcome).await?;
        }
        Ok(moved)
    }

    pub(crate) fn seal_outcome(&self, outcome: &Outcome) -> Vec<u8> {
        // Serializing a struct of strings and JSON values cannot fail.
        let json = serde_json::to_vec(outcome).unwrap_or_default();
        self.sealer.seal(&json)
    }

    pub(crate) fn open_outcome(&self, sealed: &[u8]) -> Result<Outcome> {
        let plain = self.sealer.open(sealed).ok_or_else(|| {
            RelayError::Corrupt("outcome cannot be decrypted: wrong DATA_ENCRYPTION_KEY?".into())
        })?;
        serde_json::from_slice(&plain).map_err(|e| RelayError::Corrupt(format!("outcome: {e}")))
    }
}

#[cfg(test)]
mod tests {
    use super::TxState::*;

    #[test]
    fn state_machine_allows_only_forward_moves() {
        assert!(Received.allows(Sending));
        assert!(Sending.allows(Received));
        assert!(Sending.allows(Unknown));
        assert!(Unknown.allows(Completed));
        assert!(!Completed.allows(Sending));
        assert!(!Received.allows(Completed));
        assert!(!Unknown.allows(Sending));
    }
}
