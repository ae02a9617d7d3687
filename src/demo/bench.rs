//! `voucher-relay bench`: how fast the relay carries commands end to end.
//!
//! Publishes `commands` CSQ purchases (operator 1001) or Electrum provisions (each followed
//! by its dual-messaging confirmation) as fast as the broker confirms them, with the
//! provider rate limit raised to `rate`, and measures each one from publish to its AMQP
//! reply. Prints throughput and latency percentiles. Speed is measured here, never asserted
//! in a test.

use std::collections::HashMap;
use std::path::Path;
use std::time::{Duration, Instant};

use lapin::options::BasicAckOptions;
use serde_json::{Value, json};

use super::callbacks::CallbackReceiver;
use super::rig::{DemoEnv, Rig};
use crate::broker::{Publisher, publisher::json_properties};
use crate::providers::csq::sandbox::{OPERATOR_OK, SandboxOptions};
use crate::telemetry;

/// Which provider the benchmark drives.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Target {
    Csq,
    Electrum,
}

/// Runs the benchmark and prints its figures.
pub async fn run(
    config_path: &Path,
    commands: usize,
    rate: u32,
    target: Target,
) -> anyhow::Result<()> {
    telemetry::init_logging("off");
    let commands = commands.max(1);
    let env = DemoEnv::new();
    let mut rig = start_bench_rig(config_path, &env, rate).await?;
    let publisher = Publisher::connect(&rig.config.broker.url).await?;
    let exchange = rig.config.name(&rig.config.broker.commands_exchange);
    let source = format!("bench-{}", chrono::Utc::now().format("%Y%m%d%H%M%S%3f"));
    let what = match target {
        Target::Csq => "CSQ purchases",
        Target::Electrum => "Electrum provisions (+ confirmations)",
    };
    println!("voucher-relay bench: {commands} {what}, provider limit {rate}/s, prefetch 64");

    let started = Instant::now();
    let mut sent_at =
        publish_commands(&publisher, &exchange, &rig, target, &source, commands).await?;
    let published = started.elapsed();
    publisher.close().await;
    let mut latencies = collect_latencies(&mut rig, &mut sent_at, commands).await?;
    let elapsed = started.elapsed();
    let effects = sandbox_effects(&rig, target);
    rig.stop().await;

    latencies.sort();
    print_figures(&latencies, commands, published, elapsed);
    println!("{effects}");
    if latencies.len() < commands {
        anyhow::bail!("{} outcomes never arrived", commands - latencies.len());
    }
    Ok(())
}

/// The paced mode: `pace` CSQ purchases a second for `seconds`, each with a callback to a
/// receiver that checks its signature; prints the latency from publish to callback and the
/// peak memory of this process (the relay's workers, the sandboxes and the receiver).
pub async fn run_paced(
    config_path: &Path,
    pace: u32,
    seconds: u64,
    rate: u32,
) -> anyhow::Result<()> {
    telemetry::init_logging("off");
    let pace = pace.max(1);
    let commands = usize::try_from(u64::from(pace) * seconds.max(1)).unwrap_or(usize::MAX);
    let env = DemoEnv::new();
    let rig = Rig::start(
        config_path,
        &env,
        "bench.",
        SandboxOptions::default(),
        |c| {
            tune_for_bench(c, rate);
            // The receiver is on 127.0.0.1; nothing else internal is opened.
            c.webhook.allow_cidrs =
                crate::webhook::guard::AllowList::parse("127.0.0.1/32").unwrap_or_default();
        },
    )
    .await?;
    let receiver = CallbackReceiver::start(&rig.config).await?;
    let publisher = Publisher::connect(&rig.config.broker.url).await?;
    let exchange = rig.config.name(&rig.config.broker.commands_exchange);
    let source = format!("paced-{}", chrono::Utc::now().format("%Y%m%d%H%M%S%3f"));
    println!(
        "voucher-relay bench --pace {pace}: {commands} CSQ purchases at {pace}/s for {seconds} s, each with a signed callback; provider limit {rate}/s"
    );
    let interval = Duration::from_secs(1) / pace;
    let started = Instant::now();
    let mut sent_at = HashMap::with_capacity(commands);
    for i in 0..commands {
        let due = started + interval * u32::try_from(i).unwrap_or(u32::MAX);
        tokio::time::sleep_until(due.into()).await;
        let id = format!("p-{i:07}");
        let mut body = bench_command(Target::Csq, &id, &source);
        body["callback_url"] = Value::String(receiver.url.clone());
        sent_at.insert(id, Instant::now());
        publisher
            .publish(
                &exchange,
                "purchase.csq",
                &serde_json::to_vec(&body)?,
                json_properties(),
            )
            .await?;
    }
    let published = started.elapsed();
    publisher.close().await;
    let mut latencies = Vec::with_capacity(commands);
    let deadline = Instant::now() + Duration::from_secs(60);
    while latencies.len() < commands && Instant::now() < deadline {
        for (id, at) in receiver.take_arrivals() {
            if let Some(sent) = sent_at.remove(&id) {
                latencies.push(at.saturating_duration_since(sent));
            }
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let bad_signatures = receiver.bad_signatures();
    receiver.stop();
    rig.stop().await;
    latencies.sort();
    let ms = |d: Duration| d.as_secs_f64() * 1e3;
    println!(
        "published {commands} in {:.2} s ({:.0}/s)",
        published.as_secs_f64(),
        commands as f64 / published.as_secs_f64().max(1e-3)
    );
    println!(
        "callbacks: {} of {commands}, every signature verified: {}",
        latencies.len(),
        bad_signatures == 0
    );
    println!(
        "latency publish -> callback: p50 {:.1} ms, p90 {:.1} ms, p99 {:.1} ms, max {:.1} ms",
        ms(percentile(&latencies, 50)),
        ms(percentile(&latencies, 90)),
        ms(percentile(&latencies, 99)),
        ms(latencies.last().copied().unwrap_or_default())
    );
    match peak_rss_kib() {
        Some(kib) => println!(
            "peak RSS of this process (relay workers, sandboxes, receiver, publisher): {:.1} MiB",
            kib as f64 / 1024.0
        ),
        None => println!("peak RSS: not available on this system"),
    }
    if latencies.len() < commands {
        anyhow::bail!("{} callbacks never arrived", commands - latencies.len());
    }
    Ok(())
}

/// The `p`th percentile of sorted `latencies`.
fn percentile(latencies: &[Duration], p: usize) -> Duration {
    latencies
        .get((latencies.len() * p / 100).min(latencies.len().saturating_sub(1)))
        .copied()
        .unwrap_or_default()
}

/// This process's peak resident memory (`VmHWM`), in KiB.
fn peak_rss_kib() -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
}

/// Both providers' rate limits at `rate` and room for 64 commands in flight.
fn tune_for_bench(c: &mut crate::config::Config, rate: u32) {
    c.providers.csq.http.rate_per_sec = rate.max(1);
    c.providers.csq.http.concurrency = 64;
    c.providers.electrum.http.rate_per_sec = rate.max(1);
    c.providers.electrum.http.concurrency = 64;
    c.broker.prefetch = 64;
}

/// The rig with both providers' rate limits at `rate` and room for 64 commands in flight.
async fn start_bench_rig(config_path: &Path, env: &DemoEnv, rate: u32) -> anyhow::Result<Rig> {
    Rig::start(config_path, env, "bench.", SandboxOptions::default(), |c| {
        tune_for_bench(c, rate)
    })
    .await
}

/// Publishes `commands` commands for `target` to `exchange` as fast as the broker confirms
/// them, each asking for its reply on the rig's reply queue; answers when each was sent, by
/// correlation id.
async fn publish_commands(
    publisher: &Publisher,
    exchange: &str,
    rig: &Rig,
    target: Target,
    source: &str,
    commands: usize,
) -> anyhow::Result<HashMap<String, Instant>> {
    let routing_key = match target {
        Target::Csq => "purchase.csq",
        Target::Electrum => "provision.electrum",
    };
    let mut sent_at = HashMap::with_capacity(commands);
    for i in 0..commands {
        let id = format!("b-{i:06}");
        let body = bench_command(target, &id, source);
        let props = json_properties()
            .with_reply_to(rig.replies.name.as_str().into())
            .with_correlation_id(id.as_str().into());
        sent_at.insert(id, Instant::now());
        publisher
            .publish(exchange, routing_key, &serde_json::to_vec(&body)?, props)
            .await?;
    }
    Ok(sent_at)
}

/// The command `id` of the benchmark: a purchase from the always-selling operator, or a
/// provision.
pub(super) fn bench_command(target: Target, id: &str, source: &str) -> Value {
    match target {
        Target::Csq => json!({
            "command_id": id, "source": source, "kind": "purchase", "provider": "csq",
            "params": {"terminal_id": 1, "operator_id": OPERATOR_OK, "amount_to_send_x100": 1000}
        }),
        Target::Electrum => json!({
            "command_id": id, "source": source, "kind": "provision", "provider": "electrum",
            "params": {"originator": {
                "institution": {"id": "11111111", "name": "Bench Shop"},
                "terminalId": "bench01",
                "merchant": {"merchantType": "4444", "merchantId": "bench",
                    "merchantName": {"name": "Bench Shop", "city": "Cape Town", "region": "WP", "country": "ZA"}}
            }, "amount_minor": 1000, "currency": "710"}
        }),
    }
}

/// Waits for the replies, for at most ten minutes, and answers each command's latency from
/// publish to reply (in arrival order).
async fn collect_latencies(
    rig: &mut Rig,
    sent_at: &mut HashMap<String, Instant>,
    commands: usize,
) -> anyhow::Result<Vec<Duration>> {
    let mut latencies = Vec::with_capacity(commands);
    let deadline = tokio::time::Instant::now() + Duration::from_secs(600);
    while latencies.len() < commands {
        match tokio::time::timeout_at(deadline, rig.replies.next()).await {
            Ok(Some(d)) => {
                let corr = d
                    .properties
                    .correlation_id()
                    .as_ref()
                    .map(|c| c.to_string());
                if let Some(at) = corr.and_then(|c| sent_at.remove(&c)) {
                    latencies.push(at.elapsed());
                }
                d.ack(BasicAckOptions::default()).await?;
            }
            _ => break,
        }
    }
    Ok(latencies)
}

/// What the sandbox of `target` applied, as a line of the report.
fn sandbox_effects(rig: &Rig, target: Target) -> String {
    match target {
        Target::Csq => format!(
            "vouchers sold by the sandbox: {}",
            rig.csq.stats().purchases_applied
        ),
        Target::Electrum => {
            use crate::providers::electrum::sandbox::Operation;
            let stats = rig.electrum.stats();
            format!(
                "vouchers provisioned by the sandbox: {}, confirmations accepted: {}",
                stats.effects_of(Operation::Provision),
                stats.effects_of(Operation::ProvisionConfirmation)
            )
        }
    }
}

/// Prints throughput and the latency percentiles of the sorted `latencies`.
fn print_figures(latencies: &[Duration], commands: usize, published: Duration, elapsed: Duration) {
    let pct = |p: usize| percentile(latencies, p);
    println!(
        "published in {:.2} s ({:.0} msg/s with confirms)",
        published.as_secs_f64(),
        commands as f64 / published.as_secs_f64().max(1e-3)
    );
    println!(
        "outcomes: {} of {commands} in {:.2} s: {:.1} commands/s end to end",
        latencies.len(),
        elapsed.as_secs_f64(),
        latencies.len() as f64 / elapsed.as_secs_f64().max(1e-3)
    );
    println!(
        "latency publish -> reply: p50 {:.1} ms, p90 {:.1} ms, p99 {:.1} ms, max {:.1} ms",
        pct(50).as_secs_f64() * 1e3,
        pct(90).as_secs_f64() * 1e3,
        pct(99).as_secs_f64() * 1e3,
        latencies.last().copied().unwrap_or_default().as_secs_f64() * 1e3
    );
}
