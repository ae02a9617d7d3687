//! The other CSQ flows: dynamic products, balance, raffles (across a broker restart), and
//! the global rate limit.

use std::time::Duration;

use serde_json::json;
use voucher_relay::command::Status;
use voucher_relay::crypto::Sealer;
use voucher_relay::providers::csq::sandbox::{INITIAL_BALANCE_X100, SandboxOptions};
use voucher_relay::ratelimit::ProviderLimit;
use voucher_relay::store::Store;

use crate::harness::{TestEnv, next_outcomes, purchase, restart_broker, restarts_allowed, scalar};

const WAIT: Duration = Duration::from_secs(60);

fn command(id: &str, kind: &str, params: serde_json::Value) -> serde_json::Value {
    json!({"command_id": id, "source": "pos-17", "kind": kind, "provider": "csq", "params": params})
}

#[tokio::test]
async fn products_balance_and_dynamic_purchases() {
    let env = TestEnv::new().await;
    let relay = env.start_relay().await;
    let (reply_to, mut replies) = env.reply_queue().await;

    env.publish(
        &command(
            "prod-1",
            "products",
            json!({"terminal_id": 17, "operator_id": 1003}),
        ),
        Some(&reply_to),
        "prod-1",
    )
    .await;
    let (_, o) = next_outcomes(&mut replies, 1, WAIT).await.remove(0);
    assert_eq!(o.status, Status::Succeeded);
    let r = o.result.unwrap();
    assert_eq!(r["dynamic_products"], true);
    assert_eq!(r["products"].as_array().unwrap().len(), 3);
    assert_eq!(r["products"][1]["dynamic_product_id"], "DYN-1003-1000");
    assert_eq!(r["products"][1]["amount_x100"], 1000);

    // A 404 is an answer: no dynamic products.
    env.publish(
        &command(
            "prod-2",
            "products",
            json!({"terminal_id": 17, "operator_id": 1001}),
        ),
        Some(&reply_to),
        "prod-2",
    )
    .await;
    let (_, o) = next_outcomes(&mut replies, 1, WAIT).await.remove(0);
    assert_eq!(o.status, Status::Succeeded);
    assert_eq!(o.result.unwrap()["dynamic_products"], false);

    // A purchase naming no product picks the dynamic product by price, from the cache.
    let mut p = purchase("dyn-1", 1003, None);
    p["params"].as_object_mut().unwrap().remove("product_id");
    p["params"]["amount_to_send_x100"] = json!(1000);
    env.publish(&p, Some(&reply_to), "dyn-1").await;
    let (_, o) = next_outcomes(&mut replies, 1, WAIT).await.remove(0);
    assert_eq!(o.status, Status::Succeeded, "{o:?}");
    assert_eq!(
        env.sandbox.stats().products_calls,
        2,
        "operator 1003's list came from the cache"
    );

    let mut p = purchase("dyn-2", 1003, None);
    p["params"].as_object_mut().unwrap().remove("product_id");
    p["params"]["amount_to_send_x100"] = json!(700);
    env.publish(&p, Some(&reply_to), "dyn-2").await;
    let (_, o) = next_outcomes(&mut replies, 1, WAIT).await.remove(0);
    assert_eq!(o.status, Status::Failed);
    assert_eq!(o.error.unwrap().code, "no_matching_dynamic_product");

    env.publish(
        &command("bal-1", "balance", json!({"terminal_id": 17})),
        Some(&reply_to),
        "bal-1",
    )
    .await;
    let (_, o) = next_outcomes(&mut replies, 1, WAIT).await.remove(0);
    assert_eq!(o.status, Status::Succeeded);
    assert_eq!(
        o.result.unwrap()["balances"][0]["balance_x100"],
        INITIAL_BALANCE_X100 - 1000
    );

    // Unknown params are refused for these kinds too.
    env.publish(
        &command("bal-2", "balance", json!({"terminal_id": 17, "pin": "1"})),
        Some(&reply_to),
        "bal-2",
    )
    .await;
    let (_, o) = next_outcomes(&mut replies, 1, WAIT).await.remove(0);
    assert_eq!(o.error.unwrap().code, "unknown_param");
    relay.stop().await;
    env.cleanup().await;
}

/// A raffle ticket is issued (progress event), the broker restarts while the relay waits
/// for the draw, and the result still arrives as `raffle.resolved`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn raffle_result_survives_a_broker_restart() {
    if !restarts_allowed() {
        return;
    }
    let env = TestEnv::exclusive(SandboxOptions {
        draw_delay: Duration::from_secs(6),
        win_per_mille: 1000,
        ..Default::default()
    })
    .await;
    let relay = env.start_relay().await;
    env.publish(
        &purchase("raffle-1", 1004, Some(&env.hook_url)),
        None,
        "raffle-1",
    )
    .await;
    let hooks = env.hooks_until(WAIT, |h| !h.is_empty()).await;
    assert_eq!(
        hooks[0].body["type"], "purchase.ticket_issued",
        "{:?}",
        hooks[0].body
    );
    assert_eq!(hooks[0].body["status"], "pending");
    let ticket = hooks[0].body["result"]["redeem_code"]
        .as_str()
        .unwrap()
        .to_string();

    tokio::task::spawn_blocking(restart_broker).await.unwrap();

    let hooks = env
        .hooks_until(Duration::from_secs(120), |h| h.len() >= 2)
        .await;
    assert_eq!(hooks.len(), 2, "raffle.resolved after the restart");
    let resolved = &hooks[1].body;
    assert_eq!(resolved["type"], "raffle.resolved");
    assert_eq!(resolved["status"], "succeeded");
    assert_eq!(resolved["result"]["result"], "win");
    assert_eq!(resolved["result"]["ticket"], ticket.as_str());
    assert!(resolved["result"]["prize"].as_str().is_some());
    assert!(hooks.iter().all(|h| h.signature_ok));
    let stats = env.sandbox.stats();
    assert_eq!(stats.purchases_applied, 1);
    assert!(stats.finished_calls >= 1);
    relay.stop().await;
    env.cleanup().await;
}

/// Three "processes" (three pools, three limiters) lease shares of one rate from one
/// database: the shares alive never add up to more than the rate, a newcomer gets its fair
/// share once the others renewed, a clean stop gives its share back at once, and a dead
/// process's share returns to the others when its lease ends.
#[tokio::test]
async fn rate_shares_add_up_to_the_rate_across_processes() {
    let env = TestEnv::new().await;
    voucher_relay::store::migrate(&env.config.database)
        .await
        .unwrap();
    let sealer = Sealer::new(&[0; 32]);
    let rate = 50;
    let mut limits = Vec::new();
    for _ in 0..3 {
        let store = Store::connect(&env.config.database, sealer.clone())
            .await
            .unwrap();
        limits.push((
            ProviderLimit::new("csq-test", rate, 4, Some(store.pool.clone())),
            uuid::Uuid::now_v7(),
        ));
    }
    let db = env.db().await;
    let leased = || async {
        scalar::<i64>(
            &env.db().await,
            "SELECT coalesce(sum(share), 0)::bigint FROM rate_leases
             WHERE provider = 'csq-test' AND expires_at > clock_timestamp()",
        )
        .await
    };
    // Nothing is sent before the first lease.
    assert_eq!(limits[0].0.share(), 0);
    assert!(!limits[0].0.wait_turn(Duration::from_millis(50)).await);
    // Alone, the first takes the whole rate.
    let (a, b, c) = (&limits[0], &limits[1], &limits[2]);
    assert_eq!(a.0.renew(a.1).await.unwrap().share, 50);
    assert!(a.0.wait_turn(Duration::from_millis(50)).await);
    // A newcomer gets what is left (nothing), then its share once the first renewed down.
    assert_eq!(b.0.renew(b.1).await.unwrap().share, 0);
    assert_eq!(a.0.renew(a.1).await.unwrap().share, 25);
    assert_eq!(b.0.renew(b.1).await.unwrap().share, 25);
    assert_eq!(leased().await, 50);
    // Three holders settle on 17 + 17 + 16 in two rounds, never above 50 on the way.
    for _ in 0..2 {
        for (limit, owner) in [a, b, c] {
            limit.renew(*owner).await.unwrap();
            assert!(
                leased().await <= 50,
                "the shares alive never exceed the rate"
            );
        }
    }
    let mut shares: Vec<u32> = [a, b, c].iter().map(|(l, _)| l.share()).collect();
    shares.sort();
    assert_eq!(shares, vec![16, 17, 17]);
    // A clean stop gives the share back at once.
    c.0.release(c.1).await.unwrap();
    assert_eq!(c.0.share(), 0);
    a.0.renew(a.1).await.unwrap();
    b.0.renew(b.1).await.unwrap();
    assert_eq!(a.0.share() + b.0.share(), 50);
    // A dead process (b stops renewing): its share returns when its lease ends.
    db.execute(
        "UPDATE rate_leases SET expires_at = clock_timestamp() WHERE owner = $1",
        &[&b.1],
    )
    .await
    .unwrap();
    assert_eq!(a.0.renew(a.1).await.unwrap().share, 50);
    env.cleanup().await;
}
