-- Positions: a user's stakes on one market outcome in one token add up to one position, so
-- settlement is O(positions), not O(stake requests). Stakes stay as the record of each request.
-- A market is paid out in its own transaction after the board that closed it commits:
-- `paid_at` marks that payout (compare-and-set, so once), and a closed market not yet paid is
-- found again by the next pass of its league.
CREATE TABLE positions (
    id         INTEGER PRIMARY KEY AUTOINCREMENT,
    market_id  INTEGER NOT NULL REFERENCES markets (id),
    user_id    INTEGER NOT NULL REFERENCES users (id),
    outcome    TEXT NOT NULL,
    token      TEXT NOT NULL,
    amount     INTEGER NOT NULL CHECK (typeof(amount) = 'integer' AND amount > 0),
    stakes     INTEGER NOT NULL,
    payout     INTEGER CHECK (payout IS NULL OR (typeof(payout) = 'integer' AND payout >= 0)),
    created_at TEXT NOT NULL,
    updated_at TEXT NOT NULL,
    settled_at TEXT,
    UNIQUE (market_id, token, outcome, user_id)
);
CREATE INDEX positions_by_user ON positions (user_id, id);

ALTER TABLE stakes ADD COLUMN position_id INTEGER REFERENCES positions (id);

INSERT INTO positions (market_id, user_id, outcome, token, amount, stakes, payout, created_at, updated_at, settled_at)
SELECT market_id, user_id, outcome, token, SUM(amount), COUNT(*),
       CASE WHEN COUNT(payout) = COUNT(*) THEN SUM(payout) END,
       MIN(created_at), MAX(created_at), MAX(settled_at)
FROM stakes GROUP BY market_id, token, outcome, user_id;

UPDATE stakes SET position_id = (
    SELECT p.id FROM positions p
    WHERE p.market_id = stakes.market_id AND p.token = stakes.token
      AND p.outcome = stakes.outcome AND p.user_id = stakes.user_id
);

ALTER TABLE markets ADD COLUMN paid_at TEXT;
UPDATE markets SET paid_at = settled_at WHERE state IN ('settled', 'void');
CREATE INDEX markets_unpaid ON markets (id) WHERE paid_at IS NULL AND state IN ('settled', 'void');
