//! How the rest of the daemon talks to the supervisor: bounded requests, start-up and shutdown.

use super::*;

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
pub(super) struct ReleaseThreads;

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
