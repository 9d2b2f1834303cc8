-- The leader lease, as on PostgreSQL, so both trees describe the same schema. On SQLite the one
-- process that holds the database file's lock always leads (epoch 1) and never reads this row.
CREATE TABLE leader_lease (
    name        TEXT PRIMARY KEY,
    holder      TEXT,
    epoch       INTEGER NOT NULL CHECK (epoch > 0),
    expires_at  TEXT NOT NULL,
    acquired_at TEXT NOT NULL
);
