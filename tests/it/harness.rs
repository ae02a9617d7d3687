//! Test harness: each test gets its own database, its own broker name prefix, its own CSQ
//! sandbox and its own callback receiver, so tests run in parallel on one RabbitMQ and one
//! PostgreSQL without seeing each other.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::Router;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::routing::post;
use base64::Engine;
use hmac::{Hmac, Mac};
use lapin::options::{BasicAckOptions, BasicGetOptions, QueueBindOptions, QueueDeclareOptions};
use lapin::types::FieldTable;
use lapin::{BasicProperties, Channel, Connection, ConnectionProperties};
use serde_json::Value;
use sha2::Sha256;
use voucher_relay::broker::reply::ReplyQueue;
use voucher_relay::command::Outcome;
use voucher_relay::config::Config;
use voucher_relay::providers::csq::sandbox::{CsqSandbox, SandboxOptions};
use voucher_relay::providers::electrum::sandbox::{
    ElectrumSandbox, SandboxOptions as ElectrumOptions,
};
use voucher_relay::workers::Relay;

pub const SECRET: &str = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";
/// How long the Electrum sandbox holds an answer under a timeout fault: longer than the
/// test config's 1.5 s Electrum request timeout.
pub const ELECTRUM_SLOW: Duration = Duration::from_secs(4);
const CONFIG: &str = include_str!("../../queues.toml");

/// One callback as the receiver saw it.
#[derive(Debug, Clone)]
pub struct Hook {
    pub webhook_id: String,
    pub body: Value,
    /// Checked here with plain HMAC code, independent of the relay's signer.
    pub signature_ok: bool,
}

#[derive(Default)]
pub struct HookState {
    pub hooks: Vec<Hook>,
    /// Answer 503 to this many requests before accepting.
    pub fail_first: usize,
    pub attempts: usize,
}

/// Tests share one broker. Most take this lock for reading; a test that restarts the
/// broker takes it for writing and so runs alone.
static BROKER: std::sync::LazyLock<Arc<tokio::sync::RwLock<()>>> =
    std::sync::LazyLock::new(|| Arc::new(tokio::sync::RwLock::new(())));

enum BrokerGuard {
    Shared(#[allow(dead_code)] tokio::sync::OwnedRwLockReadGuard<()>),
    Exclusive(#[allow(dead_code)] tokio::sync::OwnedRwLockWriteGuard<()>),
}

pub struct TestEnv {
    _broker: BrokerGuard,
    pub id: String,
    pub config: Config,
    /// The configuration file this test's relay processes read.
    pub config_text: String,
    pub sandbox: CsqSandbox,
    pub electrum: ElectrumSandbox,
    pub hook_url: String,
    pub hook_state: Arc<Mutex<HookState>>,
    pub conn: Connection,
    pub channel: Channel,
    tasks: Vec<tokio::task::JoinHandle<()>>,
}

fn amqp_url() -> String {
    std::env::var("AMQP_URL").unwrap_or_else(|_| "amqp://guest:guest@127.0.0.1:5672/%2f".into())
}

fn pg_base() -> String {
    std::env::var("TEST_DATABASE_BASE")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432".into())
}

/// Verifies a Standard Webhooks signature from first principles.
fn verify(headers: &HeaderMap, body: &[u8]) -> bool {
    let h = |n: &str| {
        headers
            .get(n)
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default()
    };
    let key = base64::engine::general_purpose::STANDARD
        .decode(SECRET.trim_start_matches("whsec_"))
        .expect("test secret");
    let mut mac = Hmac::<Sha256>::new_from_slice(&key).expect("hmac key");
    mac.update(format!("{}.{}.", h("webhook-id"), h("webhook-timestamp")).as_bytes());
    mac.update(body);
    let expected = format!(
        "v1,{}",
        base64::engine::general_purpose::STANDARD.encode(mac.finalize().into_bytes())
    );
    h("webhook-signature").split(' ').any(|s| s == expected)
}

async fn receive(
    State(state): State<Arc<Mutex<HookState>>>,
    headers: HeaderMap,
    body: Bytes,
) -> StatusCode {
    let mut s = state.lock().unwrap();
    s.attempts += 1;
    if s.fail_first > 0 {
        s.fail_first -= 1;
        return StatusCode::SERVICE_UNAVAILABLE;
    }
    let hook = Hook {
        webhook_id: headers
            .get("webhook-id")
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default()
            .to_string(),
        body: serde_json::from_slice(&body).unwrap_or(Value::Null),
        signature_ok: verify(&headers, &body),
    };
    s.hooks.push(hook);
    StatusCode::OK
}

/// `queues.toml` as a test runs it: this test's name prefix and sandbox, short timeouts, and
/// delay tiers compressed (2 s -> 200 ms, 10 s -> 500 ms, 1 min -> 1 s, 5 min -> 2 s,
/// 30 min -> 3 s) so polls and retries finish within a test.
fn test_config_text(id: &str, sandbox_url: &str, electrum_url: &str) -> String {
    let mut text = CONFIG
        .replace(
            "[broker]\n",
            &format!("[broker]\nname_prefix = \"t{id}.\"\n"),
        )
        .replace(
            "base_url = \"http://127.0.0.1:8101\"",
            &format!("base_url = \"{sandbox_url}\""),
        )
        .replace("request_timeout_ms = 15000", "request_timeout_ms = 3000")
        .replace(
            "base_url = \"http://127.0.0.1:8102/suv/v1\"",
            &format!("base_url = \"{electrum_url}/suv/v1\""),
        )
        // Electrum: answers held by a timeout fault (see ELECTRUM_SLOW) time out; advices
        // repeat after 100 ms doubling to 800 ms; lookups stop waiting after 1.5 s.
        .replace("request_timeout_ms = 10000", "request_timeout_ms = 1500")
        .replace(
            "advice_backoff_base_ms = 2000",
            "advice_backoff_base_ms = 100",
        )
        .replace(
            "advice_backoff_cap_ms = 1800000",
            "advice_backoff_cap_ms = 800",
        )
        .replace(
            "processing_deadline_ms = 60000",
            "processing_deadline_ms = 1500",
        )
        .replace("lease_margin_ms = 60000", "lease_margin_ms = 2000")
        .replace("rate_per_sec = 50", "rate_per_sec = 1000")
        .replace("prefetch = 16", "prefetch = 8")
        .replace(
            "retry_schedule = \"0s,5s,5m,30m,2h,5h,10h,10h\"",
            "retry_schedule = \"0s,100ms,200ms,400ms\"",
        )
        // The test receivers listen on loopback.
        .replace("allow_cidrs = []", "allow_cidrs = [\"127.0.0.0/8\"]")
        .replace("listen = \"127.0.0.1:9464\"", "listen = \"127.0.0.1:0\"");
    for (from, to) in [
        ("2000", "200"),
        ("10000", "500"),
        ("60000", "1000"),
        ("300000", "2000"),
        ("1800000", "3000"),
    ] {
        text = text.replace(&format!("ttl_ms = {from}\n"), &format!("ttl_ms = {to}\n"));
    }
    text
}

impl TestEnv {
    pub async fn new() -> TestEnv {
        Self::with_sandbox(SandboxOptions::default()).await
    }

    pub async fn with_sandbox(options: SandboxOptions) -> TestEnv {
        let guard = BrokerGuard::Shared(BROKER.clone().read_owned().await);
        Self::build(options, guard).await
    }

    /// A test that may restart the broker: it runs while no other test does.
    pub async fn exclusive(options: SandboxOptions) -> TestEnv {
        let guard = BrokerGuard::Exclusive(BROKER.clone().write_owned().await);
        Self::build(options, guard).await
    }

    async fn build(options: SandboxOptions, guard: BrokerGuard) -> TestEnv {
        let electrum = ElectrumSandbox::new(ElectrumOptions {
            slow_answer: ELECTRUM_SLOW,
        });
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let electrum_url = format!("http://{}", listener.local_addr().unwrap());
        let sb = electrum.clone();
        let electrum_task = tokio::spawn(async move {
            let _ = sb.serve(listener).await;
        });
        let id = uuid::Uuid::now_v7().simple().to_string()[20..].to_string();
        let env: BTreeMap<String, String> = BTreeMap::from([
            ("WEBHOOK_SIGNING_SECRET".into(), SECRET.into()),
            ("CSQ_USER".into(), "tester".into()),
            ("CSQ_PASSWORD".into(), "test-secret".into()),
            ("ELECTRUM_PASSWORD".into(), "test-secret".into()),
            ("AMQP_URL".into(), amqp_url()),
            ("DATABASE_URL".into(), format!("{}/vr_test_{id}", pg_base())),
        ]);
        let sandbox = CsqSandbox::with_options("tester", "test-secret", options);
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let sandbox_url = format!("http://{}", listener.local_addr().unwrap());
        let sb = sandbox.clone();
        let mut tasks = vec![
            electrum_task,
            tokio::spawn(async move {
                let _ = sb.serve(listener).await;
            }),
        ];
        let config_text = test_config_text(&id, &sandbox_url, &electrum_url);
        let config = Config::from_toml(&config_text, "queues.toml", &env, true).expect("config");
        assert_eq!(
            config.broker.name_prefix,
            format!("t{id}."),
            "test config rewrite"
        );
        assert_eq!(config.delay_tiers[0].ttl_ms, 200, "test config rewrite");
        assert_eq!(
            config.webhook.retry_schedule.len(),
            4,
            "test config rewrite"
        );
        assert!(
            !config.webhook.allow_cidrs.0.is_empty(),
            "test config rewrite"
        );

        let hook_state: Arc<Mutex<HookState>> = Arc::default();
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let hook_url = format!("http://{}/hooks", listener.local_addr().unwrap());
        let app = Router::new()
            .route("/hooks", post(receive))
            .with_state(hook_state.clone());
        tasks.push(tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        }));

        let conn = Connection::connect(&amqp_url(), Default::default())
            .await
            .expect("rabbitmq");
        let channel = conn.create_channel().await.unwrap();
        TestEnv {
            _broker: guard,
            id,
            config,
            config_text,
            sandbox,
            electrum,
            hook_url,
            hook_state,
            conn,
            channel,
            tasks,
        }
    }

    /// This test's configuration as a file, for the binary's `--config`.
    pub fn config_file(&self) -> std::path::PathBuf {
        let path = std::env::temp_dir().join(format!("vr-test-{}.toml", self.id));
        std::fs::write(&path, &self.config_text).unwrap();
        path
    }

    /// `voucher-relay <args>` on this test's configuration file, with its environment.
    pub fn relay_command(&self, args: &[&str]) -> std::process::Command {
        self.relay_command_on(&self.config_file(), args)
    }

    /// `voucher-relay <args>` on the configuration file `config`, with this test's environment.
    pub fn relay_command_on(
        &self,
        config: &std::path::Path,
        args: &[&str],
    ) -> std::process::Command {
        let mut command = std::process::Command::new(env!("CARGO_BIN_EXE_voucher-relay"));
        command
            .arg("--config")
            .arg(config)
            .args(args)
            .env("AMQP_URL", amqp_url())
            .env("DATABASE_URL", &self.config.database.url)
            .env("WEBHOOK_SIGNING_SECRET", SECRET)
            .env("CSQ_USER", "tester")
            .env("CSQ_PASSWORD", "test-secret")
            .env("ELECTRUM_PASSWORD", "test-secret")
            .env("RUST_LOG", "warn");
        command
    }

    /// Starts `voucher-relay run` as a separate process on this test's configuration, and
    /// waits until its consumers are attached.
    pub async fn spawn_relay_process(&self) -> std::process::Child {
        let mut command = self.relay_command(&["run"]);
        command.stderr(std::process::Stdio::null());
        self.spawn_relay(command).await
    }

    /// Starts `command` (a `voucher-relay run`), and waits until its consumers are attached.
    pub async fn spawn_relay(&self, mut command: std::process::Command) -> std::process::Child {
        let mut child = command
            .stdout(std::process::Stdio::null())
            .spawn()
            .expect("relay process starts");
        let queue = self.name("commands.csq");
        // A connection of its own: the test's may have died with a broker restart.
        let conn = Connection::connect(&amqp_url(), ConnectionProperties::default())
            .await
            .expect("broker reachable");
        for _ in 0..200 {
            let ch = conn.create_channel().await.unwrap();
            let declared = ch
                .queue_declare(
                    queue.as_str().into(),
                    QueueDeclareOptions {
                        passive: true,
                        ..Default::default()
                    },
                    FieldTable::default(),
                )
                .await;
            if let Ok(q) = declared {
                if q.consumer_count() > 0 {
                    return child;
                }
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        let _ = child.kill();
        let _ = child.wait();
        panic!("the relay process did not start consuming");
    }

    pub async fn start_relay(&self) -> Relay {
        Relay::start(self.config.clone())
            .await
            .expect("relay starts")
    }

    pub fn name(&self, logical: &str) -> String {
        self.config.name(logical)
    }

    /// Publishes raw bytes to `voucher.commands` as a producer would.
    pub async fn publish_raw(
        &self,
        routing_key: &str,
        body: &[u8],
        reply_to: Option<&str>,
        correlation_id: &str,
    ) {
        let mut props = BasicProperties::default()
            .with_content_type("application/json".into())
            .with_delivery_mode(2)
            .with_correlation_id(correlation_id.into());
        if let Some(r) = reply_to {
            props = props.with_reply_to(r.into());
        }
        self.channel
            .basic_publish(
                self.name("voucher.commands").as_str().into(),
                routing_key.into(),
                Default::default(),
                body,
                props,
            )
            .await
            .unwrap()
            .await
            .unwrap();
    }

    pub async fn publish(&self, cmd: &Value, reply_to: Option<&str>, correlation_id: &str) {
        let key = format!(
            "{}.{}",
            cmd["kind"].as_str().unwrap(),
            cmd["provider"].as_str().unwrap()
        );
        self.publish_raw(
            &key,
            &serde_json::to_vec(cmd).unwrap(),
            reply_to,
            correlation_id,
        )
        .await;
    }

    /// A private reply queue and its consumer.
    pub async fn reply_queue(&self) -> (String, ReplyQueue) {
        let queue = ReplyQueue::open(&self.conn).await.unwrap();
        (queue.name.clone(), queue)
    }

    /// A queue bound to `voucher.events` with `pattern`, declared before the relay publishes.
    pub async fn event_queue(&self, pattern: &str) -> ReplyQueue {
        let (name, consumer) = self.reply_queue().await;
        self.channel
            .queue_bind(
                name.as_str().into(),
                self.name("voucher.events").as_str().into(),
                pattern.into(),
                QueueBindOptions::default(),
                FieldTable::default(),
            )
            .await
            .unwrap();
        consumer
    }

    /// Waits for callbacks until `pred` holds or the time runs out; returns what arrived.
    pub async fn hooks_until(
        &self,
        timeout: Duration,
        pred: impl Fn(&[Hook]) -> bool,
    ) -> Vec<Hook> {
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            let hooks = self.hook_state.lock().unwrap().hooks.clone();
            if pred(&hooks) || tokio::time::Instant::now() > deadline {
                return hooks;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Messages currently in a queue, taken off it.
    pub async fn drain(&self, logical_queue: &str) -> Vec<lapin::message::BasicGetMessage> {
        let mut out = Vec::new();
        while let Some(m) = self
            .channel
            .basic_get(
                self.name(logical_queue).as_str().into(),
                BasicGetOptions { no_ack: true },
            )
            .await
            .unwrap()
        {
            out.push(m);
        }
        out
    }

    pub async fn db(&self) -> tokio_postgres::Client {
        let (client, conn) =
            tokio_postgres::connect(&self.config.database.url, tokio_postgres::NoTls)
                .await
                .unwrap();
        tokio::spawn(conn);
        client
    }

    /// Deletes this test's queues, exchanges and databases.
    pub async fn cleanup(self) {
        // After a broker restart the test's own connection is gone: open a new one.
        let conn = if self.conn.status().connected() {
            self.conn
        } else {
            Connection::connect(&amqp_url(), Default::default())
                .await
                .expect("rabbitmq")
        };
        let _ = voucher_relay::broker::topology::delete(&conn, &self.config).await;
        let _ = conn.close(200, "test done".into()).await;
        for t in self.tasks {
            t.abort();
        }
        if let Ok((admin, conn)) =
            tokio_postgres::connect(&format!("{}/postgres", pg_base()), tokio_postgres::NoTls).await
        {
            tokio::spawn(conn);
            // `_demo`: the database a demo run beside this test's relay made.
            for suffix in ["", "_demo"] {
                let _ = admin
                    .batch_execute(&format!(
                        "DROP DATABASE IF EXISTS vr_test_{}{suffix} WITH (FORCE)",
                        self.id
                    ))
                    .await;
            }
        }
    }
}

/// The next outcome from a consumer with its correlation id, if one comes in time.
pub async fn try_next_outcome(
    consumer: &mut ReplyQueue,
    timeout: Duration,
) -> Option<(String, Outcome)> {
    match tokio::time::timeout(timeout, consumer.next()).await {
        Ok(Some(d)) => {
            let corr = d
                .properties
                .correlation_id()
                .as_ref()
                .map(|c| c.to_string())
                .unwrap_or_default();
            let o: Outcome = serde_json::from_slice(&d.data).expect("outcome JSON");
            d.ack(BasicAckOptions::default()).await.unwrap();
            Some((corr, o))
        }
        _ => None,
    }
}

/// Reads `n` outcomes from a consumer, each with its correlation id.
pub async fn next_outcomes(
    consumer: &mut ReplyQueue,
    n: usize,
    timeout: Duration,
) -> Vec<(String, Outcome)> {
    let deadline = tokio::time::Instant::now() + timeout;
    let mut out = Vec::new();
    while out.len() < n {
        let left = deadline.saturating_duration_since(tokio::time::Instant::now());
        match try_next_outcome(consumer, left).await {
            Some(o) => out.push(o),
            None => panic!("only {} of {n} outcomes arrived", out.len()),
        }
    }
    out
}

/// The one value a query returns (a count, a timestamp, a column of one row).
/// The states a command went through, from its audit trail.
pub async fn audit_states(env: &TestEnv, command_id: &str) -> Vec<String> {
    env.db()
        .await
        .query(
            "SELECT a.to_state FROM audit_trail a JOIN transactions t ON t.id = a.transaction_id
             WHERE t.command_id = $1 ORDER BY a.id",
            &[&command_id],
        )
        .await
        .unwrap()
        .iter()
        .map(|r| r.get(0))
        .collect()
}

pub async fn scalar<T: tokio_postgres::types::FromSqlOwned>(
    db: &tokio_postgres::Client,
    sql: &str,
) -> T {
    db.query_one(sql, &[]).await.unwrap().get(0)
}

/// A valid CSQ purchase.
pub fn purchase(command_id: &str, operator: i32, callback: Option<&str>) -> Value {
    serde_json::json!({
        "command_id": command_id,
        "source": "pos-17",
        "kind": "purchase",
        "provider": "csq",
        "callback_url": callback,
        "params": {
            "terminal_id": 17,
            "operator_id": operator,
            "product_id": "gift-25",
            "amount_to_send_x100": 2500,
            "receiver_email": "holder@example.com",
            "document_type": "PASSPORT",
            "document_number": "X1234567"
        }
    })
}

/// Whether tests may restart RabbitMQ and PostgreSQL: only when asked with
/// `VOUCHER_RELAY_RESTART_TESTS=1` (`.ci/run` asks), since on a developer's machine a
/// restart breaks whatever else uses them. Otherwise the test returns at once, and the run
/// says so in one line (written straight to stderr: the test harness captures only the
/// print macros, and a skipped test would otherwise look like a passed one).
pub fn restarts_allowed() -> bool {
    static NOTE: std::sync::Once = std::sync::Once::new();
    let allowed = std::env::var("VOUCHER_RELAY_RESTART_TESTS").is_ok_and(|v| v == "1");
    if !allowed {
        NOTE.call_once(|| {
            use std::io::Write;
            let _ = std::io::stderr().write_all(
                b"note: tests that restart RabbitMQ or PostgreSQL are skipped; run them with \
                  VOUCHER_RELAY_RESTART_TESTS=1 cargo test (.ci/run does)\n",
            );
        });
    }
    allowed
}

/// Restarts RabbitMQ: `rabbitmqctl stop_app`, `start_app`, `await_startup` by default, or
/// the shell command in `RABBITMQ_RESTART_CMD` (e.g. `docker compose restart rabbitmq`).
pub fn restart_broker() {
    restart(
        "RABBITMQ_RESTART_CMD",
        "rabbitmqctl -q stop_app && rabbitmqctl -q start_app && rabbitmqctl -q await_startup --timeout 60",
    );
}

/// Stops PostgreSQL for two seconds and starts it again: `pg_ctlcluster` on the newest
/// installed cluster by default, or the shell command in `POSTGRES_RESTART_CMD`.
pub fn restart_postgres() {
    restart(
        "POSTGRES_RESTART_CMD",
        "v=$(ls /etc/postgresql | sort -V | tail -n 1) && \
         pg_ctlcluster --skip-systemctl-redirect \"$v\" main stop && sleep 2 && \
         pg_ctlcluster --skip-systemctl-redirect \"$v\" main start",
    );
}

/// Runs the restart command in `var`, or `default`. A restarted server must not inherit
/// the test's output pipes, or the test run would never end.
fn restart(var: &str, default: &str) {
    let command = std::env::var(var).unwrap_or_else(|_| default.into());
    let status = std::process::Command::new("sh")
        .args(["-c", &command])
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .status()
        .expect("sh runs");
    assert!(status.success(), "`{command}` failed");
}
