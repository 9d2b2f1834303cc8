-- Stakes off the market forms. A stake no longer rewrites its market's stored form: the form
-- (migration 18) keeps each outcome's pool as `{}`, and a page of markets splices the pools in
-- from `market_pools` as it reads them (`MARKET_JSON`). Rewriting the form in every stake's
-- transaction halved the stakes PostgreSQL could take (a second version of the market's row
-- and its whole form rebuilt per stake; BENCHMARKS.md, 2026-12-02).
DROP TRIGGER markets_api_json_pool_written ON market_pools;
DROP FUNCTION markets_api_json_pool_written();

CREATE OR REPLACE FUNCTION market_api_json(m markets) RETURNS text LANGUAGE sql STABLE AS $$
    SELECT json_build_object(
        'id', m.id, 'game_id', m.game_id, 'league', g.league, 'question', m.question, 'state', m.state,
        'outcomes', json_build_array(
            json_build_object('key', 'home', 'label', g.home_abbr, 'pool', '{}'::json),
            json_build_object('key', 'away', 'label', g.away_abbr, 'pool', '{}'::json)),
        'winning_outcome', m.winning_outcome,
        'created_at', to_char(m.created_at AT TIME ZONE 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS') ||
        CASE WHEN extract(microseconds FROM m.created_at)::bigint % 1000000 = 0 THEN ''
             WHEN extract(microseconds FROM m.created_at)::bigint % 1000 = 0
                 THEN '.' || to_char(extract(microseconds FROM m.created_at)::bigint % 1000000 / 1000, 'FM000')
             ELSE '.' || to_char(extract(microseconds FROM m.created_at)::bigint % 1000000, 'FM000000') END || 'Z',
        'settled_at', CASE WHEN m.settled_at IS NULL THEN NULL ELSE to_char(m.settled_at AT TIME ZONE 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS') ||
        CASE WHEN extract(microseconds FROM m.settled_at)::bigint % 1000000 = 0 THEN ''
             WHEN extract(microseconds FROM m.settled_at)::bigint % 1000 = 0
                 THEN '.' || to_char(extract(microseconds FROM m.settled_at)::bigint % 1000000 / 1000, 'FM000')
             ELSE '.' || to_char(extract(microseconds FROM m.settled_at)::bigint % 1000000, 'FM000000') END || 'Z' END)::text
    FROM games g WHERE g.id = m.game_id
$$;

UPDATE markets SET api_json = NULL;

-- Room on each page for the rows stakes and payouts rewrite, so PostgreSQL updates them in
-- place (HOT: no new entry in every index of the table). Paying 100,000 positions rewrote
-- each row onto another page and all three of its indexes: the payout UPDATE took 870 ms
-- at the default fill, 160 ms at half (BENCHMARKS.md, 2026-12-02). The tables' pages written
-- from now on are filled to these; rows stored before stay where they are until rewritten.
ALTER TABLE positions SET (fillfactor = 50);
ALTER TABLE balances SET (fillfactor = 50);
ALTER TABLE market_pools SET (fillfactor = 50);
ALTER TABLE markets SET (fillfactor = 70);

-- A stake as one statement: the legs `stake_in_tx!` sends one by one (the market's
-- compare-and-set, the position, the stake row, the escrow's credit, the user's conditional
-- debit and the two ledger entries), in the same order (the escrow row before the user's, see
-- `lock_rank`), in one function called outside an explicit transaction. Eight round trips to
-- the server become one; the statement is its own transaction, so a refusal raised here
-- rolls every leg back. The refusals carry their own SQLSTATE for the caller, which words them
-- as the transaction path does: `TS001` the market takes no stakes (missing, not open, or its
-- game started), `TS002` the user's balance is short.
CREATE FUNCTION place_stake(
    p_market BIGINT, p_user BIGINT, p_outcome TEXT, p_token TEXT, p_amount BIGINT,
    p_now TIMESTAMPTZ, p_transfer TEXT, OUT o_stake BIGINT, OUT o_position BIGINT
) LANGUAGE plpgsql AS $$
DECLARE
    v_user TEXT := 'user:' || p_user;
    v_escrow TEXT := 'escrow:' || p_market;
BEGIN
    UPDATE markets SET stake_count = stake_count + 1 WHERE id = p_market AND state = 'open'
        AND game_id IN (SELECT id FROM games WHERE starts_at > p_now);
    IF NOT FOUND THEN
        RAISE EXCEPTION 'market % takes no stakes', p_market USING ERRCODE = 'TS001';
    END IF;
    INSERT INTO positions (market_id, user_id, outcome, token, amount, stakes, created_at, updated_at)
    VALUES (p_market, p_user, p_outcome, p_token, p_amount, 1, p_now, p_now)
    ON CONFLICT (market_id, token, outcome, user_id)
    DO UPDATE SET amount = positions.amount + excluded.amount, stakes = positions.stakes + 1, updated_at = excluded.updated_at
    RETURNING id INTO o_position;
    INSERT INTO stakes (market_id, user_id, outcome, token, amount, created_at, position_id)
    VALUES (p_market, p_user, p_outcome, p_token, p_amount, p_now, o_position)
    RETURNING id INTO o_stake;
    INSERT INTO balances (account, token, amount) VALUES (v_escrow, p_token, p_amount)
    ON CONFLICT (account, token) DO UPDATE SET amount = balances.amount + excluded.amount;
    UPDATE balances SET amount = amount - p_amount WHERE account = v_user AND token = p_token AND amount >= p_amount;
    IF NOT FOUND THEN
        RAISE EXCEPTION 'user % has under % %', p_user, p_amount, p_token USING ERRCODE = 'TS002';
    END IF;
    INSERT INTO ledger_entries (transfer_id, account, token, amount, kind, reference, created_at)
    VALUES (p_transfer, v_user, p_token, -p_amount, 'stake', 'stake:' || o_stake, p_now),
           (p_transfer, v_escrow, p_token, p_amount, 'stake', 'stake:' || o_stake, p_now);
END
$$;
