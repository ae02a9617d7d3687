//! `voucher-relay sandbox`: every provider's simulator, each on the listener its
//! `[sandbox.<name>]` section names.

use crate::config::{Config, Env};
use crate::providers;

/// Serves every sandbox until the process is stopped.
pub async fn run(config: &Config, env: &dyn Env) -> anyhow::Result<()> {
    let lookup = |name: &str| env.get(name);
    let mut servers = Vec::new();
    for sandbox in providers::sandboxes() {
        let name = sandbox.name;
        let Some(at) = config.sandbox.get(name) else {
            anyhow::bail!("sandbox.{name}.listen must be set in the config file");
        };
        let listener = tokio::net::TcpListener::bind(at.listen)
            .await
            .map_err(|e| anyhow::anyhow!("sandbox.{name}.listen {}: {e}", at.listen))?;
        eprintln!("{name} sandbox on http://{}: {}", at.listen, sandbox.hint);
        servers.push((sandbox.serve)(&config.providers, &lookup, listener));
    }
    futures_util::future::try_join_all(servers).await?;
    Ok(())
}

/// The next number of a sandbox's fault generator (xorshift64): cheap and deterministic, so
/// a chaos run that picks faults with it can be repeated. `state` must not be 0.
pub fn next_roll(state: &mut u64) -> u64 {
    let mut x = *state;
    x ^= x << 13;
    x ^= x >> 7;
    x ^= x << 17;
    *state = x;
    x
}
