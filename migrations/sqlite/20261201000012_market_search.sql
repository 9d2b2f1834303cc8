-- Market search. Each market's searchable document (question, league, both teams' names and
-- abbreviations, the game's name and short name, the start date) is written in the same
-- transaction as its game and market; an FTS5 index over its terms is kept in step by triggers.
CREATE TABLE market_search (
    market_id  INTEGER PRIMARY KEY REFERENCES markets (id),
    document   TEXT NOT NULL,
    -- The document's words as the keyword index sees them (lower case, stop words dropped):
    -- built by tipoff, so both backends index exactly the same terms.
    terms      TEXT NOT NULL,
    -- SHA-256 of the document (hex): an embedding made from another hash is stale.
    doc_hash   TEXT NOT NULL,
    updated_at TEXT NOT NULL
);
CREATE VIRTUAL TABLE market_fts USING fts5 (
    terms,
    content = 'market_search',
    content_rowid = 'market_id',
    tokenize = 'unicode61 remove_diacritics 2',
    -- Prefix queries of three and four letters (`bos*`, `york*`) read a prefix index instead
    -- of merging every term that starts so.
    prefix = '3 4'
);
CREATE TRIGGER market_search_inserted AFTER INSERT ON market_search BEGIN
    INSERT INTO market_fts (rowid, terms) VALUES (new.market_id, new.terms);
END;
CREATE TRIGGER market_search_updated AFTER UPDATE ON market_search BEGIN
    INSERT INTO market_fts (market_fts, rowid, terms) VALUES ('delete', old.market_id, old.terms);
    INSERT INTO market_fts (rowid, terms) VALUES (new.market_id, new.terms);
END;
CREATE TRIGGER market_search_deleted AFTER DELETE ON market_search BEGIN
    INSERT INTO market_fts (market_fts, rowid, terms) VALUES ('delete', old.market_id, old.terms);
END;

-- Embedding vectors per (market, model), little-endian f32, with their dimension and the hash
-- of the document they were made from. Written by the `backfill` service, one batch per
-- transaction.
CREATE TABLE market_embeddings (
    market_id   INTEGER NOT NULL REFERENCES markets (id),
    model       TEXT NOT NULL,
    dim         INTEGER NOT NULL,
    doc_hash    TEXT NOT NULL,
    vector      BLOB NOT NULL,
    embedded_at TEXT NOT NULL,
    PRIMARY KEY (market_id, model)
);
CREATE INDEX market_embeddings_by_time ON market_embeddings (model, embedded_at);

-- Full re-embeds (`POST /admin/embeddings/reindex`): a job re-embeds every market whose vector
-- for its model is older than the job (`created_at`), so it resumes after a crash.
CREATE TABLE embedding_jobs (
    id           INTEGER PRIMARY KEY AUTOINCREMENT,
    model        TEXT NOT NULL,
    state        TEXT NOT NULL DEFAULT 'queued',
    total        INTEGER NOT NULL DEFAULT 0,
    done         INTEGER NOT NULL DEFAULT 0,
    error        TEXT,
    created_at   TEXT NOT NULL,
    started_at   TEXT,
    updated_at   TEXT NOT NULL,
    finished_at  TEXT
);
CREATE INDEX embedding_jobs_by_state ON embedding_jobs (state, id);
