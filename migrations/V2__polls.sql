-- Polling that outlives any process: additional data, raffle results, unknown outcomes.
-- The schedule lives here; RabbitMQ delay tiers only carry the wake-up message.

ALTER TABLE transactions ADD COLUMN operator_id integer;
-- What a sale returned before its additional data arrived (sealed: it has the voucher code).
ALTER TABLE transactions ADD COLUMN partial_sealed bytea;
ALTER TABLE transactions DROP CONSTRAINT transactions_state_check;
ALTER TABLE transactions ADD CONSTRAINT transactions_state_check
    CHECK (state IN ('received', 'sending', 'unknown', 'awaiting_data', 'awaiting_draw', 'completed'));

-- At most one poll per transaction. purpose: resolve (outcome unknown), additional_data,
-- or finished (a raffle ticket waiting for its draw).
CREATE TABLE polls (
    transaction_id uuid PRIMARY KEY REFERENCES transactions (id),
    purpose        text NOT NULL CHECK (purpose IN ('resolve', 'additional_data', 'finished')),
    attempts       integer NOT NULL DEFAULT 0,
    next_at        timestamptz NOT NULL,
    deadline       timestamptz NOT NULL,
    -- A worker polling right now holds this lease.
    locked_until   timestamptz,
    -- When a wake-up message was last published; the sweeper republishes lost ones.
    enqueued_at    timestamptz,
    created_at     timestamptz NOT NULL DEFAULT now(),
    updated_at     timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX polls_due ON polls (next_at);

-- The same rejected message delivered twice (a crash between commit and ack) is one
-- rejection with one outcome: keyed by routing key, reply address and body.
ALTER TABLE rejections ADD COLUMN dedupe_key text;
CREATE UNIQUE INDEX rejections_dedupe ON rejections (dedupe_key);

-- Finding transactions whose worker died while sending.
CREATE INDEX transactions_stale_leases ON transactions (lease_until) WHERE state = 'sending';

-- Global rate limits: the next free send slot per provider, shared by every worker process.
CREATE TABLE rate_limits (
    provider  text PRIMARY KEY,
    next_free timestamptz NOT NULL
);
