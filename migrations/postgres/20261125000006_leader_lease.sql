-- The leader lease (one row): the replica named by `holder` runs the singleton services until
-- `expires_at`, as judged by the database's clock, never a replica's. `epoch` grows by one each
-- time the lease changes hands (or is taken again after it lapsed); every write a singleton
-- makes checks, in its own transaction, that the lease still carries the epoch it started
-- under (fencing), so a replica that lost the lease while paused commits nothing.
CREATE TABLE leader_lease (
    name        TEXT PRIMARY KEY,
    holder      TEXT,
    epoch       BIGINT NOT NULL CHECK (epoch > 0),
    expires_at  TIMESTAMPTZ NOT NULL,
    acquired_at TIMESTAMPTZ NOT NULL
);
