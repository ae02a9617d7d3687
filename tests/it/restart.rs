//! A worker restarted in the middle of a batch loses nothing and buys nothing twice.

use std::collections::HashMap;
use std::time::Duration;

use crate::harness::{TestEnv, next_outcomes, purchase, scalar};
use voucher_relay::command::Status;

#[tokio::test]
async fn restart_mid_batch_loses_nothing() {
    let env = TestEnv::new().await;
    let (reply_to, mut replies) = env.reply_queue().await;
    let n = 80;
    let relay = env.start_relay().await;
    for i in 0..n {
        let operator = if i % 4 == 3 { 1005 } else { 1001 };
        env.publish(
            &purchase(&format!("r-{i}"), operator, None),
            Some(&reply_to),
            &format!("r-{i}"),
        )
        .await;
    }
    // Stop while the batch is in progress: handlers in flight finish, prefetched messages go
    // back to the queue.
    let mut got = next_outcomes(&mut replies, 10, Duration::from_secs(30)).await;
    relay.stop().await;
    let db = env.db().await;
    let done_before: i64 = scalar(
        &db,
        "SELECT count(*) FROM transactions WHERE state = 'completed'",
    )
    .await;
    assert!(
        (done_before as usize) < n,
        "the restart must fall in the middle of the batch"
    );
    let relay = env.start_relay().await;
    while got.len() < n {
        got.extend(next_outcomes(&mut replies, 1, Duration::from_secs(30)).await);
    }
    // Allow a moment for any stray second reply (there must be none).
    tokio::time::sleep(Duration::from_millis(500)).await;
    relay.stop().await;

    let mut by_corr: HashMap<String, Vec<Status>> = HashMap::new();
    for (c, o) in &got {
        by_corr.entry(c.clone()).or_default().push(o.status);
    }
    assert_eq!(by_corr.len(), n, "every command got an outcome");
    for i in 0..n {
        let statuses = &by_corr[&format!("r-{i}")];
        let expected = if i % 4 == 3 {
            Status::Declined
        } else {
            Status::Succeeded
        };
        assert!(
            statuses.iter().all(|s| *s == expected),
            "r-{i}: {statuses:?}"
        );
    }
    let stats = env.sandbox.stats();
    assert_eq!(
        stats.purchases_applied as usize,
        n - n / 4,
        "no voucher bought twice"
    );
    assert_eq!(
        stats.purchase_calls as usize, n,
        "one provider call per command"
    );
    let done: i64 = scalar(
        &db,
        "SELECT count(*) FROM transactions WHERE state = 'completed'",
    )
    .await;
    assert_eq!(done as usize, n);
    env.cleanup().await;
}
