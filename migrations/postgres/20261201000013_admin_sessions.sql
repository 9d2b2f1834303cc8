-- Dashboard sessions: the cookie carries a random session id; only its SHA-256 is stored. A
-- session belongs to the admin token it was opened with (`token_key`, a digest of it), so
-- changing the token revokes every session; logout deletes the row. Shared by every replica.
CREATE TABLE admin_sessions (
    id_hash    TEXT PRIMARY KEY,
    token_key  TEXT NOT NULL,
    created_at TIMESTAMPTZ NOT NULL,
    expires_at TIMESTAMPTZ NOT NULL
);
CREATE INDEX admin_sessions_expiry ON admin_sessions (expires_at);
