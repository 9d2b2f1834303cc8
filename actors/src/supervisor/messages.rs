//! The messages the supervisor answers: status, start, stop, restart, wake, the lease, shutdown.

use super::*;

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
pub(super) struct BeginShutdown;

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
pub(super) struct AbortAll;

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
