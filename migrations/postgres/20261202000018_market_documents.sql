-- Each market in its API form (`Market` in the HTTP layer: the market, its game's league and
-- teams, each outcome's pool per token) as JSON kept in step by triggers, so a page of
-- markets is read rather than built (as games' `api_json`, migration 16). Rewritten when the
-- market, its game's league or teams, or one of its pools is written: a stake rewrites its
-- market's form in its own transaction (the stake holds the market's row already).
-- `a_page_shaped_by_the_store_is_the_page_serde_writes` holds this form equal to serde's.
ALTER TABLE markets ADD COLUMN api_json TEXT;

CREATE FUNCTION market_api_json(m markets) RETURNS text LANGUAGE sql STABLE AS $$
    SELECT json_build_object(
        'id', m.id, 'game_id', m.game_id, 'league', g.league, 'question', m.question, 'state', m.state,
        'outcomes', json_build_array(
            json_build_object('key', 'home', 'label', g.home_abbr, 'pool', (SELECT COALESCE(json_object_agg(p.token, p.amount::text ORDER BY p.token), '{}'::json)
                 FROM market_pools p WHERE p.market_id = m.id AND p.outcome = 'home')),
            json_build_object('key', 'away', 'label', g.away_abbr, 'pool', (SELECT COALESCE(json_object_agg(p.token, p.amount::text ORDER BY p.token), '{}'::json)
                 FROM market_pools p WHERE p.market_id = m.id AND p.outcome = 'away'))),
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

CREATE FUNCTION markets_api_json_written() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    NEW.api_json := market_api_json(NEW);
    RETURN NEW;
END
$$;

-- Every column of the API form, and `api_json` itself, which the triggers below set to have
-- it rewritten (not `stake_count` nor `paid_at`).
CREATE TRIGGER markets_api_json_written
    BEFORE UPDATE OF game_id, question, state, winning_outcome, created_at, settled_at, api_json ON markets
    FOR EACH ROW EXECUTE FUNCTION markets_api_json_written();

-- A new market gets its form by an update right after its insert (as games, migration 16: not
-- for every `INSERT ... ON CONFLICT DO NOTHING` of a board pass).
CREATE FUNCTION markets_api_json_inserted() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    UPDATE markets SET api_json = NULL WHERE id = NEW.id;
    RETURN NULL;
END
$$;

CREATE TRIGGER markets_api_json_inserted AFTER INSERT ON markets
    FOR EACH ROW EXECUTE FUNCTION markets_api_json_inserted();

CREATE FUNCTION markets_api_json_game_written() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    UPDATE markets SET api_json = NULL WHERE game_id = NEW.id;
    RETURN NULL;
END
$$;

CREATE TRIGGER markets_api_json_game_written AFTER UPDATE OF league, home_abbr, away_abbr ON games
    FOR EACH ROW EXECUTE FUNCTION markets_api_json_game_written();

CREATE FUNCTION markets_api_json_pool_written() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    UPDATE markets SET api_json = NULL WHERE id = NEW.market_id;
    RETURN NULL;
END
$$;

CREATE TRIGGER markets_api_json_pool_written AFTER INSERT OR UPDATE OF amount ON market_pools
    FOR EACH ROW EXECUTE FUNCTION markets_api_json_pool_written();

UPDATE markets SET api_json = NULL;
