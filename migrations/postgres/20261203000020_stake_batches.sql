-- A batch of stakes as one statement: the group commit of the stake batcher on PostgreSQL
-- (`actors/src/stakes.rs`). A stake was a transaction of its own, so each paid its own commit
-- and its own round trip; a batch shares both.
--
-- A transaction of many stakes holds many markets' and users' rows at once, so it takes its
-- locks up front in the order every money transaction takes them (`lock_rank`): the batch's
-- open markets by id, then their escrow rows by market, then the users' rows by user. Batches
-- of several replicas, payouts, deposits and withdrawals then never wait on each other in a
-- cycle. Then each stake in turn, with the legs of `place_stake` (migration 19): a refused
-- one writes nothing and is answered by its code, `TS001` (its market takes no stakes:
-- missing, not open, or its game started) or `TS002` (its user's balance is short, counting
-- the batch's stakes before it); its neighbours commit.
CREATE FUNCTION place_stakes(
    p_markets BIGINT[], p_users BIGINT[], p_outcomes TEXT[], p_tokens TEXT[], p_amounts BIGINT[],
    p_now TIMESTAMPTZ, p_transfers TEXT[]
) RETURNS TABLE (o_index INT, o_stake BIGINT, o_position BIGINT, o_refusal TEXT)
LANGUAGE plpgsql AS $$
DECLARE
    v_open BIGINT[];
BEGIN
    SELECT coalesce(array_agg(locked.id), '{}') INTO v_open FROM (
        SELECT m.id FROM markets m
        WHERE m.id = ANY(p_markets) AND m.state = 'open'
          AND m.game_id IN (SELECT g.id FROM games g WHERE g.starts_at > p_now)
        ORDER BY m.id FOR UPDATE OF m
    ) AS locked;
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
