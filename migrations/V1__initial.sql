-- voucher-relay: the first tables. Applied by `voucher-relay migrate` and at start-up.

-- One row per accepted command; (source, command_id) is the idempotency key.
-- state: received -> sending -> completed | unknown (and sending -> received when the
-- request provably never left). `status` is the public terminal status once completed.
CREATE TABLE transactions (
    id              uuid PRIMARY KEY,
    source          text NOT NULL,
    command_id      text NOT NULL,
    kind            text NOT NULL,
    provider        text NOT NULL,
    state           text NOT NULL CHECK (state IN ('received', 'sending', 'unknown', 'completed')),
    status          text CHECK (status IN ('succeeded', 'declined', 'reversed', 'failed', 'expired')),
    params_masked   jsonb NOT NULL,
    terminal_id     integer,
    local_reference integer,
    -- Until when the worker that moved the row to `sending` owns it.
    lease_until     timestamptz,
    attempts        integer NOT NULL DEFAULT 0,
    -- The terminal outcome event, sealed (it carries voucher codes).
    event_id        text,
    outcome_sealed  bytea,
    created_at      timestamptz NOT NULL DEFAULT now(),
    updated_at      timestamptz NOT NULL DEFAULT now(),
    completed_at    timestamptz,
    UNIQUE (source, command_id),
    CHECK ((state = 'completed') = (status IS NOT NULL AND outcome_sealed IS NOT NULL))
);

-- CSQ's localReference must be unique per terminal; one sequence keeps it unique everywhere.
CREATE SEQUENCE csq_local_reference AS integer MINVALUE 1 MAXVALUE 2147483647 NO CYCLE;
CREATE UNIQUE INDEX transactions_local_reference
    ON transactions (provider, terminal_id, local_reference)
    WHERE local_reference IS NOT NULL;

-- Everyone who asked for the outcome: the original command and any duplicates that arrived
-- while it was in flight.
CREATE TABLE reply_targets (
    id             bigserial PRIMARY KEY,
    transaction_id uuid NOT NULL REFERENCES transactions (id),
    reply_to       text NOT NULL DEFAULT '',
    correlation_id text NOT NULL DEFAULT '',
    callback_url   text NOT NULL DEFAULT '',
    answered_at    timestamptz,
    created_at     timestamptz NOT NULL DEFAULT now(),
    UNIQUE (transaction_id, reply_to, correlation_id, callback_url)
);

-- Every request to a provider and its answer, with secrets and voucher codes masked.
CREATE TABLE provider_exchanges (
    id             bigserial PRIMARY KEY,
    transaction_id uuid NOT NULL REFERENCES transactions (id),
    provider       text NOT NULL,
    operation      text NOT NULL,
    method         text NOT NULL,
    url            text NOT NULL,
    request        jsonb NOT NULL,
    status_code    integer,
    response       jsonb,
    error          text,
    latency_ms     integer NOT NULL,
    created_at     timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX provider_exchanges_tx ON provider_exchanges (transaction_id);

-- The state-change audit trail.
CREATE TABLE audit_trail (
    id             bigserial PRIMARY KEY,
    transaction_id uuid NOT NULL REFERENCES transactions (id),
    from_state     text,
    to_state       text NOT NULL,
    detail         jsonb NOT NULL DEFAULT '{}',
    created_at     timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX audit_trail_tx ON audit_trail (transaction_id);

-- Commands the relay refused. The original body is kept in the voucher.rejected queue; here
-- only its digest, so no personal data is copied.
CREATE TABLE rejections (
    id           uuid PRIMARY KEY,
    source       text,
    command_id   text,
    routing_key  text NOT NULL,
    reason_code  text NOT NULL,
    reason       text NOT NULL,
    body_sha256  text NOT NULL,
    body_bytes   integer NOT NULL,
    event_id     text NOT NULL,
    created_at   timestamptz NOT NULL DEFAULT now()
);

-- Deliveries owed: written in the same database transaction as the outcome.
-- channel: event (voucher.events), reply (AMQP reply_to), callback (HTTP POST).
CREATE TABLE outbox (
    id              bigserial PRIMARY KEY,
    event_id        text NOT NULL,
    transaction_id  uuid REFERENCES transactions (id),
    rejection_id    uuid REFERENCES rejections (id),
    channel         text NOT NULL CHECK (channel IN ('event', 'reply', 'callback')),
    target          text NOT NULL,
    correlation_id  text,
    payload_sealed  bytea NOT NULL,
    attempts        integer NOT NULL DEFAULT 0,
    next_attempt_at timestamptz NOT NULL DEFAULT now(),
    locked_until    timestamptz,
    delivered_at    timestamptz,
    dead_at         timestamptz,
    last_error      text,
    created_at      timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX outbox_due ON outbox (next_attempt_at) WHERE delivered_at IS NULL AND dead_at IS NULL;
