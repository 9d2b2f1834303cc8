-- The ESPN scoreboard date (ESPN's own calendar day) a game was last read from: the score loop
-- refetches exactly that board while the game is live.
ALTER TABLE games ADD COLUMN board_date TEXT;

-- Manual imports: one job per request, processed by its league's poller.
CREATE TABLE import_jobs (
    id             INTEGER PRIMARY KEY AUTOINCREMENT,
    league         TEXT NOT NULL REFERENCES leagues (key),
    date_from      TEXT NOT NULL,
    date_to        TEXT NOT NULL,
    state          TEXT NOT NULL DEFAULT 'queued',
    dates_total    INTEGER NOT NULL,
    dates_done     INTEGER NOT NULL DEFAULT 0,
    dates_failed   INTEGER NOT NULL DEFAULT 0,
    games_upserted INTEGER NOT NULL DEFAULT 0,
    error          TEXT,
    created_at     TEXT NOT NULL,
    started_at     TEXT,
    updated_at     TEXT NOT NULL,
    finished_at    TEXT
);
CREATE INDEX import_jobs_by_league_state ON import_jobs (league, state, id);

-- One row per date of a job: a date's games and its row commit together, so progress is exact
-- after a crash and a resumed job fetches only what is still pending.
CREATE TABLE import_job_dates (
    job_id INTEGER NOT NULL REFERENCES import_jobs (id) ON DELETE CASCADE,
    date   TEXT NOT NULL,
    state  TEXT NOT NULL DEFAULT 'pending',
    games  INTEGER NOT NULL DEFAULT 0,
    error  TEXT,
    PRIMARY KEY (job_id, date)
);
