//! Callback delivery as receivers see it: retries with one `webhook-id`, Retry-After and 410
//! per destination, dead letters and replay, the SSRF guard, a slow receiver beside a fast
//! one, a SIGKILL mid-delivery, and secret rotation. Signatures are checked with the
//! reference `standardwebhooks` crate. Receivers listen on 127.0.0.2 so the guard's refusal
//! of 127.0.0.1 can be tested without any other address.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::Router;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, HeaderName, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use serde_json::Value;
use voucher_relay::webhook::guard::AllowList;

use crate::harness::{SECRET, TestEnv, purchase, scalar};

const WAIT: Duration = Duration::from_secs(30);

/// How a test receiver answers one request.
#[derive(Clone, Debug)]
struct Answer {
    status: u16,
    headers: Vec<(&'static str, String)>,
    delay: Duration,
    body: String,
}

impl Answer {
    fn status(status: u16) -> Answer {
        Answer {
            status,
            headers: Vec::new(),
            delay: Duration::ZERO,
            body: String::new(),
        }
    }

    fn body(mut self, body: impl Into<String>) -> Answer {
        self.body = body.into();
        self
    }

    fn header(mut self, name: &'static str, value: impl Into<String>) -> Answer {
        self.headers.push((name, value.into()));
        self
    }

    fn after(mut self, delay: Duration) -> Answer {
        self.delay = delay;
        self
    }
}

/// One request as the receiver saw it, and when it arrived.
#[derive(Clone, Debug)]
struct Seen {
    at: Instant,
    headers: HeaderMap,
    body: Bytes,
    /// The status it was answered with.
    status: u16,
}

impl Seen {
    fn webhook_id(&self) -> String {
        self.headers
            .get("webhook-id")
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default()
            .to_string()
    }

    /// Verified by the reference Standard Webhooks library with `secret`.
    fn verifies_with(&self, secret: &str) -> bool {
        standardwebhooks::Webhook::new(secret)
            .expect("secret")
            .verify(&self.body, &self.headers)
            .is_ok()
    }
}

struct Script {
    queue: VecDeque<Answer>,
    default: Answer,
    seen: Vec<Seen>,
}

/// A programmable callback receiver: answers from its script, then its default.
struct Receiver {
    base: String,
    state: Arc<Mutex<Script>>,
    task: tokio::task::JoinHandle<()>,
}

async fn answer(
    State(state): State<Arc<Mutex<Script>>>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let plan = {
        let mut s = state.lock().unwrap();
        let plan = s.queue.pop_front().unwrap_or_else(|| s.default.clone());
        s.seen.push(Seen {
            at: Instant::now(),
            headers,
            body,
            status: plan.status,
        });
        plan
    };
    tokio::time::sleep(plan.delay).await;
    let mut response = (
        StatusCode::from_u16(plan.status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR),
        plan.body,
    )
        .into_response();
    for (name, value) in plan.headers {
        response.headers_mut().insert(
            HeaderName::from_static(name),
            HeaderValue::from_str(&value).unwrap(),
        );
    }
    response
}

impl Receiver {
    async fn start(ip: &str, script: Vec<Answer>, default: Answer) -> Receiver {
        let state = Arc::new(Mutex::new(Script {
            queue: script.into(),
            default,
            seen: Vec::new(),
        }));
        let listener = tokio::net::TcpListener::bind((ip, 0)).await.unwrap();
        let base = format!("http://{}", listener.local_addr().unwrap());
        let app = Router::new().fallback(answer).with_state(state.clone());
        let task = tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        Receiver { base, state, task }
    }

    fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    fn port(&self) -> u16 {
        self.base.rsplit(':').next().unwrap().parse().unwrap()
    }

    fn seen(&self) -> Vec<Seen> {
        self.state.lock().unwrap().seen.clone()
    }

    fn set_default(&self, answer: Answer) {
        self.state.lock().unwrap().default = answer;
    }

    /// Waits until `pred` holds over what arrived; returns it.
    async fn until(&self, timeout: Duration, pred: impl Fn(&[Seen]) -> bool) -> Vec<Seen> {
        let deadline = Instant::now() + timeout;
        loop {
            let seen = self.seen();
            if pred(&seen) || Instant::now() > deadline {
                return seen;
            }
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
    }
}

impl Drop for Receiver {
    fn drop(&mut self) {
        self.task.abort();
    }
}

fn delivered(seen: &[Seen]) -> usize {
    seen.iter()
        .filter(|s| (200..300).contains(&s.status))
        .count()
}

/// Publishes a CSQ purchase (operator 1001: sold at once) whose outcome goes to `callback`.
async fn buy(env: &TestEnv, command_id: &str, callback: &str) {
    env.publish(
        &purchase(command_id, 1001, Some(callback)),
        None,
        command_id,
    )
    .await;
}

/// Runs `voucher-relay <args>` against this test's config and database, as an operator would.
fn cli(env: &TestEnv, args: &[&str]) -> std::process::Output {
    std::process::Command::new(env!("CARGO_BIN_EXE_voucher-relay"))
        .arg("--config")
        .arg(env.config_file())
        .args(args)
        .env("DATABASE_URL", &env.config.database.url)
        .env("RUST_LOG", "warn")
        .output()
        .expect("the binary runs")
}

/// Waits until the SQL count reaches `want`.
async fn count_until(db: &tokio_postgres::Client, sql: &str, want: i64) -> i64 {
    let deadline = Instant::now() + WAIT;
    loop {
        let n: i64 = scalar(db, sql).await;
        if n >= want || Instant::now() > deadline {
            return n;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// The JSON bodies on the test's `callbacks.dead` queue, taken off it.
async fn dead_notices(env: &TestEnv) -> Vec<Value> {
    env.drain("callbacks.dead")
        .await
        .iter()
        .map(|m| serde_json::from_slice(&m.data).expect("notice JSON"))
        .collect()
}

#[tokio::test]
async fn failing_receiver_gets_one_delivery_with_one_webhook_id_every_time() {
    let env = TestEnv::new().await;
    // Each 500 comes with 20 KiB of body holding a NUL: the log keeps 16 KiB of it, and the
    // NUL does not stop the attempt being recorded.
    let noisy = format!("error\0{}", "x".repeat(20 * 1024));
    let receiver = Receiver::start(
        "127.0.0.2",
        vec![Answer::status(500).body(noisy); 3],
        Answer::status(200),
    )
    .await;
    let relay = env.start_relay().await;
    buy(&env, "cb-500", &receiver.url("/hooks")).await;
    let seen = receiver.until(WAIT, |s| delivered(s) == 1).await;
    assert_eq!(seen.len(), 4, "three 500s, then a 200");
    let id = seen[0].webhook_id();
    assert!(!id.is_empty());
    for s in &seen {
        assert_eq!(s.webhook_id(), id, "the same webhook-id every attempt");
        assert!(
            s.verifies_with(SECRET),
            "standardwebhooks verifies every attempt"
        );
    }
    // Nothing more comes once delivered.
    tokio::time::sleep(Duration::from_millis(800)).await;
    assert_eq!(receiver.seen().len(), 4);

    let db = env.db().await;
    let log = db
        .query(
            "SELECT result, status, dialled_ip, latency_ms FROM callback_attempts ORDER BY id",
            &[],
        )
        .await
        .unwrap();
    let results: Vec<String> = log.iter().map(|r| r.get(0)).collect();
    assert_eq!(results, ["failed", "failed", "failed", "delivered"]);
    assert!(
        log.iter()
            .all(|r| r.get::<_, Option<String>>(2).as_deref() == Some("127.0.0.2"))
    );
    let attempts: i32 = scalar(
        &db,
        "SELECT attempts FROM outbox WHERE channel = 'callback'",
    )
    .await;
    assert_eq!(attempts, 4);
    relay.stop().await;
    env.cleanup().await;
}

#[tokio::test]
async fn retry_after_pauses_its_destination_while_another_keeps_receiving() {
    let mut env = TestEnv::new().await;
    // Retry-After is capped at the schedule's longest step: make that longer than 2 s.
    env.config.webhook.retry_schedule =
        voucher_relay::config::parse_schedule("0s,100ms,5s").unwrap();
    let slow_down = Receiver::start(
        "127.0.0.2",
        vec![Answer::status(429).header("retry-after", "2")],
        Answer::status(200),
    )
    .await;
    let other = Receiver::start("127.0.0.2", vec![], Answer::status(200)).await;
    let relay = env.start_relay().await;
    buy(&env, "ra-1", &slow_down.url("/a")).await;
    let first = slow_down.until(WAIT, |s| !s.is_empty()).await;
    assert_eq!(first[0].status, 429);
    // A second command to the paused destination, and two to another one.
    buy(&env, "ra-2", &slow_down.url("/a")).await;
    for id in ["rb-1", "rb-2"] {
        buy(&env, id, &other.url("/b")).await;
    }
    let b = other.until(WAIT, |s| delivered(s) == 2).await;
    assert_eq!(delivered(&b), 2, "the other destination keeps receiving");
    let a = slow_down.until(WAIT, |s| delivered(s) == 2).await;
    assert_eq!(delivered(&a), 2, "both deliveries arrive after the pause");
    let paused_from = a[0].at;
    for later in &a[1..] {
        assert!(
            later.at.duration_since(paused_from) >= Duration::from_millis(1900),
            "no request to the paused destination before its Retry-After: {:?}",
            later.at.duration_since(paused_from)
        );
    }
    assert!(
        b.iter().all(|s| s.at < a[1].at),
        "the other destination was not held behind the pause"
    );
    // Retry-After used no step of the schedule. The receiver sees a delivery just before
    // the relay records it: wait for the records first.
    let db = env.db().await;
    let recorded = format!(
        "SELECT count(*) FROM outbox WHERE channel = 'callback' AND target = '{}'
           AND delivered_at IS NOT NULL",
        slow_down.url("/a")
    );
    let deadline = tokio::time::Instant::now() + WAIT;
    while scalar::<i64>(&db, &recorded).await < 2 {
        assert!(
            tokio::time::Instant::now() < deadline,
            "deliveries never recorded"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let throttled: i64 = scalar(
        &db,
        "SELECT count(*) FROM callback_attempts WHERE result = 'throttled' AND status = 429",
    )
    .await;
    assert_eq!(throttled, 1);
    let used: i32 = scalar(
        &db,
        &format!(
            "SELECT attempts FROM outbox WHERE channel = 'callback' AND target = '{}' ORDER BY id LIMIT 1",
            slow_down.url("/a")
        ),
    )
    .await;
    assert_eq!(used, 1, "only the delivery used a step, not the 429");
    relay.stop().await;
    env.cleanup().await;
}

#[tokio::test]
async fn gone_disables_the_url_until_an_operator_enables_it() {
    let env = TestEnv::new().await;
    let receiver =
        Receiver::start("127.0.0.2", vec![Answer::status(410)], Answer::status(200)).await;
    let url = receiver.url("/gone");
    let relay = env.start_relay().await;
    let mut events = env.event_queue("#").await;
    buy(&env, "g-1", &url).await;
    receiver.until(WAIT, |s| !s.is_empty()).await;
    buy(&env, "g-2", &url).await;
    crate::harness::next_outcomes(&mut events, 2, WAIT).await;
    // Both wait, visibly, and nothing more reaches the URL.
    let db = env.db().await;
    let disabled = count_until(
        &db,
        "SELECT count(*) FROM outbox WHERE channel = 'callback' AND delivered_at IS NULL AND dead_at IS NULL",
        2,
    )
    .await;
    assert_eq!(disabled, 2);
    let parked = count_until(
        &db,
        "SELECT count(*) FROM outbox WHERE channel = 'callback' AND next_attempt_at = 'infinity'",
        2,
    )
    .await;
    assert_eq!(parked, 2, "both wait out of the claim's sight");
    tokio::time::sleep(Duration::from_millis(800)).await;
    assert_eq!(receiver.seen().len(), 1, "a disabled URL is not called");
    let listed = cli(&env, &["callbacks", "disabled"]);
    let listed = String::from_utf8_lossy(&listed.stdout);
    let line: Value = serde_json::from_str(listed.lines().next().expect("one line")).unwrap();
    assert_eq!(line["url"], url.as_str());
    assert_eq!(line["waiting"], 2);

    let enabled = cli(&env, &["callbacks", "enable", &url]);
    assert!(enabled.status.success(), "{enabled:?}");
    let seen = receiver.until(WAIT, |s| delivered(s) == 2).await;
    assert_eq!(delivered(&seen), 2, "the waiting deliveries arrive");
    let again = cli(&env, &["callbacks", "enable", &url]);
    assert!(
        !again.status.success(),
        "enabling twice says it is not disabled"
    );
    relay.stop().await;
    env.cleanup().await;
}

#[tokio::test]
async fn a_receiver_down_for_the_whole_schedule_goes_dead_and_replay_delivers() {
    let env = TestEnv::new().await;
    let receiver = Receiver::start("127.0.0.2", vec![], Answer::status(503)).await;
    let relay = env.start_relay().await;
    let mut events = env.event_queue("#").await;
    buy(&env, "dead-1", &receiver.url("/down")).await;
    let (_, outcome) = crate::harness::next_outcomes(&mut events, 1, WAIT)
        .await
        .remove(0);
    let db = env.db().await;
    let dead = count_until(
        &db,
        "SELECT count(*) FROM outbox WHERE channel = 'callback' AND dead_at IS NOT NULL",
        1,
    )
    .await;
    assert_eq!(dead, 1);
    assert_eq!(receiver.seen().len(), 4, "four steps in the test schedule");
    // The notice on callbacks.dead carries the whole attempt history, secrets masked.
    let delivered_notice = count_until(
        &db,
        "SELECT count(*) FROM outbox WHERE channel = 'dead' AND delivered_at IS NOT NULL",
        1,
    )
    .await;
    assert_eq!(delivered_notice, 1);
    let notices = dead_notices(&env).await;
    assert_eq!(notices.len(), 1);
    let notice = &notices[0];
    assert_eq!(notice["event_id"], outcome.event_id.as_str());
    assert_eq!(notice["reason"], "HTTP 503");
    let attempts = notice["attempts"].as_array().unwrap();
    assert_eq!(attempts.len(), 4);
    assert!(
        attempts
            .iter()
            .all(|a| a["status"] == 503 && a["dialled_ip"] == "127.0.0.2")
    );
    assert!(
        !notice.to_string().contains("X1234567"),
        "personal data masked"
    );

    receiver.set_default(Answer::status(200));
    let replay = cli(
        &env,
        &["callbacks", "replay", "--url", &receiver.url("/down")],
    );
    assert!(replay.status.success(), "{replay:?}");
    assert!(String::from_utf8_lossy(&replay.stderr).contains("1 dead callback(s)"));
    let seen = receiver.until(WAIT, |s| delivered(s) == 1).await;
    assert_eq!(delivered(&seen), 1);
    assert!(seen.iter().all(|s| s.webhook_id() == outcome.event_id));
    // Safe twice: nothing is dead any more, so nothing is sent again.
    for again in [
        vec!["callbacks", "replay", outcome.event_id.as_str()],
        vec!["callbacks", "replay", "--all-dead"],
    ] {
        let twice = cli(&env, &again);
        assert!(twice.status.success());
        assert!(String::from_utf8_lossy(&twice.stderr).contains("0 dead callback(s)"));
    }
    tokio::time::sleep(Duration::from_millis(800)).await;
    assert_eq!(delivered(&receiver.seen()), 1);
    let show = cli(&env, &["callbacks", "show", &outcome.event_id]);
    let show: Value = serde_json::from_slice(&show.stdout).expect("one JSON line");
    assert_eq!(show["state"], "delivered");
    assert_eq!(show["attempts"].as_array().unwrap().len(), 5);
    relay.stop().await;
    env.cleanup().await;
}

#[tokio::test]
async fn internal_addresses_are_refused_in_every_spelling_and_redirects_are_not_followed() {
    let mut env = TestEnv::new().await;
    env.config.webhook.allow_cidrs = AllowList::parse("127.0.0.2/32").unwrap();
    let allowed = Receiver::start("127.0.0.2", vec![], Answer::status(302)).await;
    let trap = Receiver::start("127.0.0.1", vec![], Answer::status(200)).await;
    let p = trap.port();
    allowed.set_default(Answer::status(302).header("location", trap.url("/stolen")));
    let refused = [
        format!("http://127.0.0.1:{p}/x"),
        format!("http://localhost:{p}/x"),
        format!("http://localhost.:{p}/x"),
        format!("http://[::1]:{p}/x"),
        format!("http://[::ffff:127.0.0.1]:{p}/x"),
        format!("http://2130706433:{p}/x"),
        format!("http://0177.0.0.1:{p}/x"),
        format!("http://0x7f000001:{p}/x"),
        format!("http://127.1:{p}/x"),
        format!(
            "http://user:pw@{}/x",
            allowed.base.trim_start_matches("http://")
        ),
    ];
    let relay = env.start_relay().await;
    let mut events = env.event_queue("#").await;
    for (i, url) in refused.iter().enumerate() {
        buy(&env, &format!("ssrf-{i}"), url).await;
    }
    buy(&env, "redirect", &allowed.url("/hooks")).await;
    // Every outcome is still published on voucher.events.
    let outcomes = crate::harness::next_outcomes(&mut events, refused.len() + 1, WAIT).await;
    assert_eq!(outcomes.len(), refused.len() + 1);

    let db = env.db().await;
    let dead = count_until(
        &db,
        "SELECT count(*) FROM outbox WHERE channel = 'callback' AND dead_at IS NOT NULL",
        i64::try_from(refused.len()).unwrap() + 1,
    )
    .await;
    assert_eq!(dead, i64::try_from(refused.len()).unwrap() + 1);
    for url in &refused {
        let row = db
            .query_one(
                "SELECT last_error, attempts FROM outbox WHERE channel = 'callback' AND target = $1",
                &[url],
            )
            .await
            .unwrap();
        let error: String = row.get(0);
        assert!(error.starts_with("callback_url_refused"), "{url}: {error}");
        assert_eq!(row.get::<_, i32>(1), 1, "{url} is not retried");
    }
    let redirect_error: String = scalar(
        &db,
        &format!(
            "SELECT last_error FROM outbox WHERE channel = 'callback' AND target = '{}'",
            allowed.url("/hooks")
        ),
    )
    .await;
    assert_eq!(redirect_error, "HTTP 302", "a redirect is a failure");
    assert_eq!(
        allowed.seen().len(),
        4,
        "the redirect target was never followed"
    );
    assert!(trap.seen().is_empty(), "nothing reached 127.0.0.1");
    let notices = count_until(
        &db,
        "SELECT count(*) FROM outbox WHERE channel = 'dead' AND delivered_at IS NOT NULL",
        i64::try_from(refused.len()).unwrap() + 1,
    )
    .await;
    assert_eq!(notices, i64::try_from(refused.len()).unwrap() + 1);
    relay.stop().await;
    env.cleanup().await;
}

#[tokio::test]
async fn a_slow_receiver_does_not_delay_a_fast_one() {
    let mut env = TestEnv::new().await;
    env.config.webhook.per_destination_concurrency = 2;
    let slow = Receiver::start(
        "127.0.0.2",
        vec![],
        Answer::status(200).after(Duration::from_secs(10)),
    )
    .await;
    let fast = Receiver::start("127.0.0.2", vec![], Answer::status(200)).await;
    let relay = env.start_relay().await;
    for i in 0..4 {
        let id = format!("slow-{i}");
        buy(&env, &id, &slow.url("/slow")).await;
    }
    slow.until(WAIT, |s| s.len() == 2).await;
    let fast_from = Instant::now();
    for i in 0..3 {
        let id = format!("fast-{i}");
        buy(&env, &id, &fast.url("/fast")).await;
    }
    let got = fast.until(WAIT, |s| delivered(s) == 3).await;
    assert_eq!(delivered(&got), 3);
    let slow_seen = slow.seen();
    assert_eq!(
        slow_seen.len(),
        2,
        "the slow destination holds its cap of 2 in flight, no more"
    );
    assert!(
        got.iter()
            .all(|s| s.at.duration_since(slow_seen[0].at) < Duration::from_secs(10)),
        "the fast receiver got everything while the slow one still held its first answers ({:?} after publishing)",
        fast_from.elapsed()
    );
    relay.stop().await;
    env.cleanup().await;
}

#[tokio::test]
async fn two_signatures_during_a_rotation_each_verify_with_their_own_secret() {
    let mut env = TestEnv::new().await;
    let new = "whsec_dGhpcyBpcyBhIG5ldyAzMi1ieXRlIHNlY3JldCEhIQ==";
    env.config.secrets.webhook_signing_secret = format!("{new} {SECRET}");
    let receiver = Receiver::start("127.0.0.2", vec![], Answer::status(200)).await;
    let relay = env.start_relay().await;
    buy(&env, "rot-1", &receiver.url("/r")).await;
    let seen = receiver.until(WAIT, |s| delivered(s) == 1).await;
    let header = seen[0].headers["webhook-signature"].to_str().unwrap();
    assert_eq!(header.split(' ').count(), 2, "{header}");
    // The current secret signs first.
    let h = |n: &str| seen[0].headers[n].to_str().unwrap().to_string();
    let first = header.split(' ').next().unwrap();
    assert!(
        voucher_relay::webhook::SigningKey::parse(new)
            .unwrap()
            .verify(
                &h("webhook-id"),
                h("webhook-timestamp").parse().unwrap(),
                &seen[0].body,
                first
            ),
        "the first signature is the current secret's"
    );
    assert!(seen[0].verifies_with(new));
    assert!(seen[0].verifies_with(SECRET));
    assert!(!seen[0].verifies_with("whsec_c29tZSBvdGhlciBzZWNyZXQgb2YgMzIgYnl0ZXMhIQ=="));
    relay.stop().await;
    env.cleanup().await;
}

#[tokio::test]
async fn callbacks_in_flight_at_a_sigkill_are_delivered_afterwards() {
    if !crate::harness::restarts_allowed() {
        return;
    }
    let mut env = TestEnv::new().await;
    // A short timeout keeps the dead process's claims short (timeout + 5 s).
    env.config_text = env
        .config_text
        .replace("\ntimeout_ms = 15000", "\ntimeout_ms = 3000");
    assert!(
        env.config_text.contains("\ntimeout_ms = 3000"),
        "test config rewrite"
    );
    let receiver = Receiver::start(
        "127.0.0.2",
        vec![],
        Answer::status(200).after(Duration::from_secs(2)),
    )
    .await;
    let mut child = env.spawn_relay_process().await;
    for i in 0..5 {
        let id = format!("kill-{i}");
        buy(&env, &id, &receiver.url("/k")).await;
    }
    receiver.until(WAIT, |s| s.len() == 5).await;
    child.kill().expect("SIGKILL");
    let _ = child.wait();
    receiver.set_default(Answer::status(200));
    let mut child = env.spawn_relay_process().await;
    let db = env.db().await;
    let delivered_rows = count_until(
        &db,
        "SELECT count(*) FROM outbox WHERE channel = 'callback' AND delivered_at IS NOT NULL",
        5,
    )
    .await;
    let _ = child.kill();
    let _ = child.wait();
    assert_eq!(
        delivered_rows, 5,
        "each callback in flight is delivered afterwards"
    );
    let seen = receiver.seen();
    let mut ids: Vec<String> = seen.iter().map(Seen::webhook_id).collect();
    ids.sort();
    ids.dedup();
    assert_eq!(ids.len(), 5, "duplicates carry the same webhook-id");
    assert!(seen.iter().all(|s| s.verifies_with(SECRET)));
    env.cleanup().await;
}

#[tokio::test]
async fn an_open_circuit_holds_deliveries_without_using_their_retries() {
    let mut env = TestEnv::new().await;
    env.config.webhook.circuit_failures = 2;
    env.config.webhook.circuit_open_ms = 1500;
    env.config.webhook.per_destination_concurrency = 1;
    let receiver = Receiver::start("127.0.0.2", vec![], Answer::status(503)).await;
    let relay = env.start_relay().await;
    let mut events = env.event_queue("#").await;
    for i in 0..3 {
        let id = format!("cir-{i}");
        buy(&env, &id, &receiver.url("/c")).await;
    }
    crate::harness::next_outcomes(&mut events, 3, WAIT).await;
    receiver.until(WAIT, |s| s.len() >= 2).await;
    // Open: for the next second nothing is tried, and no delivery has used up its schedule.
    tokio::time::sleep(Duration::from_millis(1000)).await;
    let db = env.db().await;
    let seen = receiver.seen().len();
    assert!(
        seen <= 3,
        "the open circuit holds deliveries back ({seen} requests)"
    );
    let dead: i64 = scalar(&db, "SELECT count(*) FROM outbox WHERE dead_at IS NOT NULL").await;
    assert_eq!(
        dead, 0,
        "nothing burned through its retries while the circuit was open"
    );
    receiver.set_default(Answer::status(200));
    let got = receiver.until(WAIT, |s| delivered(s) == 3).await;
    assert_eq!(
        delivered(&got),
        3,
        "the half-open probe succeeds and the rest follow"
    );
    let open: i64 = scalar(
        &db,
        "SELECT count(*) FROM callback_destinations WHERE circuit_open_until IS NOT NULL OR consecutive_failures > 0",
    )
    .await;
    assert_eq!(open, 0, "a success closes the circuit");
    relay.stop().await;
    env.cleanup().await;
}
