//! `voucher-relay publish <file.json>`: a producer for people and scripts.
//!
//! The file holds one command object or an array of them. Each is published to
//! `voucher.commands` with routing key `<kind>.<provider>`, persistent, as JSON, with
//! publisher confirms. With `--wait`, the outcomes are read from a private reply queue and
//! printed, one JSON line each.

use std::path::Path;
use std::time::Duration;

use lapin::options::BasicAckOptions;
use serde_json::Value;

use crate::broker::reply::ReplyQueue;
use crate::broker::{self, Publisher, publisher::json_properties};
use crate::config::Config;

/// One command ready to publish.
pub struct Outgoing {
    pub routing_key: String,
    pub body: Vec<u8>,
    pub correlation_id: String,
}

/// Reads the commands in `path`; the routing key comes from each body's kind and provider.
pub fn read_file(path: &Path) -> anyhow::Result<Vec<Outgoing>> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| anyhow::anyhow!("cannot read {}: {e}", path.display()))?;
    let value: Value = serde_json::from_str(&text)
        .map_err(|e| anyhow::anyhow!("{} is not JSON: {e}", path.display()))?;
    let items = match value {
        Value::Array(items) => items,
        one => vec![one],
    };
    items
        .into_iter()
        .enumerate()
        .map(|(i, cmd)| {
            let field = |k: &str| cmd.get(k).and_then(Value::as_str).map(str::to_string);
            let (Some(kind), Some(provider)) = (field("kind"), field("provider")) else {
                anyhow::bail!("command #{i} in {} has no kind or provider", path.display());
            };
            Ok(Outgoing {
                routing_key: format!("{kind}.{provider}"),
                correlation_id: field("command_id").unwrap_or_else(|| format!("cmd-{i}")),
                body: serde_json::to_vec(&cmd)?,
            })
        })
        .collect()
}

/// Publishes `commands`; with `wait`, prints each outcome as it arrives, up to `wait`.
pub async fn run(
    config: &Config,
    commands: Vec<Outgoing>,
    wait: Option<Duration>,
) -> anyhow::Result<()> {
    let exchange = config.name(&config.broker.commands_exchange);
    let conn = broker::connect(&config.broker.url, "voucher-relay publish").await?;
    let mut replies = match wait {
        Some(_) => Some(ReplyQueue::open(&conn).await?),
        None => None,
    };
    let publisher = Publisher::connect(&config.broker.url).await?;
    let count = commands.len();
    for c in &commands {
        let mut props = json_properties().with_correlation_id(c.correlation_id.as_str().into());
        if let Some(queue) = &replies {
            props = props.with_reply_to(queue.name.as_str().into());
        }
        publisher
            .publish(&exchange, &c.routing_key, &c.body, props)
            .await?;
        eprintln!("published {} ({})", c.correlation_id, c.routing_key);
    }
    publisher.close().await;
    if let (Some(limit), Some(queue)) = (wait, replies.as_mut()) {
        let deadline = tokio::time::Instant::now() + limit;
        let mut seen = 0;
        while seen < count {
            match tokio::time::timeout_at(deadline, queue.next()).await {
                Ok(Some(d)) => {
                    println!("{}", String::from_utf8_lossy(&d.data));
                    d.ack(BasicAckOptions::default()).await?;
                    seen += 1;
                }
                Ok(_) => anyhow::bail!("the reply queue closed"),
                Err(_) => anyhow::bail!("{} of {count} outcomes arrived within {limit:?}", seen),
            }
        }
    }
    let _ = conn.close(200, "done".into()).await;
    Ok(())
}
