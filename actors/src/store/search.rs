//! Market search storage: each market's searchable document and its keyword index (SQLite FTS5,
//! PostgreSQL full text), the embedding vectors per (market, model) the `backfill` service
//! writes, and the re-embed jobs.
//!
//! The document is written by [`index_markets!`] inside the transaction that upserts its game
//! and market, so a market is findable the moment it exists. tipoff builds the indexed terms
//! itself ([`terms`]): both backends index exactly the same words, and user input never
//! reaches an FTS query parser as syntax ([`KeywordQuery`] quotes every word).

use chrono::{DateTime, Utc};
use serde::Serialize;
use sha2::{Digest, Sha256};

use super::games::MARKET_COLUMNS;
use super::{Backend, MarketRow, Store, StoreError};

/// Words left out of the keyword index and of queries: they are in (nearly) every document.
const STOP_WORDS: &[&str] = &[
    "a", "an", "and", "at", "in", "of", "on", "the", "v", "vs", "who", "wins",
];

/// The newest markets PostgreSQL keyword search reads first, newest first, before it asks the
/// GIN index for every match (see `keyword_pass`).
const PG_WINDOW: i64 = 5000;

/// Longest query accepted, in characters.
pub const MAX_QUERY_CHARS: usize = 200;
/// Most words a query may have.
pub const MAX_QUERY_WORDS: usize = 32;

/// A market's searchable document: the question, the league, both teams' names and
/// abbreviations, the game's name and short name, and the start date.
#[allow(clippy::too_many_arguments)]
pub fn search_document(
    question: &str,
    league: &str,
    away_name: &str,
    away_abbr: &str,
    home_name: &str,
    home_abbr: &str,
    name: &str,
    short_name: &str,
    starts_at: DateTime<Utc>,
) -> String {
    format!(
        "{question} {} · {away_name} ({away_abbr}) at {home_name} ({home_abbr}) · {name} · {short_name} · {}",
        league.to_ascii_uppercase(),
        starts_at.format("%Y-%m-%d"),
    )
}

/// The document's SHA-256, hex: an embedding made from another hash is stale.
pub fn document_hash(document: &str) -> String {
    hex::encode(Sha256::digest(document.as_bytes()))
}

/// The words of `text` as the keyword index sees them: split at anything that is not a letter
/// or a digit, lower case, stop words dropped.
pub fn words(text: &str) -> Vec<String> {
    text.split(|c: char| !c.is_alphanumeric())
        .filter(|w| !w.is_empty())
        .map(str::to_lowercase)
        .filter(|w| !STOP_WORDS.contains(&w.as_str()))
        .collect()
}

/// The indexed terms of a document: its [`words`], each once, space separated.
pub fn terms(document: &str) -> String {
    let mut seen = Vec::new();
    for w in words(document) {
        if !seen.contains(&w) {
            seen.push(w);
        }
    }
    seen.join(" ")
}

/// A parsed keyword query: the user's words, safe to hand to either full-text engine.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeywordQuery {
    words: Vec<String>,
}

impl KeywordQuery {
    /// Parses `q`, or says what is wrong with it (too long). A query with no letters or
    /// digits has no words and matches nothing; past [`MAX_QUERY_WORDS`] distinct words the
    /// rest are left out.
    pub fn parse(q: &str) -> Result<KeywordQuery, String> {
        let q = q.trim();
        let chars = q.chars().count();
        if chars > MAX_QUERY_CHARS {
            return Err(format!(
                "q is {chars} characters long; at most {MAX_QUERY_CHARS} are allowed"
            ));
        }
        let mut words = Vec::new();
        for w in q
            .split(|c: char| !c.is_alphanumeric())
            .filter(|w| !w.is_empty())
            .map(str::to_lowercase)
        {
            if words.len() == MAX_QUERY_WORDS {
                break;
            }
            if !words.contains(&w) {
                words.push(w);
            }
        }
        let meaningful: Vec<String> = words
            .iter()
            .filter(|w| !STOP_WORDS.contains(&w.as_str()))
            .cloned()
            .collect();
        // A query of stop words only still searches for them (nothing will match, which is
        // the honest answer), rather than being refused.
        Ok(KeywordQuery {
            words: if meaningful.is_empty() {
                words
            } else {
                meaningful
            },
        })
    }

    pub fn words(&self) -> &[String] {
        &self.words
    }

    /// FTS5 syntax: every word quoted (so nothing in it is an operator), a prefix match for
    /// words of three letters or more; all words (`every`) or any of them.
    fn fts5(&self, every: bool) -> String {
        self.words
            .iter()
            .map(|w| {
                let star = if w.chars().count() >= 3 { "*" } else { "" };
                format!("\"{}\"{star}", w.replace('"', ""))
            })
            .collect::<Vec<_>>()
            .join(if every { " " } else { " OR " })
    }

    /// `to_tsquery` syntax: each word is letters and digits only, so it cannot be an operator.
    fn tsquery(&self, every: bool) -> String {
        self.words
            .iter()
            .map(|w| {
                let star = if w.chars().count() >= 3 { ":*" } else { "" };
                format!("'{w}'{star}")
            })
            .collect::<Vec<_>>()
            .join(if every { " & " } else { " | " })
    }
}

/// Writes markets' search documents (`&[(market id, document)]`) inside the open transaction
/// `$tx`, each only when it changed. Expands inside each backend's branch; `?` propagates.
///
/// One statement per 500 documents: FTS5 flushes its pending terms to a new segment at every
/// statement that writes it, so one statement per document made a segment per document and
/// merges without end (a million markets' index at ~200 documents a second; BENCHMARKS.md).
macro_rules! index_markets {
    ($tx:ident, $documents:expr, $now:expr) => {{
        let documents: &[(i64, String)] = $documents;
        let now: chrono::DateTime<chrono::Utc> = $now;
        for chunk in documents.chunks(500) {
            let mut q = sqlx::QueryBuilder::new(
                "INSERT INTO market_search (market_id, document, terms, doc_hash, updated_at) ",
            );
            q.push_values(chunk, |mut row, (market_id, document)| {
                row.push_bind(*market_id)
                    .push_bind(document.clone())
                    .push_bind($crate::store::search::terms(document))
                    .push_bind($crate::store::search::document_hash(document))
                    .push_bind(now);
            });
            q.push(
                " ON CONFLICT (market_id) DO UPDATE SET document = excluded.document, terms = excluded.terms, \
                 doc_hash = excluded.doc_hash, updated_at = excluded.updated_at \
                 WHERE market_search.doc_hash <> excluded.doc_hash",
            );
            q.build().execute(&mut *$tx).await?;
        }
    }};
}

/// A market whose vector for the configured model is missing or stale.
#[derive(Debug, Clone, PartialEq, Eq, sqlx::FromRow)]
pub struct BacklogItem {
    pub market_id: i64,
    /// The market's league (the vector index filters by it).
    pub league: String,
    pub document: String,
    pub doc_hash: String,
}

/// A stored vector, as the in-memory index loads it.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct StoredVector {
    pub market_id: i64,
    pub league: String,
    pub dim: i32,
    pub vector: Vec<u8>,
    pub embedded_at: DateTime<Utc>,
}

impl StoredVector {
    /// The vector's components (little-endian f32).
    pub fn components(&self) -> Vec<f32> {
        decode_vector(&self.vector)
    }
}

/// One vector to write.
#[derive(Debug, Clone)]
pub struct NewVector {
    pub market_id: i64,
    pub doc_hash: String,
    pub vector: Vec<f32>,
}

pub fn encode_vector(v: &[f32]) -> Vec<u8> {
    v.iter().flat_map(|x| x.to_le_bytes()).collect()
}

pub fn decode_vector(bytes: &[u8]) -> Vec<f32> {
    bytes
        .chunks_exact(4)
        .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
        .collect()
}

/// A full re-embed of every market for one model (`POST /admin/embeddings/reindex`).
#[derive(Debug, Clone, Serialize, sqlx::FromRow, PartialEq, schemars::JsonSchema)]
pub struct EmbeddingJob {
    pub id: i64,
    pub model: String,
    /// `queued` → `running` → `succeeded` (or `canceled` when another model is configured).
    pub state: String,
    /// Markets to embed when the job started.
    pub total: i64,
    /// Markets embedded since the job was created.
    pub done: i64,
    pub error: Option<String>,
    pub created_at: DateTime<Utc>,
    pub started_at: Option<DateTime<Utc>>,
    pub updated_at: DateTime<Utc>,
    pub finished_at: Option<DateTime<Utc>>,
}

const JOB_COLUMNS: &str =
    "id, model, state, total, done, error, created_at, started_at, updated_at, finished_at";

/// Before any embedding: a re-embed cutoff that excludes nothing.
fn epoch() -> DateTime<Utc> {
    DateTime::from_timestamp(0, 0).expect("the epoch")
}

impl Store {
    /// Writes the search document of every market that has none (markets stored before search
    /// existed); answers how many. Runs after the migrations, in slices of 1,000 markets by
    /// id: each slice starts after the last one's highest id, so the work grows with the
    /// markets (starting each slice from the first market made a million markets' index
    /// quadratic, every slice walking past all the markets the slices before it had indexed).
    pub(crate) async fn index_unindexed_markets(&self) -> Result<u64, StoreError> {
        #[derive(sqlx::FromRow)]
        struct Row {
            id: i64,
            question: String,
            league: String,
            away_name: String,
            away_abbr: String,
            home_name: String,
            home_abbr: String,
            name: String,
            short_name: String,
            starts_at: DateTime<Utc>,
        }
        let sql = "SELECT m.id, m.question, g.league, g.away_name, g.away_abbr, g.home_name, g.home_abbr, g.name, g.short_name, g.starts_at \
                   FROM markets m JOIN games g ON g.id = m.game_id \
                   WHERE m.id > $1 AND NOT EXISTS (SELECT 1 FROM market_search s WHERE s.market_id = m.id) ORDER BY m.id LIMIT 1000";
        let mut indexed = 0u64;
        let mut after = 0i64;
        loop {
            let _writer = self.writer().await?;
            let n = on_pool!(self, pool => {
                let mut tx = pool.begin().await?;
                let rows: Vec<Row> = sqlx::query_as(sql).bind(after).fetch_all(&mut *tx).await?;
                after = rows.last().map_or(after, |r| r.id);
                let documents: Vec<(i64, String)> = rows
                    .iter()
                    .map(|r| (r.id, search_document(&r.question, &r.league, &r.away_name, &r.away_abbr, &r.home_name, &r.home_abbr, &r.name, &r.short_name, r.starts_at)))
                    .collect();
                index_markets!(tx, &documents, Utc::now());
                tx.commit().await?;
                rows.len()
            });
            indexed += n as u64;
            if n < 1000 {
                break;
            }
        }
        if indexed > 0 {
            tracing::info!(
                markets = indexed,
                "search documents written for markets stored before search existed"
            );
        }
        Ok(indexed)
    }

    /// Markets matching `query` by keyword, best first, filtered by league and market state:
    /// markets matching every word, newest first, then markets matching some of them, newest
    /// first. (A relevance score such as bm25 would cost a pass over every match — thousands
    /// for a team's name — while the documents are all short and alike; the newest markets are
    /// the upcoming games.)
    #[tracing::instrument(skip_all)]
    pub async fn keyword_search(
        &self,
        query: &KeywordQuery,
        league: Option<&str>,
        state: Option<&str>,
        limit: i64,
    ) -> Result<Vec<MarketRow>, StoreError> {
        let mut rows = self.keyword_pass(query, true, league, state, limit).await?;
        if query.words.len() > 1 && (rows.len() as i64) < limit {
            let more = self
                .keyword_pass(query, false, league, state, limit + rows.len() as i64)
                .await?;
            for row in more {
                if rows.len() as i64 >= limit {
                    break;
                }
                if !rows.iter().any(|r| r.id == row.id) {
                    rows.push(row);
                }
            }
        }
        Ok(rows)
    }

    async fn keyword_pass(
        &self,
        query: &KeywordQuery,
        every: bool,
        league: Option<&str>,
        state: Option<&str>,
        limit: i64,
    ) -> Result<Vec<MarketRow>, StoreError> {
        macro_rules! filters {
            ($q:ident) => {
                if let Some(league) = league {
                    $q.push(" AND g.league = ").push_bind(league.to_string());
                }
                if let Some(state) = state {
                    $q.push(" AND m.state = ").push_bind(state.to_string());
                }
            };
        }
        match self {
            Store::Sqlite(pool, _) => {
                let mut q = sqlx::QueryBuilder::new(format!(
                    "SELECT {MARKET_COLUMNS} FROM market_fts f JOIN markets m ON m.id = f.rowid JOIN games g ON g.id = m.game_id WHERE market_fts MATCH "
                ));
                q.push_bind(query.fts5(every));
                filters!(q);
                q.push(" ORDER BY f.rowid DESC LIMIT ").push_bind(limit);
                Ok(q.build_query_as().fetch_all(pool).await?)
            }
            Store::Postgres(pool, _) => {
                // First the newest markets only, read newest first: a word many markets have
                // fills the page there at once, and a page filled there is the answer.
                let tsquery = query.tsquery(every);
                let mut q = sqlx::QueryBuilder::new(format!(
                    "SELECT {MARKET_COLUMNS} FROM market_search s JOIN markets m ON m.id = s.market_id JOIN games g ON g.id = m.game_id WHERE s.tsv @@ to_tsquery('simple', "
                ));
                q.push_bind(tsquery.clone());
                q.push(") AND s.market_id > (SELECT COALESCE(MAX(market_id), 0) FROM market_search) - ")
                    .push_bind(PG_WINDOW);
                filters!(q);
                q.push(" ORDER BY s.market_id DESC LIMIT ").push_bind(limit);
                let rows: Vec<MarketRow> = q.build_query_as().fetch_all(pool).await?;
                if rows.len() as i64 >= limit {
                    return Ok(rows);
                }
                // A word few markets have: all of its markets through the GIN index, newest first.
                let mut q = sqlx::QueryBuilder::new(format!(
                    "SELECT {MARKET_COLUMNS} FROM markets m JOIN games g ON g.id = m.game_id WHERE m.id IN (SELECT market_id FROM tipoff_market_hits(to_tsquery('simple', "
                ));
                q.push_bind(tsquery);
                q.push(")))");
                filters!(q);
                q.push(" ORDER BY m.id DESC LIMIT ").push_bind(limit);
                Ok(q.build_query_as().fetch_all(pool).await?)
            }
        }
    }

    /// The stored search document of a market.
    pub async fn search_document_of(&self, market_id: i64) -> Result<BacklogItem, StoreError> {
        let sql = "SELECT s.market_id, g.league, s.document, s.doc_hash FROM market_search s \
                   JOIN markets m ON m.id = s.market_id JOIN games g ON g.id = m.game_id WHERE s.market_id = $1";
        on_pool!(self, pool => Ok(sqlx::query_as(sql).bind(market_id).fetch_one(pool).await?))
    }

    /// Markets whose vector for `model` is missing, made from another document, or older than
    /// `cutoff` (a re-embed job), oldest market first.
    pub async fn embedding_backlog(
        &self,
        model: &str,
        cutoff: Option<DateTime<Utc>>,
        limit: i64,
    ) -> Result<Vec<BacklogItem>, StoreError> {
        let sql = "SELECT s.market_id, g.league, s.document, s.doc_hash FROM market_search s \
                   JOIN markets m ON m.id = s.market_id JOIN games g ON g.id = m.game_id \
                   LEFT JOIN market_embeddings e ON e.market_id = s.market_id AND e.model = $1 \
                   WHERE e.market_id IS NULL OR e.doc_hash <> s.doc_hash OR e.embedded_at < $2 \
                   ORDER BY s.market_id LIMIT $3";
        let cutoff = cutoff.unwrap_or_else(epoch);
        on_pool!(self, pool => Ok(sqlx::query_as(sql).bind(model).bind(cutoff).bind(limit).fetch_all(pool).await?))
    }

    /// How many markets [`embedding_backlog`](Self::embedding_backlog) would answer in all.
    pub async fn embedding_backlog_count(
        &self,
        model: &str,
        cutoff: Option<DateTime<Utc>>,
    ) -> Result<i64, StoreError> {
        let sql = "SELECT COUNT(*) FROM market_search s \
                   LEFT JOIN market_embeddings e ON e.market_id = s.market_id AND e.model = $1 \
                   WHERE e.market_id IS NULL OR e.doc_hash <> s.doc_hash OR e.embedded_at < $2";
        let cutoff = cutoff.unwrap_or_else(epoch);
        on_pool!(self, pool => Ok(sqlx::query_scalar(sql).bind(model).bind(cutoff).fetch_one(pool).await?))
    }

    /// Vectors stored for `model`.
    pub async fn embedded_count(&self, model: &str) -> Result<i64, StoreError> {
        let sql = "SELECT COUNT(*) FROM market_embeddings WHERE model = $1";
        on_pool!(self, pool => Ok(sqlx::query_scalar(sql).bind(model).fetch_one(pool).await?))
    }

    /// The dimension of the newest vector of `model` embedded at or after `since`, if any.
    pub async fn stored_dimension(
        &self,
        model: &str,
        since: Option<DateTime<Utc>>,
    ) -> Result<Option<i32>, StoreError> {
        let sql = "SELECT dim FROM market_embeddings WHERE model = $1 AND embedded_at >= $2 ORDER BY embedded_at DESC LIMIT 1";
        let since = since.unwrap_or_else(epoch);
        on_pool!(self, pool => Ok(sqlx::query_scalar(sql).bind(model).bind(since).fetch_optional(pool).await?))
    }

    /// Writes one batch of vectors for `model` in one transaction (fenced for the singleton
    /// `backfill`): all of them or none.
    #[tracing::instrument(skip_all, fields(model = %model, vectors = batch.len()))]
    pub async fn store_embeddings(
        &self,
        model: &str,
        batch: &[NewVector],
        now: DateTime<Utc>,
    ) -> Result<(), StoreError> {
        let _writer = self.writer().await?;
        retrying!(on_pool!(self, pool => {
            let mut tx = pool.begin().await?;
            for v in batch {
                sqlx::query(
                    "INSERT INTO market_embeddings (market_id, model, dim, doc_hash, vector, embedded_at) VALUES ($1, $2, $3, $4, $5, $6) \
                     ON CONFLICT (market_id, model) DO UPDATE SET dim = excluded.dim, doc_hash = excluded.doc_hash, \
                     vector = excluded.vector, embedded_at = excluded.embedded_at",
                )
                .bind(v.market_id)
                .bind(model)
                .bind(v.vector.len() as i32)
                .bind(&v.doc_hash)
                .bind(encode_vector(&v.vector))
                .bind(now)
                .execute(&mut *tx)
                .await?;
            }
            commit!(self, tx);
            Ok(())
        }))
    }

    /// Vectors of `model` with a market id above `after`, in (market id) order, at most
    /// `limit`: the in-memory index loads with it, page by page.
    pub async fn vectors_after(
        &self,
        model: &str,
        after: i64,
        limit: i64,
    ) -> Result<Vec<StoredVector>, StoreError> {
        let sql = "SELECT e.market_id, g.league, e.dim, e.vector, e.embedded_at FROM market_embeddings e \
                   JOIN markets m ON m.id = e.market_id JOIN games g ON g.id = m.game_id \
                   WHERE e.model = $1 AND e.market_id > $2 ORDER BY e.market_id LIMIT $3";
        on_pool!(self, pool => Ok(sqlx::query_as(sql).bind(model).bind(after).bind(limit).fetch_all(pool).await?))
    }

    /// The market ids and times of the vectors of `model` embedded at or after `since`.
    pub async fn vector_versions_since(
        &self,
        model: &str,
        since: Option<DateTime<Utc>>,
    ) -> Result<Vec<(i64, DateTime<Utc>)>, StoreError> {
        let sql = "SELECT market_id, embedded_at FROM market_embeddings WHERE model = $1 AND embedded_at >= $2";
        let since = since.unwrap_or_else(epoch);
        on_pool!(self, pool => Ok(sqlx::query_as(sql).bind(model).bind(since).fetch_all(pool).await?))
    }

    /// The vectors of `model` for the markets `ids`.
    pub async fn vectors_of(
        &self,
        model: &str,
        ids: &[i64],
    ) -> Result<Vec<StoredVector>, StoreError> {
        if ids.is_empty() {
            return Ok(Vec::new());
        }
        on_pool!(self, pool => {
            let mut q = sqlx::QueryBuilder::new(
                "SELECT e.market_id, g.league, e.dim, e.vector, e.embedded_at FROM market_embeddings e \
                 JOIN markets m ON m.id = e.market_id JOIN games g ON g.id = m.game_id WHERE e.model = ",
            );
            q.push_bind(model.to_string()).push(" AND e.market_id IN (");
            let mut list = q.separated(", ");
            for id in ids {
                list.push_bind(*id);
            }
            q.push(")");
            Ok(q.build_query_as().fetch_all(pool).await?)
        })
    }

    /// Queues a full re-embed for `model`, unless one is queued or running: then that job is
    /// answered. The bool says whether it is new.
    pub async fn create_embedding_job(
        &self,
        model: &str,
        now: DateTime<Utc>,
    ) -> Result<(EmbeddingJob, bool), StoreError> {
        let _writer = self.writer().await?;
        let backend = self.backend();
        on_pool!(self, pool => {
            let mut tx = pool.begin().await?;
            if backend == Backend::Postgres {
                sqlx::query("SELECT pg_advisory_xact_lock(hashtext('tipoff:embedding_jobs'))").execute(&mut *tx).await?;
            }
            let open: Option<EmbeddingJob> = sqlx::query_as(&format!(
                "SELECT {JOB_COLUMNS} FROM embedding_jobs WHERE model = $1 AND state IN ('queued', 'running') ORDER BY id LIMIT 1"
            ))
            .bind(model)
            .fetch_optional(&mut *tx)
            .await?;
            if let Some(job) = open {
                return Ok((job, false));
            }
            let total: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM market_search").fetch_one(&mut *tx).await?;
            let job: EmbeddingJob = sqlx::query_as(&format!(
                "INSERT INTO embedding_jobs (model, state, total, created_at, updated_at) VALUES ($1, 'queued', $2, $3, $3) RETURNING {JOB_COLUMNS}"
            ))
            .bind(model)
            .bind(total)
            .bind(now)
            .fetch_one(&mut *tx)
            .await?;
            tx.commit().await?;
            Ok((job, true))
        })
    }

    /// The queued or running re-embed job of `model`, oldest first.
    pub async fn open_embedding_job(
        &self,
        model: &str,
    ) -> Result<Option<EmbeddingJob>, StoreError> {
        let sql = format!("SELECT {JOB_COLUMNS} FROM embedding_jobs WHERE model = $1 AND state IN ('queued', 'running') ORDER BY id LIMIT 1");
        on_pool!(self, pool => Ok(sqlx::query_as(&sql).bind(model).fetch_optional(pool).await?))
    }

    pub async fn embedding_job(&self, id: i64) -> Result<EmbeddingJob, StoreError> {
        let sql = format!("SELECT {JOB_COLUMNS} FROM embedding_jobs WHERE id = $1");
        on_pool!(self, pool => Ok(sqlx::query_as(&sql).bind(id).fetch_one(pool).await?))
    }

    /// Re-embed jobs, newest first, ids below `before`.
    pub async fn embedding_jobs(
        &self,
        before: Option<i64>,
        limit: i64,
    ) -> Result<Vec<EmbeddingJob>, StoreError> {
        let sql = format!(
            "SELECT {JOB_COLUMNS} FROM embedding_jobs WHERE id < $1 ORDER BY id DESC LIMIT $2"
        );
        on_pool!(self, pool => Ok(sqlx::query_as(&sql).bind(before.unwrap_or(i64::MAX)).bind(limit).fetch_all(pool).await?))
    }

    /// Records a job's progress: `running` with `done` markets re-embedded so far, or
    /// `succeeded` when its backlog is empty (`finished`).
    pub async fn update_embedding_job(
        &self,
        id: i64,
        finished: bool,
        now: DateTime<Utc>,
    ) -> Result<EmbeddingJob, StoreError> {
        let _writer = self.writer().await?;
        on_pool!(self, pool => {
            let mut tx = pool.begin().await?;
            let job: EmbeddingJob = sqlx::query_as(&format!("SELECT {JOB_COLUMNS} FROM embedding_jobs WHERE id = $1"))
                .bind(id)
                .fetch_one(&mut *tx)
                .await?;
            let done: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM market_embeddings WHERE model = $1 AND embedded_at >= $2")
                .bind(&job.model)
                .bind(job.created_at)
                .fetch_one(&mut *tx)
                .await?;
            let state = if finished { "succeeded" } else { "running" };
            let job: EmbeddingJob = sqlx::query_as(&format!(
                "UPDATE embedding_jobs SET state = $1, done = $2, updated_at = $3, started_at = COALESCE(started_at, $3), \
                 finished_at = CASE WHEN $4 THEN $3 ELSE finished_at END WHERE id = $5 AND state IN ('queued', 'running') RETURNING {JOB_COLUMNS}"
            ))
            .bind(state)
            .bind(done)
            .bind(now)
            .bind(finished)
            .bind(id)
            .fetch_optional(&mut *tx)
            .await?
            .unwrap_or(job);
            commit!(self, tx);
            Ok(job)
        })
    }

    /// Markets stored in all (what a re-embed covers).
    pub async fn searchable_count(&self) -> Result<i64, StoreError> {
        on_pool!(self, pool => Ok(sqlx::query_scalar("SELECT COUNT(*) FROM market_search").fetch_one(pool).await?))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hostile_syntax_becomes_quoted_words() {
        let q = KeywordQuery::parse(r#"celtics" OR * NEAR(a b) :x & "#).unwrap();
        assert_eq!(q.words(), &["celtics", "or", "near", "b", "x"]);
        assert_eq!(
            q.fts5(false),
            r#""celtics"* OR "or" OR "near"* OR "b" OR "x""#
        );
        assert_eq!(q.fts5(true), r#""celtics"* "or" "near"* "b" "x""#);
        assert_eq!(
            q.tsquery(false),
            "'celtics':* | 'or' | 'near':* | 'b' | 'x'"
        );
        assert_eq!(q.tsquery(true), "'celtics':* & 'or' & 'near':* & 'b' & 'x'");
    }

    #[test]
    fn long_queries_are_refused_and_wordless_ones_have_no_words() {
        assert!(KeywordQuery::parse(&"x".repeat(201))
            .unwrap_err()
            .contains("201 characters"));
        assert!(KeywordQuery::parse("  ").unwrap().words().is_empty());
        assert!(KeywordQuery::parse("*** :: &&").unwrap().words().is_empty());
        let text: Vec<String> = (0..40).map(|i| format!("w{i}")).collect();
        let many = KeywordQuery::parse(&text.join(" ")).unwrap();
        assert_eq!(many.words().len(), MAX_QUERY_WORDS, "the first 32 words");
        assert_eq!(many.words()[0], "w0");
        assert_eq!(many.words()[31], "w31");
    }

    #[test]
    fn terms_drop_stop_words_and_repeats() {
        let doc = "Who wins BOS @ LAL? NBA · Boston Celtics (BOS) at Los Angeles Lakers (LAL) · 2025-01-10";
        assert_eq!(
            terms(doc),
            "bos lal nba boston celtics los angeles lakers 2025 01 10"
        );
    }

    #[test]
    fn vectors_round_trip_through_bytes() {
        let v = vec![0.25f32, -1.5, 3.0e-7];
        assert_eq!(decode_vector(&encode_vector(&v)), v);
    }
}
