//! What operators do, the same way from the CLI (`dlq`, `tx`) and from the web console:
//! replay and discard the items of the dead-letter and parked places, one at a time, each
//! recorded with who and why. Reading is in [`crate::store::dlq`] and
//! [`crate::store::timeline`]; [`render`] turns it into text.

pub mod cli;
pub mod render;

use std::time::Duration;

use crate::broker::Publisher;
use crate::broker::publisher::{json_properties, with_header};
use crate::config::Config;
use crate::error::RelayError;
use crate::store::Store;
use crate::store::dlq::{Actor, AfterReplay, Done, Place};
use crate::workers::follow_up::wake_up_body;

/// What happened to one item of an action.
#[derive(Debug, Clone, serde::Serialize)]
pub struct ItemResult {
    pub id: String,
    /// `None` when the action failed on this item (see `error`).
    pub done: Option<Done>,
    pub error: Option<String>,
}

/// The action to take on each item.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Action {
    Replay,
    Discard,
}

impl Action {
    pub fn as_str(self) -> &'static str {
        match self {
            Action::Replay => "replay",
            Action::Discard => "discard",
        }
    }
}

/// One operator request: an action on some items of one place.
#[derive(Debug, Clone)]
pub struct Request<'a> {
    pub action: Action,
    pub place: Place,
    pub ids: &'a [String],
    pub actor: &'a Actor,
    /// Why, in the operator's words: recorded with every item.
    pub why: &'a str,
    /// Items a second at most (`None`: as fast as they go).
    pub rate: Option<u32>,
}

/// Carries out `req` on its items one after the other. `each` is called after every item
/// (for a progress bar). An item that fails does not stop the others; its error is in its
/// result.
pub async fn act(
    config: &Config,
    store: &Store,
    req: &Request<'_>,
    mut each: impl FnMut(usize),
) -> anyhow::Result<Vec<ItemResult>> {
    let Request {
        action,
        place,
        ids,
        actor,
        why,
        rate,
    } = *req;
    if action == Action::Replay
        && let Some(why_not) = place.cannot_replay()
    {
        anyhow::bail!("{} items cannot be replayed: {why_not}", place.name());
    }
    // Replays publish: one connection for the whole run, opened before anything changes.
    let publisher = match action {
        Action::Replay => Some(Publisher::connect(&config.broker.url).await?),
        Action::Discard => None,
    };
    let pause = rate
        .filter(|r| *r > 0)
        .map(|r| Duration::from_secs_f64(1.0 / f64::from(r)));
    let mut results = Vec::with_capacity(ids.len());
    for (i, id) in ids.iter().enumerate() {
        if i > 0
            && let Some(p) = pause
        {
            tokio::time::sleep(p).await;
        }
        let done = match (action, &publisher) {
            (Action::Replay, Some(publisher)) => {
                replay_one(config, store, publisher, place, id, actor, why).await
            }
            _ => store.discard(place, id, actor, why).await,
        };
        results.push(match done {
            Ok(done) => ItemResult {
                id: id.clone(),
                done: Some(done),
                error: None,
            },
            Err(e) => ItemResult {
                id: id.clone(),
                done: None,
                error: Some(e.to_string()),
            },
        });
        each(i + 1);
    }
    if let Some(p) = publisher {
        p.close().await;
    }
    Ok(results)
}

/// Replays one item: the database change and its audit entry commit together; the
/// wake-up that makes a running relay act at once goes after (if it is lost, the
/// sweeper finds the item within about a minute).
async fn replay_one(
    config: &Config,
    store: &Store,
    publisher: &Publisher,
    place: Place,
    id: &str,
    actor: &Actor,
    why: &str,
) -> Result<Done, RelayError> {
    if place == Place::VoucherDead {
        let by = actor.name.clone();
        return store
            .replay_dead_letter(id, actor, why, |r| async move {
                // The way it first came (its exchange and routing key: the executor checks
                // the key against the body), answering the same reply queue, and marked so
                // its next death is told apart. Without an exchange, straight to its queue.
                let mut props = with_header(json_properties(), "x-voucher-replayed-by", &by);
                if let Some(to) = r.reply_to {
                    props = props.with_reply_to(to.into());
                }
                if let Some(c) = r.correlation_id {
                    props = props.with_correlation_id(c.into());
                }
                let (exchange, key) = if r.exchange.is_empty() {
                    ("", r.queue.as_str())
                } else {
                    (r.exchange.as_str(), r.routing_key.as_str())
                };
                if key.is_empty() {
                    return Err(RelayError::Poison(
                        "the dead letter does not say where it came from".into(),
                    ));
                }
                publisher
                    .publish_routed(exchange, key, &r.body, props)
                    .await
            })
            .await;
    }
    let budget = |provider: &str| config.providers.advices_of(provider).map(|(b, _)| b);
    let (done, after) = store.replay_parked(place, id, actor, why, budget).await?;
    let woken = match after {
        AfterReplay::WakeAdvice {
            transaction_id,
            provider,
        } => match config.providers.advices_of(&provider) {
            Some((_, queue)) => {
                publisher
                    .publish_routed(
                        "",
                        &config.name(queue),
                        &wake_up_body(transaction_id),
                        json_properties(),
                    )
                    .await
            }
            None => Ok(()),
        },
        AfterReplay::WakePoll {
            transaction_id,
            provider,
        } => {
            crate::retry::publish_after(
                publisher,
                config,
                &format!("{provider}.poll"),
                &wake_up_body(transaction_id),
                Duration::ZERO,
            )
            .await
        }
        AfterReplay::Callback | AfterReplay::Nothing => Ok(()),
    };
    if let Err(e) = woken {
        tracing::warn!(item = id, error = %e, "replayed; the wake-up was not published, the sweeper sends it within about a minute");
    }
    Ok(done)
}

/// The person at the terminal: `$USER`, else `$LOGNAME`, else the user id's name in
/// `/etc/passwd`, else `uid <n>`.
pub fn os_user() -> String {
    for var in ["USER", "LOGNAME"] {
        if let Ok(v) = std::env::var(var)
            && !v.is_empty()
        {
            return v;
        }
    }
    let uid = std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("Uid:"))
                .and_then(|l| l.split_whitespace().next().map(str::to_owned))
        });
    let Some(uid) = uid else {
        return "unknown".into();
    };
    std::fs::read_to_string("/etc/passwd")
        .ok()
        .and_then(|p| {
            p.lines().find_map(|l| {
                let f: Vec<&str> = l.split(':').collect();
                (f.len() > 2 && f[2] == uid).then(|| f[0].to_owned())
            })
        })
        .unwrap_or(format!("uid {uid}"))
}

/// A duration such as `90s`, `10m`, `2h` or `7d` (a bare number is seconds).
pub fn parse_duration(text: &str) -> Result<Duration, String> {
    let t = text.trim();
    let split = t.find(|c: char| !c.is_ascii_digit()).unwrap_or(t.len());
    let (digits, unit) = t.split_at(split);
    let n: u64 = digits
        .parse()
        .map_err(|_| format!("{text:?} is not a duration like 90s, 10m, 2h or 7d"))?;
    let secs = match unit {
        "" | "s" => 1,
        "m" => 60,
        "h" => 3600,
        "d" => 86_400,
        _ => return Err(format!("{text:?}: the unit must be s, m, h or d")),
    };
    n.checked_mul(secs)
        .map(Duration::from_secs)
        .ok_or_else(|| format!("{text:?} is too long"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_read_as_people_write_them() {
        assert_eq!(parse_duration("90s"), Ok(Duration::from_secs(90)));
        assert_eq!(parse_duration("10m"), Ok(Duration::from_secs(600)));
        assert_eq!(parse_duration("2h"), Ok(Duration::from_secs(7200)));
        assert_eq!(parse_duration("7d"), Ok(Duration::from_secs(604_800)));
        assert_eq!(parse_duration("45"), Ok(Duration::from_secs(45)));
        for bad in ["", "m", "10x", "-5m", "1.5h", "99999999999999999999d"] {
            assert!(parse_duration(bad).is_err(), "{bad} accepted");
        }
    }

    #[test]
    fn someone_is_always_named() {
        assert!(!os_user().is_empty());
    }
}
