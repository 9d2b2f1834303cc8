-- League catalog: ESPN sport/league paths, seeded when empty.
CREATE TABLE leagues (
    key        TEXT PRIMARY KEY,
    name       TEXT NOT NULL,
    sport      TEXT NOT NULL,
    espn_path  TEXT NOT NULL,
    created_at TEXT NOT NULL DEFAULT (strftime('%Y-%m-%dT%H:%M:%fZ', 'now'))
);
