-- The ESPN scoreboard date (ESPN's own calendar day) a game was last read from: the score loop
-- refetches exactly that board while the game is live.
ALTER TABLE games ADD COLUMN board_date DATE;

-- Manual imports: one job per request, processed by its league's poller.
CREATE TABLE import_jobs (
    id             BIGSERIAL PRIMARY KEY,
    league         TEXT NOT NULL REFERENCES leagues (key),
    date_from      DATE NOT NULL,
    date_to        DATE NOT NULL,
    state          TEXT NOT NULL DEFAULT 'queued',
    dates_total    BIGINT NOT NULL,
    dates_done     BIGINT NOT NULL DEFAULT 0,
    dates_failed   BIGINT NOT NULL DEFAULT 0,
    games_upserted BIGINT NOT NULL DEFAULT 0,
    error          TEXT,
    created_at     TIMESTAMPTZ NOT NULL,
    started_at     TIMESTAMPTZ,
    updated_at     TIMESTAMPTZ NOT NULL,
    finished_at    TIMESTAMPTZ
);
CREATE INDEX import_jobs_by_league_state ON import_jobs (league, state, id);

-- One row per date of a job: a date's games and its row commit together, so progress is exact
-- after a crash and a resumed job fetches only what is still pending.
CREATE TABLE import_job_dates (
    job_id BIGINT NOT NULL REFERENCES import_jobs (id) ON DELETE CASCADE,
    date   DATE NOT NULL,
    state  TEXT NOT NULL DEFAULT 'pending',
    games  BIGINT NOT NULL DEFAULT 0,
    error  TEXT,
    PRIMARY KEY (job_id, date)
);
