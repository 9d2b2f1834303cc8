//! A reload: the supervisor's children brought in line with a new list of specs.

use super::*;

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

pub(super) enum ReconcileOp {
    Retire(usize),
    Start(usize),
    Revive(usize, ChildSpec),
    Replace(usize, ChildSpec),
}

impl Supervisor {
    pub(super) fn apply(
        &mut self,
        op: ReconcileOp,
        ctx: &mut Context<Self>,
    ) -> LocalBoxActorFuture<Self, ()> {
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
