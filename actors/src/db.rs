//! The `db` service: the first child of the root supervisor, critical.
//!
//! The pool itself is opened, migrated and seeded by the daemon's startup (bounded by the
//! startup timeout, so an unreachable database stops the boot with a clear error) and shared
//! with HTTP handlers; this actor owns its health. On its timer it pings the database and
//! flips [`Shared::db_healthy`](crate::service::Shared): `/ready` answers 503 and dependent
//! services pause while it is false; it turns true again by itself when the database returns.
//!
//! Messages: [`Control`] (ping / stop).
//! Timers: the ping interval. Stops: at once, or after the ping in flight.

use std::time::Duration;

use actix::prelude::*;

use crate::service::{Control, ServiceCtx, TickGate};
use crate::store::Store;

/// The db health actor.
pub struct DbService {
    store: Store,
    svc: ServiceCtx,
    interval: Duration,
    gate: TickGate,
}

impl DbService {
    pub fn new(store: Store, svc: ServiceCtx, interval: Duration) -> Self {
        DbService {
            store,
            svc,
            interval,
            gate: TickGate::default(),
        }
    }

    fn ping(&mut self, ctx: &mut Context<Self>) {
        if !self.gate.ready() {
            return;
        }
        self.gate.begin(&self.svc);
        let store = self.store.clone();
        let bound = self.interval.max(Duration::from_secs(2));
        let fut = async move {
            match tokio::time::timeout(bound, store.ping()).await {
                Ok(res) => res.map_err(|e| e.to_string()),
                Err(_) => Err(format!("ping timed out after {bound:?}")),
            }
        };
        ctx.spawn(fut.into_actor(self).map(|res, act, ctx| {
            let stop = act.gate.end();
            let was_healthy = match &res {
                Ok(()) => {
                    act.svc.tick_ok();
                    act.svc.shared().set_db_healthy(true)
                }
                Err(e) => {
                    act.svc.tick_err(&format!("database unreachable: {e}"));
                    act.svc.shared().set_db_healthy(false)
                }
            };
            match (was_healthy, res.is_ok()) {
                (false, true) => tracing::info!(service = "db", "database is reachable again"),
                (true, false) => tracing::error!(
                    service = "db",
                    "database is unreachable; dependent services pause"
                ),
                _ => {}
            }
            act.svc.schedule(
                act.interval,
                format!("health ping: {}", humantime(act.interval)),
            );
            if stop {
                ctx.stop();
            }
        }));
    }
}

/// `5s`, `250ms`, `6h`: the short form used in interval reasons.
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

impl Actor for DbService {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Self::Context) {
        self.ping(ctx);
        ctx.run_interval(self.interval, |act, ctx| act.ping(ctx));
    }
}

impl Handler<Control> for DbService {
    type Result = ();

    fn handle(&mut self, msg: Control, ctx: &mut Self::Context) {
        // Nothing to wake: the ping runs on its own timer.
        self.gate.control(msg, ctx);
    }
}
