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
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use actix::prelude::*;
use chrono::{DateTime, Utc};

use crate::status::LastError;

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

/// Health facts shared by the whole tree.
#[derive(Debug)]
pub struct Shared {
    db_healthy: AtomicBool,
}

impl Default for Shared {
    fn default() -> Self {
        Shared {
            db_healthy: AtomicBool::new(true),
        }
    }
}

impl Shared {
    pub fn db_healthy(&self) -> bool {
        self.db_healthy.load(Ordering::Acquire)
    }

    pub fn set_db_healthy(&self, healthy: bool) -> bool {
        self.db_healthy.swap(healthy, Ordering::AcqRel)
    }

    /// Whether this instance runs the singleton services. There is no leader lease yet
    /// (SPEC §9), so every instance leads: right on SQLite, where one process owns the file.
    pub fn leader(&self) -> bool {
        true
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
        }
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    pub fn shared(&self) -> &Arc<Shared> {
        &self.shared
    }

    /// Dependent services skip their ticks while this is false instead of crash-looping.
    pub fn db_healthy(&self) -> bool {
        self.shared.db_healthy()
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
