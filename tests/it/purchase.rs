//! The happy path, a decline, duplicates and callback retries.

use std::time::Duration;

use crate::harness::{TestEnv, next_outcomes, purchase, scalar};
use voucher_relay::command::Status;

const WAIT: Duration = Duration::from_secs(30);

#[tokio::test]
async fn purchase_goes_from_publish_to_signed_callback() {
    let env = TestEnv::new().await;
    let relay = env.start_relay().await;
    let (reply_to, mut replies) = env.reply_queue().await;
    let mut events = env.event_queue("succeeded.purchase.csq").await;

    env.publish(
        &purchase("p-1", 1001, Some(&env.hook_url)),
        Some(&reply_to),
        "corr-1",
    )
    .await;

    let (corr, reply) = next_outcomes(&mut replies, 1, WAIT).await.remove(0);
    assert_eq!(corr, "corr-1");
    assert_eq!(reply.status, Status::Succeeded);
    assert_eq!(reply.event_type, "purchase.succeeded");
    assert_eq!(reply.command_id.as_deref(), Some("p-1"));
    let result = reply.result.clone().expect("result");
    let code = result["redeem_code"]
        .as_str()
        .expect("voucher code")
        .to_string();
    assert_eq!(code.len(), 16);
    assert!(result["redeem_instructions"].as_str().is_some());
    assert!(result["expiration"].as_str().is_some());
    assert_eq!(result["additional_data"]["face_value_x100"], "2500");
    assert_eq!(result["product_id"], "gift-25");
    assert!(result["local_reference"].as_i64().unwrap() > 0);

    let (_, event) = next_outcomes(&mut events, 1, WAIT).await.remove(0);
    assert_eq!(event.event_id, reply.event_id);

    let hooks = env.hooks_until(WAIT, |h| !h.is_empty()).await;
    assert_eq!(hooks.len(), 1);
    assert!(
        hooks[0].signature_ok,
        "Standard Webhooks signature must verify"
    );
    assert_eq!(hooks[0].webhook_id, reply.event_id);
    assert_eq!(hooks[0].body["status"], "succeeded");
    assert_eq!(hooks[0].body["result"]["redeem_code"], code.as_str());

    // The database has the whole story, and the voucher code and personal data only sealed
    // or masked.
    let db = env.db().await;
    let row = db
        .query_one("SELECT state, status, local_reference FROM transactions WHERE source = 'pos-17' AND command_id = 'p-1'", &[])
        .await
        .unwrap();
    assert_eq!(row.get::<_, &str>(0), "completed");
    assert_eq!(row.get::<_, &str>(1), "succeeded");
    let trail: Vec<String> = db
        .query("SELECT to_state FROM audit_trail ORDER BY id", &[])
        .await
        .unwrap()
        .iter()
        .map(|r| r.get(0))
        .collect();
    assert_eq!(trail, ["received", "sending", "completed"]);
    let exchange = db
        .query_one(
            "SELECT request::text, response::text, status_code, latency_ms FROM provider_exchanges",
            &[],
        )
        .await
        .unwrap();
    assert_eq!(exchange.get::<_, i32>(2), 200);
    for text in [exchange.get::<_, String>(0), exchange.get::<_, String>(1)] {
        assert!(!text.contains(&code), "voucher code in clear: {text}");
        assert!(!text.contains("X1234567"), "document number in clear");
        assert!(!text.contains("holder@example.com"), "e-mail in clear");
    }
    for table in [
        "transactions",
        "outbox",
        "provider_exchanges",
        "audit_trail",
        "reply_targets",
    ] {
        let dump: String = db
            .query_one(
                &format!("SELECT coalesce(string_agg(t::text, ''), '') FROM {table} t"),
                &[],
            )
            .await
            .unwrap()
            .get(0);
        assert!(!dump.contains(&code), "voucher code in clear in {table}");
        assert!(
            !dump.contains("X1234567"),
            "document number in clear in {table}"
        );
    }
    // The receiver has the callback a moment before the relay records it as delivered.
    let mut undelivered: i64 = -1;
    for _ in 0..100 {
        undelivered = scalar(
            &db,
            "SELECT count(*) FROM outbox WHERE delivered_at IS NULL",
        )
        .await;
        if undelivered == 0 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(undelivered, 0, "event, reply and callback all delivered");

    relay.stop().await;
    env.cleanup().await;
}

#[tokio::test]
async fn decline_is_a_final_outcome_with_the_provider_code() {
    let env = TestEnv::new().await;
    let relay = env.start_relay().await;
    let (reply_to, mut replies) = env.reply_queue().await;
    env.publish(
        &purchase("d-1", 1005, Some(&env.hook_url)),
        Some(&reply_to),
        "d",
    )
    .await;
    let (_, o) = next_outcomes(&mut replies, 1, WAIT).await.remove(0);
    assert_eq!(o.status, Status::Declined);
    let err = o.error.expect("error");
    assert_eq!(err.code, "provider_declined");
    assert_eq!(err.provider_code.as_deref(), Some("14"));
    let hooks = env.hooks_until(WAIT, |h| !h.is_empty()).await;
    assert_eq!(hooks[0].body["status"], "declined");
    assert_eq!(env.sandbox.stats().purchases_applied, 0);
    relay.stop().await;
    env.cleanup().await;
}

#[tokio::test]
async fn duplicates_get_the_stored_outcome_and_call_the_provider_once() {
    let env = TestEnv::new().await;
    let relay = env.start_relay().await;
    let (reply_to, mut replies) = env.reply_queue().await;
    let cmd = purchase("dup-1", 1001, Some(&env.hook_url));
    // Two copies at once (the second arrives while the first may be in flight)...
    env.publish(&cmd, Some(&reply_to), "first").await;
    env.publish(&cmd, Some(&reply_to), "second").await;
    let mut got = next_outcomes(&mut replies, 2, WAIT).await;
    // ...and one after the outcome is stored.
    env.publish(&cmd, Some(&reply_to), "third").await;
    got.extend(next_outcomes(&mut replies, 1, WAIT).await);

    let mut corrs: Vec<&str> = got.iter().map(|(c, _)| c.as_str()).collect();
    corrs.sort();
    assert_eq!(corrs, ["first", "second", "third"]);
    let event_ids: std::collections::HashSet<&str> =
        got.iter().map(|(_, o)| o.event_id.as_str()).collect();
    assert_eq!(event_ids.len(), 1, "one outcome per command");
    assert!(got.iter().all(|(_, o)| o.status == Status::Succeeded));
    let stats = env.sandbox.stats();
    assert_eq!(
        stats.purchase_calls, 1,
        "the provider was called exactly once"
    );
    assert_eq!(stats.purchases_applied, 1);

    // Every copy asked for the callback; all carry the same webhook-id.
    let hooks = env.hooks_until(WAIT, |h| h.len() >= 3).await;
    assert_eq!(hooks.len(), 3);
    assert!(
        hooks
            .iter()
            .all(|h| h.webhook_id == got[0].1.event_id && h.signature_ok)
    );
    relay.stop().await;
    env.cleanup().await;
}

#[tokio::test]
async fn failing_callbacks_are_retried_with_the_same_webhook_id() {
    let env = TestEnv::new().await;
    env.hook_state.lock().unwrap().fail_first = 2;
    let relay = env.start_relay().await;
    env.publish(&purchase("cb-1", 1001, Some(&env.hook_url)), None, "cb")
        .await;
    let hooks = env.hooks_until(WAIT, |h| !h.is_empty()).await;
    assert_eq!(hooks.len(), 1);
    assert!(hooks[0].signature_ok);
    assert_eq!(
        env.hook_state.lock().unwrap().attempts,
        3,
        "two 503s, then delivered"
    );
    let db = env.db().await;
    let attempts: i32 = scalar(
        &db,
        "SELECT attempts FROM outbox WHERE channel = 'callback'",
    )
    .await;
    assert_eq!(attempts, 3);
    relay.stop().await;
    env.cleanup().await;
}
