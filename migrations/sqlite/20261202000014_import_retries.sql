-- A date that fails is given further passes, with backoff, before it counts as failed: how
-- many passes it has had, and when the next one is due (NULL: due now).
ALTER TABLE import_job_dates ADD COLUMN attempts INTEGER NOT NULL DEFAULT 0;
ALTER TABLE import_job_dates ADD COLUMN next_attempt_at TEXT;
