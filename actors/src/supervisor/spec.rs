//! What the supervisor is given: child specs, restart policies, its settings, and what it reports.

use super::*;

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

    pub(super) fn with(
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
