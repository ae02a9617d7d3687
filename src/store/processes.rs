//! Relay processes and their liveness: who holds a `sending` transaction is decided by
//! whether its process is alive, not by a wall-clock lease.
//!
//! A process registers a row, then on a connection of its own holds a session-level
//! advisory lock and refreshes its heartbeat every [`HEARTBEAT`]. PostgreSQL drops the lock
//! the moment that connection dies (a SIGKILL closes the socket), so other processes see the
//! death within [`GRACE`] plus one sweep. A live process keeps its lock however slow its
//! provider calls are, so it is never robbed. The SQL side is `relay_process_alive` in
//! migration V8.

use std::time::Duration;

use uuid::Uuid;

use super::Store;
use crate::error::Result;

/// The advisory lock class of relay processes ('VR'); the key is the process's `lock_key`.
pub const LOCK_CLASS: i32 = 22098;
/// How often a process proves it is alive.
pub const HEARTBEAT: Duration = Duration::from_secs(1);
/// How long a heartbeat keeps a process alive without its lock: the time its liveness
/// connection has to come back after a blip.
pub const GRACE: Duration = Duration::from_secs(3);

/// This process, as registered.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ProcessId {
    pub id: Uuid,
    pub lock_key: i32,
}

impl Store {
    /// Registers this process; it counts as alive from now, by its heartbeat, until its
    /// liveness connection takes the lock.
    pub async fn register_process(&self) -> Result<ProcessId> {
        let client = self.pool.get().await?;
        let id = Uuid::now_v7();
        let host = hostname();
        let pid = i32::try_from(std::process::id()).unwrap_or(i32::MAX);
        let row = client
            .query_one(
                "INSERT INTO relay_processes (id, lock_key, host, pid)
                 VALUES ($1, nextval('relay_process_lock_key')::integer, $2, $3)
                 RETURNING lock_key",
                &[&id, &host, &pid],
            )
            .await?;
        Ok(ProcessId {
            id,
            lock_key: row.get(0),
        })
    }

    /// One heartbeat: refreshes `heartbeat_at` and takes the advisory lock if this session
    /// does not hold it yet (a new connection after a blip). Returns whether the lock is
    /// held; false means another session holds this key, which only a second process
    /// claiming this identity could do.
    pub async fn heartbeat(&self, me: ProcessId) -> Result<bool> {
        let client = self.pool.get().await?;
        let row = client
            .query_one(
                "WITH beat AS (UPDATE relay_processes SET heartbeat_at = now(), stopped_at = NULL
                               WHERE id = $1)
                 SELECT CASE WHEN EXISTS (
                            SELECT 1 FROM pg_locks
                            WHERE pid = pg_backend_pid() AND locktype = 'advisory'
                              AND classid = $2::integer::oid AND objid = $3::integer::oid
                              AND objsubid = 2)
                        THEN true
                        ELSE pg_try_advisory_lock($2, $3) END",
                &[&me.id, &LOCK_CLASS, &me.lock_key],
            )
            .await?;
        Ok(row.get(0))
    }

    /// Marks stopped the processes that are not alive, so the claims that ask "is its
    /// owner alive?" look at live processes only. One that comes back clears the mark with
    /// its next heartbeat. Returns how many were marked.
    pub async fn reap_dead_processes(&self) -> Result<u64> {
        let client = self.pool.get().await?;
        let n = client
            .execute(
                "UPDATE relay_processes SET stopped_at = now()
                 WHERE stopped_at IS NULL AND NOT relay_process_alive(id, $1)",
                &[&GRACE.as_secs_f64()],
            )
            .await?;
        Ok(n)
    }

    /// A clean stop: this process holds nothing any more.
    pub async fn process_stopped(&self, me: ProcessId) -> Result<()> {
        let client = self.pool.get().await?;
        client
            .execute(
                "UPDATE relay_processes SET stopped_at = now() WHERE id = $1",
                &[&me.id],
            )
            .await?;
        Ok(())
    }
}

fn hostname() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|h| h.trim().to_string())
        .unwrap_or_default()
}
