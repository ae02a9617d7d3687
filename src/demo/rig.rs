//! What the demo and the bench both stand up: the CSQ and Electrum sandboxes on free ports, the relay's
//! workers under their own name prefix, and a private reply queue.

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
    /// starts everything. The topology under `prefix` belongs to the rig: one left by an
    /// older version is replaced.
    pub async fn start(
        config_path: &Path,
        env: &DemoEnv,
        prefix: &str,
        options: SandboxOptions,
        tweak: impl FnOnce(&mut Config),
    ) -> anyhow::Result<Rig> {
        let mut config = Config::load(config_path, env, true)?;
        config.broker.name_prefix = prefix.into();
        tweak(&mut config);
        preflight(&config).await?;

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
        if topology::apply(&conn, &config, topology::Mode::Check)
            .await
            .is_err()
        {
            topology::delete(&conn, &config).await?;
        }
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
