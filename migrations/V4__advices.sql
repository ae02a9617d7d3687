-- Store-and-forward advices (Electrum confirmations and reversals), repeated until the
-- provider answers finally. The row is the truth; a RabbitMQ message only says "try the
-- advices of transaction X now".

-- `reversing`: the outcome was unknown, a reversal advice is on its way; the command's
-- outcome comes when the provider answers it finally.
ALTER TABLE transactions DROP CONSTRAINT transactions_state_check;
ALTER TABLE transactions ADD CONSTRAINT transactions_state_check
    CHECK (state IN ('received', 'sending', 'unknown', 'awaiting_data', 'awaiting_draw',
                     'reversing', 'completed'));

CREATE TABLE advices (
    id              uuid PRIMARY KEY,          -- also the advice message's `id`
    transaction_id  uuid NOT NULL REFERENCES transactions (id),
    -- Order within the transaction: an advice is sent only when every earlier one is final.
    seq             integer NOT NULL,
    provider        text NOT NULL,
    operation       text NOT NULL CHECK (operation IN ('provision', 'redeem', 'refund')),
    kind            text NOT NULL CHECK (kind IN ('confirmation', 'reversal')),
    -- The provider request the advice is about (its `requestId`).
    request_id      uuid NOT NULL,
    -- Why a reversal: Electrum's reversalReason, and what the relay saw.
    reversal_reason text,
    detail          text,
    -- What a provision confirmation reports as paid: {"amount_minor", "currency"}.
    tender          jsonb,
    -- The message as first sent; every repetition sends it unchanged. No voucher codes.
    body            jsonb,
    state           text NOT NULL DEFAULT 'pending' CHECK (state IN ('pending', 'done', 'parked')),
    attempts        integer NOT NULL DEFAULT 0,
    next_at         timestamptz NOT NULL DEFAULT now(),
    -- The retry budget: past it, the advice is parked.
    deadline        timestamptz NOT NULL,
    locked_until    timestamptz,
    locked_by       uuid,
    enqueued_at     timestamptz,
    first_sent_at   timestamptz,
    final_status    integer,
    final_body      jsonb,
    last_error      text,
    created_at      timestamptz NOT NULL DEFAULT now(),
    updated_at      timestamptz NOT NULL DEFAULT now(),
    settled_at      timestamptz,
    UNIQUE (transaction_id, seq)
);
CREATE INDEX advices_pending ON advices (next_at) WHERE state = 'pending';
CREATE INDEX advices_tx ON advices (transaction_id);
