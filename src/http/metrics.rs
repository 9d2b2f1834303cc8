//! `GET /metrics`: Prometheus text format (the `prometheus` crate's encoder).
//!
//! HTTP traffic is counted as it happens (by route pattern, so `/api/v1/games/{id}` is one
//! series). Everything else is read at scrape time: the supervisor's registry (state,
//! restarts, ticks, errors, seconds since the last success, current interval per service),
//! the pool, and counts from the database (import jobs and their dates, the outbox backlog,
//! deposits, settlements, watcher cursors). Counters fed from those totals advance by the
//! difference since the previous scrape, so they stay monotonic.

use std::time::Duration;

use actix_web::{web, HttpResponse};
use chrono::Utc;
use prometheus::{
    Encoder, Gauge, GaugeVec, HistogramOpts, HistogramVec, IntCounter, IntCounterVec, IntGauge,
    IntGaugeVec, Opts, Registry, TextEncoder,
};
use tipoff_actors::supervisor::{ask, GetStatus};
use tipoff_actors::ServiceState;

use super::{error::ApiError, AppState};

const SERVICE_STATES: &[ServiceState] = &[
    ServiceState::Starting,
    ServiceState::Running,
    ServiceState::BackingOff,
    ServiceState::Stopping,
    ServiceState::Stopped,
    ServiceState::Skipped,
    ServiceState::Failed,
    ServiceState::Standby,
];

/// A metric family that [`families!`] can build from a name, a help text and labels.
trait Family: prometheus::core::Collector + Clone + 'static {
    fn make(opts: Opts, labels: &[&str]) -> prometheus::Result<Self>;
}

macro_rules! vector_family {
    ($($t:ty),*) => {$(
        impl Family for $t {
            fn make(opts: Opts, labels: &[&str]) -> prometheus::Result<Self> {
                <$t>::new(opts, labels)
            }
        }
    )*};
}
vector_family!(IntCounterVec, IntGaugeVec, GaugeVec);

macro_rules! scalar_family {
    ($($t:ty),*) => {$(
        impl Family for $t {
            fn make(opts: Opts, _: &[&str]) -> prometheus::Result<Self> {
                <$t>::with_opts(opts)
            }
        }
    )*};
}
scalar_family!(IntGauge, Gauge, IntCounter);

/// Request latency buckets, in seconds.
const BUCKETS: &[f64] = &[
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
];

impl Family for HistogramVec {
    fn make(opts: Opts, labels: &[&str]) -> prometheus::Result<Self> {
        HistogramVec::new(HistogramOpts::from(opts).buckets(BUCKETS.to_vec()), labels)
    }
}

/// A family, registered (names are `tipoff_`-prefixed; each is registered once).
fn family<F: Family>(registry: &Registry, name: &str, help: &str, labels: &[&str]) -> F {
    let metric =
        F::make(Opts::new(name, help).namespace("tipoff"), labels).expect("metric definition");
    registry
        .register(Box::new(metric.clone()))
        .expect("unique metric");
    metric
}

/// The metric families: each once, with its type, name, help and labels.
macro_rules! families {
    ($($field:ident: $ty:ty = $name:literal, $help:literal $(, [$($label:literal),*])?;)*) => {
        /// Every metric family, registered once. Cheap to clone (the vectors are shared).
        #[derive(Clone)]
        pub struct Metrics {
            registry: Registry,
            $($field: $ty,)*
            /// When the database figures were last read; scrapes within
            /// `TIPOFF_METRICS_DB_INTERVAL` reuse them, and concurrent scrapes wait for the one
            /// refresh.
            db_refreshed: std::sync::Arc<tokio::sync::Mutex<Option<std::time::Instant>>>,
            db_interval: Duration,
        }

        impl Metrics {
            /// `db_interval`: the longest the database figures are reused.
            pub fn new(db_interval: Duration) -> Self {
                let registry = Registry::new();
                Metrics {
                    $($field: family(&registry, $name, $help, &[$($($label),*)?]),)*
                    db_refreshed: std::sync::Arc::new(tokio::sync::Mutex::new(None)),
                    db_interval,
                    registry,
                }
            }
        }
    };
}

families! {
    http_requests: IntCounterVec = "http_requests_total", "HTTP requests answered, by route pattern, method and status.", ["route", "method", "status"];
    http_duration: HistogramVec = "http_request_duration_seconds", "HTTP request latency, by route pattern and method.", ["route", "method"];
    service_state: IntGaugeVec = "service_state", "1 for the state each supervised service is in, 0 for the others.", ["service", "state"];
    service_restarts: IntCounterVec = "service_restarts_total", "Restarts of each service (after failures and by request).", ["service"];
    service_ticks: IntCounterVec = "service_ticks_total", "Ticks (passes) each service has begun.", ["service"];
    service_errors: IntCounterVec = "service_errors_total", "Errors each service reported (absorbed or fatal).", ["service"];
    service_since_success: GaugeVec = "service_seconds_since_success", "Seconds since each service's last successful tick (absent before the first).", ["service"];
    service_interval: GaugeVec = "service_interval_seconds", "The interval each service runs at now, with its reason.", ["service", "reason"];
    db_pool: IntGaugeVec = "db_pool_connections", "Database pool connections: open (size), idle, and the maximum.", ["state"];
    db_healthy: IntGauge = "db_healthy", "1 while the database answers the db service's pings.";
    import_jobs: IntGaugeVec = "import_jobs", "Import jobs by state.", ["state"];
    import_dates: IntGaugeVec = "import_dates", "Dates of queued and running import jobs: total, done and failed (progress).", ["progress"];
    outbox_events: IntGaugeVec = "outbox_events", "Outbox events by state: pending is the webhook backlog, dead gave up.", ["state"];
    outbox_oldest_pending: GaugeVec = "outbox_oldest_pending_seconds", "Age of the oldest event not yet delivered to every webhook.";
    watcher_cursor_slot: IntGaugeVec = "watcher_cursor_slot", "Slot of the newest deposit signature each watcher has processed.", ["token"];
    watcher_cursor_age: GaugeVec = "watcher_cursor_lag_seconds", "Seconds since each watcher's cursor last moved.", ["token"];
    deposits: IntCounterVec = "deposits_total", "Deposits recorded, by token and state (credited, unattributed, assigned).", ["token", "state"];
    settlements: IntCounterVec = "settlements_total", "Markets closed, by outcome (settled or void).", ["outcome"];
    sse_streams: IntGauge = "sse_streams", "Open live event streams (GET /api/v1/events).";
    webhooks_down: IntGauge = "webhook_receivers_down", "Webhook receiver URLs marked down (probed by one event on the backoff schedule; the others wait uncharged).";
    deposits_quarantined: IntGaugeVec = "deposits_quarantined", "Treasury signatures quarantined (unreadable after every attempt; the cursor moved past them) or waiting for a retry, per token.", ["token"];
    withdrawal_claims: IntGauge = "withdrawal_claims_open", "Withdrawals claimed by a signer (processing) and not yet completed or failed.";
    withdrawal_oldest_claim: Gauge = "withdrawal_oldest_claim_seconds", "Age of the oldest open claim (0 when none): a claim is never refunded by itself, an operator completes or fails it.";
    ready: IntGauge = "ready", "1 while /ready answers 200.";
    leader: IntGauge = "leader", "1 while this replica holds the leader lease and runs the singleton services.";
    lease_epoch: IntGauge = "lease_epoch", "Epoch of the leader lease as this replica last saw it (0 before any).";
    leadership_changes: IntCounter = "leadership_changes_total", "Times this replica became leader or stopped being it.";
    fenced_writes: IntCounter = "fenced_writes_total", "Writes of a singleton rolled back because this replica no longer held the lease epoch it started under.";
    transaction_retries: IntCounter = "db_transaction_retries_total", "Transactions run again after PostgreSQL aborted them for a serialization failure or a deadlock (40001, 40P01).";
    stake_batches: IntCounter = "stake_batches_total", "Transactions of the stakes' group commit (each holds one batch of stake requests).";
    stakes_batched: IntCounter = "stakes_batched_total", "Stake requests those batches held (taken or refused).";
    build_info: IntGaugeVec = "build_info", "Always 1; the labels carry the version and database backend.", ["version", "backend"];
    search_requests: IntCounterVec = "search_requests_total", "Market searches answered, by mode (hybrid, or keyword when embeddings are off, slow or failing).", ["mode"];
    embeddings_backlog: IntGauge = "embeddings_backlog", "Markets whose vector for the configured model is missing or stale (0 without embeddings).";
    embeddings_vectors: IntGauge = "embeddings_vectors", "Vectors stored for the configured model.";
    embeddings_embedded: IntCounter = "embeddings_embedded_total", "Vectors the backfill service of this replica committed.";
    embeddings_errors: IntCounter = "embeddings_upstream_errors_total", "Failed calls to the embeddings API (backfill batches and query vectors).";
    search_index_vectors: IntGauge = "search_index_vectors", "Vectors in this replica's in-memory search index.";
    read_cache: IntGaugeVec = "read_cache", "The read cache of public lists: entries and bytes held (bounded by TIPOFF_READ_CACHE_MAX_BYTES).", ["figure"];
    read_cache_events: IntCounterVec = "read_cache_events_total", "Read cache lookups and removals: hit, miss, evicted.", ["event"];
    db_refreshes: IntCounter = "metrics_db_refreshes_total", "Times /metrics read its database figures (at most once per TIPOFF_METRICS_DB_INTERVAL however often it is scraped).";
}

impl Metrics {
    /// Counts one market search by the mode it answered in.
    pub fn observe_search(&self, mode: &str) {
        self.search_requests.with_label_values(&[mode]).inc();
    }

    /// Counts one answered request.
    pub fn observe_request(&self, route: &str, method: &str, status: u16, elapsed: Duration) {
        self.http_requests
            .with_label_values(&[route, method, &status.to_string()])
            .inc();
        self.http_duration
            .with_label_values(&[route, method])
            .observe(elapsed.as_secs_f64());
    }

    pub fn sse_stream_opened(&self) {
        self.sse_streams.inc();
    }

    pub fn sse_stream_closed(&self) {
        self.sse_streams.dec();
    }
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new(Duration::from_secs(5))
    }
}

/// Advances a counter to `total` (never backwards).
fn advance(counter: &prometheus::IntCounter, total: u64) {
    let current = counter.get();
    if total > current {
        counter.inc_by(total - current);
    }
}

/// `GET /metrics`
pub async fn metrics(state: web::Data<AppState>) -> Result<HttpResponse, ApiError> {
    let m = &state.metrics;
    let now = Utc::now();
    let registry = ask(&state.supervisor, GetStatus, state.actor_timeout).await?;
    m.services(&registry, now);
    m.process(&state);
    // Database figures: at most once per TIPOFF_METRICS_DB_INTERVAL, and skipped (the families left
    // as last seen) while the database is down.
    m.database(&state, now).await?;

    let mut out = Vec::new();
    TextEncoder::new()
        .encode(&m.registry.gather(), &mut out)
        .map_err(|e| ApiError::Internal(format!("metrics encoding failed: {e}")))?;
    Ok(HttpResponse::Ok()
        .content_type("text/plain; version=0.0.4; charset=utf-8")
        .body(out))
}

impl Metrics {
    /// The supervisor's registry: state, restarts, ticks, errors, pace of every service.
    fn services(&self, registry: &tipoff_actors::Registry, now: chrono::DateTime<Utc>) {
        let m = self;
        m.service_interval.reset();
        m.service_since_success.reset();
        for s in &registry.services {
            let name = s.name.as_str();
            for st in SERVICE_STATES {
                m.service_state
                    .with_label_values(&[name, st.as_str()])
                    .set(i64::from(s.state == *st));
            }
            advance(&m.service_restarts.with_label_values(&[name]), s.restarts);
            advance(&m.service_ticks.with_label_values(&[name]), s.ticks);
            advance(&m.service_errors.with_label_values(&[name]), s.errors);
            if let Some(at) = s.last_success_at {
                m.service_since_success
                    .with_label_values(&[name])
                    .set((now - at).num_milliseconds().max(0) as f64 / 1000.0);
            }
            if let Some(secs) = s.interval_secs {
                let reason = s.interval_reason.as_deref().unwrap_or("");
                m.service_interval
                    .with_label_values(&[name, reason])
                    .set(secs);
            }
        }
    }

    /// This process: the pool, readiness, the lease, search and the read cache.
    fn process(&self, state: &AppState) {
        let m = self;
        let pool = state.store.pool_stats();
        m.db_pool.with_label_values(&["size"]).set(pool.size.into());
        m.db_pool.with_label_values(&["idle"]).set(pool.idle.into());
        m.db_pool.with_label_values(&["max"]).set(pool.max.into());
        m.db_healthy.set(i64::from(state.shared.db_healthy()));
        m.ready.set(i64::from(
            state.lifecycle.ready() && state.shared.db_healthy(),
        ));
        let lease = state.shared.lease();
        m.leader.set(i64::from(lease.leader));
        m.lease_epoch.set(lease.epoch.unwrap_or(0));
        advance(&m.leadership_changes, lease.changes);
        advance(&m.fenced_writes, tipoff_actors::Store::fenced_writes());
        advance(
            &m.transaction_retries,
            tipoff_actors::store::transaction_retries(),
        );
        let (batches, stakes) = state.stakes.counts();
        advance(&m.stake_batches, batches);
        advance(&m.stakes_batched, stakes);
        m.build_info
            .with_label_values(&[env!("CARGO_PKG_VERSION"), state.store.backend().as_str()])
            .set(1);

        let search = &state.search.stats;
        use std::sync::atomic::Ordering::Relaxed;
        advance(&m.embeddings_embedded, search.embedded_total.load(Relaxed));
        advance(
            &m.embeddings_errors,
            search.upstream_errors_total.load(Relaxed),
        );
        m.search_index_vectors
            .set(search.index_vectors.load(Relaxed) as i64);
        for mode in ["hybrid", "keyword"] {
            m.search_requests.with_label_values(&[mode]);
        }

        let cache = state.read_cache.stats();
        m.read_cache
            .with_label_values(&["entries"])
            .set(cache.entries as i64);
        m.read_cache
            .with_label_values(&["bytes"])
            .set(cache.bytes as i64);
        advance(&m.read_cache_events.with_label_values(&["hit"]), cache.hits);
        advance(
            &m.read_cache_events.with_label_values(&["miss"]),
            cache.misses,
        );
        advance(
            &m.read_cache_events.with_label_values(&["evicted"]),
            cache.evictions,
        );
    }

    /// The figures read from the database.
    async fn database(&self, state: &AppState, now: chrono::DateTime<Utc>) -> Result<(), ApiError> {
        let m = self;
        let mut refreshed = m.db_refreshed.lock().await;
        let fresh = refreshed.is_some_and(|at| at.elapsed() < m.db_interval);
        if !fresh && state.shared.db_healthy() {
            *refreshed = Some(std::time::Instant::now());
            m.db_refreshes.inc();
            if let Some((client, _)) = state.embeddings() {
                let model = client.model();
                let cutoff = state
                    .store
                    .open_embedding_job(model)
                    .await?
                    .map(|j| j.created_at);
                m.embeddings_backlog
                    .set(state.store.embedding_backlog_count(model, cutoff).await?);
                m.embeddings_vectors
                    .set(state.store.embedded_count(model).await?);
            }
            let counts = state.store.counts().await?;
            let outbox = state.store.outbox_stats(now).await?;
            let (claims, oldest_claim) = state.store.open_claims(now).await?;
            m.withdrawal_claims.set(claims);
            m.webhooks_down
                .set(state.store.webhooks_down().await?.len() as i64);
            m.deposits_quarantined.reset();
            for t in state.tokens() {
                m.deposits_quarantined.with_label_values(&[&t.name]).set(0);
            }
            for (token, n) in state.store.quarantine_counts().await? {
                m.deposits_quarantined.with_label_values(&[&token]).set(n);
            }
            m.withdrawal_oldest_claim.set(oldest_claim.unwrap_or(0.0));
            for st in tipoff_actors::store::IMPORT_STATES {
                let n = counts
                    .import_jobs
                    .iter()
                    .find(|(s, _)| s == st)
                    .map_or(0, |(_, n)| *n);
                m.import_jobs.with_label_values(&[st]).set(n);
            }
            let (total, done, failed) = counts.import_dates;
            m.import_dates.with_label_values(&["total"]).set(total);
            m.import_dates.with_label_values(&["done"]).set(done);
            m.import_dates.with_label_values(&["failed"]).set(failed);
            m.outbox_events
                .with_label_values(&["pending"])
                .set(outbox.pending);
            m.outbox_events
                .with_label_values(&["dead"])
                .set(outbox.dead);
            m.outbox_events
                .with_label_values(&["delivered"])
                .set(outbox.delivered);
            m.outbox_oldest_pending
                .with_label_values(&[])
                .set(outbox.oldest_pending_secs.unwrap_or(0.0));
            for (token, st, n) in &counts.deposits {
                advance(&m.deposits.with_label_values(&[token, st]), *n as u64);
            }
            for outcome in ["settled", "void"] {
                let n = counts
                    .settlements
                    .iter()
                    .find(|(s, _)| s == outcome)
                    .map_or(0, |(_, n)| *n);
                advance(&m.settlements.with_label_values(&[outcome]), n as u64);
            }
            for (token, slot, at) in &counts.cursors {
                m.watcher_cursor_slot.with_label_values(&[token]).set(*slot);
                m.watcher_cursor_age
                    .with_label_values(&[token])
                    .set((now - *at).num_milliseconds().max(0) as f64 / 1000.0);
            }
        }
        Ok(())
    }
}
