-- Every filter of the games list has an index in its sort order (starts_at, id): the state
-- filter (`state=live`) used to walk the whole start-time index to find a page.
CREATE INDEX games_by_state_start ON games (state, starts_at, id);
CREATE INDEX games_by_league_state_start ON games (league, state, starts_at, id);
