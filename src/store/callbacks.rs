//! Callback deliveries as operators see them: dead ones and their replay, disabled URLs,
//! and the attempt log. The dispatcher's own writes are in [`super::outbox`].

use serde_json::{Value, json};

use tokio_postgres::GenericClient;

use super::Store;
use crate::error::Result;

/// Which dead callbacks `callbacks replay` puts back to work.
#[derive(Debug, Clone)]
pub enum ReplaySelector {
    /// The callbacks of one outcome (its event id, the `webhook-id`).
    Event(String),
    /// Every dead callback to one URL.
    Url(String),
    AllDead,
}

/// One callback put back to work.
#[derive(Debug, Clone)]
pub struct Replayed {
    pub outbox_id: i64,
    pub event_id: String,
    pub url: String,
}

/// A timestamp as UTC ISO 8601, whatever the session's time zone.
macro_rules! utc {
    ($column:literal) => {
        concat!(
            "to_char(",
            $column,
            " AT TIME ZONE 'UTC', 'YYYY-MM-DD\"T\"HH24:MI:SS.MS\"Z\"')"
        )
    };
}

/// Lines that PostgreSQL builds as JSON: the query's one column.
async fn json_lines(
    client: &impl GenericClient,
    sql: &str,
    params: &[&(dyn tokio_postgres::types::ToSql + Sync)],
) -> Result<Vec<Value>> {
    let rows = client.query(sql, params).await?;
    Ok(rows.iter().map(|r| r.get::<_, Value>(0)).collect())
}

/// The attempts of one callback row, oldest first.
async fn attempts_of(client: &impl GenericClient, outbox_id: i64) -> Result<Vec<Value>> {
    json_lines(
        client,
        concat!(
            "SELECT json_build_object('at', ",
            utc!("attempted_at"),
            ", 'url', url, 'dialled_ip', dialled_ip, 'status', status,
                'latency_ms', latency_ms, 'result', result, 'error', error,
                'response_body', response_body)
             FROM callback_attempts WHERE outbox_id = $1 ORDER BY id"
        ),
        &[&outbox_id],
    )
    .await
}

/// The message published to `callbacks.dead` for dead callback row `origin_id`, built in the
/// transaction that ends it: what it was, why it died, every attempt, and the outcome with
/// its secrets masked (the sealed original stays in PostgreSQL for replay).
pub(crate) async fn dead_letter_notice(
    tx: &impl GenericClient,
    origin_id: i64,
    outcome: &[u8],
) -> Result<Vec<u8>> {
    let row = tx
        .query_one(
            concat!(
                "SELECT event_id, coalesce(transaction_id, rejection_id) AS transaction_id,
                        target, last_error, ",
                utc!("dead_at"),
                " AS dead_at FROM outbox WHERE id = $1"
            ),
            &[&origin_id],
        )
        .await?;
    let event_id: String = row.get("event_id");
    let outcome: Value = serde_json::from_slice(outcome).unwrap_or(Value::Null);
    let notice = json!({
        "type": "callback.dead",
        "event_id": event_id,
        "webhook_id": event_id,
        "transaction_id": row.get::<_, Option<uuid::Uuid>>("transaction_id"),
        "url": row.get::<_, String>("target"),
        "reason": row.get::<_, Option<String>>("last_error"),
        "dead_at": row.get::<_, Option<String>>("dead_at"),
        "attempts": attempts_of(tx, origin_id).await?,
        "outcome": crate::mask::mask_json(&outcome),
        "replay": format!("voucher-relay callbacks replay {event_id}"),
    });
    Ok(serde_json::to_vec(&notice).unwrap_or_default())
}

/// Takes the pending callbacks of disabled URLs (of `url`, or of all) out of the claim's
/// sight: `next_attempt_at = infinity` until the URL is enabled. Rows another worker holds
/// are parked when it records its attempt.
pub(crate) async fn park_disabled(client: &impl GenericClient, url: Option<&str>) -> Result<()> {
    client
        .execute(
            "UPDATE outbox o SET next_attempt_at = 'infinity'
             WHERE o.channel = 'callback' AND o.delivered_at IS NULL AND o.dead_at IS NULL
               AND o.next_attempt_at <> 'infinity'
               AND ($1::text IS NULL OR o.target = $1)
               AND (o.locked_until IS NULL OR o.locked_until < now())
               AND EXISTS (SELECT 1 FROM callback_disabled_urls u WHERE u.url = o.target)",
            &[&url],
        )
        .await?;
    Ok(())
}

/// Puts back to work the parked callbacks whose URL is no longer disabled. `callbacks
/// enable` calls it; the sweeper calls it too, for a callback written while its URL was
/// being enabled.
async fn unpark_enabled(client: &impl GenericClient) -> Result<u64> {
    Ok(client
        .execute(
            "UPDATE outbox o SET next_attempt_at = now()
             WHERE o.channel = 'callback' AND o.delivered_at IS NULL AND o.dead_at IS NULL
               AND o.next_attempt_at = 'infinity'
               AND NOT EXISTS (SELECT 1 FROM callback_disabled_urls u WHERE u.url = o.target)",
            &[],
        )
        .await?)
}

impl Store {
    /// Puts back to work the parked callbacks whose URL is no longer disabled: see
    /// [`unpark_enabled`].
    pub async fn unpark_enabled_callbacks(&self) -> Result<u64> {
        let client = self.pool.get().await?;
        unpark_enabled(&**client).await
    }

    /// Puts the selected dead callbacks back to work with a fresh schedule. Only dead ones:
    /// a callback delivered or still being tried is left alone, so running it twice is safe.
    pub async fn replay_callbacks(&self, selector: &ReplaySelector) -> Result<Vec<Replayed>> {
        let (filter, arg) = match selector {
            ReplaySelector::Event(id) => ("event_id = $1", id.as_str()),
            ReplaySelector::Url(url) => ("target = $1", url.as_str()),
            ReplaySelector::AllDead => ("$1 = ''", ""),
        };
        let client = self.pool.get().await?;
        let rows = client
            .query(
                &format!(
                    "UPDATE outbox SET dead_at = NULL, attempts = 0, throttled = 0, next_attempt_at = now(),
                         locked_until = NULL, last_error = 'replayed by an operator'
                     WHERE channel = 'callback' AND dead_at IS NOT NULL AND discarded_at IS NULL AND {filter}
                     RETURNING id, event_id, target"
                ),
                &[&arg],
            )
            .await?;
        // A replayed callback to a disabled URL waits for it like the others.
        park_disabled(&**client, None).await?;
        Ok(rows
            .iter()
            .map(|r| Replayed {
                outbox_id: r.get("id"),
                event_id: r.get("event_id"),
                url: r.get("target"),
            })
            .collect())
    }

    /// Enables a URL disabled by a 410; returns whether it was disabled and how many of its
    /// deliveries were waiting.
    pub async fn enable_callback_url(&self, url: &str) -> Result<(bool, i64)> {
        let client = self.pool.get().await?;
        let removed = client
            .execute("DELETE FROM callback_disabled_urls WHERE url = $1", &[&url])
            .await?;
        unpark_enabled(&**client).await?;
        let waiting: i64 = client
            .query_one(
                "SELECT count(*) FROM outbox
                 WHERE channel = 'callback' AND target = $1 AND delivered_at IS NULL AND dead_at IS NULL",
                &[&url],
            )
            .await?
            .get(0);
        Ok((removed > 0, waiting))
    }

    /// Every disabled URL, with when, why and how many deliveries wait for it.
    pub async fn disabled_callback_urls(&self) -> Result<Vec<Value>> {
        let client = self.pool.get().await?;
        json_lines(
            &**client,
            concat!(
                "SELECT json_build_object('url', u.url, 'reason', u.reason, 'disabled_at', ",
                utc!("u.disabled_at"),
                ", 'waiting', (SELECT count(*) FROM outbox o
                                 WHERE o.channel = 'callback' AND o.target = u.url
                                   AND o.delivered_at IS NULL AND o.dead_at IS NULL))
                 FROM callback_disabled_urls u ORDER BY u.disabled_at"
            ),
            &[],
        )
        .await
    }

    /// Every dead callback, newest first, without its payload.
    pub async fn dead_callbacks(&self) -> Result<Vec<Value>> {
        let client = self.pool.get().await?;
        json_lines(
            &**client,
            concat!(
                "SELECT json_build_object('event_id', event_id, 'url', target, 'reason', last_error,
                        'attempts', attempts, 'dead_at', ",
                utc!("dead_at"),
                ") FROM outbox WHERE channel = 'callback' AND dead_at IS NOT NULL AND discarded_at IS NULL
                 ORDER BY dead_at DESC"
            ),
            &[],
        )
        .await
    }

    /// The delivery history of one outcome's callbacks: each row's state and its attempts.
    pub async fn callback_history(&self, event_id: &str) -> Result<Vec<Value>> {
        let client = self.pool.get().await?;
        let rows = client
            .query(
                "SELECT id, target,
                        CASE WHEN delivered_at IS NOT NULL THEN 'delivered'
                             WHEN dead_at IS NOT NULL THEN 'dead'
                             WHEN EXISTS (SELECT 1 FROM callback_disabled_urls u WHERE u.url = target)
                                 THEN 'waiting: URL disabled'
                             ELSE 'pending' END AS state,
                        last_error
                 FROM outbox WHERE channel = 'callback' AND event_id = $1 ORDER BY id",
                &[&event_id],
            )
            .await?;
        let mut out = Vec::with_capacity(rows.len());
        for r in &rows {
            out.push(json!({
                "event_id": event_id,
                "url": r.get::<_, String>("target"),
                "state": r.get::<_, String>("state"),
                "last_error": r.get::<_, Option<String>>("last_error"),
                "attempts": attempts_of(&**client, r.get("id")).await?,
            }));
        }
        Ok(out)
    }
}
