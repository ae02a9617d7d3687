//! What the demo and the bench both stand up: the CSQ and Electrum sandboxes on free ports, the relay's
//! workers under their own name prefix and in a database of their own, and a private reply
//! queue. Nothing is shared with a relay already running: not a queue, not a row.

use std::collections::BTreeMap;
use std::path::Path;

use base64::Engine;
use lapin::Connection;
use tokio::task::JoinHandle;

use crate::broker::reply::ReplyQueue;
use crate::broker::{self, topology};
use crate::config::{Config, Env, ProcessEnv};
use crate::providers::csq::sandbox::{CsqSandbox, SandboxOptions};
use crate::providers::electrum::sandbox::{self as electrum_sandbox, ElectrumSandbox};
use crate::store;
use crate::workers::Relay;

/// The process environment, with defaults for what a new user has not set: a throw-away
/// signing secret and the sandbox's credentials.
pub struct DemoEnv {
    defaults: BTreeMap<String, String>,
}

impl DemoEnv {
    pub fn new() -> DemoEnv {
        let secret = format!(
            "whsec_{}",
            base64::engine::general_purpose::STANDARD.encode(rand::random::<[u8; 32]>())
        );
        DemoEnv {
            defaults: BTreeMap::from([
                ("WEBHOOK_SIGNING_SECRET".to_string(), secret),
                (
                    "CSQ_USER".to_string(),
                    crate::providers::csq::SANDBOX_USER.to_string(),
                ),
                (
                    "CSQ_PASSWORD".to_string(),
                    crate::providers::csq::SANDBOX_PASSWORD.to_string(),
                ),
                (
                    "ELECTRUM_PASSWORD".to_string(),
                    crate::providers::electrum::SANDBOX_PASSWORD.to_string(),
                ),
            ]),
        }
    }
}

impl Default for DemoEnv {
    fn default() -> Self {
        Self::new()
    }
}

impl Env for DemoEnv {
    fn get(&self, name: &str) -> Option<String> {
        ProcessEnv
            .get(name)
            .or_else(|| self.defaults.get(name).cloned())
    }
}

/// A running sandbox, relay and reply queue.
pub struct Rig {
    pub config: Config,
    pub csq: CsqSandbox,
    pub electrum: ElectrumSandbox,
    pub relay: Relay,
    pub replies: ReplyQueue,
    conn: Connection,
    sandbox_tasks: [JoinHandle<std::io::Result<()>>; 2],
}

impl Rig {
    /// Loads the config with `prefix` on every broker name, lets `tweak` adjust it, and
    /// starts everything. The topology under `prefix` and the database `<database>_<prefix>`
    /// belong to the rig: both are made anew, empty, at every start.
    pub async fn start(
        config_path: &Path,
        env: &DemoEnv,
        prefix: &str,
        options: SandboxOptions,
        tweak: impl FnOnce(&mut Config),
    ) -> anyhow::Result<Rig> {
        let mut config = Config::load(config_path, env, true)?;
        config.broker.name_prefix = prefix.into();
        config.database.url = own_database_url(&config.database.url, prefix)?;
        tweak(&mut config);
        preflight(&config).await?;
        store::recreate_database(&config.database).await?;

        let csq = crate::providers::csq::sandbox_from_env(
            &config.providers.csq,
            &|n| env.get(n),
            options,
        );
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
        config.providers.csq.http.base_url = format!("http://{}", listener.local_addr()?);
        let csq_task = tokio::spawn(csq.clone().serve(listener));
        let electrum = ElectrumSandbox::new(electrum_sandbox::SandboxOptions::default());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
        config.providers.electrum.http.base_url =
            format!("http://{}/suv/v1", listener.local_addr()?);
        let electrum_task = tokio::spawn(electrum.clone().serve(listener));

        let conn = broker::connect(&config.broker.url, "voucher-relay demo").await?;
        // Whatever an earlier run left in the rig's queues goes: the relay declares them
        // anew, empty.
        topology::delete(&conn, &config).await?;
        let relay = Relay::start(config.clone()).await?;
        let replies = ReplyQueue::open(&conn).await?;
        Ok(Rig {
            config,
            csq,
            electrum,
            relay,
            replies,
            conn,
            sandbox_tasks: [csq_task, electrum_task],
        })
    }

    /// Stops the workers (letting them finish) and the sandbox.
    pub async fn stop(self) {
        self.relay.stop().await;
        let _ = self.conn.close(200, "done".into()).await;
        for task in &self.sandbox_tasks {
            task.abort();
        }
    }
}

/// The URL of the rig's own database: the configured one's name plus `_<prefix>`
/// (`voucher_relay_demo`).
fn own_database_url(url: &str, prefix: &str) -> anyhow::Result<String> {
    let mut parsed = reqwest::Url::parse(url)
        .map_err(|e| anyhow::anyhow!("DATABASE_URL is not a valid URL: {e}"))?;
    let name = parsed.path().trim_start_matches('/').to_string();
    let name = if name.is_empty() {
        "voucher_relay"
    } else {
        &name
    };
    let suffix = prefix.trim_end_matches('.');
    parsed.set_path(&format!("/{name}_{suffix}"));
    Ok(parsed.to_string())
}

/// Says which service is down, where it looked, and how to start it; both at once.
async fn preflight(config: &Config) -> anyhow::Result<()> {
    let mut problems = Vec::new();
    if let Err(e) = store::ensure_database(&config.database).await {
        problems.push(e.to_string());
    }
    match broker::connect(&config.broker.url, "voucher-relay preflight").await {
        Ok(conn) => {
            let _ = conn.close(200, "ok".into()).await;
        }
        Err(e) => problems.push(e.to_string()),
    }
    if problems.is_empty() {
        Ok(())
    } else {
        anyhow::bail!("{}", problems.join("\n"))
    }
}
