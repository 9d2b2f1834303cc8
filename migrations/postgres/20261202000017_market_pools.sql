-- Each market's pool on each outcome, per token: the sum of its positions, kept in step by
-- triggers in the stake's own transaction. Reads used to sum the positions on every request,
-- so a market with 100,000 bettors cost tens of milliseconds to read (BENCHMARKS.md,
-- 2026-12-02); now one row per outcome and token. The audit checks the pools against the
-- positions.
CREATE TABLE market_pools (
    market_id BIGINT NOT NULL REFERENCES markets (id),
    outcome   TEXT NOT NULL,
    token     TEXT NOT NULL,
    amount    BIGINT NOT NULL,
    PRIMARY KEY (market_id, outcome, token)
);

INSERT INTO market_pools (market_id, outcome, token, amount)
SELECT market_id, outcome, token, SUM(amount) FROM positions GROUP BY market_id, outcome, token;

-- A position's amount only grows (a stake adds to it); its market, outcome and token never
-- change. A stake already holds its market's row, so the pool row adds no lock order.
CREATE FUNCTION market_pools_position_written() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF TG_OP = 'INSERT' THEN
        INSERT INTO market_pools (market_id, outcome, token, amount)
        VALUES (NEW.market_id, NEW.outcome, NEW.token, NEW.amount)
        ON CONFLICT (market_id, outcome, token) DO UPDATE SET amount = market_pools.amount + excluded.amount;
    ELSIF TG_OP = 'UPDATE' THEN
        UPDATE market_pools SET amount = amount + NEW.amount - OLD.amount
        WHERE market_id = NEW.market_id AND outcome = NEW.outcome AND token = NEW.token;
    ELSE
        UPDATE market_pools SET amount = amount - OLD.amount
        WHERE market_id = OLD.market_id AND outcome = OLD.outcome AND token = OLD.token;
    END IF;
    RETURN NULL;
END
$$;

CREATE TRIGGER market_pools_position_written AFTER INSERT OR DELETE OR UPDATE OF amount ON positions
    FOR EACH ROW EXECUTE FUNCTION market_pools_position_written();
