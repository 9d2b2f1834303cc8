-- Stakes off the market forms. A stake no longer rewrites its market's stored form: the form
-- (migration 18) keeps each outcome's pool as `{}`, and a page of markets splices the pools in
-- from `market_pools` as it reads them (`MARKET_JSON`). (On PostgreSQL this migration also
-- makes a stake one statement; SQLite's stakes already run back to back on one connection.)
DROP TRIGGER markets_api_json_pool_inserted;
DROP TRIGGER markets_api_json_pool_updated;

DROP VIEW market_api_forms;
CREATE VIEW market_api_forms AS SELECT m.id, json_object(
        'id', m.id, 'game_id', m.game_id, 'league', g.league, 'question', m.question, 'state', m.state,
        'outcomes', json_array(
            json_object('key', 'home', 'label', g.home_abbr, 'pool', json_object()),
            json_object('key', 'away', 'label', g.away_abbr, 'pool', json_object())),
        'winning_outcome', m.winning_outcome,
        'created_at', CASE WHEN substr(m.created_at, -6) = '+00:00' THEN substr(m.created_at, 1, length(m.created_at) - 6) || 'Z' ELSE m.created_at END,
        'settled_at', CASE WHEN m.settled_at IS NULL THEN NULL ELSE CASE WHEN substr(m.settled_at, -6) = '+00:00' THEN substr(m.settled_at, 1, length(m.settled_at) - 6) || 'Z' ELSE m.settled_at END END) AS api_json
FROM markets m JOIN games g ON g.id = m.game_id;

UPDATE markets SET api_json = (SELECT f.api_json FROM market_api_forms f WHERE f.id = markets.id);
