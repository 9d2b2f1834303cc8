//! One supervised child: its spec, live instance, restart bookkeeping and telemetry.

use super::*;

/// How a child's task ended.
#[derive(Debug)]
pub(super) enum Exit {
    Returned,
    Panicked(String),
    FailedToStart(String),
    Aborted,
}

pub(super) struct Link {
    pub(super) control: Recipient<Control>,
    pub(super) abort: AbortHandle,
    pub(super) arbiter: Arbiter,
}

pub(super) struct Child {
    pub(super) spec: ChildSpec,
    pub(super) state: ServiceState,
    pub(super) since: DateTime<Utc>,
    /// Generation of the live instance; 0 when there is none.
    pub(super) generation: u64,
    /// The lease epoch a singleton's live instance was started under.
    pub(super) epoch: Option<i64>,
    pub(super) link: Option<Link>,
    pub(super) telemetry: Arc<Mutex<Telemetry>>,
    pub(super) restarts: u64,
    /// Consecutive restarts, for the backoff exponent.
    pub(super) attempt: u32,
    pub(super) intensity: Intensity,
    pub(super) running_since: Option<Instant>,
    pub(super) last_pong: Instant,
    pub(super) ping_inflight: bool,
    pub(super) restart_timer: Option<SpawnHandle>,
    pub(super) restart_at: Option<DateTime<Utc>>,
    pub(super) stop_waiters: Vec<oneshot::Sender<()>>,
    /// Removed by a reload: stopped, hidden from the registry, revived if configured again.
    pub(super) retired: bool,
    /// The thread (and runtime) of the last instance, kept for the next one: database
    /// connections opened on it stay usable by everyone after the instance stops (a stopped
    /// runtime would break them mid-query). Only a cut-off instance's thread is abandoned.
    pub(super) idle_arbiter: Option<Arbiter>,
}

impl Child {
    pub(super) fn new(spec: ChildSpec) -> Self {
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

    pub(super) fn active(&self) -> bool {
        matches!(
            self.state,
            ServiceState::Starting
                | ServiceState::Running
                | ServiceState::BackingOff
                | ServiceState::Stopping
        )
    }

    /// A singleton configuration enables (the ones that follow the lease).
    pub(super) fn follows_lease(&self) -> bool {
        self.spec.singleton && self.spec.factory.is_some() && !self.retired
    }

    pub(super) fn set_state(&mut self, state: ServiceState) {
        if self.state != state {
            tracing::info!(service = %self.spec.name, from = self.state.as_str(), to = state.as_str(), "service state");
            self.state = state;
            self.since = Utc::now();
        }
    }

    pub(super) fn telemetry(&self) -> std::sync::MutexGuard<'_, Telemetry> {
        self.telemetry.lock().unwrap_or_else(|e| e.into_inner())
    }

    pub(super) fn record_error(&self, message: &str) {
        let mut t = self.telemetry();
        t.errors += 1;
        t.last_error = Some(LastError {
            message: message.to_string(),
            at: Utc::now(),
        });
    }

    pub(super) fn status(&self, leader: Option<&str>) -> ServiceStatus {
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
    pub(super) fn finish_stop(&mut self) {
        self.set_state(ServiceState::Stopped);
        for waiter in self.stop_waiters.drain(..) {
            let _ = waiter.send(());
        }
    }

    /// Cancels a pending restart; `true` if there was one.
    pub(super) fn cancel_restart(&mut self, ctx: &mut Context<Supervisor>) -> bool {
        self.restart_at = None;
        match self.restart_timer.take() {
            Some(handle) => ctx.cancel_future(handle),
            None => false,
        }
    }

    /// Ends the live instance without waiting: aborts its task and stops its arbiter. A thread
    /// blocked inside the actor cannot be interrupted; it is abandoned and any late exit report
    /// is ignored by generation.
    pub(super) fn cut_off(&mut self) {
        if let Some(link) = self.link.take() {
            link.abort.abort();
            link.arbiter.stop();
        }
        self.generation = 0;
        self.ping_inflight = false;
        self.telemetry().tick_started = None;
    }
}
