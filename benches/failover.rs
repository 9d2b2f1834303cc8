//! Replicas on one PostgreSQL: how fast the singletons come back when the leader dies or
//! stops, and what the lease costs.
//!
//! `TIPOFF_TEST_POSTGRES_URL=… cargo bench --bench failover` (release binary, a fresh database):
//! three `tipoff serve` processes with `TIPOFF_LEADER_TTL` = `LEADER_TTL` (default 3s) and the
//! `cleanup` singleton ticking every 100 ms.
//!
//! - **Failover**: `KILLS` times (default 10) the leader is SIGKILLed; timed from the kill to the
//!   first `cleanup` tick on the new leader (`last_tick_at` in `/debug/status`, polled every
//!   5 ms). A fresh replica replaces the dead one each time.
//! - **Handover**: as many times, the leader gets SIGTERM; timed the same way.
//! - **Lease cost**: the `leader` service's ticks (one statement each) on every replica over
//!   `COST_SECS` (default 30 s), as statements per minute per replica.

mod common;

use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use serde_json::Value;

const TOKEN: &str = "bench-admin-token-0123456789";

struct Replica {
    child: Child,
    port: u16,
}

impl Drop for Replica {
    fn drop(&mut self) {
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

fn spawn(url: &str, ttl: &str, dir: &std::path::Path) -> Replica {
    let port = free_port();
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_tipoff"));
    for (k, _) in std::env::vars() {
        if k.starts_with("TIPOFF_") || k == "NOTIFY_SOCKET" {
            cmd.env_remove(k);
        }
    }
    let child = cmd
        .current_dir(dir)
        .env("TIPOFF_DATABASE_URL", url)
        .env("TIPOFF_LISTEN", format!("127.0.0.1:{port}"))
        .env("TIPOFF_ADMIN_TOKEN", TOKEN)
        .env("TIPOFF_LEADER_TTL", ttl)
        .env("TIPOFF_CLEANUP_INTERVAL", "100ms")
        .env("TIPOFF_LOG", "warn")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("spawn tipoff");
    Replica { child, port }
}

fn status(http: &reqwest::blocking::Client, r: &Replica) -> Option<Value> {
    http.get(format!("http://127.0.0.1:{}/debug/status", r.port))
        .bearer_auth(TOKEN)
        .send()
        .ok()?
        .json()
        .ok()
}

fn service<'a>(s: &'a Value, name: &str) -> &'a Value {
    s["services"]
        .as_array()
        .unwrap()
        .iter()
        .find(|x| x["name"] == name)
        .unwrap()
}

fn wait_ready(http: &reqwest::blocking::Client, r: &Replica) {
    let deadline = Instant::now() + Duration::from_secs(20);
    while status(http, r).is_none() {
        assert!(Instant::now() < deadline, "replica did not start");
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn leader(http: &reqwest::blocking::Client, rs: &[Replica]) -> usize {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let leading: Vec<usize> = (0..rs.len())
            .filter(|&i| status(http, &rs[i]).is_some_and(|s| s["leader"] == true))
            .collect();
        if leading.len() == 1 {
            return leading[0];
        }
        assert!(Instant::now() < deadline, "no single leader: {leading:?}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Time from `at` until a replica other than the stopped one ticks `cleanup` as leader.
fn until_singleton_ticks(
    http: &reqwest::blocking::Client,
    rs: &[Replica],
    at: (Instant, DateTime<Utc>),
) -> Duration {
    loop {
        for r in rs {
            let Some(s) = status(http, r) else { continue };
            if s["leader"] != true {
                continue;
            }
            let ticked = service(&s, "cleanup")["last_tick_at"]
                .as_str()
                .and_then(|t| t.parse::<DateTime<Utc>>().ok())
                .is_some_and(|t| t > at.1);
            if ticked {
                return at.0.elapsed();
            }
        }
        assert!(at.0.elapsed() < Duration::from_secs(120), "no new leader");
        std::thread::sleep(Duration::from_millis(5));
    }
}

fn summary(name: &str, mut samples: Vec<Duration>) {
    samples.sort();
    let ms = |d: Duration| d.as_secs_f64() * 1000.0;
    let p50 = samples[samples.len() / 2];
    println!(
        "{name}: n={} p50 {:.0} ms, max {:.0} ms, min {:.0} ms",
        samples.len(),
        ms(p50),
        ms(*samples.last().unwrap()),
        ms(samples[0])
    );
}

fn measure(signal: libc::c_int, rounds: usize, url: &str, ttl: &str) -> Vec<Duration> {
    let dir = tempfile::tempdir().unwrap();
    let http = reqwest::blocking::Client::builder()
        .timeout(Duration::from_secs(2))
        .build()
        .unwrap();
    let mut rs: Vec<Replica> = (0..3).map(|_| spawn(url, ttl, dir.path())).collect();
    for r in &rs {
        wait_ready(&http, r);
    }
    let mut samples = Vec::new();
    for _ in 0..rounds {
        let l = leader(&http, &rs);
        let mut old = rs.remove(l);
        // Stagger the kill within a renewal period, as a real crash would be.
        std::thread::sleep(Duration::from_millis(50 + rand_below(500)));
        let at = (Instant::now(), Utc::now());
        // SAFETY: a signal to our own child process.
        unsafe { libc::kill(old.child.id() as i32, signal) };
        samples.push(until_singleton_ticks(&http, &rs, at));
        let _ = old.child.wait();
        let fresh = spawn(url, ttl, dir.path());
        wait_ready(&http, &fresh);
        rs.push(fresh);
    }
    samples
}

fn rand_below(n: u64) -> u64 {
    uuid::Uuid::new_v4().as_u64_pair().0 % n
}

fn main() {
    common::print_machine();
    let rt = tokio::runtime::Runtime::new().unwrap();
    let Some(url) = rt.block_on(common::postgres_url("failover")) else {
        eprintln!("SKIPPED: set TIPOFF_TEST_POSTGRES_URL to a reachable PostgreSQL server");
        return;
    };
    let ttl = std::env::var("LEADER_TTL").unwrap_or_else(|_| "3s".into());
    let rounds: usize = std::env::var("KILLS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(10);
    let cost_secs: u64 = std::env::var("COST_SECS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(30);
    println!("TIPOFF_LEADER_TTL={ttl}, 3 replicas, release build");

    summary(
        "failover (SIGKILL → first singleton tick on the new leader)",
        measure(libc::SIGKILL, rounds, &url, &ttl),
    );
    summary(
        "handover (SIGTERM → first singleton tick on the new leader)",
        measure(libc::SIGTERM, rounds, &url, &ttl),
    );

    let dir = tempfile::tempdir().unwrap();
    let http = reqwest::blocking::Client::new();
    let rs: Vec<Replica> = (0..3).map(|_| spawn(&url, &ttl, dir.path())).collect();
    for r in &rs {
        wait_ready(&http, r);
    }
    leader(&http, &rs);
    let ticks = |r: &Replica| {
        service(&status(&http, r).unwrap(), "leader")["ticks"]
            .as_u64()
            .unwrap()
    };
    let before: Vec<u64> = rs.iter().map(ticks).collect();
    std::thread::sleep(Duration::from_secs(cost_secs));
    let after: Vec<u64> = rs.iter().map(ticks).collect();
    let per_minute: Vec<f64> = before
        .iter()
        .zip(&after)
        .map(|(b, a)| (a - b) as f64 * 60.0 / cost_secs as f64)
        .collect();
    println!(
        "lease statements per minute per replica (renewals or attempts, one statement each): {per_minute:?}"
    );
}
