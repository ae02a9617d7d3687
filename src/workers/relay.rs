//! The running relay: connections, topology, and the worker tasks, supervised.

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::Notify;
use tokio::task::JoinSet;

use crate::broker::{self, Publisher, topology};
use crate::config::Config;
use crate::crypto::Sealer;
use crate::providers::csq::CsqClient;
use crate::providers::electrum::ElectrumClient;
use crate::shutdown::{Shutdown, ShutdownTrigger};
use crate::store::{self, Store};
use crate::webhook::{Deliverer, SigningKey};

/// What every worker task shares.
pub struct Shared {
    pub config: Config,
    pub store: Store,
    pub publisher: Publisher,
    pub csq: CsqClient,
    pub electrum: ElectrumClient,
    pub deliverer: Deliverer,
    /// Wakes the callback worker when an outcome was just committed.
    pub outbox_wakeup: Notify,
}

/// A started relay. Dropping it does not stop it; call [`Relay::stop`].
pub struct Relay {
    trigger: ShutdownTrigger,
    tasks: JoinSet<()>,
    pub shared: Arc<Shared>,
}

impl Relay {
    /// Migrates the database, declares the topology, and starts the workers. Fails fast, with
    /// a message naming the service, if PostgreSQL or RabbitMQ cannot be reached.
    pub async fn start(config: Config) -> anyhow::Result<Relay> {
        store::migrate(&config.database).await?;
        let sealer = Sealer::new(&config.secrets.data_key);
        let store = Store::connect(&config.database, sealer).await?;
        let conn = broker::connect(&config.broker.url, "voucher-relay topology").await?;
        let declared = topology::apply(&conn, &config, topology::Mode::Declare).await;
        let _ = conn.close(200, "topology declared".into()).await;
        declared?;
        let publisher = Publisher::connect(&config.broker.url).await?;
        let key = SigningKey::parse(&config.secrets.webhook_signing_secret)
            .map_err(|e| anyhow::anyhow!("WEBHOOK_SIGNING_SECRET: {e}"))?;
        let deliverer = Deliverer::new(key, Duration::from_millis(config.webhook.timeout_ms))?;
        // The global rate limit gets connections of its own: workers busy with the main pool
        // must not push it into its per-process fallback.
        let limiter_db = crate::config::DatabaseConfig {
            pool_size: 2,
            ..config.database.clone()
        };
        let limiter_store =
            Store::connect(&limiter_db, Sealer::new(&config.secrets.data_key)).await?;
        let csq = CsqClient::new(&config, Some(limiter_store.pool.clone()))?;
        let electrum = ElectrumClient::new(&config, Some(limiter_store.pool))?;
        let shared = Arc::new(Shared {
            config,
            store,
            publisher,
            csq,
            electrum,
            deliverer,
            outbox_wakeup: Notify::new(),
        });
        let (trigger, shutdown) = crate::shutdown::channel();
        let mut tasks = JoinSet::new();
        let command_queues = [
            shared.config.providers.csq.queue.clone(),
            shared.config.providers.electrum.queue.clone(),
            shared.config.broker.unrouted_queue.clone(),
        ];
        for queue in command_queues {
            tasks.spawn(consume_supervised(
                shared.clone(),
                queue,
                shutdown.clone(),
                super::executor::handle,
            ));
        }
        let poll_queue = shared.config.providers.csq.poll_queue.clone();
        tasks.spawn(consume_supervised(
            shared.clone(),
            poll_queue,
            shutdown.clone(),
            super::poller::handle,
        ));
        let advice_queue = shared.config.providers.electrum.advice_queue.clone();
        tasks.spawn(consume_supervised(
            shared.clone(),
            advice_queue,
            shutdown.clone(),
            super::advice::handle,
        ));
        tasks.spawn(super::poller::sweep(shared.clone(), shutdown.clone()));
        tasks.spawn(super::callbacks::run(shared.clone(), shutdown.clone()));
        Ok(Relay {
            trigger,
            tasks,
            shared,
        })
    }

    /// Stops taking work, lets handlers in flight finish, and waits for every task.
    pub async fn stop(mut self) {
        self.trigger.trigger();
        while self.tasks.join_next().await.is_some() {}
        self.shared.publisher.close().await;
    }

    /// A listener for the relay's shutdown, for tasks started beside it.
    pub fn shutdown(&self) -> Shutdown {
        self.trigger.subscribe()
    }
}

/// Consumes one queue with `handle`, reconnecting with backoff whenever the broker goes away.
async fn consume_supervised<F, Fut>(
    shared: Arc<Shared>,
    queue: String,
    mut shutdown: Shutdown,
    handle: F,
) where
    F: Fn(Arc<Shared>, lapin::message::Delivery) -> Fut + Copy + Send + 'static,
    Fut: std::future::Future<Output = ()> + Send + 'static,
{
    let name = shared.config.name(&queue);
    let mut wait = Duration::from_millis(200);
    while !shutdown.is_triggered() {
        let run = async {
            let conn =
                broker::connect(&shared.config.broker.url, &format!("voucher-relay {queue}"))
                    .await?;
            let result = {
                let shared = shared.clone();
                broker::consume(
                    &conn,
                    &name,
                    shared.config.broker.prefetch,
                    shutdown.clone(),
                    move |d| handle(shared.clone(), d),
                )
                .await
            };
            let _ = conn.close(200, "consumer stopped".into()).await;
            result
        };
        match run.await {
            Ok(()) => return,
            Err(e) => {
                tracing::warn!(queue = %name, error = %e, retry_in_ms = wait.as_millis() as u64, "consumer lost; reconnecting");
                tokio::select! {
                    _ = shutdown.wait() => return,
                    _ = tokio::time::sleep(wait) => {}
                }
                wait = (wait * 2).min(Duration::from_secs(10));
            }
        }
    }
}
