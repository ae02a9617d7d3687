//! The Electrum scene of the demo: one voucher through provision, a redemption that times
//! out and is reversed through store-and-forward, a second redemption, a refund and a
//! redemption after the refund, each command published to the relay and its reply awaited.

use std::time::{Duration, Instant};

use lapin::options::BasicAckOptions;
use serde_json::{Value, json};

use super::rig::Rig;
use crate::broker::publisher::json_properties;
use crate::command::{Outcome, Status};
use crate::providers::electrum::sandbox::{Fault, Operation};

/// The steps after the provision, in order: (kind, command id, expected status, what it
/// shows).
const VOUCHER_STEPS: [(&str, &str, Status, &str); 4] = [
    (
        "redeem",
        "e-redeem-timeout",
        Status::Reversed,
        "timed out after the sandbox applied it; reversal refused 3 x 503, then accepted",
    ),
    (
        "redeem",
        "e-redeem-again",
        Status::Succeeded,
        "the reversed voucher is redeemable again",
    ),
    (
        "refund",
        "e-refund",
        Status::Succeeded,
        "refund of the confirmed redemption",
    ),
    (
        "redeem",
        "e-redeem-after-refund",
        Status::Succeeded,
        "a refunded voucher is redeemable again",
    ),
];

/// The Electrum part of the demo, in order, because each step needs the one before: a
/// voucher is provisioned and confirmed, a redemption times out after the sandbox applied it,
/// its reversal is refused with 503 three times and then accepted (`reversed`), and the
/// voucher is redeemed again and refunded. Returns what did not go as expected.
pub(super) async fn electrum_scene(
    rig: &mut Rig,
    source: &str,
    deadline: tokio::time::Instant,
) -> Vec<String> {
    let originator = json!({
        "institution": {"id": "11111111", "name": "Buy Stuff Shop"},
        "terminalId": "term0001",
        "merchant": {"merchantType": "4444", "merchantId": "merchant1234567",
            "merchantName": {"name": "Buy Stuff Shop", "city": "Cape Town", "region": "WP", "country": "ZA"}}
    });
    let mut problems = Vec::new();
    println!("Electrum SUV (dual messaging, store-and-forward):");
    let provision = json!({"originator": originator, "amount_minor": 5000, "currency": "710"});
    let code =
        match electrum_ask(rig, source, "provision", "e-provision", provision, deadline).await {
            Ok(o) if o.status == Status::Succeeded => o
                .result
                .and_then(|r| r["voucher"]["code"].as_str().map(str::to_string))
                .unwrap_or_default(),
            other => {
                problems.push(format!("provision: {}", describe(&other)));
                return problems;
            }
        };
    println!(
        "  provision.electrum   -> succeeded, voucher {}",
        crate::mask::mask_str(&code)
    );
    // Let the confirmation land before the holder redeems.
    tokio::time::sleep(Duration::from_millis(300)).await;
    rig.electrum
        .inject(Operation::Redeem, Fault::TimeoutAfterEffect, 1);
    rig.electrum
        .inject(Operation::RedeemReversal, Fault::ErrorBeforeEffect(503), 3);
    let voucher = json!({"originator": originator, "voucher_code": code});
    let started = Instant::now();
    for (kind, id, expected, what) in VOUCHER_STEPS {
        match electrum_ask(rig, source, kind, id, voucher.clone(), deadline).await {
            Ok(o) if o.status == expected => {
                println!(
                    "  {:<20} -> {:<9} after {:.1} s: {what}",
                    format!("{kind}.electrum"),
                    o.status.as_str(),
                    started.elapsed().as_secs_f64()
                );
            }
            other => problems.push(format!(
                "{id}: expected {}, {}",
                expected.as_str(),
                describe(&other)
            )),
        }
        // Each confirmation lands before the next step uses the voucher.
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
    problems
}

/// What a step got instead of its expected outcome, for the list of problems.
fn describe(o: &anyhow::Result<Outcome>) -> String {
    match o {
        Ok(o) => format!(
            "got {} {:?}",
            o.status.as_str(),
            o.error.as_ref().map(|e| &e.code)
        ),
        Err(e) => format!("got no outcome: {e}"),
    }
}

/// Publishes one Electrum command and waits for its reply.
async fn electrum_ask(
    rig: &mut Rig,
    source: &str,
    kind: &str,
    id: &str,
    params: Value,
    deadline: tokio::time::Instant,
) -> anyhow::Result<Outcome> {
    // No silent gap: say what the demo waits for until its outcome arrives.
    eprintln!("  {kind}.electrum ({id}): waiting for the outcome…");
    let config = &rig.config;
    let body = json!({"command_id": id, "source": source, "kind": kind, "provider": "electrum", "params": params});
    let props = json_properties()
        .with_reply_to(rig.replies.name.as_str().into())
        .with_correlation_id(id.into());
    // The relay's own confirmed publisher: no connection per command.
    rig.relay
        .shared
        .publisher
        .publish(
            &config.name(&config.broker.commands_exchange),
            &format!("{kind}.electrum"),
            &serde_json::to_vec(&body)?,
            props,
        )
        .await?;
    loop {
        let Ok(Some(d)) = tokio::time::timeout_at(deadline, rig.replies.next()).await else {
            anyhow::bail!("no reply before the demo's deadline");
        };
        d.ack(BasicAckOptions::default()).await?;
        let correlation = d
            .properties
            .correlation_id()
            .as_ref()
            .map(|c| c.to_string());
        if correlation.as_deref() == Some(id) {
            return Ok(serde_json::from_slice(&d.data)?);
        }
    }
}
