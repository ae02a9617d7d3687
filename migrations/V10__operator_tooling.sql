-- Operator tooling: a PostgreSQL copy of every dead-lettered message (operators read it
-- without touching the queue), what operators discard (archived, never deleted), and who
-- did what and why.

-- One row per message that reached `voucher.dead`. The relay writes it when it dead-letters
-- a message itself (it knows the error); the dead-letter recorder writes the others (a
-- delivery limit used up) as it takes them off `voucher.dead`. Both compute the same
-- `message_key`, so a message is one row whoever comes first.
CREATE TABLE dead_letters (
    id             uuid PRIMARY KEY,
    message_key    text NOT NULL UNIQUE,
    -- The queue the message died in, as the broker names it (with any name prefix).
    queue          text NOT NULL,
    -- Where it was published, so a replay goes the same way ('' is the default exchange,
    -- straight to `queue`).
    exchange       text NOT NULL,
    routing_key    text NOT NULL,
    -- poison | final (the relay refused it) | delivery_limit | expired | maxlen (the broker)
    reason         text NOT NULL,
    attempts       integer NOT NULL,
    last_error     text,
    source         text,
    command_id     text,
    kind           text,
    transaction_id uuid,
    -- The body with voucher codes, PINs and personal data masked; NULL if it is not JSON.
    body_masked    jsonb,
    -- The original bytes, sealed: a replay sends them unchanged, with the properties that
    -- route its outcome (reply queue and correlation id).
    body_sealed    bytea NOT NULL,
    reply_to       text,
    correlation_id text,
    dead_at        timestamptz NOT NULL DEFAULT now(),
    state          text NOT NULL DEFAULT 'dead' CHECK (state IN ('dead', 'replayed', 'discarded')),
    handled_at     timestamptz,
    handled_by     text,
    handled_why    text
);
CREATE INDEX dead_letters_waiting ON dead_letters (dead_at) WHERE state = 'dead';
CREATE INDEX dead_letters_tx ON dead_letters (transaction_id);

-- Discarded items of the places PostgreSQL holds stay where they are, marked.
ALTER TABLE advices DROP CONSTRAINT advices_state_check;
ALTER TABLE advices ADD CONSTRAINT advices_state_check
    CHECK (state IN ('pending', 'done', 'parked', 'discarded'));
ALTER TABLE polls ADD COLUMN discarded_at timestamptz;
ALTER TABLE outbox ADD COLUMN discarded_at timestamptz;
-- A rejection an operator has seen and set aside (its original stays on voucher.rejected
-- until the queue is purged: a queue cannot drop one message).
ALTER TABLE rejections ADD COLUMN discarded_at timestamptz;

-- Every replay and discard: who (the OS user, or the console's operator name), through
-- what, and why.
CREATE TABLE operator_actions (
    id             bigserial PRIMARY KEY,
    at             timestamptz NOT NULL DEFAULT now(),
    actor          text NOT NULL,
    via            text NOT NULL CHECK (via IN ('cli', 'console')),
    action         text NOT NULL CHECK (action IN ('replay', 'discard')),
    place          text NOT NULL,
    item_id        text NOT NULL,
    transaction_id uuid,
    -- replayed | discarded | already_done (the item had reached its outcome: nothing redone)
    result         text NOT NULL,
    why            text NOT NULL
);
CREATE INDEX operator_actions_tx ON operator_actions (transaction_id);
CREATE INDEX operator_actions_at ON operator_actions (at);

-- CSQ's assets repeat the voucher code (a barcode of its digits, a QR payload). The relay
-- masks them from now on; the exchanges recorded before are masked here, since operators
-- now read them (`tx show`, the console).
UPDATE provider_exchanges
SET response = jsonb_set(
        response, '{items,0,extraInfo,additionalData}',
        (SELECT jsonb_agg(CASE WHEN e->>'key' IN ('barcode', 'qr_payload')
                               THEN jsonb_set(e, '{value}', '"****"') ELSE e END)
         FROM jsonb_array_elements(response->'items'->0->'extraInfo'->'additionalData') e))
WHERE jsonb_typeof(response->'items'->0->'extraInfo'->'additionalData') = 'array'
  AND response::text ~ '"(barcode|qr_payload)"';
