//! `voucher-relay demo`: the whole path in one process. `bench` measures it.
//!
//! Starts the CSQ and Electrum sandboxes, a callback receiver that verifies every signature,
//! and the relay's workers; publishes a mixed CSQ batch (successes, declines, one duplicate
//! and a few malformed commands) through RabbitMQ and prints a table of outcomes by status;
//! then runs an Electrum voucher through provision, a redemption that times out and is
//! reversed through store-and-forward, a second redemption and a refund.
//!
//! It never mixes with a relay already running: its broker names carry the `demo.` prefix
//! and are emptied at every start, and it uses a database of its own
//! (`<database>_demo`), made anew at every start. It gives up at an overall deadline and
//! says what is missing.
//!
//! The parts, in the order the demo runs them: `rig` (sandboxes, relay, reply queue),
//! `callbacks` (the receiver), `batch` (what is published and expected), `replies` (the
//! AMQP replies and the progress bar), `electrum_scene`, and `report`.

mod batch;
pub mod bench;
pub mod bench_ratelimit;
mod callbacks;
mod electrum_scene;
mod replies;
mod report;
pub mod rig;

use std::path::Path;
use std::time::{Duration, Instant};

use crate::providers::csq::sandbox::SandboxOptions;
use crate::telemetry;
use batch::{build_batch, publish_batch};
use callbacks::CallbackReceiver;
use electrum_scene::electrum_scene;
use replies::collect_replies;
use report::{BatchResults, print_batch_speed, report};
use rig::{DemoEnv, Rig};

/// How long the whole demo may take once its commands are published: its slowest flows
/// (a resolve deadline, a raffle draw, a reversal through 503s) take about 15 s.
const DEADLINE: Duration = Duration::from_secs(150);

/// Runs the demo with `total` commands.
pub async fn run(config_path: &Path, total: usize) -> anyhow::Result<()> {
    // The demo reports in its own words; RUST_LOG=info shows the relay's JSON logs too.
    telemetry::init_logging("off");
    let minimum = batch::minimum();
    if total < minimum {
        anyhow::bail!(
            "--commands {total} is too few: the demo publishes one command of each long flow, \
             every kind of malformed command and a duplicate, so it needs at least {minimum}"
        );
    }
    let env = DemoEnv::new();
    let mut rig = start_demo_rig(config_path, &env).await?;
    let config = rig.config.clone();
    let receiver = CallbackReceiver::start(&config).await?;

    let source = format!("demo-{}", chrono::Utc::now().format("%Y%m%d%H%M%S%3f"));
    let batch = build_batch(&source, &receiver.url, total);
    println!(
        "voucher-relay demo: publishing {} commands to {}{} (source {source})",
        batch.len(),
        config.broker.name_prefix,
        config.broker.commands_exchange
    );
    let started = Instant::now();
    let deadline = tokio::time::Instant::now() + DEADLINE;
    let reply_queue = rig.replies.name.clone();
    let sent = publish_batch(&config, &reply_queue, batch).await?;
    let replies = collect_replies(&mut rig, &sent, started, deadline).await?;
    let replies_done = started.elapsed();
    let expected_callbacks = sent.iter().filter(|s| s.has_callback).count();
    receiver
        .wait_for_terminal(expected_callbacks, deadline)
        .await;
    let elapsed = started.elapsed();

    let csq = rig.csq.stats();
    println!();
    let mut electrum_problems = electrum_scene(&mut rig, &source, deadline).await;
    if tokio::time::Instant::now() >= deadline {
        electrum_problems.push(format!(
            "the demo's deadline of {} s passed before every outcome arrived (listed here)",
            DEADLINE.as_secs()
        ));
    }
    rig.stop().await;
    let results = BatchResults {
        sent,
        replies,
        callbacks: receiver.stop(),
        csq,
        elapsed,
        replies_done,
    };
    print_batch_speed(&results, config.providers.csq.http.rate_per_sec);
    report(&results, electrum_problems)
}

/// The rig with short fault timings, so every flow finishes within the demo.
async fn start_demo_rig(config_path: &Path, env: &DemoEnv) -> anyhow::Result<Rig> {
    // 1006 answers after 4 s: give up after 2 s and resolve it. 1007 never sells: each
    // send is proved never received 2 s after it (the request timeout), sent again up to the
    // resend budget, then `failed` / `not_applied`, about 9 s in all.
    let options = SandboxOptions {
        slow_answer: Duration::from_secs(4),
        additional_data_delay: Duration::from_secs(1),
        draw_delay: Duration::from_secs(3),
        win_per_mille: 500,
        ..SandboxOptions::default()
    };
    Rig::start(config_path, env, "demo.", options, |c| {
        c.providers.csq.http.request_timeout_ms = 2000;
        c.providers.csq.resolve_deadline_ms = 5000;
        // The Electrum sandbox holds a faulted answer for a minute: give up after 2 s and
        // reverse. Advices repeat after 0.5 s doubling, so the demo's reversal ends quickly.
        c.providers.electrum.http.request_timeout_ms = 2000;
        c.providers.electrum.advice_backoff_base_ms = 500;
        // The demo's callback receiver is on 127.0.0.1; nothing else internal is opened.
        c.webhook.allow_cidrs =
            crate::webhook::guard::AllowList::parse("127.0.0.1/32").unwrap_or_default();
    })
    .await
}
