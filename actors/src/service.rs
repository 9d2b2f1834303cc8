//! The contract between the root supervisor and every service it owns.
//!
//! - A service is an actix actor built by a [`ChildFactory`] on its own arbiter (thread), fresh
//!   on every (re)start, and handed a [`ServiceCtx`].
//! - It handles [`Control`]: `Ping` is the liveness probe (answered through its mailbox, so a
//!   blocked mailbox or thread counts as a hang); `Stop` asks it to finish its current tick and
//!   stop; `Wake` says work may be waiting. Because actix drops in-flight spawned futures when
//!   an actor stops, a service that is mid-tick remembers the request and stops when the tick
//!   ends.
//! - It reports through the [`ServiceCtx`]: tick begin/end (a tick running past the hang
//!   deadline is a hang), absorbed errors, the next run and its reason, and [`ServiceCtx::fail`]
//!   for an error it cannot absorb (the supervisor restarts it).

use std::future::Future;
use std::marker::PhantomData;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, RwLock};
use std::time::{Duration, Instant};

use actix::prelude::*;
use chrono::{DateTime, Utc};
use serde::Serialize;
use tokio::sync::oneshot;

use crate::restart::Backoff;
use crate::status::LastError;
use crate::store::lease::Fence;
use crate::store::Store;
use crate::supervisor::Supervisor;

/// Control messages every service handles.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Message)]
#[rtype(result = "()")]
pub enum Control {
    /// Liveness probe: reply as soon as the mailbox gets to it.
    Ping,
    /// Finish the current tick, then stop.
    Stop,
    /// Work may be waiting (e.g. an import was queued): look now rather than at the next timer.
    /// Services with nothing to look for ignore it.
    Wake,
}

/// Health and leadership facts shared by the whole tree.
#[derive(Debug)]
pub struct Shared {
    db_healthy: AtomicBool,
    instance_id: Arc<str>,
    lease: RwLock<LeaseView>,
    /// A pending `POST /admin/leader/step-down`, answered by the `leader` service.
    step_down: Mutex<Option<oneshot::Sender<Result<StepDown, String>>>>,
}

/// Who leads, as this instance knows it (`/debug/status`, metrics, `STATUS=`).
#[derive(Debug, Clone, Default, Serialize)]
pub struct LeaseView {
    /// This instance holds the lease (and its local bound has not run out).
    pub leader: bool,
    pub leader_instance: Option<String>,
    pub epoch: Option<i64>,
    /// The lease's expiry by the database's clock.
    pub lease_expires_at: Option<DateTime<Utc>>,
    /// How often this instance became leader or stopped being it.
    pub changes: u64,
    /// Past this instant this instance no longer counts itself leader, renewed or not: a
    /// margin before the database's expiry, so it steps down before another can take over.
    #[serde(skip)]
    pub valid_until: Option<Instant>,
}

/// What a step-down did.
#[derive(Debug, Clone, Serialize, schemars::JsonSchema)]
pub struct StepDown {
    pub epoch: i64,
    /// The lease was released in the database (so another replica takes over at once).
    pub released: bool,
    pub elapsed_ms: u64,
}

impl Default for Shared {
    /// An instance that always leads with epoch 1 (SQLite, and tests without a database).
    fn default() -> Self {
        Shared::new(uuid::Uuid::new_v4().to_string(), true)
    }
}

impl Shared {
    /// `always_leader`: the one process on a SQLite file, which leads with epoch 1 for ever;
    /// otherwise leadership comes and goes with the lease (the `leader` service).
    pub fn new(instance_id: impl Into<Arc<str>>, always_leader: bool) -> Self {
        let instance_id: Arc<str> = instance_id.into();
        let lease = if always_leader {
            LeaseView {
                leader: true,
                leader_instance: Some(instance_id.to_string()),
                epoch: Some(1),
                ..LeaseView::default()
            }
        } else {
            LeaseView::default()
        };
        Shared {
            db_healthy: AtomicBool::new(true),
            instance_id,
            lease: RwLock::new(lease),
            step_down: Mutex::new(None),
        }
    }

    pub fn db_healthy(&self) -> bool {
        self.db_healthy.load(Ordering::Acquire)
    }

    pub fn set_db_healthy(&self, healthy: bool) -> bool {
        self.db_healthy.swap(healthy, Ordering::AcqRel)
    }

    /// This process's id: the lease holder's name, in `/debug/status` and outgoing requests.
    pub fn instance_id(&self) -> &Arc<str> {
        &self.instance_id
    }

    /// Whether this instance runs the singleton services now.
    pub fn leader(&self) -> bool {
        self.leading_epoch().is_some()
    }

    /// The epoch this instance leads with, while it holds the lease and its local bound has
    /// not run out.
    pub fn leading_epoch(&self) -> Option<i64> {
        let lease = self.lease.read().unwrap_or_else(|e| e.into_inner());
        let valid = lease.valid_until.is_none_or(|until| Instant::now() < until);
        (lease.leader && valid).then_some(lease.epoch).flatten()
    }

    /// The lease as last seen (`leader` reflects the local bound too).
    pub fn lease(&self) -> LeaseView {
        let mut view = self.lease.read().unwrap_or_else(|e| e.into_inner()).clone();
        view.leader = view.leader && view.valid_until.is_none_or(|u| Instant::now() < u);
        view
    }

    /// Records the lease as the `leader` service saw it; counts a change of role.
    pub fn set_lease(&self, mut view: LeaseView) {
        let mut lease = self.lease.write().unwrap_or_else(|e| e.into_inner());
        let was = lease.leader.then_some(lease.epoch).flatten();
        let now = view.leader.then_some(view.epoch).flatten();
        view.changes = lease.changes + u64::from(was != now && (was.is_some() || now.is_some()));
        *lease = view;
    }

    /// Asks the `leader` service to step down; the answer comes through `reply`. A request
    /// already pending is answered with an error.
    pub fn request_step_down(&self, reply: oneshot::Sender<Result<StepDown, String>>) {
        let mut pending = self.step_down.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(old) = pending.replace(reply) {
            let _ = old.send(Err("another step-down request replaced this one".into()));
        }
    }

    pub fn step_down_pending(&self) -> bool {
        self.step_down
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .is_some()
    }

    /// The pending step-down request, if any (taken by the `leader` service).
    pub fn take_step_down(&self) -> Option<oneshot::Sender<Result<StepDown, String>>> {
        self.step_down
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .take()
    }
}

/// What a service reports about itself; kept by the supervisor across restarts so the last
/// error that caused a restart stays visible.
#[derive(Debug, Default, Clone)]
pub struct Telemetry {
    /// Generation of the actor instance allowed to write; older (abandoned) instances are ignored.
    pub generation: u64,
    pub tick_started: Option<Instant>,
    pub last_tick_at: Option<DateTime<Utc>>,
    pub last_success_at: Option<DateTime<Utc>>,
    pub next_run_at: Option<DateTime<Utc>>,
    pub interval: Option<Duration>,
    pub interval_reason: Option<String>,
    pub last_error: Option<LastError>,
    /// Set by [`ServiceCtx::fail`]: why this instance is ending.
    pub failure: Option<String>,
    pub ticks: u64,
    pub errors: u64,
}

/// The handle a service gets from the supervisor.
#[derive(Clone)]
pub struct ServiceCtx {
    name: Arc<str>,
    generation: u64,
    telemetry: Arc<Mutex<Telemetry>>,
    shared: Arc<Shared>,
    /// For a singleton, the lease epoch it was started under: its writes are fenced with it.
    epoch: Option<i64>,
    supervisor: Option<Addr<Supervisor>>,
}

impl std::fmt::Debug for ServiceCtx {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ServiceCtx")
            .field("name", &self.name)
            .field("generation", &self.generation)
            .finish()
    }
}

impl ServiceCtx {
    pub fn new(
        name: impl Into<Arc<str>>,
        generation: u64,
        telemetry: Arc<Mutex<Telemetry>>,
        shared: Arc<Shared>,
    ) -> Self {
        ServiceCtx {
            name: name.into(),
            generation,
            telemetry,
            shared,
            epoch: None,
            supervisor: None,
        }
    }

    /// A singleton's context: its writes are fenced with `epoch`.
    pub fn with_epoch(mut self, epoch: Option<i64>) -> Self {
        self.epoch = epoch;
        self
    }

    /// The supervisor that owns this service (to wake a sibling or follow the lease).
    pub fn with_supervisor(mut self, supervisor: Addr<Supervisor>) -> Self {
        self.supervisor = Some(supervisor);
        self
    }

    pub fn supervisor(&self) -> Option<&Addr<Supervisor>> {
        self.supervisor.as_ref()
    }

    /// The fence a singleton writes under (`None` for services that run on every replica).
    pub fn fence(&self) -> Option<Fence> {
        self.epoch.map(|epoch| Fence {
            instance: self.shared.instance_id().clone(),
            epoch,
        })
    }

    /// `store` as this service must write through it: fenced for a singleton.
    pub fn store(&self, store: &Store) -> Store {
        store.fenced(self.fence())
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    pub fn shared(&self) -> &Arc<Shared> {
        &self.shared
    }

    /// Whether a tick may start now: the database is healthy (dependent services skip their
    /// ticks while it is not, instead of crash-looping) and, for a singleton, this instance
    /// still leads with the epoch it was started under.
    pub fn may_work(&self) -> bool {
        self.shared.db_healthy()
            && self
                .epoch
                .is_none_or(|epoch| self.shared.leading_epoch() == Some(epoch))
    }

    fn with<R>(&self, f: impl FnOnce(&mut Telemetry) -> R) -> Option<R> {
        let mut t: MutexGuard<'_, Telemetry> =
            self.telemetry.lock().unwrap_or_else(|e| e.into_inner());
        (t.generation == self.generation).then(|| f(&mut t))
    }

    /// A tick starts: the hang clock runs until [`tick_ok`](Self::tick_ok) or
    /// [`tick_err`](Self::tick_err).
    pub fn tick_begin(&self) {
        self.with(|t| {
            t.tick_started = Some(Instant::now());
            t.last_tick_at = Some(Utc::now());
            t.ticks += 1;
        });
    }

    /// For a service with several passes in flight: the hang clock runs from `since` (the
    /// oldest still running), or stops when none is.
    pub fn tick_running_since(&self, since: Option<Instant>) {
        self.with(|t| t.tick_started = since);
    }

    pub fn tick_ok(&self) {
        self.with(|t| {
            t.tick_started = None;
            t.last_success_at = Some(Utc::now());
        });
    }

    /// An error the service absorbs (it backs off by itself); recorded, no restart.
    pub fn tick_err(&self, error: &dyn std::fmt::Display) {
        let message = error.to_string();
        tracing::warn!(service = %self.name, error = %message, "tick failed");
        self.with(|t| {
            t.tick_started = None;
            t.errors += 1;
            t.last_error = Some(LastError {
                message,
                at: Utc::now(),
            });
        });
    }

    /// The next scheduled run, the interval in force and why.
    pub fn schedule(&self, interval: Duration, reason: impl Into<String>) {
        let next =
            Utc::now() + chrono::Duration::from_std(interval).unwrap_or(chrono::Duration::zero());
        let reason = reason.into();
        self.with(|t| {
            t.next_run_at = Some(next);
            t.interval = Some(interval);
            t.interval_reason = Some(reason);
        });
    }

    /// An error this instance cannot absorb. The caller then stops the actor; the supervisor
    /// sees the exit, reads this reason and restarts per policy.
    pub fn fail(&self, error: &dyn std::fmt::Display) {
        let message = error.to_string();
        tracing::error!(service = %self.name, error = %message, "service failed");
        self.with(|t| {
            t.tick_started = None;
            t.errors += 1;
            t.failure = Some(message.clone());
            t.last_error = Some(LastError {
                message,
                at: Utc::now(),
            });
        });
    }
}

/// The one-tick-at-a-time bookkeeping of a timer-driven service: at most one tick in flight,
/// and a `Stop` that arrives mid-tick takes effect when the tick ends (actix drops in-flight
/// spawned futures when an actor stops, so stopping at once would cut the tick short).
#[derive(Debug, Default)]
pub struct TickGate {
    busy: bool,
    stop_requested: bool,
}

impl TickGate {
    /// Whether a tick may start: none in flight and no stop asked.
    pub fn ready(&self) -> bool {
        !self.busy && !self.stop_requested
    }

    /// A tick starts (call after [`ready`](Self::ready)): marks it in flight and starts the
    /// hang clock.
    pub fn begin(&mut self, svc: &ServiceCtx) {
        self.busy = true;
        svc.tick_begin();
    }

    /// The tick in flight ended; `true` when the actor must now stop (a stop came meanwhile).
    pub fn end(&mut self) -> bool {
        self.busy = false;
        self.stop_requested
    }

    /// Handles a [`Control`] message: `Stop` stops the actor now when idle, else when the tick
    /// ends; answers `true` for `Wake` (the caller looks for work now).
    pub fn control<A>(&mut self, msg: Control, ctx: &mut Context<A>) -> bool
    where
        A: Actor<Context = Context<A>>,
    {
        match msg {
            Control::Ping => false,
            Control::Wake => true,
            Control::Stop => {
                if self.busy {
                    self.stop_requested = true;
                } else {
                    ctx.stop();
                }
                false
            }
        }
    }
}

/// The one pending timer of a service that schedules itself pass by pass (the next pass at
/// once, after its interval, or after a backoff): setting a new one cancels the old, and the
/// registry is told the time and the reason.
#[derive(Debug, Default)]
pub struct NextRun(Option<SpawnHandle>);

impl NextRun {
    /// Runs `pass` after `delay`, in place of any run already pending.
    pub fn set<A>(
        &mut self,
        ctx: &mut Context<A>,
        svc: &ServiceCtx,
        delay: Duration,
        reason: impl Into<String>,
        pass: fn(&mut A, &mut Context<A>),
    ) where
        A: Actor<Context = Context<A>>,
    {
        if let Some(h) = self.0.take() {
            // A handle whose timer already fired is cancelled to no effect.
            ctx.cancel_future(h);
        }
        svc.schedule(delay, reason);
        self.0 = Some(ctx.run_later(delay, pass));
    }
}

/// A freshly built service, not yet running.
pub struct Spawned {
    pub control: Recipient<Control>,
    /// The actor's whole life as a future; the supervisor spawns it as its own task so a panic
    /// anywhere in the actor surfaces as a `JoinError`.
    pub run: Pin<Box<dyn Future<Output = ()>>>,
}

/// Builds a fresh service actor. Called on the child's own arbiter, so the actor need not be `Send`.
pub trait ChildFactory: Send + Sync + 'static {
    fn spawn(&self, svc: ServiceCtx) -> Result<Spawned, String>;
}

struct FnFactory<A, F> {
    build: F,
    _actor: PhantomData<fn() -> A>,
}

impl<A, F> ChildFactory for FnFactory<A, F>
where
    A: Actor<Context = Context<A>> + Handler<Control>,
    F: Fn(ServiceCtx) -> Result<A, String> + Send + Sync + 'static,
{
    fn spawn(&self, svc: ServiceCtx) -> Result<Spawned, String> {
        let actor = (self.build)(svc)?;
        let ctx = Context::new();
        let control = ctx.address().recipient();
        Ok(Spawned {
            control,
            run: Box::pin(ctx.into_future(actor)),
        })
    }
}

/// A [`ChildFactory`] from a closure that builds the actor from its [`ServiceCtx`].
pub fn factory<A, F>(build: F) -> Arc<dyn ChildFactory>
where
    A: Actor<Context = Context<A>> + Handler<Control>,
    F: Fn(ServiceCtx) -> Result<A, String> + Send + Sync + 'static,
{
    Arc::new(FnFactory {
        build,
        _actor: PhantomData,
    })
}

/// How a pass of a [`Periodic`] job ended, and so when the next one starts.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// Success: the next pass after the interval.
    Done,
    /// Success with work left (a backlog, a full batch): the next pass at once, and why.
    More(String),
    /// A failure the service absorbs (recorded, no restart): the next pass after the job's
    /// backoff for this many failures in a row (the interval without one), and never sooner
    /// than the upstream asked (`Retry-After`).
    Failed {
        error: String,
        retry_after: Option<Duration>,
    },
}

impl From<Result<(), String>> for Outcome {
    fn from(res: Result<(), String>) -> Self {
        match res {
            Ok(()) => Outcome::Done,
            Err(error) => Outcome::Failed {
                error,
                retry_after: None,
            },
        }
    }
}

/// A service that runs pass after pass: the job, for [`Every`], the generic actor that does
/// the rest (one pass at a time, the database-health (and leadership) gate, the registry's
/// tick bookkeeping, the next pass after the interval, at once or after a backoff, `Control`
/// with a `Stop` that waits for the pass in flight). A new periodic service is one impl of
/// this and one child spec.
pub trait Periodic: Unpin + Sized + 'static {
    /// What a pass hands back to the job: its result and any state it carried away.
    type Done: 'static;
    /// Names the pass in the registry's interval reason (`"sweep"` → `sweep: 60s`).
    const WHAT: &'static str;
    /// Names what fails in the reason of a backoff (`"RPC"` → `RPC failing (2 in a row): 20s`).
    const FAILING: &'static str = Self::WHAT;
    /// Whether passes wait for a healthy database (all but the health check itself).
    const NEEDS_DB: bool = true;
    /// Whether `Control::Wake` runs a pass now.
    const WAKES: bool = true;

    fn interval(&self) -> Duration;

    /// The pause between a pass that succeeded and the next (the interval, unless the job
    /// waits inside its pass).
    fn pause(&self) -> Duration {
        self.interval()
    }

    /// The backoff after failed passes (none: the interval).
    fn backoff(&self) -> Option<Backoff> {
        None
    }

    /// A delay before the first pass, and why (none: at once).
    fn first_delay(&self) -> Option<(Duration, String)> {
        None
    }

    /// Starts a pass. What it needs is cloned or moved into the future, so the actor keeps
    /// answering its messages while the pass runs.
    fn pass(&mut self) -> Pin<Box<dyn Future<Output = Self::Done>>>;

    /// Takes a pass's result back and says how it ended.
    fn finished(&mut self, done: Self::Done, svc: &ServiceCtx) -> Outcome;
}

/// The actor of a [`Periodic`] job.
pub struct Every<P: Periodic> {
    job: P,
    svc: ServiceCtx,
    gate: TickGate,
    next: NextRun,
    /// Failed passes in a row.
    failures: u32,
}

impl<P: Periodic> Every<P> {
    pub fn of(job: P, svc: ServiceCtx) -> Self {
        Every {
            job,
            svc,
            gate: TickGate::default(),
            next: NextRun::default(),
            failures: 0,
        }
    }

    fn later(&mut self, ctx: &mut Context<Self>, delay: Duration, reason: String) {
        self.next.set(ctx, &self.svc, delay, reason, Self::run);
    }

    fn at_pace(&mut self, ctx: &mut Context<Self>) {
        let every = self.job.interval();
        let reason = format!("{}: {}", P::WHAT, crate::db::humantime(every));
        self.later(ctx, self.job.pause(), reason);
    }

    fn run(&mut self, ctx: &mut Context<Self>) {
        if !self.gate.ready() {
            return;
        }
        if P::NEEDS_DB && !self.svc.may_work() {
            let every = self.job.interval();
            let reason = "database unhealthy or not leading: waiting".to_string();
            self.later(ctx, every, reason);
            return;
        }
        self.gate.begin(&self.svc);
        let pass = self.job.pass();
        ctx.spawn(pass.into_actor(self).map(|done, act, ctx| {
            let stop = act.gate.end();
            let outcome = act.job.finished(done, &act.svc);
            act.after(outcome, ctx);
            if stop {
                ctx.stop();
            }
        }));
    }

    fn after(&mut self, outcome: Outcome, ctx: &mut Context<Self>) {
        match outcome {
            Outcome::Done => {
                self.failures = 0;
                self.svc.tick_ok();
                self.at_pace(ctx);
            }
            Outcome::More(reason) => {
                self.failures = 0;
                self.svc.tick_ok();
                self.later(ctx, Duration::ZERO, reason);
            }
            Outcome::Failed { error, retry_after } => {
                self.failures += 1;
                self.svc.tick_err(&error);
                match self.job.backoff() {
                    None => self.at_pace(ctx),
                    Some(backoff) => {
                        let delay = backoff.after(self.failures, retry_after);
                        let reason = format!(
                            "{} failing ({} in a row): {}",
                            P::FAILING,
                            self.failures,
                            crate::db::humantime(delay)
                        );
                        self.later(ctx, delay, reason);
                    }
                }
            }
        }
    }
}

impl<P: Periodic> Actor for Every<P> {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Self::Context) {
        match self.job.first_delay() {
            Some((delay, reason)) if !delay.is_zero() => self.later(ctx, delay, reason),
            _ => {
                // The registry shows the pace from the start, not only once a first pass
                // ended (which waits for a healthy database).
                let every = self.job.interval();
                let reason = format!("{}: {}", P::WHAT, crate::db::humantime(every));
                self.svc.schedule(every, reason);
                self.run(ctx);
            }
        }
    }
}

impl<P: Periodic> Handler<Control> for Every<P> {
    type Result = ();

    fn handle(&mut self, msg: Control, ctx: &mut Self::Context) {
        if self.gate.control(msg, ctx) && P::WAKES {
            self.run(ctx);
        }
    }
}
