//! `voucher-relay verify`: the relay's promises checked against what PostgreSQL, the broker
//! and (with `--sandbox`) the sandboxes' own ledgers hold. Each invariant prints its counts
//! and any breaches; one breach makes the command exit non-zero.
//!
//! It is meant for a quiet system (after a chaos run, after an incident): work still in
//! flight is reported as waiting with its reason, and only counts as a breach once it has
//! waited longer than `stuck_after` without anything driving it.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::fmt;
use std::time::Duration;

use lapin::options::QueueDeclareOptions;
use lapin::types::FieldTable;
use serde_json::Value;
use uuid::Uuid;

use crate::command::{Outcome, Status};
use crate::config::Config;
use crate::providers::csq::sandbox::SaleRecord;
use crate::providers::electrum::sandbox::EffectRecord;
use crate::store::Store;

/// How many breaches of one invariant are printed; the count says the rest.
const SHOWN: usize = 10;

/// One invariant, checked.
#[derive(Debug, Default)]
pub struct Check {
    pub name: &'static str,
    /// What was counted, in order.
    pub counts: Vec<(String, i64)>,
    pub breaches: Vec<String>,
    /// Why the check did not run, if it did not.
    pub skipped: Option<String>,
}

impl Check {
    fn new(name: &'static str) -> Check {
        Check {
            name,
            ..Check::default()
        }
    }

    fn count(&mut self, what: impl Into<String>, n: i64) {
        self.counts.push((what.into(), n));
    }

    fn breach(&mut self, what: String) {
        self.breaches.push(what);
    }

    pub fn passed(&self) -> bool {
        self.breaches.is_empty()
    }
}

impl fmt::Display for Check {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let verdict = match (&self.skipped, self.passed()) {
            (Some(_), _) => "SKIP",
            (None, true) => "PASS",
            (None, false) => "FAIL",
        };
        let counts: Vec<String> = self
            .counts
            .iter()
            .map(|(what, n)| format!("{what} {n}"))
            .collect();
        write!(f, "{verdict} {}: {}", self.name, counts.join(", "))?;
        if let Some(why) = &self.skipped {
            write!(f, " ({why})")?;
        }
        for b in self.breaches.iter().take(SHOWN) {
            write!(f, "\n     breach: {b}")?;
        }
        if self.breaches.len() > SHOWN {
            write!(f, "\n     ... and {} more", self.breaches.len() - SHOWN)?;
        }
        Ok(())
    }
}

/// What to check beyond the relay's own records.
#[derive(Debug, Clone, Copy)]
pub struct Options {
    /// Compare with the sandboxes' ledgers (their `/sandbox/...` endpoints).
    pub sandbox: bool,
    /// Work waiting this long with nothing driving it is a breach.
    pub stuck_after: Duration,
}

/// Runs every check.
pub async fn run(config: &Config, store: &Store, opts: Options) -> anyhow::Result<Vec<Check>> {
    let stuck = opts.stuck_after.as_secs_f64();
    Ok(vec![
        one_outcome_per_command(store, stuck).await?,
        no_double_effect(config, store, opts.sandbox).await?,
        unknowns_resolved(store).await?,
        outcomes_delivered(store, stuck).await?,
        queues_drained(config).await?,
    ])
}

/// Every accepted command has exactly one terminal outcome, or is visibly waiting with a
/// reason; every rejection has its `rejected` outcome.
async fn one_outcome_per_command(store: &Store, stuck: f64) -> anyhow::Result<Check> {
    let mut c = Check::new("one_outcome_per_command");
    let db = store.pool.get().await?;
    for row in db
        .query(
            "SELECT state, count(*) FROM transactions GROUP BY state ORDER BY state",
            &[],
        )
        .await?
    {
        c.count(row.get::<_, String>(0), row.get(1));
    }
    // Terminal events, opened: exactly one per completed transaction, the one it records.
    let terminal = terminal_events(store).await?;
    let completed = db
        .query(
            "SELECT id, command_id, event_id FROM transactions WHERE state = 'completed'",
            &[],
        )
        .await?;
    for row in &completed {
        let (id, command_id, event_id): (Uuid, String, String) =
            (row.get(0), row.get(1), row.get(2));
        match terminal.get(&id) {
            Some(events) if events.len() == 1 && events.contains(&event_id) => {}
            Some(events) => c.breach(format!(
                "{command_id} ({id}): terminal events {events:?}, recorded {event_id}"
            )),
            None => c.breach(format!("{command_id} ({id}): no terminal event queued")),
        }
    }
    // Not finished: something must be driving it, and say why it waits.
    let waiting = db
        .query(
            "SELECT t.id, t.command_id, t.state,
                    EXTRACT(EPOCH FROM (now() - t.updated_at))::float8 AS idle,
                    p.transaction_id IS NOT NULL AS polled, p.parked_reason,
                    p.discarded_at IS NOT NULL AS poll_discarded,
                    a.transaction_id IS NOT NULL AS advised, a.parked, a.discarded,
                    t.state = 'sending' AND relay_process_alive(t.lease_owner, $1) AS held
             FROM transactions t
             LEFT JOIN polls p ON p.transaction_id = t.id
             LEFT JOIN LATERAL (SELECT transaction_id, bool_or(state = 'parked') AS parked,
                                       bool_and(state = 'discarded') AS discarded
                                FROM advices WHERE transaction_id = t.id
                                  AND state IN ('pending', 'parked', 'discarded')
                                GROUP BY transaction_id) a ON true
             WHERE t.state <> 'completed'",
            &[&crate::store::processes::GRACE.as_secs_f64()],
        )
        .await?;
    let mut reasons: BTreeMap<String, i64> = BTreeMap::new();
    for row in &waiting {
        let (id, command_id, state): (Uuid, String, String) = (row.get(0), row.get(1), row.get(2));
        let idle: f64 = row.get("idle");
        let reason = match state.as_str() {
            "unknown" | "awaiting_data" | "awaiting_draw" if row.get("polled") => {
                match row.get::<_, Option<String>>("parked_reason") {
                    Some(_) if row.get("poll_discarded") => "poll discarded by an operator",
                    Some(_) => "poll parked for operators",
                    None => "polling the provider",
                }
            }
            "reversing" if row.get("advised") => {
                match (
                    row.get::<_, Option<bool>>("parked"),
                    row.get::<_, Option<bool>>("discarded"),
                ) {
                    (_, Some(true)) => "reversal discarded by an operator",
                    (Some(true), _) => "reversal parked for operators",
                    _ => "reversal in progress",
                }
            }
            "sending" if row.get::<_, Option<bool>>("held") == Some(true) => {
                "a live process is sending it"
            }
            "received" | "sending" if idle < stuck => "in flight",
            _ => {
                c.breach(format!(
                    "{command_id} ({id}): {state} for {idle:.0} s with nothing driving it"
                ));
                continue;
            }
        };
        *reasons.entry(reason.to_string()).or_default() += 1;
    }
    for (reason, n) in reasons {
        c.count(format!("waiting: {reason}"), n);
    }
    let rejections: i64 = db
        .query_one("SELECT count(*) FROM rejections", &[])
        .await?
        .get(0);
    c.count("rejections", rejections);
    for row in db
        .query(
            "SELECT r.id, r.reason_code FROM rejections r
             WHERE NOT EXISTS (SELECT 1 FROM outbox o
                               WHERE o.rejection_id = r.id AND o.channel = 'event')",
            &[],
        )
        .await?
    {
        let (id, reason): (Uuid, String) = (row.get(0), row.get(1));
        c.breach(format!(
            "rejection {id} ({reason}): no rejected outcome queued"
        ));
    }
    Ok(c)
}

/// The terminal events queued per transaction (progress events left out), by event id.
async fn terminal_events(store: &Store) -> anyhow::Result<HashMap<Uuid, HashSet<String>>> {
    let db = store.pool.get().await?;
    let rows = db
        .query(
            "SELECT transaction_id, event_id, payload_sealed FROM outbox
             WHERE channel = 'event' AND transaction_id IS NOT NULL",
            &[],
        )
        .await?;
    let mut terminal: HashMap<Uuid, HashSet<String>> = HashMap::new();
    for row in rows {
        let sealed: Vec<u8> = row.get(2);
        let outcome: Outcome = store.open_outcome(&sealed)?;
        if outcome.status != Status::Pending {
            terminal.entry(row.get(0)).or_default().insert(row.get(1));
        }
    }
    Ok(terminal)
}

/// No financial effect happened twice at a provider: the sandboxes' ledgers against the
/// relay's records (CSQ's vouchers sold by `localReference`, Electrum's effects by request
/// id).
async fn no_double_effect(config: &Config, store: &Store, sandbox: bool) -> anyhow::Result<Check> {
    let mut c = Check::new("no_double_effect");
    let db = store.pool.get().await?;
    // The relay's own side: one reference per send, never shared.
    let shared: i64 = db
        .query_one(
            "SELECT count(*) FROM (SELECT provider, local_reference FROM transactions
                                   WHERE local_reference IS NOT NULL
                                   GROUP BY 1, 2 HAVING count(*) > 1) d",
            &[],
        )
        .await?
        .get(0);
    if shared > 0 {
        c.breach(format!(
            "{shared} provider references used by two transactions"
        ));
    }
    drop(db);
    if !sandbox {
        c.skipped = Some("the providers' ledgers are compared with --sandbox".into());
        return Ok(c);
    }
    if config.providers.csq.enabled {
        csq_ledger(config, store, &mut c).await?;
    }
    if config.providers.electrum.enabled {
        electrum_ledger(config, store, &mut c).await?;
    }
    Ok(c)
}

/// A sandbox's ledger, from its own endpoint at `path` on the origin of `base_url`.
async fn sandbox_ledger<T: serde::de::DeserializeOwned>(
    base_url: &str,
    path: &str,
) -> anyhow::Result<T> {
    let mut url = reqwest::Url::parse(base_url)?;
    url.set_path(path);
    url.set_query(None);
    Ok(reqwest::Client::builder()
        .timeout(Duration::from_secs(30))
        .no_proxy()
        .build()?
        .get(url)
        .send()
        .await?
        .error_for_status()?
        .json()
        .await?)
}

/// CSQ: every voucher sold is one success of the relay's, under the reference it holds now.
async fn csq_ledger(config: &Config, store: &Store, c: &mut Check) -> anyhow::Result<()> {
    let db = store.pool.get().await?;
    let sales: Vec<SaleRecord> =
        sandbox_ledger(&config.providers.csq.http.base_url, "/sandbox/sales").await?;
    c.count("csq vouchers sold", sales.len() as i64);
    let rows = db
        .query(
            "SELECT id, command_id, state, status, local_reference, prior_refs
             FROM transactions WHERE provider = 'csq' AND kind = 'purchase'",
            &[],
        )
        .await?;
    let mut current: HashMap<i32, (String, String, Option<String>)> = HashMap::new();
    let mut given_up: HashMap<i32, String> = HashMap::new();
    for row in &rows {
        let command_id: String = row.get("command_id");
        if let Some(r) = row.get::<_, Option<i32>>("local_reference") {
            current.insert(r, (command_id.clone(), row.get("state"), row.get("status")));
        }
        if let Value::Array(prior) = row.get::<_, Value>("prior_refs") {
            for p in prior {
                if let Some(r) = p["local_reference"]
                    .as_i64()
                    .and_then(|r| i32::try_from(r).ok())
                {
                    given_up.insert(r, command_id.clone());
                }
            }
        }
    }
    let mut sold = HashSet::new();
    for sale in &sales {
        sold.insert(sale.local_reference);
        if let Some(command_id) = given_up.get(&sale.local_reference) {
            c.breach(format!(
                "{command_id}: sold under localReference {} that the relay sent again as never received",
                sale.local_reference
            ));
            continue;
        }
        match current.get(&sale.local_reference) {
            None => c.breach(format!(
                "localReference {} sold with no transaction of the relay's",
                sale.local_reference
            )),
            Some((command_id, state, status)) => {
                let reported = matches!(status.as_deref(), Some("succeeded" | "expired"));
                let pending = matches!(
                    state.as_str(),
                    "sending" | "unknown" | "awaiting_data" | "awaiting_draw"
                );
                if !reported && !pending {
                    c.breach(format!(
                        "{command_id}: sold (localReference {}) but its outcome is {state}/{}",
                        sale.local_reference,
                        status.as_deref().unwrap_or("-")
                    ));
                }
            }
        }
    }
    let mut reported_sold = 0;
    for row in &rows {
        let status: Option<String> = row.get("status");
        if status.as_deref() != Some("succeeded") {
            continue;
        }
        reported_sold += 1;
        let r: Option<i32> = row.get("local_reference");
        if !r.is_some_and(|r| sold.contains(&r)) {
            let command_id: String = row.get("command_id");
            c.breach(format!(
                "{command_id}: reported succeeded, but CSQ sold nothing under its reference"
            ));
        }
    }
    c.count("csq purchases succeeded", reported_sold);
    Ok(())
}

/// Electrum: every effect that stands (approved, not reversed) is the one success of the
/// transaction whose current request it is; nothing stands under a request the relay gave
/// up on, or under a command whose outcome says it did not happen.
async fn electrum_ledger(config: &Config, store: &Store, c: &mut Check) -> anyhow::Result<()> {
    let db = store.pool.get().await?;
    let effects: Vec<EffectRecord> =
        sandbox_ledger(&config.providers.electrum.http.base_url, "/sandbox/effects").await?;
    let standing: HashSet<Uuid> = effects
        .iter()
        .filter(|e| !e.reversed)
        .map(|e| e.request_id)
        .collect();
    c.count("electrum effects standing", standing.len() as i64);
    let rows = db
        .query(
            "SELECT command_id, state, status, COALESCE(request_id, id) AS request_id, prior_refs
             FROM transactions
             WHERE provider = 'electrum' AND kind IN ('provision', 'redeem', 'refund')",
            &[],
        )
        .await?;
    let mut known = HashSet::new();
    let mut succeeded = 0;
    for row in &rows {
        let command_id: String = row.get("command_id");
        let request_id: Uuid = row.get("request_id");
        known.insert(request_id);
        if let Value::Array(prior) = row.get::<_, Value>("prior_refs") {
            for p in prior {
                let Some(r) = p["request_id"]
                    .as_str()
                    .and_then(|r| r.parse::<Uuid>().ok())
                else {
                    continue;
                };
                known.insert(r);
                if standing.contains(&r) {
                    c.breach(format!(
                        "{command_id}: an effect stands under request {r}, which the relay sent again as never received"
                    ));
                }
            }
        }
        let state: String = row.get("state");
        let status: Option<String> = row.get("status");
        match (state.as_str(), status.as_deref()) {
            ("completed", Some("succeeded")) => {
                succeeded += 1;
                if !standing.contains(&request_id) {
                    c.breach(format!("{command_id}: reported succeeded, but no effect of its request {request_id} stands"));
                }
            }
            ("completed", Some(other)) if standing.contains(&request_id) => c.breach(format!(
                "{command_id}: outcome {other}, but its request {request_id} stands at Electrum"
            )),
            _ => {}
        }
    }
    c.count("electrum operations succeeded", succeeded);
    for r in standing.iter().filter(|r| !known.contains(*r)) {
        c.breach(format!(
            "an effect stands under request {r}, which is no transaction of the relay's"
        ));
    }
    Ok(())
}

/// Every unknown outcome was resolved, reversed, or parked with a reason.
async fn unknowns_resolved(store: &Store) -> anyhow::Result<Check> {
    let mut c = Check::new("unknowns_resolved");
    let db = store.pool.get().await?;
    let rows = db
        .query(
            "SELECT t.command_id, t.state,
                    EXISTS (SELECT 1 FROM polls p WHERE p.transaction_id = t.id) AS polled,
                    EXISTS (SELECT 1 FROM advices a WHERE a.transaction_id = t.id
                              AND a.state IN ('pending', 'parked', 'discarded')) AS advised,
                    EXISTS (SELECT 1 FROM audit_trail r WHERE r.transaction_id = t.id
                              AND r.from_state = 'unknown' AND r.to_state = 'received') AS resent
             FROM transactions t
             WHERE EXISTS (SELECT 1 FROM audit_trail a WHERE a.transaction_id = t.id
                             AND a.to_state IN ('unknown', 'reversing'))",
            &[],
        )
        .await?;
    let (mut resolved, mut resolving, mut resent) = (0, 0, 0);
    for row in &rows {
        let command_id: String = row.get(0);
        let state: String = row.get(1);
        if row.get::<_, bool>("resent") {
            resent += 1;
        }
        match state.as_str() {
            "completed" => resolved += 1,
            "unknown" | "awaiting_data" | "awaiting_draw" if row.get("polled") => resolving += 1,
            "reversing" if row.get("advised") => resolving += 1,
            // Sent again: it is a command in flight again, checked above.
            "received" | "sending" => resolving += 1,
            _ => c.breach(format!("{command_id}: {state} with no poll or advice")),
        }
    }
    c.count("unknown outcomes", rows.len() as i64);
    c.count("resolved", resolved);
    c.count("still resolving", resolving);
    c.count("sent again as never received", resent);
    Ok(c)
}

/// Every outcome was delivered, or dead-lettered with its attempts; nothing overdue waits.
async fn outcomes_delivered(store: &Store, stuck: f64) -> anyhow::Result<Check> {
    let mut c = Check::new("outcomes_delivered");
    let db = store.pool.get().await?;
    let rows = db
        .query(
            "SELECT channel,
                    count(*) FILTER (WHERE delivered_at IS NOT NULL) AS delivered,
                    count(*) FILTER (WHERE dead_at IS NOT NULL) AS dead,
                    count(*) FILTER (WHERE dead_at IS NOT NULL AND channel = 'callback'
                                     AND NOT EXISTS (SELECT 1 FROM callback_attempts a
                                                     WHERE a.outbox_id = o.id)) AS dead_unlogged,
                    count(*) FILTER (WHERE delivered_at IS NULL AND dead_at IS NULL) AS pending,
                    count(*) FILTER (WHERE delivered_at IS NULL AND dead_at IS NULL
                                     AND next_attempt_at < now() - make_interval(secs => $1)
                                     AND (locked_until IS NULL OR locked_until < now())) AS overdue
             FROM outbox o GROUP BY channel ORDER BY channel",
            &[&stuck],
        )
        .await?;
    for row in &rows {
        let channel: String = row.get(0);
        c.count(format!("{channel} delivered"), row.get(1));
        c.count(format!("{channel} dead"), row.get(2));
        c.count(format!("{channel} pending"), row.get(4));
        let unlogged: i64 = row.get(3);
        if unlogged > 0 {
            c.breach(format!(
                "{unlogged} dead {channel} rows without their attempts"
            ));
        }
        let overdue: i64 = row.get(5);
        if overdue > 0 {
            c.breach(format!(
                "{overdue} {channel} rows overdue with nobody delivering them"
            ));
        }
    }
    Ok(c)
}

/// The work queues are drained; what waits for operators is counted.
async fn queues_drained(config: &Config) -> anyhow::Result<Check> {
    let mut c = Check::new("queues_drained");
    let conn = crate::broker::connect(&config.broker.url, "voucher-relay verify").await?;
    let channel = conn.create_channel().await?;
    for q in &config.queues {
        let name = config.name(&q.name);
        let declared = channel
            .queue_declare(
                name.as_str().into(),
                QueueDeclareOptions {
                    passive: true,
                    ..Default::default()
                },
                FieldTable::default(),
            )
            .await;
        let Ok(queue) = declared else {
            c.breach(format!("queue {name} is missing"));
            // A failed passive declare closes the channel: open another.
            return Ok(c);
        };
        let n = i64::from(queue.message_count());
        c.count(name.clone(), n);
        let is_work = ["commands.", "polls.", "advice."]
            .iter()
            .any(|p| q.name.starts_with(p))
            && q.name != "advice.parked";
        if is_work && n > 0 {
            c.breach(format!("work queue {name} holds {n} messages"));
        }
    }
    let _ = conn.close(200, "verified".into()).await;
    Ok(c)
}
