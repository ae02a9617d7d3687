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

/// The rig with both providers' rate limits at `rate` and room for 64 commands in flight.
async fn start_bench_rig(config_path: &Path, env: &DemoEnv, rate: u32) -> anyhow::Result<Rig> {
    Rig::start(config_path, env, "bench.", SandboxOptions::default(), |c| {
        c.providers.csq.http.rate_per_sec = rate.max(1);
        c.providers.csq.http.concurrency = 64;
        c.providers.electrum.http.rate_per_sec = rate.max(1);
        c.providers.electrum.http.concurrency = 64;
        c.broker.prefetch = 64;
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
fn bench_command(target: Target, id: &str, source: &str) -> Value {
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
    let pct = |p: usize| {
        latencies
            .get((latencies.len() * p / 100).min(latencies.len().saturating_sub(1)))
            .copied()
            .unwrap_or_default()
    };
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
