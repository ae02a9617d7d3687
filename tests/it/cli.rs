//! The binary as a user meets it: bad configuration gets one clear line and a non-zero exit.

use std::io::BufRead;
use std::path::Path;
use std::process::{Command, Output, Stdio};
use std::time::Duration;

/// The binary, run in `dir`, with none of the variables it reads but those in `env`.
fn command_in(dir: &Path, args: &[&str], env: &[(&str, &str)]) -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_voucher-relay"));
    cmd.args(args).current_dir(dir);
    for k in [
        "WEBHOOK_SIGNING_SECRET",
        "CSQ_USER",
        "CSQ_PASSWORD",
        "ELECTRUM_PASSWORD",
        "AMQP_URL",
        "DATABASE_URL",
        "RUST_BACKTRACE",
        "RUST_LOG",
        "LOG_FORMAT",
        "VOUCHER_RELAY_CONFIG",
    ] {
        cmd.env_remove(k);
    }
    cmd.env("RUST_BACKTRACE", "1");
    for (k, v) in env {
        cmd.env(k, v);
    }
    cmd
}

fn output_in(dir: &Path, args: &[&str], env: &[(&str, &str)]) -> Output {
    command_in(dir, args, env).output().expect("binary runs")
}

/// The exit code and stderr followed by stdout.
fn relay_in(dir: &Path, args: &[&str], env: &[(&str, &str)]) -> (i32, String) {
    let out = output_in(dir, args, env);
    let text =
        String::from_utf8_lossy(&out.stderr).to_string() + &String::from_utf8_lossy(&out.stdout);
    (out.status.code().unwrap_or(-1), text)
}

fn relay(args: &[&str], env: &[(&str, &str)]) -> (i32, String) {
    relay_in(Path::new(env!("CARGO_MANIFEST_DIR")), args, env)
}

/// [`output_in`] from the checkout, off the async runtime, so an in-process relay keeps
/// working while the binary runs.
async fn output_async(args: &[&str], env: &[(&str, &str)]) -> Output {
    let args: Vec<String> = args.iter().map(|a| a.to_string()).collect();
    let env: Vec<(String, String)> = env
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    tokio::task::spawn_blocking(move || {
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        let env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
        output_in(Path::new(env!("CARGO_MANIFEST_DIR")), &args, &env)
    })
    .await
    .expect("binary runs")
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
    // ... and says how to make one.
    assert!(
        text.contains("WEBHOOK_SIGNING_SECRET=whsec_$(head -c 32 /dev/urandom | base64)"),
        "{text}"
    );
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
    // The line names the URL and why it failed, not only "error sending request".
    let line = text
        .lines()
        .find(|l| l.starts_with("csq"))
        .unwrap_or_default();
    assert!(line.contains("http://127.0.0.1:1/ping"), "{text}");
    assert!(line.contains("Connection refused"), "{text}");
    assert!(
        !text.contains("voucher-relay sandbox"),
        "not a sandbox: {text}"
    );
    // Where the provider is its own sandbox's address, the error says to start the sandbox.
    let stopped = env
        .config_text
        .replace(
            &env.config.providers.csq.http.base_url,
            "http://127.0.0.1:1",
        )
        .replace("listen = \"127.0.0.1:8101\"", "listen = \"127.0.0.1:1\"");
    let path = std::env::temp_dir().join(format!("vr-test-{}-stopped.toml", env.id));
    std::fs::write(&path, stopped).unwrap();
    let (code, text) = relay(
        &["--config", path.to_str().unwrap(), "providers", "check"],
        &[],
    );
    assert_clean_failure(code, &text, "csq");
    assert!(text.contains("voucher-relay sandbox"), "{text}");
    env.cleanup().await;
}

#[test]
fn refused_database_login_is_named_with_the_servers_reason() {
    let (code, text) = relay(
        &["migrate"],
        &[("DATABASE_URL", "postgres://nosuchrole@127.0.0.1:5432/x")],
    );
    assert_clean_failure(code, &text, "role \"nosuchrole\" does not exist");
    assert!(text.contains("authentication"), "{text}");
    assert!(
        !text.contains("pg_ctlcluster"),
        "PostgreSQL is running: {text}"
    );
}

#[test]
fn refused_broker_login_is_one_line_naming_authentication() {
    let (code, text) = relay(
        &["topology", "check"],
        &[("AMQP_URL", "amqp://guest:wr0ngpass@127.0.0.1:5672/%2f")],
    );
    assert_clean_failure(code, &text, "authentication");
    assert_eq!(text.trim().lines().count(), 1, "{text}");
    assert!(text.contains("ACCESS_REFUSED"), "{text}");
    assert!(
        !text.contains("rabbitmq-server"),
        "RabbitMQ is running: {text}"
    );
    assert!(
        !text.contains("wr0ngpass"),
        "the password must not be echoed: {text}"
    );
}

// `run` logs; lapin's own error lines about the refused login are kept out of them.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refused_broker_login_under_run_has_no_lapin_log_lines() {
    let env = crate::harness::TestEnv::new().await;
    let config = env.config_file();
    let out = output_async(
        &["--config", config.to_str().unwrap(), "run"],
        &[
            ("WEBHOOK_SIGNING_SECRET", crate::harness::SECRET),
            ("CSQ_USER", "tester"),
            ("CSQ_PASSWORD", "test-secret"),
            ("ELECTRUM_PASSWORD", "test-secret"),
            ("AMQP_URL", "amqp://guest:wr0ngpass@127.0.0.1:5672/%2f"),
            ("DATABASE_URL", &env.config.database.url),
        ],
    )
    .await;
    let text = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{text}");
    assert!(text.contains("refused authentication"), "{text}");
    assert!(!text.contains("lapin"), "{text}");
    assert!(!text.contains("wr0ngpass"), "{text}");
    env.cleanup().await;
}

#[test]
fn missing_config_file_is_named_once_with_the_way_to_name_another() {
    let dir = std::env::temp_dir();
    let (code, text) = relay_in(&dir, &["migrate"], &[]);
    assert_clean_failure(code, &text, "queues.toml");
    assert!(
        text.contains(&dir.display().to_string()),
        "where it looked: {text}"
    );
    assert!(text.contains("--config"), "{text}");
    assert!(text.contains("VOUCHER_RELAY_CONFIG"), "{text}");
    assert_eq!(text.matches("os error 2").count(), 1, "{text}");
}

#[test]
fn toml_error_keeps_its_caret_under_the_fault() {
    let path = std::env::temp_dir().join(format!("vr-test-{}-bad.toml", std::process::id()));
    std::fs::write(&path, "[broker]\nurl = \n").unwrap();
    let (code, text) = relay(&["--config", path.to_str().unwrap(), "migrate"], &[]);
    let _ = std::fs::remove_file(&path);
    assert_clean_failure(code, &text, "line 2");
    let lines: Vec<&str> = text.lines().collect();
    let caret = lines
        .iter()
        .position(|l| l.trim_start().starts_with('|') && l.contains('^'));
    assert!(caret.is_some(), "{text}");
    assert!(
        lines.iter().any(|l| l.starts_with("2 | url =")),
        "the faulty line, on its own: {text}"
    );
}

#[test]
fn help_names_the_environment_the_arguments_and_the_exit_codes() {
    let (code, text) = relay(&["run", "--help"], &[]);
    assert_eq!(code, 0, "{text}");
    for var in [
        "WEBHOOK_SIGNING_SECRET",
        "AMQP_URL",
        "DATABASE_URL",
        "CSQ_PASSWORD",
        "ELECTRUM_PASSWORD",
        "LOG_FORMAT",
        "RUST_LOG",
    ] {
        assert!(text.contains(var), "run --help names {var}: {text}");
    }
    let (code, text) = relay(&["publish", "--help"], &[]);
    assert_eq!(code, 0, "{text}");
    assert!(text.contains("<FILE>  A JSON file"), "{text}");
    assert!(text.contains("Exit codes"), "{text}");
    assert!(text.contains("  3  "), "{text}");
    let (code, text) = relay(&["advices", "replay", "--help"], &[]);
    assert_eq!(code, 0, "{text}");
    assert!(text.contains("<ADVICE_ID>  The advice's id"), "{text}");
}

/// Publishes `commands` through the binary with `--wait`; returns the exit code, stdout and
/// stderr.
async fn publish_and_wait(
    env: &crate::harness::TestEnv,
    name: &str,
    commands: &[serde_json::Value],
    wait: &str,
) -> (Option<i32>, String, String) {
    let file = std::env::temp_dir().join(format!("vr-test-{}-{name}.json", env.id));
    std::fs::write(&file, serde_json::to_vec(commands).unwrap()).unwrap();
    let config = env.config_file();
    let args = [
        "--config",
        config.to_str().unwrap(),
        "publish",
        file.to_str().unwrap(),
        "--wait",
        wait,
    ];
    let out = output_async(&args, &[("AMQP_URL", env.config.broker.url.as_str())]).await;
    let text = |b: &[u8]| String::from_utf8_lossy(b).into_owned();
    (out.status.code(), text(&out.stdout), text(&out.stderr))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn publish_wait_exit_codes_say_how_the_outcomes_went() {
    use crate::harness::purchase;
    let env = crate::harness::TestEnv::new().await;
    let relay = env.start_relay().await;

    let sold = [purchase("cli-ok-1", 1001, None)];
    let (code, stdout, stderr) = publish_and_wait(&env, "sold", &sold, "20").await;
    assert_eq!(code, Some(0), "{stderr}{stdout}");
    assert!(stdout.contains("\"succeeded\""), "{stdout}");

    let declined = [
        purchase("cli-ok-2", 1001, None),
        purchase("cli-declined", 1005, None),
    ];
    let (code, stdout, stderr) = publish_and_wait(&env, "declined", &declined, "20").await;
    assert_eq!(code, Some(2), "{stderr}{stdout}");
    assert_eq!(stdout.lines().count(), 2, "{stdout}");
    assert!(
        stderr.contains("1 of 2 outcomes did not succeed"),
        "{stderr}"
    );

    let mut bad = purchase("cli-rejected", 1001, None);
    bad["params"]["amount_to_send_x100"] = serde_json::json!(25.5);
    let (code, stdout, stderr) = publish_and_wait(&env, "rejected", &[bad], "20").await;
    assert_eq!(code, Some(2), "{stderr}{stdout}");
    assert!(stdout.contains("\"rejected\""), "{stdout}");

    // With the relay stopped, nothing answers: exit 3, with a hint.
    relay.stop().await;
    let late = [purchase("cli-late", 1001, None)];
    let (code, stdout, stderr) = publish_and_wait(&env, "late", &late, "1").await;
    assert_eq!(code, Some(3), "{stderr}{stdout}");
    assert!(
        stderr.contains("0 of 1 outcomes arrived within 1s"),
        "{stderr}"
    );
    assert!(stderr.contains("relay running"), "{stderr}");
    env.cleanup().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_parked_advices_is_said_on_stderr() {
    let env = crate::harness::TestEnv::new().await;
    let config = env.config_file();
    let config = config.to_str().unwrap();
    let db = [("DATABASE_URL", env.config.database.url.as_str())];
    let out = output_async(&["--config", config, "migrate"], &db).await;
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let out = output_async(&["--config", config, "advices", "parked"], &db).await;
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(0), "{stderr}");
    assert!(out.stdout.is_empty(), "stdout stays JSON lines");
    assert!(stderr.contains("no parked advices"), "{stderr}");
    env.cleanup().await;
}

/// Runs `voucher-relay run` on `env` until it logs that it runs, stops it with SIGTERM,
/// and returns its exit code and log lines.
fn run_and_stop(env: &crate::harness::TestEnv, log_format: Option<&str>) -> (i32, Vec<String>) {
    let config = env.config_file();
    let mut vars = vec![
        ("WEBHOOK_SIGNING_SECRET", crate::harness::SECRET),
        ("CSQ_USER", "tester"),
        ("CSQ_PASSWORD", "test-secret"),
        ("ELECTRUM_PASSWORD", "test-secret"),
        ("AMQP_URL", env.config.broker.url.as_str()),
        ("DATABASE_URL", env.config.database.url.as_str()),
    ];
    if let Some(format) = log_format {
        vars.push(("LOG_FORMAT", format));
    }
    let mut child = command_in(
        Path::new(env!("CARGO_MANIFEST_DIR")),
        &["--config", config.to_str().unwrap(), "run"],
        &vars,
    )
    .stdout(Stdio::null())
    .stderr(Stdio::piped())
    .spawn()
    .expect("relay starts");
    let stderr = child.stderr.take().expect("piped");
    let (tx, rx) = std::sync::mpsc::channel();
    let reader = std::thread::spawn(move || {
        for line in std::io::BufReader::new(stderr)
            .lines()
            .map_while(Result::ok)
        {
            let _ = tx.send(line);
        }
    });
    let mut lines = Vec::new();
    while let Ok(line) = rx.recv_timeout(Duration::from_secs(60)) {
        let running = line.contains("voucher-relay running");
        lines.push(line);
        if running {
            break;
        }
    }
    let term = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .expect("kill runs");
    assert!(term.success());
    let status = child.wait().expect("relay stops");
    let _ = reader.join();
    lines.extend(rx.try_iter());
    (status.code().unwrap_or(-1), lines)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn run_logs_json_or_pretty_without_notices_and_says_stopped() {
    let env = crate::harness::TestEnv::new().await;
    // Not a terminal and LOG_FORMAT unset: JSON lines.
    let (code, lines) = tokio::task::block_in_place(|| run_and_stop(&env, None));
    let text = lines.join("\n");
    assert_eq!(code, 0, "{text}");
    for line in &lines {
        let json: serde_json::Value = serde_json::from_str(line).expect(line);
        assert!(json["level"].is_string(), "{line}");
    }
    let last = lines.last().map(String::as_str).unwrap_or_default();
    assert!(last.contains("\"message\":\"stopped\""), "{text}");

    // The second start finds the tables there: PostgreSQL's "already exists, skipping"
    // notices stay below the default level.
    let (code, lines) = tokio::task::block_in_place(|| run_and_stop(&env, Some("pretty")));
    let text = lines.join("\n");
    assert_eq!(code, 0, "{text}");
    assert!(lines.iter().all(|l| !l.starts_with('{')), "{text}");
    assert!(
        text.contains("INFO") && text.contains("voucher-relay running"),
        "{text}"
    );
    assert!(!text.contains("already exists"), "{text}");
    assert!(!text.contains(".cargo/registry"), "{text}");
    assert!(
        lines.last().is_some_and(|l| l.ends_with("stopped")),
        "{text}"
    );
    env.cleanup().await;
}
