-- Callback delivery (issue 10): per-destination dispatch, backpressure, disabled URLs, an
-- attempt log and dead letters published to `callbacks.dead`.

-- Where a callback row goes, as scheme://host:port, so deliveries are grouped and capped per
-- destination. Empty for AMQP channels. Undelivered rows written before this migration get
-- the same form from their URL text (the relay computes it with the WHATWG URL parser).
ALTER TABLE outbox ADD COLUMN destination text NOT NULL DEFAULT '';
WITH parts AS (
    SELECT id,
           lower(substring(target from '^([A-Za-z][A-Za-z0-9+.-]*)://')) AS scheme,
           lower(substring(target from '^[A-Za-z][A-Za-z0-9+.-]*://(?:[^@/?#]*@)?([^/?#]+)')) AS host_port
    FROM outbox
    WHERE channel = 'callback' AND delivered_at IS NULL AND dead_at IS NULL
)
UPDATE outbox o
SET destination = coalesce(
        p.scheme || '://' || p.host_port
            || CASE WHEN p.host_port ~ ':[0-9]+$' THEN ''
                    WHEN p.scheme = 'https' THEN ':443' ELSE ':80' END,
        o.target)
FROM parts p WHERE o.id = p.id;

-- A receiver's Retry-After answers, which use no step of the schedule up to a bound.
ALTER TABLE outbox ADD COLUMN throttled integer NOT NULL DEFAULT 0;

-- 'dead': the notice of a dead callback, published to the `callbacks.dead` queue (target)
-- with the attempt history of the callback row it is about (origin_id).
ALTER TABLE outbox DROP CONSTRAINT outbox_channel_check;
ALTER TABLE outbox ADD CONSTRAINT outbox_channel_check
    CHECK (channel IN ('event', 'reply', 'callback', 'dead'));
ALTER TABLE outbox ADD COLUMN origin_id bigint REFERENCES outbox (id);

-- `attempts` now counts the attempts that used a step of the schedule; an attempt answered
-- with Retry-After (up to a bound), or held by a disabled URL, does not.

-- Backpressure per destination: a receiver's Retry-After pauses all of its deliveries, and
-- consecutive failures open a circuit that holds them back instead of burning their retries.
CREATE TABLE callback_destinations (
    destination          text PRIMARY KEY,
    paused_until         timestamptz,
    consecutive_failures integer NOT NULL DEFAULT 0,
    -- Set while the circuit is open; once past, the circuit is half-open: one probe at a time.
    circuit_open_until   timestamptz,
    updated_at           timestamptz NOT NULL DEFAULT now()
);

-- A URL that answered 410 Gone: its deliveries wait (next_attempt_at = 'infinity', so the
-- claim never scans them) until an operator enables it again.
CREATE TABLE callback_disabled_urls (
    url         text PRIMARY KEY,
    disabled_at timestamptz NOT NULL DEFAULT now(),
    reason      text NOT NULL
);

-- Every callback attempt, so an operator can answer "did they get it?".
CREATE TABLE callback_attempts (
    id            bigserial PRIMARY KEY,
    outbox_id     bigint NOT NULL REFERENCES outbox (id),
    event_id      text NOT NULL,
    attempted_at  timestamptz NOT NULL,
    url           text NOT NULL,
    -- The address actually dialled, when a connection was made.
    dialled_ip    text,
    status        integer,
    latency_ms    integer NOT NULL,
    -- delivered, failed, throttled, gone or refused.
    result        text NOT NULL,
    error         text,
    -- The receiver's answer, at most 16 KiB of it.
    response_body text
);
CREATE INDEX callback_attempts_outbox ON callback_attempts (outbox_id);
CREATE INDEX callback_attempts_event ON callback_attempts (event_id);
CREATE INDEX outbox_dead_callbacks ON outbox (dead_at) WHERE dead_at IS NOT NULL AND channel = 'callback';
