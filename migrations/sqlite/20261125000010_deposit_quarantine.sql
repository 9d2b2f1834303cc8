-- Deposits that never stall: a treasury signature whose transaction cannot be read (the node
-- answers null after pruning it, or its amount is beyond 2^63 - 1) counts attempts here while it
-- holds its token's cursor (`failing`); after TIPOFF_SOLANA_QUARANTINE_AFTER attempts it is
-- `quarantined` and the cursor moves past it. An admin may ask for a `retry` (the watcher reads it
-- again); one credited, or found to be no deposit, is `resolved`.
CREATE TABLE deposit_quarantine (
    id            INTEGER PRIMARY KEY AUTOINCREMENT,
    token         TEXT NOT NULL,
    signature     TEXT NOT NULL,
    slot          INTEGER NOT NULL,
    memo          TEXT,
    attempts      INTEGER NOT NULL,
    last_error    TEXT NOT NULL,
    state         TEXT NOT NULL,
    first_seen_at TEXT NOT NULL,
    updated_at    TEXT NOT NULL,
    resolution    TEXT,
    UNIQUE (token, signature)
);
CREATE INDEX deposit_quarantine_by_state ON deposit_quarantine (state, id);
