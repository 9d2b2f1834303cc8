-- A batch of stakes as one statement: the group commit of the stake batcher on PostgreSQL
-- (`actors/src/stakes.rs`). A stake was a transaction of its own, so each paid its own commit
-- and its own round trip; a batch shares both.
--
-- A transaction of many stakes holds many markets' and users' rows at once, so it takes its
-- locks up front in the order every money transaction takes them: the batch's open markets
-- by id, its users (shared, as their foreign keys would), then the balances in `lock_rank`
-- order, the escrows by market before the users' by user. Batches of several replicas,
-- payouts, deposits and withdrawals then never wait on each other in a cycle. A stake on a market that takes no stakes (missing, not open, or its game started) is
-- answered `TS001` and writes nothing.
--
-- When every user's balance covers all of its stakes in the batch (the common case), the
-- batch is written set-based, a statement per table for the whole batch: the legs of
-- `place_stake` (migration 19) summed per user, escrow, market and position, and a stake row
-- and two ledger entries per stake. Else each stake in turn, as `place_stake` takes it: one
-- whose user's balance is short, counting the batch's stakes before it, is answered `TS002`
-- and writes nothing; its neighbours commit.
CREATE FUNCTION place_stakes(
    p_markets BIGINT[], p_users BIGINT[], p_outcomes TEXT[], p_tokens TEXT[], p_amounts BIGINT[],
    p_now TIMESTAMPTZ, p_transfers TEXT[]
) RETURNS TABLE (o_index INT, o_stake BIGINT, o_position BIGINT, o_refusal TEXT)
LANGUAGE plpgsql AS $$
DECLARE
    v_open BIGINT[];
    v_short BOOLEAN;
BEGIN
    SELECT coalesce(array_agg(locked.id), '{}') INTO v_open FROM (
        SELECT m.id FROM markets m
        WHERE m.id = ANY(p_markets) AND m.state = 'open'
          AND m.game_id IN (SELECT g.id FROM games g WHERE g.starts_at > p_now)
        ORDER BY m.id FOR UPDATE OF m
    ) AS locked;
    -- The users' rows, which the stake rows' foreign keys would share-lock after the balances:
    -- a withdrawal locks its user before the balances.
    PERFORM 1 FROM users u WHERE u.id = ANY(p_users) ORDER BY u.id FOR KEY SHARE OF u;
    INSERT INTO balances (account, token, amount)
    SELECT 'escrow:' || e.market, e.token, 0
    FROM (SELECT DISTINCT s.market, s.token FROM unnest(p_markets, p_tokens) AS s(market, token)
          WHERE s.market = ANY(v_open)) AS e
    ORDER BY e.market, e.token
    ON CONFLICT (account, token) DO NOTHING;
    PERFORM 1 FROM balances b
    JOIN (SELECT DISTINCT s.market, s.token FROM unnest(p_markets, p_tokens) AS s(market, token)
          WHERE s.market = ANY(v_open)) AS e ON b.account = 'escrow:' || e.market AND b.token = e.token
    ORDER BY e.market, e.token FOR UPDATE OF b;
    PERFORM 1 FROM balances b
    JOIN (SELECT DISTINCT s.person, s.token FROM unnest(p_users, p_tokens) AS s(person, token)) AS u
      ON b.account = 'user:' || u.person AND b.token = u.token
    ORDER BY u.person, u.token FOR UPDATE OF b;

    SELECT EXISTS (
        SELECT 1 FROM (
            SELECT s.person, s.token, sum(s.amount) AS total
            FROM unnest(p_markets, p_users, p_tokens, p_amounts) AS s(market, person, token, amount)
            WHERE s.market = ANY(v_open) GROUP BY s.person, s.token
        ) AS d
        LEFT JOIN balances b ON b.account = 'user:' || d.person AND b.token = d.token
        WHERE b.amount IS NULL OR b.amount < d.total
    ) INTO v_short;

    IF NOT v_short THEN
        RETURN QUERY
        WITH s AS (
            SELECT t.*, t.market = ANY(v_open) AS taken
            FROM unnest(p_markets, p_users, p_outcomes, p_tokens, p_amounts, p_transfers)
                 WITH ORDINALITY AS t(market, person, outcome, token, amount, transfer, i)
        ), ok AS (
            SELECT s.*, nextval('stakes_id_seq') AS stake_id FROM s WHERE s.taken
        ), debited AS (
            UPDATE balances b SET amount = b.amount - d.total
            FROM (SELECT ok.person, ok.token, sum(ok.amount) AS total FROM ok GROUP BY ok.person, ok.token) AS d
            WHERE b.account = 'user:' || d.person AND b.token = d.token
        ), credited AS (
            UPDATE balances b SET amount = b.amount + d.total
            FROM (SELECT ok.market, ok.token, sum(ok.amount) AS total FROM ok GROUP BY ok.market, ok.token) AS d
            WHERE b.account = 'escrow:' || d.market AND b.token = d.token
        ), counted AS (
            UPDATE markets m SET stake_count = m.stake_count + d.n
            FROM (SELECT ok.market, count(*) AS n FROM ok GROUP BY ok.market) AS d
            WHERE m.id = d.market
        ), held AS (
            INSERT INTO positions (market_id, user_id, outcome, token, amount, stakes, created_at, updated_at)
            SELECT ok.market, ok.person, ok.outcome, ok.token, sum(ok.amount), count(*), p_now, p_now
            FROM ok GROUP BY ok.market, ok.person, ok.outcome, ok.token
            ON CONFLICT (market_id, token, outcome, user_id)
            DO UPDATE SET amount = positions.amount + excluded.amount, stakes = positions.stakes + excluded.stakes,
                updated_at = excluded.updated_at
            RETURNING positions.id, positions.market_id, positions.user_id, positions.outcome, positions.token
        ), placed AS (
            SELECT ok.i, ok.stake_id, held.id AS position_id, ok.market, ok.person, ok.outcome, ok.token,
                   ok.amount, ok.transfer
            FROM ok JOIN held ON held.market_id = ok.market AND held.user_id = ok.person
                 AND held.outcome = ok.outcome AND held.token = ok.token
        ), rows_written AS (
            INSERT INTO stakes (id, market_id, user_id, outcome, token, amount, created_at, position_id)
            SELECT placed.stake_id, placed.market, placed.person, placed.outcome, placed.token, placed.amount,
                   p_now, placed.position_id
            FROM placed
        ), entries AS (
            INSERT INTO ledger_entries (transfer_id, account, token, amount, kind, reference, created_at)
            SELECT placed.transfer, leg.account, placed.token, leg.amount, 'stake', 'stake:' || placed.stake_id, p_now
            FROM placed CROSS JOIN LATERAL (VALUES (1, 'user:' || placed.person, -placed.amount),
                                                   (2, 'escrow:' || placed.market, placed.amount))
                 AS leg(n, account, amount)
            ORDER BY placed.i, leg.n
        )
        SELECT s.i::INT, placed.stake_id, placed.position_id, CASE WHEN s.taken THEN NULL ELSE 'TS001' END
        FROM s LEFT JOIN placed ON placed.i = s.i
        ORDER BY s.i;
        RETURN;
    END IF;

    FOR i IN 1 .. coalesce(array_length(p_markets, 1), 0) LOOP
        o_index := i;
        o_stake := NULL;
        o_position := NULL;
        o_refusal := NULL;
        IF NOT (p_markets[i] = ANY(v_open)) THEN
            o_refusal := 'TS001';
        ELSE
            UPDATE balances SET amount = amount - p_amounts[i]
            WHERE account = 'user:' || p_users[i] AND token = p_tokens[i] AND amount >= p_amounts[i];
            IF NOT FOUND THEN
                o_refusal := 'TS002';
            ELSE
                UPDATE markets SET stake_count = stake_count + 1 WHERE id = p_markets[i];
                INSERT INTO positions (market_id, user_id, outcome, token, amount, stakes, created_at, updated_at)
                VALUES (p_markets[i], p_users[i], p_outcomes[i], p_tokens[i], p_amounts[i], 1, p_now, p_now)
                ON CONFLICT (market_id, token, outcome, user_id)
                DO UPDATE SET amount = positions.amount + excluded.amount, stakes = positions.stakes + 1,
                    updated_at = excluded.updated_at
                RETURNING id INTO o_position;
                INSERT INTO stakes (market_id, user_id, outcome, token, amount, created_at, position_id)
                VALUES (p_markets[i], p_users[i], p_outcomes[i], p_tokens[i], p_amounts[i], p_now, o_position)
                RETURNING id INTO o_stake;
                UPDATE balances SET amount = amount + p_amounts[i]
                WHERE account = 'escrow:' || p_markets[i] AND token = p_tokens[i];
                INSERT INTO ledger_entries (transfer_id, account, token, amount, kind, reference, created_at)
                VALUES (p_transfers[i], 'user:' || p_users[i], p_tokens[i], -p_amounts[i], 'stake', 'stake:' || o_stake, p_now),
                       (p_transfers[i], 'escrow:' || p_markets[i], p_tokens[i], p_amounts[i], 'stake', 'stake:' || o_stake, p_now);
            END IF;
        END IF;
        RETURN NEXT;
    END LOOP;
END
$$;
