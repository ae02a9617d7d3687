//! Every kind of bad input gets a `rejected` outcome with a machine-readable reason, its
//! original is kept in `voucher.rejected`, and the worker keeps running.

use std::time::Duration;

use serde_json::json;

use crate::corpus::corpus;
use crate::harness::{TestEnv, next_outcomes, purchase, scalar, try_next_outcome};
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

/// The malformed-command corpus (`corpus.rs`) through the real broker: each case gets
/// exactly one `rejected` outcome, with the reason code the decoder gives it in process and
/// a callback where its callback URL could be read; then a valid purchase still succeeds.
#[tokio::test]
async fn bad_input_corpus_is_rejected_one_outcome_each() {
    let env = TestEnv::new().await;
    let cases = corpus(&env.hook_url);
    println!("malformed-command corpus: {} cases", cases.len());
    assert!(cases.len() >= 200, "only {} cases", cases.len());

    // In process first: every case is rejected, and its reason says what to expect.
    let mut expected = Vec::with_capacity(cases.len());
    let mut accepted = Vec::new();
    for case in &cases {
        match voucher_relay::providers::parse_command(
            &case.routing_key,
            &case.body,
            &["csq", "electrum"],
        ) {
            Ok(_) => accepted.push(case.name.clone()),
            Err(r) => expected.push((r.reason.code(), r.envelope.callback_url.is_some())),
        }
    }
    assert!(
        accepted.is_empty(),
        "accepted malformed commands: {accepted:#?}"
    );

    let relay = env.start_relay().await;
    let (reply_to, mut replies) = env.reply_queue().await;
    for (i, case) in cases.iter().enumerate() {
        env.publish_raw(
            &case.routing_key,
            &case.body,
            Some(&reply_to),
            &format!("corpus-{i}"),
        )
        .await;
    }
    env.publish(
        &purchase("good-after-corpus", 1001, None),
        Some(&reply_to),
        "good",
    )
    .await;

    let got = next_outcomes(&mut replies, cases.len() + 1, Duration::from_secs(120)).await;
    // Exactly one: nothing more comes.
    assert!(
        try_next_outcome(&mut replies, Duration::from_secs(2))
            .await
            .is_none()
    );
    let mut wrong = Vec::new();
    for (i, case) in cases.iter().enumerate() {
        let corr = format!("corpus-{i}");
        let outcomes: Vec<_> = got.iter().filter(|(c, _)| *c == corr).collect();
        let [(_, o)] = outcomes.as_slice() else {
            wrong.push(format!("{}: {} outcomes", case.name, outcomes.len()));
            continue;
        };
        let code = o
            .error
            .as_ref()
            .map(|e| e.code.as_str())
            .unwrap_or_default();
        let machine_readable = !code.is_empty()
            && code
                .bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_');
        if o.status != Status::Rejected || !machine_readable || code != expected[i].0 {
            wrong.push(format!(
                "{}: {:?} {code:?}, expected rejected {:?}",
                case.name, o.status, expected[i].0
            ));
        }
    }
    assert!(
        wrong.is_empty(),
        "{} cases went wrong: {wrong:#?}",
        wrong.len()
    );
    let good = got
        .iter()
        .find(|(c, _)| c == "good")
        .expect("the valid purchase");
    assert_eq!(good.1.status, Status::Succeeded, "the worker kept running");

    // A callback for each case whose callback URL could be read, signed and rejected.
    let hooks_expected = expected.iter().filter(|(_, hook)| *hook).count();
    let hooks = env
        .hooks_until(Duration::from_secs(60), |h| h.len() >= hooks_expected)
        .await;
    assert_eq!(hooks.len(), hooks_expected);
    assert!(
        hooks
            .iter()
            .all(|h| h.signature_ok && h.body["status"] == "rejected")
    );

    // Every rejection is recorded, and nothing reached a provider but the valid purchase.
    let db = env.db().await;
    let n: i64 = scalar(&db, "SELECT count(*) FROM rejections").await;
    assert_eq!(n as usize, cases.len());
    assert_eq!(env.sandbox.stats().purchase_calls, 1);
    println!(
        "malformed-command corpus: {} cases rejected, {} callbacks, then a purchase succeeded",
        cases.len(),
        hooks.len()
    );
    relay.stop().await;
    env.cleanup().await;
}
