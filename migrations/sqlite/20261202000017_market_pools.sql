-- Each market's pool on each outcome, per token: the sum of its positions, kept in step by
-- triggers in the stake's own transaction. Reads used to sum the positions on every request,
-- so a market with 100,000 bettors cost 57 ms to read (BENCHMARKS.md, 2026-12-02); now one
-- row per outcome and token. The audit checks the pools against the positions.
CREATE TABLE market_pools (
    market_id INTEGER NOT NULL REFERENCES markets (id),
    outcome   TEXT NOT NULL,
    token     TEXT NOT NULL,
    amount    INTEGER NOT NULL,
    PRIMARY KEY (market_id, outcome, token)
);

INSERT INTO market_pools (market_id, outcome, token, amount)
SELECT market_id, outcome, token, SUM(amount) FROM positions GROUP BY market_id, outcome, token;

CREATE TRIGGER market_pools_position_inserted AFTER INSERT ON positions BEGIN
    INSERT INTO market_pools (market_id, outcome, token, amount)
    VALUES (new.market_id, new.outcome, new.token, new.amount)
    ON CONFLICT (market_id, outcome, token) DO UPDATE SET amount = amount + excluded.amount;
END;

-- A position's amount only grows (a stake adds to it); its market, outcome and token never
-- change.
CREATE TRIGGER market_pools_position_updated AFTER UPDATE OF amount ON positions BEGIN
    UPDATE market_pools SET amount = amount + new.amount - old.amount
    WHERE market_id = new.market_id AND outcome = new.outcome AND token = new.token;
END;

CREATE TRIGGER market_pools_position_deleted AFTER DELETE ON positions BEGIN
    UPDATE market_pools SET amount = amount - old.amount
    WHERE market_id = old.market_id AND outcome = old.outcome AND token = old.token;
END;
