-- The core is provider-neutral: nothing in the shared tables serves only one provider.
--
-- Upgrade with every relay process stopped: a relay built before V6 cannot work on the
-- migrated tables (dropped and renamed columns). The first new relay (or `migrate`)
-- applies it.
--
-- transactions: a provider's own references (CSQ's terminal and operator) move to
-- `provider_ref`, a JSON object the provider reads back in its polls. `local_reference`
-- stays: the number the relay allocates for providers that need one.
ALTER TABLE transactions ADD COLUMN provider_ref jsonb;
UPDATE transactions
   SET provider_ref = jsonb_strip_nulls(jsonb_build_object('terminal_id', terminal_id,
                                                           'operator_id', operator_id))
 WHERE terminal_id IS NOT NULL OR operator_id IS NOT NULL;
-- One sequence allocates every local reference, so it is unique per provider on its own.
DROP INDEX transactions_local_reference;
CREATE UNIQUE INDEX transactions_local_reference
    ON transactions (provider, local_reference)
    WHERE local_reference IS NOT NULL;
ALTER TABLE transactions DROP COLUMN terminal_id;
ALTER TABLE transactions DROP COLUMN operator_id;
ALTER SEQUENCE csq_local_reference RENAME TO local_reference_seq;

-- polls: the purpose is the provider's own word.
ALTER TABLE polls DROP CONSTRAINT polls_purpose_check;

-- advices: the operation is the provider's own word; `data` is what the provider needs to
-- build the message later (a provision confirmation's tender).
ALTER TABLE advices DROP CONSTRAINT advices_operation_check;
ALTER TABLE advices RENAME COLUMN tender TO data;
