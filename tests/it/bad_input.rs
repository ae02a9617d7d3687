//! Every kind of bad input gets a `rejected` outcome with a machine-readable reason, its
//! original is kept in `voucher.rejected`, and the worker keeps running.

use std::time::Duration;

use serde_json::json;

use crate::harness::{TestEnv, next_outcomes, purchase, scalar};
use voucher_relay::command::Status;

#[tokio::test]
async fn bad_inputs_are_rejected_kept_and_answered() {
    let env = TestEnv::new().await;
    let relay = env.start_relay().await;
    let (reply_to, mut replies) = env.reply_queue().await;
    let hook = env.hook_url.clone();

    let with = |f: &dyn Fn(&mut serde_json::Value)| {
        let mut c = purchase("bad", 1001, Some(&hook));
        f(&mut c);
        serde_json::to_vec(&c).unwrap()
    };
    let cases: Vec<(&str, Vec<u8>, &str)> = vec![
        (
            "purchase.csq",
            b"{this is not json".to_vec(),
            "body_not_json",
        ),
        (
            "purchase.csq",
            vec![0xff, 0xfe, 0x7b, 0x7d],
            "body_not_utf8",
        ),
        ("purchase.csq", vec![b' '; 65 * 1024], "body_too_large"),
        (
            "purchase.csq",
            with(&|c| c["kind"] = json!("refund")),
            "routing_key_mismatch",
        ),
        (
            "refund.csq",
            with(&|c| c["kind"] = json!("refund")),
            "unknown_kind",
        ),
        (
            "purchase.acme",
            with(&|c| c["provider"] = json!("acme")),
            "unknown_provider",
        ),
        ("redeem.csq", with(&|_| {}), "routing_key_mismatch"),
        (
            "purchase.csq",
            with(&|c| {
                c.as_object_mut().unwrap().remove("command_id");
            }),
            "missing_field",
        ),
        (
            "purchase.csq",
            with(&|c| {
                c.as_object_mut().unwrap().remove("source");
            }),
            "missing_field",
        ),
        (
            "purchase.csq",
            with(&|c| c["params"]["amount_to_send_x100"] = json!(25.0)),
            "amount_not_integer",
        ),
        (
            "purchase.csq",
            with(&|c| c["params"]["amount_to_send_x100"] = json!("2500")),
            "amount_not_integer",
        ),
        (
            "purchase.csq",
            with(&|c| c["params"]["amount_to_send_x100"] = json!(-1)),
            "amount_negative",
        ),
        (
            "purchase.csq",
            with(&|c| c["params"]["voucher_pin"] = json!("1234")),
            "unknown_param",
        ),
    ];
    for (i, (key, body, _)) in cases.iter().enumerate() {
        env.publish_raw(key, body, Some(&reply_to), &format!("case-{i}"))
            .await;
    }
    // The worker is still alive: a good command after all the bad ones succeeds.
    env.publish(
        &purchase("good-after-bad", 1001, None),
        Some(&reply_to),
        "good",
    )
    .await;

    let got = next_outcomes(&mut replies, cases.len() + 1, Duration::from_secs(30)).await;
    for (i, (key, _, code)) in cases.iter().enumerate() {
        let (_, o) = got
            .iter()
            .find(|(c, _)| *c == format!("case-{i}"))
            .unwrap_or_else(|| panic!("no outcome for case {i} ({code})"));
        assert_eq!(o.status, Status::Rejected, "case {i}");
        assert_eq!(o.error.as_ref().unwrap().code, *code, "case {i} on {key}");
        assert_eq!(o.event_type, format!("{}.rejected", o.kind));
    }
    let good = got.iter().find(|(c, _)| c == "good").unwrap();
    assert_eq!(good.1.status, Status::Succeeded);

    // Callbacks go where a callback URL could be read (not from non-JSON bodies).
    let expected_hooks = cases.len() - 3;
    let hooks = env
        .hooks_until(Duration::from_secs(30), |h| h.len() >= expected_hooks)
        .await;
    assert_eq!(hooks.len(), expected_hooks);
    assert!(
        hooks
            .iter()
            .all(|h| h.signature_ok && h.body["status"] == "rejected")
    );

    // The originals are kept for operators, with the reason.
    let kept = env.drain("voucher.rejected").await;
    assert_eq!(kept.len(), cases.len());
    for m in &kept {
        let headers = m.delivery.properties.headers().as_ref().unwrap();
        assert!(headers.inner().contains_key("x-rejection-reason"));
    }
    assert!(kept.iter().any(|m| m.delivery.data == b"{this is not json"));

    // Nothing reached the provider but the one good command, and rejections are recorded.
    assert_eq!(env.sandbox.stats().purchase_calls, 1);
    let db = env.db().await;
    let n: i64 = scalar(&db, "SELECT count(*) FROM rejections").await;
    assert_eq!(n as usize, cases.len());
    relay.stop().await;
    env.cleanup().await;
}
