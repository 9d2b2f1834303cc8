//! The root supervisor: owns every service of the process.
//!
//! Owned by the daemon's startup code; there is one per process. It holds one [`ChildSpec`] per
//! service in start order and, for each, the live instance (if any), its restart bookkeeping and
//! its [`Telemetry`].
//!
//! - **Start**: [`start_all`] sends [`StartChild`] for every non-skipped child in spec order and
//!   waits for each to be spawned before the next. Each instance runs on its own arbiter, built
//!   fresh by the child's factory, as a task the supervisor watches: a panic in a handler, a
//!   timer or `started` ends that task with a `JoinError` and comes back as [`ChildExited`].
//! - **Failure**: a panic, an error reported with [`ServiceCtx::fail`], or a hang (a `Ping`
//!   unanswered, or a tick running, past the child's hang deadline; checked on the supervisor's
//!   own timer) leads to a restart per the child's [`RestartPolicy`], after an exponential
//!   backoff with full jitter. Past the intensity limit an optional child is left `failed`; a
//!   critical one is reported on the fatal channel and the daemon exits non-zero.
//! - **Control**: [`StartChild`], [`StopChild`], [`RestartChild`], [`WakeChild`] by name; [`GetStatus`] reads
//!   the registry; [`Reconcile`] applies a reloaded configuration (children added, removed,
//!   replaced when their settings changed).
//! - **Stop**: [`shutdown`] stops children in reverse start order, each within its stop timeout
//!   (then cut off and named in the log), under one overall deadline.

use std::any::Any;
use std::panic::AssertUnwindSafe;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use actix::fut::{wrap_future, ActorFutureExt, LocalBoxActorFuture};
use actix::prelude::*;
use chrono::{DateTime, Utc};
use tokio::sync::{mpsc, oneshot};
use tokio::task::AbortHandle;
use tracing::Instrument;

use crate::restart::{Intensity, RestartSettings};
use crate::service::{ChildFactory, Control, ServiceCtx, Shared, Telemetry};
use crate::status::{LastError, Registry, ServiceState, ServiceStatus};

mod child;
mod client;
mod messages;
mod reconcile;
mod spec;

use child::*;
pub use client::*;
pub use messages::*;
pub use reconcile::*;
pub use spec::*;

/// The root supervisor actor.
pub struct Supervisor {
    children: Vec<Child>,
    settings: SupervisorSettings,
    shared: Arc<Shared>,
    fatal: mpsc::UnboundedSender<Fatal>,
    next_generation: u64,
    shutting_down: bool,
    /// The lease epoch singletons run under here; `None` on a follower.
    leading: Option<i64>,
}

impl Supervisor {
    /// A supervisor for `specs` (in start order) and the receiving end of its fatal channel.
    pub fn new(
        specs: Vec<ChildSpec>,
        settings: SupervisorSettings,
        shared: Arc<Shared>,
    ) -> (Self, mpsc::UnboundedReceiver<Fatal>) {
        let (fatal, fatal_rx) = mpsc::unbounded_channel();
        let supervisor = Supervisor {
            children: specs.into_iter().map(Child::new).collect(),
            settings,
            shared: shared.clone(),
            fatal,
            next_generation: 0,
            shutting_down: false,
            leading: shared.leading_epoch(),
        };
        (supervisor, fatal_rx)
    }

    fn index(&self, name: &str) -> Result<usize, SupervisorError> {
        self.children
            .iter()
            .position(|c| c.spec.name == name && !c.retired)
            .ok_or_else(|| SupervisorError::NotFound(name.to_string()))
    }

    /// The index of a child that start / restart may act on: it exists, is not skipped, and the
    /// supervisor is not shutting down.
    fn controllable(&self, name: &str) -> Result<usize, SupervisorError> {
        let idx = self.index(name)?;
        if self.shutting_down {
            return Err(SupervisorError::ShuttingDown);
        }
        let spec = &self.children[idx].spec;
        if spec.factory.is_none() {
            let reason = spec.skip_reason.clone().unwrap_or_default();
            return Err(SupervisorError::Skipped(name.to_string(), reason));
        }
        Ok(idx)
    }

    fn registry(&self) -> Registry {
        let leader = self.shared.lease().leader_instance;
        Registry {
            services: self
                .children
                .iter()
                .filter(|c| !c.retired)
                .map(|c| c.status(leader.as_deref()))
                .collect(),
        }
    }

    /// A singleton in standby takes no start or restart here: the leader runs it.
    fn not_standby(&self, idx: usize) -> Result<(), SupervisorError> {
        let child = &self.children[idx];
        if child.state == ServiceState::Standby {
            return Err(SupervisorError::Standby {
                service: child.spec.name.clone(),
                leader: self.shared.lease().leader_instance,
            });
        }
        Ok(())
    }

    fn status_of(&self, idx: usize) -> ServiceStatus {
        let leader = self.shared.lease().leader_instance;
        self.children[idx].status(leader.as_deref())
    }

    /// Brings singleton `idx` in line with the lease: stopped (then `standby`) on a follower,
    /// started on the leader, restarted when the epoch it runs under is not the one held now.
    /// A singleton an admin stopped, or one that failed, stays down while this replica leads.
    fn follow_lease(
        &mut self,
        idx: usize,
        ctx: &mut Context<Self>,
    ) -> LocalBoxActorFuture<Self, ()> {
        let leading = self.leading;
        let shutting_down = self.shutting_down;
        let child = &mut self.children[idx];
        if !child.follows_lease() {
            return Box::pin(actix::fut::ready(()));
        }
        match (leading, child.state) {
            (None, ServiceState::Stopped | ServiceState::Failed) if !shutting_down => {
                child.set_state(ServiceState::Standby);
            }
            (None, _) if child.active() => {
                tracing::info!(service = %child.spec.name, "not the leader any more; stopping");
                return Box::pin(self.stop(idx, ctx).map(move |_, act: &mut Self, _| {
                    let child = &mut act.children[idx];
                    if act.leading.is_none() && !act.shutting_down && !child.active() {
                        child.set_state(ServiceState::Standby);
                    }
                }));
            }
            (Some(_), ServiceState::Standby) if !shutting_down => return self.launch(idx, ctx),
            (
                Some(epoch),
                ServiceState::Starting | ServiceState::Running | ServiceState::Stopping,
            ) if child.epoch != Some(epoch) => {
                tracing::info!(service = %child.spec.name, epoch, "lease epoch changed; restarting under the new one");
                return Box::pin(self.stop(idx, ctx).then(move |_, act: &mut Self, ctx| {
                    act.children[idx].set_state(ServiceState::Standby);
                    act.follow_lease(idx, ctx)
                }));
            }
            _ => {}
        }
        Box::pin(actix::fut::ready(()))
    }

    /// [`follow_lease`](Self::follow_lease) for every singleton, one after the other (reverse
    /// start order when stopping, start order when starting).
    fn follow_lease_all(&mut self) -> LocalBoxActorFuture<Self, ()> {
        let mut order: Vec<usize> = (0..self.children.len())
            .filter(|&i| self.children[i].follows_lease())
            .collect();
        if self.leading.is_none() {
            order.reverse();
        }
        let mut chain: LocalBoxActorFuture<Self, ()> = Box::pin(actix::fut::ready(()));
        for idx in order {
            chain = Box::pin(chain.then(move |(), act: &mut Self, ctx| act.follow_lease(idx, ctx)));
        }
        chain
    }

    /// Spawns a fresh instance of child `idx` on its own arbiter. Resolves once the instance is
    /// linked (or has already ended).
    fn launch(&mut self, idx: usize, ctx: &mut Context<Self>) -> LocalBoxActorFuture<Self, ()> {
        self.next_generation += 1;
        let generation = self.next_generation;
        let shared = self.shared.clone();
        let sup = ctx.address();
        let leading = self.leading;
        let child = &mut self.children[idx];
        let Some(factory) = child.spec.factory.clone() else {
            return Box::pin(actix::fut::ready(()));
        };
        if child.spec.singleton && leading.is_none() {
            child.cancel_restart(ctx);
            child.set_state(ServiceState::Standby);
            return Box::pin(actix::fut::ready(()));
        }
        let epoch = if child.spec.singleton { leading } else { None };
        child.cancel_restart(ctx);
        child.epoch = epoch;
        child.generation = generation;
        child.ping_inflight = false;
        child.set_state(ServiceState::Starting);
        {
            let mut t = child.telemetry();
            t.generation = generation;
            t.failure = None;
            t.tick_started = None;
            t.next_run_at = None;
        }
        let svc = ServiceCtx::new(
            child.spec.name.as_str(),
            generation,
            child.telemetry.clone(),
            shared,
        )
        .with_epoch(epoch)
        .with_supervisor(sup.clone());
        let span = tracing::info_span!("service", name = %child.spec.name, generation);
        let (tx, rx) = oneshot::channel::<(Recipient<Control>, AbortHandle)>();
        let arbiter = child.idle_arbiter.take().unwrap_or_else(Arbiter::new);
        let handle = arbiter.handle();
        handle.spawn_fn(move || {
            actix_rt::spawn(async move {
                let exit = match std::panic::catch_unwind(AssertUnwindSafe(|| factory.spawn(svc))) {
                    Ok(Ok(spawned)) => {
                        let task = actix_rt::spawn(spawned.run.instrument(span));
                        let _ = tx.send((spawned.control, task.abort_handle()));
                        match task.await {
                            Ok(()) => Exit::Returned,
                            Err(e) if e.is_panic() => Exit::Panicked(panic_message(e.into_panic())),
                            Err(_) => Exit::Aborted,
                        }
                    }
                    Ok(Err(e)) => Exit::FailedToStart(e),
                    Err(panic) => Exit::Panicked(panic_message(panic)),
                };
                sup.do_send(ChildExited {
                    idx,
                    generation,
                    exit,
                });
            });
        });
        let mut arbiter = Some(arbiter);
        Box::pin(wrap_future(rx).map(move |res, act: &mut Self, _ctx| {
            let child = &mut act.children[idx];
            let Ok((control, abort)) = res else {
                // It never started: its thread serves the next attempt.
                if child.idle_arbiter.is_none() {
                    child.idle_arbiter = arbiter.take();
                }
                return;
            };
            let arbiter = arbiter.take().expect("link installed once");
            if child.generation != generation {
                // Abandoned (cut off) before it was linked: its thread goes with it.
                arbiter.stop();
                return;
            }
            child.running_since = Some(Instant::now());
            child.last_pong = Instant::now();
            if child.state == ServiceState::Stopping {
                control.do_send(Control::Stop);
            } else {
                child.set_state(ServiceState::Running);
            }
            child.link = Some(Link {
                control,
                abort,
                arbiter,
            });
        }))
    }

    /// The live instance of `idx` ended (or was cut off) while not asked to stop.
    fn on_exit(&mut self, idx: usize, reason: String, is_failure: bool, ctx: &mut Context<Self>) {
        let shutting_down = self.shutting_down;
        let child = &mut self.children[idx];
        if is_failure {
            tracing::error!(service = %child.spec.name, reason = %reason, "service failed");
        } else {
            tracing::info!(service = %child.spec.name, reason = %reason, "service exited");
        }
        if child.spec.singleton && self.leading.is_none() && !shutting_down {
            child.set_state(ServiceState::Standby);
            return;
        }
        let restart = !shutting_down
            && match child.spec.restart {
                RestartPolicy::Permanent => true,
                RestartPolicy::Transient => is_failure,
                RestartPolicy::Temporary => false,
            };
        if !restart {
            child.set_state(if is_failure {
                ServiceState::Failed
            } else {
                ServiceState::Stopped
            });
            return;
        }
        self.schedule_restart(idx, ctx);
    }

    fn schedule_restart(&mut self, idx: usize, ctx: &mut Context<Self>) {
        let settings = self.settings.restart.clone();
        let child = &mut self.children[idx];
        let now = Instant::now();
        if child
            .running_since
            .is_some_and(|since| now.duration_since(since) >= settings.reset_after)
        {
            child.attempt = 0;
        }
        child.running_since = None;
        if !child.intensity.admit(now, &settings) {
            child.set_state(ServiceState::Failed);
            let reason = format!(
                "more than {} restarts in {:?}; giving up",
                settings.intensity_max, settings.intensity_window
            );
            child.record_error(&reason);
            if child.spec.critical {
                tracing::error!(service = %child.spec.name, %reason, "critical service failed; the daemon will stop");
                let _ = self.fatal.send(Fatal {
                    service: child.spec.name.clone(),
                    reason,
                });
            } else {
                tracing::error!(service = %child.spec.name, %reason, "optional service failed; left down");
            }
            return;
        }
        let delay = settings.delay(child.attempt);
        child.attempt = child.attempt.saturating_add(1);
        child.set_state(ServiceState::BackingOff);
        child.restart_at = Some(Utc::now() + chrono::Duration::from_std(delay).unwrap_or_default());
        tracing::info!(service = %child.spec.name, delay_ms = delay.as_millis() as u64, attempt = child.attempt, "restart scheduled");
        child.restart_timer = Some(ctx.run_later(delay, move |act, ctx| {
            let child = &mut act.children[idx];
            child.restart_timer = None;
            if child.state == ServiceState::BackingOff && !act.shutting_down {
                child.restarts += 1;
                let fut = act.launch(idx, ctx);
                ctx.spawn(fut);
            }
        }));
    }

    /// Liveness probe and hang deadlines, on the supervisor's own timer; also the lease's
    /// local bound (should the `leader` service itself hang, singletons still stop in time).
    fn check(&mut self, ctx: &mut Context<Self>) {
        let leading = self.shared.leading_epoch();
        if leading != self.leading && !self.shutting_down {
            tracing::info!(from = ?self.leading, to = ?leading, "leadership changed");
            self.leading = leading;
            let fut = self.follow_lease_all();
            ctx.spawn(fut);
        }
        let now = Instant::now();
        for idx in 0..self.children.len() {
            let child = &mut self.children[idx];
            if child.state != ServiceState::Running || child.link.is_none() {
                continue;
            }
            let deadline = child.spec.hang_deadline;
            let tick_started = child.telemetry().tick_started;
            let hung = if tick_started.is_some_and(|t| now.duration_since(t) > deadline) {
                Some(format!("hung: a tick ran longer than {deadline:?}"))
            } else if now.duration_since(child.last_pong) > deadline {
                Some(format!("hung: no heartbeat for {deadline:?}"))
            } else {
                None
            };
            if let Some(reason) = hung {
                child.cut_off();
                child.record_error(&reason);
                self.on_exit(idx, reason, true, ctx);
                continue;
            }
            if !child.ping_inflight {
                child.ping_inflight = true;
                let generation = child.generation;
                let ping = child.link.as_ref().map(|l| l.control.send(Control::Ping));
                if let Some(ping) = ping {
                    ctx.spawn(wrap_future(ping).map(move |res, act: &mut Self, _| {
                        let child = &mut act.children[idx];
                        if child.generation == generation {
                            child.ping_inflight = false;
                            if res.is_ok() {
                                child.last_pong = Instant::now();
                            }
                        }
                    }));
                }
            }
        }
    }

    /// Asks child `idx` to stop; resolves when it has, or when it was cut off at its timeout.
    fn stop(&mut self, idx: usize, ctx: &mut Context<Self>) -> LocalBoxActorFuture<Self, Stopped> {
        let child = &mut self.children[idx];
        match child.state {
            ServiceState::Skipped
            | ServiceState::Stopped
            | ServiceState::Failed
            | ServiceState::Standby => {
                return Box::pin(actix::fut::ready(Stopped {
                    status: self.status_of(idx),
                    cut_off: false,
                }));
            }
            ServiceState::BackingOff => {
                child.cancel_restart(ctx);
                child.finish_stop();
                return Box::pin(actix::fut::ready(Stopped {
                    status: self.status_of(idx),
                    cut_off: false,
                }));
            }
            ServiceState::Starting | ServiceState::Running | ServiceState::Stopping => {}
        }
        let (tx, rx) = oneshot::channel();
        child.stop_waiters.push(tx);
        if child.state != ServiceState::Stopping {
            child.set_state(ServiceState::Stopping);
            if let Some(link) = &child.link {
                link.control.do_send(Control::Stop);
            }
        }
        let timeout = child.spec.stop_timeout;
        let generation = child.generation;
        Box::pin(
            wrap_future(tokio::time::timeout(timeout, rx)).map(move |res, act: &mut Self, _| {
                let child = &mut act.children[idx];
                let mut cut_off = false;
                if res.is_err() && child.generation == generation && child.state == ServiceState::Stopping {
                    tracing::warn!(service = %child.spec.name, timeout_ms = timeout.as_millis() as u64, "service did not stop within its stop timeout; cut off");
                    child.cut_off();
                    child.record_error(&format!("cut off: did not stop within {timeout:?}"));
                    child.finish_stop();
                    cut_off = true;
                }
                Stopped {
                    status: act.status_of(idx),
                    cut_off,
                }
            }),
        )
    }
}

impl Actor for Supervisor {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Self::Context) {
        ctx.run_interval(self.settings.check_interval, |act, ctx| act.check(ctx));
    }
}

fn panic_message(payload: Box<dyn Any + Send>) -> String {
    if let Some(s) = payload.downcast_ref::<&str>() {
        (*s).to_string()
    } else if let Some(s) = payload.downcast_ref::<String>() {
        s.clone()
    } else {
        "panic with a non-string payload".to_string()
    }
}

/// A child's task ended (internal).
#[derive(Message)]
#[rtype(result = "()")]
struct ChildExited {
    idx: usize,
    generation: u64,
    exit: Exit,
}

impl Handler<ChildExited> for Supervisor {
    type Result = ();

    fn handle(&mut self, msg: ChildExited, ctx: &mut Self::Context) {
        let child = &mut self.children[msg.idx];
        if child.generation != msg.generation {
            tracing::debug!(service = %child.spec.name, generation = msg.generation, "exit of an abandoned instance ignored");
            return;
        }
        child.generation = 0;
        if let Some(link) = child.link.take() {
            child.idle_arbiter = Some(link.arbiter);
        }
        child.ping_inflight = false;
        let failure = child.telemetry().failure.take();
        if child.state == ServiceState::Stopping {
            child.finish_stop();
            return;
        }
        let (reason, is_failure) = match msg.exit {
            Exit::Panicked(m) => {
                let reason = format!("panicked: {m}");
                child.record_error(&reason);
                (reason, true)
            }
            Exit::FailedToStart(e) => {
                let reason = format!("failed to start: {e}");
                child.record_error(&reason);
                (reason, true)
            }
            Exit::Aborted => ("aborted".to_string(), true),
            Exit::Returned => match failure {
                Some(f) => (f, true),
                None => ("exited".to_string(), false),
            },
        };
        self.on_exit(msg.idx, reason, is_failure, ctx);
    }
}
