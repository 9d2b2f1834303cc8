-- Market search. Each market's searchable document (question, league, both teams' names and
-- abbreviations, the game's name and short name, the start date) is written in the same
-- transaction as its game and market; its full-text vector is a generated column with a GIN
-- index. The 'simple' configuration (no stemming, no stop words) matches SQLite's FTS5.
CREATE TABLE market_search (
    market_id  BIGINT PRIMARY KEY REFERENCES markets (id),
    document   TEXT NOT NULL,
    -- The document's words as the keyword index sees them (lower case, stop words dropped):
    -- built by tipoff, so both backends index exactly the same terms.
    terms      TEXT NOT NULL,
    -- SHA-256 of the document (hex): an embedding made from another hash is stale.
    doc_hash   TEXT NOT NULL,
    updated_at TIMESTAMPTZ NOT NULL,
    tsv        TSVECTOR GENERATED ALWAYS AS (to_tsvector('simple', terms)) STORED
);
CREATE INDEX market_search_tsv ON market_search USING GIN (tsv);

-- Embedding vectors per (market, model), little-endian f32, with their dimension and the hash
-- of the document they were made from. Written by the `backfill` service, one batch per
-- transaction.
CREATE TABLE market_embeddings (
    market_id   BIGINT NOT NULL REFERENCES markets (id),
    model       TEXT NOT NULL,
    dim         INTEGER NOT NULL,
    doc_hash    TEXT NOT NULL,
    vector      BYTEA NOT NULL,
    embedded_at TIMESTAMPTZ NOT NULL,
    PRIMARY KEY (market_id, model)
);
CREATE INDEX market_embeddings_by_time ON market_embeddings (model, embedded_at);

-- Full re-embeds (`POST /admin/embeddings/reindex`): a job re-embeds every market whose vector
-- for its model is older than the job (`created_at`), so it resumes after a crash.
CREATE TABLE embedding_jobs (
    id           BIGSERIAL PRIMARY KEY,
    model        TEXT NOT NULL,
    state        TEXT NOT NULL DEFAULT 'queued',
    total        BIGINT NOT NULL DEFAULT 0,
    done         BIGINT NOT NULL DEFAULT 0,
    error        TEXT,
    created_at   TIMESTAMPTZ NOT NULL,
    started_at   TIMESTAMPTZ,
    updated_at   TIMESTAMPTZ NOT NULL,
    finished_at  TIMESTAMPTZ
);
CREATE INDEX embedding_jobs_by_state ON embedding_jobs (state, id);

-- Every market whose terms match `query`, through the GIN index. The planner's estimate for a
-- prefix query is a fixed guess, so left to itself it may read every row backwards looking for
-- a word that matches nothing; keyword search asks this when the newest markets did not fill
-- its page (see `keyword_pass` in actors/src/store/search.rs).
CREATE FUNCTION tipoff_market_hits(query tsquery)
RETURNS TABLE (market_id BIGINT)
LANGUAGE sql STABLE
SET enable_seqscan = off
SET enable_indexscan = off
AS $$ SELECT s.market_id FROM market_search s WHERE s.tsv @@ query $$;
