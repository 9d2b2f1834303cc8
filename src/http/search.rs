//! Market search and the embeddings admin.
//!
//! `GET /api/v1/markets/search?q=&league=&state=&limit=` always answers: keyword ranking
//! (SQLite FTS5 / PostgreSQL full text over each market's document) is always on. With
//! `TIPOFF_EMBEDDINGS_URL` set, the query is embedded and ranked by cosine similarity in the
//! `search` service's in-memory index too, and the two rankings are fused by reciprocal rank
//! (`score` = Σ 1 / (60 + rank)) → `mode: "hybrid"`. Each item carries its `score` and its
//! `ranks` in each ranking (`null` where it was not a candidate). The query's embedding and
//! the index lookup share one deadline (`TIPOFF_SEARCH_EMBED_TIMEOUT`); past it, or when the
//! embeddings API fails, the answer is the keyword ranking alone (`mode: "keyword"`), in time.

use std::collections::HashMap;
use std::sync::atomic::Ordering;

use actix_web::{web, HttpResponse};
use chrono::Utc;
use serde::{Deserialize, Serialize};
use tipoff_actors::store::{catalog_league, KeywordQuery};

use super::auth::Admin;
use super::read::{id_cursor, markets_json, not_found, page, Market, MARKET_STATES};
use super::{error::ApiError, AppState};
use schemars::JsonSchema;

const DEFAULT_LIMIT: i64 = 20;
const MAX_LIMIT: i64 = 100;
/// Reciprocal rank fusion's constant (the usual 60).
const RRF_K: f64 = 60.0;

#[derive(Debug, Deserialize)]
pub struct SearchQuery {
    q: Option<String>,
    league: Option<String>,
    state: Option<String>,
    limit: Option<String>,
    mode: Option<String>,
}

fn search_limit(text: Option<&str>) -> Result<i64, ApiError> {
    match text {
        None => Ok(DEFAULT_LIMIT),
        Some(t) => match t.trim().parse::<i64>() {
            Ok(n) if (1..=MAX_LIMIT).contains(&n) => Ok(n),
            _ => Err(ApiError::BadRequest(format!(
                "limit must be a whole number from 1 to {MAX_LIMIT}, not `{}`",
                t.chars().take(40).collect::<String>()
            ))),
        },
    }
}

/// Reciprocal rank fusion of ranked id lists: each list adds 1 / (k + rank) to an id's score.
pub fn fuse(rankings: &[&[i64]]) -> Vec<(i64, f64)> {
    let mut scores: HashMap<i64, f64> = HashMap::new();
    for ranking in rankings {
        for (rank, id) in ranking.iter().enumerate() {
            *scores.entry(*id).or_default() += 1.0 / (RRF_K + rank as f64 + 1.0);
        }
    }
    let mut fused: Vec<(i64, f64)> = scores.into_iter().collect();
    fused.sort_by(|a, b| b.1.total_cmp(&a.1).then(b.0.cmp(&a.0)));
    fused
}

/// A search's answer: markets best first, and which ranking answered.
#[derive(Serialize, JsonSchema)]
pub struct Hits {
    items: Vec<Hit>,
    /// `hybrid` (keyword fused with vectors) or `keyword`.
    #[schemars(schema_with = "super::schema::search_mode_field")]
    mode: &'static str,
}

/// A market found, with its fused score and its rank in each ranking.
#[derive(Serialize, JsonSchema)]
pub struct Hit {
    #[serde(flatten)]
    market: Market,
    score: f64,
    ranks: Ranks,
}

#[derive(Serialize, JsonSchema)]
pub struct Ranks {
    /// 1-based rank by keyword, if it ranked there.
    keyword: Option<usize>,
    /// 1-based rank by vector similarity, if it ranked there.
    vector: Option<usize>,
}

/// `GET /api/v1/markets/search?q=&league=&state=&limit=`
pub async fn search(
    state: web::Data<AppState>,
    q: web::Query<SearchQuery>,
) -> Result<HttpResponse, ApiError> {
    let text =
        q.q.as_deref()
            .ok_or_else(|| ApiError::BadRequest("q is required: the words to search for".into()))?;
    let query = KeywordQuery::parse(text).map_err(ApiError::BadRequest)?;
    let limit = search_limit(q.limit.as_deref())?;
    let (league, market_state, want_vectors) = filters(&q)?;
    if query.words().is_empty() {
        // No letters or digits: nothing to look for, so nothing matches.
        state.metrics.observe_search("keyword");
        return Ok(HttpResponse::Ok().json(Hits {
            items: Vec::new(),
            mode: "keyword",
        }));
    }
    // Read once: a reload may change the client while the search runs.
    let embeddings = state.embeddings().filter(|_| want_vectors);
    // Enough candidates from each ranking that the fused top `limit` is the same as with all;
    // keyword ranking alone needs `limit`.
    let candidates = if embeddings.is_some() {
        (limit * 3).max(50)
    } else {
        limit
    };
    let keyword = state
        .store
        .keyword_search(&query, league.as_deref(), market_state, candidates);
    let vector = async {
        let (client, deadline) = embeddings?;
        // A state filter is applied to the candidates afterwards: fetch more of them.
        let k = if market_state.is_some() {
            candidates * 4
        } else {
            candidates
        } as usize;
        let hub = state.search.clone();
        let text = text.trim().to_string();
        let league = league.clone();
        let lookup = async move {
            let vectors = match client.embed(&[text], Some(deadline)).await {
                Ok(v) => v,
                Err(e) => {
                    hub.stats
                        .upstream_errors_total
                        .fetch_add(1, Ordering::Relaxed);
                    tracing::debug!(error = %e, "query not embedded; answering by keyword");
                    return None;
                }
            };
            let vector = vectors.into_iter().next()?;
            hub.nearest(vector, league.clone(), k, deadline).await
        };
        tokio::time::timeout(deadline, lookup).await.ok().flatten()
    };
    let (keyword, vector) = futures_util::future::join(keyword, vector).await;
    let keyword_rows = keyword?;
    let keyword: Vec<i64> = keyword_rows.iter().map(|m| m.id).collect();
    let mode = if vector.is_some() {
        "hybrid"
    } else {
        "keyword"
    };
    let vector_ids: Vec<i64> = vector
        .unwrap_or_default()
        .into_iter()
        .map(|(id, _)| id)
        .collect();
    let fused = fuse(&[&keyword, &vector_ids]);
    let ids: Vec<i64> = fused.iter().map(|(id, _)| *id).collect();
    // Keyword candidates come with their rows and passed the filters; vector candidates are
    // read and filtered here.
    let mut rows = keyword_rows;
    let missing: Vec<i64> = vector_ids
        .iter()
        .filter(|id| !keyword.contains(id))
        .copied()
        .collect();
    rows.extend(
        state
            .store
            .markets_by_ids(&missing, league.as_deref(), market_state)
            .await?,
    );
    let rank: HashMap<i64, usize> = ids.iter().enumerate().map(|(i, id)| (*id, i)).collect();
    rows.sort_by_key(|m| rank.get(&m.id).copied().unwrap_or(usize::MAX));
    rows.truncate(limit as usize);
    let scores: HashMap<i64, f64> = fused.into_iter().collect();
    let rank_in = |list: &[i64], id: i64| list.iter().position(|x| *x == id).map(|r| r + 1);
    let markets = markets_json(&state.store, &rows).await?;
    let items: Vec<Hit> = markets
        .into_iter()
        .zip(&rows)
        .map(|(market, row)| Hit {
            market,
            score: (scores.get(&row.id).copied().unwrap_or_default() * 1e6).round() / 1e6,
            ranks: Ranks {
                keyword: rank_in(&keyword, row.id),
                vector: rank_in(&vector_ids, row.id),
            },
        })
        .collect();
    state.metrics.observe_search(mode);
    Ok(HttpResponse::Ok().json(Hits { items, mode }))
}

/// The search's filters: league (a catalog key), market state, and whether vectors may rank.
fn filters(q: &SearchQuery) -> Result<(Option<String>, Option<&str>, bool), ApiError> {
    let league = match q.league.as_deref().map(str::trim) {
        None => None,
        Some(l) => {
            let key = l.to_ascii_lowercase();
            catalog_league(&key).map_err(ApiError::BadRequest)?;
            Some(key)
        }
    };
    if let Some(s) = &q.state {
        if !MARKET_STATES.contains(&s.as_str()) {
            return Err(ApiError::BadRequest(format!(
                "unknown state `{}`: use open, locked, settled or void",
                s.chars().take(40).collect::<String>()
            )));
        }
    }
    let market_state = q.state.as_deref();
    let want_vectors = match q.mode.as_deref() {
        None | Some("hybrid") => true,
        Some("keyword") => false,
        Some(other) => {
            return Err(ApiError::BadRequest(format!(
                "unknown mode `{}`: use hybrid (the default: keyword ranking fused with vectors when embeddings are configured) or keyword",
                other.chars().take(40).collect::<String>()
            )))
        }
    };
    Ok((league, market_state, want_vectors))
}

/// The embeddings figures; without embeddings configured, only `configured`, `reason` and
/// `markets`.
#[derive(Serialize, JsonSchema, Default)]
pub struct EmbeddingsView {
    configured: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    reason: Option<&'static str>,
    /// Markets that can be searched.
    markets: i64,
    /// The embeddings API's host (never its credentials).
    #[serde(skip_serializing_if = "Option::is_none")]
    host: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    model: Option<String>,
    /// Vectors stored for the model.
    #[serde(skip_serializing_if = "Option::is_none")]
    embedded: Option<i64>,
    /// Markets whose vector is missing or stale.
    #[serde(skip_serializing_if = "Option::is_none")]
    backlog: Option<i64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    rate_per_second: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    embedded_here_total: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    upstream_errors_total: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    index_vectors: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    index_running: Option<bool>,
    #[serde(skip_serializing_if = "Option::is_none")]
    query_deadline_ms: Option<u64>,
    /// The open re-embed job (null when none).
    #[serde(skip_serializing_if = "Option::is_none")]
    job: Option<Option<tipoff_actors::store::EmbeddingJob>>,
}

/// `GET /admin/embeddings`: the model, the backlog, what the local index holds, recent jobs.
pub async fn status(_: Admin, state: web::Data<AppState>) -> Result<HttpResponse, ApiError> {
    let Some((client, deadline)) = state.embeddings() else {
        return Ok(HttpResponse::Ok().json(EmbeddingsView {
            configured: false,
            reason: Some("TIPOFF_EMBEDDINGS_URL is not set: search answers with keyword ranking"),
            markets: state.store.searchable_count().await?,
            ..EmbeddingsView::default()
        }));
    };
    let model = client.model().to_string();
    let job = state.store.open_embedding_job(&model).await?;
    let cutoff = job.as_ref().map(|j| j.created_at);
    let stats = &state.search.stats;
    Ok(HttpResponse::Ok().json(EmbeddingsView {
        configured: true,
        reason: None,
        host: Some(client.host().to_string()),
        markets: state.store.searchable_count().await?,
        embedded: Some(state.store.embedded_count(&model).await?),
        backlog: Some(state.store.embedding_backlog_count(&model, cutoff).await?),
        model: Some(model),
        rate_per_second: Some((stats.rate() * 10.0).round() / 10.0),
        embedded_here_total: Some(stats.embedded_total.load(Ordering::Relaxed)),
        upstream_errors_total: Some(stats.upstream_errors_total.load(Ordering::Relaxed)),
        index_vectors: Some(stats.index_vectors.load(Ordering::Relaxed)),
        index_running: Some(state.search.index().is_some()),
        query_deadline_ms: Some(deadline.as_millis() as u64),
        job: Some(job),
    }))
}

/// `POST /admin/embeddings/reindex`: queue a full re-embed for the configured model (or answer
/// the one already queued or running).
pub async fn reindex(_: Admin, state: web::Data<AppState>) -> Result<HttpResponse, ApiError> {
    let Some((client, _)) = state.embeddings() else {
        return Err(ApiError::Refused(
            "embeddings_off",
            "embeddings are not configured (TIPOFF_EMBEDDINGS_URL is not set); nothing to re-embed"
                .into(),
        ));
    };
    let (job, created) = state
        .store
        .create_embedding_job(client.model(), Utc::now())
        .await?;
    super::ops::wake(&state, "backfill").await;
    tracing::info!(job_id = job.id, model = %job.model, created, "re-embed requested");
    let mut res = if created {
        HttpResponse::Accepted()
    } else {
        HttpResponse::Ok()
    };
    Ok(res.json(job))
}

#[derive(Debug, Deserialize)]
pub struct JobsQuery {
    limit: Option<String>,
    cursor: Option<String>,
}

/// `GET /admin/embeddings/jobs?limit=&cursor=` (newest first)
pub async fn jobs(
    _: Admin,
    state: web::Data<AppState>,
    q: web::Query<JobsQuery>,
) -> Result<HttpResponse, ApiError> {
    let limit = super::read::limit(q.limit.as_deref())?;
    let before = id_cursor(q.cursor.as_deref())?;
    let rows = state.store.embedding_jobs(before, limit + 1).await?;
    let (rows, next) = page(rows, limit, |j| j.id.to_string());
    Ok(HttpResponse::Ok().json(super::schema::Page { items: rows, next }))
}

/// `GET /admin/embeddings/jobs/{id}`
pub async fn job(
    _: Admin,
    state: web::Data<AppState>,
    id: web::Path<i64>,
) -> Result<HttpResponse, ApiError> {
    let id = id.into_inner();
    let job = state
        .store
        .embedding_job(id)
        .await
        .map_err(not_found("re-embed job", id))?;
    Ok(HttpResponse::Ok().json(job))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fusion_rewards_agreement_and_keeps_either_ranking() {
        let fused = fuse(&[&[1, 2, 3], &[3, 4]]);
        let ids: Vec<i64> = fused.iter().map(|f| f.0).collect();
        assert_eq!(ids[0], 3, "ranked by both: {fused:?}");
        assert!(ids.contains(&1) && ids.contains(&4));
        assert_eq!(
            fuse(&[&[5, 6], &[]])
                .iter()
                .map(|f| f.0)
                .collect::<Vec<_>>(),
            vec![5, 6]
        );
    }
}
