-- Each game in its API form (`Game` in the HTTP layer: the game, both teams, its market's id),
-- as JSON kept in step with the row by triggers, so a page of games is read rather than built:
-- building fifteen columns into JSON on every request was most of an uncached page's cost
-- (BENCHMARKS.md, 2026-12-02). Written only when a game or its market is written. The form is
-- defined once, by the view; the triggers copy it.
-- `a_page_shaped_by_the_store_is_the_page_serde_writes` holds it equal to serde's.
ALTER TABLE games ADD COLUMN api_json TEXT;

CREATE VIEW game_api_forms AS SELECT g.id, json_object(
        'id', g.id, 'league', g.league, 'external_id', g.external_id, 'name', g.name,
        'short_name', g.short_name, 'starts_at', CASE WHEN substr(g.starts_at, -6) = '+00:00' THEN substr(g.starts_at, 1, length(g.starts_at) - 6) || 'Z' ELSE g.starts_at END,
        'state', g.state, 'status_detail', g.status_detail,
        'neutral_site', json(CASE WHEN g.neutral_site THEN 'true' ELSE 'false' END),
        'home', json_object('abbreviation', g.home_abbr, 'name', g.home_name, 'score', g.home_score),
        'away', json_object('abbreviation', g.away_abbr, 'name', g.away_name, 'score', g.away_score),
        'market_id', (SELECT m.id FROM markets m WHERE m.game_id = g.id)) AS api_json
FROM games g;

CREATE TRIGGER games_api_json_inserted AFTER INSERT ON games BEGIN
    UPDATE games SET api_json = (SELECT f.api_json FROM game_api_forms f WHERE f.id = new.id) WHERE id = new.id;
END;

-- Every column of the API form (the trigger's own write, `api_json`, is not one: no recursion).
CREATE TRIGGER games_api_json_updated AFTER UPDATE OF league, external_id, name, short_name, starts_at, state, status_detail, neutral_site, home_abbr, home_name, home_score, away_abbr, away_name, away_score ON games BEGIN
    UPDATE games SET api_json = (SELECT f.api_json FROM game_api_forms f WHERE f.id = new.id) WHERE id = new.id;
END;

CREATE TRIGGER games_api_json_market_inserted AFTER INSERT ON markets BEGIN
    UPDATE games SET api_json = (SELECT f.api_json FROM game_api_forms f WHERE f.id = new.game_id) WHERE id = new.game_id;
END;

CREATE TRIGGER games_api_json_market_deleted AFTER DELETE ON markets BEGIN
    UPDATE games SET api_json = (SELECT f.api_json FROM game_api_forms f WHERE f.id = old.game_id) WHERE id = old.game_id;
END;

UPDATE games SET api_json = (SELECT f.api_json FROM game_api_forms f WHERE f.id = games.id);
