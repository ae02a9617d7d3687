//! The demo's report: the batch's speed, the table of outcomes by status (commands, AMQP
//! replies, verified callbacks), the counters, and the verdict: every command has exactly
//! one terminal outcome, or the list of what went wrong.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::time::Duration;

use super::batch::Sent;
use super::callbacks::Callbacks;
use super::replies::Replies;
use crate::command::{Outcome, Status};
use crate::providers::csq::sandbox::Stats;

/// The terminal statuses, in the order of the table's rows.
const STATUSES: [Status; 6] = [
    Status::Succeeded,
    Status::Declined,
    Status::Rejected,
    Status::Failed,
    Status::Reversed,
    Status::Expired,
];

/// What the batch produced.
pub(super) struct BatchResults {
    pub(super) sent: Vec<Sent>,
    pub(super) replies: Replies,
    pub(super) callbacks: Callbacks,
    /// The CSQ sandbox's counters once the batch was done.
    pub(super) csq: Stats,
    /// From the first publish until the last callback arrived (or the wait for it ended).
    pub(super) elapsed: Duration,
    /// From the first publish until the last AMQP reply.
    pub(super) replies_done: Duration,
}

/// Prints the progress events and the speed of the plain batch (the messages without a
/// longer flow), against CSQ's rate limit of `csq_rate_per_sec`.
pub(super) fn print_batch_speed(results: &BatchResults, csq_rate_per_sec: u32) {
    println!();
    println!(
        "progress events (purchase.ticket_issued): {} AMQP replies, {} callbacks",
        results.replies.progress_events,
        results.callbacks.progress.len()
    );
    if let Some(t) = results.replies.plain_done {
        let plain = results.sent.iter().filter(|s| !s.long_flow).count();
        println!(
            "plain batch: {plain} commands answered in {:.2} s ({:.1} commands/s; CSQ is limited to {} requests/s)",
            t.as_secs_f64(),
            plain as f64 / t.as_secs_f64().max(0.001),
            csq_rate_per_sec
        );
    }
}

/// The outcomes counted per message: expected and received by status, the event ids per
/// command, and every message whose outcome was not the expected one.
struct Tally<'a> {
    /// Distinct commands, by expected status (a duplicate counts once).
    commands: BTreeMap<Status, usize>,
    /// AMQP replies, by status.
    replies: BTreeMap<Status, usize>,
    events_per_key: HashMap<&'a (String, String), HashSet<&'a str>>,
    wrong: Vec<String>,
}

impl<'a> Tally<'a> {
    fn of(sent: &'a [Sent], replies: &'a HashMap<String, Outcome>) -> Tally<'a> {
        let mut tally = Tally {
            commands: BTreeMap::new(),
            replies: BTreeMap::new(),
            events_per_key: HashMap::new(),
            wrong: Vec::new(),
        };
        let mut seen_keys = HashSet::new();
        for s in sent {
            let distinct = s.key.as_ref().is_none_or(|k| seen_keys.insert(k.clone()));
            if distinct {
                *tally.commands.entry(s.expected).or_default() += 1;
            }
            match replies.get(&s.correlation_id) {
                Some(o) => tally.count_reply(s, o),
                None => tally
                    .wrong
                    .push(format!("{}: no outcome", s.correlation_id)),
            }
        }
        tally
    }

    fn count_reply(&mut self, s: &'a Sent, o: &'a Outcome) {
        *self.replies.entry(o.status).or_default() += 1;
        if o.status != s.expected {
            self.wrong.push(format!(
                "{} expected {} got {}",
                s.correlation_id,
                s.expected.as_str(),
                o.status.as_str()
            ));
        }
        if let Some(k) = &s.key {
            self.events_per_key
                .entry(k)
                .or_default()
                .insert(o.event_id.as_str());
        }
    }

    /// Commands that got more than one terminal outcome (distinct event ids).
    fn multi(&self) -> usize {
        self.events_per_key.values().filter(|e| e.len() > 1).count()
    }
}

/// Prints the report and answers whether the demo found problems, its own or
/// `electrum_problems`.
pub(super) fn report(results: &BatchResults, electrum_problems: Vec<String>) -> anyhow::Result<()> {
    let tally = Tally::of(&results.sent, &results.replies.outcomes);
    let total_commands: usize = tally.commands.values().sum();
    print_table(results, &tally, total_commands);
    let multi = tally.multi();
    print_counters(results, total_commands, multi);
    let mut failures = tally.wrong;
    failures.extend(electrum_problems);
    failures.extend(callback_problems(results, multi));
    if failures.is_empty() {
        println!("result: every command has exactly one terminal outcome");
        Ok(())
    } else {
        anyhow::bail!("demo found problems:\n  {}", failures.join("\n  "))
    }
}

/// The table of commands, AMQP replies and verified callbacks by status.
fn print_table(results: &BatchResults, tally: &Tally, total_commands: usize) {
    let callbacks = &results.callbacks.terminal;
    let mut callback_count: BTreeMap<Status, usize> = BTreeMap::new();
    for c in callbacks {
        *callback_count.entry(c.status).or_default() += 1;
    }
    println!();
    println!(
        "{:<12} {:>9} {:>13} {:>22}",
        "status", "commands", "AMQP replies", "callbacks (verified)"
    );
    for st in STATUSES {
        let (c, r, b) = (
            tally.commands.get(&st).copied().unwrap_or(0),
            tally.replies.get(&st).copied().unwrap_or(0),
            callback_count.get(&st).copied().unwrap_or(0),
        );
        if c + r + b > 0 {
            println!("{:<12} {c:>9} {r:>13} {b:>22}", st.as_str());
        }
    }
    println!(
        "{:<12} {total_commands:>9} {:>13} {:>22}",
        "total",
        results.replies.outcomes.len(),
        callbacks.len()
    );
    let no_callback = results.sent.iter().filter(|s| !s.has_callback).count();
    println!(
        "  commands: distinct commands by expected status (the duplicate counts once);\n  \
         AMQP replies: one per message published, so the duplicate adds one;\n  \
         callbacks: one per message with a readable callback_url ({no_callback} malformed \
         messages had none)."
    );
}

/// The counts under the table: messages, duplicates of outcomes, sandbox calls, signatures
/// and time.
fn print_counters(results: &BatchResults, total_commands: usize, multi: usize) {
    let (sent, csq, replies_done) = (&results.sent, &results.csq, results.replies_done);
    println!();
    println!(
        "messages published: {} ({} distinct commands, 1 duplicate that got the stored outcome)",
        sent.len(),
        total_commands
    );
    println!("commands with more than one terminal outcome: {multi}");
    println!(
        "CSQ sandbox: {} purchase calls, {} vouchers sold, {} additional-data and {} finished queries, {} product lists",
        csq.purchase_calls,
        csq.purchases_applied,
        csq.additional_data_calls,
        csq.finished_calls,
        csq.products_calls
    );
    println!(
        "bad callback signatures: {}",
        results.callbacks.bad_signatures
    );
    println!(
        "time: {:.2} s for all outcomes ({:.1} commands/s), {:.2} s including callbacks",
        replies_done.as_secs_f64(),
        sent.len() as f64 / replies_done.as_secs_f64().max(0.001),
        results.elapsed.as_secs_f64()
    );
}

/// Commands with several terminal outcomes (`multi`), missing or extra callbacks, and bad
/// signatures.
fn callback_problems(results: &BatchResults, multi: usize) -> Vec<String> {
    let mut failures = Vec::new();
    let callbacks = results.callbacks.terminal.len();
    let expected_callbacks = results.sent.iter().filter(|s| s.has_callback).count();
    let bad_signatures = results.callbacks.bad_signatures;
    if multi > 0 {
        failures.push(format!(
            "{multi} commands got more than one terminal outcome"
        ));
    }
    if callbacks != expected_callbacks {
        failures.push(format!(
            "{callbacks} callbacks arrived, {expected_callbacks} expected"
        ));
    }
    if bad_signatures > 0 {
        failures.push(format!(
            "{bad_signatures} callbacks failed signature checks"
        ));
    }
    failures
}
