//! Outcomes: who waits for a transaction's outcome, and the terminal outcome stored with
//! the outbox rows that deliver it, in one database transaction.

use serde_json::json;
use tokio_postgres::Transaction;
use uuid::Uuid;

use super::Store;
use super::outbox::{self, Channel};
use super::state::{TxState, audit};
use crate::command::Outcome;
use crate::error::{RelayError, Result};

/// Who wants to hear the outcome of one command message. Empty strings mean "not asked".
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ReplyTarget {
    pub reply_to: String,
    pub correlation_id: String,
    pub callback_url: String,
}

impl ReplyTarget {
    /// The callback's destination (`scheme://host:port`), kept with the target so its
    /// outbox row can be written without working it out again; `None` without a callback.
    pub(crate) fn destination(&self) -> Option<String> {
        (!self.callback_url.is_empty()).then(|| outbox::destination_of(&self.callback_url))
    }
}

/// Registers `t` as waiting for the outcome of `id`; a target that asks for nothing (a
/// command sent again by the relay, say) is not recorded.
pub(crate) async fn add_target(tx: &Transaction<'_>, id: Uuid, t: &ReplyTarget) -> Result<()> {
    if t.reply_to.is_empty() && t.callback_url.is_empty() {
        return Ok(());
    }
    let destination = t.destination();
    tx.execute(
        "INSERT INTO reply_targets (transaction_id, reply_to, correlation_id, callback_url, destination)
         VALUES ($1, $2, $3, $4, $5) ON CONFLICT DO NOTHING",
        &[&id, &t.reply_to, &t.correlation_id, &t.callback_url, &destination],
    )
    .await?;
    Ok(())
}

/// Queues `outcome` for one target: its AMQP reply and its callback, where asked for.
pub(crate) async fn queue_for_target(
    tx: &Transaction<'_>,
    sealed: &[u8],
    outcome: &Outcome,
    tx_id: Option<Uuid>,
    rejection_id: Option<Uuid>,
    t: &ReplyTarget,
) -> Result<()> {
    let channels = [
        (Channel::Reply, &t.reply_to, Some(t.correlation_id.as_str())),
        (Channel::Callback, &t.callback_url, None),
    ];
    for (channel, target, correlation_id) in channels {
        if !target.is_empty() {
            outbox::insert(
                tx,
                outcome,
                sealed,
                tx_id,
                rejection_id,
                channel,
                target,
                correlation_id,
            )
            .await?;
        }
    }
    Ok(())
}

/// Queues `outcome` on `voucher.events` and for every target of `id` still waiting for its
/// end; `answers` marks them answered (a terminal outcome), a progress event leaves them
/// waiting.
pub(crate) async fn queue_for_waiting(
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

impl Store {
    /// Stores the terminal outcome and, in the same database transaction, the outbox rows
    /// that deliver it: the event, and a reply and callback for every waiting target.
    /// False if the transaction was not in `from` (someone else finished it).
    pub async fn complete(&self, id: Uuid, from: TxState, outcome: &Outcome) -> Result<bool> {
        let mut client = self.pool.get().await?;
        let tx = client.transaction().await?;
        let stored = self.complete_in(&tx, id, from, outcome).await?;
        tx.commit().await?;
        Ok(stored)
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

    /// `plain`, encrypted with the data key.
    pub(crate) fn seal(&self, plain: &[u8]) -> Vec<u8> {
        self.sealer.seal(plain)
    }

    pub(crate) fn seal_outcome(&self, outcome: &Outcome) -> Vec<u8> {
        // Serializing a struct of strings and JSON values cannot fail.
        let json = serde_json::to_vec(outcome).unwrap_or_default();
        self.sealer.seal(&json)
    }

    /// A sealed dead-letter notice, as the JSON bytes to publish.
    pub(crate) fn open_notice(&self, sealed: &[u8]) -> Result<Vec<u8>> {
        self.sealer.open(sealed).ok_or_else(|| {
            RelayError::Corrupt("notice cannot be decrypted: wrong DATA_ENCRYPTION_KEY?".into())
        })
    }

    pub(crate) fn open_outcome(&self, sealed: &[u8]) -> Result<Outcome> {
        let plain = self.sealer.open(sealed).ok_or_else(|| {
            RelayError::Corrupt("outcome cannot be decrypted: wrong DATA_ENCRYPTION_KEY?".into())
        })?;
        serde_json::from_slice(&plain).map_err(|e| RelayError::Corrupt(format!("outcome: {e}")))
    }
}
