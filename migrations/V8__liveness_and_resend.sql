-- Crash recovery by liveness, and sending again what provably never arrived.
--
-- A relay process registers itself in `relay_processes`, holds a session-level advisory
-- lock (two-key form: class 22098, 'VR', and its `lock_key`) on a connection of its own,
-- and refreshes `heartbeat_at` every second. The lock dies with the process's connection,
-- so a SIGKILLed process is seen dead within a few seconds; a live but slow process keeps
-- its lock and is never robbed.
CREATE SEQUENCE relay_process_lock_key AS integer MINVALUE 1 MAXVALUE 2147483647 CYCLE;
CREATE TABLE relay_processes (
    id           uuid PRIMARY KEY,
    lock_key     integer NOT NULL,
    host         text NOT NULL,
    pid          integer NOT NULL,
    started_at   timestamptz NOT NULL DEFAULT now(),
    heartbeat_at timestamptz NOT NULL DEFAULT now(),
    -- Set by a process that stopped cleanly: it holds nothing any more.
    stopped_at   timestamptz
);

-- Whether the process `owner` is alive: it holds its advisory lock, or its heartbeat is
-- fresher than `grace_secs` (its liveness connection may be reconnecting), or PostgreSQL
-- itself restarted less than 15 s ago (every lock was dropped; give processes time to take
-- theirs again). An unknown owner is dead.
CREATE FUNCTION relay_process_alive(owner uuid, grace_secs float8) RETURNS boolean
LANGUAGE sql STABLE AS $$
    SELECT EXISTS (
        SELECT 1 FROM relay_processes p
        WHERE p.id = owner AND p.stopped_at IS NULL
          AND (p.heartbeat_at > now() - make_interval(secs => grace_secs)
               OR pg_postmaster_start_time() > now() - interval '15 seconds'
               OR EXISTS (SELECT 1 FROM pg_locks l
                          WHERE l.locktype = 'advisory' AND l.granted
                            AND l.database = (SELECT oid FROM pg_database
                                              WHERE datname = current_database())
                            AND l.classid = 22098::oid AND l.objid = p.lock_key::oid
                            AND l.objsubid = 2)))
$$;

-- transactions:
-- - `lease_owner`: the process that moved the row to `sending`. While it lives, nobody
--   else touches the row; `lease_until` stays only for rows written before V8.
-- - `sent_at`: when the current request was claimed; a provider's "unknown reference" only
--   proves "never arrived" once the request's own timeout has passed since then.
-- - `command_sealed`: the command as received (sealed: it may hold a voucher code), so a
--   request that never arrived can be sent again.
-- - `resends`, `prior_refs`: how often it was sent again, and the references used before;
--   `request_id`: the request id of the current send.
ALTER TABLE transactions ADD COLUMN lease_owner uuid;
ALTER TABLE transactions ADD COLUMN sent_at timestamptz;
ALTER TABLE transactions ADD COLUMN command_sealed bytea;
ALTER TABLE transactions ADD COLUMN routing_key text;
ALTER TABLE transactions ADD COLUMN resends integer NOT NULL DEFAULT 0;
-- The provider request id of the current send, for providers that take one from us
-- (Electrum); NULL is the transaction's own id (the first send).
ALTER TABLE transactions ADD COLUMN request_id uuid;
ALTER TABLE transactions ADD COLUMN prior_refs jsonb NOT NULL DEFAULT '[]';
-- Commands sent again whose message may have been lost (the sweeper looks every 15 s).
CREATE INDEX transactions_resent ON transactions (updated_at)
    WHERE state = 'received' AND resends > 0;

-- outbox: the process that claimed a row. Its claim holds while that process lives, so a
-- SIGKILLed dispatcher's rows go out again within seconds, not after the claim's time.
ALTER TABLE outbox ADD COLUMN locked_by uuid;
