//! Test harness: in-process apps, PostgreSQL test databases, a TCP proxy, the built binary.

use std::collections::HashMap;
use std::io::{BufRead, BufReader};
use std::os::unix::net::UnixDatagram;
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tipoff::config::Config;
use tipoff::startup::{Application, Exit};
use tipoff::systemd::Notifier;
use tokio::sync::oneshot;

pub use crate::espn_mock::espn_fixture;

/// Runs `$body(Db)` on SQLite and on PostgreSQL (see `postgres_db` for the skip rules).
macro_rules! both_backends {
    ($body:ident: $sqlite:ident, $postgres:ident) => {
        #[actix_rt::test]
        async fn $sqlite() {
            $body(Db::Sqlite).await;
        }

        #[actix_rt::test]
        async fn $postgres() {
            let Some(url) = postgres_db(stringify!($postgres)).await else {
                return;
            };
            $body(Db::Postgres(url)).await;
        }
    };
    // A test that drives its own runtime (child processes, SIGKILLs).
    (blocking $body:ident: $sqlite:ident, $postgres:ident) => {
        #[test]
        fn $sqlite() {
            $body(Db::Sqlite);
        }

        #[test]
        fn $postgres() {
            let rt = tokio::runtime::Runtime::new().unwrap();
            let Some(url) = rt.block_on(postgres_db(stringify!($postgres))) else {
                return;
            };
            drop(rt);
            $body(Db::Postgres(url));
        }
    };
}

pub const ADMIN_TOKEN: &str = "test-admin-token-0123456789";

/// Held by the tests that load both cores for a long while (the schemathesis run) and by the
/// ones that measure a latency, so the two never overlap.
pub static EXCLUSIVE: std::sync::Mutex<()> = std::sync::Mutex::new(());

/// Takes [`EXCLUSIVE`] (a panicked holder does not poison it for the others).
pub fn exclusive() -> std::sync::MutexGuard<'static, ()> {
    EXCLUSIVE.lock().unwrap_or_else(|e| e.into_inner())
}

/// Which database a test runs on.
#[derive(Debug, Clone)]
pub enum Db {
    Sqlite,
    Postgres(String),
}

impl Db {
    /// The backend's name, as `/debug/status` reports it.
    pub fn backend(&self) -> &'static str {
        match self {
            Db::Sqlite => "sqlite",
            Db::Postgres(_) => "postgres",
        }
    }
}

/// A uniquely named PostgreSQL database, or `None` (after a loud SKIPPED line) when
/// `TIPOFF_TEST_POSTGRES_URL` is unset. Under `CI=true` a missing variable fails the test.
pub async fn postgres_db(test: &str) -> Option<String> {
    let Ok(base) = std::env::var("TIPOFF_TEST_POSTGRES_URL") else {
        if std::env::var("CI").is_ok_and(|v| v == "true") {
            panic!("TIPOFF_TEST_POSTGRES_URL must be set in CI; the PostgreSQL suite may not be skipped");
        }
        eprintln!("SKIPPED: {test} needs PostgreSQL; set TIPOFF_TEST_POSTGRES_URL=postgres://postgres@127.0.0.1:5432/postgres");
        return None;
    };
    let name = format!("tipoff_test_{}", uuid::Uuid::new_v4().simple());
    Some(
        tipoff_actors::store::postgres::create_database(&base, &name)
            .await
            .expect("create a test database on TIPOFF_TEST_POSTGRES_URL's server"),
    )
}

/// The database URL for `db`, creating what it needs inside `dir`.
pub fn database_url(db: &Db, dir: &std::path::Path) -> String {
    match db {
        Db::Sqlite => format!("sqlite://{}", dir.join("tipoff.db").display()),
        Db::Postgres(url) => url.clone(),
    }
}

/// Settings for an in-process test app; `extra` overrides.
pub fn test_env(db_url: &str, extra: &[(&str, &str)]) -> HashMap<String, String> {
    let mut env: HashMap<String, String> = [
        ("TIPOFF_LISTEN", "127.0.0.1:0"),
        ("TIPOFF_DATABASE_URL", db_url),
        ("TIPOFF_ADMIN_TOKEN", ADMIN_TOKEN),
        ("TIPOFF_DB_PING_INTERVAL", "100ms"),
        ("TIPOFF_DB_STARTUP_TIMEOUT", "3s"),
        ("TIPOFF_SUPERVISOR_CHECK_INTERVAL", "50ms"),
        ("TIPOFF_HTTP_WORKERS", "1"),
        ("TIPOFF_SHUTDOWN_TIMEOUT", "5s"),
        // Tests read /metrics right after the writes they check.
        ("TIPOFF_METRICS_DB_INTERVAL", "0s"),
    ]
    .iter()
    .map(|(k, v)| (k.to_string(), v.to_string()))
    .collect();
    for (k, v) in extra {
        env.insert(k.to_string(), v.to_string());
    }
    env
}

/// A daemon running inside the test's actix system.
pub struct TestApp {
    pub address: String,
    pub store: tipoff_actors::Store,
    pub client: reqwest::Client,
    shutdown: Option<oneshot::Sender<()>>,
    task: Option<tokio::task::JoinHandle<Exit>>,
    _dir: tempfile::TempDir,
}

impl TestApp {
    pub async fn get(&self, path: &str) -> reqwest::Response {
        self.client
            .get(format!("{}{path}", self.address))
            .send()
            .await
            .expect("request")
    }

    /// A request with the admin bearer token.
    pub async fn admin(&self, method: reqwest::Method, path: &str) -> reqwest::Response {
        self.client
            .request(method, format!("{}{path}", self.address))
            .bearer_auth(ADMIN_TOKEN)
            .send()
            .await
            .expect("request")
    }

    pub async fn admin_get(&self, path: &str) -> reqwest::Response {
        self.admin(reqwest::Method::GET, path).await
    }

    pub async fn admin_post(&self, path: &str) -> reqwest::Response {
        self.admin(reqwest::Method::POST, path).await
    }

    /// An admin POST with a JSON body.
    pub async fn admin_post_json(&self, path: &str, body: &serde_json::Value) -> reqwest::Response {
        self.client
            .post(format!("{}{path}", self.address))
            .bearer_auth(ADMIN_TOKEN)
            .json(body)
            .send()
            .await
            .expect("request")
    }

    /// GET `path` as JSON, asserting a 200.
    pub async fn json(&self, path: &str) -> serde_json::Value {
        let res = self.admin_get(path).await;
        assert_eq!(res.status(), 200, "GET {path}");
        res.json().await.expect("JSON body")
    }

    /// Polls `path` until it answers `status`, failing after `within`.
    pub async fn wait_status(&self, path: &str, status: u16, within: Duration) {
        let deadline = Instant::now() + within;
        loop {
            let got = self.get(path).await.status().as_u16();
            if got == status {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "{path} answered {got}, expected {status}"
            );
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
    }

    /// Triggers shutdown and waits for the exit.
    pub async fn stop(mut self) -> Exit {
        let _ = self.shutdown.take().expect("running").send(());
        self.task.take().expect("running").await.expect("app task")
    }
}

/// Builds the app (bound, services started, not yet ready); the caller runs it.
pub async fn build_app(db: &Db, extra: &[(&str, &str)]) -> (Application, tempfile::TempDir) {
    let dir = tempfile::tempdir().unwrap();
    let url = database_url(db, dir.path());
    let config = Config::load(None, &test_env(&url, extra)).expect("valid test config");
    let app = Application::build(config, Arc::new(Notifier::from_socket(None)))
        .await
        .expect("app builds");
    (app, dir)
}

/// Builds and runs an app; it is ready when this returns.
pub async fn spawn_app(db: &Db, extra: &[(&str, &str)]) -> TestApp {
    let (app, dir) = build_app(db, extra).await;
    run(app, dir).await
}

pub async fn run(app: Application, dir: tempfile::TempDir) -> TestApp {
    let address = format!("http://127.0.0.1:{}", app.port());
    let store = app.store();
    let (tx, rx) = oneshot::channel::<()>();
    let task = actix_rt::spawn(app.run_until_stopped(async {
        let _ = rx.await;
    }));
    let test_app = TestApp {
        address,
        store,
        // Idle connections are dropped before the server's keep-alive (5 s) closes them, so a
        // request after a long pause never lands on a connection being closed.
        client: reqwest::Client::builder()
            .pool_idle_timeout(Duration::from_secs(2))
            .build()
            .unwrap(),
        shutdown: Some(tx),
        task: Some(task),
        _dir: dir,
    };
    test_app
        .wait_status("/ready", 200, Duration::from_secs(5))
        .await;
    test_app
}

/// A TCP proxy in front of PostgreSQL that a test can cut and restore.
pub struct Proxy {
    pub port: u16,
    upstream: String,
    tasks: Option<tokio::task::JoinHandle<()>>,
    conns: Arc<Mutex<Vec<tokio::task::AbortHandle>>>,
}

impl Proxy {
    pub async fn start(upstream: &str) -> Proxy {
        let mut p = Proxy {
            port: 0,
            upstream: upstream.to_string(),
            tasks: None,
            conns: Arc::default(),
        };
        p.listen().await;
        p
    }

    async fn listen(&mut self) {
        let listener = tokio::net::TcpListener::bind(("127.0.0.1", self.port))
            .await
            .expect("proxy bind");
        self.port = listener.local_addr().unwrap().port();
        let upstream = self.upstream.clone();
        let conns = self.conns.clone();
        self.tasks = Some(tokio::spawn(async move {
            while let Ok((mut inbound, _)) = listener.accept().await {
                let upstream = upstream.clone();
                let task = tokio::spawn(async move {
                    if let Ok(mut outbound) = tokio::net::TcpStream::connect(upstream).await {
                        let _ = tokio::io::copy_bidirectional(&mut inbound, &mut outbound).await;
                    }
                });
                conns.lock().unwrap().push(task.abort_handle());
            }
        }));
    }

    /// Closes the listener and every open connection.
    pub fn cut(&mut self) {
        if let Some(t) = self.tasks.take() {
            t.abort();
        }
        for c in self.conns.lock().unwrap().drain(..) {
            c.abort();
        }
    }

    /// Listens again on the same port.
    pub async fn restore(&mut self) {
        self.listen().await;
    }
}

/// A free port on loopback (bound then released).
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// The built `tipoff` binary, run with a clean `TIPOFF_*` environment.
pub fn tipoff_command(dir: &std::path::Path) -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_tipoff"));
    for (k, _) in std::env::vars() {
        if k.starts_with("TIPOFF_") || k == "NOTIFY_SOCKET" || k.starts_with("WATCHDOG_") {
            cmd.env_remove(k);
        }
    }
    cmd.current_dir(dir).stdin(Stdio::null());
    cmd
}

/// A daemon process with a `NOTIFY_SOCKET` the test listens on and its stderr collected.
pub struct Daemon {
    pub child: Child,
    pub port: u16,
    pub dir: tempfile::TempDir,
    notify: UnixDatagram,
    stderr: Arc<Mutex<String>>,
}

impl Daemon {
    pub fn spawn(env: &[(&str, &str)]) -> Daemon {
        Self::spawn_in(tempfile::tempdir().unwrap(), env)
    }

    pub fn spawn_in(dir: tempfile::TempDir, env: &[(&str, &str)]) -> Daemon {
        let socket = dir
            .path()
            .join(format!("notify-{}.sock", uuid::Uuid::new_v4().simple()));
        let notify = UnixDatagram::bind(&socket).unwrap();
        let port = free_port();
        let mut cmd = tipoff_command(dir.path());
        cmd.env("NOTIFY_SOCKET", &socket)
            .env("TIPOFF_LISTEN", format!("127.0.0.1:{port}"))
            .env("TIPOFF_ADMIN_TOKEN", ADMIN_TOKEN)
            .env("TIPOFF_LOG_FORMAT", "json")
            .env("TIPOFF_HTTP_WORKERS", "1")
            .env("TIPOFF_METRICS_DB_INTERVAL", "0s")
            .stdout(Stdio::null())
            .stderr(Stdio::piped());
        for (k, v) in env {
            cmd.env(k, v);
        }
        let mut child = cmd.spawn().expect("spawn tipoff");
        let stderr = Arc::new(Mutex::new(String::new()));
        let pipe = child.stderr.take().unwrap();
        let sink = stderr.clone();
        std::thread::spawn(move || {
            for line in BufReader::new(pipe).lines().map_while(Result::ok) {
                let mut s = sink.lock().unwrap();
                s.push_str(&line);
                s.push('\n');
            }
        });
        Daemon {
            child,
            port,
            dir,
            notify,
            stderr,
        }
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://127.0.0.1:{}{path}", self.port)
    }

    /// Waits for a notify datagram containing `needle`; returns it.
    pub fn wait_notify(&self, needle: &str, within: Duration) -> String {
        let deadline = Instant::now() + within;
        let mut buf = [0u8; 4096];
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            assert!(
                !left.is_zero(),
                "no `{needle}` notification within {within:?}; stderr:\n{}",
                self.stderr()
            );
            self.notify.set_read_timeout(Some(left)).unwrap();
            if let Ok(n) = self.notify.recv(&mut buf) {
                let msg = String::from_utf8_lossy(&buf[..n]).into_owned();
                if msg.contains(needle) {
                    return msg;
                }
            }
        }
    }

    /// Every notify datagram received within `window`.
    pub fn notifications_for(&self, window: Duration) -> Vec<String> {
        let deadline = Instant::now() + window;
        let mut buf = [0u8; 4096];
        let mut got = Vec::new();
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return got;
            }
            self.notify.set_read_timeout(Some(left)).unwrap();
            if let Ok(n) = self.notify.recv(&mut buf) {
                got.push(String::from_utf8_lossy(&buf[..n]).into_owned());
            }
        }
    }

    pub fn stderr(&self) -> String {
        self.stderr.lock().unwrap().clone()
    }

    /// Waits until the daemon's log holds `needle` (a line travels through a pipe: it may land
    /// after the notification that caused it).
    pub fn wait_stderr(&self, needle: &str, within: Duration) {
        let deadline = std::time::Instant::now() + within;
        while !self.stderr().contains(needle) {
            assert!(
                std::time::Instant::now() < deadline,
                "no `{needle}` in the log within {within:?}:\n{}",
                self.stderr()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    pub fn signal(&self, sig: libc::c_int) {
        // SAFETY: sending a signal to our own child process.
        unsafe { libc::kill(self.child.id() as i32, sig) };
    }

    /// Waits for the exit; returns the code and how long it took.
    pub fn wait_exit(&mut self, within: Duration) -> (Option<i32>, Duration) {
        let started = Instant::now();
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                return (status.code(), started.elapsed());
            }
            if started.elapsed() > within {
                let _ = self.child.kill();
                panic!(
                    "tipoff did not exit within {within:?}; stderr:\n{}",
                    self.stderr()
                );
            }
            std::thread::sleep(Duration::from_millis(10));
        }
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A fresh, migrated and seeded store on `db`.
pub async fn fresh_store(db: &Db, dir: &std::path::Path) -> tipoff_actors::Store {
    let store = tipoff_actors::Store::connect(
        &database_url(db, dir),
        &tipoff_actors::StoreOptions::default(),
    )
    .await
    .unwrap();
    store.migrate().await.unwrap();
    store.reconcile_catalog().await.unwrap();
    store
}

/// The row of service `name` in a `/debug/status` answer.
pub fn service(status: &serde_json::Value, name: &str) -> Option<serde_json::Value> {
    status["services"]
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["name"] == name)
        .cloned()
}
