//! `voucher-relay sandbox`: every provider simulator, each on its own port.

use crate::config::{Config, Env};
use crate::providers::csq::sandbox::{CsqSandbox, SandboxOptions};
use crate::providers::electrum::sandbox::ElectrumSandbox;

/// Credentials the sandbox accepts when `CSQ_USER` / `CSQ_PASSWORD` are not set.
pub const DEFAULT_CSQ_USER: &str = "sandbox";
pub const DEFAULT_CSQ_PASSWORD: &str = "sandbox-secret";
/// The Electrum password the demo uses when `ELECTRUM_PASSWORD` is not set. The Electrum
/// sandbox checks only the user name (against `client.id`), as Electrum's behaviour text says.
pub const DEFAULT_ELECTRUM_PASSWORD: &str = "sandbox-secret";

/// The CSQ simulator configured from the environment variables the config file names.
pub fn csq_from_env(config: &Config, env: &dyn Env, options: SandboxOptions) -> CsqSandbox {
    let cfg = &config.providers.csq;
    let user = env
        .get(&cfg.user_env)
        .unwrap_or_else(|| DEFAULT_CSQ_USER.into());
    let password = env
        .get(&cfg.password_env)
        .unwrap_or_else(|| DEFAULT_CSQ_PASSWORD.into());
    CsqSandbox::with_options(&user, &password, options)
}

/// Serves every sandbox until the process is stopped.
pub async fn run(config: &Config, env: &dyn Env) -> anyhow::Result<()> {
    let (Some(csq), Some(electrum)) = (config.sandbox.get("csq"), config.sandbox.get("electrum"))
    else {
        anyhow::bail!(
            "sandbox.csq.listen and sandbox.electrum.listen must be set in the config file"
        );
    };
    let csq_listener = tokio::net::TcpListener::bind(csq.listen)
        .await
        .map_err(|e| anyhow::anyhow!("sandbox.csq.listen {}: {e}", csq.listen))?;
    let electrum_listener = tokio::net::TcpListener::bind(electrum.listen)
        .await
        .map_err(|e| anyhow::anyhow!("sandbox.electrum.listen {}: {e}", electrum.listen))?;
    eprintln!(
        "CSQ sandbox on http://{} (operators 1001 ok, 1005 declines)",
        csq.listen
    );
    eprintln!(
        "Electrum SUV sandbox on http://{}/suv/v1 (faults: POST /sandbox/faults)",
        electrum.listen
    );
    let csq = csq_from_env(config, env, SandboxOptions::default()).serve(csq_listener);
    let electrum = ElectrumSandbox::new(Default::default()).serve(electrum_listener);
    tokio::try_join!(csq, electrum)?;
    Ok(())
}
