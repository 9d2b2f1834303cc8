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

/// When a child that has exited is started again.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RestartPolicy {
    /// Always restarted, whatever ended it.
    Permanent,
    /// Restarted only after a failure (error, panic, hang); a clean exit leaves it stopped.
    Transient,
    /// Never restarted.
    Temporary,
}

/// Everything the supervisor needs to run one service.
#[derive(Clone)]
pub struct ChildSpec {
    pub name: String,
    /// `None` for a service configuration leaves off; it is listed as `skipped`.
    pub factory: Option<Arc<dyn ChildFactory>>,
    pub skip_reason: Option<String>,
    pub restart: RestartPolicy,
    pub stop_timeout: Duration,
    /// A critical child past its restart intensity stops the daemon.
    pub critical: bool,
    /// Runs only on the instance that holds the leader lease.
    pub singleton: bool,
    /// No heartbeat (or a tick longer than this) means the child hangs.
    pub hang_deadline: Duration,
    /// The settings the factory builds with, as text: a reload replaces a running child whose
    /// fingerprint changed, and leaves the others alone.
    pub fingerprint: String,
}

impl std::fmt::Debug for ChildSpec {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ChildSpec")
            .field("name", &self.name)
            .field("skip_reason", &self.skip_reason)
            .field("restart", &self.restart)
            .field("critical", &self.critical)
            .field("singleton", &self.singleton)
            .finish()
    }
}

impl ChildSpec {
    /// An optional, permanent child with a 5 s stop timeout and a 60 s hang deadline.
    pub fn new(name: impl Into<String>, factory: Arc<dyn ChildFactory>) -> Self {
        Self::with(name.into(), Some(factory), None)
    }

    /// A child that configuration leaves off, shown as `skipped` with the reason.
    pub fn skipped(name: impl Into<String>, reason: impl Into<String>) -> Self {
        Self::with(name.into(), None, Some(reason.into()))
    }

    fn with(
        name: String,
        factory: Option<Arc<dyn ChildFactory>>,
        skip_reason: Option<String>,
    ) -> Self {
        ChildSpec {
            name,
            factory,
            skip_reason,
            restart: RestartPolicy::Permanent,
            stop_timeout: Duration::from_secs(5),
            critical: false,
            singleton: false,
            hang_deadline: Duration::from_secs(60),
            fingerprint: String::new(),
        }
    }

    pub fn fingerprint(mut self, fingerprint: impl Into<String>) -> Self {
        self.fingerprint = fingerprint.into();
        self
    }

    pub fn critical(mut self) -> Self {
        self.critical = true;
        self
    }

    pub fn singleton(mut self) -> Self {
        self.singleton = true;
        self
    }

    pub fn restart(mut self, policy: RestartPolicy) -> Self {
        self.restart = policy;
        self
    }

    pub fn stop_timeout(mut self, timeout: Duration) -> Self {
        self.stop_timeout = timeout;
        self
    }

    pub fn hang_deadline(mut self, deadline: Duration) -> Self {
        self.hang_deadline = deadline;
        self
    }
}

/// Supervisor-wide settings.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize, schemars::JsonSchema)]
#[serde(default)]
pub struct SupervisorSettings {
    /// The restart settings (their own section: `restart_*`).
    #[serde(skip)]
    pub restart: RestartSettings,
    /// How often liveness is probed and hang deadlines are checked.
    #[serde(
        rename = "supervisor_check_interval",
        with = "crate::settings::NonZero"
    )]
    pub check_interval: Duration,
    /// A running service that shows no progress for this long is restarted (a service whose
    /// passes may take longer has a longer deadline of its own).
    #[serde(with = "crate::settings::NonZero")]
    pub hang_timeout: Duration,
}

impl Default for SupervisorSettings {
    fn default() -> Self {
        SupervisorSettings {
            restart: RestartSettings::default(),
            check_interval: Duration::from_secs(1),
            hang_timeout: Duration::from_secs(60),
        }
    }
}

impl crate::settings::Section for SupervisorSettings {}

/// A critical child gave up: the daemon must stop and exit non-zero.
#[derive(Debug, Clone)]
pub struct Fatal {
    pub service: String,
    pub reason: String,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SupervisorError {
    #[error("no service named `{0}`")]
    NotFound(String),
    #[error("service `{0}` is skipped: {1}")]
    Skipped(String, String),
    #[error("the supervisor is shutting down")]
    ShuttingDown,
    /// A singleton on a replica that does not lead: the command belongs to the leader.
    #[error("service `{service}` is in standby on this replica (leader: {})", leader.as_deref().unwrap_or("none"))]
    Standby {
        service: String,
        leader: Option<String>,
    },
}

/// How a child's task ended.
#[derive(Debug)]
enum Exit {
    Returned,
    Panicked(String),
    FailedToStart(String),
    Aborted,
}

struct Link {
    control: Recipient<Control>,
    abort: AbortHandle,
    arbiter: Arbiter,
}

struct Child {
    spec: ChildSpec,
    state: ServiceState,
    since: DateTime<Utc>,
    /// Generation of the live instance; 0 when there is none.
    generation: u64,
    /// The lease epoch a singleton's live instance was started under.
    epoch: Option<i64>,
    link: Option<Link>,
    telemetry: Arc<Mutex<Telemetry>>,
    restarts: u64,
    /// Consecutive restarts, for the backoff exponent.
    attempt: u32,
    intensity: Intensity,
    running_since: Option<Instant>,
    last_pong: Instant,
    ping_inflight: bool,
    restart_timer: Option<SpawnHandle>,
    restart_at: Option<DateTime<Utc>>,
    stop_waiters: Vec<oneshot::Sender<()>>,
    /// Removed by a reload: stopped, hidden from the registry, revived if configured again.
    retired: bool,
    /// The thread (and runtime) of the last instance, kept for the next one: database
    /// connections opened on it stay usable by everyone after the instance stops (a stopped
    /// runtime would break them mid-query). Only a cut-off instance's thread is abandoned.
    idle_arbiter: Option<Arbiter>,
}

impl Child {
    fn new(spec: ChildSpec) -> Self {
        let state = if spec.factory.is_some() {
            ServiceState::Stopped
        } else {
            ServiceState::Skipped
        };
        Child {
            spec,
            state,
            since: Utc::now(),
            generation: 0,
            epoch: None,
            link: None,
            telemetry: Arc::new(Mutex::new(Telemetry::default())),
            restarts: 0,
            attempt: 0,
            intensity: Intensity::default(),
            running_since: None,
            last_pong: Instant::now(),
            ping_inflight: false,
            restart_timer: None,
            restart_at: None,
            stop_waiters: Vec::new(),
            retired: false,
            idle_arbiter: None,
        }
    }

    fn active(&self) -> bool {
        matches!(
            self.state,
            ServiceState::Starting
                | ServiceState::Running
                | ServiceState::BackingOff
                | ServiceState::Stopping
        )
    }

    /// A singleton configuration enables (the ones that follow the lease).
    fn follows_lease(&self) -> bool {
        self.spec.singleton && self.spec.factory.is_some() && !self.retired
    }

    fn set_state(&mut self, state: ServiceState) {
        if self.state != state {
            tracing::info!(service = %self.spec.name, from = self.state.as_str(), to = state.as_str(), "service state");
            self.state = state;
            self.since = Utc::now();
        }
    }

    fn telemetry(&self) -> std::sync::MutexGuard<'_, Telemetry> {
        self.telemetry.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn record_error(&self, message: &str) {
        let mut t = self.telemetry();
        t.errors += 1;
        t.last_error = Some(LastError {
            message: message.to_string(),
            at: Utc::now(),
        });
    }

    fn status(&self, leader: Option<&str>) -> ServiceStatus {
        let t = self.telemetry();
        let next_run_at = match self.state {
            ServiceState::BackingOff => self.restart_at,
            ServiceState::Running | ServiceState::Starting => t.next_run_at,
            _ => None,
        };
        ServiceStatus {
            name: self.spec.name.clone(),
            state: self.state,
            since: self.since,
            critical: self.spec.critical,
            singleton: self.spec.singleton,
            restarts: self.restarts,
            last_error: t.last_error.clone(),
            last_tick_at: t.last_tick_at,
            last_success_at: t.last_success_at,
            next_run_at,
            interval_secs: t.interval.map(|d| d.as_secs_f64()),
            interval_reason: t.interval_reason.clone(),
            skip_reason: self.spec.skip_reason.clone(),
            standby_reason: (self.state == ServiceState::Standby)
                .then(|| format!("follower (leader: {})", leader.unwrap_or("none"))),
            ticks: t.ticks,
            errors: t.errors,
        }
    }

    /// The instance is gone: `stopped`, and whoever waits on the stop is told.
    fn finish_stop(&mut self) {
        self.set_state(ServiceState::Stopped);
        for waiter in self.stop_waiters.drain(..) {
            let _ = waiter.send(());
        }
    }

    /// Cancels a pending restart; `true` if there was one.
    fn cancel_restart(&mut self, ctx: &mut Context<Supervisor>) -> bool {
        self.restart_at = None;
        match self.restart_timer.take() {
            Some(handle) => ctx.cancel_future(handle),
            None => false,
        }
    }

    /// Ends the live instance without waiting: aborts its task and stops its arbiter. A thread
    /// blocked inside the actor cannot be interrupted; it is abandoned and any late exit report
    /// is ignored by generation.
    fn cut_off(&mut self) {
        if let Some(link) = self.link.take() {
            link.abort.abort();
            link.arbiter.stop();
        }
        self.generation = 0;
        self.ping_inflight = false;
        self.telemetry().tick_started = None;
    }
}

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

/// The lease changed hands (or its epoch did): singletons start, stop or restart to match
/// [`Shared::leading_epoch`]. Answers once they have.
#[derive(Debug, Message)]
#[rtype(result = "()")]
pub struct FollowLease;

impl Handler<FollowLease> for Supervisor {
    type Result = ResponseActFuture<Self, ()>;

    fn handle(&mut self, _: FollowLease, _: &mut Self::Context) -> Self::Result {
        let leading = self.shared.leading_epoch();
        if leading != self.leading {
            tracing::info!(from = ?self.leading, to = ?leading, "leadership changed");
        }
        self.leading = leading;
        self.follow_lease_all()
    }
}

/// Read the status registry.
#[derive(Debug, Message)]
#[rtype(result = "Registry")]
pub struct GetStatus;

impl Handler<GetStatus> for Supervisor {
    type Result = MessageResult<GetStatus>;

    fn handle(&mut self, _: GetStatus, _: &mut Self::Context) -> Self::Result {
        MessageResult(self.registry())
    }
}

/// Start a stopped, failed or backing-off child now (a no-op for a running one).
#[derive(Debug, Message)]
#[rtype(result = "Result<ServiceStatus, SupervisorError>")]
pub struct StartChild {
    pub name: String,
}

impl Handler<StartChild> for Supervisor {
    type Result = ResponseActFuture<Self, Result<ServiceStatus, SupervisorError>>;

    fn handle(&mut self, msg: StartChild, ctx: &mut Self::Context) -> Self::Result {
        let idx = match self.controllable(&msg.name) {
            Ok(idx) => idx,
            Err(e) => return Box::pin(actix::fut::ready(Err(e))),
        };
        if let Err(e) = self.not_standby(idx) {
            return Box::pin(actix::fut::ready(Err(e)));
        }
        let child = &mut self.children[idx];
        match child.state {
            ServiceState::Stopped | ServiceState::Failed | ServiceState::BackingOff => {
                if child.state == ServiceState::Failed {
                    child.intensity.clear();
                    child.attempt = 0;
                }
                Box::pin(
                    self.launch(idx, ctx)
                        .map(move |(), act, _| Ok(act.status_of(idx))),
                )
            }
            _ => Box::pin(actix::fut::ready(Ok(self.status_of(idx)))),
        }
    }
}

/// The outcome of stopping one child.
#[derive(Debug, Clone)]
pub struct Stopped {
    pub status: ServiceStatus,
    /// It ignored the request and was cut off at its stop timeout.
    pub cut_off: bool,
}

/// Stop a child and leave it down until started again.
#[derive(Debug, Message)]
#[rtype(result = "Result<Stopped, SupervisorError>")]
pub struct StopChild {
    pub name: String,
}

impl Handler<StopChild> for Supervisor {
    type Result = ResponseActFuture<Self, Result<Stopped, SupervisorError>>;

    fn handle(&mut self, msg: StopChild, ctx: &mut Self::Context) -> Self::Result {
        match self.index(&msg.name) {
            Ok(idx) => Box::pin(self.stop(idx, ctx).map(|stopped, _, _| Ok(stopped))),
            Err(e) => Box::pin(actix::fut::ready(Err(e))),
        }
    }
}

/// Stop a child (if running) and start a fresh instance; counts as a restart.
#[derive(Debug, Message)]
#[rtype(result = "Result<ServiceStatus, SupervisorError>")]
pub struct RestartChild {
    pub name: String,
}

impl Handler<RestartChild> for Supervisor {
    type Result = ResponseActFuture<Self, Result<ServiceStatus, SupervisorError>>;

    fn handle(&mut self, msg: RestartChild, ctx: &mut Self::Context) -> Self::Result {
        let idx = match self.controllable(&msg.name) {
            Ok(idx) => idx,
            Err(e) => return Box::pin(actix::fut::ready(Err(e))),
        };
        if let Err(e) = self.not_standby(idx) {
            return Box::pin(actix::fut::ready(Err(e)));
        }
        let child = &mut self.children[idx];
        child.restarts += 1;
        child.intensity.clear();
        child.attempt = 0;
        Box::pin(self.stop(idx, ctx).then(move |_, act: &mut Self, ctx| {
            act.launch(idx, ctx)
                .map(move |(), act: &mut Self, _| Ok(act.status_of(idx)))
        }))
    }
}

/// Tell a running child that work may be waiting ([`Control::Wake`]); answers whether a live
/// instance got the nudge. Children that poll for work anyway treat it as a shortcut.
#[derive(Debug, Message)]
#[rtype(result = "Result<bool, SupervisorError>")]
pub struct WakeChild {
    pub name: String,
}

impl Handler<WakeChild> for Supervisor {
    type Result = Result<bool, SupervisorError>;

    fn handle(&mut self, msg: WakeChild, _: &mut Self::Context) -> Self::Result {
        let idx = self.controllable(&msg.name)?;
        Ok(match &self.children[idx].link {
            Some(link) => link.control.try_send(Control::Wake).is_ok(),
            None => false,
        })
    }
}

/// No more restarts; returns the children to stop, in reverse start order.
#[derive(Debug, Message)]
#[rtype(result = "Vec<String>")]
struct BeginShutdown;

impl Handler<BeginShutdown> for Supervisor {
    type Result = MessageResult<BeginShutdown>;

    fn handle(&mut self, _: BeginShutdown, ctx: &mut Self::Context) -> Self::Result {
        self.shutting_down = true;
        for child in &mut self.children {
            if child.cancel_restart(ctx) {
                child.finish_stop();
            }
        }
        MessageResult(
            self.children
                .iter()
                .rev()
                .filter(|c| c.spec.factory.is_some() && !c.retired)
                .map(|c| c.spec.name.clone())
                .collect(),
        )
    }
}

/// Cut off every child still alive (the overall deadline passed).
#[derive(Debug, Message)]
#[rtype(result = "()")]
struct AbortAll;

impl Handler<AbortAll> for Supervisor {
    type Result = ();

    fn handle(&mut self, _: AbortAll, _: &mut Self::Context) {
        for child in &mut self.children {
            if child.link.is_some() || child.state == ServiceState::Stopping {
                child.cut_off();
                child.finish_stop();
            }
        }
    }
}

/// A configuration reload: the children `specs` describe are what should run now.
///
/// - a child not in `specs` is stopped gracefully and removed from the registry;
/// - a new one is added (after the others) and started;
/// - one whose [`ChildSpec::fingerprint`] or skip reason changed takes the new spec: a running
///   (or backing-off) instance finishes its current tick and stops, and a fresh one starts
///   with the new settings at once; a stopped or failed one stays down until started;
/// - an unchanged one is left alone.
#[derive(Debug, Message)]
#[rtype(result = "Result<Reconciled, SupervisorError>")]
pub struct Reconcile {
    pub specs: Vec<ChildSpec>,
}

/// What a [`Reconcile`] did, by child name.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Reconciled {
    pub started: Vec<String>,
    pub stopped: Vec<String>,
    pub replaced: Vec<String>,
}

enum ReconcileOp {
    Retire(usize),
    Start(usize),
    Revive(usize, ChildSpec),
    Replace(usize, ChildSpec),
}

impl Supervisor {
    fn apply(&mut self, op: ReconcileOp, ctx: &mut Context<Self>) -> LocalBoxActorFuture<Self, ()> {
        match op {
            ReconcileOp::Start(idx) => self.launch(idx, ctx),
            ReconcileOp::Retire(idx) => {
                Box::pin(self.stop(idx, ctx).map(move |_, act: &mut Self, _| {
                    let child = &mut act.children[idx];
                    child.retired = true;
                    tracing::info!(service = %child.spec.name, "service removed by reload");
                }))
            }
            ReconcileOp::Revive(idx, spec) => {
                let child = &mut self.children[idx];
                child.retired = false;
                child.intensity.clear();
                child.attempt = 0;
                let start = spec.factory.is_some();
                child.spec = spec;
                if start {
                    child.set_state(ServiceState::Stopped);
                    self.launch(idx, ctx)
                } else {
                    child.set_state(ServiceState::Skipped);
                    Box::pin(actix::fut::ready(()))
                }
            }
            ReconcileOp::Replace(idx, spec) => {
                let active = matches!(
                    self.children[idx].state,
                    ServiceState::Starting
                        | ServiceState::Running
                        | ServiceState::BackingOff
                        | ServiceState::Stopping
                );
                Box::pin(self.stop(idx, ctx).then(move |_, act: &mut Self, ctx| {
                    let child = &mut act.children[idx];
                    let start = spec.factory.is_some();
                    child.spec = spec;
                    if !start {
                        child.set_state(ServiceState::Skipped);
                        return Box::pin(actix::fut::ready(())) as LocalBoxActorFuture<Self, ()>;
                    }
                    if child.state == ServiceState::Skipped {
                        child.set_state(ServiceState::Stopped);
                    }
                    if active && !act.shutting_down {
                        act.launch(idx, ctx)
                    } else {
                        Box::pin(actix::fut::ready(()))
                    }
                }))
            }
        }
    }
}

impl Handler<Reconcile> for Supervisor {
    type Result = ResponseActFuture<Self, Result<Reconciled, SupervisorError>>;

    fn handle(&mut self, msg: Reconcile, _: &mut Self::Context) -> Self::Result {
        if self.shutting_down {
            return Box::pin(actix::fut::ready(Err(SupervisorError::ShuttingDown)));
        }
        let mut done = Reconciled::default();
        let mut ops = Vec::new();
        for (idx, child) in self.children.iter().enumerate() {
            if !child.retired && !msg.specs.iter().any(|s| s.name == child.spec.name) {
                if child.spec.factory.is_some() {
                    done.stopped.push(child.spec.name.clone());
                }
                ops.push(ReconcileOp::Retire(idx));
            }
        }
        for spec in msg.specs {
            let name = spec.name.clone();
            let Some(idx) = self.children.iter().position(|c| c.spec.name == spec.name) else {
                let start = spec.factory.is_some();
                self.children.push(Child::new(spec));
                if start {
                    done.started.push(name);
                    ops.push(ReconcileOp::Start(self.children.len() - 1));
                }
                continue;
            };
            let child = &mut self.children[idx];
            let (had, has) = (child.spec.factory.is_some(), spec.factory.is_some());
            let changed = child.spec.fingerprint != spec.fingerprint
                || child.spec.skip_reason != spec.skip_reason;
            if child.retired || (!had && has) {
                if has {
                    done.started.push(name);
                }
                ops.push(ReconcileOp::Revive(idx, spec));
            } else if !had && !has {
                child.spec = spec;
            } else if had && !has {
                done.stopped.push(name);
                ops.push(ReconcileOp::Replace(idx, spec));
            } else if changed {
                done.replaced.push(name);
                ops.push(ReconcileOp::Replace(idx, spec));
            }
        }
        let mut chain: LocalBoxActorFuture<Self, ()> = Box::pin(actix::fut::ready(()));
        for op in ops {
            chain = Box::pin(chain.then(move |(), act: &mut Self, ctx| act.apply(op, ctx)));
        }
        Box::pin(chain.map(move |(), _, _| Ok(done)))
    }
}

/// Why a bounded request to the supervisor got no answer.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum Unanswered {
    #[error("the supervisor did not answer within {0:?}")]
    Timeout(Duration),
    #[error("the supervisor is not running")]
    Stopped,
}

/// Sends `msg` to the supervisor and waits at most `timeout` for the answer: a dead or busy
/// supervisor is an [`Unanswered`], never a hang.
pub async fn ask<M>(
    supervisor: &Addr<Supervisor>,
    msg: M,
    timeout: Duration,
) -> Result<M::Result, Unanswered>
where
    M: Message + Send + 'static,
    M::Result: Send,
    Supervisor: Handler<M>,
{
    match tokio::time::timeout(timeout, supervisor.send(msg)).await {
        Ok(Ok(answer)) => Ok(answer),
        Ok(Err(_)) => Err(Unanswered::Stopped),
        Err(_) => Err(Unanswered::Timeout(timeout)),
    }
}

/// Starts every non-skipped child in spec order, each spawned before the next begins.
pub async fn start_all(supervisor: &Addr<Supervisor>) -> Result<(), MailboxError> {
    let registry = supervisor.send(GetStatus).await?;
    for status in registry.services {
        if status.state == ServiceState::Skipped {
            tracing::info!(service = %status.name, reason = status.skip_reason.as_deref().unwrap_or(""), "service skipped");
            continue;
        }
        if let Err(e) = supervisor
            .send(StartChild {
                name: status.name.clone(),
            })
            .await?
        {
            tracing::warn!(service = %status.name, error = %e, "service not started");
        }
    }
    Ok(())
}

/// Stops the threads kept for restarts (the last step of a shutdown).
#[derive(Debug, Message)]
#[rtype(result = "()")]
struct ReleaseThreads;

impl Handler<ReleaseThreads> for Supervisor {
    type Result = ();

    fn handle(&mut self, _: ReleaseThreads, _: &mut Self::Context) {
        for child in &mut self.children {
            if let Some(arbiter) = child.idle_arbiter.take() {
                arbiter.stop();
            }
        }
    }
}

/// What [`shutdown`] did.
#[derive(Debug, Clone, Default)]
pub struct ShutdownReport {
    /// Children asked to stop, in the order they were asked.
    pub stopped: Vec<String>,
    /// Children that ignored the request and were cut off at their stop timeout.
    pub cut_off: Vec<String>,
    /// Children still running when the overall deadline passed.
    pub stragglers: Vec<String>,
    pub elapsed: Duration,
}

/// Stops every child in reverse start order under one overall `deadline`; whatever is still
/// running at the deadline is logged by name and cut off.
pub async fn shutdown(supervisor: &Addr<Supervisor>, deadline: Duration) -> ShutdownReport {
    let started = Instant::now();
    let mut report = ShutdownReport::default();
    let Ok(names) = supervisor.send(BeginShutdown).await else {
        return report;
    };
    let work = async {
        for name in names {
            report.stopped.push(name.clone());
            if let Ok(Ok(stopped)) = supervisor.send(StopChild { name: name.clone() }).await {
                if stopped.cut_off {
                    report.cut_off.push(name);
                }
            }
        }
    };
    if tokio::time::timeout(deadline, work).await.is_err() {
        if let Ok(registry) = supervisor.send(GetStatus).await {
            report.stragglers = registry
                .services
                .iter()
                .filter(|s| {
                    matches!(
                        s.state,
                        ServiceState::Running | ServiceState::Starting | ServiceState::Stopping
                    )
                })
                .map(|s| s.name.clone())
                .collect();
        }
        tracing::error!(services = ?report.stragglers, deadline_ms = deadline.as_millis() as u64, "shutdown deadline reached; still running");
        let _ = supervisor.send(AbortAll).await;
    }
    let _ = supervisor.send(ReleaseThreads).await;
    report.elapsed = started.elapsed();
    report
}
