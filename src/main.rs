//! The `voucher-relay` binary: see `--help`.

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use clap::{Parser, Subcommand};
use voucher_relay::broker::{self, topology};
use voucher_relay::config::{Config, ProcessEnv};
use voucher_relay::workers::Relay;
use voucher_relay::{admin, demo, operator, publish, sandbox, store, telemetry};

#[derive(Parser)]
#[command(
    name = "voucher-relay",
    version,
    about = "Carries voucher transactions between upstream systems and voucher providers."
)]
struct Cli {
    /// The topology and provider settings.
    #[arg(
        long,
        global = true,
        env = "VOUCHER_RELAY_CONFIG",
        default_value = "queues.toml"
    )]
    config: PathBuf,
    #[command(subcommand)]
    command: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// Run the workers until SIGINT or SIGTERM.
    #[command(after_help = RUN_ENV)]
    Run,
    /// Apply the database migrations.
    Migrate,
    /// Declare the RabbitMQ topology, or check it against the broker.
    Topology {
        #[command(subcommand)]
        action: TopologyAction,
    },
    /// Run the provider simulators, each on its own port.
    Sandbox,
    /// Check that each provider answers its ping endpoint.
    Providers {
        #[command(subcommand)]
        action: ProvidersAction,
    },
    /// Advices (Electrum confirmations and reversals) that used up their retry budget.
    Advices {
        #[command(subcommand)]
        action: AdvicesAction,
    },
    /// Callback deliveries: dead ones and their replay, disabled URLs, the attempt log.
    Callbacks {
        #[command(subcommand)]
        action: CallbacksAction,
    },
    /// Dead-letter and parked places: list, show, replay, discard (every change recorded
    /// with who and why).
    Dlq {
        #[command(subcommand)]
        action: operator::cli::DlqAction,
    },
    /// One transaction's timeline, or transactions by status, provider, source and age.
    Tx {
        #[command(subcommand)]
        action: operator::cli::TxAction,
    },
    /// Publish the command(s) in a JSON file.
    #[command(after_help = PUBLISH_EXIT)]
    Publish {
        /// A JSON file holding one command object or an array of them (see examples/).
        file: PathBuf,
        /// Wait this many seconds for the outcomes, print them (one JSON line each on
        /// stdout) and exit with a code that says how they went.
        #[arg(long, value_name = "SECONDS")]
        wait: Option<u64>,
    },
    /// Start the sandbox and the workers, run a mixed batch, and print a table of outcomes.
    Demo {
        /// How many commands to publish.
        #[arg(long, default_value_t = 200)]
        commands: usize,
    },
    /// Measure end-to-end throughput and latency of purchases against the sandbox.
    Bench {
        #[command(subcommand)]
        mode: Option<BenchMode>,
        /// How many commands to publish.
        #[arg(long, default_value_t = 2000)]
        commands: usize,
        /// The provider rate limit to run at, in requests per second.
        #[arg(long, default_value_t = 1000)]
        rate: u32,
        /// Which provider to drive: CSQ purchases or Electrum provisions.
        #[arg(long, value_enum, default_value_t = demo::bench::Target::Csq)]
        provider: demo::bench::Target,
        /// Publish at this steady rate (commands a second, CSQ purchases with signed
        /// callbacks) instead of as fast as possible, and print the latency from publish to
        /// callback and the peak memory.
        #[arg(long)]
        pace: Option<u32>,
        /// With --pace: for this many seconds.
        #[arg(long, default_value_t = 30)]
        seconds: u64,
    },
    /// Check the relay's promises: one outcome per command (or visibly waiting), no double
    /// effect, every unknown resolved, every outcome delivered or dead-lettered with its
    /// attempts, the work queues drained. Exits 1 on any breach.
    Verify {
        /// Also compare with the sandboxes' own ledgers (GET /sandbox/sales).
        #[arg(long)]
        sandbox: bool,
        /// Work waiting this long with nothing driving it is a breach, in seconds.
        #[arg(long, default_value_t = 300)]
        stuck_after: u64,
    },
}

#[derive(Subcommand)]
enum BenchMode {
    /// The shared rate limit: 1, then 3 relay processes against the sandbox at --rate;
    /// prints the observed rate and the busiest second, then kills one process and shows
    /// its share going to the others. Exits 1 if a limit was broken.
    Ratelimit {
        /// The provider limit, in requests per second.
        #[arg(long, default_value_t = 50)]
        rate: u32,
        /// Seconds measured with 1 and with 3 processes.
        #[arg(long, default_value_t = 30)]
        seconds: u64,
    },
}

/// `run --help`: what it reads from the environment.
const RUN_ENV: &str = "\
Environment:
  WEBHOOK_SIGNING_SECRET  required: whsec_ + base64, e.g. whsec_$(head -c 32 /dev/urandom | base64);
                          while rotating, several separated by spaces, the new one first
  WEBHOOK_RETRY_SCHEDULE  callback attempt times, e.g. 0s,5s,5m,30m,2h,5h,10h,10h
  WEBHOOK_ALLOW_CIDRS     internal ranges callbacks may reach, e.g. 10.20.0.0/16,127.0.0.1/32
  CSQ_USER, CSQ_PASSWORD  required while CSQ is enabled (names set in [providers.csq])
  ELECTRUM_PASSWORD       required while Electrum is enabled (named in [providers.electrum])
  DATA_ENCRYPTION_KEY     base64 of 32 bytes; seals voucher codes at rest (derived if unset)
  AMQP_URL                default amqp://guest:guest@127.0.0.1:5672/%2f
  DATABASE_URL            default postgres://postgres@127.0.0.1:5432/voucher_relay
  RUST_LOG                log filter, default info
  LOG_FORMAT              json or pretty; unset: pretty on a terminal, JSON otherwise

See docs/operations.md.";

/// `publish --help`: the exit codes.
const PUBLISH_EXIT: &str = "\
Exit codes:
  0  published; with --wait, every outcome arrived and succeeded
  1  an error: the file, the config, the broker
  2  with --wait: every outcome arrived, and at least one was declined, failed, expired,
     reversed or rejected
  3  with --wait: not every outcome arrived in time (is the relay running?)";

#[derive(Subcommand)]
enum ProvidersAction {
    /// Ping every configured provider; exits non-zero if one does not answer.
    Check,
}

#[derive(Subcommand)]
enum AdvicesAction {
    /// Print every parked advice, one JSON line each.
    Parked,
    /// Put a parked advice back to work with a fresh retry budget (a running relay sends it).
    Replay {
        /// The advice's id (`advice_id`), as `advices parked` prints it.
        advice_id: uuid::Uuid,
        /// Build the message anew (after Electrum refused it as malformed and the relay was
        /// fixed); by default the stored message is repeated unchanged.
        #[arg(long)]
        rebuild: bool,
    },
}

#[derive(Subcommand)]
enum CallbacksAction {
    /// Print every dead callback, one JSON line each (newest first).
    Dead,
    /// Print the delivery history of one outcome's callbacks: state and every attempt.
    Show {
        /// The outcome's event id (the `webhook-id` receivers see).
        event_id: String,
    },
    /// Deliver dead callbacks again, with a fresh schedule (a running relay sends them).
    /// Only dead ones: running it twice is safe.
    #[command(group(clap::ArgGroup::new("which").required(true).args(["event_id", "url", "all_dead"])))]
    Replay {
        /// The outcome's event id.
        event_id: Option<String>,
        /// Every dead callback to this URL.
        #[arg(long)]
        url: Option<String>,
        /// Every dead callback.
        #[arg(long)]
        all_dead: bool,
    },
    /// Print every URL disabled by a 410 Gone, with how many deliveries wait for it.
    Disabled,
    /// Enable a URL disabled by a 410 Gone; its waiting deliveries go out.
    Enable {
        /// The callback URL exactly as commands give it.
        url: String,
    },
}

#[derive(Subcommand)]
enum TopologyAction {
    /// Create the exchanges, queues and bindings of the config file.
    Declare,
    /// Report what is missing or differs on the broker; creates nothing.
    Check,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(run(cli)) {
        Ok(code) => code,
        Err(e) => {
            // One readable message, never a backtrace.
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

async fn run(cli: Cli) -> anyhow::Result<ExitCode> {
    let load = |with_secrets| Config::load(&cli.config, &ProcessEnv, with_secrets);
    match cli.command {
        Cmd::Run => {
            telemetry::try_init_logging("info").map_err(anyhow::Error::msg)?;
            run_relay(load(true)?).await?;
        }
        Cmd::Migrate => {
            let config = load(false)?;
            let applied = store::migrate(&config.database).await?;
            println!(
                "migrations applied: {applied} new, database {}",
                store::describe(&config.database)
            );
        }
        Cmd::Topology { action } => topology(&load(false)?, action).await?,
        Cmd::Sandbox => {
            telemetry::try_init_logging("info").map_err(anyhow::Error::msg)?;
            let mut signals = StopSignals::listen();
            let config = load(false)?;
            tokio::select! {
                r = sandbox::run(&config, &ProcessEnv) => r?,
                _ = signals.recv() => {}
            }
        }
        Cmd::Providers {
            action: ProvidersAction::Check,
        } => providers_check(&load(false)?).await?,
        Cmd::Advices { action } => advices(&load(false)?, action).await?,
        Cmd::Callbacks { action } => callbacks(&load(false)?, action).await?,
        Cmd::Dlq { action } => {
            if !operator::cli::dlq(&mut load(false)?, action).await? {
                return Ok(ExitCode::FAILURE);
            }
        }
        Cmd::Tx { action } => {
            if !operator::cli::tx(&load(false)?, action).await? {
                return Ok(ExitCode::FAILURE);
            }
        }
        Cmd::Publish { file, wait } => {
            let config = load(false)?;
            let commands = publish::read_file(&file)?;
            let summary = publish::run(&config, commands, wait.map(Duration::from_secs)).await?;
            if let Some(problem) = summary.problem() {
                eprintln!("error: {problem}");
            }
            return Ok(ExitCode::from(summary.exit_code()));
        }
        Cmd::Demo { commands } => demo::run(&cli.config, commands).await?,
        Cmd::Bench {
            mode: Some(BenchMode::Ratelimit { rate, seconds }),
            ..
        } => {
            if !demo::bench_ratelimit::run(&cli.config, rate, seconds).await? {
                return Ok(ExitCode::from(1));
            }
        }
        Cmd::Bench {
            mode: None,
            pace: Some(pace),
            seconds,
            rate,
            ..
        } => demo::bench::run_paced(&cli.config, pace, seconds, rate).await?,
        Cmd::Bench {
            mode: None,
            commands,
            rate,
            provider,
            pace: None,
            ..
        } => demo::bench::run(&cli.config, commands, rate, provider).await?,
        Cmd::Verify {
            sandbox,
            stuck_after,
        } => {
            let mut config = load(false)?;
            config.read_data_keys(&ProcessEnv)?;
            let store = open_store(&config).await?;
            let opts = voucher_relay::verify::Options {
                sandbox,
                stuck_after: Duration::from_secs(stuck_after),
            };
            let checks = voucher_relay::verify::run(&config, &store, opts).await?;
            for check in &checks {
                println!("{check}");
            }
            let breached = checks.iter().filter(|c| !c.passed()).count();
            if breached > 0 {
                println!("verify: {breached} invariant(s) breached");
                return Ok(ExitCode::from(1));
            }
            println!("verify: every invariant holds");
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// `run`: the relay and its admin endpoint until SIGINT or SIGTERM.
async fn run_relay(config: Config) -> anyhow::Result<()> {
    let mut signals = StopSignals::listen();
    let metrics = admin::install_metrics()?;
    let listen = config.admin.listen;
    // After the relay: it creates and migrates the database the console reads.
    let console_config = config.clone();
    let relay = Relay::start(config).await?;
    let console = console_routes(&console_config).await?;
    let shared = relay.shared.clone();
    let ready: admin::Readiness = std::sync::Arc::new(move || {
        let shared = shared.clone();
        Box::pin(async move { shared.ready().await })
    });
    let admin_task = tokio::spawn(admin::serve(
        listen,
        metrics,
        ready,
        console,
        relay.shutdown(),
    ));
    tracing::info!(admin = %listen, "voucher-relay running");
    signals.recv().await;
    let grace_ms = relay.shared.config.recovery.shutdown_grace_ms;
    tracing::info!(
        grace_ms,
        "stopping: taking no new work, finishing what is in flight (a second signal stops at once)"
    );
    tokio::select! {
        _ = relay.stop() => tracing::info!("stopped"),
        // Leaving now is safe: unacked messages go back to the broker when the connections
        // close, and this process's claims are taken over once its liveness lock is gone.
        _ = signals.recv() => tracing::warn!("second signal: stopped at once; the work in flight goes back to the broker"),
    }
    admin_task.abort();
    Ok(())
}

/// The console's routes when `OPERATOR_TOKEN` is set (on its own small pool, so a page
/// never waits behind the workers); none otherwise.
async fn console_routes(config: &Config) -> anyhow::Result<axum::Router> {
    if config.secrets.operator_token.is_none() {
        tracing::info!("OPERATOR_TOKEN is not set: no web console");
        return Ok(axum::Router::new());
    }
    let mut db = config.database.clone();
    db.pool_size = db.pool_size.min(4);
    let store = store::Store::connect(
        &db,
        voucher_relay::crypto::Sealer::with_keys(&config.secrets.data_keys),
    )
    .await?;
    let console = voucher_relay::console::Console::new(config.clone(), store)
        .ok_or_else(|| anyhow::anyhow!("console without a token"))?;
    tracing::info!(path = "/console", "web console enabled");
    Ok(voucher_relay::console::router(console))
}

/// `topology declare` and `topology check`.
async fn topology(config: &Config, action: TopologyAction) -> anyhow::Result<()> {
    let conn = broker::connect(&config.broker.url, "voucher-relay topology").await?;
    let mode = match action {
        TopologyAction::Declare => topology::Mode::Declare,
        TopologyAction::Check => topology::Mode::Check,
    };
    let result = topology::apply(&conn, config, mode).await;
    let _ = conn.close(200, "done".into()).await;
    result?;
    println!(
        "topology {} on {}",
        match mode {
            topology::Mode::Declare => "declared",
            topology::Mode::Check => "matches queues.toml",
        },
        broker::describe(&config.broker.url)
    );
    Ok(())
}

/// Pings each enabled provider and prints one line per provider.
async fn providers_check(config: &Config) -> anyhow::Result<()> {
    let providers = voucher_relay::providers::Registry::build(
        &config.providers,
        &config.secrets.provider_credentials,
        None,
    )?;
    let mut failed = false;
    let mut sandbox_down = false;
    for provider in providers.iter() {
        let name = provider.name();
        let (answer, exchange) = provider.ping().await;
        let latency = exchange.latency.as_millis();
        // The exchange URL is the ping endpoint's, which has no query.
        match answer {
            Ok(()) => println!("{name:<9} ok      {latency} ms  {}", exchange.url),
            Err(e) => {
                failed = true;
                sandbox_down |= matches!(e, voucher_relay::providers::CallError::NotSent(_))
                    && is_sandbox(config, name, &exchange.url);
                println!("{name:<9} FAILED  {latency} ms  {}: {e}", exchange.url);
            }
        }
    }
    match (failed, sandbox_down) {
        (true, true) => anyhow::bail!(
            "a provider did not answer its ping. Is the sandbox running? Start it in another terminal with `voucher-relay sandbox`."
        ),
        (true, false) => anyhow::bail!("a provider did not answer its ping"),
        _ => Ok(()),
    }
}

/// Whether `url` is on the address where `provider`'s sandbox listens (`[sandbox.<name>]`).
fn is_sandbox(config: &Config, provider: &str, url: &str) -> bool {
    config.sandbox.get(provider).is_some_and(|s| {
        let at = format!("http://{}/", s.listen);
        url.starts_with(&at)
    })
}

/// The database, for the operator subcommands.
async fn open_store(config: &Config) -> anyhow::Result<store::Store> {
    let sealer = voucher_relay::crypto::Sealer::with_keys(&config.secrets.data_keys);
    Ok(store::Store::connect(&config.database, sealer).await?)
}

/// `advices parked` and `advices replay`.
async fn advices(config: &Config, action: AdvicesAction) -> anyhow::Result<()> {
    let db = open_store(config).await?;
    match action {
        AdvicesAction::Parked => {
            let parked = db.parked_advices().await?;
            for advice in &parked {
                println!("{advice}");
            }
            // On stderr, so stdout stays JSON lines.
            if parked.is_empty() {
                eprintln!("no parked advices");
            }
            Ok(())
        }
        AdvicesAction::Replay { advice_id, rebuild } => {
            let Some(provider) = db.parked_advice_provider(advice_id).await? else {
                anyhow::bail!("no parked advice {advice_id}");
            };
            let Some((budget, queue)) = config.providers.advices_of(&provider) else {
                anyhow::bail!("provider {provider:?} of advice {advice_id} has no advices here");
            };
            let Some(tx) = db.replay_advice(advice_id, budget, rebuild).await? else {
                anyhow::bail!("no parked advice {advice_id}");
            };
            println!("advice {advice_id} of transaction {tx} is pending again");
            // Wake the workers now; without this the sweeper finds it within about a minute.
            if let Err(e) = wake_advice(config, queue, tx).await {
                eprintln!(
                    "warning: could not wake the relay ({e}); its sweeper will send the advice within about a minute"
                );
            }
            Ok(())
        }
    }
}

/// `callbacks dead|show|replay|disabled|enable`.
async fn callbacks(config: &Config, action: CallbacksAction) -> anyhow::Result<()> {
    use voucher_relay::store::callbacks::ReplaySelector;
    let db = open_store(config).await?;
    let print_lines = |lines: Vec<serde_json::Value>, none: &str| {
        for line in &lines {
            println!("{line}");
        }
        // On stderr, so stdout stays JSON lines.
        if lines.is_empty() {
            eprintln!("{none}");
        }
    };
    match action {
        CallbacksAction::Dead => print_lines(db.dead_callbacks().await?, "no dead callbacks"),
        CallbacksAction::Show { event_id } => print_lines(
            db.callback_history(&event_id).await?,
            &format!("no callback for event {event_id}"),
        ),
        CallbacksAction::Replay {
            event_id,
            url,
            all_dead,
        } => {
            let selector = match (event_id, url, all_dead) {
                (Some(id), _, _) => ReplaySelector::Event(id),
                (_, Some(url), _) => ReplaySelector::Url(url),
                _ => ReplaySelector::AllDead,
            };
            let replayed = db.replay_callbacks(&selector).await?;
            for r in &replayed {
                println!("callback {} to {} is pending again", r.event_id, r.url);
            }
            eprintln!(
                "{} dead callback(s) put back to work; a running relay delivers them",
                replayed.len()
            );
        }
        CallbacksAction::Disabled => print_lines(
            db.disabled_callback_urls().await?,
            "no disabled callback URLs",
        ),
        CallbacksAction::Enable { url } => {
            let (was_disabled, waiting) = db.enable_callback_url(&url).await?;
            if !was_disabled {
                anyhow::bail!("{url} is not disabled (see: voucher-relay callbacks disabled)");
            }
            println!("{url} enabled; {waiting} waiting delivery(ies) go out now");
        }
    }
    Ok(())
}

/// Publishes the advice wake-up straight to the provider's advice `queue`, as a running
/// relay's own immediate wake-ups go.
async fn wake_advice(config: &Config, queue: &str, tx: uuid::Uuid) -> anyhow::Result<()> {
    let publisher = broker::Publisher::connect(&config.broker.url).await?;
    let body = voucher_relay::workers::follow_up::wake_up_body(tx);
    let sent = publisher
        .publish_routed(
            "",
            &config.name(queue),
            &body,
            voucher_relay::broker::publisher::json_properties(),
        )
        .await;
    publisher.close().await;
    Ok(sent?)
}

/// SIGINT and SIGTERM, listened to from the moment this is made: made before the relay
/// says it runs, so a signal that comes right after is never the default (a kill), and
/// kept for the second signal.
struct StopSignals {
    #[cfg(unix)]
    term: Option<tokio::signal::unix::Signal>,
    #[cfg(unix)]
    int: Option<tokio::signal::unix::Signal>,
}

impl StopSignals {
    fn listen() -> StopSignals {
        #[cfg(unix)]
        {
            use tokio::signal::unix::{SignalKind, signal};
            StopSignals {
                term: signal(SignalKind::terminate()).ok(),
                int: signal(SignalKind::interrupt()).ok(),
            }
        }
        #[cfg(not(unix))]
        StopSignals {}
    }

    /// Resolves at the next SIGINT or SIGTERM.
    async fn recv(&mut self) {
        #[cfg(unix)]
        {
            async fn next(s: &mut Option<tokio::signal::unix::Signal>) {
                match s {
                    Some(s) => {
                        s.recv().await;
                    }
                    None => std::future::pending().await,
                }
            }
            tokio::select! {
                _ = next(&mut self.term) => {}
                _ = next(&mut self.int) => {}
            }
        }
        #[cfg(not(unix))]
        {
            let _ = tokio::signal::ctrl_c().await;
        }
    }
}
