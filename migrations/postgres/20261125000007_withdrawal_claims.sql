-- The signer protocol: a signer claims a pending withdrawal (`processing`, with who and when)
-- before it sends anything on chain; cleanup expires only unclaimed `pending` ones, so a paid
-- withdrawal can never be refunded. A transaction signature completes at most one withdrawal.
ALTER TABLE withdrawals ADD COLUMN claimed_by TEXT;
ALTER TABLE withdrawals ADD COLUMN claimed_at TIMESTAMPTZ;
CREATE UNIQUE INDEX withdrawals_signature ON withdrawals (signature);
CREATE INDEX withdrawals_by_state_id ON withdrawals (state, id);
