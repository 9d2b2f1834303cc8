//! The `db` service: the first child of the root supervisor, critical.
//!
//! The pool itself is opened, migrated and its catalog reconciled by the daemon's startup (bounded by the
//! startup timeout, so an unreachable database stops the boot with a clear error) and shared
//! with HTTP handlers; this actor owns its health. On its timer it pings the database and
//! flips [`Shared::db_healthy`](crate::service::Shared): `/ready` answers 503 and dependent
//! services pause while it is false; it turns true again by itself when the database returns.
//!
//! A [`Periodic`](crate::service::Periodic) job: messages `Control` (ping / stop),
//! the ping interval, stops at once or after the ping in flight.

use std::time::Duration;

use std::future::Future;
use std::pin::Pin;

use crate::service::{Every, Outcome, Periodic, ServiceCtx};
use crate::store::Store;

/// The db health actor.
/// The `db` job: pings the database and keeps the shared health flag; its actor is
/// [`DbService`]. It runs whatever the health (it is what sets it) and has nothing to wake.
pub struct Ping {
    store: Store,
    interval: Duration,
}

/// The `db` service's actor.
pub type DbService = Every<Ping>;

impl DbService {
    pub fn new(store: Store, svc: ServiceCtx, interval: Duration) -> Self {
        Every::of(Ping { store, interval }, svc)
    }
}

impl Periodic for Ping {
    type Done = Result<(), String>;
    const WHAT: &'static str = "health ping";
    const NEEDS_DB: bool = false;
    const WAKES: bool = false;

    fn interval(&self) -> Duration {
        self.interval
    }

    fn pass(&mut self) -> Pin<Box<dyn Future<Output = Self::Done>>> {
        let store = self.store.clone();
        let bound = self.interval.max(Duration::from_secs(2));
        Box::pin(async move {
            match tokio::time::timeout(bound, store.ping()).await {
                Ok(res) => res.map_err(|e| e.to_string()),
                Err(_) => Err(format!("ping timed out after {bound:?}")),
            }
        })
    }

    fn finished(&mut self, res: Self::Done, svc: &ServiceCtx) -> Outcome {
        let was_healthy = svc.shared().set_db_healthy(res.is_ok());
        match (was_healthy, res.is_ok()) {
            (false, true) => tracing::info!(service = "db", "database is reachable again"),
            (true, false) => tracing::error!(
                service = "db",
                "database is unreachable; dependent services pause"
            ),
            _ => {}
        }
        res.map_err(|e| format!("database unreachable: {e}")).into()
    }
}

pub fn humantime(d: Duration) -> String {
    let ms = d.as_millis();
    if ms % 3_600_000 == 0 && ms > 0 {
        format!("{}h", ms / 3_600_000)
    } else if ms % 60_000 == 0 && ms > 0 {
        format!("{}m", ms / 60_000)
    } else if ms % 1000 == 0 {
        format!("{}s", ms / 1000)
    } else {
        format!("{ms}ms")
    }
}
