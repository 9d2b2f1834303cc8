//! The HTTP API (actix-web). Handlers hold the root supervisor's address and the store (in
//! [`AppState`]): reads go to the store directly, commands go to the supervisor as messages
//! bounded by `actor_timeout` (a dead or busy actor is a 503, never a hang).
//!
//! - `read.rs`: `/api/v1/leagues`, `/api/v1/games`, `/api/v1/markets` (store reads).
//! - `search.rs`: `/api/v1/markets/search` (keyword, fused with vectors when configured) and
//!   `/admin/embeddings` (backlog, re-embed jobs).
//! - `imports.rs`: `/admin/imports` (manual import jobs, run by the league pollers).
//! - `money.rs`: users and API keys, `/api/v1/me/*` (balances, ledger, stakes, withdrawals),
//!   stakes on markets, and the admin side of deposits, withdrawals and the ledger audit.
//! - `ops.rs`: `/health`, `/ready`, `/debug/status`, `/admin/services/{name}/{action}`.
//! - `error.rs`: the JSON error format; `auth.rs`: the admin bearer token; `body.rs`: JSON
//!   bodies (16 KiB at most, parsed strictly, bounded error messages).

pub mod api;
pub mod auth;
pub mod body;
pub mod cache;
mod dashboard;
pub mod error;
pub mod events;
mod imports;
pub mod metrics;
mod money;
mod ops;
mod read;
pub mod schema;
mod search;

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use actix::Addr;
use actix_web::{dev::Service as _, web, HttpResponse};
use chrono::{DateTime, Utc};
use futures_util::FutureExt;
use tipoff_actors::{Shared, Store, Supervisor};
use tracing::Instrument;

pub use auth::AdminToken;
pub use error::ApiError;

/// Process lifecycle flags `/ready` reads, and the signal that closes the live streams.
#[derive(Debug)]
pub struct Lifecycle {
    ready: AtomicBool,
    stopping: AtomicBool,
    closing: tokio::sync::watch::Sender<bool>,
    pub started_at: DateTime<Utc>,
}

impl Lifecycle {
    pub fn new() -> Self {
        Lifecycle {
            ready: AtomicBool::new(false),
            stopping: AtomicBool::new(false),
            closing: tokio::sync::watch::channel(false).0,
            started_at: Utc::now(),
        }
    }

    pub fn set_ready(&self) {
        self.ready.store(true, Ordering::Release);
    }

    pub fn begin_stopping(&self) {
        self.stopping.store(true, Ordering::Release);
    }

    pub fn ready(&self) -> bool {
        self.ready.load(Ordering::Acquire) && !self.stopping()
    }

    pub fn stopping(&self) -> bool {
        self.stopping.load(Ordering::Acquire)
    }

    /// Tells every open SSE stream to send its final event and end.
    pub fn close_streams(&self) {
        self.closing.send_replace(true);
    }

    /// Resolves (to `true`) once [`close_streams`](Self::close_streams) was called.
    pub fn closing(&self) -> tokio::sync::watch::Receiver<bool> {
        self.closing.subscribe()
    }
}

/// What a configuration reload (SIGHUP) can change for the handlers.
#[derive(Debug, Clone, Default)]
pub struct Reloadable {
    /// Leagues whose pollers configuration enables.
    pub leagues_enabled: Vec<String>,
    /// Tokens and the money limits.
    pub money: tipoff_actors::money::MoneySettings,
    /// The embeddings API for query vectors (hybrid search), when configured.
    pub embeddings: Option<tipoff_actors::embeddings::EmbeddingsClient>,
    /// Longest a search waits for its query's vector before answering by keyword alone.
    pub search_embed_timeout: Duration,
}

impl Default for Lifecycle {
    fn default() -> Self {
        Self::new()
    }
}

/// What every handler can reach.
pub struct AppState {
    pub supervisor: Addr<Supervisor>,
    pub store: Store,
    pub shared: Arc<Shared>,
    pub lifecycle: Arc<Lifecycle>,
    pub admin: AdminToken,
    pub actor_timeout: Duration,
    pub environment: &'static str,
    /// Settings a reload may change.
    pub live: std::sync::RwLock<Reloadable>,
    /// Serialized public list answers, current until the next write.
    pub read_cache: cache::ReadCache,
    /// Whether `POST /api/v1/users` registers.
    pub registration: bool,
    /// New outbox events for the live streams.
    pub events: Arc<tipoff_actors::events::EventHub>,
    pub sse_heartbeat: Duration,
    /// Whether `/docs` and `/openapi.json` are served.
    pub docs: bool,
    /// Dashboard sessions.
    pub sessions: auth::Sessions,
    /// Failed admin authentications per client address.
    pub auth_limiter: auth::AuthLimiter,
    /// Live streams open, against their caps.
    pub streams: events::StreamCaps,
    pub metrics: metrics::Metrics,
    /// The vector index of hybrid search and the search figures.
    pub search: Arc<tipoff_actors::search::SearchHub>,
    /// Group commit of stake requests.
    pub stakes: Arc<tipoff_actors::stakes::StakeBatcher>,
    /// The users of the API keys seen in the last second.
    pub callers: money::Callers,
}

impl AppState {
    pub fn leagues_enabled(&self) -> Vec<String> {
        self.live
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .leagues_enabled
            .clone()
    }

    pub fn tokens(&self) -> Vec<tipoff_actors::solana::Token> {
        self.live
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .money
            .tokens
            .clone()
    }

    /// The withdrawal rules in force: (minimum per token, pending cap per user).
    pub fn withdrawal_rules(&self) -> (crate::config::PerToken, i64) {
        let live = self.live.read().unwrap_or_else(|e| e.into_inner());
        (
            live.money.min_withdrawal.clone(),
            live.money.max_pending_withdrawals,
        )
    }

    /// The smallest stake of `token`, in base units.
    pub fn min_stake(&self, token: &str) -> i64 {
        let live = self.live.read().unwrap_or_else(|e| e.into_inner());
        live.money.min_stake.of(token)
    }

    /// The embeddings client and the query deadline, when hybrid search is configured.
    pub fn embeddings(&self) -> Option<(tipoff_actors::embeddings::EmbeddingsClient, Duration)> {
        let live = self.live.read().unwrap_or_else(|e| e.into_inner());
        live.embeddings
            .clone()
            .map(|c| (c, live.search_embed_timeout))
    }

    pub fn set_live(&self, live: Reloadable) {
        *self.live.write().unwrap_or_else(|e| e.into_inner()) = live;
    }
}

/// Registers every route.
pub fn routes(cfg: &mut web::ServiceConfig) {
    cfg.app_data(
        web::JsonConfig::default()
            .limit(body::MAX_BODY)
            .error_handler(|err, _| body::json_error(&err).into()),
    )
    .app_data(web::PathConfig::default().error_handler(|err, _| {
        ApiError::BadRequest(body::bounded(&format!("invalid path: {err}"))).into()
    }))
    .app_data(web::QueryConfig::default().error_handler(|err, _| {
        ApiError::BadRequest(body::bounded(&format!("invalid query: {err}"))).into()
    }))
    .configure(api::register)
    .default_service(web::to(not_found));
}

async fn not_found(req: actix_web::HttpRequest) -> Result<HttpResponse, ApiError> {
    Err(ApiError::NotFound(format!(
        "no route for {} {}",
        req.method(),
        req.path()
    )))
}

/// Builds the actix-web application around `state`, with a tracing span per request.
pub fn app(
    state: web::Data<AppState>,
) -> actix_web::App<
    impl actix_web::dev::ServiceFactory<
        actix_web::dev::ServiceRequest,
        Config = (),
        Response = actix_web::dev::ServiceResponse<impl actix_web::body::MessageBody>,
        Error = actix_web::Error,
        InitError = (),
    >,
> {
    let metrics = state.metrics.clone();
    actix_web::App::new()
        .app_data(state)
        .configure(routes)
        .wrap_fn(|req, srv| {
            use futures_util::future::{ready, Either};
            match unknown_parameters(&req) {
                Some(err) => {
                    Either::Left(ready(Ok(req.error_response(err).map_into_right_body())))
                }
                None => Either::Right(srv.call(req).map(|res| res.map(|r| r.map_into_left_body()))),
            }
        })
        // No answer is ever to be sniffed into another type than the one it declares.
        .wrap(actix_web::middleware::DefaultHeaders::new().add(("X-Content-Type-Options", "nosniff")))
        .wrap_fn(move |mut req, srv| {
            drop_empty_parameters(&mut req);
            let span = tracing::info_span!("http", method = %req.method(), path = %req.path());
            let started = Instant::now();
            let inner = span.clone();
            let route = req.match_pattern().unwrap_or_else(|| "unmatched".to_string());
            let method = req.method().to_string();
            let metrics = metrics.clone();
            srv.call(req).instrument(span).map(move |res| {
                if let Ok(res) = &res {
                    let status = res.status().as_u16();
                    metrics.observe_request(&route, &method, status, started.elapsed());
                    tracing::debug!(parent: &inner, status, elapsed_us = started.elapsed().as_micros() as u64, "request");
                }
                res
            })
        })
}

/// A 400 naming the query parameters the matched route does not take (a typo is never
/// silently ignored, and junk parameters cannot multiply cache keys).
fn unknown_parameters(req: &actix_web::dev::ServiceRequest) -> Option<ApiError> {
    let query = req.query_string();
    if query.is_empty() {
        return None;
    }
    let pattern = req.match_pattern()?;
    let known = api::query_names(req.method().as_str(), &pattern)?;
    // Names as sent; one with an escape is decoded before it is compared.
    let is_known = |raw: &str| {
        if !raw.contains(['%', '+']) {
            return known.contains(&raw);
        }
        let decoded: Vec<(String, String)> =
            serde_urlencoded::from_str(&format!("{raw}=")).unwrap_or_default();
        decoded
            .first()
            .is_some_and(|(name, _)| known.contains(&name.as_str()))
    };
    let mut unknown: Vec<&str> = Vec::new();
    for name in query
        .split('&')
        .filter(|p| !p.is_empty())
        .map(|p| p.split('=').next().unwrap_or(p))
    {
        if !is_known(name) && !unknown.contains(&name) {
            unknown.push(name);
        }
    }
    if unknown.is_empty() {
        return None;
    }
    let named = unknown
        .iter()
        .take(5)
        .map(|n| format!("`{}`", body::bounded(n)))
        .collect::<Vec<_>>()
        .join(", ");
    let takes = if known.is_empty() {
        "no query parameters".to_string()
    } else {
        known.join(", ")
    };
    Some(ApiError::BadRequest(body::bounded(&format!(
        "unknown query parameter {named}: {pattern} takes {takes}"
    ))))
}

/// `?limit=&cursor=` is the same request as no `limit` and no `cursor`: a parameter given with
/// an empty value is dropped before any handler reads the query.
fn drop_empty_parameters(req: &mut actix_web::dev::ServiceRequest) {
    let Some(query) = req.uri().query() else {
        return;
    };
    if !query
        .split('&')
        .any(|p| p.is_empty() || p.ends_with('=') || !p.contains('='))
    {
        return;
    }
    let kept: Vec<&str> = query
        .split('&')
        .filter(|p| !p.is_empty() && !p.ends_with('=') && p.contains('='))
        .collect();
    let path = req.uri().path().to_string();
    let rebuilt = if kept.is_empty() {
        path
    } else {
        format!("{path}?{}", kept.join("&"))
    };
    if let Ok(uri) = rebuilt.parse::<actix_web::http::Uri>() {
        // Routing reads the path (unchanged); extractors read the query from the URI.
        req.head_mut().uri = uri;
    }
}
