-- Each market in its API form (`Market` in the HTTP layer: the market, its game's league and
-- teams, each outcome's pool per token) as JSON kept in step by triggers, so a page of
-- markets is read rather than built (as games' `api_json`, migration 16). Rewritten when the
-- market, its game's league or teams, or one of its pools is written: a stake rewrites its
-- market's form in its own transaction. The form is defined once, by the view; the triggers
-- copy it. `a_page_shaped_by_the_store_is_the_page_serde_writes` holds it equal to serde's.
ALTER TABLE markets ADD COLUMN api_json TEXT;

CREATE VIEW market_api_forms AS SELECT m.id, json_object(
        'id', m.id, 'game_id', m.game_id, 'league', g.league, 'question', m.question, 'state', m.state,
        'outcomes', json_array(
            json_object('key', 'home', 'label', g.home_abbr, 'pool', json((SELECT json_group_object(token, CAST(amount AS TEXT)) FROM (SELECT token, amount FROM market_pools
            WHERE market_id = m.id AND outcome = 'home' ORDER BY token)))),
            json_object('key', 'away', 'label', g.away_abbr, 'pool', json((SELECT json_group_object(token, CAST(amount AS TEXT)) FROM (SELECT token, amount FROM market_pools
            WHERE market_id = m.id AND outcome = 'away' ORDER BY token))))),
        'winning_outcome', m.winning_outcome,
        'created_at', CASE WHEN substr(m.created_at, -6) = '+00:00' THEN substr(m.created_at, 1, length(m.created_at) - 6) || 'Z' ELSE m.created_at END,
        'settled_at', CASE WHEN m.settled_at IS NULL THEN NULL ELSE CASE WHEN substr(m.settled_at, -6) = '+00:00' THEN substr(m.settled_at, 1, length(m.settled_at) - 6) || 'Z' ELSE m.settled_at END END) AS api_json
FROM markets m JOIN games g ON g.id = m.game_id;

CREATE TRIGGER markets_api_json_inserted AFTER INSERT ON markets BEGIN
    UPDATE markets SET api_json = (SELECT f.api_json FROM market_api_forms f WHERE f.id = new.id) WHERE id = new.id;
END;

-- Every column of the API form (not `stake_count`, `paid_at` nor `api_json`: no recursion).
CREATE TRIGGER markets_api_json_updated AFTER UPDATE OF game_id, question, state, winning_outcome, created_at, settled_at ON markets BEGIN
    UPDATE markets SET api_json = (SELECT f.api_json FROM market_api_forms f WHERE f.id = new.id) WHERE id = new.id;
END;

CREATE TRIGGER markets_api_json_game_updated AFTER UPDATE OF league, home_abbr, away_abbr ON games BEGIN
    UPDATE markets SET api_json = (SELECT f.api_json FROM market_api_forms f WHERE f.id = markets.id) WHERE game_id = new.id;
END;

CREATE TRIGGER markets_api_json_pool_inserted AFTER INSERT ON market_pools BEGIN
    UPDATE markets SET api_json = (SELECT f.api_json FROM market_api_forms f WHERE f.id = new.market_id) WHERE id = new.market_id;
END;

CREATE TRIGGER markets_api_json_pool_updated AFTER UPDATE OF amount ON market_pools BEGIN
    UPDATE markets SET api_json = (SELECT f.api_json FROM market_api_forms f WHERE f.id = new.market_id) WHERE id = new.market_id;
END;

UPDATE markets SET api_json = (SELECT f.api_json FROM market_api_forms f WHERE f.id = markets.id);
