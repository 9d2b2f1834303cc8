-- The money path: users, a double-entry ledger with its balances, stakes, Solana deposits with
-- each watcher's cursor, and withdrawals. Amounts are integers in the token's base units.

-- Pools are read from the stakes (per token); the single-token columns are gone.
ALTER TABLE markets DROP COLUMN home_pool;
ALTER TABLE markets DROP COLUMN away_pool;
ALTER TABLE markets ADD COLUMN stake_count INTEGER NOT NULL DEFAULT 0;

CREATE TABLE users (
    id           INTEGER PRIMARY KEY AUTOINCREMENT,
    name         TEXT NOT NULL DEFAULT '',
    api_key_hash TEXT NOT NULL UNIQUE,
    deposit_code TEXT NOT NULL UNIQUE,
    created_at   TEXT NOT NULL
);

-- One row per (account, token). Accounts: user:<id>, escrow:<market id>, holds:<user id>,
-- house, unattributed, withdrawn, and external (the outside world: minus all deposits).
-- Every balance equals the sum of its ledger entries; only `external` can go below zero.
CREATE TABLE balances (
    account TEXT NOT NULL,
    token   TEXT NOT NULL,
    amount  INTEGER NOT NULL,
    PRIMARY KEY (account, token),
    CHECK (account = 'external' OR amount >= 0)
);

-- Double entry: every transfer writes one debit and one credit row with the same transfer id,
-- so each token's entries sum to zero.
CREATE TABLE ledger_entries (
    id          INTEGER PRIMARY KEY AUTOINCREMENT,
    transfer_id TEXT NOT NULL,
    account     TEXT NOT NULL,
    token       TEXT NOT NULL,
    amount      INTEGER NOT NULL,
    kind        TEXT NOT NULL,
    reference   TEXT NOT NULL,
    created_at  TEXT NOT NULL
);
CREATE INDEX ledger_by_account ON ledger_entries (account, id);

CREATE TABLE stakes (
    id         INTEGER PRIMARY KEY AUTOINCREMENT,
    market_id  INTEGER NOT NULL REFERENCES markets (id),
    user_id    INTEGER NOT NULL REFERENCES users (id),
    outcome    TEXT NOT NULL,
    token      TEXT NOT NULL,
    amount     INTEGER NOT NULL CHECK (amount > 0),
    payout     INTEGER,
    created_at TEXT NOT NULL,
    settled_at TEXT
);
CREATE INDEX stakes_by_user ON stakes (user_id, id);
CREATE INDEX stakes_by_market ON stakes (market_id, token, outcome);

CREATE TABLE deposits (
    id          INTEGER PRIMARY KEY AUTOINCREMENT,
    token       TEXT NOT NULL,
    signature   TEXT NOT NULL,
    slot        INTEGER NOT NULL,
    amount      INTEGER NOT NULL CHECK (amount > 0),
    user_id     INTEGER REFERENCES users (id),
    memo        TEXT,
    state       TEXT NOT NULL,
    created_at  TEXT NOT NULL,
    assigned_at TEXT,
    UNIQUE (token, signature)
);
CREATE INDEX deposits_unattributed ON deposits (state, id);

CREATE TABLE watcher_cursors (
    token      TEXT PRIMARY KEY,
    signature  TEXT NOT NULL,
    slot       INTEGER NOT NULL,
    updated_at TEXT NOT NULL
);

CREATE TABLE withdrawals (
    id          INTEGER PRIMARY KEY AUTOINCREMENT,
    user_id     INTEGER NOT NULL REFERENCES users (id),
    token       TEXT NOT NULL,
    amount      INTEGER NOT NULL CHECK (amount > 0),
    destination TEXT NOT NULL,
    state       TEXT NOT NULL DEFAULT 'pending',
    signature   TEXT,
    reason      TEXT,
    created_at  TEXT NOT NULL,
    updated_at  TEXT NOT NULL
);
CREATE INDEX withdrawals_by_user ON withdrawals (user_id, id);
CREATE INDEX withdrawals_by_state ON withdrawals (state, created_at);
