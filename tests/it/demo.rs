//! The demo as a new user runs it: beside a relay that is already running, with neither
//! touching the other's queues, rows or callbacks.

use std::process::Command;
use std::time::Duration;

use voucher_relay::command::Status;

use crate::harness::{TestEnv, next_outcomes, purchase, scalar};

/// A relay serves its own commands while `voucher-relay demo` runs beside it with the same
/// `DATABASE_URL` (the README's setup: `run` in one terminal, `demo` in another). Both stay
/// correct: the demo exits 0, every relay command succeeds with its callback, the relay's
/// database holds none of the demo's commands, and no delivery of the relay's went dead.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn demo_beside_a_running_relay_shares_nothing_with_it() {
    let env = TestEnv::new().await;
    let relay = env.start_relay().await;
    let (reply_to, mut replies) = env.reply_queue().await;
    let database_url = env.config.database.url.clone();
    let amqp_url = env.config.broker.url.clone();
    let demo = tokio::task::spawn_blocking(move || {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_voucher-relay"));
        cmd.args(["demo", "--commands", "60"])
            .current_dir(env!("CARGO_MANIFEST_DIR"))
            .env("DATABASE_URL", database_url)
            .env("AMQP_URL", amqp_url);
        // The demo makes its own secret and uses the sandboxes' credentials.
        for k in ["WEBHOOK_SIGNING_SECRET", "DATA_ENCRYPTION_KEY", "RUST_LOG"] {
            cmd.env_remove(k);
        }
        cmd.output().expect("the demo runs")
    });
    let hook = env.hook_url.clone();
    for i in 0..20 {
        let id = format!("beside-{i}");
        env.publish(&purchase(&id, 1001, Some(&hook)), Some(&reply_to), &id)
            .await;
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let outcomes = next_outcomes(&mut replies, 20, Duration::from_secs(60)).await;
    assert!(
        outcomes.iter().all(|(_, o)| o.status == Status::Succeeded),
        "{outcomes:?}"
    );
    let out = demo.await.expect("the demo's thread");
    let text =
        String::from_utf8_lossy(&out.stdout).to_string() + &String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "the demo failed:\n{text}");
    assert!(
        text.contains("result: every command has exactly one terminal outcome"),
        "{text}"
    );
    let hooks = env
        .hooks_until(Duration::from_secs(30), |h| h.len() >= 20)
        .await;
    assert_eq!(hooks.len(), 20, "each relay command called back once");
    assert!(hooks.iter().all(|h| h.signature_ok));
    let db = env.db().await;
    let foreign: i64 = scalar(
        &db,
        "SELECT count(*) FROM transactions WHERE source <> 'pos-17'",
    )
    .await;
    assert_eq!(foreign, 0, "no demo command in the relay's database");
    let dead: i64 = scalar(&db, "SELECT count(*) FROM outbox WHERE dead_at IS NOT NULL").await;
    assert_eq!(dead, 0, "no delivery of the relay's went dead");
    relay.stop().await;
    env.cleanup().await;
}
