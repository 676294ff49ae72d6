-- Three indexes held an entry for every row, though their queries look only for a few: the
-- challenges still pending (the expiry sweep), the deliveries still to send (the push
-- worker) and the challenges created with an idempotency key (a retried create). Each
-- decided challenge and each sent or poll-only delivery still took an entry, and those
-- entries made up almost all of each index and most of the writes to it. Now each indexes
-- only the rows its query asks for: an entry is written when a row enters that set, none
-- when it leaves it, and the index stays as small as the set. Uniqueness of idempotency keys
-- per API key is unchanged (rows without a key never conflicted).
DROP INDEX challenges_idempotency;
CREATE UNIQUE INDEX challenges_idempotency ON challenges (api_key_id, idempotency_key)
    WHERE idempotency_key IS NOT NULL;
DROP INDEX challenges_pending;
CREATE INDEX challenges_pending ON challenges (expires_at) WHERE status = 'pending';
DROP INDEX push_deliveries_due;
CREATE INDEX push_deliveries_due ON push_deliveries (next_attempt_at) WHERE status = 'pending';
