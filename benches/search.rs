//! Market search and the embedding backfill at scale.
//!
//! `cargo bench --bench search` (release build; needs `wrk`), on SQLite (a fresh file) and,
//! when `TIPOFF_TEST_POSTGRES_URL` is set, on PostgreSQL (a fresh database):
//!
//! - **Backfill**: `BACKFILL` markets (default 10,000) seeded by SQL, then the daemon in
//!   process with the mock embeddings API answering each batch after ~20 ms (default batch 64,
//!   concurrency 2): time until the backlog is empty.
//! - **Search**: `MARKETS` markets (default 100,000) with 384-dimension vectors (the mock's
//!   trigram vectors of each document, written by SQL), then `GET /api/v1/markets/search`
//!   under wrk with 1 and 32 connections, cycling through 64 queries (team names, cities,
//!   abbreviations, typos): first with nothing configured (keyword), then with embeddings
//!   configured (hybrid; the mock answers the query's embedding at once). The query's
//!   embedding call alone and the in-memory index lookup alone are timed too.
//!
//! Seeded rows are CONSTRUCTED: games named after real teams of the shared fixtures, paired
//! and dated deterministically.

#[allow(dead_code)]
#[path = "../tests/api/embeddings_mock.rs"]
mod embeddings_mock;
#[allow(dead_code)]
#[path = "../tests/api/mock_server.rs"]
mod mock_server;

mod common;

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use chrono::{TimeZone, Utc};
use serde_json::Value;
use tipoff::config::Config;
use tipoff::startup::Application;
use tipoff::systemd::Notifier;
use tipoff_actors::embeddings::{EmbeddingsClient, EmbeddingsConfig};
use tipoff_actors::search::VectorIndex;
use tipoff_actors::store::search::encode_vector;
use tipoff_actors::{Store, StoreOptions};

use embeddings_mock::MockEmbeddings;

const TOKEN: &str = "bench-admin-token-0123456789";
const DIM: usize = 384;

fn env_number(name: &str, default: usize) -> usize {
    std::env::var(name)
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(default)
}

/// Real teams (name, abbreviation) per league, read from the shared fixtures.
fn teams() -> Vec<(&'static str, Vec<(String, String)>)> {
    let read = |file: &str| {
        let body = std::fs::read(format!(
            "{}/../shared/fixtures/espn/{file}",
            env!("CARGO_MANIFEST_DIR")
        ))
        .expect("the shared ESPN fixtures beside the project");
        tipoff_actors::espn::parse_scoreboard(&body).unwrap()
    };
    let mut out = Vec::new();
    for (league, files) in [
        (
            "nba",
            &[
                "nba-scoreboard-20240129.json",
                "nba-scoreboard-20260224.json",
            ][..],
        ),
        (
            "mlb",
            &[
                "mlb-scoreboard-20250928.json",
                "mlb-scoreboard-20250902.json",
            ][..],
        ),
    ] {
        let mut teams: Vec<(String, String)> = Vec::new();
        for f in files {
            for g in read(f) {
                for side in [g.home, g.away] {
                    if !teams.iter().any(|(_, a)| *a == side.abbreviation) {
                        teams.push((side.name, side.abbreviation));
                    }
                }
            }
        }
        out.push((league, teams));
    }
    out
}

/// (league, external id, name, short name, home abbreviation, home name, `away abbr|away name`, start)
type SeedGame = (
    String,
    String,
    String,
    String,
    String,
    String,
    String,
    chrono::DateTime<Utc>,
);

/// Inserts `n` CONSTRUCTED games with their markets (set statements, 500 rows each), then
/// lets the store write their search documents.
async fn seed_markets(store: &Store, n: usize) {
    let teams = teams();
    let now = Utc::now();
    let base = Utc.with_ymd_and_hms(2025, 1, 1, 0, 0, 0).unwrap();
    let rows: Vec<SeedGame> = (0..n)
        .map(|i| {
            let (league, list) = &teams[i % teams.len()];
            let home = &list[i % list.len()];
            let away = &list[(i / list.len() + 1 + i) % list.len()];
            let away = if away.1 == home.1 {
                &list[(i + 1) % list.len()]
            } else {
                away
            };
            let starts = base + chrono::Duration::minutes(37 * i as i64);
            (
                league.to_string(),
                format!("bench-{i}"),
                format!("{} at {}", away.0, home.0),
                format!("{} @ {}", away.1, home.1),
                home.1.clone(),
                home.0.clone(),
                format!("{}|{}", away.1, away.0),
                starts,
            )
        })
        .collect();
    macro_rules! insert {
        ($pool:expr) => {{
            let pool = $pool;
            for chunk in rows.chunks(500) {
                let mut q = sqlx::QueryBuilder::new(
                    "INSERT INTO games (league, external_id, name, short_name, starts_at, state, home_abbr, home_name, away_abbr, away_name, updated_at) ",
                );
                q.push_values(chunk, |mut b, r| {
                    let (away_abbr, away_name) = r.6.split_once('|').unwrap();
                    b.push_bind(r.0.clone())
                        .push_bind(r.1.clone())
                        .push_bind(r.2.clone())
                        .push_bind(r.3.clone())
                        .push_bind(r.7)
                        .push_bind("scheduled")
                        .push_bind(r.4.clone())
                        .push_bind(r.5.clone())
                        .push_bind(away_abbr.to_string())
                        .push_bind(away_name.to_string())
                        .push_bind(now);
                });
                q.build().execute(pool).await.unwrap();
            }
            sqlx::query("INSERT INTO markets (game_id, question, created_at) SELECT id, 'Who wins ' || short_name || '?', updated_at FROM games WHERE id NOT IN (SELECT game_id FROM markets)")
                .execute(pool)
                .await
                .unwrap();
        }};
    }
    match store {
        Store::Sqlite(pool, _) => insert!(pool),
        Store::Postgres(pool, _) => insert!(pool),
    }
    // The migrations' last step writes the documents of markets that have none.
    store.migrate().await.unwrap();
}

/// Writes the mock's vector of every document (set statements, 200 rows each).
async fn seed_vectors(store: &Store, model: &str) {
    macro_rules! fill {
        ($pool:expr) => {{
            let pool = $pool;
            let docs: Vec<(i64, String, String)> =
                sqlx::query_as("SELECT market_id, document, doc_hash FROM market_search ORDER BY market_id")
                    .fetch_all(pool)
                    .await
                    .unwrap();
            let now = Utc::now();
            for chunk in docs.chunks(200) {
                let mut q = sqlx::QueryBuilder::new(
                    "INSERT INTO market_embeddings (market_id, model, dim, doc_hash, vector, embedded_at) ",
                );
                q.push_values(chunk, |mut b, (id, doc, hash)| {
                    b.push_bind(*id)
                        .push_bind(model.to_string())
                        .push_bind(DIM as i32)
                        .push_bind(hash.clone())
                        .push_bind(encode_vector(&embeddings_mock::embed(doc, DIM)))
                        .push_bind(now);
                });
                q.build().execute(pool).await.unwrap();
            }
        }};
    }
    match store {
        Store::Sqlite(pool, _) => fill!(pool),
        Store::Postgres(pool, _) => fill!(pool),
    }
}

fn env(db_url: &str, extra: &[(&str, &str)]) -> HashMap<String, String> {
    let mut env: HashMap<String, String> = [
        ("TIPOFF_LISTEN", "127.0.0.1:0"),
        ("TIPOFF_DATABASE_URL", db_url),
        ("TIPOFF_ADMIN_TOKEN", TOKEN),
        ("TIPOFF_LOG", "warn"),
        ("TIPOFF_DB_MAX_CONNECTIONS", "16"),
        ("TIPOFF_READ_CACHE_TTL", "0s"),
    ]
    .iter()
    .map(|(k, v)| (k.to_string(), v.to_string()))
    .collect();
    for (k, v) in extra {
        env.insert(k.to_string(), v.to_string());
    }
    env
}

struct Running {
    port: u16,
    stop: tokio::sync::oneshot::Sender<()>,
    task: tokio::task::JoinHandle<tipoff::startup::Exit>,
}

async fn start(db_url: &str, extra: &[(&str, &str)]) -> Running {
    let config = Config::load(None, &env(db_url, extra)).expect("bench config");
    let app = Application::build(config, Arc::new(Notifier::from_socket(None)))
        .await
        .expect("daemon builds");
    let port = app.port();
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let task = actix_rt::spawn(app.run_until_stopped(async {
        let _ = stopped.await;
    }));
    Running { port, stop, task }
}

impl Running {
    async fn embeddings(&self) -> Value {
        reqwest::Client::new()
            .get(format!("http://127.0.0.1:{}/admin/embeddings", self.port))
            .bearer_auth(TOKEN)
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap()
    }

    async fn search(&self, query: &str) -> Value {
        reqwest::get(format!(
            "http://127.0.0.1:{}/api/v1/markets/search?{query}",
            self.port
        ))
        .await
        .unwrap()
        .json()
        .await
        .unwrap()
    }

    async fn stop(self) {
        let _ = self.stop.send(());
        let _ = self.task.await;
    }
}

async fn backfill(label: &str, url: &str, markets: usize) {
    let store = Store::connect(url, &StoreOptions::default()).await.unwrap();
    store.migrate().await.unwrap();
    store.reconcile_catalog().await.unwrap();
    seed_markets(&store, markets).await;
    store.close().await;
    drop(store);
    let mock = MockEmbeddings::start(DIM);
    mock.set_delay(Duration::from_millis(20));
    let daemon = start(
        url,
        &[
            ("TIPOFF_EMBEDDINGS_URL", &mock.url),
            ("TIPOFF_EMBEDDINGS_MODEL", "bench-trigrams"),
        ],
    )
    .await;
    let started = Instant::now();
    let status = loop {
        let e = daemon.embeddings().await;
        if e["backlog"] == 0 && e["embedded"].as_u64() == Some(markets as u64) {
            break e;
        }
        assert!(started.elapsed() < Duration::from_secs(600), "{e}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    let took = started.elapsed();
    println!(
        "{label}: backfill: {markets} markets, mock answering each batch in ~20 ms, batch 64, 2 in flight: {:.2} s = {:.0} markets/s ({} calls; index holds {})",
        took.as_secs_f64(),
        markets as f64 / took.as_secs_f64(),
        mock.calls(),
        status["index_vectors"],
    );
    daemon.stop().await;
}

/// The queries the load cycles through: team names, cities, abbreviations, a few typos.
fn queries() -> Vec<String> {
    let mut q: Vec<String> = Vec::new();
    for (_, list) in teams() {
        for (name, abbr) in list.iter().take(14) {
            q.push(name.split(' ').next_back().unwrap().to_string());
            q.push(abbr.clone());
        }
    }
    q.extend(
        [
            "celtcs",
            "lakrs",
            "yankes",
            "new york",
            "boston",
            "los angeles",
        ]
        .map(String::from),
    );
    q.truncate(64);
    q
}

fn wrk(label: &str, mode: &str, port: u16, connections: usize) {
    // A short run first, not counted: connections and statement caches warm up.
    wrk_run(label, mode, port, connections, "2s", false);
    wrk_run(label, mode, port, connections, "8s", true);
}

fn wrk_run(label: &str, mode: &str, port: u16, connections: usize, duration: &str, report: bool) {
    let dir = tempfile::tempdir().unwrap();
    let script = dir.path().join("queries.lua");
    let paths: Vec<String> = queries()
        .iter()
        .map(|q| {
            format!(
                "\"/api/v1/markets/search?limit=20&mode={mode}&q={}\"",
                q.replace(' ', "%20")
            )
        })
        .collect();
    std::fs::write(
        &script,
        format!(
            "local paths = {{{}}}\nlocal i = 0\nrequest = function()\n  i = i % #paths + 1\n  return wrk.format(\"GET\", paths[i])\nend\n",
            paths.join(", ")
        ),
    )
    .unwrap();
    let threads = connections.min(2);
    let out = std::process::Command::new("wrk")
        .args([
            &format!("-t{threads}"),
            &format!("-c{connections}"),
            &format!("-d{duration}"),
            "--latency",
            "-s",
            script.to_str().unwrap(),
            &format!("http://127.0.0.1:{port}"),
        ])
        .output()
        .expect("wrk runs (apt-get install wrk)");
    let text = String::from_utf8_lossy(&out.stdout);
    let pick = |prefix: &str| {
        text.lines()
            .map(str::trim)
            .find(|l| l.starts_with(prefix))
            .unwrap_or("?")
            .split_whitespace()
            .last()
            .unwrap_or("?")
            .to_string()
    };
    let non2xx = text
        .lines()
        .find(|l| l.contains("Non-2xx"))
        .map(str::trim)
        .unwrap_or("all 2xx");
    if !report {
        return;
    }
    if pick("Requests/sec").starts_with("0.") || text.contains("Socket errors") {
        println!("{label}: wrk said:\n{text}");
    }
    println!(
        "{label}: search {mode}, {connections} connection(s): {} req/s; p50 {}, p99 {}; {non2xx}",
        pick("Requests/sec"),
        pick("50%"),
        pick("99%"),
    );
}

fn percentiles(mut samples: Vec<Duration>) -> (Duration, Duration) {
    samples.sort();
    let at = |p: f64| samples[((samples.len() as f64 * p) as usize).min(samples.len() - 1)];
    (at(0.50), at(0.99))
}

async fn search(label: &str, url: &str, markets: usize) {
    let store = Store::connect(url, &StoreOptions::default()).await.unwrap();
    store.migrate().await.unwrap();
    store.reconcile_catalog().await.unwrap();
    let seeded = Instant::now();
    seed_markets(&store, markets).await;
    seed_vectors(&store, "bench-trigrams").await;
    println!(
        "{label}: seeded {markets} markets with {DIM}-dimension vectors in {:.1} s",
        seeded.elapsed().as_secs_f64()
    );
    store.close().await;
    drop(store);

    let mock = MockEmbeddings::start(DIM);
    let loaded = Instant::now();
    let hybrid = start(
        url,
        &[
            ("TIPOFF_EMBEDDINGS_URL", &mock.url),
            ("TIPOFF_EMBEDDINGS_MODEL", "bench-trigrams"),
        ],
    )
    .await;
    loop {
        let e = hybrid.embeddings().await;
        if e["index_vectors"].as_u64() == Some(markets as u64) {
            break;
        }
        assert!(loaded.elapsed() < Duration::from_secs(300), "{e}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    println!(
        "{label}: the search index loaded {markets} vectors in {:.2} s",
        loaded.elapsed().as_secs_f64()
    );
    let body = hybrid.search("q=celtcs").await;
    assert_eq!(body["mode"], "hybrid", "{body}");
    let body = hybrid.search("q=celtics&mode=keyword").await;
    assert_eq!(body["mode"], "keyword");
    assert!(!body["items"].as_array().unwrap().is_empty(), "{body}");
    for mode in ["keyword", "hybrid"] {
        for c in [1, 32] {
            wrk(label, mode, hybrid.port, c);
        }
    }
    hybrid.stop().await;

    // The parts of a hybrid search, alone: the query's embedding call to the (local, instant)
    // mock, and the lookup in an index of the same vectors.
    let client = EmbeddingsClient::new(
        &EmbeddingsConfig {
            url: Some(mock.url.clone()),
            model: "bench-trigrams".into(),
            api_key: None,
            connect_timeout: Duration::from_secs(1),
            timeout: Duration::from_secs(5),
        },
        "bench",
    )
    .unwrap();
    let mut calls = Vec::new();
    for q in queries().iter().cycle().take(500) {
        let t = Instant::now();
        client.embed(std::slice::from_ref(q), None).await.unwrap();
        calls.push(t.elapsed());
    }
    let (p50, p99) = percentiles(calls);
    println!("{label}: the query's embedding call alone (local mock): p50 {p50:?}, p99 {p99:?}");
    if label == "sqlite" {
        let mut index = VectorIndex::default();
        let teams = teams();
        for i in 0..markets {
            let doc = format!("market {i} {}", teams[i % 2].1[i % teams[i % 2].1.len()].0);
            index.upsert(i as i64, teams[i % 2].0, &embeddings_mock::embed(&doc, DIM));
        }
        let vectors: Vec<Vec<f32>> = queries()
            .iter()
            .map(|q| embeddings_mock::embed(q, DIM))
            .collect();
        let mut lookups = Vec::new();
        for v in vectors.iter().cycle().take(500) {
            let t = Instant::now();
            std::hint::black_box(index.nearest(v, None, 60));
            lookups.push(t.elapsed());
        }
        let (p50, p99) = percentiles(lookups);
        println!(
            "index: nearest 60 of {markets} {DIM}-dimension vectors (one thread): p50 {p50:?}, p99 {p99:?}"
        );
    }
}

fn main() {
    let backfill_markets = env_number("BACKFILL", 10_000);
    let markets = env_number("MARKETS", 100_000);
    common::print_machine();
    actix_rt::System::new().block_on(async {
        let dir = tempfile::tempdir().unwrap();
        let dir = match std::env::var("BENCH_DIR") {
            Ok(kept) => std::path::PathBuf::from(kept),
            Err(_) => dir.path().to_path_buf(),
        };
        let url = |name: &str| format!("sqlite://{}", dir.join(name).display());
        backfill("sqlite", &url("backfill.db"), backfill_markets).await;
        search("sqlite", &url("search.db"), markets).await;
        match common::postgres_url("backfill").await {
            Some(url) => backfill("postgres", &url, backfill_markets).await,
            None => println!("postgres: SKIPPED (set TIPOFF_TEST_POSTGRES_URL)"),
        }
        if let Some(url) = common::postgres_url("search").await {
            search("postgres", &url, markets).await;
        }
    });
}
