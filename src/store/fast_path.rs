//! The common path of a command, written for many commands per statement (see
//! [`group_commit`](super::group_commit)):
//! - [`IntakeWrite`]: a command seen for the first time, recorded and claimed for this
//!   process in one go (`received` and `received -> sending` in the audit trail);
//! - [`FinishWrite`]: a provider's final answer: its exchanges, the outcome and the outbox
//!   rows that deliver it;
//! - [`DeliveredWrite`]: outbox rows delivered.
//!
//! The statements are shaped so that PostgreSQL finds each row by its primary key whatever
//! its statistics say. A table the relay has just filled (a new database, a benchmark)
//! has none yet, and the planner would otherwise walk a partial index of every row in
//! flight (`outbox_due`, `transactions_stale_leases`) for each row of the batch: hence
//! `(state = 'sending') IS TRUE`, which no partial index matches, and no `delivered_at IS
//! NULL` test where the claim already implies it (delivering or killing a row clears its
//! claim).
//!
//! Each is one statement in its own transaction, with the same effects, row for row, as
//! the one-command path it stands for (`Store::intake` then `Store::claim`,
//! `Store::record_exchange` then `Store::complete`, and a delivered callback's branch of
//! `Store::record_callback`, which itself writes through [`DeliveredWrite`]). Whatever the fast path does not cover (a key seen before, an
//! outcome that needs a confirmation, a failed callback) takes the one-command path.

use chrono::{DateTime, Utc};
use futures_util::future::BoxFuture;
use serde_json::Value;
use uuid::Uuid;

use super::Store;
use super::group_commit::BatchWrite;
use super::outcomes::ReplyTarget;
use super::transactions::TxRef;
use crate::error::Result;
use crate::providers::Exchange;

/// A command seen for the first time (as far as its sender knows), to record and claim.
#[derive(Debug, Clone)]
pub struct NewIntake {
    pub id: Uuid,
    pub source: String,
    pub command_id: String,
    pub kind: &'static str,
    pub provider: &'static str,
    pub params_masked: Value,
    pub local_reference: bool,
    pub refs: Option<Value>,
    /// The command as received, sealed.
    pub command_sealed: Vec<u8>,
    pub routing_key: String,
    pub target: ReplyTarget,
    /// `lease_until` is for operators reading the row; the owner's liveness decides.
    pub lease_secs: f64,
    pub owner: Uuid,
}

/// Records new commands, claimed; answers `None` for a key that exists (the caller takes
/// the one-command intake, which knows what to do with it).
pub struct IntakeWrite(pub Store);

const INTAKE: &str = "
WITH input AS (
    SELECT * FROM unnest($1::uuid[], $2::text[], $3::text[], $4::text[], $5::text[], $6::jsonb[],
                         $7::jsonb[], $8::bool[], $9::bytea[], $10::text[], $11::text[],
                         $12::text[], $13::text[], $14::text[], $15::float8[], $16::uuid[])
        AS i(id, source, command_id, kind, provider, params_masked, refs, local_reference,
             command_sealed, routing_key, reply_to, correlation_id, callback_url, destination,
             lease_secs, owner)
), inserted AS (
    INSERT INTO transactions
        (id, source, command_id, kind, provider, state, params_masked, provider_ref,
         local_reference, command_sealed, routing_key, attempts, lease_until, lease_owner,
         sent_at)
    SELECT id, source, command_id, kind, provider, 'sending', params_masked, refs,
           CASE WHEN local_reference THEN nextval('local_reference_seq')::integer END,
           command_sealed, routing_key, 1, now() + make_interval(secs => lease_secs), owner,
           now()
    FROM input
    ON CONFLICT (source, command_id) DO NOTHING
    RETURNING id, local_reference
), targets AS (
    INSERT INTO reply_targets (transaction_id, reply_to, correlation_id, callback_url, destination)
    SELECT i.id, i.reply_to, i.correlation_id, i.callback_url, i.destination
    FROM input i JOIN inserted USING (id)
    WHERE i.reply_to <> '' OR i.callback_url <> ''
    ON CONFLICT DO NOTHING
), audited AS (
    INSERT INTO audit_trail (transaction_id, from_state, to_state, detail)
    SELECT id, step.from_state, step.to_state, '{}'::jsonb
    FROM inserted,
         (VALUES (1, NULL, 'received'), (2, 'received', 'sending')) AS step(n, from_state, to_state)
    ORDER BY id, step.n
)
SELECT id, local_reference FROM inserted";

impl BatchWrite for IntakeWrite {
    type Item = NewIntake;
    type Out = Option<TxRef>;

    fn name(&self) -> &'static str {
        "intake"
    }

    fn write<'a>(&'a self, items: &'a [NewIntake]) -> BoxFuture<'a, Result<Vec<Option<TxRef>>>> {
        Box::pin(async move {
            let column = |f: fn(&NewIntake) -> String| items.iter().map(f).collect::<Vec<_>>();
            let ids: Vec<Uuid> = items.iter().map(|i| i.id).collect();
            let params: Vec<&Value> = items.iter().map(|i| &i.params_masked).collect();
            let refs: Vec<Option<&Value>> = items.iter().map(|i| i.refs.as_ref()).collect();
            let wants_ref: Vec<bool> = items.iter().map(|i| i.local_reference).collect();
            let sealed: Vec<&[u8]> = items.iter().map(|i| i.command_sealed.as_slice()).collect();
            let lease: Vec<f64> = items.iter().map(|i| i.lease_secs).collect();
            let owners: Vec<Uuid> = items.iter().map(|i| i.owner).collect();
            let destinations: Vec<Option<String>> =
                items.iter().map(|i| i.target.destination()).collect();
            let client = self.0.pool.get().await?;
            let statement = client.prepare_cached(INTAKE).await?;
            let rows = client
                .query(
                    &statement,
                    &[
                        &ids,
                        &column(|i| i.source.clone()),
                        &column(|i| i.command_id.clone()),
                        &column(|i| i.kind.to_string()),
                        &column(|i| i.provider.to_string()),
                        &params,
                        &refs,
                        &wants_ref,
                        &sealed,
                        &column(|i| i.routing_key.clone()),
                        &column(|i| i.target.reply_to.clone()),
                        &column(|i| i.target.correlation_id.clone()),
                        &column(|i| i.target.callback_url.clone()),
                        &destinations,
                        &lease,
                        &owners,
                    ],
                )
                .await?;
            let mut inserted = std::collections::HashMap::with_capacity(rows.len());
            for row in rows {
                inserted.insert(row.get::<_, Uuid>(0), row.get::<_, Option<i32>>(1));
            }
            Ok(ids
                .iter()
                .map(|id| {
                    inserted.get(id).map(|local_reference| TxRef {
                        id: *id,
                        local_reference: *local_reference,
                        request_id: *id,
                    })
                })
                .collect())
        })
    }
}

/// A provider's final answer to a transaction in `sending`, with no advice to follow.
#[derive(Debug, Clone)]
pub struct Finish {
    pub id: Uuid,
    pub status: &'static str,
    pub event_id: String,
    /// The outcome, sealed.
    pub outcome_sealed: Vec<u8>,
    /// The outcome's routing key on `voucher.events`.
    pub event_key: String,
    pub exchanges: Vec<Exchange>,
}

/// Records answers: answers whether each outcome was stored (false: the transaction was
/// no longer `sending`, and only its exchanges were recorded).
pub struct FinishWrite(pub Store);

const FINISH: &str = "
WITH input AS (
    SELECT * FROM unnest($1::uuid[], $2::text[], $3::text[], $4::bytea[], $5::text[])
        AS i(id, status, event_id, sealed, event_key)
), exchanges AS (
    INSERT INTO provider_exchanges
        (transaction_id, provider, operation, method, url, request, status_code, response,
         error, latency_ms)
    SELECT * FROM unnest($6::uuid[], $7::text[], $8::text[], $9::text[], $10::text[],
                         $11::jsonb[], $12::integer[], $13::jsonb[], $14::text[], $15::integer[])
), done AS (
    UPDATE transactions t
    SET state = 'completed', status = i.status, event_id = i.event_id, outcome_sealed = i.sealed,
        completed_at = now(), updated_at = now(), lease_until = NULL
    FROM input i
    WHERE t.id = i.id AND (t.state = 'sending') IS TRUE
    RETURNING t.id
), audited AS (
    INSERT INTO audit_trail (transaction_id, from_state, to_state, detail)
    SELECT i.id, 'sending', 'completed', jsonb_build_object('status', i.status, 'event_id', i.event_id)
    FROM input i JOIN done USING (id)
), unpolled AS (
    DELETE FROM polls WHERE transaction_id IN (SELECT id FROM done)
), answered AS (
    UPDATE reply_targets r SET answered_at = now()
    FROM done
    WHERE r.transaction_id = done.id AND r.answered_at IS NULL
    RETURNING r.transaction_id, r.reply_to, r.correlation_id, r.callback_url, r.destination
), queued AS (
    INSERT INTO outbox (event_id, transaction_id, channel, target, correlation_id,
                        payload_sealed, destination, next_attempt_at)
    SELECT i.event_id, i.id, 'event', i.event_key, NULL, i.sealed, '', now()
    FROM input i JOIN done USING (id)
    UNION ALL
    SELECT i.event_id, i.id, 'reply', a.reply_to, a.correlation_id, i.sealed, '', now()
    FROM answered a JOIN input i ON i.id = a.transaction_id
    WHERE a.reply_to <> ''
    UNION ALL
    SELECT i.event_id, i.id, 'callback', a.callback_url, NULL, i.sealed,
           coalesce(a.destination, a.callback_url),
           CASE WHEN EXISTS (SELECT 1 FROM callback_disabled_urls u WHERE u.url = a.callback_url)
                THEN 'infinity'::timestamptz ELSE now() END
    FROM answered a JOIN input i ON i.id = a.transaction_id
    WHERE a.callback_url <> ''
)
SELECT id FROM done";

impl BatchWrite for FinishWrite {
    type Item = Finish;
    type Out = bool;

    fn name(&self) -> &'static str {
        "finish"
    }

    fn write<'a>(&'a self, items: &'a [Finish]) -> BoxFuture<'a, Result<Vec<bool>>> {
        Box::pin(async move {
            let ids: Vec<Uuid> = items.iter().map(|f| f.id).collect();
            let status: Vec<&str> = items.iter().map(|f| f.status).collect();
            let event_ids: Vec<&str> = items.iter().map(|f| f.event_id.as_str()).collect();
            let sealed: Vec<&[u8]> = items.iter().map(|f| f.outcome_sealed.as_slice()).collect();
            let keys: Vec<&str> = items.iter().map(|f| f.event_key.as_str()).collect();
            let x = ExchangeColumns::of(items);
            let client = self.0.pool.get().await?;
            let statement = client.prepare_cached(FINISH).await?;
            let rows = client
                .query(
                    &statement,
                    &[
                        &ids,
                        &status,
                        &event_ids,
                        &sealed,
                        &keys,
                        &x.transaction_ids,
                        &x.providers,
                        &x.operations,
                        &x.methods,
                        &x.urls,
                        &x.requests,
                        &x.statuses,
                        &x.responses,
                        &x.errors,
                        &x.latencies,
                    ],
                )
                .await?;
            let done: std::collections::HashSet<Uuid> = rows.iter().map(|r| r.get(0)).collect();
            Ok(ids.iter().map(|id| done.contains(id)).collect())
        })
    }
}

/// Every exchange of a batch, column by column.
struct ExchangeColumns<'a> {
    transaction_ids: Vec<Uuid>,
    providers: Vec<&'static str>,
    operations: Vec<&'static str>,
    methods: Vec<&'a str>,
    urls: Vec<&'a str>,
    requests: Vec<&'a Value>,
    statuses: Vec<Option<i32>>,
    responses: Vec<Option<&'a Value>>,
    errors: Vec<Option<&'a str>>,
    latencies: Vec<i32>,
}

impl<'a> ExchangeColumns<'a> {
    fn of(items: &'a [Finish]) -> ExchangeColumns<'a> {
        let all = || {
            items
                .iter()
                .flat_map(|f| f.exchanges.iter().map(move |e| (f.id, e)))
        };
        ExchangeColumns {
            transaction_ids: all().map(|(id, _)| id).collect(),
            providers: all().map(|(_, e)| e.provider).collect(),
            operations: all().map(|(_, e)| e.operation).collect(),
            methods: all().map(|(_, e)| e.method.as_str()).collect(),
            urls: all().map(|(_, e)| e.url.as_str()).collect(),
            requests: all().map(|(_, e)| &e.request).collect(),
            statuses: all().map(|(_, e)| e.status.map(i32::from)).collect(),
            responses: all().map(|(_, e)| e.response.as_ref()).collect(),
            errors: all().map(|(_, e)| e.error.as_deref()).collect(),
            latencies: all().map(|(_, e)| e.latency_ms()).collect(),
        }
    }
}

/// An outbox row delivered: an AMQP publish confirmed, or a callback answered 2xx (with
/// its attempt's log line).
#[derive(Debug, Clone)]
pub struct Delivered {
    pub id: i64,
    /// The claim it was delivered under: a row another worker took over is not touched.
    pub claim: DateTime<Utc>,
    pub callback: Option<DeliveredCallback>,
}

/// What the attempt log keeps of a delivered callback.
#[derive(Debug, Clone)]
pub struct DeliveredCallback {
    pub at: DateTime<Utc>,
    pub dialled_ip: Option<String>,
    pub status: Option<i32>,
    pub latency_ms: i32,
    pub response_body: Option<String>,
    pub destination: String,
}

/// Marks rows delivered; answers whether each claim still held its row.
pub struct DeliveredWrite(pub Store);

const DELIVERED: &str = "
WITH input AS (
    SELECT * FROM unnest($1::bigint[], $2::timestamptz[], $3::bool[], $4::timestamptz[],
                         $5::text[], $6::integer[], $7::integer[], $8::text[], $9::text[])
        AS i(id, claim, callback, at, dialled_ip, status, latency_ms, response_body, destination)
), settled AS (
    UPDATE outbox o SET locked_until = NULL, delivered_at = now(), last_error = NULL,
                        attempts = o.attempts + 1
    FROM input i
    WHERE o.id = i.id AND o.locked_until = i.claim
    RETURNING o.id, o.event_id, o.target
), logged AS (
    INSERT INTO callback_attempts (outbox_id, event_id, attempted_at, url, dialled_ip, status,
                                   latency_ms, result, response_body)
    SELECT s.id, s.event_id, i.at, s.target, i.dialled_ip, i.status, i.latency_ms, 'delivered',
           i.response_body
    FROM settled s JOIN input i USING (id)
    WHERE i.callback
), cleared AS (
    UPDATE callback_destinations
    SET consecutive_failures = 0, circuit_open_until = NULL, updated_at = now()
    WHERE destination IN (SELECT i.destination FROM settled s JOIN input i USING (id) WHERE i.callback)
      AND (consecutive_failures > 0 OR circuit_open_until IS NOT NULL)
)
SELECT id FROM settled";

impl BatchWrite for DeliveredWrite {
    type Item = Delivered;
    type Out = bool;

    fn name(&self) -> &'static str {
        "delivered"
    }

    fn write<'a>(&'a self, items: &'a [Delivered]) -> BoxFuture<'a, Result<Vec<bool>>> {
        Box::pin(async move {
            let ids: Vec<i64> = items.iter().map(|d| d.id).collect();
            let claims: Vec<DateTime<Utc>> = items.iter().map(|d| d.claim).collect();
            let is_callback: Vec<bool> = items.iter().map(|d| d.callback.is_some()).collect();
            let cb = |d: &'a Delivered| d.callback.as_ref();
            let at: Vec<Option<DateTime<Utc>>> =
                items.iter().map(|d| cb(d).map(|c| c.at)).collect();
            let dialled: Vec<Option<&str>> = items
                .iter()
                .map(|d| cb(d).and_then(|c| c.dialled_ip.as_deref()))
                .collect();
            let status: Vec<Option<i32>> =
                items.iter().map(|d| cb(d).and_then(|c| c.status)).collect();
            let latency: Vec<Option<i32>> =
                items.iter().map(|d| cb(d).map(|c| c.latency_ms)).collect();
            let body: Vec<Option<&str>> = items
                .iter()
                .map(|d| cb(d).and_then(|c| c.response_body.as_deref()))
                .collect();
            let destination: Vec<Option<&str>> = items
                .iter()
                .map(|d| cb(d).map(|c| c.destination.as_str()))
                .collect();
            let client = self.0.pool.get().await?;
            let statement = client.prepare_cached(DELIVERED).await?;
            let rows = client
                .query(
                    &statement,
                    &[
                        &ids,
                        &claims,
                        &is_callback,
                        &at,
                        &dialled,
                        &status,
                        &latency,
                        &body,
                        &destination,
                    ],
                )
                .await?;
            let settled: std::collections::HashSet<i64> = rows.iter().map(|r| r.get(0)).collect();
            Ok(ids.iter().map(|id| settled.contains(id)).collect())
        })
    }
}
