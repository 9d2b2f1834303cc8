-- Each game in its API form (`Game` in the HTTP layer: the game, both teams, its market's id),
-- as JSON kept in step with the row by triggers, so a page of games is read rather than built
-- (BENCHMARKS.md, 2026-12-02). Written only when a game or its market is written. The start
-- time is written as the API writes it: RFC 3339 in UTC with `Z`, fractional seconds only when
-- there are any, in three or six digits. `a_page_shaped_by_the_store_is_the_page_serde_writes`
-- holds this form equal to serde's.
ALTER TABLE games ADD COLUMN api_json TEXT;

CREATE FUNCTION game_api_json(g games) RETURNS text LANGUAGE sql STABLE AS $$
    SELECT json_build_object(
        'id', g.id, 'league', g.league, 'external_id', g.external_id, 'name', g.name,
        'short_name', g.short_name,
        'starts_at', to_char(g.starts_at AT TIME ZONE 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS') ||
        CASE WHEN us = 0 THEN '' WHEN us % 1000 = 0 THEN '.' || to_char(us / 1000, 'FM000')
             ELSE '.' || to_char(us, 'FM000000') END || 'Z',
        'state', g.state, 'status_detail', g.status_detail, 'neutral_site', g.neutral_site,
        'home', json_build_object('abbreviation', g.home_abbr, 'name', g.home_name, 'score', g.home_score),
        'away', json_build_object('abbreviation', g.away_abbr, 'name', g.away_name, 'score', g.away_score),
        'market_id', (SELECT m.id FROM markets m WHERE m.game_id = g.id))::text
    FROM (SELECT (extract(microseconds FROM g.starts_at)::bigint % 1000000) AS us) t
$$;

CREATE FUNCTION games_api_json_written() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    NEW.api_json := game_api_json(NEW);
    RETURN NEW;
END
$$;

CREATE TRIGGER games_api_json_written BEFORE UPDATE ON games
    FOR EACH ROW EXECUTE FUNCTION games_api_json_written();

-- A new game gets its form by an update right after its insert: a BEFORE INSERT trigger would
-- also build one for every `INSERT ... ON CONFLICT DO NOTHING` of a game already stored, that
-- is for every game of every board pass.
CREATE FUNCTION games_api_json_inserted() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    UPDATE games SET api_json = NULL WHERE id = NEW.id;
    RETURN NULL;
END
$$;

CREATE TRIGGER games_api_json_inserted AFTER INSERT ON games
    FOR EACH ROW EXECUTE FUNCTION games_api_json_inserted();

-- A market's id is part of its game's form: touching the game rewrites it.
CREATE FUNCTION games_api_json_market_written() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    UPDATE games SET api_json = NULL WHERE id = COALESCE(NEW.game_id, OLD.game_id);
    RETURN NULL;
END
$$;

CREATE TRIGGER games_api_json_market_written AFTER INSERT OR DELETE ON markets
    FOR EACH ROW EXECUTE FUNCTION games_api_json_market_written();

UPDATE games SET api_json = NULL;
