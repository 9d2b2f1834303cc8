-- Positions: a user's stakes on one market outcome in one token add up to one position, so
-- settlement is O(positions), not O(stake requests). Stakes stay as the record of each request.
-- A market is paid out in its own transaction after the board that closed it commits:
-- `paid_at` marks that payout (compare-and-set, so once), and a closed market not yet paid is
-- found again by the next pass of its league.
CREATE TABLE positions (
    id         BIGSERIAL PRIMARY KEY,
    market_id  BIGINT NOT NULL REFERENCES markets (id),
    user_id    BIGINT NOT NULL REFERENCES users (id),
    outcome    TEXT NOT NULL,
    token      TEXT NOT NULL,
    amount     BIGINT NOT NULL CHECK (amount > 0),
    stakes     BIGINT NOT NULL,
    payout     BIGINT CHECK (payout IS NULL OR payout >= 0),
    created_at TIMESTAMPTZ NOT NULL,
    updated_at TIMESTAMPTZ NOT NULL,
    settled_at TIMESTAMPTZ,
    UNIQUE (market_id, token, outcome, user_id)
);
CREATE INDEX positions_by_user ON positions (user_id, id);

ALTER TABLE stakes ADD COLUMN position_id BIGINT REFERENCES positions (id);

INSERT INTO positions (market_id, user_id, outcome, token, amount, stakes, payout, created_at, updated_at, settled_at)
SELECT market_id, user_id, outcome, token, SUM(amount), COUNT(*),
       CASE WHEN COUNT(payout) = COUNT(*) THEN SUM(payout) END,
       MIN(created_at), MAX(created_at), MAX(settled_at)
FROM stakes GROUP BY market_id, token, outcome, user_id;

UPDATE stakes SET position_id = p.id FROM positions p
WHERE p.market_id = stakes.market_id AND p.token = stakes.token
  AND p.outcome = stakes.outcome AND p.user_id = stakes.user_id;

ALTER TABLE markets ADD COLUMN paid_at TIMESTAMPTZ;
UPDATE markets SET paid_at = settled_at WHERE state IN ('settled', 'void');
CREATE INDEX markets_unpaid ON markets (id) WHERE paid_at IS NULL AND state IN ('settled', 'void');
