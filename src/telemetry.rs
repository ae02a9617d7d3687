//! Logging on stderr, filtered by `RUST_LOG`: JSON lines for services, readable lines for
//! people. `LOG_FORMAT` is `json` or `pretty`; unset, it is pretty when stderr is a terminal
//! and JSON otherwise.

use std::io::IsTerminal;

use tracing_subscriber::EnvFilter;

/// Added to the default filter (not to `RUST_LOG`, which replaces it whole):
/// - lapin logs its own connection errors as several JSON lines; the relay reports the same
///   failure in its own words (one error message, or a "consumer lost" warning).
/// - tokio-postgres logs every server NOTICE at INFO, such as refinery's "relation … already
///   exists, skipping" on each start.
/// - deadpool logs a warning for every pooled connection it cannot open or recycle, dozens a
///   second while PostgreSQL is away; the relay says so itself, one line a second at most.
const QUIETED: &str = "lapin=off,tokio_postgres=warn,deadpool=error";

/// How log lines are written.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LogFormat {
    /// One JSON object per line, for log collectors.
    Json,
    /// One readable line per event, coloured on a terminal.
    Pretty,
}

impl LogFormat {
    /// The format `LOG_FORMAT` names; unset or empty, pretty on a terminal and JSON otherwise.
    pub fn choose(value: Option<&str>, terminal: bool) -> Result<LogFormat, String> {
        match value.map(str::trim) {
            None | Some("") if terminal => Ok(LogFormat::Pretty),
            None | Some("") => Ok(LogFormat::Json),
            Some(v) if v.eq_ignore_ascii_case("json") => Ok(LogFormat::Json),
            Some(v) if v.eq_ignore_ascii_case("pretty") => Ok(LogFormat::Pretty),
            Some(v) => Err(format!("LOG_FORMAT must be json or pretty, not {v:?}")),
        }
    }
}

/// The filter used when `RUST_LOG` is unset: `default` with the noisy libraries quieted.
pub fn default_filter(default: &str) -> String {
    if default == "off" {
        default.to_string()
    } else {
        format!("{default},{QUIETED}")
    }
}

/// Installs the log subscriber on stderr. `default` is the filter when `RUST_LOG` is unset.
/// Fails only on a `LOG_FORMAT` it does not know, and then installs nothing.
pub fn try_init_logging(default: &str) -> Result<(), String> {
    let terminal = std::io::stderr().is_terminal();
    let format = LogFormat::choose(std::env::var("LOG_FORMAT").ok().as_deref(), terminal)?;
    install(format, default, terminal);
    Ok(())
}

/// [`try_init_logging`]; a `LOG_FORMAT` it does not know gets a warning and the format it
/// would have had unset.
pub fn init_logging(default: &str) {
    if let Err(why) = try_init_logging(default) {
        eprintln!("warning: {why}");
        let terminal = std::io::stderr().is_terminal();
        let format = LogFormat::choose(None, terminal).unwrap_or(LogFormat::Json);
        install(format, default, terminal);
    }
}

fn install(format: LogFormat, default: &str, terminal: bool) {
    let filter = EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| EnvFilter::new(default_filter(default)));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    // `try_init` fails only if a subscriber is already installed, which is harmless.
    let _ = match format {
        LogFormat::Json => builder
            .json()
            .with_current_span(true)
            .with_span_list(false)
            .try_init(),
        LogFormat::Pretty => builder.with_ansi(terminal).try_init(),
    };
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn log_format_is_chosen_by_the_variable_then_the_terminal() {
        assert_eq!(LogFormat::choose(None, true), Ok(LogFormat::Pretty));
        assert_eq!(LogFormat::choose(None, false), Ok(LogFormat::Json));
        assert_eq!(LogFormat::choose(Some(""), true), Ok(LogFormat::Pretty));
        assert_eq!(LogFormat::choose(Some("json"), true), Ok(LogFormat::Json));
        assert_eq!(
            LogFormat::choose(Some("PRETTY"), false),
            Ok(LogFormat::Pretty)
        );
        let err = LogFormat::choose(Some("xml"), false).unwrap_err();
        assert!(err.contains("LOG_FORMAT") && err.contains("xml"), "{err}");
    }

    #[test]
    fn the_default_filter_quiets_lapin_and_postgres_notices() {
        let filter = default_filter("info");
        assert!(filter.starts_with("info,"), "{filter}");
        assert!(filter.contains("lapin=off"), "{filter}");
        assert!(filter.contains("tokio_postgres=warn"), "{filter}");
        assert_eq!(default_filter("off"), "off");
    }
}
