//! A full NBA regular season imported through the daemon, and the games list under load.
//!
//! `cargo bench --bench season_import` (`DAYS=` sets the number of dates) runs the daemon in process (release build) with the NBA
//! poller reading a local mock ESPN that serves 170 CONSTRUCTED boards (1,230 final games, built
//! from the shape of the real `nba-scoreboard-20240129.json`). It asks for the import with
//! `POST /admin/imports` and times it until the job has succeeded, on SQLite (a fresh file) and,
//! when `TIPOFF_TEST_POSTGRES_URL` is set, on PostgreSQL (a fresh database). Then, when `wrk` is
//! installed, it loads `GET /api/v1/games?limit=50` at fixed concurrency (`WRK_CONNECTIONS`,
//! default 32; `WRK_DURATION`, default 10s) and prints wrk's figures.

#[allow(dead_code)]
#[path = "../tests/api/espn_mock.rs"]
mod espn_mock;
#[path = "../tests/api/mock_server.rs"]
mod mock_server;

mod common;

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use chrono::NaiveDate;
use serde_json::{json, Value};
use tipoff::config::Config;
use tipoff::startup::Application;
use tipoff::systemd::Notifier;

const TOKEN: &str = "bench-admin-token-0123456789";
/// Dates imported: `DAYS`, default 170 (a regular season).
fn dates() -> usize {
    std::env::var("DAYS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(170)
}

/// Games on those dates: 8 a day for the first 40, then 7 (1,230 for 170 days).
fn games() -> usize {
    7 * dates() + dates().min(40)
}

fn env(db_url: &str, espn: &str, cache_ttl: &str) -> HashMap<String, String> {
    [
        ("TIPOFF_LISTEN", "127.0.0.1:0"),
        ("TIPOFF_DATABASE_URL", db_url),
        ("TIPOFF_ADMIN_TOKEN", TOKEN),
        ("TIPOFF_LEAGUES", "nba"),
        ("TIPOFF_ESPN_BASE_URL", espn),
        ("TIPOFF_IMPORT_CHECK_INTERVAL", "100ms"),
        ("TIPOFF_LOG", "warn"),
        ("TIPOFF_READ_CACHE_TTL", cache_ttl),
    ]
    .iter()
    .map(|(k, v)| (k.to_string(), v.to_string()))
    .collect()
}

/// Imports the season into a fresh daemon on `db_url`; prints the figures; returns the port of
/// the still-running daemon and its stop handle.
async fn import_season(
    label: &str,
    db_url: &str,
    espn: &str,
    first: NaiveDate,
    cache_ttl: &str,
) -> (
    u16,
    tokio::sync::oneshot::Sender<()>,
    tokio::task::JoinHandle<()>,
) {
    let config = Config::load(None, &env(db_url, espn, cache_ttl)).expect("bench config");
    let app = Application::build(config, Arc::new(Notifier::from_socket(None)))
        .await
        .expect("daemon builds");
    let port = app.port();
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let task = actix_rt::spawn(async move {
        app.run_until_stopped(async {
            let _ = stopped.await;
        })
        .await;
    });
    let http = reqwest::Client::new();
    let base = format!("http://127.0.0.1:{port}");
    let (dates, games) = (dates(), games());
    let last = first + chrono::Duration::days(dates as i64 - 1);
    let started = Instant::now();
    let res = http
        .post(format!("{base}/admin/imports"))
        .bearer_auth(TOKEN)
        .json(&json!({"league": "nba", "from": first.to_string(), "to": last.to_string()}))
        .send()
        .await
        .expect("POST /admin/imports");
    assert_eq!(res.status(), 202);
    let id = res.json::<Value>().await.unwrap()["id"].clone();
    let job = loop {
        let job: Value = http
            .get(format!("{base}/admin/imports/{id}"))
            .bearer_auth(TOKEN)
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        if job["state"] != "queued" && job["state"] != "running" {
            break job;
        }
        tokio::time::sleep(Duration::from_millis(2)).await;
    };
    let elapsed = started.elapsed();
    assert_eq!(job["state"], "succeeded", "{job}");
    assert_eq!(job["games_upserted"], games as i64, "{job}");
    println!(
        "{label}: {dates} dates, {games} games imported in {:.0} ms ({:.0} games/s), request to succeeded",
        elapsed.as_secs_f64() * 1000.0,
        games as f64 / elapsed.as_secs_f64()
    );
    (port, stop, task)
}

fn wrk(label: &str, port: u16) {
    if std::process::Command::new("wrk")
        .arg("--version")
        .output()
        .is_err()
    {
        println!("{label}: wrk not installed (apt-get install wrk); games list load skipped");
        return;
    }
    let connections = std::env::var("WRK_CONNECTIONS").unwrap_or_else(|_| "32".into());
    let duration = std::env::var("WRK_DURATION").unwrap_or_else(|_| "10s".into());
    let out = std::process::Command::new("wrk")
        .args([
            "-t2",
            &format!("-c{connections}"),
            &format!("-d{duration}"),
            "--latency",
        ])
        .arg(format!("http://127.0.0.1:{port}/api/v1/games?limit=50"))
        .output()
        .expect("wrk runs");
    let text = String::from_utf8_lossy(&out.stdout);
    println!("{label}: GET /api/v1/games?limit=50, wrk 2 threads × {connections} connections, {duration}");
    for line in text.lines() {
        let l = line.trim();
        if l.starts_with("Requests/sec")
            || l.starts_with("Latency")
            || l.starts_with("50%")
            || l.starts_with("99%")
            || l.contains("Non-2xx")
        {
            println!("  {l}");
        }
    }
}

fn main() {
    // `cargo bench` passes `--bench`; nothing else is read. Warnings and errors go to stderr.
    tracing_subscriber::fmt()
        .with_env_filter("warn")
        .with_writer(std::io::stderr)
        .init();
    let first = NaiveDate::from_ymd_opt(2023, 10, 24).unwrap();
    let espn = espn_mock::MockEspn::start();
    for (i, date) in first.iter_days().take(dates()).enumerate() {
        let n = 7 + usize::from(i < 40);
        espn.serve("basketball/nba", date, espn_mock::generated_board(date, n));
    }
    common::print_machine();
    actix_rt::System::new().block_on(async {
        let dir = tempfile::tempdir().unwrap();
        // Each backend twice: with the read cache (the default, 1 s) and without it (0s).
        for (label, ttl) in [("sqlite", "1s"), ("sqlite, read cache off", "0s")] {
            let file = dir.path().join(format!("bench-{ttl}.db"));
            let url = format!("sqlite://{}", file.display());
            let (port, stop, task) = import_season(label, &url, &espn.base_url, first, ttl).await;
            // On a blocking thread: the main runtime must keep driving the sockets it opened.
            let _ = tokio::task::spawn_blocking(move || wrk(label, port)).await;
            let _ = stop.send(());
            let _ = task.await;
        }
        for (label, ttl) in [("postgres", "1s"), ("postgres, read cache off", "0s")] {
            let Some(url) = common::postgres_url("season").await else {
                println!("{label}: TIPOFF_TEST_POSTGRES_URL not set (or unreachable); skipped");
                continue;
            };
            let (port, stop, task) = import_season(label, &url, &espn.base_url, first, ttl).await;
            // On a blocking thread: the main runtime must keep driving the sockets it opened.
            let _ = tokio::task::spawn_blocking(move || wrk(label, port)).await;
            let _ = stop.send(());
            let _ = task.await;
        }
    });
}
