//! The binary as a user meets it: bad configuration gets one clear line and a non-zero exit.

use std::process::Command;

fn relay(args: &[&str], env: &[(&str, &str)]) -> (i32, String) {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_voucher-relay"));
    cmd.args(args).current_dir(env!("CARGO_MANIFEST_DIR"));
    for k in [
        "WEBHOOK_SIGNING_SECRET",
        "CSQ_USER",
        "CSQ_PASSWORD",
        "AMQP_URL",
        "DATABASE_URL",
        "RUST_BACKTRACE",
    ] {
        cmd.env_remove(k);
    }
    cmd.env("RUST_BACKTRACE", "1");
    for (k, v) in env {
        cmd.env(k, v);
    }
    let out = cmd.output().expect("binary runs");
    let text =
        String::from_utf8_lossy(&out.stderr).to_string() + &String::from_utf8_lossy(&out.stdout);
    (out.status.code().unwrap_or(-1), text)
}

fn assert_clean_failure(code: i32, text: &str, names: &str) {
    assert_ne!(code, 0, "{text}");
    assert!(text.contains(names), "should name {names}: {text}");
    assert!(!text.contains("panicked"), "{text}");
    assert!(!text.contains("stack backtrace"), "{text}");
}

#[test]
fn missing_signing_secret_is_named() {
    let (code, text) = relay(&["run"], &[("CSQ_USER", "u"), ("CSQ_PASSWORD", "p")]);
    assert_clean_failure(code, &text, "WEBHOOK_SIGNING_SECRET");
}

#[test]
fn bad_signing_secret_is_named() {
    let (code, text) = relay(
        &["run"],
        &[
            ("WEBHOOK_SIGNING_SECRET", "not-a-secret"),
            ("CSQ_USER", "u"),
            ("CSQ_PASSWORD", "p"),
        ],
    );
    assert_clean_failure(code, &text, "WEBHOOK_SIGNING_SECRET");
}

#[test]
fn missing_provider_credential_is_named() {
    let (code, text) = relay(
        &["run"],
        &[
            ("WEBHOOK_SIGNING_SECRET", crate::harness::SECRET),
            ("CSQ_USER", "u"),
        ],
    );
    assert_clean_failure(code, &text, "CSQ_PASSWORD");
}

#[test]
fn bad_urls_and_missing_file_are_named() {
    let (code, text) = relay(&["migrate"], &[("DATABASE_URL", "mysql://nope")]);
    assert_clean_failure(code, &text, "DATABASE_URL");
    let (code, text) = relay(&["topology", "check"], &[("AMQP_URL", "http://nope")]);
    assert_clean_failure(code, &text, "AMQP_URL");
    let (code, text) = relay(&["--config", "/nonexistent/queues.toml", "migrate"], &[]);
    assert_clean_failure(code, &text, "/nonexistent/queues.toml");
}

#[test]
fn unreachable_broker_says_where_and_how_to_start_it() {
    let (code, text) = relay(
        &["topology", "check"],
        &[("AMQP_URL", "amqp://guest:guest@127.0.0.1:1/%2f")],
    );
    assert_clean_failure(code, &text, "127.0.0.1:1");
    assert!(text.contains("rabbitmq-server"), "{text}");
    assert!(
        !text.contains("guest:guest"),
        "credentials must not be echoed: {text}"
    );
}
