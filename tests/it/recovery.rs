//! Crash recovery and resilience: a request that never arrived is sent again, a dead
//! process's work is taken over, and a broker restart, a PostgreSQL restart or a SIGTERM in
//! the middle of a batch ends with every command done exactly once.

use std::time::{Duration, Instant};

use serde_json::Value;
use voucher_relay::command::{Outcome, Status};
use voucher_relay::providers::csq::sandbox::{SandboxOptions, Stats};

use crate::harness::{
    TestEnv, audit_states, next_outcomes, purchase, restart_broker, restart_postgres,
    restarts_allowed, scalar,
};

const WAIT: Duration = Duration::from_secs(60);

/// Operator 1008 answers the first purchase call with a 503 before selling. CSQ then has no
/// record of the `localReference`, and once the request's timeout has passed that proves it
/// never arrived: the command is sent again under a fresh reference and succeeds. One
/// voucher, one outcome.
#[tokio::test]
async fn a_purchase_never_received_is_sent_again_and_succeeds() {
    let env = TestEnv::new().await;
    let relay = env.start_relay().await;
    let (reply_to, mut replies) = env.reply_queue().await;
    env.publish(&purchase("flaky-1", 1008, None), Some(&reply_to), "flaky")
        .await;
    let got = next_outcomes(&mut replies, 1, WAIT).await;
    let o = &got[0].1;
    assert_eq!(o.status, Status::Succeeded, "{o:?}");
    let stats = env.sandbox.stats();
    assert_eq!(stats.purchase_calls, 2, "sent twice");
    assert_eq!(stats.purchases_applied, 1, "one voucher");
    assert_eq!(
        audit_states(&env, "flaky-1").await,
        [
            "received",
            "sending",
            "unknown",
            "received",
            "sending",
            "completed"
        ]
    );
    let db = env.db().await;
    let row = db
        .query_one(
            "SELECT resends, local_reference, prior_refs FROM transactions WHERE command_id = 'flaky-1'",
            &[],
        )
        .await
        .unwrap();
    assert_eq!(row.get::<_, i32>(0), 1);
    let prior: Value = row.get(2);
    let first = prior[0]["local_reference"].as_i64().unwrap();
    assert_ne!(
        first,
        i64::from(row.get::<_, i32>(1)),
        "a fresh localReference"
    );
    // No second outcome arrives (the resent message registers no target of its own).
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert!(
        crate::harness::try_next_outcome(&mut replies, Duration::from_millis(300))
            .await
            .is_none()
    );
    relay.stop().await;
    env.cleanup().await;
}

/// A purchase from operator 1007, which answers 503 and never sells, on a relay with
/// `budget` resends: its outcome and the sandbox's counters.
async fn never_selling(budget: u32) -> (Outcome, Stats) {
    let env = TestEnv::new().await;
    let mut config = env.config.clone();
    config.recovery.resend_budget = budget;
    let relay = voucher_relay::workers::Relay::start(config).await.unwrap();
    let (reply_to, mut replies) = env.reply_queue().await;
    env.publish(&purchase("err-1", 1007, None), Some(&reply_to), "err")
        .await;
    let (_, o) = next_outcomes(&mut replies, 1, WAIT).await.remove(0);
    let stats = env.sandbox.stats();
    relay.stop().await;
    env.cleanup().await;
    assert_eq!(o.status, Status::Failed, "{o:?}");
    assert_eq!(o.error.as_ref().unwrap().code, "not_applied");
    assert_eq!(stats.purchases_applied, 0, "nothing was bought");
    (o, stats)
}

/// With no resend budget, once the request's timeout has passed with the provider never
/// having heard of the reference, the command fails and nothing was bought.
#[tokio::test]
async fn server_error_before_the_sale_ends_failed_not_applied() {
    let (_, stats) = never_selling(0).await;
    assert_eq!(stats.purchase_calls, 1);
    assert!(
        stats.additional_data_calls >= 1,
        "queried once the request's timeout had passed"
    );
}

/// Operator 1007 never sells: the command is sent again up to the budget, then ends
/// `failed` (`not_applied`) with every reference in its result.
#[tokio::test]
async fn never_received_after_the_budget_ends_failed_with_its_attempts() {
    let (o, stats) = never_selling(2).await;
    let result = o.result.expect("the attempts");
    assert_eq!(result["sends"], 3, "{result}");
    assert_eq!(result["attempts"].as_array().unwrap().len(), 3);
    assert_eq!(stats.purchase_calls, 3, "the first send and two resends");
}

/// Publishes `n` purchases (operator 1001) without a reply queue: the checks read the
/// database and the sandbox, which outlive a broker restart.
async fn publish_batch(env: &TestEnv, prefix: &str, n: usize) {
    for i in 0..n {
        env.publish(&purchase(&format!("{prefix}-{i}"), 1001, None), None, "")
            .await;
    }
}

/// Waits until `done` transactions are completed, reconnecting to PostgreSQL as needed.
async fn wait_completed(env: &TestEnv, at_least: i64, within: Duration) -> i64 {
    let deadline = Instant::now() + within;
    loop {
        let done =
            match tokio_postgres::connect(&env.config.database.url, tokio_postgres::NoTls).await {
                Ok((client, conn)) => {
                    tokio::spawn(conn);
                    client
                        .query_one(
                            "SELECT count(*) FROM transactions WHERE state = 'completed'",
                            &[],
                        )
                        .await
                        .map(|r| r.get::<_, i64>(0))
                        .unwrap_or(0)
                }
                Err(_) => 0,
            };
        if done >= at_least || Instant::now() > deadline {
            return done;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// Every one of `n` purchases succeeded once: one outcome, one voucher, one provider call.
async fn assert_each_once(env: &TestEnv, n: usize) {
    let db = env.db().await;
    let open: Vec<(String, String)> = db
        .query(
            "SELECT command_id, state FROM transactions WHERE state <> 'completed'",
            &[],
        )
        .await
        .unwrap()
        .iter()
        .map(|r| (r.get(0), r.get(1)))
        .collect();
    assert!(open.is_empty(), "still open: {open:?}");
    let succeeded: i64 = scalar(
        &db,
        "SELECT count(*) FROM transactions WHERE status = 'succeeded'",
    )
    .await;
    assert_eq!(succeeded as usize, n, "every purchase succeeded");
    let events: i64 = scalar(
        &db,
        "SELECT count(DISTINCT event_id) FROM outbox WHERE channel = 'event'",
    )
    .await;
    assert_eq!(events as usize, n, "one outcome each");
    let stats = env.sandbox.stats();
    assert_eq!(
        stats.purchases_applied as usize, n,
        "no voucher bought twice"
    );
}

/// A 200-purchase batch with `restart` run in its middle (after 30 are done), on a relay
/// that keeps running: every purchase succeeds once.
async fn batch_survives(prefix: &str, restart: fn()) {
    let env = TestEnv::exclusive(SandboxOptions::default()).await;
    let relay = env.start_relay().await;
    let n = 200;
    publish_batch(&env, prefix, n).await;
    let before = wait_completed(&env, 30, WAIT).await;
    tokio::task::spawn_blocking(restart).await.unwrap();
    let done = wait_completed(&env, n as i64, Duration::from_secs(120)).await;
    assert_eq!(done as usize, n, "{before} done before the restart");
    assert!((before as usize) < n, "the restart fell in the batch");
    assert_each_once(&env, n).await;
    relay.stop().await;
    env.cleanup().await;
}

/// RabbitMQ restarts in the middle of a 200-purchase batch: the relay reconnects, declares
/// its topology again and finishes the batch, each purchase once.
#[tokio::test]
async fn a_broker_restart_mid_batch_loses_and_doubles_nothing() {
    if restarts_allowed() {
        batch_survives("b", restart_broker).await;
    }
}

/// PostgreSQL stops for two seconds in the middle of a 200-purchase batch: the relay takes
/// no work while it is away, acks nothing it has not recorded, and finishes by itself.
#[tokio::test]
async fn a_postgres_restart_mid_batch_loses_and_doubles_nothing() {
    if restarts_allowed() {
        batch_survives("p", restart_postgres).await;
    }
}

/// SIGTERM in the middle of a batch: the relay stops consuming, finishes what it holds and
/// exits 0; a new relay finishes the rest, each purchase once.
#[tokio::test]
async fn sigterm_mid_batch_exits_cleanly_and_loses_nothing() {
    let env = TestEnv::new().await;
    let mut child = env.spawn_relay_process().await;
    let n = 200;
    publish_batch(&env, "t", n).await;
    let before = wait_completed(&env, 20, WAIT).await;
    let pid = child.id().to_string();
    let sent = std::process::Command::new("kill")
        .args(["-TERM", &pid])
        .status()
        .unwrap();
    assert!(sent.success());
    let status = tokio::task::spawn_blocking(move || child.wait())
        .await
        .unwrap()
        .unwrap();
    assert!(status.success(), "exit status {status:?}");
    let db = env.db().await;
    let sending: i64 = scalar(
        &db,
        "SELECT count(*) FROM transactions WHERE state = 'sending'",
    )
    .await;
    assert_eq!(sending, 0, "nothing left held by the stopped process");
    let stopped: i64 = scalar(
        &db,
        "SELECT count(*) FROM relay_processes WHERE stopped_at IS NOT NULL",
    )
    .await;
    assert_eq!(stopped, 1, "the process said it stopped");
    let relay = env.start_relay().await;
    let done = wait_completed(&env, n as i64, WAIT).await;
    assert_eq!(done as usize, n, "{before} done before the SIGTERM");
    assert!((before as usize) < n, "the SIGTERM fell in the batch");
    assert_each_once(&env, n).await;
    relay.stop().await;
    env.cleanup().await;
}

/// A live worker is never robbed, however slow its call: while relay A waits on a purchase
/// whose answer CSQ holds, relay B (another registered process) receives a duplicate of
/// the command and leaves it to A. One provider call, one voucher, never `unknown`.
#[tokio::test]
async fn a_live_slow_worker_is_not_robbed() {
    let env = TestEnv::with_sandbox(SandboxOptions {
        // Under the tests' 3 s CSQ timeout: slow, but answered.
        slow_answer: Duration::from_millis(2500),
        ..SandboxOptions::default()
    })
    .await;
    let a = env.start_relay().await;
    let (reply_to, mut replies) = env.reply_queue().await;
    env.publish(&purchase("slow-1", 1006, None), Some(&reply_to), "first")
        .await;
    let deadline = Instant::now() + WAIT;
    while env.sandbox.stats().answers_held == 0 {
        assert!(Instant::now() < deadline, "the purchase never reached CSQ");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let b = env.start_relay().await;
    env.publish(&purchase("slow-1", 1006, None), Some(&reply_to), "second")
        .await;
    let got = next_outcomes(&mut replies, 2, WAIT).await;
    for (c, o) in &got {
        assert_eq!(o.status, Status::Succeeded, "{c}: {o:?}");
    }
    assert_eq!(got[0].1.event_id, got[1].1.event_id, "one outcome");
    let stats = env.sandbox.stats();
    assert_eq!(stats.purchase_calls, 1, "sent once");
    assert_eq!(stats.purchases_applied, 1);
    assert_eq!(
        audit_states(&env, "slow-1").await,
        ["received", "sending", "completed"],
        "never taken over"
    );
    a.stop().await;
    b.stop().await;
    env.cleanup().await;
}
