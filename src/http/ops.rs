//! Operator endpoints: liveness, readiness, the status registry and service control.

use std::time::Duration;

use actix_web::{web, HttpResponse};
use serde::Serialize;
use tipoff_actors::listener::Forwarded;
use tipoff_actors::status::ServiceStatus;
use tipoff_actors::store::lease::CONTROL_CHANNEL;
use tipoff_actors::store::PoolStats;
use tipoff_actors::supervisor::{
    ask, GetStatus, RestartChild, StartChild, StopChild, SupervisorError, WakeChild,
};
use tipoff_actors::Backend;

use super::{auth::Admin, error::ApiError, AppState};

/// Bound on a stop or restart request: the actor timeout plus room for the child's stop timeout.
const CONTROL_GRACE: Duration = Duration::from_secs(10);

/// The answer of `/health` (`ok`) and `/ready` (`ready`).
#[derive(serde::Serialize, schemars::JsonSchema)]
pub struct Status {
    status: &'static str,
}

/// Liveness: the process answers HTTP.
pub async fn health() -> HttpResponse {
    HttpResponse::Ok().json(Status { status: "ok" })
}

/// Readiness: started, not stopping, and the database reachable.
pub async fn ready(state: web::Data<AppState>) -> Result<HttpResponse, ApiError> {
    if state.lifecycle.stopping() {
        return Err(ApiError::Unavailable("shutting down".into()));
    }
    if !state.lifecycle.ready() {
        return Err(ApiError::Unavailable("starting".into()));
    }
    if !state.shared.db_healthy() {
        return Err(ApiError::Unavailable("database unavailable".into()));
    }
    Ok(HttpResponse::Ok().json(Status { status: "ready" }))
}

#[derive(Serialize, schemars::JsonSchema)]
pub struct Database {
    backend: &'static str,
    healthy: bool,
    pool: PoolStats,
}

/// Instance facts and the status registry.
#[derive(Serialize, schemars::JsonSchema)]
pub struct DebugStatus {
    instance_id: String,
    version: &'static str,
    environment: &'static str,
    started_at: chrono::DateTime<chrono::Utc>,
    ready: bool,
    leader: bool,
    leader_instance: Option<String>,
    epoch: Option<i64>,
    lease_expires_at: Option<chrono::DateTime<chrono::Utc>>,
    database: Database,
    services: Vec<ServiceStatus>,
    search: SearchStatus,
}

/// Market search as this replica sees it (the backlog and rate come from the local backfill's
/// last pass, so they are `null` on a replica that has not run it).
#[derive(Serialize, schemars::JsonSchema)]
pub struct SearchStatus {
    /// `hybrid` when embeddings are configured and the vector index is loaded, else `keyword`.
    mode: &'static str,
    model: Option<String>,
    backlog: Option<u64>,
    rate_per_second: Option<f64>,
    embedded_total: u64,
    upstream_errors_total: u64,
    index_vectors: u64,
}

/// The status registry and process facts.
pub async fn debug_status(_: Admin, state: web::Data<AppState>) -> Result<HttpResponse, ApiError> {
    let registry = ask(&state.supervisor, GetStatus, state.actor_timeout).await?;
    let lease = state.shared.lease();
    Ok(HttpResponse::Ok().json(DebugStatus {
        instance_id: state.shared.instance_id().to_string(),
        version: env!("CARGO_PKG_VERSION"),
        environment: state.environment,
        started_at: state.lifecycle.started_at,
        ready: state.lifecycle.ready() && state.shared.db_healthy(),
        leader: lease.leader,
        leader_instance: lease.leader_instance,
        epoch: lease.epoch,
        lease_expires_at: lease.lease_expires_at,
        database: Database {
            backend: state.store.backend().as_str(),
            healthy: state.shared.db_healthy(),
            pool: state.store.pool_stats(),
        },
        services: registry.services,
        search: search_status(&state),
    }))
}

fn search_status(state: &AppState) -> SearchStatus {
    use std::sync::atomic::Ordering::Relaxed;
    let stats = &state.search.stats;
    let model = state.embeddings().map(|(c, _)| c.model().to_string());
    let ran = stats.embedded_total.load(Relaxed) > 0 || stats.rate() > 0.0;
    let leads_backfill = model.is_some() && state.shared.leader();
    SearchStatus {
        mode: if model.is_some() && state.search.index().is_some() {
            "hybrid"
        } else {
            "keyword"
        },
        backlog: (leads_backfill || ran).then(|| stats.backlog.load(Relaxed)),
        rate_per_second: ran.then(|| (stats.rate() * 10.0).round() / 10.0),
        model,
        embedded_total: stats.embedded_total.load(Relaxed),
        upstream_errors_total: stats.upstream_errors_total.load(Relaxed),
        index_vectors: stats.index_vectors.load(Relaxed),
    }
}

/// Forwards an admin command for a singleton to the leader (`NOTIFY tipoff_control`; the
/// leader's `listener` carries it out). Only a replica on PostgreSQL can be a follower.
pub async fn forward(state: &AppState, service: &str, action: &str) -> Result<(), ApiError> {
    if state.store.backend() != Backend::Postgres {
        return Err(ApiError::Refused(
            "no_replica",
            format!(
                "service `{service}` is in standby and there is no other replica to forward to"
            ),
        ));
    }
    let command = Forwarded {
        service: service.to_string(),
        action: action.to_string(),
        from: state.shared.instance_id().to_string(),
    };
    let payload = serde_json::to_string(&command).map_err(|e| ApiError::Internal(e.to_string()))?;
    state.store.notify(CONTROL_CHANNEL, &payload).await?;
    Ok(())
}

/// Bound on a step-down: the singletons finish their ticks (each within its stop timeout).
const STEP_DOWN_TIMEOUT: Duration = Duration::from_secs(45);

/// `POST /admin/leader/step-down`: the leader's singletons stop, the lease is released and
/// another replica takes over at once; this one does not take the lease again for one TTL.
pub async fn step_down(_: Admin, state: web::Data<AppState>) -> Result<HttpResponse, ApiError> {
    if state.store.backend() == Backend::Sqlite {
        return Err(ApiError::Refused(
            "not_leader",
            "SQLite: the one process always leads; there is no lease to give up".into(),
        ));
    }
    if !state.shared.leader() {
        return Err(ApiError::Refused(
            "not_leader",
            format!(
                "this replica is not the leader (leader: {})",
                state
                    .shared
                    .lease()
                    .leader_instance
                    .as_deref()
                    .unwrap_or("none")
            ),
        ));
    }
    let (tx, rx) = tokio::sync::oneshot::channel();
    state.shared.request_step_down(tx);
    ask(
        &state.supervisor,
        WakeChild {
            name: "leader".into(),
        },
        state.actor_timeout,
    )
    .await??;
    match tokio::time::timeout(STEP_DOWN_TIMEOUT, rx).await {
        Ok(Ok(Ok(done))) => {
            tracing::info!(
                epoch = done.epoch,
                released = done.released,
                elapsed_ms = done.elapsed_ms,
                "stepped down on request"
            );
            Ok(HttpResponse::Ok().json(done))
        }
        Ok(Ok(Err(message))) => Err(ApiError::Conflict(message)),
        Ok(Err(_)) => Err(ApiError::Unavailable(
            "the leader service ended before answering".into(),
        )),
        Err(_) => Err(ApiError::Unavailable(format!(
            "the step-down did not finish within {STEP_DOWN_TIMEOUT:?}"
        ))),
    }
}

/// A service command a follower forwarded to the leader.
#[derive(Serialize, schemars::JsonSchema)]
pub struct ForwardedCommand {
    forwarded: bool,
    service: String,
    action: String,
    /// The leader's instance id, when known.
    leader: Option<String>,
}

/// `POST /admin/services/{name}/{restart|stop|start}`: answers with the service's status after.
pub async fn control_service(
    _: Admin,
    state: web::Data<AppState>,
    path: web::Path<(String, String)>,
) -> Result<HttpResponse, ApiError> {
    let (name, action) = path.into_inner();
    let timeout = state.actor_timeout + CONTROL_GRACE;
    let sup = &state.supervisor;
    let answer = match action.as_str() {
        "start" => ask(sup, StartChild { name: name.clone() }, timeout).await?,
        "restart" => ask(sup, RestartChild { name: name.clone() }, timeout).await?,
        "stop" => {
            let registry = ask(sup, GetStatus, state.actor_timeout).await?;
            let standby = registry
                .get(&name)
                .is_some_and(|s| s.state == tipoff_actors::ServiceState::Standby);
            if standby {
                Err(SupervisorError::Standby {
                    service: name.clone(),
                    leader: state.shared.lease().leader_instance,
                })
            } else {
                ask(sup, StopChild { name: name.clone() }, timeout)
                    .await?
                    .map(|s| s.status)
            }
        }
        other => {
            return Err(ApiError::NotFound(format!(
                "unknown action `{other}`: use start, stop or restart"
            )))
        }
    };
    let status = match answer {
        Err(SupervisorError::Standby { service, leader }) => {
            forward(&state, &service, &action).await?;
            tracing::info!(service = %service, %action, leader = leader.as_deref().unwrap_or("none"), "service control forwarded to the leader");
            return Ok(HttpResponse::Accepted().json(ForwardedCommand {
                forwarded: true,
                service,
                action,
                leader,
            }));
        }
        other => other?,
    };
    tracing::info!(service = %name, %action, state = status.state.as_str(), "service control");
    Ok(HttpResponse::Ok().json(status))
}

/// Wakes a service so it looks for durable work now (an import, a re-embed job). Not running
/// here (a follower): the nudge is forwarded to the leader; either way the service finds the
/// work on its own timer if the nudge is lost.
pub(super) async fn wake(state: &AppState, name: &str) {
    match ask(
        &state.supervisor,
        WakeChild {
            name: name.to_string(),
        },
        state.actor_timeout,
    )
    .await
    {
        Ok(Ok(true)) => {}
        Ok(Ok(false)) if !state.shared.leader() => {
            if let Err(e) = forward(state, name, "wake").await {
                tracing::debug!(service = name, error = %e, "wake not forwarded; the leader finds the work on its timer");
            }
        }
        Ok(Ok(false)) => {}
        Ok(Err(e)) => tracing::debug!(service = name, error = %e, "service not woken"),
        Err(e) => {
            tracing::warn!(service = name, error = %e, "service not woken; it will find the work on its timer")
        }
    }
}
