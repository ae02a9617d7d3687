//! `voucher-relay publish <file.json>`: a producer for people and scripts.
//!
//! The file holds one command object or an array of them. Each is published to
//! `voucher.commands` with routing key `<kind>.<provider>`, persistent, as JSON, with
//! publisher confirms. With `--wait`, the outcomes are read from a private reply queue and
//! printed, one JSON line each, and the exit code says how they went (see [`Summary`]).

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

/// The exit code when every outcome arrived and at least one did not succeed.
pub const EXIT_NOT_SUCCEEDED: u8 = 2;
/// The exit code when not every outcome arrived within the wait.
pub const EXIT_TIMED_OUT: u8 = 3;

/// What `publish` did and, with `--wait`, what came back.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Summary {
    pub published: usize,
    /// The wait, if outcomes were waited for.
    pub waited: Option<Duration>,
    /// Terminal outcomes that arrived; progress events (`pending`) are printed, not counted.
    pub arrived: usize,
    /// Of those, the ones whose status is not `succeeded` (declined, failed, expired,
    /// reversed, rejected, or unreadable).
    pub not_succeeded: usize,
}

impl Summary {
    /// 0 when nothing was waited for or every outcome succeeded; [`EXIT_TIMED_OUT`] when an
    /// outcome is missing, whatever the others said; else [`EXIT_NOT_SUCCEEDED`] when one
    /// did not succeed.
    pub fn exit_code(&self) -> u8 {
        match self.waited {
            None => 0,
            Some(_) if self.arrived < self.published => EXIT_TIMED_OUT,
            Some(_) if self.not_succeeded > 0 => EXIT_NOT_SUCCEEDED,
            Some(_) => 0,
        }
    }

    /// The line for stderr that goes with a non-zero exit code.
    pub fn problem(&self) -> Option<String> {
        let (count, wait) = (self.published, self.waited?);
        match self.exit_code() {
            EXIT_TIMED_OUT => Some(format!(
                "{} of {count} outcomes arrived within {}s. Is the relay running? Start it in \
                 another terminal with `voucher-relay run` (same broker and config), or wait longer.",
                self.arrived,
                wait.as_secs()
            )),
            EXIT_NOT_SUCCEEDED => Some(format!(
                "{} of {count} outcomes did not succeed",
                self.not_succeeded
            )),
            _ => None,
        }
    }
}

/// Publishes `commands`; with `wait`, prints each outcome as it arrives, up to `wait`.
pub async fn run(
    config: &Config,
    commands: Vec<Outgoing>,
    wait: Option<Duration>,
) -> anyhow::Result<Summary> {
    let exchange = config.name(&config.broker.commands_exchange);
    let conn = broker::connect(&config.broker.url, "voucher-relay publish").await?;
    let mut replies = match wait {
        Some(_) => Some(ReplyQueue::open(&conn).await?),
        None => None,
    };
    let publisher = Publisher::connect(&config.broker.url).await?;
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
    let mut summary = Summary {
        published: commands.len(),
        waited: wait,
        arrived: 0,
        not_succeeded: 0,
    };
    if let (Some(limit), Some(queue)) = (wait, replies.as_mut()) {
        let result = print_outcomes(queue, limit, &mut summary).await;
        let _ = conn.close(200, "done".into()).await;
        result?;
    } else {
        let _ = conn.close(200, "done".into()).await;
    }
    Ok(summary)
}

/// Prints what arrives on `queue`, one JSON line each, until every command has its terminal
/// outcome or `limit` has passed; counts them in `summary`.
async fn print_outcomes(
    queue: &mut ReplyQueue,
    limit: Duration,
    summary: &mut Summary,
) -> anyhow::Result<()> {
    let deadline = tokio::time::Instant::now() + limit;
    while summary.arrived < summary.published {
        let delivery = match tokio::time::timeout_at(deadline, queue.next()).await {
            Ok(Some(d)) => d,
            Ok(None) => anyhow::bail!("the reply queue closed"),
            Err(_) => return Ok(()),
        };
        println!("{}", String::from_utf8_lossy(&delivery.data));
        delivery.ack(BasicAckOptions::default()).await?;
        let status = serde_json::from_slice::<Value>(&delivery.data)
            .ok()
            .and_then(|v| v.get("status").and_then(Value::as_str).map(str::to_string));
        match status.as_deref() {
            Some("pending") => {}
            Some("succeeded") => summary.arrived += 1,
            _ => {
                summary.arrived += 1;
                summary.not_succeeded += 1;
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn summary(waited: bool, arrived: usize, not_succeeded: usize) -> Summary {
        Summary {
            published: 2,
            waited: waited.then_some(Duration::from_secs(3)),
            arrived,
            not_succeeded,
        }
    }

    #[test]
    fn exit_codes_say_how_the_outcomes_went() {
        assert_eq!(summary(false, 0, 0).exit_code(), 0);
        assert_eq!(summary(true, 2, 0).exit_code(), 0);
        assert_eq!(summary(true, 2, 1).exit_code(), EXIT_NOT_SUCCEEDED);
        assert_eq!(summary(true, 1, 0).exit_code(), EXIT_TIMED_OUT);
        assert_eq!(summary(true, 1, 1).exit_code(), EXIT_TIMED_OUT);
        assert_eq!(summary(true, 2, 0).problem(), None);
        let late = summary(true, 0, 0).problem().unwrap_or_default();
        assert!(
            late.starts_with("0 of 2 outcomes arrived within 3s"),
            "{late}"
        );
        assert!(late.contains("voucher-relay run"), "{late}");
    }
}
