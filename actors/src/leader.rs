//! The `leader` service: holds the leader lease on PostgreSQL (SQLite's one process always
//! leads, epoch 1, and this service is skipped there). Owned by the root supervisor, started
//! right after `db`; critical and permanent.
//!
//! - **Renew**: every TTL/3 (and at once on [`Control::Wake`], e.g. when another replica
//!   released the lease) it takes or renews the lease with one compare-and-set statement on
//!   the database's clock ([`Store::acquire_lease`]). Holding it, this instance counts itself
//!   leader until a local bound: the instant the statement was sent, plus the TTL, minus a
//!   margin of TTL/5. So when renewals fail (database unreachable, process paused) it steps
//!   down before the lease can expire in the database and be taken by another replica.
//! - **Follow**: each change of role or epoch is recorded in [`Shared`] and the supervisor is
//!   told ([`FollowLease`]): singletons start on the leader, stop on a follower, and restart
//!   under a new epoch. A bound check runs every TTL/10 (at most 250 ms) between renewals.
//! - **Step down** (`POST /admin/leader/step-down`, through [`Shared::request_step_down`] and a
//!   wake): the singletons stop (current tick finished), then the lease is released and the
//!   other replicas are told; this instance does not take the lease again for one TTL.
//! - **Stop** (shutdown, restart, reload): the same release, after the renewal in flight, so
//!   another replica takes over at once instead of after the TTL.
//!
//! Messages: [`Control`]. Timers: renew (TTL/3), local bound check.

use std::time::{Duration, Instant};

use actix::prelude::*;

use crate::db::humantime;
use crate::service::{Control, LeaseView, ServiceCtx, StepDown};
use crate::store::lease::Lease;
use crate::store::{Store, StoreError};
use crate::supervisor::FollowLease;

/// How long the supervisor may take to stop the singletons before the lease is released anyway.
const FOLLOW_TIMEOUT: Duration = Duration::from_secs(30);
/// Bound on releasing the lease (one statement).
const RELEASE_TIMEOUT: Duration = Duration::from_secs(3);

/// The leader lease (PostgreSQL).
#[derive(
    Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize, schemars::JsonSchema,
)]
#[serde(default)]
pub struct LeaderSettings {
    /// The leader lease's time to live, renewed every third of it (at least 1s); PostgreSQL
    /// also ends a session idle in a transaction this long.
    #[serde(rename = "leader_ttl", deserialize_with = "ttl")]
    #[serde(serialize_with = "crate::settings::duration::serialize")]
    pub ttl: Duration,
}

impl Default for LeaderSettings {
    fn default() -> Self {
        LeaderSettings {
            ttl: Duration::from_secs(15),
        }
    }
}

impl crate::settings::Section for LeaderSettings {}

fn ttl<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
    match crate::settings::duration::deserialize(d)? {
        t if t < Duration::from_secs(1) => Err(serde::de::Error::custom(
            "must be at least 1s (it is renewed every third of it)",
        )),
        t => Ok(t),
    }
}

impl LeaderSettings {
    pub fn renew_every(&self) -> Duration {
        self.ttl / 3
    }

    /// Kept between this instance's local bound and the database's expiry.
    pub fn margin(&self) -> Duration {
        self.ttl / 5
    }
}

/// What `instance` knows of the lease after the database answered `lease` to a statement sent
/// at `sent`: leader until the local bound, or a follower naming the holder.
pub fn view_of(
    lease: &Lease,
    instance: &str,
    sent: Instant,
    settings: &LeaderSettings,
) -> LeaseView {
    if lease.held_by(instance) {
        return LeaseView {
            leader: true,
            leader_instance: Some(instance.to_string()),
            epoch: Some(lease.epoch),
            lease_expires_at: Some(lease.expires_at),
            changes: 0,
            valid_until: Some(sent + settings.ttl - settings.margin()),
        };
    }
    let live = lease.expires_at > lease.now && lease.holder.as_deref() != Some(instance);
    LeaseView {
        leader: false,
        leader_instance: live.then(|| lease.holder.clone()).flatten(),
        epoch: (lease.epoch > 0).then_some(lease.epoch),
        lease_expires_at: (lease.epoch > 0).then_some(lease.expires_at),
        changes: 0,
        valid_until: None,
    }
}

/// Why the lease is being given up.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Leaving {
    StepDown,
    Stop,
}

pub struct Leader {
    store: Store,
    svc: ServiceCtx,
    settings: LeaderSettings,
    /// A renewal (or a release) is in flight.
    busy: bool,
    stop_requested: bool,
    /// No taking the lease before this (after a step-down).
    hold_off_until: Option<Instant>,
}

impl Leader {
    pub fn new(store: Store, settings: LeaderSettings, svc: ServiceCtx) -> Self {
        Leader {
            store,
            svc,
            settings,
            busy: false,
            stop_requested: false,
            hold_off_until: None,
        }
    }

    fn instance(&self) -> String {
        self.svc.shared().instance_id().to_string()
    }

    fn follow(&self) {
        if let Some(sup) = self.svc.supervisor() {
            sup.do_send(FollowLease);
        }
    }

    /// One renewal (or acquisition) attempt.
    fn renew(&mut self, ctx: &mut Context<Self>) {
        if self.busy {
            return;
        }
        if self.stop_requested {
            self.leave(Leaving::Stop, ctx);
            return;
        }
        if self.svc.shared().step_down_pending() {
            self.leave(Leaving::StepDown, ctx);
            return;
        }
        let holding_off = self.hold_off_until.is_some_and(|t| Instant::now() < t);
        self.busy = true;
        self.svc.tick_begin();
        let store = self.store.clone();
        let instance = self.instance();
        let ttl = self.settings.ttl;
        let bound = self.settings.renew_every().max(Duration::from_millis(200));
        let sent = Instant::now();
        let fut = async move {
            let attempt = async {
                if holding_off {
                    store.current_lease().await
                } else {
                    store.acquire_lease(&instance, ttl).await.map(Some)
                }
            };
            match tokio::time::timeout(bound, attempt).await {
                Ok(res) => res.map_err(|e| format!("lease renewal failed: {e}")),
                Err(_) => Err(format!("lease renewal timed out after {bound:?}")),
            }
        };
        ctx.spawn(fut.into_actor(self).map(move |res, act, ctx| {
            act.busy = false;
            match res {
                Ok(lease) => {
                    act.svc.tick_ok();
                    act.record(lease.as_ref(), sent);
                }
                Err(e) => act.svc.tick_err(&e),
            }
            let lease = act.svc.shared().lease();
            let every = act.settings.renew_every();
            let reason = if lease.leader {
                format!(
                    "leader (epoch {}): renew every {}",
                    lease.epoch.unwrap_or_default(),
                    humantime(every)
                )
            } else {
                format!(
                    "follower (leader: {}): try every {}",
                    lease.leader_instance.as_deref().unwrap_or("none"),
                    humantime(every)
                )
            };
            act.svc.schedule(every, reason);
            if act.stop_requested {
                act.leave(Leaving::Stop, ctx);
            } else if act.svc.shared().step_down_pending() {
                act.leave(Leaving::StepDown, ctx);
            }
        }));
    }

    /// Records what the database answered and tells the supervisor when the role changed.
    fn record(&mut self, lease: Option<&Lease>, sent: Instant) {
        let shared = self.svc.shared().clone();
        let before = shared.leading_epoch();
        let instance = self.instance();
        let view = match lease {
            Some(l) if !self.stop_requested => view_of(l, &instance, sent, &self.settings),
            Some(l) => LeaseView {
                leader: false,
                ..view_of(l, &instance, sent, &self.settings)
            },
            None => LeaseView::default(),
        };
        shared.set_lease(view);
        let after = shared.leading_epoch();
        if before != after {
            match after {
                Some(epoch) => tracing::info!(epoch, "leader lease taken; singletons start here"),
                None => tracing::info!(
                    leader = shared.lease().leader_instance.as_deref().unwrap_or("none"),
                    "following; singletons stand by"
                ),
            }
            self.follow();
        }
    }

    /// Between renewals: past the local bound, this instance is no longer leader.
    fn check_bound(&mut self) {
        let shared = self.svc.shared();
        let lease = shared.lease();
        let raw_leader = lease.epoch.is_some() && lease.valid_until.is_some() && !lease.leader;
        if raw_leader {
            tracing::warn!(
                epoch = lease.epoch,
                "leader lease not renewed in time; stepping down"
            );
            shared.set_lease(LeaseView {
                leader: false,
                valid_until: None,
                ..lease
            });
            self.svc
                .tick_err(&"leader lease not renewed before its local bound; stepped down");
            self.follow();
        }
    }

    /// Gives the lease up: singletons stop first, then the lease is released in the database
    /// (other replicas are told). Answers a pending step-down; stops the actor on `Stop`.
    fn leave(&mut self, why: Leaving, ctx: &mut Context<Self>) {
        if self.busy {
            return;
        }
        self.busy = true;
        let started = Instant::now();
        let shared = self.svc.shared().clone();
        let reply = (why == Leaving::StepDown)
            .then(|| shared.take_step_down())
            .flatten();
        let epoch = shared.leading_epoch();
        let Some(epoch) = epoch else {
            self.busy = false;
            if let Some(reply) = reply {
                let leader = shared.lease().leader_instance;
                let _ = reply.send(Err(format!(
                    "this replica is not the leader (leader: {})",
                    leader.as_deref().unwrap_or("none")
                )));
            }
            if why == Leaving::Stop {
                ctx.stop();
            }
            return;
        };
        if why == Leaving::StepDown {
            self.hold_off_until = Some(Instant::now() + self.settings.ttl);
        }
        tracing::info!(epoch, reason = ?why, "stepping down: singletons stop, then the lease is released");
        let lease = shared.lease();
        shared.set_lease(LeaseView {
            leader: false,
            leader_instance: None,
            valid_until: None,
            ..lease
        });
        let supervisor = self.svc.supervisor().cloned();
        let (store, instance) = (self.store.clone(), self.instance());
        let fut = async move {
            if let Some(sup) = supervisor {
                if tokio::time::timeout(FOLLOW_TIMEOUT, sup.send(FollowLease))
                    .await
                    .is_err()
                {
                    tracing::warn!("singletons did not stop within {FOLLOW_TIMEOUT:?}; releasing the lease anyway (their writes are fenced)");
                }
            }
            match tokio::time::timeout(RELEASE_TIMEOUT, store.release_lease(&instance, epoch)).await
            {
                Ok(res) => res,
                Err(_) => Err(StoreError::Conflict(format!(
                    "releasing the lease timed out after {RELEASE_TIMEOUT:?}"
                ))),
            }
        };
        ctx.spawn(fut.into_actor(self).map(move |res, act, ctx| {
            act.busy = false;
            let released = match res {
                Ok(released) => released,
                Err(e) => {
                    tracing::warn!(error = %e, "the lease could not be released; it expires by itself");
                    false
                }
            };
            let elapsed_ms = started.elapsed().as_millis() as u64;
            tracing::info!(epoch, released, elapsed_ms, "stepped down");
            if let Some(reply) = reply {
                let _ = reply.send(Ok(StepDown {
                    epoch,
                    released,
                    elapsed_ms,
                }));
            }
            if why == Leaving::Stop {
                ctx.stop();
            }
        }));
    }
}

impl Actor for Leader {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Self::Context) {
        self.renew(ctx);
        ctx.run_interval(self.settings.renew_every(), |act, ctx| act.renew(ctx));
        let check = (self.settings.ttl / 10).min(Duration::from_millis(250));
        ctx.run_interval(check, |act, _| act.check_bound());
    }
}

impl Handler<Control> for Leader {
    type Result = ();

    fn handle(&mut self, msg: Control, ctx: &mut Self::Context) {
        match msg {
            Control::Ping => {}
            Control::Wake => self.renew(ctx),
            Control::Stop => {
                self.stop_requested = true;
                self.leave(Leaving::Stop, ctx);
            }
        }
    }
}
