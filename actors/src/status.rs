//! The status registry's vocabulary: what every supervised service reports, as the supervisor
//! hands it to `/debug/status`, the dashboard and systemd's `STATUS=` line.

use chrono::{DateTime, Utc};
use serde::Serialize;

/// Lifecycle state of one supervised service.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, schemars::JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum ServiceState {
    Starting,
    Running,
    BackingOff,
    Stopping,
    Stopped,
    Skipped,
    Failed,
    /// A singleton on a replica that does not hold the leader lease: it starts when this
    /// replica becomes leader.
    Standby,
}

impl ServiceState {
    pub fn as_str(self) -> &'static str {
        match self {
            ServiceState::Starting => "starting",
            ServiceState::Running => "running",
            ServiceState::BackingOff => "backing_off",
            ServiceState::Stopping => "stopping",
            ServiceState::Stopped => "stopped",
            ServiceState::Skipped => "skipped",
            ServiceState::Failed => "failed",
            ServiceState::Standby => "standby",
        }
    }
}

/// The last error a service reported, with when it happened.
#[derive(Debug, Clone, Serialize, PartialEq, schemars::JsonSchema)]
pub struct LastError {
    pub message: String,
    pub at: DateTime<Utc>,
}

/// One row of the status registry.
#[derive(Debug, Clone, Serialize, schemars::JsonSchema)]
pub struct ServiceStatus {
    pub name: String,
    pub state: ServiceState,
    pub since: DateTime<Utc>,
    pub critical: bool,
    pub singleton: bool,
    /// Restarts performed by the supervisor since the process started (manual ones included).
    pub restarts: u64,
    pub last_error: Option<LastError>,
    pub last_tick_at: Option<DateTime<Utc>>,
    pub last_success_at: Option<DateTime<Utc>>,
    pub next_run_at: Option<DateTime<Utc>>,
    /// Current timer interval in seconds, when the service runs on one.
    pub interval_secs: Option<f64>,
    /// Why the interval is what it is, e.g. `live games: 60s`.
    pub interval_reason: Option<String>,
    pub skip_reason: Option<String>,
    /// Why a singleton is in `standby`, e.g. `follower (leader: <instance>)`.
    pub standby_reason: Option<String>,
    pub ticks: u64,
    pub errors: u64,
}

/// Everything the supervisor knows, in start order.
#[derive(Debug, Clone, Serialize)]
pub struct Registry {
    pub services: Vec<ServiceStatus>,
}

impl Registry {
    pub fn get(&self, name: &str) -> Option<&ServiceStatus> {
        self.services.iter().find(|s| s.name == name)
    }

    /// One line for systemd's `STATUS=`: counts per state, e.g. `4 running, 3 skipped`.
    pub fn summary(&self) -> String {
        let order = [
            ServiceState::Running,
            ServiceState::Starting,
            ServiceState::BackingOff,
            ServiceState::Stopping,
            ServiceState::Stopped,
            ServiceState::Failed,
            ServiceState::Standby,
            ServiceState::Skipped,
        ];
        let parts: Vec<String> = order
            .iter()
            .filter_map(|state| {
                let n = self.services.iter().filter(|s| s.state == *state).count();
                (n > 0).then(|| format!("{n} {}", state.as_str()))
            })
            .collect();
        if parts.is_empty() {
            "no services".to_string()
        } else {
            parts.join(", ")
        }
    }
}
