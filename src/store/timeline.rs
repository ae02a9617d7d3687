//! One transaction's story for operators (`tx show`, the console): its state changes,
//! provider exchanges, advices, polls, callbacks, dead letters and operator actions, in
//! time order. Everything read here is stored masked already; the sealed columns (outcomes,
//! voucher codes) are never read.

use chrono::{DateTime, Utc};
use serde::Serialize;
use serde_json::{Value, json};
use uuid::Uuid;

use super::Store;
use crate::error::Result;

/// The transaction itself.
#[derive(Debug, Clone, Serialize)]
pub struct TxSummary {
    pub id: Uuid,
    pub source: String,
    pub command_id: String,
    pub kind: String,
    pub provider: String,
    pub state: String,
    pub status: Option<String>,
    pub params: Value,
    pub created_at: DateTime<Utc>,
    pub completed_at: Option<DateTime<Utc>>,
}

/// One step of the story.
#[derive(Debug, Clone, Serialize)]
pub struct Step {
    pub at: DateTime<Utc>,
    /// state, provider, advice, poll, callback, dead_letter or operator.
    pub what: String,
    pub summary: String,
    pub detail: Value,
}

/// What `tx find` filters on; `None` takes everything.
#[derive(Debug, Clone, Default)]
pub struct Find {
    /// A state (received, sending, unknown, awaiting_data, awaiting_draw, reversing,
    /// completed) or a terminal status (succeeded, declined, reversed, failed, expired).
    pub status: Option<String>,
    pub provider: Option<String>,
    pub source: Option<String>,
    pub older_than_secs: Option<f64>,
    pub limit: i64,
}

const SUMMARY_COLUMNS: &str = "id, source, command_id, kind, provider, state, status,
    params_masked, created_at, completed_at";

fn summary(r: &tokio_postgres::Row) -> TxSummary {
    TxSummary {
        id: r.get("id"),
        source: r.get("source"),
        command_id: r.get("command_id"),
        kind: r.get("kind"),
        provider: r.get("provider"),
        state: r.get("state"),
        status: r.get("status"),
        params: r.get("params_masked"),
        created_at: r.get("created_at"),
        completed_at: r.get("completed_at"),
    }
}

impl Store {
    /// The transactions `key` names: a transaction id, a provider request id, a command id
    /// (of any source), or a voucher serial or provider reference seen in the provider
    /// exchanges. Most recent first, at most 20.
    pub async fn find_transactions(&self, key: &str) -> Result<Vec<TxSummary>> {
        let client = self.pool.get().await?;
        // By primary key first: the other lookups scan (no index of their own, so the
        // common path writes none).
        if let Ok(id) = Uuid::parse_str(key) {
            let rows = client
                .query(
                    &format!(
                        "SELECT {SUMMARY_COLUMNS} FROM transactions WHERE id = $1
                         UNION ALL
                         SELECT {SUMMARY_COLUMNS} FROM transactions WHERE request_id = $1 AND id <> $1"
                    ),
                    &[&id],
                )
                .await?;
            if !rows.is_empty() {
                return Ok(rows.iter().map(summary).collect());
            }
        }
        let direct = client
            .query(
                &format!(
                    "SELECT {SUMMARY_COLUMNS} FROM transactions WHERE command_id = $1
                     ORDER BY created_at DESC LIMIT 20"
                ),
                &[&key],
            )
            .await?;
        if !direct.is_empty() {
            return Ok(direct.iter().map(summary).collect());
        }
        // A serial or a reference: only in what the providers said (masked, so a voucher
        // code never matches here). Short keys would match everything.
        if key.chars().count() < 4 {
            return Ok(Vec::new());
        }
        let rows = client
            .query(
                &format!(
                    "SELECT {SUMMARY_COLUMNS} FROM transactions WHERE id IN (
                         SELECT transaction_id FROM provider_exchanges
                         WHERE strpos(response::text, $1) > 0 OR strpos(request::text, $1) > 0
                         UNION
                         SELECT id FROM transactions WHERE strpos(provider_ref::text, $1) > 0)
                     ORDER BY created_at DESC LIMIT 20"
                ),
                &[&key],
            )
            .await?;
        Ok(rows.iter().map(summary).collect())
    }

    /// Transactions by state or status, provider, source and age; oldest first.
    pub async fn filter_transactions(&self, f: &Find) -> Result<Vec<TxSummary>> {
        let client = self.pool.get().await?;
        let rows = client
            .query(
                &format!(
                    "SELECT {SUMMARY_COLUMNS} FROM transactions
                     WHERE ($1::text IS NULL OR state = $1 OR status = $1)
                       AND ($2::text IS NULL OR provider = $2)
                       AND ($3::text IS NULL OR source = $3)
                       AND ($4::float8 IS NULL OR created_at < now() - make_interval(secs => $4))
                     ORDER BY created_at LIMIT $5"
                ),
                &[
                    &f.status,
                    &f.provider,
                    &f.source,
                    &f.older_than_secs,
                    &f.limit,
                ],
            )
            .await?;
        Ok(rows.iter().map(summary).collect())
    }

    /// Every step of transaction `id`, oldest first.
    pub async fn timeline(&self, id: Uuid) -> Result<Vec<Step>> {
        let client = self.pool.get().await?;
        // One statement: each source of steps gives (at, what, summary, detail).
        let rows = client
            .query(
                // A command that died before it ran has no transaction id on its dead
                // letter: it is found by its idempotency key.
                "WITH mine AS (
                     SELECT d.id FROM dead_letters d JOIN transactions t ON t.id = $1
                     WHERE d.transaction_id = t.id
                        OR (d.transaction_id IS NULL AND d.source = t.source
                            AND d.command_id = t.command_id))
                 SELECT created_at AS at, 'state' AS what,
                        coalesce(from_state || ' -> ', '') || to_state AS summary, detail
                 FROM audit_trail WHERE transaction_id = $1
                 UNION ALL
                 SELECT created_at, 'provider',
                        operation || ' ' || method || ' ' || regexp_replace(url, '^[a-z]+://[^/]+', '')
                            || ' -> ' || coalesce(status_code::text, coalesce(error, 'no answer'))
                            || ' in ' || latency_ms || ' ms',
                        jsonb_build_object('request', request, 'response', response, 'error', error)
                 FROM provider_exchanges WHERE transaction_id = $1
                 UNION ALL
                 SELECT created_at, 'advice',
                        kind || ' of ' || operation || ' recorded (' || state || ', '
                            || attempts || ' attempts)',
                        jsonb_build_object('advice_id', id, 'request_id', request_id,
                            'reversal_reason', reversal_reason, 'state', state,
                            'last_error', last_error, 'first_sent_at', first_sent_at,
                            'settled_at', settled_at, 'final_status', final_status)
                 FROM advices WHERE transaction_id = $1
                 UNION ALL
                 SELECT created_at, 'poll',
                        purpose || ' poll (' || attempts || ' attempts'
                            || CASE WHEN parked_at IS NOT NULL THEN ', parked: ' || coalesce(parked_reason, '')
                                    ELSE '' END || ')',
                        jsonb_build_object('next_at', next_at, 'deadline', deadline,
                            'parked_at', parked_at, 'discarded_at', discarded_at)
                 FROM polls WHERE transaction_id = $1
                 UNION ALL
                 SELECT a.attempted_at, 'callback',
                        'callback ' || a.result || coalesce(' HTTP ' || a.status, '')
                            || ' in ' || a.latency_ms || ' ms to ' || split_part(a.url, '?', 1),
                        jsonb_build_object('event_id', a.event_id, 'dialled_ip', a.dialled_ip,
                            'error', a.error)
                 FROM callback_attempts a JOIN outbox o ON o.id = a.outbox_id
                 WHERE o.transaction_id = $1
                 UNION ALL
                 SELECT coalesce(delivered_at, dead_at, created_at), 'delivery',
                        channel || ' ' || CASE WHEN delivered_at IS NOT NULL THEN 'delivered'
                                               WHEN dead_at IS NOT NULL THEN 'dead'
                                               ELSE 'pending' END,
                        jsonb_build_object('event_id', event_id, 'attempts', attempts,
                            'last_error', last_error)
                 FROM outbox WHERE transaction_id = $1
                 UNION ALL
                 SELECT dead_at, 'dead_letter',
                        'dead-lettered from ' || queue || ' (' || reason || ', ' || state || ')',
                        jsonb_build_object('dead_letter_id', id, 'last_error', last_error)
                 FROM dead_letters WHERE id IN (SELECT id FROM mine)
                 UNION ALL
                 SELECT at, 'operator',
                        action || ' of ' || place || ' item by ' || actor || ' (' || via || '): '
                            || result,
                        jsonb_build_object('item_id', item_id, 'why', why)
                 FROM operator_actions
                 WHERE transaction_id = $1
                    OR (place = 'voucher.dead' AND item_id IN (SELECT id::text FROM mine))
                 ORDER BY at, what",
                &[&id],
            )
            .await?;
        Ok(rows
            .iter()
            .map(|r| Step {
                at: r.get("at"),
                what: r.get("what"),
                summary: r.get("summary"),
                detail: r.get::<_, Option<Value>>("detail").unwrap_or(json!({})),
            })
            .collect())
    }

    /// Outcomes per minute over the last `minutes`, by status (for the console's chart).
    pub async fn outcomes_per_minute(
        &self,
        minutes: i32,
    ) -> Result<Vec<(DateTime<Utc>, String, i64)>> {
        let client = self.pool.get().await?;
        let rows = client
            .query(
                "SELECT date_trunc('minute', completed_at) AS minute, status, count(*)
                 FROM transactions
                 WHERE completed_at > now() - make_interval(mins => $1)
                 GROUP BY 1, 2 ORDER BY 1, 2",
                &[&minutes],
            )
            .await?;
        Ok(rows
            .iter()
            .map(|r| (r.get(0), r.get(1), r.get(2)))
            .collect())
    }
}
