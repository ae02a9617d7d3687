//! The transaction state machine: its states, the transitions it allows, and the one way a
//! state changes (an `UPDATE ... WHERE state = <from>` with its audit row, inside the
//! caller's database transaction), so two workers can never both move the same transaction
//! and a transition the machine does not allow cannot be written.

use serde_json::Value;
use tokio_postgres::Transaction;
use uuid::Uuid;

use crate::error::{RelayError, Result};
use crate::providers::work::WaitFor;

/// Where a transaction is in its life.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TxState {
    /// Accepted; no request sent yet (or provably never delivered).
    Received,
    /// A worker holds the lease and may have sent the request.
    Sending,
    /// The request may have been applied; the answer is not known. A resolve poll runs.
    Unknown,
    /// Taken; the provider's additional data is not there yet. A poll runs.
    AwaitingData,
    /// A raffle ticket was sold; a poll waits for the draw's result.
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

    /// The state that waits for `wait_for`.
    pub fn waiting_for(wait_for: WaitFor) -> TxState {
        match wait_for {
            WaitFor::Data => TxState::AwaitingData,
            WaitFor::Draw => TxState::AwaitingDraw,
        }
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
                | (Unknown, Received)
                | (Unknown, Completed)
                | (Unknown, AwaitingData)
                | (Unknown, AwaitingDraw)
                | (AwaitingData, Completed)
                | (AwaitingDraw, Completed)
                | (Sending, Reversing)
                | (Reversing, Received)
                | (Reversing, Completed)
        )
    }
}

/// Writes one audit row.
pub(crate) async fn audit(
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
pub(crate) async fn transition(
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
        // Proved never to have arrived: sent again from the start.
        assert!(Unknown.allows(Received));
    }
}
