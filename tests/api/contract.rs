//! The API contract, checked by a real third-party client: schemathesis (`pip install
//! schemathesis`) generates requests from `/openapi.json` and runs every check it has
//! (`--checks all`: status codes, content types, response headers, schema-valid requests
//! accepted, schema-violating ones refused, undeclared methods, ignored auth...) against the
//! built binary, with the admin token, a registered user's key and imported games and markets.
//! It must find nothing. The live stream (`/api/v1/events`) is left out: it never ends, so a
//! generated request can only time out; `events.rs` covers it.
//!
//! Rerun by hand (the README has the same command):
//! `cargo test --test api contract:: -- --nocapture`; `TIPOFF_SCHEMATHESIS_EXAMPLES` sets the
//! examples per operation (default 50), `TIPOFF_SCHEMATHESIS_SEED` a seed to replay.

use std::process::Command;
use std::time::Duration;

use chrono::NaiveDate;
use serde_json::Value;

use crate::espn_mock::MockEspn;
use crate::helpers::*;

/// The one rule JSON Schema cannot state: an import's `to` is on or after its `from`, at most
/// 366 days on (the operation's description says so). A schema-valid body that breaks it is
/// a 400 naming the rule, which this run accepts for that one operation.
const IMPORT_RANGE_RULE: &str = r#"[[operations]]
include-name = "POST /admin/imports"
checks.positive_data_acceptance.expected-statuses = ["2xx", "3xx", "400", "401", "403", "404", "409", "429", "5xx"]
"#;

#[test]
fn schemathesis_finds_no_contract_failure() {
    let ci = std::env::var("CI").is_ok_and(|v| v == "true");
    let probe = Command::new("python3")
        .args(["-m", "schemathesis.cli", "--version"])
        .output();
    if !probe.as_ref().is_ok_and(|o| o.status.success()) {
        assert!(
            !ci,
            "schemathesis must run in CI: `pip install schemathesis` ({probe:?})"
        );
        eprintln!("SKIPPED: the contract test needs schemathesis: pip install schemathesis");
        return;
    }

    let _alone = exclusive();
    let espn = MockEspn::start();
    let day = NaiveDate::from_ymd_opt(2024, 1, 29).unwrap();
    espn.serve(
        "basketball/nba",
        day,
        espn_fixture("nba-scoreboard-20240129.json"),
    );
    let token = format!(
        "usdc:{}:6:{}",
        crate::money::USDC_MINT,
        crate::money::USDC_TREASURY
    );
    let d = Daemon::spawn(&[
        ("TIPOFF_TOKENS", token.as_str()),
        ("TIPOFF_LEAGUES", "nba"),
        ("TIPOFF_ESPN_BASE_URL", espn.base_url.as_str()),
        ("TIPOFF_SCHEDULE_INTERVAL", "24h"),
        ("TIPOFF_SCORE_IDLE_INTERVAL", "24h"),
        ("TIPOFF_IMPORT_CHECK_INTERVAL", "100ms"),
        // The run sends wrong tokens on purpose (ignored-auth checks); the limit on failed
        // authentications has its own test.
        ("TIPOFF_AUTH_FAILURE_LIMIT", "100000000"),
        ("TIPOFF_LOG", "warn"),
    ]);
    d.wait_notify("READY=1", Duration::from_secs(15));
    let client = reqwest::blocking::Client::new();
    let job: Value = client
        .post(d.url("/admin/imports"))
        .bearer_auth(ADMIN_TOKEN)
        .json(&serde_json::json!({"league": "nba", "from": "2024-01-29", "to": "2024-01-29"}))
        .send()
        .unwrap()
        .json()
        .unwrap();
    let deadline = std::time::Instant::now() + Duration::from_secs(15);
    loop {
        let now: Value = client
            .get(d.url(&format!("/admin/imports/{}", job["id"])))
            .bearer_auth(ADMIN_TOKEN)
            .send()
            .unwrap()
            .json()
            .unwrap();
        if now["state"] == "succeeded" {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "import did not finish: {now}"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    let user: Value = client
        .post(d.url("/api/v1/users"))
        .json(&serde_json::json!({"name": "schemathesis"}))
        .send()
        .unwrap()
        .json()
        .unwrap();
    let key = user["api_key"].as_str().unwrap();

    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("schemathesis.toml");
    std::fs::write(
        &config,
        format!("[auth.openapi.admin]\nbearer = \"{ADMIN_TOKEN}\"\n\n[auth.openapi.apiKey]\nbearer = \"{key}\"\n\n{IMPORT_RANGE_RULE}"),
    )
    .unwrap();
    let examples =
        std::env::var("TIPOFF_SCHEMATHESIS_EXAMPLES").unwrap_or_else(|_| "50".to_string());
    let mut cmd = Command::new("python3");
    cmd.current_dir(dir.path())
        .args(["-m", "schemathesis.cli", "--config-file"])
        .arg(&config)
        .args(["run", &d.url("/openapi.json")])
        .args(["--checks", "all", "--max-examples", &examples])
        .args(["--exclude-path", "/api/v1/events"])
        .args(["--request-timeout", "10", "--no-color"]);
    if let Ok(seed) = std::env::var("TIPOFF_SCHEMATHESIS_SEED") {
        cmd.args(["--seed", &seed]);
    }
    let out = cmd.output().expect("schemathesis runs");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    println!("{stdout}");
    assert!(
        out.status.success(),
        "schemathesis found contract failures:\n{stdout}\n{stderr}\ndaemon:\n{}",
        d.stderr()
    );
    // Every selected operation (all of the document's but the stream) was tested.
    let figure = |label: &str| -> usize {
        stdout
            .lines()
            .find_map(|l| l.trim().strip_prefix(label))
            .and_then(|n| n.trim().split('/').next()?.trim().parse().ok())
            .unwrap_or_else(|| panic!("no `{label}` line in\n{stdout}"))
    };
    let (selected, tested) = (figure("Selected: "), figure("Tested: "));
    assert_eq!(tested, selected, "{stdout}");
    assert!(tested >= 40, "only {tested} operations tested:\n{stdout}");
    assert!(!stdout.contains("Server error"), "{stdout}");
}
