//! PostgreSQL: the source of truth. Pool, migrations, and one file per concern:
//! [`state`] (the state machine), [`transactions`] (intake, leases, unknown outcomes),
//! [`outcomes`] (who waits, and the terminal outcome), [`polls`], [`advices`] and
//! [`outbox`]. Nothing here knows a provider: what is provider-specific arrives as plain
//! data from `providers::work`.

pub mod advices;
pub mod callbacks;
pub mod dlq;
pub mod fast_path;
pub mod group_commit;
pub mod outbox;
pub mod outcomes;
pub mod polls;
pub mod processes;
pub mod resend;
pub mod state;
pub mod timeline;
pub mod transactions;

pub use outcomes::ReplyTarget;
pub use state::TxState;

use std::str::FromStr;
use std::time::Duration;

use deadpool_postgres::{Manager, ManagerConfig, Pool, RecyclingMethod, Runtime};
use tokio_postgres::NoTls;

use crate::config::DatabaseConfig;
use crate::crypto::Sealer;
use crate::error::with_causes;

mod embedded {
    refinery::embed_migrations!("migrations");
}

/// Database access for the workers: a pool plus the key that seals voucher data.
#[derive(Clone)]
pub struct Store {
    pub pool: Pool,
    pub(crate) sealer: Sealer,
}

/// Why the database could not be opened, worded for the person at the terminal.
#[derive(Debug, thiserror::Error)]
pub enum ConnectError {
    #[error("DATABASE_URL is not a valid PostgreSQL URL: {0}")]
    BadUrl(String),
    #[error(
        "cannot reach PostgreSQL at {target}: {reason}.\n  Start it with: pg_ctlcluster --skip-systemctl-redirect $(ls /etc/postgresql) main start\n  (or `docker compose up -d postgres`), or point DATABASE_URL elsewhere."
    )]
    Unreachable { target: String, reason: String },
    /// The server answered and refused the login (SQLSTATE class 28): a role that does not
    /// exist, a wrong password, no `pg_hba.conf` entry.
    #[error(
        "PostgreSQL at {target} refused authentication: {reason}.\n  Check the user and password in DATABASE_URL (or database.url)."
    )]
    AuthFailed { target: String, reason: String },
    /// The server answered and refused the connection for another reason (a database that
    /// does not exist, too many connections, the server starting up).
    #[error("PostgreSQL at {target} refused the connection: {reason}")]
    Refused { target: String, reason: String },
    #[error("migrating the database failed: {0}")]
    Migration(String),
}

impl ConnectError {
    /// Names a failed connection attempt by what happened: the server's own reason when it
    /// answered, the way to start it when it did not.
    fn from_pg(cfg: &DatabaseConfig, e: &tokio_postgres::Error) -> ConnectError {
        let target = describe(cfg);
        match e.as_db_error() {
            Some(db) if db.code().code().starts_with("28") => ConnectError::AuthFailed {
                target,
                reason: server_reason(db),
            },
            Some(db) => ConnectError::Refused {
                target,
                reason: server_reason(db),
            },
            None => ConnectError::Unreachable {
                target,
                reason: with_causes(e),
            },
        }
    }

    /// [`from_pg`](Self::from_pg) for the pool's error.
    fn from_pool(cfg: &DatabaseConfig, e: &deadpool_postgres::PoolError) -> ConnectError {
        match e {
            deadpool_postgres::PoolError::Backend(e) => Self::from_pg(cfg, e),
            other => ConnectError::Unreachable {
                target: describe(cfg),
                reason: other.to_string(),
            },
        }
    }
}

/// The server's message and code on one line, e.g. `role "x" does not exist (SQLSTATE
/// 28000)`.
fn server_reason(db: &tokio_postgres::error::DbError) -> String {
    format!("{} (SQLSTATE {})", db.message(), db.code().code())
}

/// An error with the server's reason, which tokio-postgres keeps out of its `Display`
/// ("db error"), found anywhere in its chain of causes.
fn with_server_reason(e: &(dyn std::error::Error + 'static)) -> String {
    let mut cause = Some(e);
    while let Some(c) = cause {
        if let Some(db) = c.downcast_ref::<tokio_postgres::error::DbError>() {
            return format!("{e}: {}", server_reason(db));
        }
        cause = c.source();
    }
    e.to_string()
}

fn pg_config(cfg: &DatabaseConfig) -> Result<tokio_postgres::Config, ConnectError> {
    let mut pg = tokio_postgres::Config::from_str(&cfg.url)
        .map_err(|e| ConnectError::BadUrl(e.to_string()))?;
    let timeout = Duration::from_millis(cfg.timeout_ms);
    pg.connect_timeout(timeout);
    // Every statement is an external call and gets a deadline too.
    pg.options(format!("-c statement_timeout={}", cfg.timeout_ms));
    pg.application_name("voucher-relay");
    Ok(pg)
}

/// `host:port/db` for messages; never the password.
pub fn describe(cfg: &DatabaseConfig) -> String {
    match tokio_postgres::Config::from_str(&cfg.url) {
        Ok(pg) => {
            let host = pg
                .get_hosts()
                .first()
                .map(|h| match h {
                    tokio_postgres::config::Host::Tcp(h) => h.clone(),
                    tokio_postgres::config::Host::Unix(p) => p.display().to_string(),
                })
                .unwrap_or_else(|| "localhost".into());
            let port = pg.get_ports().first().copied().unwrap_or(5432);
            format!(
                "{host}:{port}/{}",
                pg.get_dbname().unwrap_or("(default database)")
            )
        }
        Err(_) => "(unparseable DATABASE_URL)".into(),
    }
}

async fn connect_one(
    pg: &tokio_postgres::Config,
    cfg: &DatabaseConfig,
) -> Result<tokio_postgres::Client, ConnectError> {
    let (client, connection) = pg
        .connect(NoTls)
        .await
        .map_err(|e| ConnectError::from_pg(cfg, &e))?;
    tokio::spawn(async move {
        if let Err(e) = connection.await {
            tracing::warn!(error = %e, "migration connection closed");
        }
    });
    Ok(client)
}

/// A connection to the server's `postgres` database, for creating or dropping the one the
/// URL names (its name, quoted, is returned too); `None` if the URL names no database.
async fn admin_client(
    cfg: &DatabaseConfig,
) -> Result<Option<(tokio_postgres::Client, String, String)>, ConnectError> {
    let pg = pg_config(cfg)?;
    let Some(name) = pg.get_dbname().map(str::to_string) else {
        return Ok(None);
    };
    let quoted = format!("\"{}\"", name.replace('"', "\"\""));
    let mut admin = pg.clone();
    admin.dbname("postgres");
    let client = connect_one(&admin, cfg).await?;
    Ok(Some((client, name, quoted)))
}

/// Creates the database named in the URL if it does not exist yet, so a fresh machine needs
/// no manual `createdb`.
pub async fn ensure_database(cfg: &DatabaseConfig) -> Result<(), ConnectError> {
    let Some((client, name, quoted)) = admin_client(cfg).await? else {
        return Ok(());
    };
    let exists = client
        .query_opt("SELECT 1 FROM pg_database WHERE datname = $1", &[&name])
        .await
        .map_err(|e| ConnectError::Migration(with_server_reason(&e)))?
        .is_some();
    if !exists {
        if let Err(e) = client
            .batch_execute(&format!("CREATE DATABASE {quoted}"))
            .await
        {
            // Another process may have created it at the same moment.
            if e.code() != Some(&tokio_postgres::error::SqlState::DUPLICATE_DATABASE) {
                return Err(ConnectError::Migration(format!(
                    "creating database {name}: {}",
                    with_server_reason(&e)
                )));
            }
        }
    }
    Ok(())
}

/// Drops the database named in the URL (closing whatever is still connected to it) and
/// creates it again, empty: for the demo's and the bench's own databases.
pub async fn recreate_database(cfg: &DatabaseConfig) -> Result<(), ConnectError> {
    if let Some((client, name, quoted)) = admin_client(cfg).await? {
        client
            .batch_execute(&format!("DROP DATABASE IF EXISTS {quoted} WITH (FORCE)"))
            .await
            .map_err(|e| {
                ConnectError::Migration(format!(
                    "dropping database {name}: {}",
                    with_server_reason(&e)
                ))
            })?;
    }
    ensure_database(cfg).await
}

/// Applies the migrations in `migrations/`.
pub async fn migrate(cfg: &DatabaseConfig) -> Result<usize, ConnectError> {
    ensure_database(cfg).await?;
    let pg = pg_config(cfg)?;
    let mut client = connect_one(&pg, cfg).await?;
    let report = embedded::migrations::runner()
        .run_async(&mut client)
        .await
        .map_err(|e| ConnectError::Migration(with_server_reason(&e)))?;
    Ok(report.applied_migrations().len())
}

impl Store {
    /// Opens the pool and checks that one connection works.
    pub async fn connect(cfg: &DatabaseConfig, sealer: Sealer) -> Result<Store, ConnectError> {
        Self::connect_with(pg_config(cfg)?, cfg, sealer).await
    }

    /// A pool for the batched writes of the common path ([`fast_path`]), whose statements
    /// reach every row by its key. A table the relay has just filled has no statistics
    /// yet; PostgreSQL then takes it for a page or two and scans it whole for each batch
    /// and each foreign-key check, which costs more with every row the table gains.
    /// Sequential scans are priced out on these connections, so key lookups are used
    /// whatever the statistics say; and their plans are made once per connection
    /// (`force_generic_plan`), not for every batch.
    pub async fn connect_for_keyed_writes(
        cfg: &DatabaseConfig,
        sealer: Sealer,
    ) -> Result<Store, ConnectError> {
        let mut pg = pg_config(cfg)?;
        pg.options(format!(
            "-c statement_timeout={} -c enable_seqscan=off -c plan_cache_mode=force_generic_plan",
            cfg.timeout_ms
        ));
        Self::connect_with(pg, cfg, sealer).await
    }

    async fn connect_with(
        pg: tokio_postgres::Config,
        cfg: &DatabaseConfig,
        sealer: Sealer,
    ) -> Result<Store, ConnectError> {
        let manager = Manager::from_config(
            pg,
            NoTls,
            ManagerConfig {
                recycling_method: RecyclingMethod::Fast,
            },
        );
        let timeout = Some(Duration::from_millis(cfg.timeout_ms));
        let pool = Pool::builder(manager)
            .max_size(cfg.pool_size)
            .runtime(Runtime::Tokio1)
            .wait_timeout(timeout)
            .create_timeout(timeout)
            .recycle_timeout(timeout)
            .build()
            .map_err(|e| ConnectError::BadUrl(e.to_string()))?;
        let _probe = pool
            .get()
            .await
            .map_err(|e| ConnectError::from_pool(cfg, &e))?;
        Ok(Store { pool, sealer })
    }
}
