//! SSE fan-out: `STREAMS` (default 10,000) concurrent `/api/v1/events` streams on one daemon.
//!
//! `cargo bench --bench sse` runs the daemon in process (release build, SQLite, the fd limit
//! raised to its hard limit) and a Python asyncio client (`python3`, a process of its own) that
//! opens the streams (`types=market.settled`) and waits. It measures, in order:
//! 1. `/health` (wrk, 2 threads × 32 connections, 5 s) and stakes through the HTTP API
//!    (16 in flight, 3 s) with no stream open;
//! 2. the daemon's RSS before and after the streams open, per stream;
//! 3. the same two rates again with every stream open, as a share of the first;
//! 4. one market settled (its game's final board upserted, the poller's own path): the time
//!    from the settlement's commit to its frame arriving on each stream, p50 / p99 / max.

#[allow(dead_code)]
mod common;

use std::collections::HashMap;
use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use chrono::Utc;
use futures_util::StreamExt;
use serde_json::{json, Value};
use tipoff::config::Config;
use tipoff::startup::Application;
use tipoff::systemd::Notifier;
use tipoff_actors::store::IncomingDeposit;

const TOKEN: &str = "bench-admin-token-0123456789";
const MINT: &str = "EPjFWdd5AufqSSqeM2qN1xzybapC8G4wEGGkZwyTDt1v";
const TREASURY: &str = "H51DXRt3ubThhdhNeDMScfkbC5X4AWzYfHaZS3JKEfPh";

/// Opens N streams to 127.0.0.1:PORT, prints `open <n>` once every stream has its `retry:`
/// preamble, then, for each stream, the wall-clock time its first `market.settled` frame
/// arrived: one JSON line `{"received": [...], "missing": k}` when all arrived (or after 60 s).
const CLIENT: &str = r#"
import asyncio, json, resource, sys, time
try:
    import uvloop; uvloop.install()
except ImportError:
    pass
soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
port, n = int(sys.argv[1]), int(sys.argv[2])
received = []
async def stream(ready, done):
    r, w = await asyncio.open_connection("127.0.0.1", port)
    w.write(b"GET /api/v1/events?types=market.settled HTTP/1.1\r\nHost: x\r\nAccept: text/event-stream\r\n\r\n")
    buf = b""
    while b"retry:" not in buf:
        chunk = await r.read(4096)
        if not chunk:
            raise RuntimeError("closed before the preamble: %r" % buf[:200])
        buf += chunk
    ready.release()
    while b"event: market.settled" not in buf:
        chunk = await r.read(4096)
        if not chunk:
            return
        buf += chunk
    received.append(time.time())
    done.release()
    await asyncio.sleep(3600)
async def main():
    ready, done = asyncio.Semaphore(0), asyncio.Semaphore(0)
    tasks = []
    for i in range(n):
        tasks.append(asyncio.create_task(stream(ready, done)))
        if i % 200 == 199:
            await asyncio.sleep(0.02)
    for _ in range(n):
        await ready.acquire()
    print("open", n, flush=True)
    deadline = time.time() + 60
    got = 0
    while got < n and time.time() < deadline:
        try:
            await asyncio.wait_for(done.acquire(), timeout=max(0.01, deadline - time.time()))
            got += 1
        except asyncio.TimeoutError:
            break
    print(json.dumps({"received": received, "missing": n - len(received)}), flush=True)
    sys.stdout.flush()
    import os; os._exit(0)
asyncio.run(main())
"#;

/// This process's CPU time so far, in clock ticks.
fn cpu_ticks() -> u64 {
    let stat = std::fs::read_to_string("/proc/self/stat").unwrap();
    let after = &stat[stat.rfind(')').unwrap() + 2..];
    let fields: Vec<&str> = after.split_whitespace().collect();
    fields[11].parse::<u64>().unwrap() + fields[12].parse::<u64>().unwrap()
}

fn ticks_per_second() -> f64 {
    // SAFETY: sysconf has no preconditions.
    unsafe { libc::sysconf(libc::_SC_CLK_TCK) as f64 }
}

fn raise_fd_limit() -> u64 {
    let mut lim = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit/setrlimit on a valid struct.
    unsafe {
        libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim);
        lim.rlim_cur = lim.rlim_max;
        libc::setrlimit(libc::RLIMIT_NOFILE, &lim);
    }
    lim.rlim_cur
}

/// wrk's requests per second on `/health`.
fn health_rps(port: u16) -> f64 {
    let out = Command::new("wrk")
        .args(["-t2", "-c32", "-d5s"])
        .arg(format!("http://127.0.0.1:{port}/health"))
        .output()
        .expect("wrk runs (apt-get install wrk)");
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .find_map(|l| l.strip_prefix("Requests/sec:"))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or(0.0)
}

/// Stakes per second over 3 s, 16 in flight.
async fn stake_rate(http: &reqwest::Client, base: &str, keys: &[String], market: i64) -> f64 {
    let started = Instant::now();
    let window = Duration::from_secs(3);
    let done = futures_util::stream::iter(0..)
        .take_while(|_| std::future::ready(started.elapsed() < window))
        .map(|i: usize| {
            let (http, base, key) = (http.clone(), base.to_string(), keys[i % keys.len()].clone());
            async move {
                http.post(format!("{base}/api/v1/markets/{market}/stakes"))
                    .bearer_auth(key)
                    .json(&json!({"outcome": "home", "amount": 1, "token": "usdc"}))
                    .send()
                    .await
                    .is_ok_and(|r| r.status() == 201)
            }
        })
        .buffer_unordered(16)
        .filter(|ok| std::future::ready(*ok))
        .count()
        .await;
    done as f64 / started.elapsed().as_secs_f64()
}

fn percentile(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    sorted[((sorted.len() as f64 - 1.0) * p).round() as usize]
}

/// Settles the market the streams wait for; prints how long its frame took to reach them.
async fn settle_and_report(
    store: &tipoff_actors::Store,
    mut game: tipoff_actors::espn::ScoreboardGame,
    lines: &mut tokio::sync::mpsc::UnboundedReceiver<String>,
    streams: usize,
) {
    game.state = tipoff_actors::espn::GameState::Final;
    game.home.score = Some(5);
    game.away.score = Some(3);
    game.home.winner = Some(true);
    game.away.winner = Some(false);
    store.upsert_game("mlb", &game, Utc::now()).await.unwrap();
    let settled = Utc::now().timestamp_micros() as f64 / 1e6;
    let report = loop {
        let line = lines.recv().await.expect("the client reports");
        if line.starts_with('{') {
            break line;
        }
    };
    let report: Value = serde_json::from_str(&report).unwrap();
    let mut ms: Vec<f64> = report["received"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| (t.as_f64().unwrap() - settled) * 1000.0)
        .collect();
    ms.sort_by(|a, b| a.partial_cmp(b).unwrap());
    println!(
        "market.settled, commit to frame: {} of {streams} streams; p50 {:.0} ms, p99 {:.0} ms, max {:.0} ms; {} missing",
        ms.len(),
        percentile(&ms, 0.5),
        percentile(&ms, 0.99),
        ms.last().copied().unwrap_or(f64::NAN),
        report["missing"]
    );
}

/// Sixteen users, each funded with 1,000 USDC; their API keys.
async fn funded_users(
    http: &reqwest::Client,
    base: &str,
    store: &tipoff_actors::Store,
) -> Vec<String> {
    let mut keys = Vec::new();
    for i in 0..16 {
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
    keys
}

fn main() {
    tracing_subscriber::fmt()
        .with_env_filter("warn")
        .with_writer(std::io::stderr)
        .init();
    let streams: usize = std::env::var("STREAMS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(10_000);
    common::print_machine();
    println!("fd limit {}; {streams} streams", raise_fd_limit());
    actix_rt::System::new().block_on(async move {
        let dir = tempfile::tempdir().unwrap();
        let url = format!("sqlite://{}", dir.path().join("sse.db").display());
        let cap = (streams + 100).to_string();
        let tokens = format!("usdc:{MINT}:6:{TREASURY}");
        let env: HashMap<String, String> = [
            ("TIPOFF_LISTEN", "127.0.0.1:0"),
            ("TIPOFF_DATABASE_URL", url.as_str()),
            ("TIPOFF_ADMIN_TOKEN", TOKEN),
            ("TIPOFF_LEAGUES", ""),
            ("TIPOFF_TOKENS", tokens.as_str()),
            ("TIPOFF_SOLANA_RPC_URL", "http://127.0.0.1:9"),
            ("TIPOFF_SSE_MAX_STREAMS", cap.as_str()),
            ("TIPOFF_SSE_MAX_STREAMS_PER_CLIENT", cap.as_str()),
            ("TIPOFF_LOG", "warn"),
        ]
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
        let config = Config::load(None, &env).expect("bench config");
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
        let keys = funded_users(&http, &base, &store).await;
        let fixture = std::fs::read(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/../shared/fixtures/espn/mlb-scoreboard-20250928.json"
        ))
        .unwrap();
        let games = tipoff_actors::espn::parse_scoreboard(&fixture).unwrap();
        let mut game = games[0].clone();
        game.external_id = "bench-sse".into();
        game.starts_at = Utc::now() + chrono::Duration::days(1);
        let market = store.upsert_game("mlb", &game, Utc::now()).await.unwrap().market_id;
        let mut staking = games[1].clone();
        staking.external_id = "bench-sse-stakes".into();
        staking.starts_at = Utc::now() + chrono::Duration::days(1);
        let staking = store.upsert_game("mlb", &staking, Utc::now()).await.unwrap().market_id;
        http.post(format!("{base}/api/v1/markets/{market}/stakes"))
            .bearer_auth(&keys[0])
            .json(&json!({"outcome": "home", "amount": 100, "token": "usdc"}))
            .send()
            .await
            .unwrap();

        let health_alone = tokio::task::spawn_blocking(move || health_rps(port)).await.unwrap();
        let stakes_alone = stake_rate(&http, &base, &keys, staking).await;
        println!("no stream open: /health {health_alone:.0} req/s; stakes {stakes_alone:.0}/s (16 in flight)");

        tokio::time::sleep(Duration::from_millis(500)).await;
        let rss_before = common::rss_kb();
        let script = dir.path().join("sse_client.py");
        std::fs::write(&script, CLIENT).unwrap();
        let opened = Instant::now();
        let mut client = Command::new(std::env::var("PYTHON").unwrap_or_else(|_| "python3".into()))
            .arg(&script)
            .arg(port.to_string())
            .arg(streams.to_string())
            .stdout(Stdio::piped())
            .spawn()
            .expect("python3 runs");
        let (lines_tx, mut lines) = tokio::sync::mpsc::unbounded_channel::<String>();
        let stdout = client.stdout.take().unwrap();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                if lines_tx.send(line).is_err() {
                    break;
                }
            }
        });
        let open = lines.recv().await.expect("the client reports its streams open");
        assert!(open.starts_with("open"), "{open}");
        println!("{streams} streams open in {:.1} s", opened.elapsed().as_secs_f64());
        tokio::time::sleep(Duration::from_secs(1)).await;
        let cpu_before = cpu_ticks();
        tokio::time::sleep(Duration::from_secs(2)).await;
        let idle_cpu = (cpu_ticks() - cpu_before) as f64 / ticks_per_second() / 2.0 * 100.0;
        println!("idle CPU with the streams open: {idle_cpu:.1} % of one core (2 s)");
        let rss_after = common::rss_kb();
        println!(
            "daemon RSS: {} KB before, {} KB with the streams open: {:.1} KB per idle stream",
            rss_before,
            rss_after,
            (rss_after.saturating_sub(rss_before)) as f64 / streams as f64
        );
        let health_loaded = tokio::task::spawn_blocking(move || health_rps(port)).await.unwrap();
        let stakes_loaded = stake_rate(&http, &base, &keys, staking).await;
        println!(
            "with {streams} streams open: /health {health_loaded:.0} req/s ({:.0} %); stakes {stakes_loaded:.0}/s ({:.0} %)",
            100.0 * health_loaded / health_alone,
            100.0 * stakes_loaded / stakes_alone
        );

        settle_and_report(&store, game, &mut lines, streams).await;
        let _ = client.kill();
        let _ = client.wait();
        let _ = stop.send(());
        let _ = task.await;
    });
}
