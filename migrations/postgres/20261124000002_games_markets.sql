-- Games from ESPN scoreboards, keyed by (league, ESPN event id), and one market per game.
CREATE TABLE games (
    id            BIGSERIAL PRIMARY KEY,
    league        TEXT NOT NULL REFERENCES leagues (key),
    external_id   TEXT NOT NULL,
    name          TEXT NOT NULL,
    short_name    TEXT NOT NULL,
    starts_at     TIMESTAMPTZ NOT NULL,
    state         TEXT NOT NULL,
    status_detail TEXT NOT NULL DEFAULT '',
    neutral_site  BOOLEAN NOT NULL DEFAULT FALSE,
    home_abbr     TEXT NOT NULL,
    home_name     TEXT NOT NULL,
    home_score    BIGINT,
    away_abbr     TEXT NOT NULL,
    away_name     TEXT NOT NULL,
    away_score    BIGINT,
    updated_at    TIMESTAMPTZ NOT NULL,
    UNIQUE (league, external_id)
);
CREATE INDEX games_by_start ON games (starts_at, id);
CREATE INDEX games_by_league_start ON games (league, starts_at, id);

CREATE TABLE markets (
    id              BIGSERIAL PRIMARY KEY,
    game_id         BIGINT NOT NULL UNIQUE REFERENCES games (id),
    question        TEXT NOT NULL,
    state           TEXT NOT NULL DEFAULT 'open',
    home_pool       BIGINT NOT NULL DEFAULT 0,
    away_pool       BIGINT NOT NULL DEFAULT 0,
    winning_outcome TEXT,
    created_at      TIMESTAMPTZ NOT NULL,
    settled_at      TIMESTAMPTZ
);
CREATE INDEX markets_by_state ON markets (state, id);
