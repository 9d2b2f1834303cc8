//! The `backfill` service: embeddings for every market whose searchable document has no vector
//! for the configured model, or whose document changed since its vector was made.
//!
//! A singleton (one replica embeds; every replica's `search` index reads the vectors). Each
//! pass takes the backlog oldest market first, `batch` documents per call to the embeddings
//! API, up to `concurrency` calls at once; each batch's vectors commit in one transaction,
//! so a crash loses at most the batches in flight and the next pass resumes with what is left.
//! A batch whose answer is unusable (HTTP error, timeout, malformed JSON, a wrong number of
//! vectors, a dimension that differs from the model's stored vectors) writes nothing: the
//! service records `last_error` and backs off (base × 2^(failures − 1), capped, never below
//! the API's `Retry-After`) inside the actor, without a restart.
//!
//! A re-embed job (`POST /admin/embeddings/reindex`) makes every vector older than the job
//! part of the backlog until it is re-made; the job's progress is written after each pass.
//!
//! Messages: [`Control`] (ping / stop / wake: a pass now). Timers: the next pass at once
//! while a backlog remains, else after the interval; after failures, the backoff.
//! Stops: at once, or when the pass in flight ends.

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use chrono::Utc;
use futures_util::future::join_all;
use std::future::Future;
use std::pin::Pin;

use crate::embeddings::{EmbedError, EmbeddingsClient};
use crate::search::SearchHub;
use crate::service::{Every, Outcome, Periodic, ServiceCtx};
use crate::settings::{self, NonZero};
use crate::store::{BacklogItem, NewVector, Store, StoreError};

/// The embedding backfill's settings.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize, schemars::JsonSchema)]
#[serde(default)]
pub struct BackfillSettings {
    /// Documents per embeddings call (1 to 2048, the OpenAI API's limit of inputs per call).
    #[serde(
        rename = "embeddings_batch",
        deserialize_with = "settings::between::<1, 2048, _, _>"
    )]
    pub batch: usize,
    /// Embeddings calls in flight at once.
    #[serde(
        rename = "embeddings_concurrency",
        deserialize_with = "settings::at_least::<1, _, _>"
    )]
    pub concurrency: usize,
    /// Pause between backfill passes once the backlog is empty.
    #[serde(rename = "embeddings_interval", with = "NonZero")]
    pub interval: Duration,
    /// Failure backoff: base × 2^(failures − 1), up to the cap.
    #[serde(rename = "embeddings_backoff_base", with = "NonZero")]
    pub backoff_base: Duration,
    #[serde(rename = "embeddings_backoff_cap", with = "NonZero")]
    pub backoff_cap: Duration,
    /// Longest a pass keeps starting new batches before it yields (the next pass follows at once).
    #[serde(skip, default = "slice")]
    pub slice: Duration,
}

fn slice() -> Duration {
    Duration::from_secs(10)
}

impl BackfillSettings {
    pub fn backoff(&self) -> crate::restart::Backoff {
        crate::restart::Backoff::new(self.backoff_base, self.backoff_cap)
    }
}

impl settings::Section for BackfillSettings {
    fn check(&self) -> Result<(), settings::Invalid> {
        settings::backoff(
            self.backoff_base,
            self.backoff_cap,
            "embeddings_backoff_base",
            "embeddings_backoff_cap",
        )
        .map(drop)
    }
}

impl Default for BackfillSettings {
    fn default() -> Self {
        BackfillSettings {
            batch: 64,
            concurrency: 2,
            interval: Duration::from_secs(30),
            backoff_base: Duration::from_secs(5),
            backoff_cap: Duration::from_secs(300),
            slice: slice(),
        }
    }
}

/// Why a pass stopped early.
#[derive(Debug, thiserror::Error)]
pub enum BackfillError {
    #[error(transparent)]
    Upstream(#[from] EmbedError),
    #[error("the embeddings API answered {got}-dimension vectors, but model {model}'s stored vectors have {stored}; POST /admin/embeddings/reindex re-embeds every market at the new dimension")]
    Dimension {
        model: String,
        got: usize,
        stored: usize,
    },
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// What one pass did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Pass {
    /// Vectors committed.
    pub embedded: usize,
    /// Calls made to the embeddings API.
    pub calls: usize,
    /// Markets still waiting after the pass.
    pub backlog: i64,
}

/// One pass (see the module documentation). Vectors that committed before an error are kept
/// (and counted in `done`); the error is answered after them.
pub async fn run_pass(
    store: &Store,
    client: &EmbeddingsClient,
    hub: &SearchHub,
    settings: &BackfillSettings,
    done: &mut Pass,
) -> Result<(), BackfillError> {
    let model = client.model().to_string();
    let job = store.open_embedding_job(&model).await?;
    let cutoff = job.as_ref().map(|j| j.created_at);
    let started = Instant::now();
    let mut stored_dim = store
        .stored_dimension(&model, cutoff)
        .await?
        .map(|d| d as usize);
    let result: Result<(), BackfillError> = async {
        loop {
            let want = (settings.batch * settings.concurrency.max(1)) as i64;
            let items = store.embedding_backlog(&model, cutoff, want).await?;
            if items.is_empty() {
                return Ok(());
            }
            let batches: Vec<&[BacklogItem]> = items.chunks(settings.batch.max(1)).collect();
            let answers = join_all(batches.iter().map(|b| {
                let inputs: Vec<String> = b.iter().map(|i| i.document.clone()).collect();
                async move { client.embed(&inputs, None).await }
            }))
            .await;
            done.calls += batches.len();
            let mut first_error = None;
            for (batch, answer) in batches.iter().zip(answers) {
                let vectors = match answer {
                    Ok(v) => v,
                    Err(e) => {
                        hub.stats
                            .upstream_errors_total
                            .fetch_add(1, Ordering::Relaxed);
                        first_error.get_or_insert(BackfillError::Upstream(e));
                        continue;
                    }
                };
                let dim = vectors.first().map_or(0, Vec::len);
                if let Some(stored) = stored_dim.filter(|&s| s != dim) {
                    hub.stats
                        .upstream_errors_total
                        .fetch_add(1, Ordering::Relaxed);
                    first_error.get_or_insert(BackfillError::Dimension {
                        model: model.clone(),
                        got: dim,
                        stored,
                    });
                    continue;
                }
                let rows: Vec<NewVector> = batch
                    .iter()
                    .zip(vectors)
                    .map(|(item, vector)| NewVector {
                        market_id: item.market_id,
                        doc_hash: item.doc_hash.clone(),
                        vector,
                    })
                    .collect();
                let now = Utc::now();
                store.store_embeddings(&model, &rows, now).await?;
                stored_dim = Some(dim);
                done.embedded += rows.len();
                hub.stats
                    .embedded_total
                    .fetch_add(rows.len() as u64, Ordering::Relaxed);
                hub.add(
                    batch
                        .iter()
                        .zip(rows)
                        .map(|(item, r)| (r.market_id, item.league.clone(), r.vector, now))
                        .collect(),
                );
            }
            if let Some(e) = first_error {
                return Err(e);
            }
            if started.elapsed() >= settings.slice {
                return Ok(());
            }
        }
    }
    .await;
    done.backlog = store.embedding_backlog_count(&model, cutoff).await?;
    hub.stats
        .backlog
        .store(done.backlog as u64, Ordering::Relaxed);
    if let Some(job) = job {
        let finished = result.is_ok() && done.backlog == 0;
        let job = store
            .update_embedding_job(job.id, finished, Utc::now())
            .await?;
        if finished {
            tracing::info!(job = job.id, model = %job.model, markets = job.done, "re-embed finished");
        }
    }
    let seconds = started.elapsed().as_secs_f64();
    if done.embedded > 0 && seconds > 0.0 {
        hub.stats.set_rate(done.embedded as f64 / seconds);
    }
    result
}

/// The backfill job: a pass embeds batches of the backlog for up to a slice.
pub struct Embed {
    store: Store,
    client: EmbeddingsClient,
    hub: Arc<SearchHub>,
    settings: BackfillSettings,
}

/// The `backfill` service.
pub type Backfill = Every<Embed>;

impl Backfill {
    pub fn new(
        store: Store,
        client: EmbeddingsClient,
        hub: Arc<SearchHub>,
        settings: BackfillSettings,
        svc: ServiceCtx,
    ) -> Self {
        Every::of(
            Embed {
                store,
                client,
                hub,
                settings,
            },
            svc,
        )
    }
}

impl Periodic for Embed {
    type Done = (Result<(), BackfillError>, Pass);
    const WHAT: &'static str = "backlog: 0; poll";
    const FAILING: &'static str = "embeddings";

    fn interval(&self) -> Duration {
        self.settings.interval
    }

    fn backoff(&self) -> Option<crate::restart::Backoff> {
        Some(self.settings.backoff())
    }

    fn pass(&mut self) -> Pin<Box<dyn Future<Output = Self::Done>>> {
        let (store, client, hub, settings) = (
            self.store.clone(),
            self.client.clone(),
            self.hub.clone(),
            self.settings.clone(),
        );
        Box::pin(async move {
            let mut done = Pass::default();
            let res = run_pass(&store, &client, &hub, &settings, &mut done).await;
            (res, done)
        })
    }

    fn finished(&mut self, (res, done): Self::Done, _: &ServiceCtx) -> Outcome {
        match res {
            Ok(()) => {
                if done.embedded > 0 {
                    tracing::info!(
                        embedded = done.embedded,
                        calls = done.calls,
                        backlog = done.backlog,
                        "embeddings committed"
                    );
                }
                if done.backlog > 0 {
                    let rate = self.hub.stats.rate();
                    Outcome::More(format!("backlog: {} ({rate:.0}/s)", done.backlog))
                } else {
                    Outcome::Done
                }
            }
            Err(e) => Outcome::Failed {
                retry_after: match &e {
                    BackfillError::Upstream(up) => up.retry_after(),
                    _ => None,
                },
                error: format!("{e} (backlog {})", done.backlog),
            },
        }
    }
}
