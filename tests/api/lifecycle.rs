//! The built binary end to end: systemd notifications, graceful shutdown with a request in
//! flight, readiness while stopping, exit codes, configuration errors, the SQLite lock,
//! reload on SIGHUP and the watchdog.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::Duration;

use crate::helpers::*;

#[test]
fn sigterm_drains_in_flight_requests_and_exits_zero_after_stopping() {
    let mut d = Daemon::spawn(&[("TIPOFF_SHUTDOWN_DRAIN_DELAY", "700ms")]);
    let ready = d.wait_notify("READY=1", Duration::from_secs(15));
    assert!(
        ready.contains("STATUS=leader (epoch 1); services: 3 running, 7 skipped; database: ok"),
        "{ready}"
    );
    let res = reqwest::blocking::get(d.url("/ready")).unwrap();
    assert_eq!(res.status(), 200);

    // A request in flight: headers sent, the final blank line not yet.
    let mut conn = TcpStream::connect(("127.0.0.1", d.port)).unwrap();
    conn.write_all(b"GET /health HTTP/1.1\r\nHost: localhost\r\n")
        .unwrap();
    std::thread::sleep(Duration::from_millis(100));

    d.signal(libc::SIGTERM);
    d.wait_notify("STOPPING=1", Duration::from_secs(5));
    let res = reqwest::blocking::get(d.url("/ready")).unwrap();
    assert_eq!(
        res.status(),
        503,
        "readiness drops as soon as shutdown begins"
    );
    assert!(res.text().unwrap().contains("shutting down"));

    conn.write_all(b"Connection: close\r\n\r\n").unwrap();
    let mut response = String::new();
    conn.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    conn.read_to_string(&mut response).unwrap();
    assert!(
        response.starts_with("HTTP/1.1 200"),
        "in-flight request: {response}"
    );

    let (code, took) = d.wait_exit(Duration::from_secs(10));
    assert_eq!(code, Some(0), "stderr:\n{}", d.stderr());
    assert!(took < Duration::from_secs(5), "shutdown took {took:?}");
    let logs = d.stderr();
    assert!(
        logs.contains("\"stopped\"") || logs.contains("stopped"),
        "{logs}"
    );
}

#[test]
fn a_second_daemon_on_the_same_sqlite_file_refuses_to_start() {
    let first = Daemon::spawn(&[]);
    first.wait_notify("READY=1", Duration::from_secs(15));
    let db = first.dir.path().join("data/tipoff.db");
    assert!(db.exists(), "the default database lives under ./data");
    let mut second =
        Daemon::spawn(&[("TIPOFF_DATABASE_URL", &format!("sqlite://{}", db.display()))]);
    // Generous: the whole suite runs in parallel on two cores.
    let (code, took) = second.wait_exit(Duration::from_secs(30));
    assert!(
        matches!(code, Some(c) if c != 0),
        "the second daemon should exit non-zero, got {code:?} after {took:?}:\n{}",
        second.stderr()
    );
    assert!(
        second
            .stderr()
            .contains("another tipoff process is using the SQLite database"),
        "{}",
        second.stderr()
    );
}

#[test]
fn a_bad_setting_exits_78_naming_it() {
    let dir = tempfile::tempdir().unwrap();
    let out = tipoff_command(dir.path())
        .env("TIPOFF_LISTEN", "not-an-address")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(78));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("TIPOFF_LISTEN") && stderr.contains("not-an-address"),
        "{stderr}"
    );

    let file = dir.path().join("tipoff.toml");
    std::fs::write(&file, "shutdown_timeout = \"forever\"\n").unwrap();
    let out = tipoff_command(dir.path())
        .arg("--config")
        .arg(&file)
        .arg("check-config")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(78));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("shutdown_timeout") && stderr.contains("tipoff.toml"),
        "{stderr}"
    );
}

#[test]
fn two_tokens_on_one_mint_and_treasury_exit_78_naming_both() {
    let dir = tempfile::tempdir().unwrap();
    let (mint, treasury) = (crate::money::USDC_MINT, crate::money::USDC_TREASURY);
    let tokens = format!("usdc:{mint}:6:{treasury},usdc2:{mint}:6:{treasury}");
    let out = tipoff_command(dir.path())
        .env("TIPOFF_TOKENS", &tokens)
        .arg("check-config")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(78));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("TIPOFF_TOKENS")
            && stderr.contains("`usdc` and `usdc2`")
            && stderr.contains("credited twice"),
        "{stderr}"
    );
}

#[test]
fn check_config_prints_the_effective_config_and_never_a_secret() {
    let dir = tempfile::tempdir().unwrap();
    let out = tipoff_command(dir.path())
        .arg("check-config")
        .env("TIPOFF_ADMIN_TOKEN", "very-secret-admin-token-value")
        .env(
            "TIPOFF_DATABASE_URL",
            "postgres://tipoff:pg-password-value@db.example:5432/tipoff",
        )
        .env("TIPOFF_LEAGUES", "nba,mlb")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(0));
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    for secret in ["very-secret-admin-token-value", "pg-password-value"] {
        assert!(
            !stdout.contains(secret) && !stderr.contains(secret),
            "{secret} leaked:\n{stdout}{stderr}"
        );
    }
    assert!(
        stdout.contains("postgres://tipoff:***@db.example:5432/tipoff"),
        "{stdout}"
    );
    assert!(stdout.contains("leagues = \"nba,mlb\""), "{stdout}");
    assert!(
        stdout.contains("TIPOFF_LEAGUES"),
        "the source is shown: {stdout}"
    );
}

#[test]
fn an_unreachable_postgres_stops_the_boot_naming_host_and_cause() {
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let out = tipoff_command(dir.path())
        .env(
            "TIPOFF_DATABASE_URL",
            format!("postgres://tipoff:pg-secret@127.0.0.1:{port}/tipoff"),
        )
        .env("TIPOFF_DB_STARTUP_TIMEOUT", "3s")
        .env("TIPOFF_LISTEN", format!("127.0.0.1:{}", free_port()))
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains(&format!("127.0.0.1:{port}")), "{stderr}");
    assert!(stderr.to_lowercase().contains("refused"), "{stderr}");
    assert!(!stderr.contains("pg-secret"), "{stderr}");
}

#[test]
fn sighup_reloads_the_log_filter_between_reloading_and_ready() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("tipoff.toml");
    std::fs::write(&file, "log = \"warn\"\n").unwrap();
    let file_arg = file.display().to_string();
    let mut d = Daemon::spawn_in(dir, &[("TIPOFF_CONFIG", &file_arg)]);
    d.wait_notify("READY=1", Duration::from_secs(15));
    reqwest::blocking::get(d.url("/health")).unwrap();
    assert!(
        !d.stderr().contains("\"request\""),
        "debug lines are filtered out at warn"
    );

    std::fs::write(&file, "log = \"debug\"\n").unwrap();
    d.signal(libc::SIGHUP);
    d.wait_notify("RELOADING=1", Duration::from_secs(5));
    d.wait_notify("READY=1", Duration::from_secs(5));
    reqwest::blocking::get(d.url("/health")).unwrap();
    std::thread::sleep(Duration::from_millis(200));
    assert!(
        d.stderr().contains("\"request\""),
        "after reload the debug request line appears:\n{}",
        d.stderr()
    );
    d.signal(libc::SIGTERM);
    assert_eq!(d.wait_exit(Duration::from_secs(10)).0, Some(0));
}

#[test]
fn watchdog_keepalives_are_sent_while_healthy() {
    let mut d = Daemon::spawn(&[("WATCHDOG_USEC", "400000")]);
    d.wait_notify("READY=1", Duration::from_secs(15));
    d.wait_notify("WATCHDOG=1", Duration::from_secs(3));
    d.wait_notify("WATCHDOG=1", Duration::from_secs(3));
    d.signal(libc::SIGINT);
    assert_eq!(d.wait_exit(Duration::from_secs(10)).0, Some(0));
}

#[test]
fn watchdog_keepalives_stop_while_the_database_is_unreachable_and_resume_after() {
    let rt = tokio::runtime::Runtime::new().unwrap();
    let Some(url) = rt.block_on(postgres_db(
        "watchdog_keepalives_stop_while_the_database_is_unreachable_and_resume_after",
    )) else {
        return;
    };
    let opts: sqlx::postgres::PgConnectOptions = url.parse().unwrap();
    let upstream = format!("{}:{}", opts.get_host(), opts.get_port());
    let mut proxy = rt.block_on(Proxy::start(&upstream));
    let proxied = url.replacen(&upstream, &format!("127.0.0.1:{}", proxy.port), 1);
    let mut d = Daemon::spawn(&[
        ("TIPOFF_DATABASE_URL", proxied.as_str()),
        ("TIPOFF_DB_PING_INTERVAL", "100ms"),
        ("TIPOFF_DB_STARTUP_TIMEOUT", "1s"),
        ("WATCHDOG_USEC", "400000"),
    ]);
    d.wait_notify("READY=1", Duration::from_secs(15));
    d.wait_notify("WATCHDOG=1", Duration::from_secs(3));

    proxy.cut();
    d.wait_notify("database: unavailable", Duration::from_secs(5));
    let silent = d.notifications_for(Duration::from_secs(1));
    assert!(
        !silent.iter().any(|m| m.contains("WATCHDOG=1")),
        "no keep-alive while the database is down (5 periods): {silent:?}"
    );

    rt.block_on(proxy.restore());
    d.wait_notify("WATCHDOG=1", Duration::from_secs(5));
    d.signal(libc::SIGTERM);
    assert_eq!(d.wait_exit(Duration::from_secs(10)).0, Some(0));
}

fn debug_status(d: &Daemon) -> serde_json::Value {
    reqwest::blocking::Client::new()
        .get(d.url("/debug/status"))
        .bearer_auth(ADMIN_TOKEN)
        .send()
        .unwrap()
        .json()
        .unwrap()
}

fn wait_for(d: &Daemon, what: &str, ok: impl Fn(&serde_json::Value) -> bool) -> serde_json::Value {
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    loop {
        let status = debug_status(d);
        if ok(&status) {
            return status;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "{what}: {status:#}\n{}",
            d.stderr()
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn hup(d: &Daemon) {
    d.signal(libc::SIGHUP);
    d.wait_notify("RELOADING=1", Duration::from_secs(5));
    d.wait_notify("READY=1", Duration::from_secs(30));
}

/// SIGHUP: a league enabled in the file gets its poller; a changed interval replaces the
/// cleanup service with one at the new pace; a league removed stops its poller; the other
/// services keep running untouched (same `since`, no restart).
#[test]
fn sighup_starts_and_stops_services_and_applies_intervals() {
    let espn = crate::espn_mock::MockEspn::start();
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("tipoff.toml");
    let base = format!("espn_base_url = \"{}\"\n", espn.base_url);
    std::fs::write(&file, format!("{base}cleanup_interval = \"60s\"\n")).unwrap();
    let file_arg = file.display().to_string();
    let mut d = Daemon::spawn_in(dir, &[("TIPOFF_CONFIG", &file_arg)]);
    d.wait_notify("READY=1", Duration::from_secs(15));
    let before = debug_status(&d);
    assert!(service(&before, "poller:nba").is_none());
    assert_eq!(service(&before, "poller").unwrap()["state"], "skipped");
    let db_since = service(&before, "db").unwrap()["since"].clone();
    let cleanup = service(&before, "cleanup").unwrap();
    assert_eq!(cleanup["interval_secs"], 60.0);

    std::fs::write(
        &file,
        format!("{base}leagues = \"nba\"\ncleanup_interval = \"7s\"\n"),
    )
    .unwrap();
    hup(&d);
    let after = wait_for(&d, "poller:nba running, cleanup at 7s", |s| {
        service(s, "poller:nba").is_some_and(|p| p["state"] == "running")
            && service(s, "cleanup").is_some_and(|c| c["interval_secs"] == 7.0)
    });
    assert!(
        service(&after, "poller").is_none(),
        "the skipped row is gone"
    );
    assert_eq!(
        service(&after, "db").unwrap()["since"],
        db_since,
        "db untouched"
    );
    assert_eq!(
        service(&after, "cleanup").unwrap()["restarts"],
        0,
        "a reload is not a restart"
    );
    let leagues: serde_json::Value = reqwest::blocking::get(d.url("/api/v1/leagues"))
        .unwrap()
        .json()
        .unwrap();
    let nba = leagues["items"]
        .as_array()
        .unwrap()
        .iter()
        .find(|l| l["key"] == "nba")
        .unwrap()
        .clone();
    assert_eq!(nba["enabled"], true, "handlers see the reloaded leagues");

    std::fs::write(
        &file,
        format!("{base}leagues = \"\"\ncleanup_interval = \"7s\"\n"),
    )
    .unwrap();
    hup(&d);
    let removed = wait_for(&d, "poller:nba removed", |s| {
        service(s, "poller:nba").is_none()
    });
    assert_eq!(service(&removed, "poller").unwrap()["state"], "skipped");
    assert!(
        d.stderr().contains("service removed by reload"),
        "{}",
        d.stderr()
    );

    // A file that does not load is refused whole: everything keeps running.
    std::fs::write(&file, "leagues = \"cricket\"\n").unwrap();
    hup(&d);
    d.wait_stderr("reload refused", Duration::from_secs(5));
    assert_eq!(
        service(&debug_status(&d), "cleanup").unwrap()["interval_secs"],
        7.0
    );
    d.signal(libc::SIGTERM);
    assert_eq!(d.wait_exit(Duration::from_secs(15)).0, Some(0));
}

/// `tipoff status` prints the services of a running daemon and exits 0 while it is ready; it
/// exits non-zero, saying why, when the daemon is unreachable or refuses the token.
#[test]
fn status_command_prints_the_table_and_fails_when_unreachable() {
    let d = Daemon::spawn(&[]);
    d.wait_notify("READY=1", Duration::from_secs(15));
    let status = |listen: &str, token: &str| {
        tipoff_command(d.dir.path())
            .arg("status")
            .env("TIPOFF_LISTEN", listen)
            .env("TIPOFF_ADMIN_TOKEN", token)
            .output()
            .unwrap()
    };
    let out = status(&format!("127.0.0.1:{}", d.port), ADMIN_TOKEN);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(
        out.status.code(),
        Some(0),
        "{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        stdout.contains("SERVICE") && stdout.contains("RESTARTS"),
        "{stdout}"
    );
    let db = stdout
        .lines()
        .find(|l| l.starts_with("db "))
        .expect("a db row");
    assert!(db.contains("running"), "{db}");
    let poller = stdout
        .lines()
        .find(|l| l.starts_with("poller "))
        .expect("a poller row");
    assert!(
        poller.contains("skipped") && poller.contains("TIPOFF_LEAGUES"),
        "{poller}"
    );
    assert!(stdout.contains("ready"), "{stdout}");

    let out = status(&format!("127.0.0.1:{}", free_port()), ADMIN_TOKEN);
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("unreachable"));

    let out = status(&format!("127.0.0.1:{}", d.port), "a-wrong-token-0123456789");
    assert_eq!(out.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("401") && stderr.contains("invalid admin token"),
        "{stderr}"
    );
    assert!(
        !stderr.contains("a-wrong-token"),
        "the token is not echoed: {stderr}"
    );
}

/// `systemctl reload` that tells the truth: tipoff reads its env file itself, so an edit of the
/// file applies on SIGHUP (systemd never refreshes a running process's environment). A broken
/// file on reload keeps the running configuration.
#[test]
fn sighup_rereads_the_env_file() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("tipoff.env");
    std::fs::write(&file, "TIPOFF_CLEANUP_INTERVAL=60s\n").unwrap();
    let file_arg = file.display().to_string();
    let d = Daemon::spawn_in(dir, &[("TIPOFF_ENV_FILE", &file_arg)]);
    d.wait_notify("READY=1", Duration::from_secs(15));
    assert_eq!(
        service(&debug_status(&d), "cleanup").unwrap()["interval_secs"],
        60.0
    );
    std::fs::write(&file, "# edited\nTIPOFF_CLEANUP_INTERVAL=9s\n").unwrap();
    hup(&d);
    wait_for(&d, "cleanup at 9s from the edited env file", |s| {
        service(s, "cleanup").is_some_and(|c| c["interval_secs"] == 9.0)
    });
    std::fs::write(&file, "TIPOFF_CLEANUP_INTERVAL=soon\n").unwrap();
    hup(&d);
    d.wait_stderr("reload refused", Duration::from_secs(10));
    assert!(
        d.stderr().contains("TIPOFF_CLEANUP_INTERVAL"),
        "the setting is named"
    );
    assert_eq!(
        service(&debug_status(&d), "cleanup").unwrap()["interval_secs"],
        9.0,
        "the running configuration is kept"
    );
}

#[test]
fn a_missing_env_file_exits_78_naming_it() {
    let dir = tempfile::tempdir().unwrap();
    let out = tipoff_command(dir.path())
        .env("TIPOFF_ENV_FILE", dir.path().join("absent.env"))
        .arg("check-config")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(78));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("TIPOFF_ENV_FILE") && stderr.contains("absent.env"),
        "{stderr}"
    );
}
