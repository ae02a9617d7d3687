//! `voucher-relay bench ratelimit`: does the shared rate limit hold across processes?
//!
//! One relay process, then three, carry a backlog of CSQ purchases against the sandbox at
//! a provider limit of `rate` requests a second. For each, over `seconds`, it prints the rate
//! the sandbox observed and the most requests it saw in any one-second window. Then one of
//! the three is killed (no clean stop: its lease just ends) and it prints the rate second by
//! second while the other two take its share over. Every request to the sandbox's API
//! counts, as it counts against the limit: purchases, and the polls that resolve what the
//! killed process left in flight. Exits 1 if a limit was broken: the rate
//! more than 5 % off, or a one-second window above the rate plus the processes' bursts.
//!
//! The relay "processes" are separate relays in this process: each registers its own
//! process row, holds its own liveness lock and rate lease, and has its own connections,
//! exactly as separate OS processes would.

use std::path::Path;
use std::time::{Duration, Instant};

use super::bench::{Target, bench_command};
use super::rig::{DemoEnv, Rig};
use crate::broker::{Publisher, publisher::json_properties};
use crate::providers::csq::sandbox::{CsqSandbox, SandboxOptions};
use crate::telemetry;
use crate::workers::Relay;

/// Time for leases to settle after the number of processes changed: two renewals and a
/// margin.
const SETTLE: Duration = Duration::from_secs(4);
/// Seconds watched after a process is killed.
const AFTER_KILL: u64 = 8;

/// What one phase measured.
struct Observed {
    rate: f64,
    busiest_second: usize,
}

pub async fn run(config_path: &Path, rate: u32, seconds: u64) -> anyhow::Result<bool> {
    telemetry::init_logging("off");
    let rate = rate.max(1);
    let seconds = seconds.max(1);
    let env = DemoEnv::new();
    let rig = Rig::start(
        config_path,
        &env,
        "bench-rl.",
        SandboxOptions::default(),
        |c| {
            c.providers.csq.http.rate_per_sec = rate;
            c.providers.csq.http.concurrency = 16;
            c.broker.prefetch = 64;
        },
    )
    .await?;
    // Enough work for every phase, with a margin: the sandbox only sees the limit.
    let backlog = u64::from(rate) * (2 * seconds + 2 * SETTLE.as_secs() + AFTER_KILL + 20);
    publish_backlog(&rig, backlog).await?;
    println!(
        "voucher-relay bench ratelimit: CSQ at a limit of {rate}/s, {backlog} purchases queued, {seconds} s per phase"
    );

    let mut ok = true;
    tokio::time::sleep(SETTLE).await;
    let one = observe(&rig.csq, seconds).await;
    ok &= report("1 process", &one, rate, 1);

    let mut others = Vec::new();
    for _ in 0..2 {
        others.push(Relay::start(rig.config.clone()).await?);
    }
    tokio::time::sleep(SETTLE).await;
    let three = observe(&rig.csq, seconds).await;
    ok &= report("3 processes", &three, rate, 3);

    if let Some(victim) = others.pop() {
        victim.kill().await;
        let killed_at = Instant::now();
        tokio::time::sleep(Duration::from_secs(AFTER_KILL)).await;
        let arrivals = rig.csq.request_arrivals();
        let per_second: Vec<String> = (0..AFTER_KILL)
            .map(|s| {
                let from = killed_at + Duration::from_secs(s);
                count_between(&arrivals, from, from + Duration::from_secs(1)).to_string()
            })
            .collect();
        println!(
            "one of 3 killed (no clean stop): requests in each second after: {}",
            per_second.join(", ")
        );
        let last = count_between(
            &arrivals,
            killed_at + Duration::from_secs(AFTER_KILL - 2),
            killed_at + Duration::from_secs(AFTER_KILL),
        ) as f64
            / 2.0;
        let back = (last - f64::from(rate)).abs() <= f64::from(rate) * 0.05;
        println!(
            "  its share is back with the other two: {last:.1}/s over the last 2 s ({})",
            if back { "ok" } else { "NOT within 5 %" }
        );
        ok &= back;
    }
    for relay in others {
        relay.stop_within(Duration::from_secs(2)).await;
    }
    rig.stop().await;
    println!(
        "{}",
        if ok {
            "ratelimit: every limit held"
        } else {
            "ratelimit: a limit was broken"
        }
    );
    Ok(ok)
}

/// Publishes `n` purchases (the bench's, from the always-selling operator), without reply
/// targets.
async fn publish_backlog(rig: &Rig, n: u64) -> anyhow::Result<()> {
    let publisher = Publisher::connect(&rig.config.broker.url).await?;
    let exchange = rig.config.name(&rig.config.broker.commands_exchange);
    let source = format!("ratelimit-{}", chrono::Utc::now().format("%Y%m%d%H%M%S%3f"));
    for i in 0..n {
        let body = bench_command(Target::Csq, &format!("rl-{i:07}"), &source);
        publisher
            .publish(
                &exchange,
                "purchase.csq",
                &serde_json::to_vec(&body)?,
                json_properties(),
            )
            .await?;
    }
    publisher.close().await;
    Ok(())
}

/// The sandbox's arrivals over the next `seconds`.
async fn observe(sandbox: &CsqSandbox, seconds: u64) -> Observed {
    let from = Instant::now();
    tokio::time::sleep(Duration::from_secs(seconds)).await;
    let to = Instant::now();
    let arrivals: Vec<Instant> = sandbox
        .request_arrivals()
        .into_iter()
        .filter(|a| *a >= from && *a < to)
        .collect();
    Observed {
        rate: arrivals.len() as f64 / to.duration_since(from).as_secs_f64(),
        busiest_second: busiest_second(&arrivals),
    }
}

/// The most arrivals in any one-second window (sorted `arrivals`).
fn busiest_second(arrivals: &[Instant]) -> usize {
    let mut most = 0;
    let mut start = 0;
    for (end, at) in arrivals.iter().enumerate() {
        while *at - arrivals[start] >= Duration::from_secs(1) {
            start += 1;
        }
        most = most.max(end - start + 1);
    }
    most
}

fn count_between(arrivals: &[Instant], from: Instant, to: Instant) -> usize {
    arrivals.iter().filter(|a| **a >= from && **a < to).count()
}

/// Prints one phase and whether it held: the rate within 5 %, and no second above the rate
/// plus one burst per process (the burst of the largest share).
fn report(what: &str, seen: &Observed, rate: u32, processes: u32) -> bool {
    let within = (seen.rate - f64::from(rate)).abs() <= f64::from(rate) * 0.05;
    let burst = crate::ratelimit::burst(rate.div_ceil(processes.max(1)));
    let allowed = (rate + processes * burst) as usize;
    let bursts_ok = seen.busiest_second <= allowed;
    println!(
        "{what}: {:.2} requests/s observed ({}), busiest 1-s window {} (allowed {allowed}: {})",
        seen.rate,
        if within {
            "within 5 %"
        } else {
            "NOT within 5 %"
        },
        seen.busiest_second,
        if bursts_ok { "ok" } else { "EXCEEDED" }
    );
    within && bursts_ok
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_busiest_second_counts_a_sliding_window() {
        let t0 = Instant::now();
        let at = |ms: u64| t0 + Duration::from_millis(ms);
        // 3 in [0, 1000), then 4 in [900, 1900).
        let arrivals = [at(0), at(500), at(900), at(1000), at(1200), at(1800)];
        assert_eq!(busiest_second(&arrivals), 4);
        assert_eq!(busiest_second(&[]), 0);
    }
}
