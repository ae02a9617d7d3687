//! The binary as a user meets it: bad configuration gets one clear line and a non-zero exit.

use std::process::Command;

fn relay(args: &[&str], env: &[(&str, &str)]) -> (i32, String) {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_voucher-relay"));
    cmd.args(args).current_dir(env!("CARGO_MANIFEST_DIR"));
    for k in [
        "WEBHOOK_SIGNING_SECRET",
        "CSQ_USER",
        "CSQ_PASSWORD",
        "ELECTRUM_PASSWORD",
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

// Multi-threaded: the sandbox must keep serving while this thread waits for the binary.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn providers_check_pings_the_sandbox() {
    let env = crate::harness::TestEnv::new().await;
    let config = env.config_file();
    let config = config.to_str().unwrap();
    let (code, text) = relay(&["--config", config, "providers", "check"], &[]);
    assert_eq!(code, 0, "{text}");
    assert!(text.contains("csq") && text.contains("ok"), "{text}");
    assert!(
        text.lines()
            .any(|l| l.starts_with("electrum") && l.contains("ok")),
        "{text}"
    );
    // The same check against a port where nothing listens fails, naming the provider.
    let dead = env.config_text.replace(
        &env.config.providers.csq.http.base_url,
        "http://127.0.0.1:1",
    );
    let path = std::env::temp_dir().join(format!("vr-test-{}-dead.toml", env.id));
    std::fs::write(&path, dead).unwrap();
    let (code, text) = relay(
        &["--config", path.to_str().unwrap(), "providers", "check"],
        &[],
    );
    assert_clean_failure(code, &text, "csq");
    assert!(text.contains("FAILED"), "{text}");
    env.cleanup().await;
}
