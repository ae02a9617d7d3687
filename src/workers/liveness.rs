//! Proves this process alive to the others, on a connection of its own, until the relay
//! has stopped (see [`crate::store::processes`]).

use crate::retry::{Backoff, INFRA_LOG, Jitter};
use crate::shutdown::Shutdown;
use crate::store::Store;
use crate::store::processes::{HEARTBEAT, ProcessId};

/// Waits after a failed heartbeat: 200 ms doubling to the heartbeat itself, so a
/// connection that comes back is used within one beat.
const RETRY: Backoff = Backoff {
    base: std::time::Duration::from_millis(200),
    cap: HEARTBEAT,
    jitter: Jitter::None,
};

/// Beats every [`HEARTBEAT`] until `stopped`; then marks the process stopped. `store` must
/// be a pool of one connection, which holds the advisory lock.
pub async fn keep_alive(store: Store, me: ProcessId, mut stopped: Shutdown) {
    let mut failures = 0;
    let mut warned_lock = false;
    loop {
        let wait = match store.heartbeat(me).await {
            Ok(held) => {
                if !held && !warned_lock {
                    tracing::error!(process = %me.id, lock_key = me.lock_key, "another session holds this process's liveness lock; its heartbeat alone keeps it alive");
                }
                warned_lock = !held;
                failures = 0;
                HEARTBEAT
            }
            Err(e) => {
                failures += 1;
                if failures == 1 {
                    if let Some(n) = INFRA_LOG.may_log() {
                        tracing::warn!(process = %me.id, error = %e, similar_lines_suppressed = n, "heartbeat failed; other processes may take this one's work over");
                    }
                }
                RETRY.wait(failures)
            }
        };
        tokio::select! {
            _ = stopped.wait() => break,
            _ = tokio::time::sleep(wait) => {}
        }
    }
    if let Err(e) = store.process_stopped(me).await {
        tracing::warn!(process = %me.id, error = %e, "could not mark this process stopped; its lock ends with its connection");
    }
}
