-- League catalog: ESPN sport/league paths, seeded when empty.
CREATE TABLE leagues (
    key        TEXT PRIMARY KEY,
    name       TEXT NOT NULL,
    sport      TEXT NOT NULL,
    espn_path  TEXT NOT NULL,
    created_at TIMESTAMPTZ NOT NULL DEFAULT now()
);
