-- The money path: users, a double-entry ledger with its balances, stakes, Solana deposits with
-- each watcher's cursor, and withdrawals. Amounts are integers in the token's base units.

-- Pools are read from the stakes (per token); the single-token columns are gone.
ALTER TABLE markets DROP COLUMN home_pool;
ALTER TABLE markets DROP COLUMN away_pool;
ALTER TABLE markets ADD COLUMN stake_count BIGINT NOT NULL DEFAULT 0;

CREATE TABLE users (
    id           BIGSERIAL PRIMARY KEY,
    name         TEXT NOT NULL DEFAULT '',
    api_key_hash TEXT NOT NULL UNIQUE,
    deposit_code TEXT NOT NULL UNIQUE,
    created_at   TIMESTAMPTZ NOT NULL
);

-- One row per (account, token). Accounts: user:<id>, escrow:<market id>, holds:<user id>,
-- house, unattributed, withdrawn, and external (the outside world: minus all deposits).
-- Every balance equals the sum of its ledger entries; only `external` can go below zero.
CREATE TABLE balances (
    account TEXT NOT NULL,
    token   TEXT NOT NULL,
    amount  BIGINT NOT NULL,
    PRIMARY KEY (account, token),
    CHECK (account = 'external' OR amount >= 0)
);

-- Double entry: every transfer writes one debit and one credit row with the same transfer id,
-- so each token's entries sum to zero.
CREATE TABLE ledger_entries (
    id          BIGSERIAL PRIMARY KEY,
    transfer_id TEXT NOT NULL,
    account     TEXT NOT NULL,
    token       TEXT NOT NULL,
    amount      BIGINT NOT NULL,
    kind        TEXT NOT NULL,
    reference   TEXT NOT NULL,
    created_at  TIMESTAMPTZ NOT NULL
);
CREATE INDEX ledger_by_account ON ledger_entries (account, id);

CREATE TABLE stakes (
    id         BIGSERIAL PRIMARY KEY,
    market_id  BIGINT NOT NULL REFERENCES markets (id),
    user_id    BIGINT NOT NULL REFERENCES users (id),
    outcome    TEXT NOT NULL,
    token      TEXT NOT NULL,
    amount     BIGINT NOT NULL CHECK (amount > 0),
    payout     BIGINT,
    created_at TIMESTAMPTZ NOT NULL,
    settled_at TIMESTAMPTZ
);
CREATE INDEX stakes_by_user ON stakes (user_id, id);
CREATE INDEX stakes_by_market ON stakes (market_id, token, outcome);

CREATE TABLE deposits (
    id          BIGSERIAL PRIMARY KEY,
    token       TEXT NOT NULL,
    signature   TEXT NOT NULL,
    slot        BIGINT NOT NULL,
    amount      BIGINT NOT NULL CHECK (amount > 0),
    user_id     BIGINT REFERENCES users (id),
    memo        TEXT,
    state       TEXT NOT NULL,
    created_at  TIMESTAMPTZ NOT NULL,
    assigned_at TIMESTAMPTZ,
    UNIQUE (token, signature)
);
CREATE INDEX deposits_unattributed ON deposits (state, id);

CREATE TABLE watcher_cursors (
    token      TEXT PRIMARY KEY,
    signature  TEXT NOT NULL,
    slot       BIGINT NOT NULL,
    updated_at TIMESTAMPTZ NOT NULL
);

CREATE TABLE withdrawals (
    id          BIGSERIAL PRIMARY KEY,
    user_id     BIGINT NOT NULL REFERENCES users (id),
    token       TEXT NOT NULL,
    amount      BIGINT NOT NULL CHECK (amount > 0),
    destination TEXT NOT NULL,
    state       TEXT NOT NULL DEFAULT 'pending',
    signature   TEXT,
    reason      TEXT,
    created_at  TIMESTAMPTZ NOT NULL,
    updated_at  TIMESTAMPTZ NOT NULL
);
CREATE INDEX withdrawals_by_user ON withdrawals (user_id, id);
CREATE INDEX withdrawals_by_state ON withdrawals (state, created_at);
