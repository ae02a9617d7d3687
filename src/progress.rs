//! A progress bar on stderr, for the commands a person watches (the demo, `dlq replay`).

use std::io::{IsTerminal, Write};

/// Redraws the bar in place on a terminal (the caller ends the line); elsewhere prints a line every 10 %, so a log
/// keeps a trace without a line per item.
pub fn progress(done: usize, total: usize, what: &str) {
    let terminal = std::io::stderr().is_terminal();
    let step = (total / 10).max(1);
    if !terminal && done % step != 0 && done != total {
        return;
    }
    let width = 40;
    let filled = done.min(total) * width / total.max(1);
    let bar = format!(
        "[{}{}] {done}/{total} {what}",
        "#".repeat(filled),
        "-".repeat(width - filled)
    );
    if terminal {
        eprint!("\r{bar}");
    } else {
        eprintln!("{bar}");
    }
    let _ = std::io::stderr().flush();
}
