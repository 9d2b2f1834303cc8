-- Webhooks that outlive a receiver outage: a row per receiver URL while it is down (absent
-- while it is up). While down, one due event probes it on the backoff schedule
-- (`next_probe_at`) and the other events are not charged an attempt; a probe that succeeds
-- deletes the row and delivery resumes in order. Shared by every replica and kept across restarts.
CREATE TABLE webhook_health (
    url           TEXT PRIMARY KEY,
    failures      INTEGER NOT NULL,
    down_since    TEXT NOT NULL,
    next_probe_at TEXT NOT NULL,
    last_error    TEXT NOT NULL,
    updated_at    TEXT NOT NULL
);
