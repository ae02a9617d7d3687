//! Collecting the batch's AMQP replies, one per message, with a progress bar on stderr.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use lapin::options::BasicAckOptions;

use super::batch::Sent;
use super::rig::Rig;
use crate::command::{Outcome, Status};
use crate::progress::progress;

/// The AMQP replies of the batch.
#[derive(Default)]
pub(super) struct Replies {
    /// Terminal outcomes, by correlation id.
    pub(super) outcomes: HashMap<String, Outcome>,
    /// Progress events (a raffle ticket issued) received before their terminal outcome.
    pub(super) progress_events: usize,
    /// How long after the start every plain (not long-flow) message had its outcome.
    pub(super) plain_done: Option<Duration>,
}

impl Replies {
    /// Records the reply `data` to the message `correlation`.
    fn record(&mut self, correlation: String, data: &[u8], sent: &[Sent], started: Instant) {
        match serde_json::from_slice::<Outcome>(data) {
            // Progress (a raffle ticket issued) comes before the terminal outcome.
            Ok(o) if o.status == Status::Pending => self.progress_events += 1,
            Ok(o) => {
                self.outcomes.insert(correlation, o);
                if self.plain_done.is_none()
                    && sent
                        .iter()
                        .filter(|s| !s.long_flow)
                        .all(|s| self.outcomes.contains_key(&s.correlation_id))
                {
                    self.plain_done = Some(started.elapsed());
                }
            }
            Err(_) => {}
        }
    }
}

/// Collects one terminal reply per message of `sent`, until `deadline` at most, acking each
/// and redrawing the progress bar.
pub(super) async fn collect_replies(
    rig: &mut Rig,
    sent: &[Sent],
    started: Instant,
    deadline: tokio::time::Instant,
) -> anyhow::Result<Replies> {
    let mut replies = Replies::default();
    progress(0, sent.len(), "outcomes");
    while replies.outcomes.len() < sent.len() {
        match tokio::time::timeout_at(deadline, rig.replies.next()).await {
            Ok(Some(d)) => {
                let correlation = d
                    .properties
                    .correlation_id()
                    .as_ref()
                    .map(|c| c.to_string())
                    .unwrap_or_default();
                replies.record(correlation, &d.data, sent, started);
                d.ack(BasicAckOptions::default()).await?;
                progress(replies.outcomes.len(), sent.len(), "outcomes");
            }
            _ => break,
        }
    }
    if std::io::IsTerminal::is_terminal(&std::io::stderr()) {
        eprintln!();
    }
    Ok(replies)
}
