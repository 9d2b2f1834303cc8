//! The money path under load: deposits credited per second, stakes per second.
//!
//! `cargo bench --bench money` (release build), on SQLite (a fresh file) and, when
//! `TIPOFF_TEST_POSTGRES_URL` is set, on PostgreSQL (a fresh database):
//!
//! - **Deposits**: one watcher pass over the real 1,000-entry `getSignaturesForAddress` page
//!   (969 successful signatures; each served a CONSTRUCTED `transferChecked` into the treasury,
//!   half with a user's deposit code as memo) from the local mock RPC: list, 969
//!   `getTransaction` calls, one credit transaction. Timed from the first call to the commit.
//! - **Stakes**: the daemon in process; 32 funded users place stakes on 20 open markets through
//!   `POST /api/v1/markets/{id}/stakes`, `IN_FLIGHT` requests in flight (default 64), `STAKES`
//!   in all (default 4,000), group-committed (`stakes.rs`): it prints the batches they took.
//!   Then `GET /admin/ledger/audit` must answer 200 with no problem.

#[path = "../tests/api/mock_server.rs"]
mod mock_server;
#[allow(dead_code)]
#[path = "../tests/api/rpc_mock.rs"]
mod rpc_mock;

mod common;

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use chrono::Utc;
use futures_util::StreamExt;
use serde_json::{json, Value};
use tipoff::config::Config;
use tipoff::startup::Application;
use tipoff::systemd::Notifier;
use tipoff_actors::solana::{RpcClient, Token};
use tipoff_actors::store::IncomingDeposit;
use tipoff_actors::watcher::{run_pass, WatcherSettings};
use tipoff_actors::{Store, StoreOptions};

const TOKEN: &str = "bench-admin-token-0123456789";
const MINT: &str = "EPjFWdd5AufqSSqeM2qN1xzybapC8G4wEGGkZwyTDt1v";
const TREASURY: &str = "H51DXRt3ubThhdhNeDMScfkbC5X4AWzYfHaZS3JKEfPh";
const USERS: usize = 32;
const MARKETS: usize = 20;

async fn deposits(label: &str, url: &str, rpc: &rpc_mock::MockRpc) {
    let store = Store::connect(url, &StoreOptions::default()).await.unwrap();
    store.migrate().await.unwrap();
    let mut codes = Vec::new();
    for i in 0..10 {
        let u = store
            .create_user(
                "bench",
                &format!("hash-{i}"),
                &format!("BENCH{i:03}"),
                Utc::now(),
            )
            .await
            .unwrap();
        codes.push(u.deposit_code);
    }
    let token = Token {
        name: "usdc".into(),
        mint: MINT.into(),
        decimals: 6,
        treasury: TREASURY.into(),
    };
    let client = RpcClient::new(
        &rpc.url,
        Duration::from_secs(2),
        Duration::from_secs(10),
        "bench",
    )
    .unwrap();
    let settings = WatcherSettings::default();
    let started = Instant::now();
    let pass = run_pass(&token, &store, &client, &settings).await.unwrap();
    let took = started.elapsed();
    let credited = pass.credited.attributed + pass.credited.unattributed;
    assert_eq!(credited, 969);
    let audit = store.audit().await.unwrap();
    assert!(audit.problems.is_empty(), "{:?}", audit.problems);
    println!(
        "{label}: deposits: one pass over the 1,000-entry page, {credited} credited ({} by memo) in {:.0} ms = {:.0} deposits/s; audit ok",
        pass.credited.attributed,
        took.as_secs_f64() * 1000.0,
        credited as f64 / took.as_secs_f64()
    );
    store.close().await;
}

fn env(db_url: &str) -> HashMap<String, String> {
    [
        ("TIPOFF_LISTEN", "127.0.0.1:0"),
        ("TIPOFF_DATABASE_URL", db_url),
        ("TIPOFF_ADMIN_TOKEN", TOKEN),
        ("TIPOFF_LOG", "warn"),
        ("TIPOFF_TOKENS", &format!("usdc:{MINT}:6:{TREASURY}")),
        ("TIPOFF_DB_MAX_CONNECTIONS", "16"),
    ]
    .iter()
    .map(|(k, v)| (k.to_string(), v.to_string()))
    .collect()
}

/// A counter of `/metrics`.
async fn metric(http: &reqwest::Client, base: &str, name: &str) -> f64 {
    let text = http
        .get(format!("{base}/metrics"))
        .bearer_auth(TOKEN)
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    text.lines()
        .find(|l| l.starts_with(name))
        .and_then(|l| l.split_whitespace().last())
        .map_or(0.0, |v| v.parse().unwrap_or(0.0))
}

async fn stakes(label: &str, url: &str, total: usize) {
    let config = Config::load(None, &env(url)).expect("bench config");
    let app = Application::build(config, Arc::new(Notifier::from_socket(None)))
        .await
        .expect("daemon builds");
    let port = app.port();
    let store = app.store();
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let task = actix_rt::spawn(app.run_until_stopped(async {
        let _ = stopped.await;
    }));
    let http = reqwest::Client::new();
    let base = format!("http://127.0.0.1:{port}");
    let mut keys = Vec::new();
    for i in 0..USERS {
        let u: Value = http
            .post(format!("{base}/api/v1/users"))
            .json(&json!({}))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        store
            .credit_deposits(
                "usdc",
                &[IncomingDeposit {
                    signature: format!("bench-funding-{i}"),
                    slot: 1,
                    amount: 1_000_000_000,
                    memo: Some(u["deposit_code"].as_str().unwrap().to_string()),
                }],
                None,
                Utc::now(),
            )
            .await
            .unwrap();
        keys.push(u["api_key"].as_str().unwrap().to_string());
    }
    let fixture = std::fs::read(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../shared/fixtures/espn/mlb-scoreboard-20250928.json"
    ))
    .unwrap();
    let mut markets = Vec::new();
    for (i, mut game) in tipoff_actors::espn::parse_scoreboard(&fixture)
        .unwrap()
        .into_iter()
        .cycle()
        .take(MARKETS)
        .enumerate()
    {
        game.external_id = format!("bench-{i}");
        game.starts_at = Utc::now() + chrono::Duration::days(1);
        markets.push(
            store
                .upsert_game("mlb", &game, Utc::now())
                .await
                .unwrap()
                .market_id,
        );
    }
    let in_flight: usize = std::env::var("IN_FLIGHT")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(64);
    let batches_before = metric(&http, &base, "tipoff_stake_batches_total").await;
    let started = Instant::now();
    let created = futures_util::stream::iter(0..total)
        .map(|i| {
            let (http, base, key) = (http.clone(), base.clone(), keys[i % USERS].clone());
            let market = markets[i % MARKETS];
            async move {
                let res = http
                    .post(format!("{base}/api/v1/markets/{market}/stakes"))
                    .bearer_auth(key)
                    .json(&json!({"outcome": if i % 3 == 0 { "away" } else { "home" }, "amount": 1 + i % 50, "token": "usdc"}))
                    .send()
                    .await
                    .unwrap();
                res.status() == 201
            }
        })
        .buffer_unordered(in_flight)
        .filter(|ok| std::future::ready(*ok))
        .count()
        .await;
    let took = started.elapsed();
    let batches = metric(&http, &base, "tipoff_stake_batches_total").await - batches_before;
    assert_eq!(created, total);
    let audit = http
        .get(format!("{base}/admin/ledger/audit"))
        .bearer_auth(TOKEN)
        .send()
        .await
        .unwrap();
    assert_eq!(audit.status(), 200);
    let audit: Value = audit.json().await.unwrap();
    assert_eq!(audit["problems"], json!([]));
    println!(
        "{label}: stakes: {total} through the HTTP API, {in_flight} in flight, in {:.0} ms = {:.0} stakes/s, {batches:.0} commits ({:.1} stakes each); audit ok (escrow {})",
        took.as_secs_f64() * 1000.0,
        total as f64 / took.as_secs_f64(),
        total as f64 / batches.max(1.0),
        audit["tokens"][0]["escrow"]
    );
    wrk_phase(label, &http, &base, port, &keys, &markets, in_flight).await;
    let _ = stop.send(());
    let _ = task.await;
}

/// The stakes under wrk, then the audit.
async fn wrk_phase(
    label: &str,
    http: &reqwest::Client,
    base: &str,
    port: u16,
    keys: &[String],
    markets: &[i64],
    in_flight: usize,
) {
    let (http, base) = (http.clone(), base.to_string());
    let (keys, markets) = (keys.to_vec(), markets.to_vec());
    let batches_before = metric(&http, &base, "tipoff_stake_batches_total").await;
    let (keys_, markets_) = (keys.clone(), markets.clone());
    let line = tokio::task::spawn_blocking(move || wrk_stakes(port, &keys_, &markets_, in_flight))
        .await
        .unwrap();
    let batches = metric(&http, &base, "tipoff_stake_batches_total").await - batches_before;
    let audit: Value = http
        .get(format!("{base}/admin/ledger/audit"))
        .bearer_auth(TOKEN)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(audit["problems"], json!([]), "{audit}");
    println!("{label}: stakes under wrk ({in_flight} connections, 5 s): {line}; {batches:.0} commits; audit ok");
}

const STAKES_LUA: &str = r#"
local keys, markets = {}, {}
for l in io.lines(os.getenv("STAKE_KEYS")) do keys[#keys + 1] = l end
for l in io.lines(os.getenv("STAKE_MARKETS")) do markets[#markets + 1] = l end
local i = math.random(1000)
request = function()
  i = i + 1
  return wrk.format("POST", "/api/v1/markets/" .. markets[i % #markets + 1] .. "/stakes",
    {["Authorization"] = "Bearer " .. keys[i % #keys + 1], ["Content-Type"] = "application/json"},
    '{"outcome":"home","amount":1,"token":"usdc"}')
end
"#;

/// wrk posting stakes (every user, every market in turn); its requests/s, p99 and failures.
fn wrk_stakes(port: u16, keys: &[String], markets: &[i64], connections: usize) -> String {
    let dir = tempfile::tempdir().unwrap();
    let (script, k, m) = (
        dir.path().join("stakes.lua"),
        dir.path().join("keys"),
        dir.path().join("markets"),
    );
    std::fs::write(&script, STAKES_LUA).unwrap();
    std::fs::write(&k, keys.join("\n") + "\n").unwrap();
    let ids: Vec<String> = markets.iter().map(|m| m.to_string()).collect();
    std::fs::write(&m, ids.join("\n") + "\n").unwrap();
    let out = std::process::Command::new("wrk")
        .args([
            "-t2",
            &format!("-c{connections}"),
            "-d5s",
            "--latency",
            "-s",
        ])
        .arg(&script)
        .arg(format!("http://127.0.0.1:{port}"))
        .env("STAKE_KEYS", &k)
        .env("STAKE_MARKETS", &m)
        .output()
        .expect("wrk runs (apt-get install wrk)");
    let text = String::from_utf8_lossy(&out.stdout);
    let pick = |prefix: &str| {
        text.lines()
            .map(str::trim)
            .find(|l| l.starts_with(prefix))
            .unwrap_or("")
            .to_string()
    };
    let failures = pick("Non-2xx");
    format!(
        "{}, p99 {}{}",
        pick("Requests/sec:"),
        pick("99%").trim_start_matches("99%").trim(),
        if failures.is_empty() {
            ", every answer 201".to_string()
        } else {
            format!(", {failures}")
        }
    )
}

fn main() {
    tracing_subscriber::fmt()
        .with_env_filter("warn")
        .with_writer(std::io::stderr)
        .init();
    let total: usize = std::env::var("STAKES")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(4000);
    let rpc = rpc_mock::MockRpc::start();
    let list = rpc_mock::solana_fixture("getSignaturesForAddress-result-only-solana-go-2021.json");
    for (i, e) in list.as_array().unwrap().iter().enumerate() {
        if e["err"].is_null() {
            let sig = e["signature"].as_str().unwrap();
            let memo = (i % 2 == 0).then(|| format!("BENCH{:03}", i % 10));
            let slot = e["slot"].as_u64().unwrap();
            rpc.add_transaction(
                sig,
                rpc_mock::constructed_transfer(
                    sig,
                    slot,
                    MINT,
                    TREASURY,
                    0,
                    slot % 1000 + 1,
                    memo.as_deref(),
                ),
            );
        }
    }
    rpc.push_signatures(TREASURY, list.as_array().unwrap().clone());
    common::print_machine();
    actix_rt::System::new().block_on(async {
        let dir = tempfile::tempdir().unwrap();
        let url = format!("sqlite://{}", dir.path().join("deposits.db").display());
        deposits("sqlite", &url, &rpc).await;
        let url = format!("sqlite://{}", dir.path().join("stakes.db").display());
        stakes("sqlite", &url, total).await;
        match common::postgres_url("deposits").await {
            Some(url) => deposits("postgres", &url, &rpc).await,
            None => {
                println!("postgres: TIPOFF_TEST_POSTGRES_URL not set (or unreachable); skipped")
            }
        }
        if let Some(url) = common::postgres_url("stakes").await {
            stakes("postgres", &url, total).await;
        }
    });
}
