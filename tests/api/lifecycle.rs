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
        ready.contains("STATUS=services: 2 running, 2 skipped; database: ok"),
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
    let (code, _) = second.wait_exit(Duration::from_secs(10));
    assert_ne!(code, Some(0));
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
