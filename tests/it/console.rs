//! The web console in a real browser (headless Chromium through chromedriver): log in,
//! list, open an item, replay it with a reason, check the audit entry; a bulk discard shows
//! its count first; a forged form is refused; no page shows a secret.

use std::time::Duration;

use voucher_relay::command::Status;
use voucher_relay::console;
use voucher_relay::crypto::Sealer;
use voucher_relay::store::Store;

use super::electrum::{Client, until};
use super::harness::{SECRET, TestEnv, purchase, scalar};
use super::operators::{assert_no_secret, dead_letter_from_broker, voucher_secrets};
use super::webdriver::{Browser, browser_available};

const TOKEN: &str = "console-test-token-8d2e41";

/// Serves the console of `env`'s database on a loopback port; returns its base URL.
async fn serve_console(env: &TestEnv) -> String {
    let mut config = env.config.clone();
    config.secrets.operator_token = Some(TOKEN.into());
    let store = Store::connect(
        &config.database,
        Sealer::with_keys(&config.secrets.data_keys),
    )
    .await
    .expect("store");
    let app = console::router(console::Console::new(config, store).expect("token set"));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(async move {
        let _ = axum::serve(listener, app).await;
    });
    base
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_operator_replays_a_dead_letter_in_the_browser() {
    if !browser_available() {
        return;
    }
    let env = TestEnv::new().await;
    let relay = env.start_relay().await;
    let db = env.db().await;
    let mut secrets: Vec<String> = vec![
        SECRET.into(),
        TOKEN.into(),
        "holder@example.com".into(),
        "X1234567".into(),
    ];
    // One purchase that ran (its voucher code is a secret), a copy of it dead-lettered,
    // and one that used up its deliveries before it ever ran.
    let mut c = Client::new(&env).await;
    let ran = purchase("web-1", 1001, None);
    let o = c.run(&env, &ran).await;
    assert_eq!(o.status, Status::Succeeded, "{o:?}");
    voucher_secrets(&serde_json::to_value(&o).unwrap(), &mut secrets);
    assert!(secrets.len() > 4, "the outcome carries a voucher code");
    dead_letter_from_broker(&env, &purchase("web-dl", 1001, None), None).await;
    dead_letter_from_broker(&env, &ran, None).await;
    until(&db, "SELECT count(*) FROM dead_letters", 2, "not recorded").await;

    let base = serve_console(&env).await;
    let b = Browser::start().await;
    let mut pages = String::new();

    // Not logged in: every page leads to the login form. A wrong token is refused.
    b.goto(&format!("{base}/console/place/voucher.dead")).await;
    assert!(
        b.url().await.ends_with("/console/login"),
        "{}",
        b.url().await
    );
    b.type_into(&b.find("#operator").await, "night shift").await;
    b.type_into(&b.find("#token").await, "wrong-token-000000")
        .await;
    b.click(&b.find("#login").await).await;
    b.wait_for("Wrong token").await;
    // Logged in: the places with their counts, and the chart.
    b.type_into(&b.find("#operator").await, "night shift").await;
    b.type_into(&b.find("#token").await, TOKEN).await;
    b.click(&b.find("#login").await).await;
    let front = b.wait_for("outcomes-chart").await;
    pages.push_str(&front);
    assert!(front.contains("outcomes-chart"), "{front}");
    let dead_count = b
        .text(
            &b.find_xpath("//tr[td/a[text()='voucher.dead']]/td[@class='count']")
                .await,
        )
        .await;
    assert_eq!(dead_count, "2");
    if let Ok(path) = std::env::var("VOUCHER_RELAY_SCREENSHOT") {
        std::fs::write(&path, b.screenshot().await).expect("screenshot written");
    }

    // The list, then the item of the purchase that never ran: masked.
    b.click(
        &b.find_xpath("//a[@class='place'][text()='voucher.dead']")
            .await,
    )
    .await;
    let list = b.wait_for("id=\"items\"").await;
    pages.push_str(&list);
    assert!(list.contains("web-dl") && list.contains("web-1"), "{list}");
    b.click(
        &b.find_xpath("//tr[td[contains(., 'web-dl')]]//a[@class='item']")
            .await,
    )
    .await;
    let item = b.wait_for("id=\"detail\"").await;
    pages.push_str(&item);
    assert!(item.contains("delivery_limit"), "{item}");
    assert!(item.contains("****"), "personal data is masked: {item}");

    // Replay it with a reason.
    b.type_into(&b.find("#why-replay").await, "customer called, INC-7")
        .await;
    b.click(&b.find("#replay").await).await;
    let done = b.wait_for("id=\"done\"").await;
    pages.push_str(&done);
    assert!(done.contains("replayed"), "{done}");
    until(
        &db,
        "SELECT count(*) FROM transactions WHERE command_id = 'web-dl' AND status = 'succeeded'",
        1,
        "the replayed purchase did not succeed",
    )
    .await;

    // The audit entry: who, through the console, why.
    b.goto(&format!("{base}/console/actions")).await;
    let audit = b.wait_for("id=\"actions\"").await;
    pages.push_str(&audit);
    let row = b
        .text(
            &b.find_xpath("//tr[@class='action'][td[@class='actor'][text()='night shift']]")
                .await,
        )
        .await;
    assert!(row.contains("console") && row.contains("replay"), "{row}");
    assert!(row.contains("customer called, INC-7"), "{row}");
    let (actor, via, why): (String, String, String) = {
        let r = db
            .query_one(
                "SELECT actor, via, why FROM operator_actions ORDER BY id DESC LIMIT 1",
                &[],
            )
            .await
            .unwrap();
        (r.get(0), r.get(1), r.get(2))
    };
    assert_eq!(
        (actor.as_str(), via.as_str(), why.as_str()),
        ("night shift", "console", "customer called, INC-7")
    );

    // The transaction's timeline, found by command id.
    b.goto(&format!("{base}/console/tx?key=web-dl")).await;
    let timeline = b.wait_for("id=\"timeline\"").await;
    pages.push_str(&timeline);
    assert!(
        timeline.contains("received") && timeline.contains("provider"),
        "{timeline}"
    );
    assert!(timeline.contains("replay of voucher.dead"), "{timeline}");

    // A forged form (no CSRF token of the session) is refused, even with the cookie.
    let cookie = b.cookie("voucher_console").await.expect("session cookie");
    let forged = reqwest::Client::new()
        .post(format!("{base}/console/place/voucher.dead/act"))
        .header("cookie", format!("voucher_console={cookie}"))
        .header("content-type", "application/x-www-form-urlencoded")
        .body("csrf=guess&action=discard&why=x")
        .send()
        .await
        .unwrap();
    assert_eq!(forged.status(), 403);
    let anonymous = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap()
        .get(format!("{base}/console"))
        .send()
        .await
        .unwrap();
    assert_eq!(anonymous.status(), 303, "no session, no page");
    let waiting: i64 = scalar(
        &db,
        "SELECT count(*) FROM dead_letters WHERE state = 'dead'",
    )
    .await;
    assert_eq!(waiting, 1, "the forged discard did nothing");

    // Bulk discard by filter: the count first, then done.
    b.goto(&format!("{base}/console/place/voucher.dead")).await;
    b.click(&b.find("#bulk-discard").await).await;
    let confirm = b.wait_for("id=\"count\"").await;
    pages.push_str(&confirm);
    assert!(
        b.text(&b.find("#count").await)
            .await
            .contains("discard 1 item"),
        "{confirm}"
    );
    b.type_into(&b.find("#why").await, "a copy of a purchase that ran")
        .await;
    b.click(&b.find("#go").await).await;
    let done = b.wait_for("id=\"done\"").await;
    pages.push_str(&done);
    assert!(done.contains("discarded"), "{done}");
    let waiting: i64 = scalar(
        &db,
        "SELECT count(*) FROM dead_letters WHERE state = 'dead'",
    )
    .await;
    assert_eq!(waiting, 0);

    assert_no_secret(&pages, &secrets, "the console");
    b.close().await;
    tokio::time::sleep(Duration::from_millis(100)).await;
    relay.stop().await;
    env.cleanup().await;
}
