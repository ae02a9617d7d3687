//! The mixed CSQ batch of the demo: plain purchases (successes and declines), one
//! duplicate, one of each longer flow and a few malformed commands, each with what the demo
//! expects of it; and its publishing through RabbitMQ.

use serde_json::{Value, json};

use crate::broker::{Publisher, publisher::json_properties};
use crate::command::Status;
use crate::config::Config;
use crate::providers::csq::sandbox::{
    OPERATOR_ADDITIONAL_DATA, OPERATOR_DECLINE, OPERATOR_DYNAMIC, OPERATOR_OK, OPERATOR_RAFFLE,
    OPERATOR_SLOW, OPERATOR_UNAVAILABLE,
};

/// One published message and what the demo expects of it.
pub(super) struct Sent {
    pub(super) correlation_id: String,
    /// (source, command_id) when the body has them.
    pub(super) key: Option<(String, String)>,
    pub(super) expected: Status,
    pub(super) has_callback: bool,
    /// One of the longer flows (polling, resolution), timed apart from the plain batch.
    pub(super) long_flow: bool,
}

impl Sent {
    /// The expectation of message `i`, whose command is `body`.
    fn new(i: usize, body: &Value, expected: Status, has_callback: bool) -> Sent {
        Sent {
            correlation_id: format!("msg-{i:04}"),
            key: match (
                body.get("source").and_then(Value::as_str),
                body.get("command_id").and_then(Value::as_str),
            ) {
                (Some(s), Some(c)) => Some((s.to_string(), c.to_string())),
                _ => None,
            },
            expected,
            has_callback,
            long_flow: false,
        }
    }
}

/// One message of the batch: (routing key, body, expectation).
pub(super) type BatchMessage = (String, Vec<u8>, Sent);

/// The fewest messages a batch can have: one of each long flow, every malformed command,
/// one plain purchase and its duplicate.
pub(super) fn minimum() -> usize {
    long_flow_commands("", "").len() + malformed_commands("", "").len() + 2
}

/// The mixed batch of exactly `total` messages (at least [`minimum`]) from `source`,
/// calling back to `hook`.
pub(super) fn build_batch(source: &str, hook: &str, total: usize) -> Vec<BatchMessage> {
    let mut out = Vec::with_capacity(total);
    let malformed = malformed_commands(source, hook);
    for (j, (key, body, expected)) in long_flow_commands(source, hook).into_iter().enumerate() {
        let bytes = serde_json::to_vec(&body).unwrap_or_default();
        let s = Sent {
            long_flow: true,
            ..Sent::new(8001 + j, &body, expected, true)
        };
        out.push((key, bytes, s));
    }

    let valid = total.saturating_sub(malformed.len() + 1 + out.len());
    push_plain_purchases(&mut out, source, hook, valid);
    for (j, (key, body, has_callback)) in malformed.into_iter().enumerate() {
        let parsed: Value = serde_json::from_slice(&body).unwrap_or(Value::Null);
        let mut s = Sent::new(9000 + j, &parsed, Status::Rejected, has_callback);
        s.key = None;
        out.push((key.to_string(), body, s));
    }
    out
}

/// Publishes `batch` to the commands exchange, each message asking for its reply on
/// `reply_queue`; answers the expectations in publishing order.
pub(super) async fn publish_batch(
    config: &Config,
    reply_queue: &str,
    batch: Vec<BatchMessage>,
) -> anyhow::Result<Vec<Sent>> {
    let publisher = Publisher::connect(&config.broker.url).await?;
    let exchange = config.name(&config.broker.commands_exchange);
    let mut sent = Vec::with_capacity(batch.len());
    for (routing_key, body, s) in batch {
        let props = json_properties()
            .with_reply_to(reply_queue.into())
            .with_correlation_id(s.correlation_id.as_str().into());
        publisher
            .publish(&exchange, &routing_key, &body, props)
            .await?;
        sent.push(s);
    }
    publisher.close().await;
    Ok(sent)
}

/// The purchase command `cmd-{i}` from `operator`.
fn purchase_command(source: &str, hook: &str, i: usize, operator: i32) -> Value {
    json!({
        "command_id": format!("cmd-{i:04}"),
        "source": source,
        "kind": "purchase",
        "provider": "csq",
        "callback_url": hook,
        "params": {
            "terminal_id": 17,
            "operator_id": operator,
            "product_id": "gift-card",
            "amount_to_send_x100": 500 + (i as i64 % 20) * 250,
            "receiver_email": format!("customer{i}@example.com")
        }
    })
}

/// `count` plain purchases, every fifth declined; the first is sent twice, as a producer
/// retrying would send it.
fn push_plain_purchases(out: &mut Vec<BatchMessage>, source: &str, hook: &str, count: usize) {
    for i in 0..count {
        let (operator, expected) = if i % 5 == 4 {
            (OPERATOR_DECLINE, Status::Declined)
        } else {
            (OPERATOR_OK, Status::Succeeded)
        };
        let body = purchase_command(source, hook, i, operator);
        out.push((
            "purchase.csq".to_string(),
            serde_json::to_vec(&body).unwrap_or_default(),
            Sent::new(i, &body, expected, true),
        ));
        if i == 0 {
            // The duplicate: the same command again, as a producer retrying would send it.
            out.push((
                "purchase.csq".to_string(),
                serde_json::to_vec(&body).unwrap_or_default(),
                Sent {
                    correlation_id: "msg-dup".into(),
                    ..Sent::new(i, &body, expected, true)
                },
            ));
        }
    }
}

/// Malformed commands, each refused for a different reason: (routing key, body, whether it
/// names a callback). The first three are not even JSON, so nothing can be called back.
fn malformed_commands(source: &str, hook: &str) -> Vec<(&'static str, Vec<u8>, bool)> {
    let purchase = |i: usize| purchase_command(source, hook, i, OPERATOR_OK);
    let mut float_amount = purchase(9001);
    float_amount["params"]["amount_to_send_x100"] = json!(12.5);
    let mut negative = purchase(9002);
    negative["params"]["amount_to_send_x100"] = json!(-100);
    let mut unknown_param = purchase(9003);
    unknown_param["params"]["pin"] = json!("0000");
    let mut unknown_provider = purchase(9004);
    unknown_provider["provider"] = json!("acme");
    let mut no_id = purchase(9005);
    no_id.as_object_mut().map(|o| o.remove("command_id"));
    let mismatch = purchase(9006);
    let mut out: Vec<(&'static str, Vec<u8>, bool)> = vec![
        (
            "purchase.csq",
            b"{\"command_id\": \"oops\", not json".to_vec(),
            false,
        ),
        ("purchase.csq", vec![0xc3, 0x28, 0xff], false),
        ("purchase.csq", vec![b' '; 70 * 1024], false),
    ];
    let refused = [
        ("purchase.csq", float_amount),
        ("purchase.csq", negative),
        ("purchase.csq", unknown_param),
        ("purchase.acme", unknown_provider),
        ("purchase.csq", no_id),
        ("redeem.csq", mismatch),
    ];
    out.extend(refused.into_iter().map(|(key, body)| {
        let bytes = serde_json::to_vec(&body).unwrap_or_default();
        (key, bytes, true)
    }));
    out
}

/// One of each longer flow: additional data, dynamic products, a raffle, a timeout after
/// the sale (resolved by query), a 5xx before it (provably not sold), and two reads.
fn long_flow_commands(source: &str, hook: &str) -> Vec<(String, Value, Status)> {
    let purchase = |i: usize, operator: i32| purchase_command(source, hook, i, operator);
    let read = |i: usize, kind: &str, params: Value| {
        json!({"command_id": format!("cmd-{i:04}"), "source": source, "kind": kind,
               "provider": "csq", "callback_url": hook, "params": params})
    };
    let mut dynamic = purchase(8002, OPERATOR_DYNAMIC);
    dynamic["params"]
        .as_object_mut()
        .map(|p| p.remove("product_id"));
    dynamic["params"]["amount_to_send_x100"] = json!(1000);
    vec![
        (
            "purchase.csq".into(),
            purchase(8001, OPERATOR_ADDITIONAL_DATA),
            Status::Succeeded,
        ),
        ("purchase.csq".into(), dynamic, Status::Succeeded),
        (
            "purchase.csq".into(),
            purchase(8003, OPERATOR_RAFFLE),
            Status::Succeeded,
        ),
        (
            "purchase.csq".into(),
            purchase(8004, OPERATOR_SLOW),
            Status::Succeeded,
        ),
        (
            "purchase.csq".into(),
            purchase(8005, OPERATOR_UNAVAILABLE),
            Status::Failed,
        ),
        (
            "products.csq".into(),
            read(
                8006,
                "products",
                json!({"terminal_id": 17, "operator_id": OPERATOR_DYNAMIC}),
            ),
            Status::Succeeded,
        ),
        (
            "balance.csq".into(),
            read(8007, "balance", json!({"terminal_id": 17})),
            Status::Succeeded,
        ),
    ]
}
