//! The `listener` service: on PostgreSQL, every replica keeps one `LISTEN` connection (skipped
//! on SQLite, where there is no other replica to hear from). Owned by the root supervisor,
//! started after `leader`; optional and permanent.
//!
//! - `tipoff_writes`: another replica committed games or markets ⇒ this process's read caches
//!   are dropped at once, so a follower serves a settlement within milliseconds rather than
//!   after the cache TTL. Stakes committed here (they move market pools) are announced in one
//!   NOTIFY per 50 ms at most, on this service's timer.
//! - `tipoff_lease`: a leader released the lease ⇒ `leader` is woken to take it now.
//! - `tipoff_control`: a follower forwarded an admin command for a singleton (wake an import,
//!   restart a poller) ⇒ the leader carries it out; other replicas ignore it.
//!
//! A lost connection is reported as an error and re-established with backoff; meanwhile the
//! read caches fall back to their TTL, and every (re)connection drops them once (what was
//! announced in between was missed).
//!
//! Messages: [`Control`] (ping / stop; nothing to finish). Timers: none; the loop waits on the
//! connection.

use std::time::Duration;

use actix::prelude::*;
use serde::{Deserialize, Serialize};

use crate::restart::exponential;
use crate::service::{Control, ServiceCtx};
use crate::store::lease::{CONTROL_CHANNEL, LEASE_CHANNEL, WRITES_CHANNEL};
use crate::store::Store;
use crate::supervisor::{RestartChild, StartChild, StopChild, WakeChild};

/// An admin command a follower forwards to the leader over `tipoff_control`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Forwarded {
    pub service: String,
    /// `wake`, `start`, `stop` or `restart`.
    pub action: String,
    /// The replica that forwarded it.
    pub from: String,
}

/// How often stakes committed here are announced to the other replicas (in one NOTIFY).
const ANNOUNCE_EVERY: Duration = Duration::from_millis(50);

pub struct Listener {
    store: Store,
    svc: ServiceCtx,
}

impl Listener {
    pub fn new(store: Store, svc: ServiceCtx) -> Self {
        Listener { store, svc }
    }
}

/// Carries out a forwarded command on this replica, if it leads.
fn act_on(svc: &ServiceCtx, payload: &str) {
    let Ok(cmd) = serde_json::from_str::<Forwarded>(payload) else {
        tracing::warn!(payload = %payload.chars().take(200).collect::<String>(), "ignored a malformed forwarded command");
        return;
    };
    if !svc.shared().leader() {
        return;
    }
    let Some(sup) = svc.supervisor() else { return };
    tracing::info!(service = %cmd.service, action = %cmd.action, from = %cmd.from, "forwarded command");
    let name = cmd.service.clone();
    match cmd.action.as_str() {
        "wake" => sup.do_send(WakeChild { name }),
        "start" => sup.do_send(StartChild { name }),
        "stop" => sup.do_send(StopChild { name }),
        "restart" => sup.do_send(RestartChild { name }),
        other => {
            tracing::warn!(action = %other, "ignored a forwarded command with an unknown action")
        }
    }
}

/// The listening connection. Dropped where no Tokio runtime runs (an arbiter's runtime going
/// away at shutdown, with this loop still waiting), it is left to the process's end instead:
/// sqlx's drop spawns a task to hand the connection back, which panics outside a runtime, and
/// a panic in that cleanup aborted the whole process.
struct Listening(Option<sqlx::postgres::PgListener>);

impl Listening {
    async fn recv(&mut self) -> Result<Option<sqlx::postgres::PgNotification>, sqlx::Error> {
        self.0
            .as_mut()
            .expect("held until dropped")
            .try_recv()
            .await
    }
}

impl Drop for Listening {
    fn drop(&mut self) {
        if let Some(listener) = self.0.take() {
            if tokio::runtime::Handle::try_current().is_ok() {
                drop(listener);
            } else {
                std::mem::forget(listener);
            }
        }
    }
}

impl Actor for Listener {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Self::Context) {
        let (store, svc) = (self.store.clone(), self.svc.clone());
        let run = async move {
            let mut failures = 0u32;
            loop {
                let mut listener = match store
                    .listen(&[WRITES_CHANNEL, LEASE_CHANNEL, CONTROL_CHANNEL])
                    .await
                {
                    Ok(Some(listener)) => Listening(Some(listener)),
                    Ok(None) => return,
                    Err(e) => {
                        failures += 1;
                        let wait = exponential(
                            Duration::from_millis(250),
                            Duration::from_secs(10),
                            failures - 1,
                        );
                        svc.tick_err(&format!(
                            "cannot listen ({failures} in a row): {e}; read caches fall back to their TTL"
                        ));
                        svc.schedule(wait, "reconnecting");
                        tokio::time::sleep(wait).await;
                        continue;
                    }
                };
                failures = 0;
                Store::invalidate_reads();
                svc.tick_begin();
                svc.tick_ok();
                svc.schedule(Duration::ZERO, "listening");
                tracing::info!("listening for other replicas");
                loop {
                    match listener.recv().await {
                        Ok(Some(n)) => match n.channel() {
                            WRITES_CHANNEL => Store::invalidate_reads(),
                            LEASE_CHANNEL => {
                                if let Some(sup) = svc.supervisor() {
                                    sup.do_send(WakeChild {
                                        name: "leader".into(),
                                    });
                                }
                            }
                            CONTROL_CHANNEL => act_on(&svc, n.payload()),
                            _ => {}
                        },
                        Ok(None) => {
                            Store::invalidate_reads();
                            svc.tick_err(&"the listening connection was lost; reconnecting (read caches fall back to their TTL)");
                        }
                        Err(e) => {
                            svc.tick_err(&format!("listening failed: {e}; reconnecting"));
                            break;
                        }
                    }
                }
                drop(listener);
                tokio::time::sleep(Duration::from_millis(250)).await;
            }
        };
        ctx.spawn(run.into_actor(self));
        // Stakes are announced in batches: one NOTIFY per interval at most, whatever the rate.
        ctx.run_interval(ANNOUNCE_EVERY, |act, ctx| {
            if Store::take_unannounced() {
                let store = act.store.clone();
                ctx.spawn(
                    async move {
                        if let Err(e) = store.notify(WRITES_CHANNEL, "").await {
                            tracing::debug!(error = %e, "batched write announcement failed; caches fall back to their TTL");
                        }
                    }
                    .into_actor(act),
                );
            }
        });
    }
}

impl Handler<Control> for Listener {
    type Result = ();

    fn handle(&mut self, msg: Control, ctx: &mut Self::Context) {
        if msg == Control::Stop {
            // Nothing is in flight that could be lost: notifications are transient.
            ctx.stop();
        }
    }
}
