//! Sending a command again when the provider shows it never arrived.
//!
//! A request the provider provably never received (CSQ: its reference is unknown once the
//! request's own timeout has passed) did nothing, so failing the command would turn a
//! fault of the network or of our own worker into a loss for the user. The transaction
//! goes back to `received` under a fresh provider reference, and the stored command is
//! published again; the executor then runs it like any other. A budget bounds this: past
//! it, the command ends `failed` (`not_applied`) with every reference it was sent under.

use std::time::Duration;

use serde_json::{Value, json};
use tokio_postgres::Transaction;
use uuid::Uuid;

use super::Store;
use super::state::{TxState, transition};
use crate::command::{Outcome, Status, Subject};
use crate::crypto::Sealer;
use crate::error::{RelayError, Result};
use crate::providers::step::error;

/// The header that marks a command published again by the relay: its reply targets are
/// registered already, so the message adds none.
pub const RESEND_HEADER: &str = "x-voucher-resend";

/// A command to publish again, as it was received.
#[derive(Debug, Clone)]
pub struct Resend {
    pub transaction_id: Uuid,
    pub routing_key: String,
    pub body: Vec<u8>,
}

/// How a command the provider never received is sent again.
#[derive(Debug, Clone, Copy)]
pub struct Resending<'a> {
    /// The state the transaction is in (`unknown`, or `reversing` for a provider that
    /// learns it by a reversal).
    pub from: TxState,
    /// Sends again allowed before it ends.
    pub budget: u32,
    /// Why it counts as never received, for the record.
    pub why: &'a str,
    pub subject: &'a Subject,
    /// The outcome past the budget; `None`: `failed` / `not_applied` with the references
    /// it was sent under.
    pub past_budget: Option<&'a Outcome>,
}

/// The reference a transaction's current send went under, as `prior_refs` and an
/// outcome's `result.attempts` list it; `$3` is why it counts as never received.
const SENT_REFERENCE: &str = "jsonb_strip_nulls(jsonb_build_object(
    'local_reference', local_reference, 'request_id', COALESCE(request_id, id),
    'sent_at', sent_at, 'reason', $3::text))";

/// What a "never arrived" answer came to.
#[derive(Debug)]
pub enum SendAgain {
    /// Back to `received` under a fresh reference: publish this.
    Resend(Resend),
    /// The budget is spent (or the command was not kept): it ended with this outcome.
    Exhausted(Box<Outcome>),
}

/// `from -> received` under a fresh provider reference, inside the caller's database
/// transaction; returns the command to publish, or `None` if the transaction was not in
/// `from` or has no stored command (one received before V8).
pub(crate) async fn send_again(
    tx: &Transaction<'_>,
    sealer: &Sealer,
    id: Uuid,
    from: TxState,
    why: &str,
) -> Result<Option<Resend>> {
    let row = tx
        .query_opt(
            "SELECT command_sealed, routing_key FROM transactions
             WHERE id = $1 AND state = $2 AND command_sealed IS NOT NULL FOR UPDATE",
            &[&id, &from.as_str()],
        )
        .await?;
    let Some(row) = row else {
        return Ok(None);
    };
    let sealed: Vec<u8> = row.get(0);
    let body = open_command(sealer, &sealed)?;
    // The old reference is kept for the record; a provider that takes a reference from us
    // gets a fresh one, so the request sent again cannot be mistaken for the first.
    tx.execute(
        &format!(
            "UPDATE transactions SET resends = resends + 1, lease_owner = NULL,
                 prior_refs = prior_refs || jsonb_build_array({SENT_REFERENCE}),
                 local_reference = CASE WHEN local_reference IS NOT NULL
                                        THEN nextval('local_reference_seq')::integer END,
                 request_id = $2
             WHERE id = $1"
        ),
        &[&id, &Uuid::now_v7(), &why],
    )
    .await?;
    let detail = json!({"reason": why});
    if !transition(tx, id, from, TxState::Received, detail).await? {
        return Ok(None);
    }
    tx.execute("DELETE FROM polls WHERE transaction_id = $1", &[&id])
        .await?;
    Ok(Some(Resend {
        transaction_id: id,
        routing_key: row.get(1),
        body,
    }))
}

fn open_command(sealer: &Sealer, sealed: &[u8]) -> Result<Vec<u8>> {
    sealer.open(sealed).ok_or_else(|| {
        RelayError::Corrupt("stored command cannot be decrypted: wrong DATA_ENCRYPTION_KEY?".into())
    })
}

impl Store {
    /// Commands of `providers` sent again more than `grace` ago and still not taken: their
    /// message may have been lost. Marks them, so the next look is `grace` later. At most
    /// 100 at a time.
    pub async fn lost_resends(&self, grace: Duration, providers: &[&str]) -> Result<Vec<Resend>> {
        let client = self.pool.get().await?;
        let rows = client
            .query(
                "UPDATE transactions SET updated_at = now()
                 WHERE id IN (SELECT id FROM transactions
                              WHERE state = 'received' AND resends > 0
                                AND updated_at < now() - make_interval(secs => $1)
                                AND provider = ANY($2) AND command_sealed IS NOT NULL
                              ORDER BY updated_at LIMIT 100 FOR UPDATE SKIP LOCKED)
                 RETURNING id, routing_key, command_sealed",
                &[&grace.as_secs_f64(), &providers],
            )
            .await?;
        let mut lost = Vec::with_capacity(rows.len());
        for row in rows {
            let sealed: Vec<u8> = row.get(2);
            let body = open_command(&self.sealer, &sealed)?;
            lost.push(Resend {
                transaction_id: row.get(0),
                routing_key: row.get(1),
                body,
            });
        }
        Ok(lost)
    }

    /// The provider shows the request of `id` never arrived: send it again, unless the
    /// budget is spent (see [`Resending`]). `None` if the transaction was no longer in
    /// `from`.
    pub async fn resend_unapplied(
        &self,
        id: Uuid,
        again: &Resending<'_>,
    ) -> Result<Option<SendAgain>> {
        let mut client = self.pool.get().await?;
        let tx = client.transaction().await?;
        let result = self.resend_unapplied_in(&tx, id, again).await?;
        tx.commit().await?;
        Ok(result)
    }

    /// [`resend_unapplied`](Self::resend_unapplied) inside the caller's database
    /// transaction.
    pub(crate) async fn resend_unapplied_in(
        &self,
        tx: &Transaction<'_>,
        id: Uuid,
        again: &Resending<'_>,
    ) -> Result<Option<SendAgain>> {
        let row = tx
            .query_opt(
                &format!(
                    "SELECT resends, prior_refs, command_sealed IS NOT NULL AS kept,
                            {SENT_REFERENCE} AS last
                     FROM transactions WHERE id = $1 AND state = $2 FOR UPDATE"
                ),
                &[&id, &again.from.as_str(), &again.why],
            )
            .await?;
        let Some(row) = row else {
            return Ok(None);
        };
        let resends: i32 = row.get("resends");
        let within_budget = u32::try_from(resends).is_ok_and(|n| n < again.budget);
        if within_budget && row.get::<_, bool>("kept") {
            let resend = send_again(tx, &self.sealer, id, again.from, again.why).await?;
            return Ok(resend.map(SendAgain::Resend));
        }
        let mut references: Vec<Value> = match row.get::<_, Value>("prior_refs") {
            Value::Array(refs) => refs,
            _ => Vec::new(),
        };
        references.push(row.get("last"));
        let sends = references.len();
        let outcome = match again.past_budget {
            Some(outcome) => outcome.clone(),
            None => again.subject.outcome(
                Status::Failed,
                Some(json!({"sends": sends, "attempts": references})),
                Some(error(
                    "not_applied",
                    format!(
                        "the provider never received the command, sent {sends} time(s): nothing was done"
                    ),
                    None,
                )),
            ),
        };
        let stored = self.complete_in(tx, id, again.from, &outcome).await?;
        Ok(stored.then(|| SendAgain::Exhausted(Box::new(outcome))))
    }
}
