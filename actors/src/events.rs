//! The `events` service: feeds the live SSE stream (`GET /api/v1/events`) from the outbox.
//!
//! Every replica runs one (it is not a singleton: each serves its own SSE clients). It reads
//! events newer than the last one it published, every poll interval, and publishes them on the
//! [`EventHub`]'s broadcast channel, which each open stream subscribes to. Reading the table
//! (rather than hearing about writes in-process) means a stream sees the events of every
//! writer: the pollers, the watchers, the HTTP handlers, and other replicas on one database.
//!
//! Ids are allocated when a transaction inserts and become visible when it commits, so on
//! PostgreSQL a lower id can appear after a higher one. An id skipped over is remembered as a
//! gap and looked up again on the following polls for a short while (a rolled-back
//! transaction leaves a gap that never fills).
//!
//! Messages: [`Control`] (ping / stop / wake: poll now).
//! Timers: one poll every interval. Stops: at once, or when the poll in flight ends.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use std::future::Future;
use std::pin::Pin;

use tokio::sync::broadcast;

use crate::service::{Every, Outcome, Periodic, ServiceCtx};
use crate::store::{OutboxEvent, Store, StoreError};

/// How long an id skipped over is looked for again.
const GAP_PATIENCE: Duration = Duration::from_secs(10);
/// Most gap ids remembered at once.
const GAP_LIMIT: usize = 1000;

/// What the `events` service and the SSE handlers share.
#[derive(Debug)]
pub struct EventHub {
    tx: broadcast::Sender<Arc<OutboxEvent>>,
    /// The highest id published.
    last: AtomicI64,
}

impl EventHub {
    /// A hub whose subscribers may fall `capacity` events behind before they must re-read from
    /// the table; it publishes events after `last`.
    pub fn new(capacity: usize, last: i64) -> Arc<Self> {
        let (tx, _) = broadcast::channel(capacity.max(16));
        Arc::new(EventHub {
            tx,
            last: AtomicI64::new(last),
        })
    }

    pub fn subscribe(&self) -> broadcast::Receiver<Arc<OutboxEvent>> {
        self.tx.subscribe()
    }

    pub fn last_published(&self) -> i64 {
        self.last.load(Ordering::Acquire)
    }

    /// Open streams.
    pub fn subscribers(&self) -> usize {
        self.tx.receiver_count()
    }

    fn publish(&self, event: OutboxEvent) {
        self.last.fetch_max(event.id, Ordering::AcqRel);
        let _ = self.tx.send(Arc::new(event));
    }
}

/// One poll: publishes the events after the hub's last id and any late commits among `gaps`.
pub async fn poll_once(
    store: &Store,
    hub: &EventHub,
    gaps: &mut BTreeMap<i64, Instant>,
) -> Result<usize, StoreError> {
    let mut published = 0;
    if !gaps.is_empty() {
        let now = Instant::now();
        gaps.retain(|_, seen| now.duration_since(*seen) < GAP_PATIENCE);
        let ids: Vec<i64> = gaps.keys().copied().collect();
        for event in store.events_by_ids(&ids).await? {
            gaps.remove(&event.id);
            hub.publish(event);
            published += 1;
        }
    }
    loop {
        let mut last = hub.last_published();
        let events = store.events_after(last, 500).await?;
        let n = events.len();
        for event in events {
            for missing in (last + 1)..event.id {
                if gaps.len() >= GAP_LIMIT {
                    break;
                }
                gaps.insert(missing, Instant::now());
            }
            last = event.id;
            hub.publish(event);
            published += 1;
        }
        if n < 500 {
            return Ok(published);
        }
    }
}

/// The `events` job: reads new outbox events for the live streams; its actor is
/// [`EventsFeed`]. Ids skipped by a commit still in flight (PostgreSQL) are looked for again
/// for [`GAP_PATIENCE`].
pub struct Feed {
    store: Store,
    hub: Arc<EventHub>,
    interval: Duration,
    gaps: BTreeMap<i64, Instant>,
}

/// The `events` service's actor.
pub type EventsFeed = Every<Feed>;

/// The `events` service's settings.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize, schemars::JsonSchema)]
#[serde(default)]
pub struct EventsSettings {
    /// How often the `events` service reads new events for the live streams.
    #[serde(rename = "events_poll_interval", with = "crate::settings::NonZero")]
    pub poll_interval: Duration,
}

impl Default for EventsSettings {
    fn default() -> Self {
        EventsSettings {
            poll_interval: Duration::from_millis(500),
        }
    }
}

impl crate::settings::Section for EventsSettings {}

impl EventsFeed {
    pub fn new(store: Store, hub: Arc<EventHub>, interval: Duration, svc: ServiceCtx) -> Self {
        Every::of(
            Feed {
                store,
                hub,
                interval,
                gaps: BTreeMap::new(),
            },
            svc,
        )
    }
}

impl Periodic for Feed {
    type Done = (Result<usize, StoreError>, BTreeMap<i64, Instant>);
    const WHAT: &'static str = "poll";

    fn interval(&self) -> Duration {
        self.interval
    }

    /// Passes follow each other with no pause: each waits for an event's commit in this
    /// process, or the poll interval, whichever comes first (events of other replicas, and
    /// any wake missed, are read at the interval).
    fn pause(&self) -> Duration {
        Duration::ZERO
    }

    fn pass(&mut self) -> Pin<Box<dyn Future<Output = Self::Done>>> {
        let (store, hub, interval) = (self.store.clone(), self.hub.clone(), self.interval);
        let mut gaps = std::mem::take(&mut self.gaps);
        Box::pin(async move {
            // Bounded well inside the supervisor's hang deadline, whatever the interval.
            crate::store::event_committed(interval.min(Duration::from_secs(10))).await;
            let res = poll_once(&store, &hub, &mut gaps).await;
            (res, gaps)
        })
    }

    fn finished(&mut self, (res, gaps): Self::Done, _: &ServiceCtx) -> Outcome {
        self.gaps = gaps;
        res.map(drop).map_err(|e| e.to_string()).into()
    }
}
