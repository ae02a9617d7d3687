//! The `dlq` and `tx` subcommands: readable tables by default, `--json` for scripts.
//! Changes are counted and confirmed before anything is done, unless `--yes`.

use std::io::{BufRead, Write};

use chrono::Utc;
use clap::{Args, Subcommand};
use serde_json::json;

use super::{Action, ItemResult, Request, act, os_user, parse_duration, render};
use crate::config::{Config, ProcessEnv};
use crate::crypto::Sealer;
use crate::progress::progress;
use crate::store::Store;
use crate::store::dlq::{Actor, Done, Place, Selection, Via, first_bad_id};
use crate::store::timeline::Find;

/// The places, for `--help`.
const PLACES: &str = "voucher.dead, voucher.rejected, advice.parked, polls.parked, callbacks.dead";

#[derive(Subcommand)]
pub enum DlqAction {
    /// Every dead-letter and parked place: its count, the age of its oldest item, and its
    /// reasons with counts.
    List {
        #[arg(long)]
        json: bool,
    },
    /// The items of one place, decoded and masked (reading never changes anything).
    Show {
        /// One of: voucher.dead, voucher.rejected, advice.parked, polls.parked, callbacks.dead.
        place: String,
        /// Only the items with this reason (as `dlq list` shows it).
        #[arg(long)]
        reason: Option<String>,
        /// At most this many items, oldest first.
        #[arg(long, default_value_t = 20)]
        limit: i64,
        #[arg(long)]
        json: bool,
    },
    /// Put items back to work. Safe to run twice: an item already replayed, or whose
    /// command reached its outcome, is not redone.
    Replay(Change),
    /// Set items aside for good: archived in PostgreSQL (never deleted), no longer waiting.
    Discard(Change),
}

/// Which items of which place, and why: shared by `replay` and `discard`.
#[derive(Args)]
#[command(group(clap::ArgGroup::new("which").required(true).args(["id", "reason", "all"])))]
pub struct Change {
    /// One of: voucher.dead, voucher.rejected, advice.parked, polls.parked, callbacks.dead.
    place: String,
    /// These items (ids as `dlq show` prints them); repeat or separate with commas.
    #[arg(long, value_delimiter = ',', num_args = 1..)]
    id: Vec<String>,
    /// Every item with this reason.
    #[arg(long)]
    reason: Option<String>,
    /// Every item of the place.
    #[arg(long)]
    all: bool,
    /// Why, recorded in the audit trail with your name.
    #[arg(long, value_name = "WHY")]
    reason_text: String,
    /// Print what would be done, and do nothing.
    #[arg(long)]
    dry_run: bool,
    /// At most this many items a second.
    #[arg(long)]
    rate: Option<u32>,
    /// Do not ask for confirmation.
    #[arg(long)]
    yes: bool,
    #[arg(long)]
    json: bool,
}

#[derive(Subcommand)]
pub enum TxAction {
    /// The timeline of one transaction: state changes, provider exchanges (masked),
    /// advices, polls, callback attempts, and the time between steps.
    Show {
        /// A transaction id, a command id, a provider request id, or a voucher serial or
        /// provider reference.
        key: String,
        #[arg(long)]
        json: bool,
    },
    /// Transactions by state or status, provider, source and age (oldest first).
    Find {
        /// A state (received, sending, unknown, awaiting_data, awaiting_draw, reversing,
        /// completed) or a status (succeeded, declined, reversed, failed, expired).
        #[arg(long)]
        status: Option<String>,
        #[arg(long)]
        provider: Option<String>,
        /// Older than this: 90s, 10m, 2h, 7d.
        #[arg(long, value_name = "DURATION")]
        older_than: Option<String>,
        #[arg(long)]
        source: Option<String>,
        #[arg(long, default_value_t = 50)]
        limit: i64,
        #[arg(long)]
        json: bool,
    },
}

fn place_of(name: &str) -> anyhow::Result<Place> {
    Place::parse(name).ok_or_else(|| anyhow::anyhow!("no place {name:?}; the places are: {PLACES}"))
}

async fn open_store(config: &Config) -> anyhow::Result<Store> {
    let sealer = Sealer::with_keys(&config.secrets.data_keys);
    Ok(Store::connect(&config.database, sealer).await?)
}

fn print_json(v: &impl serde::Serialize) -> anyhow::Result<()> {
    println!("{}", serde_json::to_string_pretty(v)?);
    Ok(())
}

/// `voucher-relay dlq …`; the exit code is 0 when everything asked for was done.
pub async fn dlq(config: &mut Config, action: DlqAction) -> anyhow::Result<bool> {
    let now = Utc::now();
    match action {
        DlqAction::List { json } => {
            let store = open_store(config).await?;
            let list = store.dlq_summaries().await?;
            if json {
                print_json(&list)?;
            } else {
                print!("{}", render::summaries(&list, now));
            }
            Ok(true)
        }
        DlqAction::Show {
            place,
            reason,
            limit,
            json,
        } => {
            let place = place_of(&place)?;
            let store = open_store(config).await?;
            let selection = reason.map_or(Selection::All, Selection::Reason);
            let items = store.dlq_items(place, &selection, limit.max(1)).await?;
            if json {
                print_json(&items)?;
            } else if items.is_empty() {
                eprintln!("nothing waits in {}", place.name());
            } else {
                print!("{}", render::items(&items, now));
            }
            Ok(true)
        }
        DlqAction::Replay(change) => change_items(config, Action::Replay, change).await,
        DlqAction::Discard(change) => change_items(config, Action::Discard, change).await,
    }
}

/// `dlq replay` and `dlq discard`.
async fn change_items(config: &mut Config, action: Action, c: Change) -> anyhow::Result<bool> {
    let place = place_of(&c.place)?;
    if action == Action::Replay
        && let Some(why_not) = place.cannot_replay()
    {
        anyhow::bail!("{} items cannot be replayed: {why_not}", place.name());
    }
    if c.reason_text.trim().is_empty() {
        anyhow::bail!("--reason-text must say why");
    }
    if let Some(bad) = first_bad_id(place, &c.id) {
        anyhow::bail!("{bad:?} is not an id of {}", place.name());
    }
    // A dead letter is replayed from its sealed copy: the keys must be at hand.
    if action == Action::Replay && place == Place::VoucherDead {
        config.read_data_keys(&ProcessEnv)?;
    }
    let store = open_store(config).await?;
    let selection = if !c.id.is_empty() {
        Selection::Ids(c.id.clone())
    } else if let Some(r) = &c.reason {
        Selection::Reason(r.clone())
    } else {
        Selection::All
    };
    let waiting = store.dlq_items(place, &selection, i64::MAX).await?;
    let ids: Vec<String> = match &selection {
        // Named ids are all tried, so one that no longer waits is reported as such.
        Selection::Ids(ids) => ids.clone(),
        _ => waiting.iter().map(|i| i.id.clone()).collect(),
    };
    let verb = action.as_str();
    eprintln!(
        "{verb}: {} item(s) of {} ({} waiting now)",
        ids.len(),
        place.name(),
        waiting.len()
    );
    if ids.is_empty() {
        eprintln!("nothing to {verb}");
        return Ok(true);
    }
    if c.dry_run {
        let now = Utc::now();
        if c.json {
            print_json(
                &json!({"dry_run": true, "action": verb, "place": place, "items": waiting}),
            )?;
        } else {
            print!("{}", render::items(&waiting, now));
            eprintln!("dry run: nothing was done");
        }
        return Ok(true);
    }
    if !c.yes && !confirm(&format!("{verb} {} item(s) of {}", ids.len(), place.name()))? {
        eprintln!("not confirmed: nothing was done (answer yes, or pass --yes)");
        return Ok(false);
    }
    let actor = Actor {
        name: os_user(),
        via: Via::Cli,
    };
    let req = Request {
        action,
        place,
        ids: &ids,
        actor: &actor,
        why: &c.reason_text,
        rate: c.rate,
    };
    let total = ids.len();
    let results = act(config, &store, &req, |done| progress(done, total, "items")).await?;
    if std::io::IsTerminal::is_terminal(&std::io::stderr()) {
        eprintln!();
    }
    report(&results, verb, place, c.json)
}

/// Prints what happened to each item; false if one failed.
fn report(results: &[ItemResult], verb: &str, place: Place, json: bool) -> anyhow::Result<bool> {
    let count = |d: Option<Done>| results.iter().filter(|r| r.done == d).count();
    let failed = count(None);
    if json {
        print_json(&json!({"action": verb, "place": place, "results": results}))?;
    } else {
        for r in results {
            let line = match (r.done, &r.error) {
                (Some(Done::Replayed), _) => format!("replayed      {}", r.id),
                (Some(Done::Discarded), _) => format!("discarded     {}", r.id),
                (Some(Done::AlreadyDone), _) => format!(
                    "already done  {} (its command had reached its outcome: nothing redone)",
                    r.id
                ),
                (Some(Done::NotWaiting), _) => format!(
                    "not waiting   {} (replayed or discarded before, or no such item)",
                    r.id
                ),
                (None, e) => format!("failed        {}: {}", r.id, e.as_deref().unwrap_or("")),
            };
            println!("{line}");
        }
    }
    eprintln!(
        "{verb} of {}: {} replayed, {} discarded, {} already done, {} not waiting, {failed} failed",
        place.name(),
        count(Some(Done::Replayed)),
        count(Some(Done::Discarded)),
        count(Some(Done::AlreadyDone)),
        count(Some(Done::NotWaiting)),
    );
    Ok(failed == 0)
}

/// Asks on stderr, reads a line on stdin: only `yes` goes on (end of input does not).
fn confirm(what: &str) -> anyhow::Result<bool> {
    eprint!("{what}? Type yes to go on: ");
    std::io::stderr().flush()?;
    let mut answer = String::new();
    std::io::stdin().lock().read_line(&mut answer)?;
    Ok(answer.trim().eq_ignore_ascii_case("yes"))
}

/// `voucher-relay tx …`; false when nothing matched.
pub async fn tx(config: &Config, action: TxAction) -> anyhow::Result<bool> {
    let store = open_store(config).await?;
    let now = Utc::now();
    match action {
        TxAction::Show { key, json } => {
            let found = store.find_transactions(&key).await?;
            match found.as_slice() {
                [] => {
                    eprintln!("no transaction matches {key:?}");
                    Ok(false)
                }
                [one] => {
                    let steps = store.timeline(one.id).await?;
                    if json {
                        print_json(&json!({"transaction": one, "steps": steps}))?;
                    } else {
                        print!("{}", render::timeline(one, &steps));
                    }
                    Ok(true)
                }
                many => {
                    if json {
                        print_json(&json!({"transactions": many}))?;
                    } else {
                        print!("{}", render::transactions(many, now));
                    }
                    eprintln!(
                        "{} transactions match {key:?}: show one by its transaction id",
                        many.len()
                    );
                    Ok(true)
                }
            }
        }
        TxAction::Find {
            status,
            provider,
            older_than,
            source,
            limit,
            json,
        } => {
            let older_than_secs = older_than
                .as_deref()
                .map(parse_duration)
                .transpose()
                .map_err(anyhow::Error::msg)?
                .map(|d| d.as_secs_f64());
            let find = Find {
                status,
                provider,
                source,
                older_than_secs,
                limit: limit.max(1),
            };
            let list = store.filter_transactions(&find).await?;
            if json {
                print_json(&list)?;
            } else if list.is_empty() {
                eprintln!("no transaction matches");
            } else {
                print!("{}", render::transactions(&list, now));
            }
            Ok(true)
        }
    }
}
