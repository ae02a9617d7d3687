//! Electrum through the relay: every operation, dual messaging, and store-and-forward
//! reversals under the sandbox's faults, a broker restart and a killed worker.

use std::time::Duration;

use serde_json::{Value, json};
use voucher_relay::broker::reply::ReplyQueue;
use voucher_relay::command::{Outcome, Status};
use voucher_relay::providers::electrum::sandbox::{Fault, Operation};
use voucher_relay::workers::Relay;

use crate::harness::{
    TestEnv, next_outcomes, purchase, restart_broker, restart_postgres, restarts_allowed, scalar,
};

const WAIT: Duration = Duration::from_secs(60);
/// How many times the test's reversal has been tried so far.
const REVERSAL_ATTEMPTS: &str =
    "SELECT COALESCE(max(attempts), 0)::int8 FROM advices WHERE kind = 'reversal'";

pub(crate) fn originator() -> Value {
    json!({
        "institution": {"id": "11111111", "name": "Buy Stuff Shop"},
        "terminalId": "term0001",
        "merchant": {"merchantType": "4444", "merchantId": "merchant1234567",
            "merchantName": {"name": "Buy Stuff Shop", "city": "Cape Town", "region": "WP", "country": "ZA"}}
    })
}

fn command(kind: &str, id: &str, params: Value) -> Value {
    json!({"command_id": id, "source": "pos-e", "kind": kind, "provider": "electrum", "params": params})
}

pub(crate) fn provision(id: &str) -> Value {
    command(
        "provision",
        id,
        json!({"originator": originator(), "amount_minor": 1000, "currency": "710"}),
    )
}

pub(crate) fn redeem(id: &str, code: &str) -> Value {
    command(
        "redeem",
        id,
        json!({"originator": originator(), "voucher_code": code}),
    )
}

/// One command and its outcome, through the reply queue.
pub(crate) struct Client {
    pub(crate) reply_to: String,
    pub(crate) replies: ReplyQueue,
}

impl Client {
    pub(crate) async fn new(env: &TestEnv) -> Client {
        let (reply_to, replies) = env.reply_queue().await;
        Client { reply_to, replies }
    }

    pub(crate) async fn run(&mut self, env: &TestEnv, cmd: &Value) -> Outcome {
        let id = cmd["command_id"].as_str().unwrap();
        env.publish(cmd, Some(&self.reply_to), id).await;
        let (corr, o) = next_outcomes(&mut self.replies, 1, WAIT).await.remove(0);
        assert_eq!(corr, id);
        o
    }
}

/// Waits until every advice of `command_id` is settled; returns their (kind, operation,
/// final status, attempts) in order.
pub(crate) async fn settled_advices(
    env: &TestEnv,
    command_id: &str,
) -> Vec<(String, String, i32, i32)> {
    let db = env.db().await;
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        let rows = db
            .query(
                "SELECT a.kind, a.operation, a.final_status, a.attempts, a.state
                 FROM advices a JOIN transactions t ON t.id = a.transaction_id
                 WHERE t.command_id = $1 ORDER BY a.seq",
                &[&command_id],
            )
            .await
            .unwrap();
        if rows.iter().all(|r| r.get::<_, &str>(4) == "done") {
            return rows
                .iter()
                .map(|r| {
                    (
                        r.get(0),
                        r.get(1),
                        r.get::<_, Option<i32>>(2).unwrap_or(0),
                        r.get(3),
                    )
                })
                .collect();
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "advices of {command_id} never settled"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Waits until the number `sql` returns reaches `at_least`.
pub(crate) async fn until(db: &tokio_postgres::Client, sql: &str, at_least: i64, what: &str) {
    let deadline = tokio::time::Instant::now() + WAIT;
    while scalar::<i64>(db, sql).await < at_least {
        assert!(tokio::time::Instant::now() < deadline, "{what}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// The next redemption times out after the sandbox applied it, and its reversal is then
/// answered 503 `reversal_503s` times before the real answer.
pub(crate) fn time_out_next_redemption(env: &TestEnv, reversal_503s: u32) {
    env.electrum
        .inject(Operation::Redeem, Fault::TimeoutAfterEffect, 1);
    if reversal_503s > 0 {
        env.electrum.inject(
            Operation::RedeemReversal,
            Fault::ErrorBeforeEffect(503),
            reversal_503s,
        );
    }
}

/// Provisions a voucher, waits for its confirmation, and returns its code.
pub(crate) async fn confirmed_voucher(env: &TestEnv, client: &mut Client, id: &str) -> String {
    let o = client.run(env, &provision(id)).await;
    assert_eq!(o.status, Status::Succeeded, "{o:?}");
    let advices = settled_advices(env, id).await;
    assert_eq!(
        advices,
        vec![("confirmation".into(), "provision".into(), 202, 1)]
    );
    o.result.unwrap()["voucher"]["code"]
        .as_str()
        .unwrap()
        .to_string()
}

#[tokio::test]
async fn voucher_lifecycle_with_dual_messaging() {
    let env = TestEnv::new().await;
    let relay = env.start_relay().await;
    let mut c = Client::new(&env).await;
    let code = confirmed_voucher(&env, &mut c, "p-1").await;

    let o = c
        .run(
            &env,
            &command("lookup", "l-1", json!({"voucher_code": code})),
        )
        .await;
    assert_eq!(o.status, Status::Succeeded, "{o:?}");

    let o = c.run(&env, &redeem("r-1", &code)).await;
    assert_eq!(o.status, Status::Succeeded, "{o:?}");
    let redemption_id = o.result.unwrap()["request_id"]
        .as_str()
        .unwrap()
        .to_string();
    assert_eq!(
        settled_advices(&env, "r-1").await,
        vec![("confirmation".into(), "redeem".into(), 202, 1)]
    );
    // The same command again: the stored outcome, no second redemption.
    let again = c.run(&env, &redeem("r-1", &code)).await;
    assert_eq!(again.event_id, o.event_id);
    // A second redemption of a redeemed voucher is declined with Electrum's errorType.
    let o = c.run(&env, &redeem("r-2", &code)).await;
    assert_eq!(o.status, Status::Declined);
    assert_eq!(
        o.error.unwrap().provider_code.as_deref(),
        Some("VOUCHER_ALREADY_REDEEMED")
    );

    let o = c
        .run(
            &env,
            &command(
                "lookup_redemption",
                "lr-1",
                json!({"request_id": redemption_id}),
            ),
        )
        .await;
    assert_eq!(o.status, Status::Succeeded, "{o:?}");

    let o = c
        .run(
            &env,
            &command(
                "refund",
                "f-1",
                json!({"originator": originator(), "voucher_code": code}),
            ),
        )
        .await;
    assert_eq!(o.status, Status::Succeeded, "{o:?}");
    settled_advices(&env, "f-1").await;
    // A confirmed refund makes the voucher redeemable again.
    let o = c.run(&env, &redeem("r-3", &code)).await;
    assert_eq!(o.status, Status::Succeeded, "{o:?}");

    // Voucher codes are masked in the exchange audit and sealed in the outcome.
    let db = env.db().await;
    let leaked: i64 = scalar(
        &db,
        &format!("SELECT count(*) FROM provider_exchanges WHERE request::text LIKE '%{code}%' OR response::text LIKE '%{code}%'"),
    )
    .await;
    assert_eq!(leaked, 0);
    relay.stop().await;
    env.cleanup().await;
}

/// The example: a redemption times out after the sandbox applied it; the reversal
/// gets 503 five times, then is accepted. The outcome is `reversed`, and the voucher can be
/// redeemed again by a new command.
#[tokio::test]
async fn timed_out_redemption_is_reversed_through_five_503s() {
    let env = TestEnv::new().await;
    let relay = env.start_relay().await;
    let mut c = Client::new(&env).await;
    let code = confirmed_voucher(&env, &mut c, "p-1").await;
    time_out_next_redemption(&env, 5);

    let o = c.run(&env, &redeem("r-1", &code)).await;
    assert_eq!(o.status, Status::Reversed, "{o:?}");
    assert_eq!(o.error.as_ref().unwrap().code, "reversed");
    assert_eq!(o.result.as_ref().unwrap()["reversal_reason"], "TIMEOUT");
    // Only the reversal: a confirmation never follows it.
    assert_eq!(
        settled_advices(&env, "r-1").await,
        vec![("reversal".into(), "redeem".into(), 202, 6)]
    );
    let db = env.db().await;
    let statuses: Vec<Option<i32>> = db
        .query(
            "SELECT e.status_code FROM provider_exchanges e JOIN transactions t ON t.id = e.transaction_id
             WHERE t.command_id = 'r-1' ORDER BY e.id",
            &[],
        )
        .await
        .unwrap()
        .iter()
        .map(|r| r.get(0))
        .collect();
    assert_eq!(
        statuses,
        vec![
            None,
            Some(503),
            Some(503),
            Some(503),
            Some(503),
            Some(503),
            Some(202)
        ],
        "the timed-out redemption, five 503s, then the accepted reversal"
    );
    // How long the reversal waited before each attempt (backoff with jitter, via the tiers).
    let gaps: Vec<f64> = db
        .query(
            "SELECT EXTRACT(EPOCH FROM e.created_at - lag(e.created_at) OVER (ORDER BY e.id))::float8
             FROM provider_exchanges e JOIN transactions t ON t.id = e.transaction_id
             WHERE t.command_id = 'r-1' AND e.operation = 'redeem_reversal' ORDER BY e.id",
            &[],
        )
        .await
        .unwrap()
        .iter()
        .filter_map(|r| r.get::<_, Option<f64>>(0))
        .collect();
    eprintln!("reversal waits between attempts (s): {gaps:?}");
    assert_eq!(gaps.len(), 5);

    let o = c.run(&env, &redeem("r-2", &code)).await;
    assert_eq!(
        o.status,
        Status::Succeeded,
        "redeemable again after the reversal: {o:?}"
    );
    relay.stop().await;
    env.cleanup().await;
}

/// A 503 before the effect: the redemption is unknown to the relay, so it is reversed; the
/// provider never had it (404), so nothing was applied and the redemption is sent again
/// under a fresh request id: it succeeds, one redemption applied.
#[tokio::test]
async fn unreceived_redemption_is_sent_again_and_succeeds() {
    let env = TestEnv::new().await;
    let relay = env.start_relay().await;
    let mut c = Client::new(&env).await;
    let code = confirmed_voucher(&env, &mut c, "p-1").await;
    env.electrum
        .inject(Operation::Redeem, Fault::ErrorBeforeEffect(503), 1);
    let o = c.run(&env, &redeem("r-1", &code)).await;
    assert_eq!(o.status, Status::Succeeded, "{o:?}");
    let stats = env.electrum.stats();
    assert_eq!(
        stats.calls[&Operation::Redeem],
        2,
        "the 503, then the redemption"
    );
    assert_eq!(stats.effects[&Operation::Redeem], 1, "redeemed once");
    let db = env.db().await;
    let row = db
        .query_one(
            "SELECT id, request_id, resends, prior_refs FROM transactions WHERE command_id = 'r-1'",
            &[],
        )
        .await
        .unwrap();
    let (id, request_id): (uuid::Uuid, Option<uuid::Uuid>) = (row.get(0), row.get(1));
    assert_eq!(row.get::<_, i32>(2), 1);
    assert_ne!(request_id, Some(id), "a fresh request id");
    let prior: Value = row.get(3);
    assert_eq!(prior[0]["request_id"], json!(id.to_string()));
    // The voucher is spent now: a second redemption is refused.
    let o = c.run(&env, &redeem("r-2", &code)).await;
    assert_eq!(o.status, Status::Declined, "{o:?}");
    relay.stop().await;
    env.cleanup().await;
}

/// With no resend budget, the redemption the provider never had (its reversal found no
/// record) ends `failed` with that reason.
#[tokio::test]
async fn unreceived_redemption_fails_with_the_reason_past_the_budget() {
    let env = TestEnv::new().await;
    let mut config = env.config.clone();
    config.recovery.resend_budget = 0;
    let relay = Relay::start(config).await.unwrap();
    let mut c = Client::new(&env).await;
    let code = confirmed_voucher(&env, &mut c, "p-1").await;
    env.electrum
        .inject(Operation::Redeem, Fault::ErrorBeforeEffect(503), 1);
    let o = c.run(&env, &redeem("r-1", &code)).await;
    assert_eq!(o.status, Status::Failed, "{o:?}");
    let e = o.error.unwrap();
    assert_eq!(e.code, "not_received");
    assert_eq!(e.provider_code.as_deref(), Some("UNABLE_TO_LOCATE_RECORD"));
    assert_eq!(o.result.unwrap()["reversal_reason"], "RESPONSE_NOT_FINAL");
    // Nothing was redeemed: a new command redeems it.
    let o = c.run(&env, &redeem("r-2", &code)).await;
    assert_eq!(o.status, Status::Succeeded, "{o:?}");
    relay.stop().await;
    env.cleanup().await;
}

/// A reversal that never gets a final answer is parked when its budget is spent: on
/// `advice.parked`, with what is needed to replay it, and the command waits in `reversing`.
/// An operator lists it and replays it with the binary; then it completes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reversal_past_its_budget_is_parked_and_replayed() {
    let env = TestEnv::new().await;
    let mut config = env.config.clone();
    config.providers.electrum.advice_budget_ms = 1500;
    let relay = Relay::start(config).await.unwrap();
    let mut c = Client::new(&env).await;
    let code = confirmed_voucher(&env, &mut c, "p-1").await;
    // More 503s than attempts fit in the 1.5 s budget (each waits at least one 200 ms tier).
    time_out_next_redemption(&env, 12);
    env.publish(&redeem("r-1", &code), Some(&c.reply_to), "r-1")
        .await;
    let db = env.db().await;
    until(
        &db,
        "SELECT count(*) FROM advices WHERE state = 'parked'",
        1,
        "never parked",
    )
    .await;
    // The row is parked just before its record is published: wait for the record.
    let deadline = tokio::time::Instant::now() + WAIT;
    let mut parked = env.drain("advice.parked").await;
    while parked.is_empty() && tokio::time::Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(50)).await;
        parked = env.drain("advice.parked").await;
    }
    assert_eq!(parked.len(), 1);
    let record: Value = serde_json::from_slice(&parked[0].delivery.data).unwrap();
    assert_eq!(record["kind"], "reversal");
    assert_eq!(record["operation"], "redeem");
    assert_eq!(record["command_id"], "r-1");
    assert_eq!(record["body"]["reversalReason"], "TIMEOUT");
    assert!(record["attempts"].as_i64().unwrap() >= 2);
    let state: String = scalar(
        &db,
        "SELECT state FROM transactions WHERE command_id = 'r-1'",
    )
    .await;
    assert_eq!(
        state, "reversing",
        "no outcome is invented for a parked reversal"
    );

    let advice_id = record["advice_id"].as_str().unwrap().to_string();
    let listed = operator(&env, &["advices", "parked"]);
    assert!(listed.contains(&advice_id), "{listed}");
    let replayed = operator(&env, &["advices", "replay", &advice_id]);
    assert!(replayed.contains("pending again"), "{replayed}");
    let (_, o) = next_outcomes(&mut c.replies, 1, WAIT).await.remove(0);
    assert_eq!(o.status, Status::Reversed, "after the replay: {o:?}");
    let (_, _, status, attempts) = settled_advices(&env, "r-1").await.remove(0);
    assert_eq!(status, 202);
    assert!(attempts < 13, "the replay starts a fresh count: {attempts}");
    let sent: i64 = scalar(
        &db,
        "SELECT count(*) FROM provider_exchanges WHERE operation = 'redeem_reversal'",
    )
    .await;
    assert_eq!(sent, 13, "twelve 503s then the acceptance, all on record");
    relay.stop().await;
    env.cleanup().await;
}

/// Runs the binary as an operator would, on this test's configuration; returns its stdout.
fn operator(env: &TestEnv, args: &[&str]) -> String {
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_voucher-relay"))
        .arg("--config")
        .arg(env.config_file())
        .args(args)
        .env("DATABASE_URL", &env.config.database.url)
        .env("AMQP_URL", &env.config.broker.url)
        .output()
        .expect("binary runs");
    let text = String::from_utf8_lossy(&out.stdout).to_string();
    assert!(
        out.status.success(),
        "{args:?}: {text}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    text
}

/// A reversal in flight while RabbitMQ restarts still completes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reversal_in_flight_survives_a_broker_restart() {
    if !restarts_allowed() {
        return;
    }
    let env = TestEnv::exclusive(Default::default()).await;
    let relay = env.start_relay().await;
    let mut c = Client::new(&env).await;
    let code = confirmed_voucher(&env, &mut c, "p-1").await;
    time_out_next_redemption(&env, 6);
    let mut cmd = redeem("r-1", &code);
    cmd["callback_url"] = json!(env.hook_url);
    env.publish(&cmd, None, "r-1").await;
    let db = env.db().await;
    until(&db, REVERSAL_ATTEMPTS, 1, "no reversal attempt").await;
    // The relay keeps running (and retrying) while the broker is away.
    tokio::task::spawn_blocking(restart_broker).await.unwrap();
    let hooks = env
        .hooks_until(Duration::from_secs(120), |h| !h.is_empty())
        .await;
    assert_eq!(hooks.len(), 1, "one outcome after the restart");
    assert_eq!(hooks[0].body["status"], "reversed", "{:?}", hooks[0].body);
    assert!(hooks[0].signature_ok);
    let (kind, _, status, attempts) = settled_advices(&env, "r-1").await.remove(0);
    assert_eq!((kind.as_str(), status), ("reversal", 202));
    assert!(attempts >= 7, "six 503s then the acceptance: {attempts}");
    relay.stop().await;
    env.cleanup().await;
}

/// A worker killed while its reversal is being repeated: another worker finishes it.
#[tokio::test]
async fn reversal_survives_a_killed_worker() {
    let env = TestEnv::new().await;
    let mut c = Client::new(&env).await;
    let mut worker = env.spawn_relay_process().await;
    let code = confirmed_voucher(&env, &mut c, "p-1").await;
    time_out_next_redemption(&env, 4);
    env.publish(&redeem("r-1", &code), Some(&c.reply_to), "r-1")
        .await;
    let db = env.db().await;
    until(&db, REVERSAL_ATTEMPTS, 2, "no reversal attempt").await;
    worker.kill().unwrap();
    worker.wait().unwrap();
    let relay = env.start_relay().await;
    let (_, o) = next_outcomes(&mut c.replies, 1, Duration::from_secs(120))
        .await
        .remove(0);
    assert_eq!(o.status, Status::Reversed, "{o:?}");
    relay.stop().await;
    env.cleanup().await;
}

/// Single messaging for redemptions: no confirmation is sent (and the sandbox, like
/// Electrum's test pack, then refuses a refund of the unconfirmed redemption).
#[tokio::test]
async fn single_messaging_sends_no_confirmation() {
    let env = TestEnv::new().await;
    let mut config = env.config.clone();
    config.providers.electrum.messaging_by_operation.insert(
        "redeem".into(),
        voucher_relay::providers::electrum::Messaging::Single,
    );
    let relay = Relay::start(config).await.unwrap();
    let mut c = Client::new(&env).await;
    let code = confirmed_voucher(&env, &mut c, "p-1").await;
    let o = c.run(&env, &redeem("r-1", &code)).await;
    assert_eq!(o.status, Status::Succeeded, "{o:?}");
    assert!(settled_advices(&env, "r-1").await.is_empty());
    let o = c
        .run(
            &env,
            &command(
                "refund",
                "f-1",
                json!({"originator": originator(), "voucher_code": code}),
            ),
        )
        .await;
    assert_eq!(o.status, Status::Declined);
    assert_eq!(
        o.error.unwrap().provider_code.as_deref(),
        Some("REDEMPTION_NOT_CONFIRMED")
    );
    relay.stop().await;
    env.cleanup().await;
}

/// A voucher code the client chose (`voucher_code`, SUV interface 1.2.0) is sent as
/// `voucher.code`, provisioned and echoed, masked in the exchange record, and redeemable; a
/// second provision with the same code is declined as `voucher_code_taken`.
#[tokio::test]
async fn provision_with_a_client_chosen_code() {
    let env = TestEnv::new().await;
    let relay = env.start_relay().await;
    let mut c = Client::new(&env).await;
    let chosen = "7777000011112222";
    let cmd = command(
        "provision",
        "p-own",
        json!({"originator": originator(), "amount_minor": 1000, "currency": "710", "voucher_code": chosen}),
    );
    let o = c.run(&env, &cmd).await;
    assert_eq!(o.status, Status::Succeeded, "{o:?}");
    assert_eq!(o.result.unwrap()["voucher"]["code"], chosen);
    settled_advices(&env, "p-own").await;
    let db = env.db().await;
    let in_clear: i64 = scalar(
        &db,
        &format!("SELECT count(*) FROM provider_exchanges WHERE request::text LIKE '%{chosen}%' OR response::text LIKE '%{chosen}%'"),
    )
    .await;
    assert_eq!(in_clear, 0, "the chosen code is masked in the audit");
    let o = c.run(&env, &redeem("r-own", chosen)).await;
    assert_eq!(o.status, Status::Succeeded, "{o:?}");
    // The same code again: Electrum answers DUPLICATE_RECORD, which can only mean it is taken.
    let again = command(
        "provision",
        "p-own-2",
        json!({"originator": originator(), "voucher_code": chosen}),
    );
    let o = c.run(&env, &again).await;
    assert_eq!(o.status, Status::Declined, "{o:?}");
    let e = o.error.unwrap();
    assert_eq!(e.code, "voucher_code_taken");
    assert_eq!(e.provider_code.as_deref(), Some("DUPLICATE_RECORD"));
    relay.stop().await;
    env.cleanup().await;
}

/// A relay that runs only Electrum (`enabled = false` for CSQ) serves Electrum as before,
/// and leaves CSQ commands in CSQ's queue for a relay process that runs CSQ: it neither
/// consumes nor rejects them.
#[tokio::test]
async fn a_relay_without_csq_leaves_csq_commands_queued() {
    let env = TestEnv::new().await;
    let mut config = env.config.clone();
    config.providers.csq.enabled = false;
    let relay = Relay::start(config).await.unwrap();
    let mut c = Client::new(&env).await;
    let code = confirmed_voucher(&env, &mut c, "p-1").await;
    let o = c.run(&env, &redeem("r-1", &code)).await;
    assert_eq!(o.status, Status::Succeeded, "{o:?}");
    env.publish(&purchase("csq-1", 1001, None), Some(&c.reply_to), "csq-1")
        .await;
    // Give a consumer, if there were one, ample time to take it.
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let waiting = env.drain("commands.csq").await;
    assert_eq!(waiting.len(), 1, "the CSQ command waits in its queue");
    assert_eq!(env.sandbox.stats().purchases_applied, 0);
    let db = env.db().await;
    let taken: i64 = scalar(
        &db,
        "SELECT count(*) FROM transactions WHERE command_id = 'csq-1'",
    )
    .await;
    assert_eq!(taken, 0);
    relay.stop().await;
    env.cleanup().await;
}

/// Bad Electrum commands are rejected with their codes, never sent.
#[tokio::test]
async fn bad_electrum_commands_are_rejected() {
    let env = TestEnv::new().await;
    let relay = env.start_relay().await;
    let mut c = Client::new(&env).await;
    let cases = [
        (
            command("redeem", "b-1", json!({"originator": originator()})),
            "missing_field",
        ),
        (
            command(
                "provision",
                "b-2",
                json!({"originator": originator(), "amount_minor": 10.5, "currency": "710"}),
            ),
            "amount_not_integer",
        ),
        (
            command(
                "provision",
                "b-3",
                json!({"originator": {"terminalId": "t"}}),
            ),
            "invalid_field",
        ),
        (
            command(
                "lookup_redemption",
                "b-4",
                json!({"request_id": "not-a-uuid"}),
            ),
            "invalid_field",
        ),
        (command("activate", "b-5", json!({})), "unknown_kind"),
        (
            command(
                "redeem",
                "b-6",
                json!({"originator": originator(), "voucher_code": "1", "pin": "1234"}),
            ),
            "unknown_param",
        ),
    ];
    for (cmd, code) in cases {
        let o = c.run(&env, &cmd).await;
        assert_eq!(o.status, Status::Rejected);
        assert_eq!(o.error.unwrap().code, code, "{cmd}");
    }
    // One key, two operations: the second is refused, the first keeps its outcome.
    let first = c
        .run(
            &env,
            &command("lookup", "k-1", json!({"voucher_code": "000000000000"})),
        )
        .await;
    assert_eq!(first.status, Status::Declined, "no such voucher: {first:?}");
    let o = c.run(&env, &redeem("k-1", "000000000000")).await;
    assert_eq!(o.status, Status::Rejected);
    assert_eq!(o.error.unwrap().code, "idempotency_key_reused");
    assert_eq!(
        env.electrum.stats().calls_of(Operation::Redeem),
        0,
        "never sent"
    );
    relay.stop().await;
    env.cleanup().await;
}

/// Measurement, not a check of speed: with the shipped delay tiers and backoff (2 s doubling,
/// jittered), how long a reversal waits before each of its attempts. Run with
/// `cargo test --test it measure_reversal_waits -- --ignored --nocapture` (about a minute).
#[tokio::test]
#[ignore]
async fn measure_reversal_waits_with_shipped_tiers() {
    let env = TestEnv::new().await;
    let shipped = voucher_relay::config::Config::from_toml(
        include_str!("../../queues.toml"),
        "queues.toml",
        &std::collections::BTreeMap::from([
            (
                "WEBHOOK_SIGNING_SECRET".to_string(),
                crate::harness::SECRET.to_string(),
            ),
            ("CSQ_USER".to_string(), "u".to_string()),
            ("CSQ_PASSWORD".to_string(), "p".to_string()),
            ("ELECTRUM_PASSWORD".to_string(), "p".to_string()),
        ]),
        true,
    )
    .unwrap();
    let mut config = env.config.clone();
    config.delay_tiers = shipped.delay_tiers.clone();
    config.providers.electrum.advice_backoff_base_ms =
        shipped.providers.electrum.advice_backoff_base_ms;
    config.providers.electrum.advice_backoff_cap_ms =
        shipped.providers.electrum.advice_backoff_cap_ms;
    let relay = Relay::start(config).await.unwrap();
    let mut c = Client::new(&env).await;
    let code = confirmed_voucher(&env, &mut c, "p-1").await;
    time_out_next_redemption(&env, 5);
    let o = c.run(&env, &redeem("r-1", &code)).await;
    assert_eq!(o.status, Status::Reversed, "{o:?}");
    let db = env.db().await;
    let rows = db
        .query(
            "SELECT e.status_code, EXTRACT(EPOCH FROM e.created_at - lag(e.created_at) OVER (ORDER BY e.id))::float8
             FROM provider_exchanges e JOIN transactions t ON t.id = e.transaction_id
             WHERE t.command_id = 'r-1' ORDER BY e.id",
            &[],
        )
        .await
        .unwrap();
    for (i, r) in rows.iter().enumerate().skip(1) {
        let status: Option<i32> = r.get(0);
        let gap: Option<f64> = r.get(1);
        eprintln!(
            "reversal attempt {i}: waited {:.2} s, answer {status:?}",
            gap.unwrap_or(0.0)
        );
    }
    relay.stop().await;
    env.cleanup().await;
}

/// A reversal in flight while PostgreSQL stops and starts again still completes: every
/// step is retried while its message stays unacked, and the advice row is the truth.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reversal_in_flight_survives_a_postgres_restart() {
    if !restarts_allowed() {
        return;
    }
    let env = TestEnv::exclusive(Default::default()).await;
    let relay = env.start_relay().await;
    let mut c = Client::new(&env).await;
    let code = confirmed_voucher(&env, &mut c, "p-1").await;
    time_out_next_redemption(&env, 4);
    env.publish(&redeem("r-1", &code), Some(&c.reply_to), "r-1")
        .await;
    {
        let db = env.db().await;
        until(&db, REVERSAL_ATTEMPTS, 1, "no reversal attempt").await;
    }
    // The relay keeps running (and retrying) while PostgreSQL is away.
    tokio::task::spawn_blocking(restart_postgres).await.unwrap();
    let (_, o) = next_outcomes(&mut c.replies, 1, Duration::from_secs(180))
        .await
        .remove(0);
    assert_eq!(o.status, Status::Reversed, "{o:?}");
    let (kind, _, status, attempts) = settled_advices(&env, "r-1").await.remove(0);
    assert_eq!((kind.as_str(), status), ("reversal", 202));
    assert!(attempts >= 5, "four 503s then the acceptance: {attempts}");
    relay.stop().await;
    env.cleanup().await;
}

/// `lookup_redemption` of a redemption Electrum is still processing (its answer held) is
/// asked again until the processing deadline. Then a redemption the relay itself sent is
/// left to its own command (which reverses it), while one sent by another system of the
/// same client is reversed by the lookup, whose outcome is the reversal's.
#[tokio::test]
async fn redemption_still_processing_past_the_deadline() {
    let env = TestEnv::new().await;
    let mut config = env.config.clone();
    config.providers.electrum.processing_deadline_ms = 100;
    let relay = Relay::start(config).await.unwrap();
    let mut c = Client::new(&env).await;
    let code = confirmed_voucher(&env, &mut c, "p-1").await;

    // The relay's own redemption.
    time_out_next_redemption(&env, 0);
    env.publish(&redeem("r-1", &code), Some(&c.reply_to), "r-1")
        .await;
    let db = env.db().await;
    let taken_in = "SELECT count(*) FROM transactions WHERE command_id = 'r-1'";
    until(&db, taken_in, 1, "redeem never taken in").await;
    let request_id: uuid::Uuid =
        scalar(&db, "SELECT id FROM transactions WHERE command_id = 'r-1'").await;
    let lookup = |id: &str, request_id: uuid::Uuid| {
        command(
            "lookup_redemption",
            id,
            json!({"request_id": request_id.to_string()}),
        )
    };
    env.publish(&lookup("lr-1", request_id), Some(&c.reply_to), "lr-1")
        .await;
    let mut got = next_outcomes(&mut c.replies, 2, WAIT).await;
    got.sort_by(|a, b| a.0.cmp(&b.0));
    let (lr, r) = (&got[0].1, &got[1].1);
    assert_eq!(r.status, Status::Reversed, "{r:?}");
    assert_eq!(lr.status, Status::Failed, "{lr:?}");
    assert_eq!(lr.error.as_ref().unwrap().code, "still_processing");
    let lookups: i64 = scalar(
        &db,
        "SELECT count(*) FROM provider_exchanges WHERE operation = 'lookup_redemption'",
    )
    .await;
    assert!(lookups >= 2, "asked again before giving up: {lookups}");

    // A redemption another system of the same client sent straight to Electrum.
    let code = confirmed_voucher(&env, &mut c, "p-2").await;
    time_out_next_redemption(&env, 0);
    let foreign = uuid::Uuid::now_v7();
    let body = json!({
        "id": foreign, "time": "2026-11-22T10:00:00.000Z", "originator": originator(),
        "client": {"id": env.config.providers.electrum.client_id, "name": "another POS"},
        "voucher": {"code": code}
    });
    let url = format!(
        "{}/redemptions",
        env.config.providers.electrum.http.base_url
    );
    let user = env.config.providers.electrum.client_id.clone();
    let sent = tokio::spawn(async move {
        let http = reqwest::Client::new();
        let _ = http
            .post(url)
            .basic_auth(user, Some("x"))
            .json(&body)
            .timeout(Duration::from_millis(500))
            .send()
            .await;
    });
    sent.await.unwrap();
    let o = c.run(&env, &lookup("lr-2", foreign)).await;
    assert_eq!(o.status, Status::Reversed, "{o:?}");
    let result = o.result.unwrap();
    assert_eq!(result["reversal_reason"], "RESPONSE_NOT_FINAL");
    assert_eq!(result["request_id"], foreign.to_string());
    // The voucher is free again.
    let o = c.run(&env, &redeem("r-3", &code)).await;
    assert_eq!(o.status, Status::Succeeded, "{o:?}");
    relay.stop().await;
    env.cleanup().await;
}

/// Dual messaging under faults: the provision's outcome goes out at once, and its
/// confirmation is repeated through three 503s until Electrum accepts it; only then is the
/// voucher redeemable.
#[tokio::test]
async fn confirmation_is_repeated_until_accepted() {
    let env = TestEnv::new().await;
    let relay = env.start_relay().await;
    let mut c = Client::new(&env).await;
    env.electrum.inject(
        Operation::ProvisionConfirmation,
        Fault::ErrorBeforeEffect(503),
        3,
    );
    let o = c.run(&env, &provision("p-1")).await;
    assert_eq!(o.status, Status::Succeeded, "{o:?}");
    let code = o.result.unwrap()["voucher"]["code"]
        .as_str()
        .unwrap()
        .to_string();
    assert_eq!(
        settled_advices(&env, "p-1").await,
        vec![("confirmation".into(), "provision".into(), 202, 4)]
    );
    let db = env.db().await;
    let body: Value = scalar(&db, "SELECT body FROM advices").await;
    assert_eq!(
        body["tenders"][0]["amount"],
        json!({"amount": 1000, "currency": "710"})
    );
    assert!(body.get("reversalReason").is_none());
    let o = c.run(&env, &redeem("r-1", &code)).await;
    assert_eq!(o.status, Status::Succeeded, "{o:?}");
    relay.stop().await;
    env.cleanup().await;
}

/// Electrum refusing the relay's credentials is the relay's fault, not an answer about the
/// request: the reversal is repeated (never settled or parked), and once a relay with the
/// right client id runs, it completes.
#[tokio::test]
async fn refused_credentials_keep_the_reversal_going() {
    let env = TestEnv::new().await;
    let relay = env.start_relay().await;
    let mut c = Client::new(&env).await;
    let code = confirmed_voucher(&env, &mut c, "p-1").await;
    // Holds the reversal back until the misconfigured relay takes over.
    time_out_next_redemption(&env, 1);
    env.publish(&redeem("r-1", &code), Some(&c.reply_to), "r-1")
        .await;
    let db = env.db().await;
    until(&db, REVERSAL_ATTEMPTS, 1, "no reversal attempt").await;
    relay.stop().await;

    let mut wrong = env.config.clone();
    wrong.providers.electrum.client_id = "99999999".into();
    let relay = Relay::start(wrong).await.unwrap();
    let refused = "SELECT count(*) FROM provider_exchanges
                   WHERE operation = 'redeem_reversal' AND response->>'errorType' = 'AUTHENTICATION_ERROR'";
    until(
        &db,
        refused,
        2,
        "the wrong credentials were never refused twice",
    )
    .await;
    relay.stop().await;
    let state: String = scalar(&db, "SELECT state FROM advices WHERE kind = 'reversal'").await;
    assert_eq!(state, "pending", "neither settled nor parked");

    let relay = env.start_relay().await;
    let (_, o) = next_outcomes(&mut c.replies, 1, WAIT).await.remove(0);
    assert_eq!(o.status, Status::Reversed, "{o:?}");
    relay.stop().await;
    env.cleanup().await;
}

/// Electrum answers two provisions with 429 (no `Retry-After`): nothing was applied, the
/// relay slows Electrum's limiter down (1 s, then 2 s) and sends again; the third attempt
/// succeeds, with one provision applied. CSQ, another provider, keeps selling meanwhile.
#[tokio::test]
async fn a_provider_answering_429_is_slowed_down_not_failed() {
    let env = TestEnv::new().await;
    let relay = env.start_relay().await;
    let mut c = Client::new(&env).await;
    env.electrum
        .inject(Operation::Provision, Fault::ErrorBeforeEffect(429), 2);
    let o = c.run(&env, &provision("p-429")).await;
    assert_eq!(o.status, Status::Succeeded, "{o:?}");
    let stats = env.electrum.stats();
    assert_eq!(
        stats.calls[&Operation::Provision],
        3,
        "two 429s, then the sale"
    );
    assert_eq!(stats.effects[&Operation::Provision], 1, "one voucher");
    let db = env.db().await;
    let retried: i64 = scalar(
        &db,
        "SELECT count(*) FROM audit_trail WHERE from_state = 'sending' AND to_state = 'received'",
    )
    .await;
    assert_eq!(retried, 2, "each 429 handed the command back, unsent");
    let o = c.run(&env, &purchase("csq-beside-429", 1001, None)).await;
    assert_eq!(
        o.status,
        Status::Succeeded,
        "other providers are unaffected"
    );
    relay.stop().await;
    env.cleanup().await;
}
