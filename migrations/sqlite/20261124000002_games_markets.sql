-- Games from ESPN scoreboards, keyed by (league, ESPN event id), and one market per game.
CREATE TABLE games (
    id            INTEGER PRIMARY KEY AUTOINCREMENT,
    league        TEXT NOT NULL REFERENCES leagues (key),
    external_id   TEXT NOT NULL,
    name          TEXT NOT NULL,
    short_name    TEXT NOT NULL,
    starts_at     TEXT NOT NULL,
    state         TEXT NOT NULL,
    status_detail TEXT NOT NULL DEFAULT '',
    neutral_site  BOOLEAN NOT NULL DEFAULT FALSE,
    home_abbr     TEXT NOT NULL,
    home_name     TEXT NOT NULL,
    home_score    INTEGER,
    away_abbr     TEXT NOT NULL,
    away_name     TEXT NOT NULL,
    away_score    INTEGER,
    updated_at    TEXT NOT NULL,
    UNIQUE (league, external_id)
);
CREATE INDEX games_by_start ON games (starts_at, id);
CREATE INDEX games_by_league_start ON games (league, starts_at, id);

CREATE TABLE markets (
    id              INTEGER PRIMARY KEY AUTOINCREMENT,
    game_id         INTEGER NOT NULL UNIQUE REFERENCES games (id),
    question        TEXT NOT NULL,
    state           TEXT NOT NULL DEFAULT 'open',
    home_pool       INTEGER NOT NULL DEFAULT 0,
    away_pool       INTEGER NOT NULL DEFAULT 0,
    winning_outcome TEXT,
    created_at      TEXT NOT NULL,
    settled_at      TEXT
);
CREATE INDEX markets_by_state ON markets (state, id);
