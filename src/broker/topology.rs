//! Declares the topology of `queues.toml` and checks it against the broker.
//!
//! A queue that exists with other arguments makes RabbitMQ close the channel with
//! PRECONDITION_FAILED. Each declaration runs on a channel that is replaced after such an
//! error, so every mismatch is collected and reported by name instead of killing the caller.

use lapin::options::{
    ExchangeDeclareOptions, ExchangeDeleteOptions, QueueBindOptions, QueueDeclareOptions,
    QueueDeleteOptions,
};
use lapin::types::{AMQPValue, FieldTable};
use lapin::{Channel, Connection, ExchangeKind};

use crate::config::{Config, ExchangeKind as Kind};

/// What `declare` or `check` found wrong, one line per object.
#[derive(Debug, thiserror::Error)]
#[error("the broker topology does not match queues.toml:\n  - {}", .problems.join("\n  - "))]
pub struct TopologyError {
    pub problems: Vec<String>,
}

/// What to do with each object.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// Create what is missing, bind, and report mismatches.
    Declare,
    /// Create nothing; report what is missing or different.
    Check,
}

/// One exchange or queue as the broker should hold it.
struct Object {
    what: &'static str,
    name: String,
    kind: Option<ExchangeKind>,
    args: FieldTable,
}

fn text(v: &str) -> AMQPValue {
    AMQPValue::LongString(v.into())
}

fn objects(config: &Config) -> Vec<Object> {
    let b = &config.broker;
    let mut out = Vec::new();
    for e in &config.exchanges {
        let mut args = FieldTable::default();
        if let Some(ae) = &e.alternate_exchange {
            args.insert("alternate-exchange".into(), text(&b.name(ae)));
        }
        out.push(Object {
            what: "exchange",
            name: b.name(&e.name),
            kind: Some(match e.kind {
                Kind::Topic => ExchangeKind::Topic,
                Kind::Fanout => ExchangeKind::Fanout,
                Kind::Direct => ExchangeKind::Direct,
            }),
            args,
        });
    }
    for t in &config.delay_tiers {
        // A fanout exchange per tier keeps the message's own routing key, which the
        // dead-lettering then uses to route it back to its work queue.
        out.push(Object {
            what: "exchange",
            name: b.name(&t.name),
            kind: Some(ExchangeKind::Fanout),
            args: FieldTable::default(),
        });
    }
    for q in &config.queues {
        let mut args = FieldTable::default();
        args.insert("x-queue-type".into(), text("quorum"));
        args.insert(
            "x-delivery-limit".into(),
            AMQPValue::LongInt(i32::try_from(q.delivery_limit).unwrap_or(i32::MAX)),
        );
        if let Some(dlx) = &q.dead_letter_exchange {
            args.insert("x-dead-letter-exchange".into(), text(&b.name(dlx)));
        }
        out.push(Object {
            what: "queue",
            name: b.name(&q.name),
            kind: None,
            args,
        });
    }
    for t in &config.delay_tiers {
        let mut args = FieldTable::default();
        args.insert("x-queue-type".into(), text("quorum"));
        args.insert("x-delivery-limit".into(), AMQPValue::LongInt(20));
        args.insert(
            "x-message-ttl".into(),
            AMQPValue::LongLongInt(i64::try_from(t.ttl_ms).unwrap_or(i64::MAX)),
        );
        args.insert(
            "x-dead-letter-exchange".into(),
            text(&b.name(&b.retry_exchange)),
        );
        // Quorum queues drop dead letters unless told otherwise; a delayed retry must not be lost.
        args.insert("x-dead-letter-strategy".into(), text("at-least-once"));
        args.insert("x-overflow".into(), text("reject-publish"));
        out.push(Object {
            what: "queue",
            name: b.name(&t.name),
            kind: None,
            args,
        });
    }
    out
}

fn bindings(config: &Config) -> Vec<(String, String, String)> {
    let b = &config.broker;
    let mut out = Vec::new();
    for q in &config.queues {
        for binding in &q.bindings {
            out.push((
                b.name(&q.name),
                b.name(&binding.exchange),
                binding.routing_key.clone(),
            ));
        }
    }
    for t in &config.delay_tiers {
        out.push((b.name(&t.name), b.name(&t.name), String::new()));
    }
    out
}

async fn declare_one(ch: &Channel, o: &Object, passive: bool) -> Result<(), lapin::Error> {
    match &o.kind {
        Some(kind) => {
            ch.exchange_declare(
                o.name.as_str().into(),
                kind.clone(),
                ExchangeDeclareOptions {
                    passive,
                    durable: true,
                    ..Default::default()
                },
                o.args.clone(),
            )
            .await
        }
        None => ch
            .queue_declare(
                o.name.as_str().into(),
                QueueDeclareOptions {
                    passive,
                    durable: true,
                    ..Default::default()
                },
                o.args.clone(),
            )
            .await
            .map(|_| ()),
    }
}

/// Declares (or checks) everything, returning every problem at once.
pub async fn apply(conn: &Connection, config: &Config, mode: Mode) -> anyhow::Result<()> {
    let mut ch = conn.create_channel().await?;
    let mut problems = Vec::new();
    for o in objects(config) {
        if mode == Mode::Check {
            if let Err(e) = declare_one(&ch, &o, true).await {
                problems.push(format!("{} {} is missing ({e})", o.what, o.name));
                ch = conn.create_channel().await?;
                continue;
            }
        }
        // Re-declaring with the same arguments is a no-op; different ones fail with 406.
        if let Err(e) = declare_one(&ch, &o, false).await {
            problems.push(format!(
                "{} {} exists with other arguments than queues.toml asks ({e}); drain and delete it, or change queues.toml to match",
                o.what, o.name
            ));
            ch = conn.create_channel().await?;
        }
    }
    if mode == Mode::Declare && problems.is_empty() {
        for (queue, exchange, key) in bindings(config) {
            if let Err(e) = ch
                .queue_bind(
                    queue.as_str().into(),
                    exchange.as_str().into(),
                    key.as_str().into(),
                    QueueBindOptions::default(),
                    FieldTable::default(),
                )
                .await
            {
                problems.push(format!("binding {queue} <- {exchange} ({key}): {e}"));
                ch = conn.create_channel().await?;
            }
        }
    }
    let _ = ch.close(200, "topology done".into()).await;
    if problems.is_empty() {
        Ok(())
    } else {
        Err(TopologyError { problems }.into())
    }
}

/// Deletes every exchange and queue of the config (with their messages). For throw-away
/// topologies only: the demo's `demo.` prefix and the tests' own prefixes.
pub async fn delete(conn: &Connection, config: &Config) -> anyhow::Result<()> {
    let mut ch = conn.create_channel().await?;
    for o in objects(config) {
        let deleted = match o.kind {
            Some(_) => {
                ch.exchange_delete(o.name.as_str().into(), ExchangeDeleteOptions::default())
                    .await
            }
            None => ch
                .queue_delete(o.name.as_str().into(), QueueDeleteOptions::default())
                .await
                .map(|_| ()),
        };
        if deleted.is_err() {
            ch = conn.create_channel().await?;
        }
    }
    let _ = ch.close(200, "deleted".into()).await;
    Ok(())
}
