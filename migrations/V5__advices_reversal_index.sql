-- A confirmation is recorded only if no reversal of the same provider request exists: that
-- check runs inside the outcome's database transaction, so it must not scan every advice.
CREATE INDEX advices_reversal_request ON advices (request_id) WHERE kind = 'reversal';
