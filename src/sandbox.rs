//! `voucher-relay sandbox`: every provider simulator, each on its own port.

use crate::config::{Config, Env};
use crate::providers::csq::sandbox::{CsqSandbox, SandboxOptions};

/// Credentials the sandbox accepts when `CSQ_USER` / `CSQ_PASSWORD` are not set.
pub const DEFAULT_CSQ_USER: &str = "sandbox";
pub const DEFAULT_CSQ_PASSWORD: &str = "sandbox-secret";

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
    let Some(csq) = &config.sandbox.csq else {
        anyhow::bail!("sandbox.csq.listen is not set in the config file");
    };
    let listener = tokio::net::TcpListener::bind(csq.listen)
        .await
        .map_err(|e| anyhow::anyhow!("sandbox.csq.listen {}: {e}", csq.listen))?;
    eprintln!(
        "CSQ sandbox on http://{} (operators 1001 ok, 1005 declines)",
        csq.listen
    );
    csq_from_env(config, env, SandboxOptions::default())
        .serve(listener)
        .await?;
    Ok(())
}
