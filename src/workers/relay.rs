//! The running relay: connections, topology, the providers, and the worker tasks.

use std::sync::Arc;
use std::time::Duration;

use lapin::message::Delivery;
use tokio::sync::Notify;
use tokio::task::JoinSet;

use super::consumer::consume_supervised;
use super::shared::{Batches, Shared};
use super::{advice, callbacks, dead_letters, executor, gauges, liveness, poller, sweeper};
use crate::broker::{self, Publisher, topology};
use crate::config::Config;
use crate::crypto::Sealer;
use crate::error::RelayError;
use crate::providers::Registry;
use crate::shutdown::{Shutdown, ShutdownTrigger};
use crate::store::{self, Store};
use crate::webhook::{Deliverer, SigningKeys};

/// A started relay. Dropping it does not stop it; call [`Relay::stop`].
pub struct Relay {
    trigger: ShutdownTrigger,
    tasks: JoinSet<()>,
    /// Stops the liveness heartbeat, last: until then this process owns what it claimed.
    liveness: (ShutdownTrigger, tokio::task::JoinHandle<()>),
    /// The rate-lease keeper, for [`Relay::kill`].
    lease_abort: tokio::task::AbortHandle,
    pub shared: Arc<Shared>,
}

impl Relay {
    /// Migrates the database, declares the topology, and starts the workers. Fails fast, with
    /// a message naming the service, if PostgreSQL or RabbitMQ cannot be reached.
    pub async fn start(config: Config) -> anyhow::Result<Relay> {
        let (shared, liveness_store) = connect(config).await?;
        let shared = Arc::new(shared);
        let (alive_trigger, alive) = crate::shutdown::channel();
        let limits = shared.providers.iter().map(|p| p.rate_limit()).collect();
        let leases = tokio::spawn(crate::ratelimit::keep_leases(
            limits,
            shared.process.id,
            alive.clone(),
        ));
        let process = shared.process;
        // Both stop after the workers: until then this process owns what it claimed, and
        // the work in flight may still need its rate share.
        let lease_abort = leases.abort_handle();
        let liveness = tokio::spawn(async move {
            liveness::keep_alive(liveness_store, process, alive).await;
            let _ = leases.await;
        });
        let (trigger, shutdown) = crate::shutdown::channel();
        let mut tasks = JoinSet::new();
        spawn_consumers(&mut tasks, &shared, &shutdown);
        tasks.spawn(sweeper::sweep_until_shutdown(
            shared.clone(),
            shutdown.clone(),
        ));
        tasks.spawn(gauges::sample_until_shutdown(
            shared.clone(),
            shutdown.clone(),
        ));
        tasks.spawn(callbacks::deliver_outbox_until_shutdown(
            shared.clone(),
            shutdown,
        ));
        Ok(Relay {
            trigger,
            tasks,
            liveness: (alive_trigger, liveness),
            lease_abort,
            shared,
        })
    }

    /// [`stop_within`](Self::stop_within) the configured grace period.
    pub async fn stop(self) {
        let grace = Duration::from_millis(self.shared.config.recovery.shutdown_grace_ms);
        self.stop_within(grace).await;
    }

    /// Stops taking work and lets the handlers in flight finish, for `grace` at most.
    /// Handlers still running then are cut off: their messages go back to the broker
    /// unacked, and what they had claimed is taken over by the other processes (or by
    /// this relay's next start) as soon as this process is marked stopped.
    pub async fn stop_within(mut self, grace: Duration) {
        self.trigger.trigger();
        let finished = tokio::time::timeout(grace, async {
            while self.tasks.join_next().await.is_some() {}
        })
        .await;
        if finished.is_err() {
            tracing::warn!(
                grace_ms = grace.as_millis() as u64,
                "grace period over: handing back the work still in flight"
            );
            self.tasks.abort_all();
            while self.tasks.join_next().await.is_some() {}
        }
        self.shared.publisher.close().await;
        let (alive, heartbeat) = self.liveness;
        alive.trigger();
        let _ = heartbeat.await;
    }

    /// Stops everything at once, as a SIGKILL would: nothing is finished, handed back or
    /// released. Its rate share returns to the others when its lease ends, its claims when
    /// its liveness lock goes with its connection. For benchmarks and tests of exactly that.
    pub async fn kill(mut self) {
        self.lease_abort.abort();
        self.liveness.1.abort();
        self.tasks.abort_all();
        while self.tasks.join_next().await.is_some() {}
        let _ = self.liveness.1.await;
    }

    /// A listener for the relay's shutdown, for tasks started beside it.
    pub fn shutdown(&self) -> Shutdown {
        self.trigger.subscribe()
    }
}

/// Connections of the callback dispatcher: one claims while the rest record results.
const OUTBOX_POOL: usize = 6;
/// Batches of each kind written at once. One: while it is written the next one fills up.
/// Measured with `relay.sh 5000`: three at once gave 1,100-1,400 purchases/s, their commits
/// queueing for the log flush one behind the other; one gave 2,700-3,100.
const BATCHES_IN_FLIGHT: usize = 1;

/// Everything the workers share: the database, the topology, the publisher and the
/// enabled providers.
async fn connect(config: Config) -> anyhow::Result<(Shared, Store)> {
    store::migrate(&config.database).await?;
    let store = Store::connect(
        &config.database,
        Sealer::with_keys(&config.secrets.data_keys),
    )
    .await?;
    let conn = broker::connect(&config.broker.url, "voucher-relay topology").await?;
    let declared = topology::apply(&conn, &config, topology::Mode::Declare).await;
    let _ = conn.close(200, "topology declared".into()).await;
    declared?;
    let publisher = Publisher::connect(&config.broker.url).await?;
    let keys = SigningKeys::parse(&config.secrets.webhook_signing_secret)
        .map_err(|e| anyhow::anyhow!("WEBHOOK_SIGNING_SECRET: {e}"))?;
    let deliverer = Deliverer::new(
        keys,
        Duration::from_millis(config.webhook.timeout_ms),
        config.webhook.allow_cidrs.clone(),
        config.webhook.longest_step(),
    )?;
    // The global rate limit gets connections of its own: workers busy with the main pool
    // must not push it into its per-process fallback.
    let limiter_db = crate::config::DatabaseConfig {
        pool_size: 2,
        ..config.database.clone()
    };
    let limiter = Store::connect(&limiter_db, Sealer::with_keys(&config.secrets.data_keys)).await?;
    let outbox_db = crate::config::DatabaseConfig {
        pool_size: OUTBOX_POOL,
        ..config.database.clone()
    };
    let outbox_store =
        Store::connect(&outbox_db, Sealer::with_keys(&config.secrets.data_keys)).await?;
    // Liveness holds its advisory lock on one connection of its own (see
    // `store::processes`), so a pool of exactly one.
    let liveness_db = crate::config::DatabaseConfig {
        pool_size: 1,
        ..config.database.clone()
    };
    let liveness_store =
        Store::connect(&liveness_db, Sealer::with_keys(&config.secrets.data_keys)).await?;
    let process = store.register_process().await?;
    tracing::info!(process = %process.id, "registered; other processes take over its work only once it is gone");
    let providers = Registry::build(
        &config.providers,
        &config.secrets.provider_credentials,
        Some(limiter.pool),
    )?;
    // Connections of their own for the batched writes: one per batch in flight of each
    // kind, so the workers' pool never keeps a batch waiting.
    let batch_db = crate::config::DatabaseConfig {
        pool_size: 3 * BATCHES_IN_FLIGHT,
        ..config.database.clone()
    };
    let batch_store =
        Store::connect_for_keyed_writes(&batch_db, Sealer::with_keys(&config.secrets.data_keys))
            .await?;
    let batches = Batches::start(&batch_store, BATCHES_IN_FLIGHT);
    let shared = Shared {
        batches,
        config,
        store,
        outbox_store,
        publisher,
        providers,
        deliverer,
        outbox_wakeup: Notify::new(),
        process,
        topology: std::sync::Mutex::new(Ok(())),
    };
    Ok((shared, liveness_store))
}

/// One consumer per queue: each provider's commands, and its polls and advices if it has
/// them (commands that match no provider are rejected by the executor too), and the
/// dead-letter queue.
fn spawn_consumers(tasks: &mut JoinSet<()>, shared: &Arc<Shared>, shutdown: &Shutdown) {
    let mut commands = vec![shared.config.broker.unrouted_queue.clone()];
    let mut polls = Vec::new();
    let mut advices = Vec::new();
    for p in shared.providers.iter() {
        commands.push(p.command_queue().to_string());
        polls.extend(p.polling().map(|q| q.poll_queue().to_string()));
        advices.extend(p.advices().map(|a| a.advice_queue().to_string()));
    }
    spawn_each(tasks, shared, shutdown, commands, executor::run_command);
    spawn_each(tasks, shared, shutdown, polls, poller::run_poll_wake_up);
    spawn_each(tasks, shared, shutdown, advices, advice::run_advice_wake_up);
    // Dead letters into PostgreSQL, where operators read them (`dlq`).
    let dead = vec![shared.config.broker.dead_queue.clone()];
    spawn_each(tasks, shared, shutdown, dead, dead_letters::copy_from_queue);
}

/// A supervised consumer of each of `queues`, handling every delivery with `handle`.
fn spawn_each<F, Fut>(
    tasks: &mut JoinSet<()>,
    shared: &Arc<Shared>,
    shutdown: &Shutdown,
    queues: Vec<String>,
    handle: F,
) where
    F: Fn(Arc<Shared>, Arc<Delivery>) -> Fut + Copy + Send + Sync + 'static,
    Fut: std::future::Future<Output = Result<(), RelayError>> + Send + 'static,
{
    for queue in queues {
        tasks.spawn(consume_supervised(
            shared.clone(),
            queue,
            shutdown.clone(),
            handle,
        ));
    }
}
