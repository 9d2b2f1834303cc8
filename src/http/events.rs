//! Live events and the outbox's admin side.
//!
//! `GET /api/v1/events` is a Server-Sent Events stream of the outbox's domain events:
//! - filters: `types=market.settled,market.voided` and `league=nba` (events without a league,
//!   such as deposits, are left out when a league is asked for);
//! - the public sees the market events; the user and money events (`deposit.credited`,
//!   `withdrawal.*`, `user.registered`, `import.finished`) need the admin token;
//! - each event is `id: <outbox id>`, `event: <type>`, `data: <JSON body>`; a comment line is
//!   sent as a heartbeat when nothing happened for `sse_heartbeat`;
//! - resume: `Last-Event-ID` (header, or `last_event_id` in the query) replays the retained
//!   events after that id from the table (filtered by type and league in SQL) before going
//!   live; when some of them were already pruned, or the id is ahead of the newest event, a
//!   `reset` event says so first; an id that is not a whole number from 0 up is a 400;
//! - caps: at most `TIPOFF_SSE_MAX_STREAMS` streams at once, and
//!   `TIPOFF_SSE_MAX_STREAMS_PER_CLIENT` per client address; a stream beyond either is a 503;
//! - a client too slow for the live feed is caught up from the table, never dropped silently;
//! - at shutdown every stream gets a final `shutdown` event and ends, so the HTTP drain never
//!   waits on open streams.
//!
//! `GET /admin/outbox?state=dead` lists events; `POST /admin/outbox/{id}/retry` and
//! `POST /admin/outbox/retry-dead` put dead events back in the queue.

use std::collections::{HashMap, VecDeque};
use std::net::IpAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use actix_web::web::Bytes;
use actix_web::{web, HttpRequest, HttpResponse};
use serde::Deserialize;
use serde_json::json;
use tipoff_actors::store::{OutboxEvent, EVENT_TYPES, OUTBOX_STATES, PUBLIC_EVENT_TYPES};
use tipoff_actors::supervisor::{ask, WakeChild};
use tokio::sync::broadcast::error::RecvError;

use super::auth::{bearer, Admin, AuthLimiter, IsAdmin};
use super::read::{id_cursor, limit, not_found, page};
use super::{error::ApiError, AppState};

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EventsQuery {
    types: Option<String>,
    league: Option<String>,
    last_event_id: Option<String>,
}

/// Open streams against their caps.
pub struct StreamCaps {
    max: usize,
    per_client: usize,
    open: Arc<AtomicUsize>,
    clients: Arc<Mutex<HashMap<IpAddr, usize>>>,
}

/// One stream's place under the caps, given back when the stream ends.
struct Slot {
    open: Arc<AtomicUsize>,
    clients: Arc<Mutex<HashMap<IpAddr, usize>>>,
    client: Option<IpAddr>,
}

impl StreamCaps {
    pub fn new(max: usize, per_client: usize) -> Self {
        StreamCaps {
            max,
            per_client,
            open: Arc::new(AtomicUsize::new(0)),
            clients: Arc::new(Mutex::new(HashMap::new())),
        }
    }

    /// Streams open now.
    pub fn open(&self) -> usize {
        self.open.load(Ordering::Acquire)
    }

    fn take(&self, client: Option<IpAddr>) -> Result<Slot, ApiError> {
        if self
            .open
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| {
                (n < self.max).then_some(n + 1)
            })
            .is_err()
        {
            return Err(ApiError::Unavailable(format!(
                "{} live streams are open, the most this daemon serves (TIPOFF_SSE_MAX_STREAMS)",
                self.max
            )));
        }
        let mut slot = Slot {
            open: self.open.clone(),
            clients: self.clients.clone(),
            client: None,
        };
        if let Some(ip) = client {
            let mut clients = self.clients.lock().unwrap_or_else(|e| e.into_inner());
            let n = clients.entry(ip).or_insert(0);
            if *n >= self.per_client {
                return Err(ApiError::Unavailable(format!(
                    "this address has {} live streams open, the most one client may (TIPOFF_SSE_MAX_STREAMS_PER_CLIENT)",
                    self.per_client
                )));
            }
            *n += 1;
            slot.client = client;
        }
        Ok(slot)
    }
}

impl Drop for Slot {
    fn drop(&mut self) {
        self.open.fetch_sub(1, Ordering::AcqRel);
        if let Some(ip) = self.client {
            let mut clients = self.clients.lock().unwrap_or_else(|e| e.into_inner());
            if let Some(n) = clients.get_mut(&ip) {
                *n -= 1;
                if *n == 0 {
                    clients.remove(&ip);
                }
            }
        }
    }
}

/// Which events a stream carries.
#[derive(Debug, Clone)]
struct Filter {
    types: Vec<String>,
    league: Option<String>,
}

impl Filter {
    fn admits(&self, e: &OutboxEvent) -> bool {
        self.types.contains(&e.event_type)
            && self
                .league
                .as_ref()
                .is_none_or(|l| e.league.as_deref() == Some(l.as_str()))
    }
}

fn frame(e: &OutboxEvent) -> Bytes {
    let data = serde_json::to_string(&e.body()).unwrap_or_default();
    Bytes::from(format!(
        "id: {}\nevent: {}\ndata: {data}\n\n",
        e.id, e.event_type
    ))
}

/// Where a stream is.
enum Phase {
    /// Reading the table after `last_sent` (resume, or catching up after lagging).
    Replay,
    Live,
    Done,
}

struct Stream {
    state: web::Data<AppState>,
    filter: Filter,
    rx: tokio::sync::broadcast::Receiver<Arc<OutboxEvent>>,
    closing: tokio::sync::watch::Receiver<bool>,
    last_sent: i64,
    /// Ids sent (or skipped) lately, to tell a late commit from a repeat.
    recent: std::collections::BTreeSet<i64>,
    queue: VecDeque<Bytes>,
    phase: Phase,
    _slot: Slot,
}

impl Drop for Stream {
    fn drop(&mut self) {
        self.state.metrics.sse_stream_closed();
    }
}

const SHUTDOWN_FRAME: &str =
    "event: shutdown\ndata: {\"reason\":\"the daemon is shutting down; reconnect with Last-Event-ID\"}\n\n";

impl Stream {
    /// Records that the stream has seen event `id`; `false` when it had already. Ids above
    /// `last_sent` are new; a lower one is a late commit (PostgreSQL) unless recently seen.
    fn remember(&mut self, id: i64) -> bool {
        if id > self.last_sent {
            self.last_sent = id;
        } else if self.recent.contains(&id) || self.recent.first().is_none_or(|oldest| id < *oldest)
        {
            return false;
        }
        self.recent.insert(id);
        if self.recent.len() > 4096 {
            self.recent.pop_first();
        }
        true
    }

    async fn next_chunk(&mut self) -> Option<Bytes> {
        loop {
            if let Some(chunk) = self.queue.pop_front() {
                return Some(chunk);
            }
            if *self.closing.borrow() {
                if matches!(self.phase, Phase::Done) {
                    return None;
                }
                self.phase = Phase::Done;
                return Some(Bytes::from_static(SHUTDOWN_FRAME.as_bytes()));
            }
            match self.phase {
                Phase::Done => return None,
                Phase::Replay => match self
                    .state
                    .store
                    .events_matching(
                        self.last_sent,
                        &self.filter.types,
                        self.filter.league.as_deref(),
                        200,
                    )
                    .await
                {
                    Ok(events) if events.is_empty() => self.phase = Phase::Live,
                    Ok(events) => {
                        for e in events {
                            if self.remember(e.id) && self.filter.admits(&e) {
                                self.queue.push_back(frame(&e));
                            }
                        }
                    }
                    Err(e) => {
                        tracing::warn!(error = %e, "event stream cannot read the outbox; closing it");
                        self.phase = Phase::Done;
                        return Some(Bytes::from_static(b"event: error\ndata: {\"reason\":\"events are unavailable; reconnect with Last-Event-ID\"}\n\n"));
                    }
                },
                Phase::Live => {
                    let heartbeat = self.state.sse_heartbeat;
                    tokio::select! {
                        received = self.rx.recv() => match received {
                            Ok(e) => {
                                if self.remember(e.id) && self.filter.admits(&e) {
                                    return Some(frame(&e));
                                }
                            }
                            Err(RecvError::Lagged(missed)) => {
                                tracing::debug!(missed, "slow event stream caught up from the outbox");
                                self.phase = Phase::Replay;
                            }
                            Err(RecvError::Closed) => self.phase = Phase::Done,
                        },
                        _ = self.closing.changed() => {}
                        _ = tokio::time::sleep(heartbeat) => return Some(Bytes::from_static(b": heartbeat\n\n")),
                    }
                }
            }
        }
    }
}

/// `GET /api/v1/events`
pub async fn stream(
    req: HttpRequest,
    state: web::Data<AppState>,
    query: web::Query<EventsQuery>,
    admin: IsAdmin,
) -> Result<HttpResponse, ApiError> {
    let allowed: &[&str] = if admin.0 {
        EVENT_TYPES
    } else {
        PUBLIC_EVENT_TYPES
    };
    let types: Vec<String> = match query.types.as_deref().map(str::trim) {
        None | Some("") => allowed.iter().map(|t| t.to_string()).collect(),
        Some(list) => {
            let mut types = Vec::new();
            for t in list.split(',').map(str::trim).filter(|t| !t.is_empty()) {
                if !EVENT_TYPES.contains(&t) {
                    return Err(ApiError::BadRequest(format!(
                        "unknown event type `{t}` (known: {})",
                        EVENT_TYPES.join(", ")
                    )));
                }
                if !allowed.contains(&t) {
                    // A wrong token here answers differently from a right one: count it.
                    if bearer(&req).is_some() {
                        state.auth_limiter.failed(AuthLimiter::client(&req));
                    }
                    return Err(ApiError::Forbidden(format!(
                        "event type `{t}` needs the admin token (public: {})",
                        PUBLIC_EVENT_TYPES.join(", ")
                    )));
                }
                types.push(t.to_string());
            }
            types
        }
    };
    let league =
        super::read::league_filter(query.league.as_deref().filter(|l| !l.trim().is_empty()))?;
    let resume = req
        .headers()
        .get("last-event-id")
        .and_then(|v| v.to_str().ok())
        .map(str::to_string)
        .or_else(|| query.last_event_id.clone());
    let resume = match resume.as_deref().map(str::trim) {
        None | Some("") => None,
        Some(v) => Some(v.parse::<i64>().ok().filter(|n| *n >= 0).ok_or_else(|| {
            ApiError::BadRequest(format!(
                "Last-Event-ID `{}` is not an event id (a whole number from 0 to {})",
                super::body::bounded(v),
                i64::MAX
            ))
        })?),
    };
    if state.lifecycle.stopping() {
        return Err(ApiError::Unavailable("shutting down".into()));
    }
    let slot = state.streams.take(AuthLimiter::client(&req))?;

    // Subscribe before reading the table, so nothing falls between the two.
    let rx = state.events.subscribe();
    let mut queue = VecDeque::new();
    queue.push_back(Bytes::from_static(b"retry: 3000\n\n"));
    let (last_sent, phase) = match resume {
        Some(after) => {
            let newest = state.store.last_event_id().await?;
            let first = state.store.first_event_id().await?;
            if after > newest {
                queue.push_back(Bytes::from(format!(
                    "event: reset\ndata: {}\n\n",
                    json!({"reason": "Last-Event-ID is ahead of the newest event; the stream goes on from the newest", "newest": newest})
                )));
                (newest, Phase::Replay)
            } else {
                if first.is_some_and(|first| first > after.saturating_add(1)) {
                    queue.push_back(Bytes::from(format!(
                        "event: reset\ndata: {}\n\n",
                        json!({"reason": "events after Last-Event-ID were pruned", "oldest_retained": first})
                    )));
                }
                (after, Phase::Replay)
            }
        }
        None => (state.events.last_published(), Phase::Live),
    };
    state.metrics.sse_stream_opened();
    let stream = Stream {
        closing: state.lifecycle.closing(),
        state: state.clone(),
        filter: Filter { types, league },
        rx,
        last_sent,
        recent: std::collections::BTreeSet::new(),
        queue,
        phase,
        _slot: slot,
    };
    let body = futures_util::stream::unfold(stream, |mut s| async move {
        s.next_chunk()
            .await
            .map(|chunk| (Ok::<_, actix_web::Error>(chunk), s))
    });
    Ok(HttpResponse::Ok()
        .content_type("text/event-stream")
        .insert_header(("cache-control", "no-cache"))
        .insert_header(("x-accel-buffering", "no"))
        .streaming(body))
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OutboxQuery {
    state: Option<String>,
    limit: Option<String>,
    cursor: Option<String>,
}

/// An outbox event with its delivery state, as the admin sees it.
#[derive(serde::Serialize, schemars::JsonSchema)]
pub struct EventView {
    id: i64,
    #[serde(rename = "type")]
    event_type: String,
    league: Option<String>,
    created_at: chrono::DateTime<chrono::Utc>,
    /// The event's payload (its shape depends on the type).
    payload: serde_json::Value,
    /// `pending`, `delivered` or `dead`.
    state: String,
    attempts: i64,
    /// When the next delivery is due (pending events only).
    next_attempt_at: Option<chrono::DateTime<chrono::Utc>>,
    /// The webhook receivers that acknowledged it (hosts).
    delivered_to: Vec<String>,
    last_error: Option<String>,
    delivered_at: Option<chrono::DateTime<chrono::Utc>>,
}

fn event_json(e: &OutboxEvent) -> EventView {
    EventView {
        id: e.id,
        event_type: e.event_type.clone(),
        league: e.league.clone(),
        created_at: e.created_at,
        payload: e.body().payload,
        state: e.state.clone(),
        attempts: e.attempts,
        next_attempt_at: (e.state == "pending").then_some(e.next_attempt_at),
        delivered_to: e.acknowledged(),
        last_error: e.last_error.clone(),
        delivered_at: e.delivered_at,
    }
}

/// A page of outbox events with the backlog figures.
#[derive(serde::Serialize, schemars::JsonSchema)]
pub struct OutboxPage {
    items: Vec<EventView>,
    next: Option<String>,
    stats: tipoff_actors::store::OutboxStats,
}

/// How many dead events were queued again.
#[derive(serde::Serialize, schemars::JsonSchema)]
pub struct Requeued {
    requeued: u64,
}

/// `GET /admin/outbox?state=pending|delivered|dead&limit=&cursor=`: newest first.
pub async fn list(
    _: Admin,
    state: web::Data<AppState>,
    query: web::Query<OutboxQuery>,
) -> Result<HttpResponse, ApiError> {
    let wanted = match query.state.as_deref() {
        None | Some("") => None,
        Some(s) if OUTBOX_STATES.contains(&s) => Some(s),
        Some(s) => {
            return Err(ApiError::BadRequest(format!(
                "unknown state `{s}` (one of {})",
                OUTBOX_STATES.join(", ")
            )))
        }
    };
    let n = limit(query.limit.as_deref())?;
    let before = id_cursor(query.cursor.as_deref())?;
    let events = state.store.outbox_events(wanted, before, n + 1).await?;
    let stats = state.store.outbox_stats(chrono::Utc::now()).await?;
    let (items, next) = page(events, n, |e| e.id.to_string());
    Ok(HttpResponse::Ok().json(OutboxPage {
        items: items.iter().map(event_json).collect(),
        next,
        stats,
    }))
}

/// Nudges the outbox service (when it runs here) to deliver now.
async fn wake_outbox(state: &AppState) {
    let _ = ask(
        &state.supervisor,
        WakeChild {
            name: "outbox".into(),
        },
        state.actor_timeout,
    )
    .await;
}

/// `POST /admin/outbox/{id}/retry`: a dead event goes back in the queue with fresh attempts.
pub async fn retry(
    _: Admin,
    state: web::Data<AppState>,
    path: web::Path<i64>,
) -> Result<HttpResponse, ApiError> {
    let id = path.into_inner();
    let event = state
        .store
        .retry_outbox_event(id, chrono::Utc::now())
        .await
        .map_err(not_found("event", id))?;
    tracing::info!(event = id, "dead event queued again by an admin");
    wake_outbox(&state).await;
    Ok(HttpResponse::Ok().json(event_json(&event)))
}

/// `POST /admin/outbox/retry-dead`: every dead event goes back in the queue.
pub async fn retry_dead(_: Admin, state: web::Data<AppState>) -> Result<HttpResponse, ApiError> {
    let n = state.store.retry_dead_events(chrono::Utc::now()).await?;
    tracing::info!(events = n, "dead events queued again by an admin");
    wake_outbox(&state).await;
    Ok(HttpResponse::Ok().json(Requeued { requeued: n }))
}
