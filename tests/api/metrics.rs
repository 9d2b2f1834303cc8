//! `/metrics` is valid Prometheus text format (checked by the `prometheus_client` Python
//! package's parser, a real implementation of the format) and carries the families the
//! operators need.

use std::process::Command;

use crate::helpers::*;

const FAMILIES: &[&str] = &[
    "tipoff_http_requests",
    "tipoff_http_request_duration_seconds",
    "tipoff_service_state",
    "tipoff_service_restarts",
    "tipoff_service_ticks",
    "tipoff_service_errors",
    "tipoff_service_seconds_since_success",
    "tipoff_service_interval_seconds",
    "tipoff_db_pool_connections",
    "tipoff_import_jobs",
    "tipoff_import_dates",
    "tipoff_outbox_events",
    "tipoff_outbox_oldest_pending_seconds",
    "tipoff_watcher_cursor_slot",
    "tipoff_watcher_cursor_lag_seconds",
    "tipoff_deposits",
    "tipoff_settlements",
    "tipoff_sse_streams",
];

/// Parses `text` with prometheus_client; the family names and types found, or `None` (after
/// a loud SKIPPED line) when the package is missing outside CI.
fn parse_with_prometheus_client(text: &str) -> Option<Vec<(String, String)>> {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("metrics.txt");
    std::fs::write(&file, text).unwrap();
    let script = "import sys\nfrom prometheus_client.parser import text_string_to_metric_families\n\
        for f in text_string_to_metric_families(open(sys.argv[1]).read()):\n    print(f.name, f.type, len(f.samples))\n";
    let out = Command::new("python3")
        .arg("-c")
        .arg(script)
        .arg(&file)
        .output();
    match out {
        Ok(out) if out.status.success() => Some(
            String::from_utf8_lossy(&out.stdout)
                .lines()
                .map(|l| {
                    let mut p = l.split_whitespace();
                    (p.next().unwrap().to_string(), p.next().unwrap().to_string())
                })
                .collect(),
        ),
        Ok(out) => {
            let err = String::from_utf8_lossy(&out.stderr);
            if err.contains("No module named") && std::env::var("CI").map_or(true, |v| v != "true")
            {
                eprintln!(
                    "SKIPPED: the metrics parser check needs `pip install prometheus_client`"
                );
                return None;
            }
            panic!("prometheus_client rejected /metrics: {err}\n{text}");
        }
        Err(e) => panic!("python3 not runnable: {e}"),
    }
}

#[actix_rt::test]
async fn metrics_parse_and_cover_the_families() {
    let rpc = crate::rpc_mock::MockRpc::start();
    let tokens = crate::money::tokens_setting();
    let app = spawn_app(
        &Db::Sqlite,
        &[
            ("TIPOFF_SOLANA_RPC_URL", rpc.url.as_str()),
            ("TIPOFF_TOKENS", tokens.as_str()),
            ("TIPOFF_SOLANA_POLL_INTERVAL", "100ms"),
            ("TIPOFF_SOLANA_START_STAGGER", "0s"),
        ],
    )
    .await;
    // Some traffic, a settlement and a deposit cursor to report.
    app.get("/api/v1/games").await;
    app.get("/api/v1/games/12345").await;
    let (_, game) = crate::money::open_market(&app.store).await;
    app.store
        .upsert_game(
            "mlb",
            &crate::money::finished(game, "home"),
            chrono::Utc::now(),
        )
        .await
        .unwrap();
    let account = crate::money::register(&app.client, &app.address).await;
    crate::money::fund(&app.store, "usdc", &account, 1_000).await;
    app.store
        .credit_deposits(
            "usdc",
            &[],
            Some(&tipoff_actors::store::Cursor {
                signature: crate::rpc_mock::constructed_signature("M", 1),
                slot: 4242,
            }),
            chrono::Utc::now(),
        )
        .await
        .unwrap();
    let res = app.get("/metrics").await;
    assert_eq!(res.status(), 200);
    assert!(res.headers()["content-type"]
        .to_str()
        .unwrap()
        .starts_with("text/plain"));
    let text = res.text().await.unwrap();
    for family in FAMILIES {
        assert!(
            text.contains(&format!("# TYPE {family}")),
            "{family} missing:\n{text}"
        );
    }
    assert!(
        text.contains(
            r#"tipoff_http_requests_total{method="GET",route="/api/v1/games/{id}",status="404"} 1"#
        ),
        "{text}"
    );
    assert!(
        text.contains(r#"tipoff_service_state{service="db",state="running"} 1"#),
        "{text}"
    );
    assert!(
        text.contains(r#"tipoff_settlements_total{outcome="settled"} 1"#),
        "{text}"
    );
    assert!(
        text.contains(r#"tipoff_deposits_total{state="credited",token="usdc"} 1"#),
        "{text}"
    );
    assert!(
        text.contains(r#"tipoff_watcher_cursor_slot{token="usdc"} 4242"#),
        "{text}"
    );
    assert!(
        text.contains(r#"tipoff_outbox_events{state="pending"}"#),
        "{text}"
    );
    if let Some(families) = parse_with_prometheus_client(&text) {
        for family in FAMILIES {
            // The parser names counters without their `_total` suffix.
            let name = family.trim_end_matches("_total");
            assert!(
                families.iter().any(|(n, _)| n == name),
                "parser did not find {name}: {families:?}"
            );
        }
        let kind = |n: &str| {
            families
                .iter()
                .find(|(f, _)| f == n)
                .map(|(_, t)| t.clone())
        };
        assert_eq!(kind("tipoff_http_requests").as_deref(), Some("counter"));
        assert_eq!(
            kind("tipoff_http_request_duration_seconds").as_deref(),
            Some("histogram")
        );
        assert_eq!(kind("tipoff_outbox_events").as_deref(), Some("gauge"));
    }
    app.stop().await;
}
