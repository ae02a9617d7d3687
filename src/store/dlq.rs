//! The dead-letter and parked places, as operators see them: what waits in each, why, and
//! the replay and discard of one item, each recorded in `operator_actions` with who and why
//! in the same database transaction.
//!
//! Every place is read from PostgreSQL, never from a queue, so reading changes nothing:
//! - `voucher.dead`: the copy of every dead-lettered message (`dead_letters`);
//! - `voucher.rejected`: the rejections (their originals stay on the queue);
//! - `advice.parked`, `polls.parked`, `callbacks.dead`: the rows the workers parked.
//!
//! Discarding never deletes: the row stays, marked, as the archive.

use chrono::{DateTime, Utc};
use serde::Serialize;
use serde_json::Value;
use tokio_postgres::{Row, Transaction};
use uuid::Uuid;

use super::Store;
use crate::error::{RelayError, Result};
use crate::mask::mask_json;

/// A place where items wait for an operator.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(into = "&'static str")]
pub enum Place {
    VoucherDead,
    VoucherRejected,
    AdviceParked,
    PollsParked,
    CallbacksDead,
}

impl From<Place> for &'static str {
    fn from(p: Place) -> &'static str {
        p.name()
    }
}

impl Place {
    pub const ALL: [Place; 5] = [
        Place::VoucherDead,
        Place::VoucherRejected,
        Place::AdviceParked,
        Place::PollsParked,
        Place::CallbacksDead,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Place::VoucherDead => "voucher.dead",
            Place::VoucherRejected => "voucher.rejected",
            Place::AdviceParked => "advice.parked",
            Place::PollsParked => "polls.parked",
            Place::CallbacksDead => "callbacks.dead",
        }
    }

    pub fn parse(name: &str) -> Option<Place> {
        Place::ALL.into_iter().find(|p| p.name() == name)
    }

    /// Why an item of this place cannot be replayed, if it cannot.
    pub fn cannot_replay(self) -> Option<&'static str> {
        match self {
            Place::VoucherRejected => Some(
                "a rejected command already has its `rejected` outcome; publish a corrected command with a new command_id",
            ),
            _ => None,
        }
    }

    /// Whether `id` has the shape of this place's ids (checked before any SQL).
    pub fn valid_id(self, id: &str) -> bool {
        match self {
            Place::CallbacksDead => id.parse::<i64>().is_ok(),
            _ => Uuid::parse_str(id).is_ok(),
        }
    }

    /// The waiting items of this place, all with the same columns: id, transaction_id,
    /// source, command_id, kind, provider, reason, attempts, last_error, since, detail.
    fn items_sql(self) -> &'static str {
        match self {
            Place::VoucherDead => {
                "SELECT d.id::text AS id, d.transaction_id, d.source, d.command_id, d.kind,
                        t.provider, d.reason, d.attempts, d.last_error, d.dead_at AS since,
                        jsonb_build_object('queue', d.queue, 'exchange', d.exchange,
                                   'routing_key', d.routing_key,
                                           'body', d.body_masked) AS detail
                 FROM dead_letters d LEFT JOIN transactions t ON t.id = d.transaction_id
                 WHERE d.state = 'dead'"
            }
            Place::VoucherRejected => {
                "SELECT r.id::text AS id, NULL::uuid AS transaction_id, r.source, r.command_id,
                        NULL::text AS kind, NULL::text AS provider, r.reason_code AS reason,
                        1 AS attempts, r.reason AS last_error, r.created_at AS since,
                        jsonb_build_object('routing_key', r.routing_key, 'body_sha256', r.body_sha256,
                                           'body_bytes', r.body_bytes, 'event_id', r.event_id) AS detail
                 FROM rejections r WHERE r.discarded_at IS NULL"
            }
            Place::AdviceParked => {
                "SELECT a.id::text AS id, a.transaction_id, t.source, t.command_id, t.kind,
                        a.provider,
                        a.kind || CASE WHEN a.last_error ILIKE '%format%' THEN '_refused_as_malformed'
                                       ELSE '_budget_used_up' END AS reason,
                        a.attempts, a.last_error, a.updated_at AS since,
                        jsonb_build_object('operation', a.operation, 'advice_kind', a.kind,
                                           'request_id', a.request_id,
                                           'reversal_reason', a.reversal_reason,
                                           'transaction_state', t.state) AS detail
                 FROM advices a JOIN transactions t ON t.id = a.transaction_id
                 WHERE a.state = 'parked'"
            }
            Place::PollsParked => {
                "SELECT p.transaction_id::text AS id, p.transaction_id, t.source, t.command_id,
                        t.kind, t.provider,
                        p.purpose || ': ' || split_part(coalesce(p.parked_reason, 'parked'), ':', 1) AS reason,
                        p.attempts, p.parked_reason AS last_error, p.parked_at AS since,
                        jsonb_build_object('purpose', p.purpose, 'deadline', p.deadline,
                                           'transaction_state', t.state) AS detail
                 FROM polls p JOIN transactions t ON t.id = p.transaction_id
                 WHERE p.parked_at IS NOT NULL AND p.discarded_at IS NULL"
            }
            Place::CallbacksDead => {
                // The URL without its query string: receivers put tokens there.
                "SELECT o.id::text AS id, o.transaction_id, t.source, t.command_id, t.kind,
                        t.provider,
                        CASE WHEN o.last_error ILIKE '%refused%' THEN 'url_refused'
                             ELSE 'schedule_used_up' END AS reason,
                        o.attempts, o.last_error, o.dead_at AS since,
                        jsonb_build_object('event_id', o.event_id,
                                           'url', split_part(o.target, '?', 1)) AS detail
                 FROM outbox o LEFT JOIN transactions t ON t.id = o.transaction_id
                 WHERE o.channel = 'callback' AND o.dead_at IS NOT NULL AND o.discarded_at IS NULL"
            }
        }
    }
}

/// One place at a glance.
#[derive(Debug, Clone, Serialize)]
pub struct Summary {
    pub place: Place,
    pub count: i64,
    pub oldest: Option<DateTime<Utc>>,
    /// Each reason with its count, the commonest first.
    pub reasons: Vec<ReasonCount>,
}

#[derive(Debug, Clone, Serialize)]
pub struct ReasonCount {
    pub reason: String,
    pub count: i64,
}

/// One waiting item, masked.
#[derive(Debug, Clone, Serialize)]
pub struct Item {
    pub place: Place,
    pub id: String,
    pub transaction_id: Option<Uuid>,
    pub source: Option<String>,
    pub command_id: Option<String>,
    pub kind: Option<String>,
    pub provider: Option<String>,
    pub reason: String,
    pub attempts: i32,
    pub last_error: Option<String>,
    pub since: DateTime<Utc>,
    pub detail: Value,
}

impl Item {
    fn from_row(place: Place, r: &Row) -> Item {
        Item {
            place,
            id: r.get("id"),
            transaction_id: r.get("transaction_id"),
            source: r.get("source"),
            command_id: r.get("command_id"),
            kind: r.get("kind"),
            provider: r.get("provider"),
            reason: r.get("reason"),
            attempts: r.get("attempts"),
            last_error: r.get("last_error"),
            since: r.get("since"),
            detail: r.get("detail"),
        }
    }
}

/// Which items an action takes.
#[derive(Debug, Clone)]
pub enum Selection {
    Ids(Vec<String>),
    Reason(String),
    All,
}

/// Who acts, and through what.
#[derive(Debug, Clone)]
pub struct Actor {
    pub name: String,
    pub via: Via,
}

#[derive(Debug, Clone, Copy)]
pub enum Via {
    Cli,
    Console,
}

impl Via {
    fn as_str(self) -> &'static str {
        match self {
            Via::Cli => "cli",
            Via::Console => "console",
        }
    }
}

/// What an action did to one item.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Done {
    Replayed,
    Discarded,
    /// Its command had reached its outcome already: nothing was redone.
    AlreadyDone,
    /// It no longer waits there (replayed or discarded before, perhaps by another operator).
    NotWaiting,
}

/// A message taken off `voucher.dead`, or dead-lettered by the relay itself.
pub struct NewDeadLetter<'a> {
    /// The same for the relay's record and the recorder's: see [`dead_letter_key`].
    pub message_key: String,
    pub queue: &'a str,
    pub exchange: &'a str,
    pub routing_key: &'a str,
    pub reason: &'a str,
    pub attempts: i32,
    pub last_error: Option<&'a str>,
    pub body: &'a [u8],
    /// Where its outcome goes: kept so a replay answers the same reply queue.
    pub reply_to: Option<&'a str>,
    pub correlation_id: Option<&'a str>,
}

/// A dead letter as a replay sends it again.
#[derive(Debug, Clone)]
pub struct Replayable {
    pub queue: String,
    pub exchange: String,
    pub routing_key: String,
    pub body: Vec<u8>,
    pub reply_to: Option<String>,
    pub correlation_id: Option<String>,
}

/// The identity of one death of one message: the queue it died in, why, how many times it
/// had died there for that reason (the broker's `x-death` count), and its bytes.
pub fn dead_letter_key(queue: &str, reason: &str, count: i64, body: &[u8]) -> String {
    use sha2::{Digest, Sha256};
    let mut h = Sha256::new();
    h.update(queue.as_bytes());
    h.update([0]);
    h.update(reason.as_bytes());
    h.update([0]);
    h.update(count.to_string().as_bytes());
    h.update([0]);
    h.update(body);
    h.finalize().iter().map(|b| format!("{b:02x}")).collect()
}

/// One operator action, for the audit trail.
struct Entry<'a> {
    actor: &'a Actor,
    action: &'a str,
    place: Place,
    id: &'a str,
    transaction_id: Option<Uuid>,
    done: Done,
    why: &'a str,
}

/// The command with its callback URL's query string masked: receivers put tokens there.
fn without_url_tokens(mut body: Value) -> Value {
    if let Some(Value::String(url)) = body.get_mut("callback_url")
        && let Some(at) = url.find('?')
    {
        url.truncate(at);
        url.push_str("?****");
    }
    body
}

/// Records one operator action in the same transaction as its effect.
async fn audit(tx: &Transaction<'_>, e: Entry<'_>) -> Result<()> {
    let Entry {
        actor,
        action,
        place,
        id,
        transaction_id,
        done,
        why,
    } = e;
    let result = match done {
        Done::Replayed => "replayed",
        Done::Discarded => "discarded",
        Done::AlreadyDone => "already_done",
        Done::NotWaiting => return Ok(()),
    };
    tx.execute(
        "INSERT INTO operator_actions (actor, via, action, place, item_id, transaction_id, result, why)
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8)",
        &[
            &actor.name,
            &actor.via.as_str(),
            &action,
            &place.name(),
            &id,
            &transaction_id,
            &result,
            &why,
        ],
    )
    .await?;
    Ok(())
}

/// What a replay must do after its database transaction: publish or wake.
#[derive(Debug, Clone)]
pub enum AfterReplay {
    /// Nothing: the item was not waiting, or its command was done.
    Nothing,
    /// The advices of this transaction are due now.
    WakeAdvice {
        transaction_id: Uuid,
        provider: String,
    },
    /// This transaction's poll is due now.
    WakePoll {
        transaction_id: Uuid,
        provider: String,
    },
    /// The callback worker picks it up by itself.
    Callback,
}

impl Store {
    /// Every place, with its count, the time of its oldest item and its reasons.
    pub async fn dlq_summaries(&self) -> Result<Vec<Summary>> {
        let client = self.pool.get().await?;
        let mut out = Vec::with_capacity(Place::ALL.len());
        for place in Place::ALL {
            let rows = client
                .query(
                    &format!(
                        "SELECT reason, count(*) AS n, min(since) AS oldest
                         FROM ({}) i GROUP BY reason ORDER BY n DESC, reason",
                        place.items_sql()
                    ),
                    &[],
                )
                .await?;
            out.push(Summary {
                place,
                count: rows.iter().map(|r| r.get::<_, i64>("n")).sum(),
                oldest: rows
                    .iter()
                    .map(|r| r.get::<_, DateTime<Utc>>("oldest"))
                    .min(),
                reasons: rows
                    .iter()
                    .map(|r| ReasonCount {
                        reason: r.get("reason"),
                        count: r.get("n"),
                    })
                    .collect(),
            });
        }
        Ok(out)
    }

    /// The waiting items of `place` that `selection` takes, oldest first, at most `limit`.
    pub async fn dlq_items(
        &self,
        place: Place,
        selection: &Selection,
        limit: i64,
    ) -> Result<Vec<Item>> {
        let (reason, ids): (Option<&str>, Option<Vec<String>>) = match selection {
            Selection::Ids(ids) => (None, Some(ids.clone())),
            Selection::Reason(r) => (Some(r.as_str()), None),
            Selection::All => (None, None),
        };
        let client = self.pool.get().await?;
        let rows = client
            .query(
                &format!(
                    "SELECT * FROM ({}) i
                     WHERE ($1::text IS NULL OR reason = $1)
                       AND ($2::text[] IS NULL OR id = ANY($2))
                     ORDER BY since, id LIMIT $3",
                    place.items_sql()
                ),
                &[&reason, &ids, &limit],
            )
            .await?;
        Ok(rows.iter().map(|r| Item::from_row(place, r)).collect())
    }

    /// Records a dead letter; false if this death of this message is recorded already.
    pub async fn record_dead_letter(&self, d: &NewDeadLetter<'_>) -> Result<bool> {
        let parsed: Option<Value> = serde_json::from_slice(d.body).ok();
        let text = |k: &str| {
            parsed
                .as_ref()
                .and_then(|v| v.get(k))
                .and_then(Value::as_str)
                .map(str::to_owned)
        };
        let (source, command_id, kind) = (text("source"), text("command_id"), text("kind"));
        // A wake-up message names its transaction; a command is found by its idempotency key.
        let woken: Option<Uuid> = text("transaction_id").and_then(|s| Uuid::parse_str(&s).ok());
        let masked = parsed.as_ref().map(|v| without_url_tokens(mask_json(v)));
        let sealed = self.sealer.seal(d.body);
        let client = self.pool.get().await?;
        let n = client
            .execute(
                "INSERT INTO dead_letters (id, message_key, queue, routing_key, reason, attempts,
                     last_error, source, command_id, kind, transaction_id, body_masked, body_sealed,
                     reply_to, correlation_id, exchange)
                 VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10,
                     coalesce($11, (SELECT id FROM transactions WHERE source = $8 AND command_id = $9)),
                     $12, $13, $14, $15, $16)
                 ON CONFLICT (message_key) DO NOTHING",
                &[
                    &Uuid::now_v7(),
                    &d.message_key,
                    &d.queue,
                    &d.routing_key,
                    &d.reason,
                    &d.attempts,
                    &d.last_error,
                    &source,
                    &command_id,
                    &kind,
                    &woken,
                    &masked,
                    &sealed,
                    &d.reply_to,
                    &d.correlation_id,
                    &d.exchange,
                ],
            )
            .await?;
        Ok(n == 1)
    }

    /// Replays dead letter `id`: `publish` gets it (its queue, its original bytes and reply
    /// properties) while the row is locked, so two operators replaying it at once publish it once. A command whose
    /// transaction has reached its outcome is not published again.
    pub async fn replay_dead_letter<F, Fut>(
        &self,
        id: &str,
        actor: &Actor,
        why: &str,
        publish: F,
    ) -> Result<Done>
    where
        F: FnOnce(Replayable) -> Fut,
        Fut: Future<Output = Result<()>>,
    {
        let mut client = self.pool.get().await?;
        let tx = client.transaction().await?;
        let Some(row) = tx
            .query_opt(
                "SELECT d.queue, d.exchange, d.routing_key, d.body_sealed, d.transaction_id,
                        d.reply_to, d.correlation_id,
                        t.state = 'completed' AS done
                 FROM dead_letters d LEFT JOIN transactions t ON t.id = d.transaction_id
                 WHERE d.id = CAST($1::text AS uuid) AND d.state = 'dead' FOR UPDATE OF d",
                &[&id],
            )
            .await?
        else {
            return Ok(Done::NotWaiting);
        };
        let transaction_id: Option<Uuid> = row.get("transaction_id");
        let done = if row.get::<_, Option<bool>>("done") == Some(true) {
            Done::AlreadyDone
        } else {
            let sealed: Vec<u8> = row.get("body_sealed");
            let body = self.sealer.open(&sealed).ok_or_else(|| {
                RelayError::Corrupt(format!(
                    "dead letter {id} cannot be opened with the configured keys"
                ))
            })?;
            publish(Replayable {
                queue: row.get("queue"),
                exchange: row.get("exchange"),
                routing_key: row.get("routing_key"),
                body,
                reply_to: row.get("reply_to"),
                correlation_id: row.get("correlation_id"),
            })
            .await?;
            Done::Replayed
        };
        tx.execute(
            "UPDATE dead_letters SET state = 'replayed', handled_at = now(), handled_by = $2,
                 handled_why = $3 WHERE id = CAST($1::text AS uuid)",
            &[&id, &actor.name, &why],
        )
        .await?;
        audit(
            &tx,
            Entry {
                actor,
                action: "replay",
                place: Place::VoucherDead,
                id,
                transaction_id,
                done,
                why,
            },
        )
        .await?;
        tx.commit().await?;
        Ok(done)
    }

    /// Replays one item of a place PostgreSQL holds (not `voucher.dead`, see
    /// [`Store::replay_dead_letter`]). `advice_budget` is the fresh budget of a parked
    /// advice's provider.
    pub async fn replay_parked(
        &self,
        place: Place,
        id: &str,
        actor: &Actor,
        why: &str,
        advice_budget: impl Fn(&str) -> Option<std::time::Duration>,
    ) -> Result<(Done, AfterReplay)> {
        let mut client = self.pool.get().await?;
        let tx = client.transaction().await?;
        let (done, tx_id, after) = match place {
            Place::AdviceParked => {
                let Some(row) = tx
                    .query_opt(
                        "SELECT provider, transaction_id FROM advices
                         WHERE id = CAST($1::text AS uuid) AND state = 'parked' FOR UPDATE",
                        &[&id],
                    )
                    .await?
                else {
                    return Ok((Done::NotWaiting, AfterReplay::Nothing));
                };
                let provider: String = row.get(0);
                let transaction_id: Uuid = row.get(1);
                let budget = advice_budget(&provider).ok_or_else(|| {
                    RelayError::Poison(format!("provider {provider} has no advices here"))
                })?;
                tx.execute(
                    "UPDATE advices SET state = 'pending', next_at = now(), attempts = 0,
                         deadline = now() + make_interval(secs => $2), locked_until = NULL,
                         locked_by = NULL, enqueued_at = now(), updated_at = now()
                     WHERE id = CAST($1::text AS uuid)",
                    &[&id, &budget.as_secs_f64()],
                )
                .await?;
                (
                    Done::Replayed,
                    Some(transaction_id),
                    AfterReplay::WakeAdvice {
                        transaction_id,
                        provider,
                    },
                )
            }
            Place::PollsParked => {
                let Some(row) = tx
                    .query_opt(
                        "UPDATE polls p SET parked_at = NULL, parked_reason = NULL, next_at = now(),
                             enqueued_at = now(), locked_until = NULL, locked_by = NULL,
                             updated_at = now()
                         FROM transactions t
                         WHERE p.transaction_id = CAST($1::text AS uuid) AND t.id = p.transaction_id
                           AND p.parked_at IS NOT NULL AND p.discarded_at IS NULL
                         RETURNING t.provider, t.id",
                        &[&id],
                    )
                    .await?
                else {
                    return Ok((Done::NotWaiting, AfterReplay::Nothing));
                };
                let transaction_id: Uuid = row.get(1);
                (
                    Done::Replayed,
                    Some(transaction_id),
                    AfterReplay::WakePoll {
                        transaction_id,
                        provider: row.get(0),
                    },
                )
            }
            Place::CallbacksDead => {
                let Some(row) = tx
                    .query_opt(
                        "UPDATE outbox SET dead_at = NULL, attempts = 0, throttled = 0,
                             next_attempt_at = now(), locked_until = NULL,
                             last_error = 'replayed by an operator'
                         WHERE id = CAST($1::text AS bigint) AND channel = 'callback'
                           AND dead_at IS NOT NULL AND discarded_at IS NULL
                         RETURNING transaction_id",
                        &[&id],
                    )
                    .await?
                else {
                    return Ok((Done::NotWaiting, AfterReplay::Nothing));
                };
                // A replayed callback to a disabled URL waits for it like the others.
                super::callbacks::park_disabled(&*tx, None).await?;
                (Done::Replayed, row.get(0), AfterReplay::Callback)
            }
            Place::VoucherDead | Place::VoucherRejected => {
                return Err(RelayError::Poison(format!(
                    "{} items are not replayed here",
                    place.name()
                )));
            }
        };
        audit(
            &tx,
            Entry {
                actor,
                action: "replay",
                place,
                id,
                transaction_id: tx_id,
                done,
                why,
            },
        )
        .await?;
        tx.commit().await?;
        Ok((done, after))
    }

    /// Discards one item: it stays in PostgreSQL, marked, and no longer waits.
    pub async fn discard(&self, place: Place, id: &str, actor: &Actor, why: &str) -> Result<Done> {
        let sql = match place {
            Place::VoucherDead => {
                "UPDATE dead_letters SET state = 'discarded', handled_at = now(), handled_by = $2,
                     handled_why = $3
                 WHERE id = CAST($1::text AS uuid) AND state = 'dead'
                 RETURNING transaction_id"
            }
            Place::VoucherRejected => {
                "UPDATE rejections SET discarded_at = now()
                 WHERE id = CAST($1::text AS uuid) AND discarded_at IS NULL
                 RETURNING NULL::uuid"
            }
            Place::AdviceParked => {
                "UPDATE advices SET state = 'discarded', updated_at = now()
                 WHERE id = CAST($1::text AS uuid) AND state = 'parked'
                 RETURNING transaction_id"
            }
            Place::PollsParked => {
                "UPDATE polls SET discarded_at = now(), updated_at = now()
                 WHERE transaction_id = CAST($1::text AS uuid) AND parked_at IS NOT NULL
                   AND discarded_at IS NULL
                 RETURNING transaction_id"
            }
            Place::CallbacksDead => {
                "UPDATE outbox SET discarded_at = now()
                 WHERE id = CAST($1::text AS bigint) AND channel = 'callback'
                   AND dead_at IS NOT NULL AND discarded_at IS NULL
                 RETURNING transaction_id"
            }
        };
        let mut client = self.pool.get().await?;
        let tx = client.transaction().await?;
        let row = if place == Place::VoucherDead {
            tx.query_opt(sql, &[&id, &actor.name, &why]).await?
        } else {
            tx.query_opt(sql, &[&id]).await?
        };
        let Some(row) = row else {
            return Ok(Done::NotWaiting);
        };
        let transaction_id: Option<Uuid> = row.get(0);
        audit(
            &tx,
            Entry {
                actor,
                action: "discard",
                place,
                id,
                transaction_id,
                done: Done::Discarded,
                why,
            },
        )
        .await?;
        tx.commit().await?;
        Ok(Done::Discarded)
    }

    /// The operator actions on record, newest first (for the console and the tests).
    pub async fn operator_actions(&self, limit: i64) -> Result<Vec<Value>> {
        let client = self.pool.get().await?;
        let rows = client
            .query(
                "SELECT json_build_object('at', at, 'actor', actor, 'via', via, 'action', action,
                        'place', place, 'item_id', item_id, 'transaction_id', transaction_id,
                        'result', result, 'why', why)
                 FROM operator_actions ORDER BY id DESC LIMIT $1",
                &[&limit],
            )
            .await?;
        Ok(rows.iter().map(|r| r.get::<_, Value>(0)).collect())
    }
}

/// Whether an id list is well formed for `place`; the first bad one otherwise.
pub fn first_bad_id(place: Place, ids: &[String]) -> Option<&str> {
    ids.iter()
        .find(|id| !place.valid_id(id))
        .map(String::as_str)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn a_callback_url_keeps_no_token() {
        let b = without_url_tokens(json!({"callback_url": "https://h.example/x?token=abc&a=1"}));
        assert_eq!(b["callback_url"], "https://h.example/x?****");
        let b = without_url_tokens(json!({"callback_url": "https://h.example/x"}));
        assert_eq!(b["callback_url"], "https://h.example/x");
        assert_eq!(without_url_tokens(json!(null)), json!(null));
    }

    #[test]
    fn places_are_named_and_ids_checked_before_any_sql() {
        for p in Place::ALL {
            assert_eq!(Place::parse(p.name()), Some(p));
        }
        assert_eq!(Place::parse("voucher.deadx"), None);
        assert!(Place::CallbacksDead.valid_id("42"));
        assert!(!Place::CallbacksDead.valid_id("4 2"));
        assert!(Place::VoucherDead.valid_id("01a23dd5-0517-771d-8747-cbecf7c24f4a"));
        assert!(!Place::VoucherDead.valid_id("1; DROP TABLE x"));
        assert_eq!(
            first_bad_id(Place::AdviceParked, &["nope".into()]),
            Some("nope")
        );
        assert!(Place::VoucherRejected.cannot_replay().is_some());
    }
}
