//! Wiring and lifespan.
//!
//! [`Application::build`] runs startup up to a bound listener: boot banner → database (connect
//! within the startup timeout, migrate, seed) → root supervisor with every child in spec order →
//! HTTP bound (port 0 in tests). [`Application::run_until_stopped`] turns ready (`/ready` 200,
//! `READY=1`) and, when the injected shutdown future resolves (or a critical service gives up),
//! stops in phases under one deadline: `/ready` 503 + `STOPPING=1` → HTTP drains → services stop
//! in reverse order → pool closed.

use std::future::Future;
use std::net::TcpListener;
use std::sync::Arc;
use std::time::{Duration, Instant};

use actix::{Actor, Addr};
use actix_web::{web, HttpServer};
use tipoff_actors::events::EventHub;
use tipoff_actors::leader;
use tipoff_actors::search::SearchHub;
use tipoff_actors::settings::changed_keys;
use tipoff_actors::supervisor::{self, Fatal, GetStatus};
use tipoff_actors::{Backend, ChildSpec, Registry, Shared, Store, Supervisor};
use tokio::sync::mpsc;

use crate::config::{redact_url, Config};
use crate::http::{self, AdminToken, AppState, Lifecycle, Reloadable};
use crate::services;
use crate::systemd::{self, Notifier};

/// Why startup failed; each says what to fix.
#[derive(Debug, thiserror::Error)]
pub enum StartupError {
    #[error("database: {0}")]
    Database(#[from] tipoff_actors::StoreError),
    #[error("cannot listen on {addr} (TIPOFF_LISTEN): {cause}")]
    Listen { addr: String, cause: String },
    #[error("the supervisor did not start: {0}")]
    Supervisor(String),
}

/// How the daemon ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Exit {
    /// Stopped on request (signal or test); exit code 0.
    Requested,
    /// A critical service gave up; exit non-zero so the service manager restarts the process.
    Fatal(String),
}

impl Exit {
    pub fn code(&self) -> u8 {
        match self {
            Exit::Requested => 0,
            Exit::Fatal(_) => 1,
        }
    }
}

/// A started daemon: services running, listener bound, not yet ready.
pub struct Application {
    port: u16,
    server: actix_web::dev::ServerHandle,
    server_task: tokio::task::JoinHandle<std::io::Result<()>>,
    state: web::Data<AppState>,
    supervisor: Addr<Supervisor>,
    store: Store,
    fatal: mpsc::UnboundedReceiver<Fatal>,
    notifier: Arc<Notifier>,
    config: Config,
    boot: Instant,
}

impl Application {
    /// Startup up to a bound listener. Must run inside an actix `System`.
    pub async fn build(
        config: Config,
        notifier: Arc<Notifier>,
    ) -> Result<Application, StartupError> {
        Self::build_with(config, notifier, Vec::new()).await
    }

    /// [`build`](Self::build) with `extra` children started after the configured ones (tests
    /// use it to put purpose-built services under the same supervisor).
    pub async fn build_with(
        config: Config,
        notifier: Arc<Notifier>,
        extra: Vec<ChildSpec>,
    ) -> Result<Application, StartupError> {
        let boot = Instant::now();
        let store = open_store(&config, &notifier).await?;

        let instance = uuid::Uuid::new_v4().to_string();
        let shared = Arc::new(Shared::new(
            instance.as_str(),
            store.backend() == Backend::Sqlite,
        ));
        if store.backend() == Backend::Postgres {
            first_lease(&store, &config, &instance, &shared).await;
        }
        let events = EventHub::new(1024, store.last_event_id().await?);
        let search = SearchHub::new();
        let mut specs = services::child_specs(&config, &store, &events, &search, &instance)
            .map_err(StartupError::Supervisor)?;
        let live = reloadable(&config, &instance).map_err(StartupError::Supervisor)?;
        specs.extend(extra);
        for spec in &specs {
            match &spec.skip_reason {
                None => {
                    tracing::info!(service = %spec.name, critical = spec.critical, "service enabled")
                }
                Some(reason) => tracing::info!(service = %spec.name, %reason, "service skipped"),
            }
        }
        let (supervisor, fatal) = Supervisor::new(specs, config.supervisor.clone(), shared.clone());
        let supervisor = supervisor.start();
        supervisor::start_all(&supervisor)
            .await
            .map_err(|e| StartupError::Supervisor(e.to_string()))?;

        let listen_err = |e: std::io::Error| StartupError::Listen {
            addr: config.server.listen.to_string(),
            cause: e.to_string(),
        };
        let listener = TcpListener::bind(config.server.listen).map_err(listen_err)?;
        let port = listener.local_addr().map_err(listen_err)?.port();
        let state = web::Data::new(AppState {
            supervisor: supervisor.clone(),
            store: store.clone(),
            shared,
            lifecycle: Arc::new(Lifecycle::new()),
            admin: AdminToken::new(config.server.admin_token.as_ref().map(|t| t.expose())),
            actor_timeout: config.server.actor_timeout,
            environment: config.server.env.as_str(),
            live: std::sync::RwLock::new(live),
            search,
            read_cache: http::cache::ReadCache::new(
                config.server.read_cache_ttl,
                config.server.read_cache_max_bytes,
            ),
            sessions: http::auth::Sessions {
                ttl: config.server.session_ttl,
                secure: config.server.production(),
            },
            auth_limiter: http::auth::AuthLimiter::new(
                config.server.auth_failure_limit,
                config.server.auth_failure_window,
            ),
            streams: http::events::StreamCaps::new(
                config.server.sse_max_streams,
                config.server.sse_max_streams_per_client,
            ),
            registration: config.server.registration(),
            events: events.clone(),
            sse_heartbeat: config.server.sse_heartbeat,
            docs: config.server.docs(),
            metrics: http::metrics::Metrics::new(config.server.metrics_db_interval),
            stakes: tipoff_actors::stakes::StakeBatcher::new(),
            callers: Default::default(),
        });
        let app_state = state.clone();
        let drain = config.server.shutdown_timeout.as_secs().clamp(1, 10);
        let server = HttpServer::new(move || http::app(app_state.clone()))
            .workers(config.server.http_workers)
            .disable_signals()
            .shutdown_timeout(drain)
            .listen(listener)
            .map_err(listen_err)?
            .run();
        let handle = server.handle();
        // Serving from here on: `/health` answers and `/ready` says 503 until run_until_stopped.
        let server_task = actix_rt::spawn(server);
        Ok(Application {
            port,
            server: handle,
            server_task,
            state,
            supervisor,
            store,
            fatal,
            notifier,
            config,
            boot,
        })
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    /// Applies reloaded configurations to this daemon (SIGHUP).
    pub fn reloader(&self) -> Reloader {
        Reloader {
            supervisor: self.supervisor.clone(),
            store: self.store.clone(),
            state: self.state.clone(),
            running: Arc::new(std::sync::Mutex::new(self.config.clone())),
        }
    }

    pub fn store(&self) -> Store {
        self.store.clone()
    }

    /// Turns ready and serves until `shutdown` resolves or a critical service gives up, then
    /// stops in phases under the overall deadline.
    pub async fn run_until_stopped(self, shutdown: impl Future<Output = ()>) -> Exit {
        let Application {
            port,
            server: handle,
            mut server_task,
            state,
            supervisor,
            store,
            mut fatal,
            notifier,
            config,
            boot,
        } = self;
        state.lifecycle.set_ready();
        let registry = supervisor::ask(&supervisor, GetStatus, state.actor_timeout)
            .await
            .ok();
        let summary = status_line(registry.as_ref(), &state);
        notifier.notify(&format!("READY=1\nSTATUS={summary}"));
        tracing::info!(port, startup_ms = boot.elapsed().as_millis() as u64, status = %summary, "ready");

        let keepalive = actix_rt::spawn(keep_systemd_informed(
            supervisor.clone(),
            state.clone(),
            notifier.clone(),
        ));

        let exit = tokio::select! {
            () = shutdown => Exit::Requested,
            Some(f) = fatal.recv() => Exit::Fatal(format!("critical service {} failed: {}", f.service, f.reason)),
            res = &mut server_task => {
                Exit::Fatal(format!("the HTTP server stopped unexpectedly: {res:?}"))
            }
        };
        let started = Instant::now();
        let deadline = config.server.shutdown_timeout;
        let remaining = || deadline.saturating_sub(started.elapsed());
        match &exit {
            Exit::Requested => {
                tracing::info!(deadline_ms = deadline.as_millis() as u64, "shutting down")
            }
            Exit::Fatal(reason) => tracing::error!(%reason, "shutting down after a fatal failure"),
        }
        state.lifecycle.begin_stopping();
        notifier.notify("STOPPING=1\nSTATUS=stopping");
        // Live streams get their final event now, so the drain below does not wait on them.
        state.lifecycle.close_streams();
        if !config.server.shutdown_drain_delay.is_zero() {
            tokio::time::sleep(config.server.shutdown_drain_delay.min(remaining())).await;
        }
        if tokio::time::timeout(remaining(), handle.stop(true))
            .await
            .is_err()
        {
            tracing::error!("HTTP server did not drain before the shutdown deadline");
        }
        tracing::info!(
            elapsed_ms = started.elapsed().as_millis() as u64,
            "HTTP drained"
        );
        let report = supervisor::shutdown(&supervisor, remaining()).await;
        if !report.cut_off.is_empty() {
            tracing::warn!(services = ?report.cut_off, "services cut off at their stop timeout");
        }
        keepalive.abort();
        if tokio::time::timeout(remaining().max(Duration::from_millis(100)), store.close())
            .await
            .is_err()
        {
            tracing::error!("database pool did not close before the shutdown deadline");
        }
        tracing::info!(elapsed_ms = started.elapsed().as_millis() as u64, stopped = ?report.stopped, "stopped");
        exit
    }
}

/// Applies a reloaded configuration without a restart: enabled services (leagues, tokens,
/// webhooks), their intervals and settings, and what the handlers read (enabled leagues,
/// tokens). Settings that need a restart (listen address, database, admin token, workers...)
/// are named in a warning and keep their running values.
#[derive(Clone)]
pub struct Reloader {
    supervisor: Addr<Supervisor>,
    store: Store,
    state: web::Data<AppState>,
    running: Arc<std::sync::Mutex<Config>>,
}

impl Reloader {
    /// Reconciles the supervisor with `config`; returns what changed.
    pub async fn apply(&self, config: &Config) -> Result<supervisor::Reconciled, String> {
        let instance = self.state.shared.instance_id().to_string();
        let specs = services::child_specs(
            config,
            &self.store,
            &self.state.events,
            &self.state.search,
            &instance,
        )?;
        let live = reloadable(config, &instance)?;
        let done = supervisor::ask(
            &self.supervisor,
            supervisor::Reconcile { specs },
            // Stopping removed or changed services takes up to their stop timeouts.
            Duration::from_secs(120),
        )
        .await
        .map_err(|e| e.to_string())?
        .map_err(|e| e.to_string())?;
        self.state.set_live(live);
        let mut running = self.running.lock().unwrap_or_else(|e| e.into_inner());
        // The daemon's own settings and the pool's are read once at start: a change is
        // reported, not applied (the log filter is applied by the caller).
        let mut ignored = changed_keys(&running.server, &config.server);
        ignored.retain(|k| k != "log");
        ignored.extend(changed_keys(&running.db, &config.db));
        if !ignored.is_empty() {
            tracing::warn!(settings = ?ignored, "changed settings need a restart; their running values are kept");
        }
        *running = config.clone();
        Ok(done)
    }
}

/// `STATUS=` text: the role (leader or follower), the registry summary (when the supervisor
/// answered) and the database state.
fn status_line(registry: Option<&Registry>, state: &AppState) -> String {
    let services =
        registry.map_or_else(|| "supervisor not answering".to_string(), Registry::summary);
    let db = if state.shared.db_healthy() {
        "ok"
    } else {
        "unavailable"
    };
    let lease = state.shared.lease();
    let role = if lease.leader {
        format!("leader (epoch {})", lease.epoch.unwrap_or_default())
    } else {
        format!(
            "follower (leader: {})",
            lease.leader_instance.as_deref().unwrap_or("none")
        )
    };
    format!("{role}; services: {services}; database: {db}")
}

/// Keeps `STATUS=` current and sends `WATCHDOG=1` at half of `WATCHDOG_USEC`, only while the
/// supervisor answers and the database is healthy.
async fn keep_systemd_informed(
    supervisor: Addr<Supervisor>,
    state: web::Data<AppState>,
    notifier: Arc<Notifier>,
) {
    if !notifier.enabled() {
        return;
    }
    let watchdog = systemd::watchdog_interval();
    let period = watchdog
        .unwrap_or(Duration::from_secs(5))
        .min(Duration::from_secs(5));
    let mut ticker = tokio::time::interval(period);
    let mut last = String::new();
    loop {
        ticker.tick().await;
        let registry = supervisor::ask(&supervisor, GetStatus, state.actor_timeout.min(period))
            .await
            .ok();
        let line = status_line(registry.as_ref(), &state);
        if line != last {
            notifier.notify(&format!("STATUS={line}"));
            last = line;
        }
        if watchdog.is_some() {
            if registry.is_some() && state.shared.db_healthy() {
                notifier.notify("WATCHDOG=1");
            } else {
                tracing::warn!("watchdog keep-alive withheld: supervisor or database unhealthy");
            }
        }
    }
}

/// Connects, migrates and reconciles the league catalog.
async fn open_store(config: &Config, notifier: &Notifier) -> Result<Store, StartupError> {
    let url = config.server.database_url().to_string();
    tracing::info!(
        version = env!("CARGO_PKG_VERSION"),
        environment = config.server.env.as_str(),
        database = %redact_url(&url),
        listen = %config.server.listen,
        "tipoff starting"
    );
    // A leader paused inside a transaction loses its locks within one lease TTL (the
    // options carry it: `idle_in_transaction_timeout`).
    let store = Store::connect(&url, &config.db).await?;
    // Migrations and the search index of markets stored before search can take minutes on a
    // large database (a million markets: ~90 s).
    crate::systemd::extending_start(
        notifier,
        Duration::from_secs(15),
        "migrating the database",
        store.migrate(),
    )
    .await?;
    let catalog = store.reconcile_catalog().await?;
    tracing::info!(
        backend = store.backend().as_str(),
        leagues_added = ?catalog.added,
        leagues_updated = ?catalog.updated,
        "database ready"
    );
    if !catalog.unknown.is_empty() {
        tracing::warn!(leagues = ?catalog.unknown, "leagues in the database that the catalog no longer has are kept (games may refer to them)");
    }
    Ok(store)
}

/// One attempt at the leader lease before the services start, so a lone replica's singletons
/// start in order with the others; the `leader` service renews (or keeps trying) from here.
async fn first_lease(store: &Store, config: &Config, instance: &str, shared: &Shared) {
    // One attempt before the services start, so a lone replica's singletons start in
    // order with the others; the `leader` service renews (or keeps trying) from here.
    let settings = config.leader.clone();
    let sent = Instant::now();
    match tokio::time::timeout(
        settings.renew_every(),
        store.acquire_lease(instance, settings.ttl),
    )
    .await
    {
        Ok(Ok(lease)) => shared.set_lease(leader::view_of(&lease, instance, sent, &settings)),
        Ok(Err(e)) => {
            tracing::warn!(error = %e, "leader lease not taken at startup; the leader service keeps trying")
        }
        Err(_) => tracing::warn!(
            "leader lease not taken at startup (timed out); the leader service keeps trying"
        ),
    }
    let lease = shared.lease();
    tracing::info!(
        instance = %instance,
        leader = lease.leader,
        epoch = lease.epoch,
        leader_instance = lease.leader_instance.as_deref().unwrap_or("none"),
        "leader lease"
    );
}

/// What the handlers take from `config` (again on every reload).
fn reloadable(config: &Config, instance: &str) -> Result<Reloadable, String> {
    Ok(Reloadable {
        leagues_enabled: config.espn.leagues.clone(),
        money: config.money.clone(),
        embeddings: services::embeddings_client(config, instance)?,
        search_embed_timeout: config.search.embed_timeout,
    })
}
