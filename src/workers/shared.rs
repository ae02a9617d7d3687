//! What every worker task shares, and the small conversions they all need.

use tokio::sync::Notify;

use crate::broker::Publisher;
use crate::command::Outcome;
use crate::config::Config;
use crate::error::RelayError;
use crate::providers::work::PollPlan;
use crate::providers::{Provider, Registry};
use crate::retry::Tiers;
use crate::store::Store;
use crate::store::fast_path::{DeliveredWrite, FinishWrite, IntakeWrite};
use crate::store::group_commit::Batcher;
use crate::store::processes::ProcessId;
use crate::webhook::Deliverer;

/// What every worker task shares.
pub struct Shared {
    pub config: Config,
    pub store: Store,
    /// The callback dispatcher's own connections: deliveries never queue for a connection
    /// behind the commands in flight, nor commands behind them.
    pub outbox_store: Store,
    pub publisher: Publisher,
    /// The providers this relay runs.
    pub providers: Registry,
    pub deliverer: Deliverer,
    /// Wakes the callback worker when an outcome was just committed.
    pub outbox_wakeup: Notify,
    /// This process, as registered: it owns what it claims while it lives.
    pub process: ProcessId,
    /// The common path's writes, many commands per transaction.
    pub batches: Batches,
    /// Whether every queue of the config file was there at the last sample (see
    /// [`super::gauges`]): `Err` names what is missing. `/readyz` reports it.
    pub topology: std::sync::Mutex<Result<(), String>>,
}

/// The group-commit writers of the common path (see [`crate::store::group_commit`]).
pub struct Batches {
    pub intake: Batcher<IntakeWrite>,
    pub finish: Batcher<FinishWrite>,
    pub delivered: Batcher<DeliveredWrite>,
}

/// Commands or rows per batch at most: a batch is one statement, and a few hundred rows
/// keep it well under a millisecond of server time per row.
const MAX_BATCH: usize = 256;

impl Batches {
    /// Writers on `store` (best from [`Store::connect_for_keyed_writes`], with a connection
    /// for every batch that may be in flight). At most `in_flight` batches of each kind are
    /// written at once.
    pub fn start(store: &Store, in_flight: usize) -> Batches {
        Batches {
            intake: Batcher::start(IntakeWrite(store.clone()), MAX_BATCH, in_flight),
            finish: Batcher::start(FinishWrite(store.clone()), MAX_BATCH, in_flight),
            delivered: Batcher::start(DeliveredWrite(store.clone()), MAX_BATCH, in_flight),
        }
    }
}

impl Shared {
    /// The provider a command or row names. One this relay does not run is poison for the
    /// message that named it: it would fail the same way every time.
    pub fn provider(&self, name: &str) -> Result<&dyn Provider, RelayError> {
        self.providers
            .get(name)
            .ok_or_else(|| RelayError::Poison(format!("provider {name:?} is not enabled here")))
    }

    /// The longest lease of any provider here: what a poll or an advice is claimed for
    /// before its row says which provider it belongs to. It only matters when a worker dies
    /// holding one.
    pub fn longest_lease(&self) -> std::time::Duration {
        self.providers
            .iter()
            .map(|p| p.limits().lease())
            .max()
            .unwrap_or_default()
    }

    /// Whether this process can work: PostgreSQL and RabbitMQ answer within 2 s, and every
    /// queue of the config file was there at the last sample. `Err` says what is wrong.
    pub async fn ready(&self) -> Result<(), String> {
        let limit = std::time::Duration::from_secs(2);
        let db = async {
            let client = self.store.pool.get().await.map_err(|e| e.to_string())?;
            client
                .simple_query("SELECT 1")
                .await
                .map(|_| ())
                .map_err(|e| e.to_string())
        };
        match tokio::time::timeout(limit, db).await {
            Ok(Ok(())) => {}
            Ok(Err(e)) => return Err(format!("PostgreSQL unavailable: {e}")),
            Err(_) => return Err("PostgreSQL unavailable: no answer within 2 s".into()),
        }
        match tokio::time::timeout(limit, self.publisher.ready()).await {
            Ok(Ok(())) => {}
            Ok(Err(e)) => return Err(format!("RabbitMQ unavailable: {e}")),
            Err(_) => return Err("RabbitMQ unavailable: no answer within 2 s".into()),
        }
        self.topology
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    pub fn tiers(&self) -> Tiers<'_> {
        Tiers(&self.config.delay_tiers)
    }

    /// `plan` with its first wait filled in: the first delay tier unless the provider chose.
    pub fn first_in(&self, plan: PollPlan) -> PollPlan {
        PollPlan {
            first_in: Some(plan.first_in.unwrap_or_else(|| self.tiers().wait_before(1))),
            ..plan
        }
    }
}

/// Counts a stored outcome and says so in the log.
pub fn count_outcome(outcome: &Outcome, what: &str) {
    tracing::info!(status = outcome.status.as_str(), event_id = %outcome.event_id, "{what}");
    metrics::counter!("voucher_outcomes_total", "provider" => outcome.provider.clone(), "kind" => outcome.kind.clone(), "status" => outcome.status.as_str()).increment(1);
}
