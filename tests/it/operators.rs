//! Operators at 3 a.m.: items of every kind are parked on purpose, then every `dlq` and `tx`
//! command is run as an operator would (the binary, against a relay process), including a
//! replay run twice and a discard without `--yes`. All that was printed, and the relay's
//! logs, are then searched for the test's secrets.

use std::process::{Output, Stdio};
use std::time::Duration;

use lapin::BasicProperties;
use lapin::options::BasicPublishOptions;
use lapin::types::{AMQPValue, FieldArray, FieldTable};
use serde_json::{Value, json};
use voucher_relay::command::Status;
use voucher_relay::providers::csq::sandbox::SandboxOptions;

use super::electrum::{Client, confirmed_voucher, redeem, time_out_next_redemption, until};
use super::harness::{SECRET, TestEnv, next_outcomes, purchase, scalar};

const WAIT: Duration = Duration::from_secs(60);
const OPERATOR_TOKEN: &str = "ops-test-token-5f1c9a7e2b";
/// Personal data in every test purchase (see `purchase`).
const PERSONAL: [&str; 2] = ["holder@example.com", "X1234567"];

/// Every string under a key that holds a voucher code or PIN, anywhere in `v`.
pub(crate) fn voucher_secrets(v: &Value, out: &mut Vec<String>) {
    match v {
        Value::Object(map) => {
            for (k, v) in map {
                let key: String = k
                    .chars()
                    .filter(|c| *c != '_')
                    .flat_map(char::to_lowercase)
                    .collect();
                match v {
                    Value::String(s)
                        if ["code", "pin", "redeemcode", "vouchercode", "serialpin"]
                            .contains(&key.as_str())
                            && s.len() >= 6 =>
                    {
                        out.push(s.clone())
                    }
                    _ => voucher_secrets(v, out),
                }
            }
        }
        Value::Array(items) => items.iter().for_each(|i| voucher_secrets(i, out)),
        _ => {}
    }
}

/// Fails if any of `secrets` appears in `text` (named `what`).
pub(crate) fn assert_no_secret(text: &str, secrets: &[String], what: &str) {
    for s in secrets {
        assert!(!text.contains(s.as_str()), "{what} shows the secret {s:?}");
    }
}

struct Operator<'a> {
    env: &'a TestEnv,
    config: std::path::PathBuf,
    /// Everything the CLI printed, for the secret search.
    printed: String,
}

impl Operator<'_> {
    /// Runs the binary as the operator `night-operator`, with nothing on stdin.
    fn run(&mut self, args: &[&str]) -> Output {
        let out = self
            .env
            .relay_command_on(&self.config, args)
            .env("USER", "night-operator")
            .stdin(Stdio::null())
            .output()
            .expect("binary runs");
        self.printed.push_str(&String::from_utf8_lossy(&out.stdout));
        self.printed.push_str(&String::from_utf8_lossy(&out.stderr));
        out
    }

    /// Runs and demands exit 0; returns stdout then stderr.
    fn ok(&mut self, args: &[&str]) -> String {
        let out = self.run(args);
        let text = format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        assert!(out.status.success(), "{args:?} failed: {text}");
        text
    }

    fn json(&mut self, args: &[&str]) -> Value {
        let out = self.run(args);
        assert!(
            out.status.success(),
            "{args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        serde_json::from_slice(&out.stdout).expect("--json prints JSON")
    }

    fn counts(&mut self) -> Vec<(String, i64)> {
        let list = self.json(&["dlq", "list", "--json"]);
        list.as_array()
            .expect("array")
            .iter()
            .map(|p| {
                (
                    p["place"].as_str().unwrap().to_string(),
                    p["count"].as_i64().unwrap(),
                )
            })
            .collect()
    }

    fn count(&mut self, place: &str) -> i64 {
        self.counts()
            .into_iter()
            .find(|(p, _)| p == place)
            .map(|(_, n)| n)
            .unwrap_or_else(|| panic!("{place} not listed"))
    }

    fn ids(&mut self, place: &str) -> Vec<String> {
        let items = self.json(&["dlq", "show", place, "--json", "--limit", "100"]);
        items
            .as_array()
            .unwrap()
            .iter()
            .map(|i| i["id"].as_str().unwrap().to_string())
            .collect()
    }
}

/// Publishes `body` to the dead-letter exchange as the broker does when a message used up
/// its deliveries on `commands.csq`: with the `x-death` record that says so.
pub(crate) async fn dead_letter_from_broker(env: &TestEnv, body: &Value, reply_to: Option<&str>) {
    let mut death = FieldTable::default();
    death.insert(
        "queue".into(),
        AMQPValue::LongString(env.name("commands.csq").into()),
    );
    death.insert(
        "reason".into(),
        AMQPValue::LongString("delivery_limit".into()),
    );
    death.insert("count".into(), AMQPValue::LongLongInt(1));
    death.insert(
        "exchange".into(),
        AMQPValue::LongString(env.name("voucher.commands").into()),
    );
    let mut headers = FieldTable::default();
    headers.insert(
        "x-death".into(),
        AMQPValue::FieldArray(FieldArray::from(vec![AMQPValue::FieldTable(death)])),
    );
    headers.insert("x-delivery-count".into(), AMQPValue::LongInt(20));
    let mut props = BasicProperties::default()
        .with_content_type("application/json".into())
        .with_delivery_mode(2)
        .with_headers(headers);
    if let Some(r) = reply_to {
        props = props
            .with_reply_to(r.into())
            .with_correlation_id(body["command_id"].as_str().unwrap_or("").into());
    }
    env.channel
        .basic_publish(
            env.name("voucher.dlx").as_str().into(),
            "purchase.csq".into(),
            BasicPublishOptions::default(),
            &serde_json::to_vec(body).unwrap(),
            props,
        )
        .await
        .unwrap()
        .await
        .unwrap();
}

async fn wait_for(db: &tokio_postgres::Client, sql: &str, what: &str) {
    until(db, sql, 1, what).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn operators_drain_every_place_from_the_cli() {
    let env = TestEnv::with_sandbox(SandboxOptions {
        draw_delay: Duration::from_secs(600),
        additional_data_delay: Duration::from_millis(500),
        ..Default::default()
    })
    .await;
    // A short advice budget, so a reversal parks within the test; the admin endpoint on a
    // port the test knows.
    let admin = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap()
    };
    let text = env
        .config_text
        .replace("advice_budget_ms = 172800000", "advice_budget_ms = 1500")
        .replace("listen = \"127.0.0.1:0\"", &format!("listen = \"{admin}\""));
    assert_ne!(text, env.config_text, "test config rewrite");
    let config = std::env::temp_dir().join(format!("vr-ops-{}.toml", env.id));
    std::fs::write(&config, text).unwrap();
    let log_path = std::env::temp_dir().join(format!("vr-ops-{}.log", env.id));
    let log = std::fs::File::create(&log_path).unwrap();
    let mut command = env.relay_command_on(&config, &["run"]);
    command
        .env("RUST_LOG", "info")
        .env("LOG_FORMAT", "json")
        .env("OPERATOR_TOKEN", OPERATOR_TOKEN)
        .stderr(log);
    let mut relay = env.spawn_relay(command).await;
    let db = env.db().await;
    let mut secrets: Vec<String> = vec![SECRET.into(), OPERATOR_TOKEN.into()];
    secrets.extend(PERSONAL.iter().map(|s| s.to_string()));

    // advice.parked: a redemption times out, and its reversal meets 503s past its budget.
    let mut c = Client::new(&env).await;
    let code = confirmed_voucher(&env, &mut c, "ops-p1").await;
    secrets.push(code.clone());
    time_out_next_redemption(&env, 1000);
    env.publish(&redeem("ops-r1", &code), Some(&c.reply_to), "ops-r1")
        .await;

    // callbacks.dead: the callback URL is refused (a metadata address; nothing is dialled).
    let cb = purchase(
        "ops-cb",
        1001,
        Some("http://169.254.169.254/hook?token=abc"),
    );
    let mut c2 = Client::new(&env).await;
    let o = c2.run(&env, &cb).await;
    assert_eq!(o.status, Status::Succeeded, "{o:?}");
    voucher_secrets(&serde_json::to_value(&o).unwrap(), &mut secrets);

    // A purchase whose assets come later: they repeat the code (a barcode, a QR payload).
    let o = c2.run(&env, &purchase("ops-ad", 1002, None)).await;
    assert_eq!(o.status, Status::Succeeded, "{o:?}");
    voucher_secrets(&serde_json::to_value(&o).unwrap(), &mut secrets);
    let ad = o.result.unwrap();
    for key in ["barcode", "qr_payload"] {
        let v = ad["additional_data"][key].as_str().unwrap();
        secrets.push(v.rsplit(':').next().unwrap().to_string());
    }

    // polls.parked: a raffle ticket waits for its draw; its stored partial result is then
    // corrupted, and the next poll cannot read it.
    env.publish(
        &purchase("ops-raffle", 1004, Some(&env.hook_url)),
        None,
        "ops-raffle",
    )
    .await;
    let hooks = env.hooks_until(WAIT, |h| !h.is_empty()).await;
    voucher_secrets(&hooks[0].body, &mut secrets);
    let raffle: uuid::Uuid = scalar(
        &db,
        "SELECT id FROM transactions WHERE command_id = 'ops-raffle'",
    )
    .await;
    db.execute(
        "UPDATE transactions SET partial_sealed = '\\x00' WHERE id = $1",
        &[&raffle],
    )
    .await
    .unwrap();
    db.execute(
        "UPDATE polls SET next_at = now() WHERE transaction_id = $1",
        &[&raffle],
    )
    .await
    .unwrap();
    wake_poll(&env, raffle).await;

    // voucher.dead, refused by the relay: a poll row for a provider that does not poll.
    let fake = uuid::Uuid::now_v7();
    db.execute(
        "INSERT INTO transactions (id, source, command_id, kind, provider, state, params_masked)
         VALUES ($1, 'ops', 'ops-poison', 'redeem', 'electrum', 'unknown', '{}')",
        &[&fake],
    )
    .await
    .unwrap();
    db.execute(
        "INSERT INTO polls (transaction_id, purpose, next_at, deadline)
         VALUES ($1, 'resolve', now(), now() + interval '1 hour')",
        &[&fake],
    )
    .await
    .unwrap();
    wake_poll(&env, fake).await;

    // voucher.dead, by the broker: a purchase that used up its deliveries, never run; and a
    // copy of one that did run.
    let lost = purchase("ops-dl", 1001, None);
    let (reply_to, mut replies) = env.reply_queue().await;
    dead_letter_from_broker(&env, &lost, Some(&reply_to)).await;
    dead_letter_from_broker(&env, &cb, None).await;

    // voucher.rejected: a command the relay cannot accept.
    let bad = json!({"command_id": "ops-bad", "source": "pos-17", "kind": "purchase",
                     "provider": "csq", "params": {"pin": "998877665544"}});
    env.publish(&bad, None, "ops-bad").await;
    secrets.push("998877665544".into());

    wait_for(
        &db,
        "SELECT count(*) FROM advices WHERE state = 'parked'",
        "no advice parked",
    )
    .await;
    wait_for(
        &db,
        "SELECT count(*) FROM polls WHERE parked_at IS NOT NULL",
        "no poll parked",
    )
    .await;
    wait_for(
        &db,
        "SELECT count(*) FROM outbox WHERE dead_at IS NOT NULL",
        "no dead callback",
    )
    .await;
    wait_for(&db, "SELECT count(*) FROM rejections", "no rejection").await;
    until(
        &db,
        "SELECT count(*) FROM dead_letters",
        3,
        "dead letters not recorded",
    )
    .await;
    // The refused poll's wake-up is recorded once: by the relay (with its error) and by the
    // copy from the queue, as one row. No more wake-ups for it.
    db.execute("DELETE FROM polls WHERE transaction_id = $1", &[&fake])
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_millis(500)).await;

    let mut op = Operator {
        env: &env,
        config: config.clone(),
        printed: String::new(),
    };

    // dlq list: every place, with its count, oldest age and reasons.
    let listed = op.ok(&["dlq", "list"]);
    for place in [
        "voucher.dead",
        "voucher.rejected",
        "advice.parked",
        "polls.parked",
        "callbacks.dead",
    ] {
        assert!(listed.contains(place), "{listed}");
    }
    assert!(listed.contains("delivery_limit 2"), "{listed}");
    assert!(listed.contains("poison 1"), "{listed}");
    assert!(listed.contains("url_refused 1"), "{listed}");
    assert!(listed.contains("reversal_budget_used_up 1"), "{listed}");
    let counts = op.counts();
    assert_eq!(
        counts,
        vec![
            ("voucher.dead".into(), 3),
            ("voucher.rejected".into(), 1),
            ("advice.parked".into(), 1),
            ("polls.parked".into(), 1),
            ("callbacks.dead".into(), 1),
        ]
    );

    // dlq show: decoded and masked, filtered by reason; reading changes nothing.
    let shown = op.ok(&["dlq", "show", "voucher.dead"]);
    assert!(shown.contains("ops-dl"), "{shown}");
    assert!(
        !shown.contains("token=abc"),
        "a callback URL's token is masked: {shown}"
    );
    assert!(
        shown.contains("does not poll"),
        "the relay's error is kept: {shown}"
    );
    assert!(shown.contains("attempts 21"), "{shown}");
    let poison = op.json(&[
        "dlq",
        "show",
        "voucher.dead",
        "--reason",
        "poison",
        "--json",
    ]);
    assert_eq!(poison.as_array().unwrap().len(), 1);
    assert_eq!(poison[0]["transaction_id"], json!(fake));
    let shown = op.ok(&["dlq", "show", "advice.parked"]);
    assert!(
        shown.contains("ops-r1") && shown.contains("reversal"),
        "{shown}"
    );
    let shown = op.ok(&["dlq", "show", "polls.parked"]);
    assert!(
        shown.contains("ops-raffle") && shown.contains("decrypted"),
        "{shown}"
    );
    let shown = op.ok(&["dlq", "show", "callbacks.dead"]);
    assert!(
        shown.contains("ops-cb") && !shown.contains("token=abc"),
        "{shown}"
    );
    let shown = op.ok(&["dlq", "show", "voucher.rejected"]);
    assert!(shown.contains("ops-bad"), "{shown}");
    assert_eq!(op.count("voucher.dead"), 3, "show changed nothing");

    // Bad input gets one clear line and a non-zero exit.
    for (args, says) in [
        (vec!["dlq", "show", "no.such.place"], "no place"),
        (
            vec![
                "dlq",
                "replay",
                "voucher.dead",
                "--id",
                "not-a-uuid",
                "--reason-text",
                "x",
                "--yes",
            ],
            "not an id",
        ),
        (
            vec![
                "dlq",
                "replay",
                "voucher.rejected",
                "--all",
                "--reason-text",
                "x",
                "--yes",
            ],
            "cannot be replayed",
        ),
        (
            vec![
                "dlq",
                "replay",
                "voucher.dead",
                "--all",
                "--reason-text",
                " ",
                "--yes",
            ],
            "must say why",
        ),
        (
            vec!["tx", "find", "--older-than", "ten minutes"],
            "not a duration",
        ),
    ] {
        let out = op.run(&args);
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "{args:?} succeeded");
        assert!(err.contains(says), "{args:?}: {err}");
    }

    // A dry run changes nothing.
    let dry = op.ok(&[
        "dlq",
        "replay",
        "voucher.dead",
        "--reason",
        "delivery_limit",
        "--reason-text",
        "look",
        "--dry-run",
    ]);
    assert!(dry.contains("dry run: nothing was done"), "{dry}");
    assert_eq!(op.count("voucher.dead"), 3);

    // Replay by reason, twice: the lost purchase runs once and answers its reply queue;
    // the copy of a purchase that already ran is not redone; the second run finds nothing.
    let first = op.ok(&[
        "dlq",
        "replay",
        "voucher.dead",
        "--reason",
        "delivery_limit",
        "--reason-text",
        "broker outage INC-42",
        "--rate",
        "20",
        "--yes",
    ]);
    assert!(
        first.contains("1 replayed") && first.contains("1 already done"),
        "{first}"
    );
    let (corr, o) = next_outcomes(&mut replies, 1, WAIT).await.remove(0);
    assert_eq!(corr, "ops-dl");
    assert_eq!(o.status, Status::Succeeded, "{o:?}");
    voucher_secrets(&serde_json::to_value(&o).unwrap(), &mut secrets);
    let second = op.ok(&[
        "dlq",
        "replay",
        "voucher.dead",
        "--reason",
        "delivery_limit",
        "--reason-text",
        "broker outage INC-42",
        "--yes",
    ]);
    assert!(second.contains("nothing to replay"), "{second}");
    let sales: i64 = scalar(
        &db,
        "SELECT count(*) FROM provider_exchanges e JOIN transactions t ON t.id = e.transaction_id
         WHERE t.command_id IN ('ops-dl', 'ops-cb') AND e.operation = 'purchase'",
    )
    .await;
    assert_eq!(sales, 2, "each purchase was sent once");

    // Replaying the parked reversal once Electrum answers again: it completes.
    env.electrum.clear_faults();
    let advice = op.ids("advice.parked");
    let replayed = op.ok(&[
        "dlq",
        "replay",
        "advice.parked",
        "--id",
        &advice[0],
        "--reason-text",
        "Electrum is back",
        "--yes",
    ]);
    assert!(replayed.contains("1 replayed"), "{replayed}");
    let (_, o) = next_outcomes(&mut c.replies, 1, WAIT).await.remove(0);
    assert_eq!(o.status, Status::Reversed, "{o:?}");
    let again = op.ok(&[
        "dlq",
        "replay",
        "advice.parked",
        "--id",
        &advice[0],
        "--reason-text",
        "again",
        "--yes",
    ]);
    assert!(again.contains("not waiting"), "{again}");

    // Discard without --yes: asked, not answered, nothing done.
    let out = op.run(&[
        "dlq",
        "discard",
        "polls.parked",
        "--all",
        "--reason-text",
        "corrupt row",
    ]);
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("not confirmed"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(
        op.count("polls.parked"),
        1,
        "nothing discarded without --yes"
    );
    // With --yes: archived, no longer waiting; twice is harmless.
    for place in [
        "polls.parked",
        "callbacks.dead",
        "voucher.rejected",
        "voucher.dead",
    ] {
        let done = op.ok(&[
            "dlq",
            "discard",
            place,
            "--all",
            "--reason-text",
            "handled by hand",
            "--yes",
        ]);
        assert!(done.contains("1 discarded"), "{place}: {done}");
    }
    let twice = op.ok(&[
        "dlq",
        "discard",
        "polls.parked",
        "--all",
        "--reason-text",
        "x",
        "--yes",
    ]);
    assert!(twice.contains("nothing to discard"), "{twice}");
    assert!(
        op.counts().iter().all(|(_, n)| *n == 0),
        "{:?}",
        op.counts()
    );
    let archived: i64 = scalar(
        &db,
        "SELECT (SELECT count(*) FROM polls WHERE discarded_at IS NOT NULL)
              + (SELECT count(*) FROM outbox WHERE discarded_at IS NOT NULL)
              + (SELECT count(*) FROM rejections WHERE discarded_at IS NOT NULL)
              + (SELECT count(*) FROM dead_letters WHERE state = 'discarded')",
    )
    .await;
    assert_eq!(archived, 4, "discarded items stay in PostgreSQL");

    // The audit trail: who, through what, why.
    let audit = db
        .query(
            "SELECT actor, via, action, place, result, why FROM operator_actions ORDER BY id",
            &[],
        )
        .await
        .unwrap();
    let rows: Vec<(String, String, String, String, String, String)> = audit
        .iter()
        .map(|r| (r.get(0), r.get(1), r.get(2), r.get(3), r.get(4), r.get(5)))
        .collect();
    assert_eq!(rows.len(), 7, "{rows:?}");
    assert!(
        rows.iter().all(|r| r.0 == "night-operator" && r.1 == "cli"),
        "{rows:?}"
    );
    assert!(rows.contains(&(
        "night-operator".into(),
        "cli".into(),
        "replay".into(),
        "voucher.dead".into(),
        "already_done".into(),
        "broker outage INC-42".into()
    )));

    // tx show: by command id and by transaction id, with every kind of step.
    let timeline = op.ok(&["tx", "show", "ops-r1"]);
    for step in [
        "state",
        "provider",
        "advice",
        "operator",
        "received",
        "reversing",
    ] {
        assert!(timeline.contains(step), "{step} missing: {timeline}");
    }
    assert!(timeline.contains("Electrum is back"), "{timeline}");
    let cb_tx: uuid::Uuid = scalar(
        &db,
        "SELECT id FROM transactions WHERE command_id = 'ops-cb'",
    )
    .await;
    let timeline = op.ok(&["tx", "show", &cb_tx.to_string()]);
    assert!(timeline.contains("callback refused"), "{timeline}");
    // By a serial the provider gave (CSQ's supplier reference).
    let serial: String = scalar(
        &db,
        "SELECT e.response->'items'->0->>'supplierreference' FROM provider_exchanges e
         JOIN transactions t ON t.id = e.transaction_id
         WHERE t.command_id = 'ops-ad' AND e.operation = 'purchase'",
    )
    .await;
    let timeline = op.ok(&["tx", "show", &serial]);
    assert!(timeline.contains("command ops-ad"), "{timeline}");
    assert!(timeline.contains("additional_data"), "{timeline}");
    // Whole, every exchange untruncated: still no code.
    let whole = op.json(&["tx", "show", &serial, "--json"]);
    assert!(whole["steps"].as_array().unwrap().len() > 3, "{whole}");
    let json = op.json(&["tx", "show", "ops-dl", "--json"]);
    assert_eq!(json["transaction"]["status"], "succeeded");
    assert!(json["steps"].as_array().unwrap().len() >= 3, "{json}");
    let out = op.run(&["tx", "show", "no-such-command"]);
    assert!(!out.status.success());

    // tx find: by status, provider, source and age.
    let found = op.json(&[
        "tx",
        "find",
        "--status",
        "reversed",
        "--provider",
        "electrum",
        "--json",
    ]);
    let found: Vec<&str> = found
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t["command_id"].as_str().unwrap())
        .collect();
    assert_eq!(found, vec!["ops-r1"]);
    let waiting = op.ok(&[
        "tx",
        "find",
        "--status",
        "awaiting_draw",
        "--source",
        "pos-17",
        "--older-than",
        "0s",
    ]);
    assert!(waiting.contains("ops-raffle"), "{waiting}");
    let none = op.json(&["tx", "find", "--older-than", "1d", "--json"]);
    assert_eq!(none, json!([]));

    // The admin endpoint of `run`: the gauges and histograms operators alert on, and the
    // console behind its login.
    let http = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap();
    let metrics = http
        .get(format!("http://{admin}/metrics"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    for name in [
        "voucher_dlq_items{place=\"advice.parked\"}",
        "voucher_dlq_oldest_age_seconds{place=\"voucher.dead\"}",
        "voucher_queue_depth{queue=\"commands.csq\"}",
        "voucher_rate_limit_wait_seconds",
        "voucher_provider_latency_seconds",
        "voucher_outcomes_total",
        "voucher_deliveries_total",
        "voucher_dead_letters_recorded_total",
    ] {
        assert!(metrics.contains(name), "/metrics lacks {name}");
    }
    let console = http
        .get(format!("http://{admin}/console"))
        .send()
        .await
        .unwrap();
    assert_eq!(console.status(), 303, "the console asks for a login");
    let login = http
        .get(format!("http://{admin}/console/login"))
        .send()
        .await
        .unwrap();
    assert_eq!(login.status(), 200);
    let ready = http
        .get(format!("http://{admin}/readyz"))
        .send()
        .await
        .unwrap();
    assert_eq!(ready.status(), 200);
    let _ = relay.kill();
    let _ = relay.wait();
    let logs = std::fs::read_to_string(&log_path).unwrap();
    assert!(
        logs.contains("dead letter recorded"),
        "the relay logs what it records"
    );
    assert_no_secret(&op.printed, &secrets, "the CLI");
    assert_no_secret(&logs, &secrets, "the relay's logs");
    let _ = std::fs::remove_file(&log_path);
    let _ = std::fs::remove_file(&config);
    env.cleanup().await;
}

/// A poll wake-up for `id`, straight onto the CSQ poll queue.
async fn wake_poll(env: &TestEnv, id: uuid::Uuid) {
    env.channel
        .basic_publish(
            "".into(),
            env.name("polls.csq").as_str().into(),
            BasicPublishOptions::default(),
            &serde_json::to_vec(&json!({"transaction_id": id})).unwrap(),
            BasicProperties::default().with_delivery_mode(2),
        )
        .await
        .unwrap()
        .await
        .unwrap();
}

/// `/readyz` covers the topology: a queue deleted under a running relay makes it unready
/// within one sample (15 s), naming the queue.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_missing_queue_makes_the_relay_unready() {
    let env = TestEnv::new().await;
    let relay = env.start_relay().await;
    assert_eq!(relay.shared.ready().await, Ok(()));
    env.channel
        .queue_delete(
            env.name("voucher.rejected").as_str().into(),
            Default::default(),
        )
        .await
        .unwrap();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(40);
    let why = loop {
        match relay.shared.ready().await {
            Err(why) => break why,
            Ok(()) => {
                assert!(tokio::time::Instant::now() < deadline, "still ready");
                tokio::time::sleep(Duration::from_millis(250)).await;
            }
        }
    };
    assert!(
        why.contains("topology") && why.contains("voucher.rejected"),
        "{why}"
    );
    relay.stop().await;
    env.cleanup().await;
}
