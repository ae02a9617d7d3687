-- Rate limits by leased shares (src/ratelimit.rs): each process leases a share of a
-- provider's rate for a few seconds, renews it every second, and spends it locally. The
-- shares of unexpired leases never add up to more than the rate.
CREATE TABLE rate_leases (
    provider   text        NOT NULL,
    owner      uuid        NOT NULL,
    share      integer     NOT NULL CHECK (share >= 0),
    expires_at timestamptz NOT NULL,
    PRIMARY KEY (provider, owner)
);

-- The provider's row now only serialises lease grants and carries the pause after a 429;
-- slots are no longer reserved in it one by one.
ALTER TABLE rate_limits RENAME COLUMN next_free TO paused_until;

-- A callback target's destination (scheme://host:port), computed by the relay at intake, so
-- an outcome's outbox rows can be written by one statement for many transactions. Rows from
-- before this migration get the same form from their URL (the default port when none).
ALTER TABLE reply_targets ADD COLUMN destination text;
UPDATE reply_targets
SET destination = lower(substring(callback_url FROM '^([A-Za-z][A-Za-z0-9+.-]*://[^/?#@]+)'))
    || CASE WHEN substring(callback_url FROM '^[A-Za-z][A-Za-z0-9+.-]*://[^/?#@]+:[0-9]+') IS NOT NULL THEN ''
            WHEN lower(callback_url) LIKE 'https://%' THEN ':443' ELSE ':80' END
WHERE callback_url <> '';

-- The same answer as V8's, asked in the cheapest order: a fresh heartbeat settles it
-- without reading pg_locks, which takes every lock-manager partition and cost claims
-- several milliseconds each under load.
CREATE OR REPLACE FUNCTION relay_process_alive(owner uuid, grace_secs float8) RETURNS boolean
LANGUAGE plpgsql STABLE AS $$
DECLARE
    p relay_processes%ROWTYPE;
BEGIN
    SELECT * INTO p FROM relay_processes WHERE id = owner;
    IF NOT FOUND OR p.stopped_at IS NOT NULL THEN
        RETURN false;
    END IF;
    IF p.heartbeat_at > now() - make_interval(secs => grace_secs)
       OR pg_postmaster_start_time() > now() - interval '15 seconds' THEN
        RETURN true;
    END IF;
    RETURN EXISTS (SELECT 1 FROM pg_locks l
                   WHERE l.locktype = 'advisory' AND l.granted
                     AND l.database = (SELECT oid FROM pg_database
                                       WHERE datname = current_database())
                     AND l.classid = 22098::oid AND l.objid = p.lock_key::oid
                     AND l.objsubid = 2);
END
$$;
