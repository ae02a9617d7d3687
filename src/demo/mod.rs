//! `voucher-relay demo`: the whole path in one process. `bench` measures it.
//!
//! Starts the CSQ and Electrum sandboxes, a callback receiver that verifies every signature,
//! and the relay's workers; publishes a mixed CSQ batch (successes, declines, one duplicate
//! and a few malformed commands) through RabbitMQ and prints a table of outcomes by status;
//! then runs an Electrum voucher through provision, a redemption that times out and is
//! reversed through store-and-forward, a second redemption and a refund. It uses
//! the `demo.` name prefix on the broker so it never mixes with a relay already running.

pub mod bench;
pub mod rig;

use std::collections::{BTreeMap, HashMap, HashSet};
use std::io::Write;
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::Router;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::routing::post;
use lapin::options::BasicAckOptions;
use serde_json::{Value, json};

use crate::broker::{Publisher, publisher::json_properties};
use crate::command::{Outcome, Status};
use crate::providers::csq::sandbox::{
    OPERATOR_ADDITIONAL_DATA, OPERATOR_DECLINE, OPERATOR_DYNAMIC, OPERATOR_OK, OPERATOR_RAFFLE,
    OPERATOR_SLOW, OPERATOR_UNAVAILABLE, SandboxOptions,
};
use crate::telemetry;
use crate::webhook::SigningKey;
use rig::{DemoEnv, Rig};

/// One published message and what the demo expects of it.
struct Sent {
    correlation_id: String,
    /// (source, command_id) when the body has them.
    key: Option<(String, String)>,
    expected: Status,
    has_callback: bool,
    /// One of the longer flows (polling, resolution), timed apart from the plain batch.
    long_flow: bool,
}

/// Callbacks received, by verified signature.
#[derive(Default)]
struct Received {
    verified: Vec<Outcome>,
    bad_signatures: usize,
}

type Inbox = Arc<Mutex<Received>>;

/// Runs the demo with `total` commands.
pub async fn run(config_path: &Path, total: usize) -> anyhow::Result<()> {
    // The demo reports in its own words; RUST_LOG=info shows the relay's JSON logs too.
    telemetry::init_logging("off");
    let total = total.max(30);
    let env = DemoEnv::new();
    // Short fault timings, so every flow finishes within the demo. 1006 answers after 4 s:
    // give up after 2 s and resolve it. 1007 never sold: say so after 5 s of asking.
    let options = SandboxOptions {
        slow_answer: Duration::from_secs(4),
        additional_data_delay: Duration::from_secs(1),
        draw_delay: Duration::from_secs(3),
        win_per_mille: 500,
    };
    let rig = Rig::start(config_path, &env, "demo.", options, |c| {
        c.providers.csq.http.request_timeout_ms = 2000;
        c.providers.csq.resolve_deadline_ms = 5000;
        // The Electrum sandbox holds a faulted answer for a minute: give up after 2 s and
        // reverse. Advices repeat after 0.5 s doubling, so the demo's reversal ends quickly.
        c.providers.electrum.http.request_timeout_ms = 2000;
        c.providers.electrum.advice_backoff_base_ms = 500;
    })
    .await?;
    let config = rig.config.clone();

    // The callback receiver, on a free port; it checks every signature.
    let inbox: Inbox = Arc::default();
    let key = SigningKey::parse(&config.secrets.webhook_signing_secret)
        .map_err(|e| anyhow::anyhow!("WEBHOOK_SIGNING_SECRET: {e}"))?;
    let hook_listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let hook_url = format!("http://{}/hooks/vouchers", hook_listener.local_addr()?);
    let hook_app = Router::new()
        .route("/hooks/vouchers", post(receive))
        .with_state((key, inbox.clone()));
    let hook_task = tokio::spawn(async move { axum::serve(hook_listener, hook_app).await });
    let mut rig = rig;
    let reply_queue = rig.replies.name.clone();

    let source = format!("demo-{}", chrono::Utc::now().format("%Y%m%d%H%M%S%3f"));
    let batch = build_batch(&source, &hook_url, total);
    println!(
        "voucher-relay demo: publishing {} commands to {}{} (source {source})",
        batch.len(),
        config.broker.name_prefix,
        config.broker.commands_exchange
    );
    let started = Instant::now();
    let publisher = Publisher::connect(&config.broker.url).await?;
    let exchange = config.name(&config.broker.commands_exchange);
    let mut sent = Vec::with_capacity(batch.len());
    for (routing_key, body, s) in batch {
        let props = json_properties()
            .with_reply_to(reply_queue.as_str().into())
            .with_correlation_id(s.correlation_id.as_str().into());
        publisher
            .publish(&exchange, &routing_key, &body, props)
            .await?;
        sent.push(s);
    }
    publisher.close().await;

    // Collect one reply per message, with a progress bar.
    let mut outcomes: HashMap<String, Outcome> = HashMap::new();
    let mut progress_events = 0usize;
    let mut plain_done: Option<Duration> = None;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(120);
    progress(0, sent.len());
    while outcomes.len() < sent.len() {
        match tokio::time::timeout_at(deadline, rig.replies.next()).await {
            Ok(Some(d)) => {
                let correlation = d
                    .properties
                    .correlation_id()
                    .as_ref()
                    .map(|c| c.to_string())
                    .unwrap_or_default();
                match serde_json::from_slice::<Outcome>(&d.data) {
                    // Progress (a raffle ticket issued) comes before the terminal outcome.
                    Ok(o) if o.status == Status::Pending => progress_events += 1,
                    Ok(o) => {
                        outcomes.insert(correlation, o);
                        if plain_done.is_none()
                            && sent
                                .iter()
                                .filter(|s| !s.long_flow)
                                .all(|s| outcomes.contains_key(&s.correlation_id))
                        {
                            plain_done = Some(started.elapsed());
                        }
                    }
                    Err(_) => {}
                }
                d.ack(BasicAckOptions::default()).await?;
                progress(outcomes.len(), sent.len());
            }
            _ => break,
        }
    }
    if std::io::IsTerminal::is_terminal(&std::io::stderr()) {
        eprintln!();
    }
    let replies_done = started.elapsed();
    let expected_callbacks = sent.iter().filter(|s| s.has_callback).count();
    let callback_deadline = Instant::now() + Duration::from_secs(30);
    let terminal = |r: &Received| {
        r.verified
            .iter()
            .filter(|o| o.status != Status::Pending)
            .count()
    };
    while inbox.lock().map(|r| terminal(&r)).unwrap_or(0) < expected_callbacks
        && Instant::now() < callback_deadline
    {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let elapsed = started.elapsed();

    let stats = rig.csq.stats();
    println!();
    let electrum_problems = electrum_scene(&mut rig, &source).await;
    rig.stop().await;
    hook_task.abort();

    let received = inbox
        .lock()
        .map(|r| (r.verified.clone(), r.bad_signatures))
        .unwrap_or_default();
    let (progress_callbacks, terminal_callbacks): (Vec<Outcome>, Vec<Outcome>) = received
        .0
        .into_iter()
        .partition(|o| o.status == Status::Pending);
    println!();
    println!(
        "progress events (purchase.ticket_issued): {progress_events} AMQP replies, {} callbacks",
        progress_callbacks.len()
    );
    if let Some(t) = plain_done {
        let plain = sent.iter().filter(|s| !s.long_flow).count();
        println!(
            "plain batch: {plain} commands answered in {:.2} s ({:.1} commands/s; CSQ is limited to {} requests/s)",
            t.as_secs_f64(),
            plain as f64 / t.as_secs_f64().max(0.001),
            config.providers.csq.http.rate_per_sec
        );
    }
    report(
        &sent,
        &outcomes,
        &terminal_callbacks,
        received.1,
        stats,
        elapsed,
        replies_done,
        electrum_problems,
    )
}

/// The Electrum part of the demo, in order, because each step needs the one before: a
/// voucher is provisioned and confirmed, a redemption times out after the sandbox applied it,
/// its reversal is refused with 503 three times and then accepted (`reversed`), and the
/// voucher is redeemed again and refunded. Returns what did not go as expected.
async fn electrum_scene(rig: &mut Rig, source: &str) -> Vec<String> {
    use crate::providers::electrum::sandbox::{Fault, Operation};
    let originator = json!({
        "institution": {"id": "11111111", "name": "Buy Stuff Shop"},
        "terminalId": "term0001",
        "merchant": {"merchantType": "4444", "merchantId": "merchant1234567",
            "merchantName": {"name": "Buy Stuff Shop", "city": "Cape Town", "region": "WP", "country": "ZA"}}
    });
    let mut problems = Vec::new();
    println!("Electrum SUV (dual messaging, store-and-forward):");
    let provision = json!({"originator": originator, "amount_minor": 5000, "currency": "710"});
    let code = match electrum_ask(rig, source, "provision", "e-provision", provision).await {
        Ok(o) if o.status == Status::Succeeded => o
            .result
            .and_then(|r| r["voucher"]["code"].as_str().map(str::to_string))
            .unwrap_or_default(),
        other => {
            problems.push(format!("provision: {}", describe(&other)));
            return problems;
        }
    };
    println!(
        "  provision.electrum   -> succeeded, voucher {}",
        crate::mask::mask_str(&code)
    );
    // Let the confirmation land before the holder redeems.
    tokio::time::sleep(Duration::from_millis(300)).await;
    rig.electrum
        .inject(Operation::Redeem, Fault::TimeoutAfterEffect, 1);
    rig.electrum
        .inject(Operation::RedeemReversal, Fault::ErrorBeforeEffect(503), 3);
    let voucher = json!({"originator": originator, "voucher_code": code});
    let started = Instant::now();
    let steps = [
        (
            "redeem",
            "e-redeem-timeout",
            Status::Reversed,
            "timed out after the sandbox applied it; reversal refused 3 x 503, then accepted",
        ),
        (
            "redeem",
            "e-redeem-again",
            Status::Succeeded,
            "the reversed voucher is redeemable again",
        ),
        (
            "refund",
            "e-refund",
            Status::Succeeded,
            "refund of the confirmed redemption",
        ),
        (
            "redeem",
            "e-redeem-after-refund",
            Status::Succeeded,
            "a refunded voucher is redeemable again",
        ),
    ];
    for (kind, id, expected, what) in steps {
        match electrum_ask(rig, source, kind, id, voucher.clone()).await {
            Ok(o) if o.status == expected => {
                println!(
                    "  {:<20} -> {:<9} after {:.1} s: {what}",
                    format!("{kind}.electrum"),
                    o.status.as_str(),
                    started.elapsed().as_secs_f64()
                );
            }
            other => problems.push(format!(
                "{id}: expected {}, {}",
                expected.as_str(),
                describe(&other)
            )),
        }
        // Each confirmation lands before the next step uses the voucher.
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
    problems
}

fn describe(o: &anyhow::Result<Outcome>) -> String {
    match o {
        Ok(o) => format!(
            "got {} {:?}",
            o.status.as_str(),
            o.error.as_ref().map(|e| &e.code)
        ),
        Err(e) => format!("got no outcome: {e}"),
    }
}

/// Publishes one Electrum command and waits for its reply.
async fn electrum_ask(
    rig: &mut Rig,
    source: &str,
    kind: &str,
    id: &str,
    params: Value,
) -> anyhow::Result<Outcome> {
    let config = &rig.config;
    let body = json!({"command_id": id, "source": source, "kind": kind, "provider": "electrum", "params": params});
    let props = json_properties()
        .with_reply_to(rig.replies.name.as_str().into())
        .with_correlation_id(id.into());
    // The relay's own confirmed publisher: no connection per command.
    rig.relay
        .shared
        .publisher
        .publish(
            &config.name(&config.broker.commands_exchange),
            &format!("{kind}.electrum"),
            &serde_json::to_vec(&body)?,
            props,
        )
        .await?;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    loop {
        let Ok(Some(d)) = tokio::time::timeout_at(deadline, rig.replies.next()).await else {
            anyhow::bail!("no reply within 60 s");
        };
        d.ack(BasicAckOptions::default()).await?;
        let correlation = d
            .properties
            .correlation_id()
            .as_ref()
            .map(|c| c.to_string());
        if correlation.as_deref() == Some(id) {
            return Ok(serde_json::from_slice(&d.data)?);
        }
    }
}

async fn receive(
    State((key, inbox)): State<(SigningKey, Inbox)>,
    headers: HeaderMap,
    body: Bytes,
) -> StatusCode {
    let h = |n: &str| {
        headers
            .get(n)
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default()
            .to_string()
    };
    let ts = h("webhook-timestamp").parse::<i64>().unwrap_or(0);
    let fresh = (chrono::Utc::now().timestamp() - ts).abs() <= 300;
    let ok = fresh && key.verify(&h("webhook-id"), ts, &body, &h("webhook-signature"));
    let Ok(mut inbox) = inbox.lock() else {
        return StatusCode::INTERNAL_SERVER_ERROR;
    };
    match serde_json::from_slice::<Outcome>(&body) {
        Ok(o) if ok && o.event_id == h("webhook-id") => {
            inbox.verified.push(o);
            StatusCode::NO_CONTENT
        }
        _ => {
            inbox.bad_signatures += 1;
            StatusCode::UNAUTHORIZED
        }
    }
}

/// Redraws the bar in place on a terminal; elsewhere prints a line every 10 %.
fn progress(done: usize, total: usize) {
    use std::io::IsTerminal;
    let terminal = std::io::stderr().is_terminal();
    let step = (total / 10).max(1);
    if !terminal && done % step != 0 && done != total {
        return;
    }
    let width = 40;
    let filled = done * width / total.max(1);
    let bar = format!(
        "[{}{}] {done}/{total} outcomes",
        "#".repeat(filled),
        "-".repeat(width - filled)
    );
    if terminal {
        eprint!("\r{bar}");
    } else {
        eprintln!("{bar}");
    }
    let _ = std::io::stderr().flush();
}

/// The mixed batch: (routing key, body, expectation).
fn build_batch(source: &str, hook: &str, total: usize) -> Vec<(String, Vec<u8>, Sent)> {
    let mut out = Vec::with_capacity(total);
    let purchase = |i: usize, operator: i32| {
        json!({
            "command_id": format!("cmd-{i:04}"),
            "source": source,
            "kind": "purchase",
            "provider": "csq",
            "callback_url": hook,
            "params": {
                "terminal_id": 17,
                "operator_id": operator,
                "product_id": "gift-card",
                "amount_to_send_x100": 500 + (i as i64 % 20) * 250,
                "receiver_email": format!("customer{i}@example.com")
            }
        })
    };
    let sent = |i: usize, body: &Value, expected, has_callback| Sent {
        correlation_id: format!("msg-{i:04}"),
        key: match (
            body.get("source").and_then(Value::as_str),
            body.get("command_id").and_then(Value::as_str),
        ) {
            (Some(s), Some(c)) => Some((s.to_string(), c.to_string())),
            _ => None,
        },
        expected,
        has_callback,
        long_flow: false,
    };
    // Malformed commands, each refused for a different reason.
    let malformed: Vec<(&str, Vec<u8>, bool)> = {
        let mut float_amount = purchase(9001, OPERATOR_OK);
        float_amount["params"]["amount_to_send_x100"] = json!(12.5);
        let mut negative = purchase(9002, OPERATOR_OK);
        negative["params"]["amount_to_send_x100"] = json!(-100);
        let mut unknown_param = purchase(9003, OPERATOR_OK);
        unknown_param["params"]["pin"] = json!("0000");
        let mut unknown_provider = purchase(9004, OPERATOR_OK);
        unknown_provider["provider"] = json!("acme");
        let mut no_id = purchase(9005, OPERATOR_OK);
        no_id.as_object_mut().map(|o| o.remove("command_id"));
        let mismatch = purchase(9006, OPERATOR_OK);
        vec![
            (
                "purchase.csq",
                b"{\"command_id\": \"oops\", not json".to_vec(),
                false,
            ),
            ("purchase.csq", vec![0xc3, 0x28, 0xff], false),
            ("purchase.csq", vec![b' '; 70 * 1024], false),
            (
                "purchase.csq",
                serde_json::to_vec(&float_amount).unwrap_or_default(),
                true,
            ),
            (
                "purchase.csq",
                serde_json::to_vec(&negative).unwrap_or_default(),
                true,
            ),
            (
                "purchase.csq",
                serde_json::to_vec(&unknown_param).unwrap_or_default(),
                true,
            ),
            (
                "purchase.acme",
                serde_json::to_vec(&unknown_provider).unwrap_or_default(),
                true,
            ),
            (
                "purchase.csq",
                serde_json::to_vec(&no_id).unwrap_or_default(),
                true,
            ),
            (
                "redeem.csq",
                serde_json::to_vec(&mismatch).unwrap_or_default(),
                true,
            ),
        ]
    };
    // One of each longer flow: additional data, dynamic products, a raffle, a timeout after
    // the sale (resolved by query), a 5xx before it (provably not sold), and two reads.
    let mut specials: Vec<(String, Value, Status)> = Vec::new();
    specials.push((
        "purchase.csq".into(),
        purchase(8001, OPERATOR_ADDITIONAL_DATA),
        Status::Succeeded,
    ));
    let mut dynamic = purchase(8002, OPERATOR_DYNAMIC);
    dynamic["params"]
        .as_object_mut()
        .map(|p| p.remove("product_id"));
    dynamic["params"]["amount_to_send_x100"] = json!(1000);
    specials.push(("purchase.csq".into(), dynamic, Status::Succeeded));
    specials.push((
        "purchase.csq".into(),
        purchase(8003, OPERATOR_RAFFLE),
        Status::Succeeded,
    ));
    specials.push((
        "purchase.csq".into(),
        purchase(8004, OPERATOR_SLOW),
        Status::Succeeded,
    ));
    specials.push((
        "purchase.csq".into(),
        purchase(8005, OPERATOR_UNAVAILABLE),
        Status::Failed,
    ));
    let read = |i: usize, kind: &str, params: Value| {
        json!({"command_id": format!("cmd-{i:04}"), "source": source, "kind": kind,
               "provider": "csq", "callback_url": hook, "params": params})
    };
    specials.push((
        "products.csq".into(),
        read(
            8006,
            "products",
            json!({"terminal_id": 17, "operator_id": OPERATOR_DYNAMIC}),
        ),
        Status::Succeeded,
    ));
    specials.push((
        "balance.csq".into(),
        read(8007, "balance", json!({"terminal_id": 17})),
        Status::Succeeded,
    ));
    for (j, (key, body, expected)) in specials.into_iter().enumerate() {
        let bytes = serde_json::to_vec(&body).unwrap_or_default();
        let s = Sent {
            long_flow: true,
            ..sent(8001 + j, &body, expected, true)
        };
        out.push((key, bytes, s));
    }

    let valid = total.saturating_sub(malformed.len() + 1 + out.len());
    for i in 0..valid {
        let (operator, expected) = if i % 5 == 4 {
            (OPERATOR_DECLINE, Status::Declined)
        } else {
            (OPERATOR_OK, Status::Succeeded)
        };
        let body = purchase(i, operator);
        out.push((
            "purchase.csq".to_string(),
            serde_json::to_vec(&body).unwrap_or_default(),
            sent(i, &body, expected, true),
        ));
        if i == 0 {
            // The duplicate: the same command again, as a producer retrying would send it.
            out.push((
                "purchase.csq".to_string(),
                serde_json::to_vec(&body).unwrap_or_default(),
                Sent {
                    correlation_id: "msg-dup".into(),
                    ..sent(i, &body, expected, true)
                },
            ));
        }
    }
    for (j, (key, body, has_callback)) in malformed.into_iter().enumerate() {
        let parsed: Value = serde_json::from_slice(&body).unwrap_or(Value::Null);
        let mut s = sent(9000 + j, &parsed, Status::Rejected, has_callback);
        s.key = None;
        out.push((key.to_string(), body, s));
    }
    out
}

#[allow(clippy::too_many_arguments)]
fn report(
    sent: &[Sent],
    replies: &HashMap<String, Outcome>,
    callbacks: &[Outcome],
    bad_signatures: usize,
    csq: crate::providers::csq::sandbox::Stats,
    elapsed: Duration,
    replies_done: Duration,
    electrum_problems: Vec<String>,
) -> anyhow::Result<()> {
    let statuses = [
        Status::Succeeded,
        Status::Declined,
        Status::Rejected,
        Status::Failed,
        Status::Reversed,
        Status::Expired,
    ];
    let mut commands: BTreeMap<Status, usize> = BTreeMap::new();
    let mut reply_count: BTreeMap<Status, usize> = BTreeMap::new();
    let mut callback_count: BTreeMap<Status, usize> = BTreeMap::new();
    let mut events_per_key: HashMap<&(String, String), HashSet<&str>> = HashMap::new();
    let mut seen_keys = HashSet::new();
    let mut wrong = Vec::new();
    for s in sent {
        let distinct = s.key.as_ref().is_none_or(|k| seen_keys.insert(k.clone()));
        if distinct {
            *commands.entry(s.expected).or_default() += 1;
        }
        match replies.get(&s.correlation_id) {
            Some(o) => {
                *reply_count.entry(o.status).or_default() += 1;
                if o.status != s.expected {
                    wrong.push(format!(
                        "{} expected {} got {}",
                        s.correlation_id,
                        s.expected.as_str(),
                        o.status.as_str()
                    ));
                }
                if let Some(k) = &s.key {
                    events_per_key
                        .entry(k)
                        .or_default()
                        .insert(o.event_id.as_str());
                }
            }
            None => wrong.push(format!("{}: no outcome", s.correlation_id)),
        }
    }
    for c in callbacks {
        *callback_count.entry(c.status).or_default() += 1;
    }
    println!();
    println!(
        "{:<12} {:>9} {:>13} {:>22}",
        "status", "commands", "AMQP replies", "callbacks (verified)"
    );
    for st in statuses {
        let (c, r, b) = (
            commands.get(&st).copied().unwrap_or(0),
            reply_count.get(&st).copied().unwrap_or(0),
            callback_count.get(&st).copied().unwrap_or(0),
        );
        if c + r + b > 0 {
            println!("{:<12} {c:>9} {r:>13} {b:>22}", st.as_str());
        }
    }
    let total_commands: usize = commands.values().sum();
    println!(
        "{:<12} {total_commands:>9} {:>13} {:>22}",
        "total",
        replies.len(),
        callbacks.len()
    );
    let multi = events_per_key.values().filter(|e| e.len() > 1).count();
    let expected_callbacks = sent.iter().filter(|s| s.has_callback).count();
    println!();
    println!(
        "messages published: {} ({} distinct commands, 1 duplicate that got the stored outcome)",
        sent.len(),
        total_commands
    );
    println!("commands with more than one terminal outcome: {multi}");
    println!(
        "CSQ sandbox: {} purchase calls, {} vouchers sold, {} additional-data and {} finished queries, {} product lists",
        csq.purchase_calls,
        csq.purchases_applied,
        csq.additional_data_calls,
        csq.finished_calls,
        csq.products_calls
    );
    println!("bad callback signatures: {bad_signatures}");
    println!(
        "time: {:.2} s for all outcomes ({:.1} commands/s), {:.2} s including callbacks",
        replies_done.as_secs_f64(),
        sent.len() as f64 / replies_done.as_secs_f64().max(0.001),
        elapsed.as_secs_f64()
    );
    let mut failures = wrong;
    failures.extend(electrum_problems);
    if multi > 0 {
        failures.push(format!(
            "{multi} commands got more than one terminal outcome"
        ));
    }
    if callbacks.len() != expected_callbacks {
        failures.push(format!(
            "{} callbacks arrived, {expected_callbacks} expected",
            callbacks.len()
        ));
    }
    if bad_signatures > 0 {
        failures.push(format!(
            "{bad_signatures} callbacks failed signature checks"
        ));
    }
    if failures.is_empty() {
        println!("result: every command has exactly one terminal outcome");
        Ok(())
    } else {
        anyhow::bail!("demo found problems:\n  {}", failures.join("\n  "))
    }
}
