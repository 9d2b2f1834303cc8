//! The daemon's own settings: where it listens, the database it opens, who is admin, logging,
//! shutdown, and the HTTP layer's limits. The services' settings live with the services (in
//! `tipoff_actors`); [`crate::config`] composes both.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use serde::{Deserialize, Serialize};
use tipoff_actors::settings::{self, Dur, Invalid, NonZero, Secret, Section};
use tipoff_actors::store::Backend;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum Environment {
    #[serde(alias = "dev")]
    Development,
    #[serde(alias = "prod")]
    Production,
}

impl Environment {
    pub fn as_str(self) -> &'static str {
        match self {
            Environment::Development => "development",
            Environment::Production => "production",
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    Pretty,
    Json,
}

/// The HTTP server, the database URL, the admin, logging and shutdown.
#[derive(Debug, Clone, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(default)]
pub struct ServerSettings {
    /// `development` or `production` (secure cookies, registration and docs off by default,
    /// a warning without an admin token).
    pub env: Environment,
    /// The HTTP listener's address.
    #[serde(deserialize_with = "socket_address")]
    pub listen: SocketAddr,
    /// `sqlite:…` or `postgres://…` (default: `tipoff.db` in the data directory).
    #[serde(deserialize_with = "settings::secret")]
    pub database_url: Option<Secret>,
    /// Where the default SQLite database lives (default: systemd's `STATE_DIRECTORY`, else
    /// `./data`).
    #[serde(deserialize_with = "path")]
    pub data_dir: Option<PathBuf>,
    /// The admin token (at least 16 characters): bearer for `/admin/*`, sign-in for the
    /// dashboard. Unset, the admin API answers 401.
    #[serde(deserialize_with = "settings::secret")]
    pub admin_token: Option<Secret>,
    /// Log filter (`info`, `tipoff=debug,info`, …).
    pub log: String,
    /// `pretty` or `json`.
    pub log_format: LogFormat,
    /// HTTP worker threads.
    #[serde(deserialize_with = "settings::at_least::<1, _, _>")]
    pub http_workers: usize,
    /// The one overall shutdown deadline (keep it under systemd's `TimeoutStopSec`).
    #[serde(with = "NonZero")]
    pub shutdown_timeout: Duration,
    /// Time between `/ready` turning 503 and the listener closing, for load balancers to notice.
    #[serde(with = "Dur")]
    pub shutdown_drain_delay: Duration,
    /// Bound on every HTTP handler → actor request.
    #[serde(with = "NonZero")]
    pub actor_timeout: Duration,
    /// Longest a cached public list answer is served (it is dropped at once on a local write;
    /// the TTL bounds how long another replica's writes go unseen). Zero turns the cache off.
    #[serde(with = "Dur")]
    pub read_cache_ttl: Duration,
    /// Bytes of cached answers the read cache keeps at most (least recently used go first).
    #[serde(deserialize_with = "settings::at_least::<65536, _, _>")]
    pub read_cache_max_bytes: usize,
    /// Comment line sent on idle SSE streams.
    #[serde(with = "NonZero")]
    pub sse_heartbeat: Duration,
    /// Live streams open at once on this daemon; 503 beyond.
    #[serde(deserialize_with = "settings::at_least::<1, _, _>")]
    pub sse_max_streams: usize,
    /// Live streams open at once per client address; 503 beyond.
    #[serde(deserialize_with = "settings::at_least::<1, _, _>")]
    pub sse_max_streams_per_client: usize,
    /// The longest `/metrics` reuses its database figures (zero: read them on every scrape).
    #[serde(with = "Dur")]
    pub metrics_db_interval: Duration,
    /// How long a dashboard session lasts.
    #[serde(with = "NonZero")]
    pub session_ttl: Duration,
    /// Failed admin authentications one client address may make per window before 429.
    #[serde(deserialize_with = "settings::at_least::<1, _, _>")]
    pub auth_failure_limit: u32,
    #[serde(with = "NonZero")]
    pub auth_failure_window: Duration,
    /// Whether `POST /api/v1/users` registers (default: on in development, off in production).
    #[serde(deserialize_with = "settings::switch")]
    pub registration: Option<bool>,
    /// Whether `/docs` and `/openapi.json` are served (default: on in development).
    #[serde(deserialize_with = "settings::switch")]
    pub docs: Option<bool>,
}

impl Default for ServerSettings {
    fn default() -> Self {
        ServerSettings {
            env: Environment::Development,
            listen: SocketAddr::from(([127, 0, 0, 1], 8080)),
            database_url: None,
            data_dir: None,
            admin_token: None,
            log: "info".into(),
            log_format: LogFormat::Pretty,
            http_workers: 2,
            shutdown_timeout: Duration::from_secs(25),
            shutdown_drain_delay: Duration::ZERO,
            actor_timeout: Duration::from_secs(5),
            read_cache_ttl: Duration::from_secs(1),
            read_cache_max_bytes: 16 * 1024 * 1024,
            sse_heartbeat: Duration::from_secs(15),
            sse_max_streams: 10_000,
            sse_max_streams_per_client: 32,
            metrics_db_interval: Duration::from_secs(5),
            session_ttl: Duration::from_secs(12 * 3600),
            auth_failure_limit: 10,
            auth_failure_window: Duration::from_secs(5 * 60),
            registration: None,
            docs: None,
        }
    }
}

impl Section for ServerSettings {
    fn check(&self) -> Result<(), Invalid> {
        if let Some(url) = &self.database_url {
            if Backend::of_url(url.expose()).is_none() {
                return Err(Invalid::new(
                    "database_url",
                    format!(
                        "`{}` is not a sqlite: or postgres:// URL",
                        tipoff_actors::redact::url(url.expose())
                    ),
                ));
            }
        }
        if self
            .admin_token
            .as_ref()
            .is_some_and(|t| t.expose().len() < 16)
        {
            return Err(Invalid::new(
                "admin_token",
                "must be at least 16 characters long",
            ));
        }
        tracing_subscriber::EnvFilter::try_new(&self.log)
            .map_err(|e| Invalid::new("log", format!("`{}` is not a log filter: {e}", self.log)))?;
        Ok(())
    }
}

fn socket_address<'de, D: serde::Deserializer<'de>>(d: D) -> Result<SocketAddr, D::Error> {
    let text = String::deserialize(d)?;
    text.trim().parse().map_err(|_| {
        serde::de::Error::custom(format!(
            "`{text}` is not a socket address like 127.0.0.1:8080"
        ))
    })
}

/// An optional path; empty is none.
fn path<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Option<PathBuf>, D::Error> {
    let text = Option::<String>::deserialize(d)?.unwrap_or_default();
    Ok((!text.trim().is_empty()).then(|| PathBuf::from(text.trim())))
}

impl ServerSettings {
    /// The database URL (after loading, the default is filled in).
    pub fn database_url(&self) -> &str {
        self.database_url.as_ref().map_or("", Secret::expose)
    }

    pub fn production(&self) -> bool {
        self.env == Environment::Production
    }

    pub fn registration(&self) -> bool {
        self.registration.unwrap_or(!self.production())
    }

    pub fn docs(&self) -> bool {
        self.docs.unwrap_or(!self.production())
    }
}
