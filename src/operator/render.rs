//! Operator views as plain text: tables a tired person can read. Every value here comes
//! from masked columns; nothing sealed is opened.

use std::fmt::Write;

use chrono::{DateTime, Utc};
use serde_json::Value;

use crate::store::dlq::{Item, Summary};
use crate::store::timeline::{Step, TxSummary};

/// How long ago, roughly: `45s`, `12m`, `3h 04m`, `2d 03h`.
pub fn age(since: DateTime<Utc>, now: DateTime<Utc>) -> String {
    let s = (now - since).num_seconds().max(0);
    match s {
        0..60 => format!("{s}s"),
        60..3600 => format!("{}m", s / 60),
        3600..86_400 => format!("{}h {:02}m", s / 3600, s % 3600 / 60),
        _ => format!("{}d {:02}h", s / 86_400, s % 86_400 / 3600),
    }
}

/// A time step between two steps: `+850 ms`, `+12.3 s`, `+4m 10s`.
pub fn step(from: DateTime<Utc>, to: DateTime<Utc>) -> String {
    let ms = (to - from).num_milliseconds().max(0);
    match ms {
        0..1000 => format!("+{ms} ms"),
        1000..60_000 => format!("+{:.1} s", ms as f64 / 1000.0),
        _ => format!("+{}m {:02}s", ms / 60_000, ms % 60_000 / 1000),
    }
}

/// `dlq list`: one line per place.
pub fn summaries(list: &[Summary], now: DateTime<Utc>) -> String {
    let mut out = format!(
        "{:<18} {:>7}  {:<9} {}\n",
        "PLACE", "ITEMS", "OLDEST", "REASONS"
    );
    for s in list {
        let reasons: Vec<String> = s
            .reasons
            .iter()
            .map(|r| format!("{} {}", r.reason, r.count))
            .collect();
        let _ = writeln!(
            out,
            "{:<18} {:>7}  {:<9} {}",
            s.place.name(),
            s.count,
            s.oldest.map_or("-".into(), |o| age(o, now)),
            if reasons.is_empty() {
                "-".to_string()
            } else {
                reasons.join(", ")
            }
        );
    }
    out
}

/// `dlq show`: one block per item.
pub fn items(list: &[Item], now: DateTime<Utc>) -> String {
    let mut out = String::new();
    for i in list {
        let _ = writeln!(
            out,
            "{} {}  reason {}  attempts {}  since {} ({} ago)",
            i.place.name(),
            i.id,
            i.reason,
            i.attempts,
            i.since.format("%Y-%m-%d %H:%M:%S UTC"),
            age(i.since, now)
        );
        if let Some(tx) = i.transaction_id {
            let _ = writeln!(out, "  transaction  {tx}");
        }
        let who: Vec<String> = [
            i.source.as_deref().map(|s| format!("source {s}")),
            i.command_id.as_deref().map(|c| format!("command {c}")),
            i.kind.as_deref().map(|k| format!("kind {k}")),
            i.provider.as_deref().map(|p| format!("provider {p}")),
        ]
        .into_iter()
        .flatten()
        .collect();
        if !who.is_empty() {
            let _ = writeln!(out, "  command      {}", who.join(", "));
        }
        if let Some(e) = &i.last_error {
            let _ = writeln!(out, "  last error   {}", one_line(e));
        }
        let _ = writeln!(out, "  detail       {}", i.detail);
        out.push('\n');
    }
    out
}

/// `tx find`, and the list when a key names several transactions.
pub fn transactions(list: &[TxSummary], now: DateTime<Utc>) -> String {
    let mut out = format!(
        "{:<36}  {:<12} {:<20} {:<10} {:<8} {:<22} {}\n",
        "TRANSACTION", "SOURCE", "COMMAND", "KIND", "PROVIDER", "STATE", "AGE"
    );
    for t in list {
        let _ = writeln!(
            out,
            "{:<36}  {:<12} {:<20} {:<10} {:<8} {:<22} {}",
            t.id,
            t.source,
            t.command_id,
            t.kind,
            t.provider,
            state(t),
            age(t.created_at, now)
        );
    }
    out
}

fn state(t: &TxSummary) -> String {
    match &t.status {
        Some(s) => format!("{} ({s})", t.state),
        None => t.state.clone(),
    }
}

/// `tx show`: the transaction, then every step with the time since the one before.
pub fn timeline(t: &TxSummary, steps: &[Step]) -> String {
    let mut out = format!(
        "transaction {}\n  {} via {}, source {}, command {}\n  state {}\n  params {}\n  created {}",
        t.id,
        t.kind,
        t.provider,
        t.source,
        t.command_id,
        state(t),
        t.params,
        t.created_at.format("%Y-%m-%d %H:%M:%S%.3f UTC"),
    );
    if let Some(done) = t.completed_at {
        let _ = write!(out, ", completed after {}", &step(t.created_at, done)[1..]);
    }
    out.push_str("\n\n");
    let _ = writeln!(out, "{:<25} {:<11} WHAT", "TIME (UTC)", "STEP");
    let mut before = t.created_at;
    for s in steps {
        let _ = writeln!(
            out,
            "{:<25} {:<11} {:<12} {}",
            s.at.format("%Y-%m-%d %H:%M:%S%.3f"),
            step(before, s.at),
            s.what,
            one_line(&s.summary)
        );
        if let Some(extra) = detail_line(&s.detail) {
            let _ = writeln!(out, "{:<50} {extra}", "");
        }
        before = s.at;
    }
    out
}

/// A step's detail on one line, without its nulls; `None` if there is nothing.
fn detail_line(detail: &Value) -> Option<String> {
    let Value::Object(map) = detail else {
        return None;
    };
    let kept: serde_json::Map<String, Value> = map
        .iter()
        .filter(|(_, v)| !v.is_null() && *v != &Value::Object(Default::default()))
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect();
    (!kept.is_empty()).then(|| one_line(&Value::Object(kept).to_string()))
}

/// Text on one line, cut at 300 characters.
fn one_line(s: &str) -> String {
    let flat: String = s
        .chars()
        .map(|c| if c.is_control() { ' ' } else { c })
        .collect();
    if flat.chars().count() > 300 {
        let cut: String = flat.chars().take(300).collect();
        format!("{cut}…")
    } else {
        flat
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone;

    #[test]
    fn ages_and_steps_read_at_a_glance() {
        let t0 = Utc
            .with_ymd_and_hms(2026, 12, 3, 3, 0, 0)
            .single()
            .expect("time");
        let at = |s: i64| t0 + chrono::Duration::seconds(s);
        assert_eq!(age(t0, at(45)), "45s");
        assert_eq!(age(t0, at(720)), "12m");
        assert_eq!(age(t0, at(3 * 3600 + 240)), "3h 04m");
        assert_eq!(age(t0, at(2 * 86_400 + 3 * 3600)), "2d 03h");
        assert_eq!(age(at(10), t0), "0s");
        assert_eq!(
            step(t0, t0 + chrono::Duration::milliseconds(850)),
            "+850 ms"
        );
        assert_eq!(step(t0, at(12)), "+12.0 s");
        assert_eq!(step(t0, at(250)), "+4m 10s");
    }

    #[test]
    fn one_line_cuts_and_flattens() {
        assert_eq!(one_line("a\nb"), "a b");
        assert_eq!(one_line(&"x".repeat(400)).chars().count(), 301);
    }
}
