//! tipoff and the FastAPI peer side by side, in one run, on the same data and the same load.
//!
//! `bash bench/compare.sh` (which sets the peer's Python up) runs this with
//! `cargo bench --bench compare`. One mock ESPN serves 170 CONSTRUCTED NBA boards (1,230 final
//! games, the shape of the real `nba-scoreboard-20240129.json`). The peer (`PEER_DIR`, its
//! `app.py` under uvicorn with `PEER_WORKERS` workers, default 2, on `PEER_PYTHON`) imports them
//! through its `POST /admin/imports`; tipoff (the release binary, as a process) through its job
//! API, into a fresh SQLite file and, with `TIPOFF_TEST_POSTGRES_URL` set, a fresh PostgreSQL
//! database. Then the same wrk load (`WRK_CONNECTIONS`, default 32, 2 threads, `WRK_DURATION`,
//! default 8s) runs against each, one after the other, on every read both serve, each request
//! of a run taking the next path of a list (all pages of a cursor walk, every game id), with
//! tipoff's read cache off (`TIPOFF_READ_CACHE_TTL=0s`) and on (the default, 1 s). It prints
//! one table with the peer's figure and tipoff's ratio to it, then tipoff's reads the peer
//! does not have.

#[allow(dead_code)]
#[path = "../tests/api/espn_mock.rs"]
mod espn_mock;
#[path = "../tests/api/mock_server.rs"]
mod mock_server;

mod common;

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use chrono::NaiveDate;
use serde_json::{json, Value};

const TOKEN: &str = "bench-admin-token-0123456789";
const DATES: usize = 170;
const GAMES: usize = 1230;

/// What wrk measured on one list of paths.
#[derive(Debug, Clone, Copy, Default)]
struct Load {
    rps: f64,
    p50_ms: f64,
    p99_ms: f64,
    errors: u64,
}

/// A server under test, stopped (SIGTERM, then waited for) when dropped.
struct Server {
    child: Child,
    base: String,
}

impl Drop for Server {
    fn drop(&mut self) {
        // SAFETY: kill(2) on our own child's pid.
        unsafe { libc::kill(self.child.id() as i32, libc::SIGTERM) };
        let deadline = Instant::now() + Duration::from_secs(10);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.child.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

fn http() -> reqwest::blocking::Client {
    reqwest::blocking::Client::builder()
        .timeout(Duration::from_secs(120))
        .build()
        .unwrap()
}

/// Waits until `url` answers 200.
fn wait_ok(url: &str, what: &str) {
    let client = http();
    let deadline = Instant::now() + Duration::from_secs(60);
    while Instant::now() < deadline {
        if client
            .get(url)
            .send()
            .is_ok_and(|r| r.status().is_success())
        {
            return;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    panic!("{what} did not answer 200 at {url} within 60 s");
}

fn tipoff(db_url: &str, espn: &str, cache_ttl: &str, log: &Path) -> Server {
    let port = free_port();
    let log = std::fs::File::create(log).unwrap();
    let child = Command::new(env!("CARGO_BIN_EXE_tipoff"))
        .arg("serve")
        .env_clear()
        .env("PATH", std::env::var("PATH").unwrap_or_default())
        .env("TIPOFF_LISTEN", format!("127.0.0.1:{port}"))
        .env("TIPOFF_DATABASE_URL", db_url)
        .env("TIPOFF_ADMIN_TOKEN", TOKEN)
        .env("TIPOFF_LEAGUES", "nba")
        .env("TIPOFF_ESPN_BASE_URL", espn)
        .env("TIPOFF_IMPORT_CHECK_INTERVAL", "100ms")
        .env("TIPOFF_READ_CACHE_TTL", cache_ttl)
        .env("TIPOFF_LOG", "warn")
        .stdout(Stdio::null())
        .stderr(log)
        .spawn()
        .expect("the tipoff binary starts");
    let base = format!("http://127.0.0.1:{port}");
    wait_ok(&format!("{base}/ready"), "tipoff");
    Server { child, base }
}

fn peer(dir: &Path, db: &Path, espn: &str, log: &Path) -> Server {
    let python = std::env::var("PEER_PYTHON").unwrap_or_else(|_| "python3".into());
    let workers = std::env::var("PEER_WORKERS").unwrap_or_else(|_| "2".into());
    let port = free_port();
    let log = std::fs::File::create(log).unwrap();
    let child = Command::new(&python)
        .args(["-m", "uvicorn", "app:app", "--app-dir"])
        .arg(dir)
        .args(["--host", "127.0.0.1", "--port", &port.to_string()])
        .args([
            "--workers",
            &workers,
            "--loop",
            "uvloop",
            "--http",
            "httptools",
        ])
        .arg("--no-access-log")
        .env("PEER_DB", db)
        .env("PEER_LEAGUES", "")
        .env("ESPN_BASE_URL", espn)
        .stdout(Stdio::null())
        .stderr(log)
        .spawn()
        .unwrap_or_else(|e| panic!("the peer starts with {python} -m uvicorn: {e}"));
    let base = format!("http://127.0.0.1:{port}");
    wait_ok(&format!("{base}/health"), "the peer");
    Server { child, base }
}

/// Imports the season through tipoff's job API; returns how long it took.
fn import_tipoff(base: &str, first: NaiveDate) -> Duration {
    let client = http();
    let last = first + chrono::Duration::days(DATES as i64 - 1);
    let started = Instant::now();
    let res = client
        .post(format!("{base}/admin/imports"))
        .bearer_auth(TOKEN)
        .json(&json!({"league": "nba", "from": first.to_string(), "to": last.to_string()}))
        .send()
        .unwrap();
    assert_eq!(res.status(), 202, "{}", res.text().unwrap_or_default());
    let id = res.json::<Value>().unwrap()["id"].clone();
    loop {
        let job: Value = client
            .get(format!("{base}/admin/imports/{id}"))
            .bearer_auth(TOKEN)
            .send()
            .unwrap()
            .json()
            .unwrap();
        if job["state"] != "queued" && job["state"] != "running" {
            assert_eq!(job["state"], "succeeded", "{job}");
            assert_eq!(job["games_upserted"], GAMES as i64, "{job}");
            return started.elapsed();
        }
        std::thread::sleep(Duration::from_millis(5));
    }
}

fn import_peer(base: &str, first: NaiveDate) -> Duration {
    let last = first + chrono::Duration::days(DATES as i64 - 1);
    let started = Instant::now();
    let res: Value = http()
        .post(format!("{base}/admin/imports"))
        .json(&json!({"league": "nba", "start": first.to_string(), "end": last.to_string()}))
        .send()
        .unwrap()
        .json()
        .unwrap();
    assert_eq!(res["games_upserted"], GAMES as i64, "{res}");
    started.elapsed()
}

/// Every page of a cursor walk from `first` (a path with its query), following `next` with
/// `cursor=`.
fn walk(base: &str, first: &str) -> Vec<String> {
    let client = http();
    let mut pages = vec![first.to_string()];
    let mut path = first.to_string();
    loop {
        let page: Value = client
            .get(format!("{base}{path}"))
            .bearer_auth(TOKEN)
            .send()
            .unwrap()
            .json()
            .unwrap();
        match page["next"].as_str() {
            Some(next) => {
                path = format!("{first}&cursor={next}");
                pages.push(path.clone());
            }
            None => return pages,
        }
    }
}

/// Every id of a walk's items, as `<prefix><id>` paths.
fn ids(base: &str, pages: &[String], prefix: &str) -> Vec<String> {
    let client = http();
    let mut out = Vec::new();
    for p in pages {
        let page: Value = client
            .get(format!("{base}{p}"))
            .send()
            .unwrap()
            .json()
            .unwrap();
        for item in page["items"].as_array().unwrap() {
            out.push(format!("{prefix}{}", item["id"]));
        }
    }
    out
}

const ROTATE_LUA: &str = r#"
local paths = {}
for line in io.lines(os.getenv("WRK_PATHS")) do paths[#paths + 1] = line end
local i = math.random(#paths)
request = function()
  i = i % #paths + 1
  return wrk.format("GET", paths[i])
end
"#;

/// wrk on `base`, each request the next of `paths`.
fn wrk(work: &Path, base: &str, paths: &[String]) -> Load {
    let connections = std::env::var("WRK_CONNECTIONS").unwrap_or_else(|_| "32".into());
    let duration = std::env::var("WRK_DURATION").unwrap_or_else(|_| "8s".into());
    let script = work.join("rotate.lua");
    std::fs::write(&script, ROTATE_LUA).unwrap();
    let list = work.join("paths.txt");
    std::fs::write(&list, paths.join("\n") + "\n").unwrap();
    let out = Command::new("wrk")
        .args(["-t2", &format!("-c{connections}"), &format!("-d{duration}")])
        .arg("--latency")
        .arg("-s")
        .arg(&script)
        .arg(base)
        .env("WRK_PATHS", &list)
        .output()
        .expect("wrk runs (apt-get install wrk)");
    parse_wrk(&String::from_utf8_lossy(&out.stdout))
}

fn parse_wrk(text: &str) -> Load {
    let ms = |v: &str| -> f64 {
        let v = v.trim();
        let (num, unit) = v.split_at(v.find(|c: char| c.is_ascii_alphabetic()).unwrap_or(v.len()));
        let n: f64 = num.parse().unwrap_or(f64::NAN);
        match unit {
            "us" => n / 1000.0,
            "ms" => n,
            "s" => n * 1000.0,
            _ => f64::NAN,
        }
    };
    let mut load = Load::default();
    for line in text.lines() {
        let l = line.trim();
        let mut words = l.split_whitespace();
        match words.next() {
            Some("Requests/sec:") => load.rps = words.next().unwrap_or("0").parse().unwrap_or(0.0),
            Some("50%") => load.p50_ms = ms(words.next().unwrap_or("")),
            Some("99%") => load.p99_ms = ms(words.next().unwrap_or("")),
            Some("Non-2xx") => load.errors += words.last().unwrap_or("0").parse().unwrap_or(0),
            Some("Socket") => {
                load.errors += l
                    .split(|c: char| !c.is_ascii_digit())
                    .filter_map(|n| n.parse::<u64>().ok())
                    .sum::<u64>()
            }
            _ => {}
        }
    }
    load
}

fn cell(l: &Load) -> String {
    let errors = if l.errors > 0 {
        format!(", {} errors", l.errors)
    } else {
        String::new()
    };
    format!(
        "{:>8.0} req/s (p50 {:.2} ms, p99 {:.2} ms{errors})",
        l.rps, l.p50_ms, l.p99_ms
    )
}

/// One figure per tipoff configuration (`tipoff sqlite, cache off`, ...).
type Columns = Vec<(String, Load)>;

/// The loads tipoff and the peer both serve, by name, with each side's paths.
struct Shared {
    name: &'static str,
    tipoff: Vec<String>,
    peer: Vec<String>,
}

/// The paths of every load, from tipoff's answers (and the peer's, for the shared ones).
fn loads(
    base: &str,
    first: NaiveDate,
    peer_pages: &[String],
    peer_ids: &[String],
) -> (Vec<Shared>, Vec<(&'static str, Vec<String>)>) {
    let pages = walk(base, "/api/v1/games?limit=50");
    let game_ids = ids(base, &pages, "/api/v1/games/");
    let market_pages = walk(base, "/api/v1/markets?limit=50");
    let market_ids = ids(base, &market_pages, "/api/v1/markets/");
    let dates: Vec<String> = first
        .iter_days()
        .take(DATES)
        .map(|d| format!("/api/v1/games?league=nba&date={}", d.succ_opt().unwrap()))
        .collect();
    let shared = vec![
        Shared {
            name: "games, first page (limit=50)",
            tipoff: vec!["/api/v1/games?limit=50".into()],
            peer: vec!["/api/v1/games?limit=50".into()],
        },
        Shared {
            name: "games, every page of the walk",
            tipoff: pages,
            peer: peer_pages.to_vec(),
        },
        Shared {
            name: "one game by id, every id",
            tipoff: game_ids,
            peer: peer_ids.to_vec(),
        },
    ];
    let own = vec![
        ("markets, every page of the walk", market_pages),
        ("one market by id, every id", market_ids),
        ("games of one date (league=nba&date=), every date", dates),
        (
            "games, state=final&league=nba",
            vec!["/api/v1/games?state=final&league=nba&limit=50".into()],
        ),
    ];
    (shared, own)
}

fn main() {
    let peer_dir =
        PathBuf::from(std::env::var("PEER_DIR").unwrap_or_else(|_| "../shared/peer".into()));
    let peer_dir = std::fs::canonicalize(&peer_dir).unwrap_or_else(|e| {
        panic!(
            "PEER_DIR {} (the FastAPI peer's directory): {e}",
            peer_dir.display()
        )
    });
    let first = NaiveDate::from_ymd_opt(2023, 10, 24).unwrap();
    let espn = espn_mock::MockEspn::start();
    let (per_day, extra) = (GAMES / DATES, GAMES % DATES);
    for (i, date) in first.iter_days().take(DATES).enumerate() {
        let n = per_day + usize::from(i < extra);
        espn.serve("basketball/nba", date, espn_mock::generated_board(date, n));
    }
    common::print_machine();
    let work = tempfile::tempdir().unwrap();
    let w = work.path();

    // The peer: import, then its paths.
    let peer_server = peer(
        &peer_dir,
        &w.join("peer.db"),
        &espn.base_url,
        &w.join("peer.log"),
    );
    let took = import_peer(&peer_server.base, first);
    println!(
        "peer import: {DATES} dates, {GAMES} games in {} ms",
        took.as_millis()
    );
    let peer_pages = walk(&peer_server.base, "/api/v1/games?limit=50");
    let peer_ids = ids(&peer_server.base, &peer_pages, "/api/v1/games/");

    // tipoff's databases, imported once each.
    let mut backends: Vec<(&str, String)> = vec![(
        "sqlite",
        format!("sqlite://{}", w.join("tipoff.db").display()),
    )];
    let rt = tokio::runtime::Runtime::new().unwrap();
    match rt.block_on(common::postgres_url("compare")) {
        Some(url) => backends.push(("postgres", url)),
        None => println!("postgres: TIPOFF_TEST_POSTGRES_URL not set (or unreachable); skipped"),
    }
    let mut shared: Vec<Shared> = Vec::new();
    let mut own: Vec<(&'static str, Vec<String>)> = Vec::new();
    for (backend, url) in &backends {
        let server = tipoff(
            url,
            &espn.base_url,
            "1s",
            &w.join(format!("tipoff-{backend}.log")),
        );
        let took = import_tipoff(&server.base, first);
        println!(
            "tipoff import ({backend}): {DATES} dates, {GAMES} games in {} ms",
            took.as_millis()
        );
        if shared.is_empty() {
            (shared, own) = loads(&server.base, first, &peer_pages, &peer_ids);
        }
    }

    // The loads, one after the other: the peer, then tipoff per backend, cache off and on.
    let mut rows: Vec<(String, Load, Columns)> = Vec::new();
    for s in &shared {
        let p = wrk(w, &peer_server.base, &s.peer);
        rows.push((s.name.to_string(), p, Vec::new()));
    }
    drop(peer_server);
    let mut own_rows: Vec<(String, Columns)> = own
        .iter()
        .map(|(n, _)| (n.to_string(), Vec::new()))
        .collect();
    for (backend, url) in &backends {
        for (label, ttl) in [("cache off", "0s"), ("cache on", "1s")] {
            let server = tipoff(
                url,
                &espn.base_url,
                ttl,
                &w.join(format!("tipoff-{backend}-{ttl}.log")),
            );
            let column = format!("tipoff {backend}, {label}");
            for (s, row) in shared.iter().zip(rows.iter_mut()) {
                row.2
                    .push((column.clone(), wrk(w, &server.base, &s.tipoff)));
            }
            for ((_, paths), row) in own.iter().zip(own_rows.iter_mut()) {
                row.1.push((column.clone(), wrk(w, &server.base, paths)));
            }
        }
    }

    let workers = std::env::var("PEER_WORKERS").unwrap_or_else(|_| "2".into());
    println!();
    println!("same data ({GAMES} games), same wrk load; the peer with {workers} uvicorn workers; ratio = tipoff / peer");
    for (name, p, cols) in &rows {
        println!("{name}");
        println!("  {:<28} {}", "peer (FastAPI + aiosqlite)", cell(p));
        for (column, l) in cols {
            println!("  {column:<28} {}  ×{:.1}", cell(l), l.rps / p.rps.max(1.0));
        }
    }
    println!();
    println!("tipoff's reads the peer does not have");
    for (name, cols) in &own_rows {
        println!("{name}");
        for (column, l) in cols {
            println!("  {column:<28} {}", cell(l));
        }
    }
}
