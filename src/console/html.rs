//! The console's HTML, built by hand: a few pages, no scripts, every value escaped.
//! Everything shown comes from masked columns.

use std::fmt::Write;

use chrono::{DateTime, Timelike, Utc};

use crate::operator::render::{age, step};
use crate::store::dlq::{Item, Place, Summary};
use crate::store::timeline::{Step, TxSummary};

/// Text made safe for HTML content and attribute values.
pub fn esc(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            _ => out.push(c),
        }
    }
    out
}

/// A query-string value.
pub fn url(s: &str) -> String {
    url::form_urlencoded::byte_serialize(s.as_bytes()).collect()
}

const STYLE: &str = "body{font-family:system-ui,sans-serif;margin:0;color:#1c2430;background:#f6f7f9}
header{background:#1c2430;color:#fff;padding:.6em 1.2em;display:flex;gap:1.5em;align-items:center}
header a{color:#fff;text-decoration:none}header form{margin-left:auto}
main{padding:1em 1.2em;max-width:1200px}table{border-collapse:collapse;width:100%;background:#fff}
th,td{text-align:left;padding:.35em .6em;border-bottom:1px solid #e3e6ea;vertical-align:top;font-size:.92em}
th{background:#eef0f3}code,pre{font-family:ui-monospace,monospace;font-size:.88em}
pre{background:#fff;padding:.6em;border:1px solid #e3e6ea;white-space:pre-wrap;word-break:break-all}
.box{background:#fff;border:1px solid #e3e6ea;padding:.8em 1em;margin:1em 0}
.warn{background:#fff4e5;border-color:#f0b429}.ok{background:#e8f7ee;border-color:#3ba55d}
button{padding:.35em .9em;cursor:pointer}textarea,input[type=text],input[type=password]{width:28em;max-width:100%}
.muted{color:#6b7380}";

/// A whole page: header (with the logout form when logged in) and body.
pub fn page(title: &str, operator: Option<(&str, &str)>, body: &str) -> String {
    let nav = match operator {
        Some((name, csrf)) => format!(
            "<a href=\"/console\">Dead letters</a><a href=\"/console/actions\">Audit</a>\
             <form method=\"get\" action=\"/console/tx\"><input type=\"text\" name=\"key\" \
             placeholder=\"transaction, command id or serial\" aria-label=\"find a transaction\"></form>\
             <form method=\"post\" action=\"/console/logout\"><input type=\"hidden\" name=\"csrf\" \
             value=\"{}\"><span class=\"muted\">{}</span> <button>Log out</button></form>",
            esc(csrf),
            esc(name)
        ),
        None => String::new(),
    };
    format!(
        "<!doctype html><html lang=\"en\"><head><meta charset=\"utf-8\">\
         <meta name=\"viewport\" content=\"width=device-width\"><title>{} · voucher-relay</title>\
         <style>{STYLE}</style></head><body><header><strong>voucher-relay</strong>{nav}</header>\
         <main>{body}</main></body></html>",
        esc(title)
    )
}

pub fn login(error: Option<&str>) -> String {
    let error = error
        .map(|e| format!("<div class=\"box warn\" id=\"error\">{}</div>", esc(e)))
        .unwrap_or_default();
    page(
        "Log in",
        None,
        &format!(
            "<h1>Operator console</h1>{error}<form method=\"post\" action=\"/console/login\" class=\"box\">\
             <p><label>Your name (recorded with every action)<br>\
             <input type=\"text\" name=\"operator\" id=\"operator\" required maxlength=\"64\"></label></p>\
             <p><label>Operator token<br><input type=\"password\" name=\"token\" id=\"token\" required></label></p>\
             <button id=\"login\">Log in</button></form>"
        ),
    )
}

/// The front page: the places, a chart of outcomes per minute, recent actions.
pub fn places(list: &[Summary], chart: &str, now: DateTime<Utc>) -> String {
    let mut rows = String::new();
    for s in list {
        let reasons: Vec<String> = s
            .reasons
            .iter()
            .map(|r| {
                format!(
                    "<a href=\"/console/place/{}?reason={}\">{}</a> {}",
                    s.place.name(),
                    url(&r.reason),
                    esc(&r.reason),
                    r.count
                )
            })
            .collect();
        let _ = write!(
            rows,
            "<tr><td><a class=\"place\" href=\"/console/place/{0}\">{0}</a></td><td class=\"count\">{1}</td>\
             <td>{2}</td><td>{3}</td></tr>",
            s.place.name(),
            s.count,
            s.oldest.map_or("-".into(), |o| age(o, now)),
            reasons.join(", ")
        );
    }
    format!(
        "<h1>Dead-letter and parked places</h1><table id=\"places\"><tr><th>Place</th><th>Items</th>\
         <th>Oldest</th><th>Reasons</th></tr>{rows}</table>\
         <h2>Outcomes per minute, last hour</h2>{chart}"
    )
}

/// A bar per minute over the last hour, stacked by status.
pub fn chart(points: &[(DateTime<Utc>, String, i64)], now: DateTime<Utc>) -> String {
    const STATUSES: [(&str, &str); 5] = [
        ("succeeded", "#3ba55d"),
        ("declined", "#f0b429"),
        ("reversed", "#8e6ad8"),
        ("failed", "#d64545"),
        ("expired", "#6b7380"),
    ];
    let start = now - chrono::Duration::minutes(59);
    let start = start
        .with_second(0)
        .and_then(|t| t.with_nanosecond(0))
        .unwrap_or(start);
    let mut per_minute = vec![[0i64; 5]; 60];
    for (minute, status, n) in points {
        let i = (*minute - start).num_minutes();
        let s = STATUSES.iter().position(|(name, _)| name == status);
        if let (Ok(i @ 0..60), Some(s)) = (usize::try_from(i), s) {
            per_minute[i][s] += n;
        }
    }
    let top = per_minute
        .iter()
        .map(|m| m.iter().sum::<i64>())
        .max()
        .unwrap_or(0)
        .max(1);
    let (w, h) = (600.0, 120.0);
    let bar = w / 60.0;
    let mut svg = format!(
        "<svg id=\"outcomes-chart\" viewBox=\"0 0 {w} {}\" width=\"100%\" role=\"img\" \
         aria-label=\"outcomes per minute\" style=\"max-width:800px;background:#fff\">",
        h + 16.0
    );
    for (i, m) in per_minute.iter().enumerate() {
        let mut y = h;
        for (s, n) in m.iter().enumerate() {
            if *n == 0 {
                continue;
            }
            let height = (*n as f64) / (top as f64) * (h - 4.0);
            y -= height;
            let _ = write!(
                svg,
                "<rect x=\"{:.1}\" y=\"{y:.1}\" width=\"{:.1}\" height=\"{height:.1}\" fill=\"{}\">\
                 <title>{} {}</title></rect>",
                i as f64 * bar,
                bar - 1.0,
                STATUSES[s].1,
                n,
                STATUSES[s].0
            );
        }
    }
    let _ = write!(
        svg,
        "<text x=\"0\" y=\"{0}\" font-size=\"10\">-60 min</text><text x=\"{1}\" y=\"{0}\" \
         font-size=\"10\" text-anchor=\"end\">now · peak {top}/min</text></svg>",
        h + 13.0,
        w
    );
    let legend: Vec<String> = STATUSES
        .iter()
        .map(|(name, color)| format!("<span style=\"color:{color}\">■</span> {name}"))
        .collect();
    format!("{svg}<p class=\"muted\">{}</p>", legend.join(" &nbsp; "))
}

/// A reason filter as words and as the hidden field that carries it in a form.
fn reason_filter(reason: Option<&str>) -> (String, String) {
    match reason {
        Some(r) => (
            format!(" with reason <strong>{}</strong>", esc(r)),
            format!(
                "<input type=\"hidden\" name=\"reason\" value=\"{}\">",
                esc(r)
            ),
        ),
        None => (String::new(), String::new()),
    }
}

/// One place's items, filtered, with bulk actions by the same filter.
pub fn items(
    place: Place,
    reason: Option<&str>,
    list: &[Item],
    total: usize,
    csrf: &str,
    now: DateTime<Utc>,
) -> String {
    let mut rows = String::new();
    for i in list {
        let tx = i.transaction_id.map_or("-".into(), |t| {
            format!("<a href=\"/console/tx?key={t}\"><code>{t}</code></a>")
        });
        let command = match (&i.source, &i.command_id) {
            (Some(s), Some(c)) => format!("{} / {}", esc(s), esc(c)),
            (None, Some(c)) => esc(c),
            _ => "-".into(),
        };
        let _ = write!(
            rows,
            "<tr><td><a class=\"item\" href=\"/console/place/{}/item/{}\"><code>{}</code></a></td>\
             <td>{tx}</td><td>{command}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td></tr>",
            place.name(),
            url(&i.id),
            esc(&i.id),
            esc(&i.reason),
            i.attempts,
            age(i.since, now),
            esc(i.last_error.as_deref().unwrap_or(""))
        );
    }
    let (filter, reason_field) = reason_filter(reason);
    let bulk = if total == 0 {
        String::new()
    } else {
        let replay = if place.cannot_replay().is_none() {
            "<button name=\"action\" value=\"replay\" id=\"bulk-replay\">Replay all…</button> "
        } else {
            ""
        };
        format!(
            "<form method=\"post\" action=\"/console/place/{}/confirm\" class=\"box\">\
             <input type=\"hidden\" name=\"csrf\" value=\"{}\">{reason_field}\
             Every item{filter}: {replay}\
             <button name=\"action\" value=\"discard\" id=\"bulk-discard\">Discard all…</button> \
             <span class=\"muted\">(the count is shown before anything is done)</span></form>",
            place.name(),
            esc(csrf)
        )
    };
    format!(
        "<h1>{}</h1><p>{total} item(s) waiting{filter}; the oldest {} shown.</p>{bulk}\
         <table id=\"items\"><tr><th>Item</th><th>Transaction</th><th>Command</th><th>Reason</th><th>Attempts</th>\
         <th>Waiting</th><th>Last error</th></tr>{rows}</table>",
        place.name(),
        list.len()
    )
}

/// One item, masked, with its replay and discard forms (each asks for a reason).
pub fn item(i: &Item, csrf: &str, now: DateTime<Utc>) -> String {
    let detail = serde_json::to_string_pretty(&i.detail).unwrap_or_default();
    let tx = i.transaction_id.map_or("-".into(), |t| {
        format!("<a href=\"/console/tx?key={t}\" id=\"tx-link\"><code>{t}</code></a>")
    });
    let form = |action: &str, label: &str| {
        format!(
            "<form method=\"post\" action=\"/console/place/{}/act\" class=\"box\">\
             <input type=\"hidden\" name=\"csrf\" value=\"{}\">\
             <input type=\"hidden\" name=\"action\" value=\"{action}\">\
             <input type=\"hidden\" name=\"id\" value=\"{}\">\
             <label>Why ({action})<br><textarea name=\"why\" id=\"why-{action}\" required rows=\"2\"></textarea></label><br>\
             <button id=\"{action}\">{label}</button></form>",
            i.place.name(),
            esc(csrf),
            esc(&i.id)
        )
    };
    let replay = if i.place.cannot_replay().is_none() {
        form("replay", "Replay")
    } else {
        format!(
            "<p class=\"muted\">{}</p>",
            esc(i.place.cannot_replay().unwrap_or(""))
        )
    };
    let row = |k: &str, v: &str| format!("<tr><th>{k}</th><td>{v}</td></tr>");
    let opt = |v: &Option<String>| esc(v.as_deref().unwrap_or("-"));
    format!(
        "<h1>{} item <code>{}</code></h1><table id=\"item\">{}{}{}{}{}{}{}{}{}{}</table>\
         <h2>Detail</h2><pre id=\"detail\">{}</pre>{replay}{}",
        i.place.name(),
        esc(&i.id),
        row("Transaction", &tx),
        row("Source", &opt(&i.source)),
        row("Command", &opt(&i.command_id)),
        row("Kind", &opt(&i.kind)),
        row("Provider", &opt(&i.provider)),
        row("Reason", &esc(&i.reason)),
        row("Attempts", &i.attempts.to_string()),
        row(
            "Waiting since",
            &format!(
                "{} ({} ago)",
                i.since.format("%Y-%m-%d %H:%M:%S UTC"),
                age(i.since, now)
            )
        ),
        row("Last error", &opt(&i.last_error)),
        row("Place", i.place.name()),
        esc(&detail),
        form("discard", "Discard"),
    )
}

/// The count before a bulk action, and the form that carries it out.
pub fn confirm(
    place: Place,
    action: &str,
    reason: Option<&str>,
    count: usize,
    csrf: &str,
) -> String {
    let (filter, reason_field) = reason_filter(reason);
    format!(
        "<h1>{action} {count} item(s) of {}?</h1>\
         <form method=\"post\" action=\"/console/place/{}/act\" class=\"box warn\">\
         <p id=\"count\">This will {action} <strong>{count}</strong> item(s){filter}.</p>\
         <input type=\"hidden\" name=\"csrf\" value=\"{}\">\
         <input type=\"hidden\" name=\"action\" value=\"{action}\">{reason_field}\
         <input type=\"hidden\" name=\"expect\" value=\"{count}\">\
         <label>Why<br><textarea name=\"why\" id=\"why\" required rows=\"2\"></textarea></label><br>\
         <button id=\"go\">Yes, {action} {count} item(s)</button> \
         <a href=\"/console/place/{}\">Cancel</a></form>",
        place.name(),
        place.name(),
        esc(csrf),
        place.name()
    )
}

/// What an action did.
pub fn acted(place: Place, action: &str, lines: &[(String, String)]) -> String {
    let mut rows = String::new();
    for (id, result) in lines {
        let _ = write!(
            rows,
            "<tr><td><code>{}</code></td><td class=\"result\">{}</td></tr>",
            esc(id),
            esc(result)
        );
    }
    format!(
        "<h1>{action} on {}</h1><div class=\"box ok\" id=\"done\">Done: {} item(s).</div>\
         <table id=\"results\"><tr><th>Item</th><th>Result</th></tr>{rows}</table>\
         <p><a href=\"/console/place/{}\">Back to {}</a></p>",
        place.name(),
        lines.len(),
        place.name(),
        place.name()
    )
}

/// A transaction's timeline.
pub fn timeline(t: &TxSummary, steps: &[Step]) -> String {
    let mut rows = String::new();
    let mut before = t.created_at;
    for s in steps {
        let detail = match &s.detail {
            serde_json::Value::Object(m) if !m.is_empty() => {
                format!("<pre>{}</pre>", esc(&s.detail.to_string()))
            }
            _ => String::new(),
        };
        let _ = write!(
            rows,
            "<tr class=\"step\"><td>{}</td><td>{}</td><td>{}</td><td>{}{detail}</td></tr>",
            s.at.format("%H:%M:%S%.3f"),
            step(before, s.at),
            esc(&s.what),
            esc(&s.summary)
        );
        before = s.at;
    }
    let status = t.status.as_deref().unwrap_or("-");
    format!(
        "<h1>Transaction <code>{}</code></h1><table id=\"tx\">\
         <tr><th>Command</th><td>{} / {}</td></tr><tr><th>Kind</th><td>{} via {}</td></tr>\
         <tr><th>State</th><td>{} ({})</td></tr><tr><th>Created</th><td>{}</td></tr>\
         <tr><th>Params</th><td><pre>{}</pre></td></tr></table>\
         <h2>Timeline</h2><table id=\"timeline\"><tr><th>Time (UTC)</th><th>Step</th><th>What</th>\
         <th>Summary</th></tr>{rows}</table>",
        t.id,
        esc(&t.source),
        esc(&t.command_id),
        esc(&t.kind),
        esc(&t.provider),
        esc(&t.state),
        esc(status),
        t.created_at.format("%Y-%m-%d %H:%M:%S%.3f UTC"),
        esc(&t.params.to_string())
    )
}

/// Several transactions match a key.
pub fn tx_list(key: &str, list: &[TxSummary], now: DateTime<Utc>) -> String {
    let mut rows = String::new();
    for t in list {
        let _ = write!(
            rows,
            "<tr><td><a href=\"/console/tx?key={0}\"><code>{0}</code></a></td><td>{1}</td><td>{2}</td>\
             <td>{3}</td><td>{4}</td><td>{5}</td></tr>",
            t.id,
            esc(&t.source),
            esc(&t.command_id),
            esc(&t.kind),
            esc(&t.state),
            age(t.created_at, now)
        );
    }
    format!(
        "<h1>{} transaction(s) match <code>{}</code></h1><table><tr><th>Transaction</th><th>Source</th>\
         <th>Command</th><th>Kind</th><th>State</th><th>Age</th></tr>{rows}</table>",
        list.len(),
        esc(key)
    )
}

/// The operator actions on record.
pub fn actions(list: &[serde_json::Value]) -> String {
    let mut rows = String::new();
    for a in list {
        let f = |k: &str| esc(a.get(k).and_then(|v| v.as_str()).unwrap_or("-"));
        let _ = write!(
            rows,
            "<tr class=\"action\"><td>{}</td><td class=\"actor\">{}</td><td>{}</td><td>{}</td>\
             <td>{}</td><td><code>{}</code></td><td class=\"result\">{}</td><td class=\"why\">{}</td></tr>",
            f("at"),
            f("actor"),
            f("via"),
            f("action"),
            f("place"),
            f("item_id"),
            f("result"),
            f("why")
        );
    }
    format!(
        "<h1>Operator actions</h1><table id=\"actions\"><tr><th>At</th><th>Who</th><th>Via</th>\
         <th>Action</th><th>Place</th><th>Item</th><th>Result</th><th>Why</th></tr>{rows}</table>"
    )
}

pub fn message(title: &str, text: &str, operator: Option<(&str, &str)>) -> String {
    page(
        title,
        operator,
        &format!(
            "<h1>{}</h1><div class=\"box warn\" id=\"error\">{}</div>",
            esc(title),
            esc(text)
        ),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn everything_shown_is_escaped() {
        assert_eq!(
            esc("<script>alert('x')</script>&\""),
            "&lt;script&gt;alert(&#39;x&#39;)&lt;/script&gt;&amp;&quot;"
        );
        assert_eq!(url("a b&c"), "a+b%26c");
    }

    #[test]
    fn the_chart_puts_each_outcome_in_its_minute() {
        let now = Utc::now();
        let minute = now
            .with_second(0)
            .and_then(|t| t.with_nanosecond(0))
            .expect("minute");
        let svg = chart(
            &[
                (minute, "succeeded".into(), 7),
                (minute - chrono::Duration::minutes(90), "failed".into(), 3),
            ],
            now,
        );
        assert!(svg.contains("<title>7 succeeded</title>"), "{svg}");
        assert!(
            !svg.contains("failed</title>"),
            "an outcome outside the hour is drawn"
        );
    }
}
