//! Operator endpoints: liveness, readiness, the status registry and service control.

use std::time::Duration;

use actix_web::{web, HttpResponse};
use serde::Serialize;
use serde_json::json;
use tipoff_actors::status::ServiceStatus;
use tipoff_actors::store::PoolStats;
use tipoff_actors::supervisor::{ask, GetStatus, RestartChild, StartChild, StopChild};

use super::{auth::Admin, error::ApiError, AppState};

/// Bound on a stop or restart request: the actor timeout plus room for the child's stop timeout.
const CONTROL_GRACE: Duration = Duration::from_secs(10);

/// Liveness: the process answers HTTP.
pub async fn health() -> HttpResponse {
    HttpResponse::Ok().json(json!({"status": "ok"}))
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
    Ok(HttpResponse::Ok().json(json!({"status": "ready"})))
}

#[derive(Serialize)]
struct Database {
    backend: &'static str,
    healthy: bool,
    pool: PoolStats,
}

#[derive(Serialize)]
struct DebugStatus {
    instance_id: String,
    version: &'static str,
    environment: &'static str,
    started_at: chrono::DateTime<chrono::Utc>,
    ready: bool,
    leader: bool,
    database: Database,
    services: Vec<ServiceStatus>,
}

/// The status registry and process facts.
pub async fn debug_status(_: Admin, state: web::Data<AppState>) -> Result<HttpResponse, ApiError> {
    let registry = ask(&state.supervisor, GetStatus, state.actor_timeout).await?;
    Ok(HttpResponse::Ok().json(DebugStatus {
        instance_id: state.lifecycle.instance_id.clone(),
        version: env!("CARGO_PKG_VERSION"),
        environment: state.environment,
        started_at: state.lifecycle.started_at,
        ready: state.lifecycle.ready() && state.shared.db_healthy(),
        leader: state.shared.leader(),
        database: Database {
            backend: state.store.backend().as_str(),
            healthy: state.shared.db_healthy(),
            pool: state.store.pool_stats(),
        },
        services: registry.services,
    }))
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
    let status = match action.as_str() {
        "start" => ask(sup, StartChild { name: name.clone() }, timeout).await??,
        "restart" => ask(sup, RestartChild { name: name.clone() }, timeout).await??,
        "stop" => {
            ask(sup, StopChild { name: name.clone() }, timeout)
                .await??
                .status
        }
        other => {
            return Err(ApiError::NotFound(format!(
                "unknown action `{other}`: use start, stop or restart"
            )))
        }
    };
    tracing::info!(service = %name, %action, state = status.state.as_str(), "service control");
    Ok(HttpResponse::Ok().json(status))
}
