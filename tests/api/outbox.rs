//! The outbox: domain events written with their change, delivered to webhooks signed and at
//! least once, retried with the same ids after failures, dead after N attempts and retried by
//! an admin, and delivered after a SIGKILL.

use std::collections::BTreeMap;
use std::time::Duration;

use chrono::Utc;
use serde_json::Value;

use crate::helpers::*;
use crate::money::{finished, open_market, register};
use crate::webhook_mock::{MockWebhook, WEBHOOK_SECRET};

fn outbox_env(
    hook: &MockWebhook,
    extra: &[(&'static str, &'static str)],
) -> Vec<(&'static str, String)> {
    let mut env = vec![
        ("TIPOFF_WEBHOOK_URLS", hook.url.clone()),
        ("TIPOFF_WEBHOOK_SECRET", WEBHOOK_SECRET.to_string()),
        ("TIPOFF_OUTBOX_INTERVAL", "100ms".to_string()),
        ("TIPOFF_WEBHOOK_BACKOFF_BASE", "200ms".to_string()),
        ("TIPOFF_WEBHOOK_BACKOFF_CAP", "400ms".to_string()),
        ("TIPOFF_WEBHOOK_TIMEOUT", "2s".to_string()),
    ];
    for (k, v) in extra {
        env.push((k, v.to_string()));
    }
    env
}

pub fn as_refs<'a>(env: &'a [(&'static str, String)]) -> Vec<(&'static str, &'a str)> {
    env.iter().map(|(k, v)| (*k, v.as_str())).collect()
}

/// Two registrations, a market created and settled: four events.
async fn make_events(app: &TestApp) -> usize {
    register(&app.client, &app.address).await;
    register(&app.client, &app.address).await;
    let (_, game) = open_market(&app.store).await;
    app.store
        .upsert_game("mlb", &finished(game, "home"), Utc::now())
        .await
        .unwrap();
    4
}

async fn healthy_receiver_sees_every_event_once(db: Db) {
    let hook = MockWebhook::start();
    let env = outbox_env(&hook, &[]);
    let app = spawn_app(&db, &as_refs(&env)).await;
    let n = make_events(&app).await;
    let accepted = hook.wait_accepted(n, Duration::from_secs(10)).await;
    // A few more passes: nothing is sent twice.
    tokio::time::sleep(Duration::from_millis(500)).await;
    let received = hook.received();
    assert_eq!(received.len(), n, "each event exactly once: {received:?}");
    let mut types: Vec<String> = accepted.iter().map(|r| r.event_type.clone()).collect();
    types.sort();
    assert_eq!(
        types,
        [
            "market.created",
            "market.settled",
            "user.registered",
            "user.registered"
        ]
    );
    for r in &received {
        assert!(
            r.verifies(WEBHOOK_SECRET),
            "signature of event {} verifies",
            r.id
        );
        assert!(
            !r.verifies("some-other-secret-000000"),
            "and only under the secret"
        );
        let body = r.json();
        assert_eq!(body["id"].as_i64(), Some(r.id));
        assert_eq!(body["type"].as_str(), Some(r.event_type.as_str()));
        assert!(body["created_at"].is_string());
        assert!(body["payload"].is_object());
    }
    let settled = received
        .iter()
        .find(|r| r.event_type == "market.settled")
        .unwrap()
        .json();
    assert_eq!(settled["payload"]["winning_outcome"], "home");
    assert_eq!(settled["league"], "mlb");
    // No API key or key hash leaks into an event.
    for r in &received {
        let text = String::from_utf8_lossy(&r.body);
        assert!(!text.contains("api_key"), "{text}");
    }
    let listed: Value = app
        .admin_get("/admin/outbox?state=delivered")
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(listed["items"].as_array().unwrap().len(), n);
    assert_eq!(listed["stats"]["pending"], 0);
    app.stop().await;
}

both_backends!(healthy_receiver_sees_every_event_once: webhook_healthy_sqlite, webhook_healthy_postgres);

async fn failing_receiver_gets_the_same_ids_after_recovery(db: Db) {
    let hook = MockWebhook::start();
    hook.fail(503, Some("0"));
    let env = outbox_env(&hook, &[("TIPOFF_WEBHOOK_MAX_ATTEMPTS", "50")]);
    let app = spawn_app(&db, &as_refs(&env)).await;
    let n = make_events(&app).await;
    // Wait until every event has been refused at least twice.
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    loop {
        let mut tries: BTreeMap<i64, usize> = BTreeMap::new();
        for r in hook.received() {
            *tries.entry(r.id).or_default() += 1;
        }
        if tries.len() == n && tries.values().all(|t| *t >= 2) {
            break;
        }
        assert!(std::time::Instant::now() < deadline, "retries: {tries:?}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let refused: std::collections::BTreeSet<i64> = hook.received().iter().map(|r| r.id).collect();
    let stats: Value = app
        .admin_get("/admin/outbox?state=pending")
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(stats["stats"]["pending"], n as i64);
    assert!(stats["items"][0]["last_error"]
        .as_str()
        .unwrap()
        .contains("HTTP 503"));
    assert!(stats["items"][0]["attempts"].as_i64().unwrap() >= 1);

    hook.recover();
    let accepted = hook.wait_accepted(n, Duration::from_secs(10)).await;
    let delivered: std::collections::BTreeSet<i64> = accepted.iter().map(|r| r.id).collect();
    assert_eq!(
        delivered, refused,
        "the same event ids come again after recovery"
    );
    assert_eq!(accepted.len(), n, "each accepted once");
    for r in &accepted {
        assert!(r.verifies(WEBHOOK_SECRET));
    }
    app.stop().await;
}

both_backends!(failing_receiver_gets_the_same_ids_after_recovery: webhook_retry_sqlite, webhook_retry_postgres);

async fn dead_events_are_listed_and_retried(db: Db) {
    let hook = MockWebhook::start();
    hook.fail(500, None);
    let env = outbox_env(&hook, &[("TIPOFF_WEBHOOK_MAX_ATTEMPTS", "2")]);
    let app = spawn_app(&db, &as_refs(&env)).await;
    register(&app.client, &app.address).await;
    register(&app.client, &app.address).await;
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    let dead = loop {
        let body: Value = app
            .admin_get("/admin/outbox?state=dead")
            .await
            .json()
            .await
            .unwrap();
        if body["items"].as_array().unwrap().len() == 2 {
            break body;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "events not dead: {body}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert_eq!(dead["stats"]["dead"], 2);
    assert_eq!(dead["items"][0]["attempts"], 2);
    // Dead means no more attempts.
    let tries = hook.received().len();
    tokio::time::sleep(Duration::from_millis(600)).await;
    assert_eq!(
        hook.received().len(),
        tries,
        "a dead event is not tried again"
    );

    hook.recover();
    let first = dead["items"][0]["id"].as_i64().unwrap();
    let second = dead["items"][1]["id"].as_i64().unwrap();
    let res = app
        .admin_post(&format!("/admin/outbox/{first}/retry"))
        .await;
    assert_eq!(res.status(), 200);
    let accepted = hook.wait_accepted(1, Duration::from_secs(5)).await;
    assert_eq!(accepted[0].id, first);
    // Retrying an event that is not dead is a conflict; an unknown one is a 404.
    tokio::time::sleep(Duration::from_millis(300)).await;
    let res = app
        .admin_post(&format!("/admin/outbox/{first}/retry"))
        .await;
    assert_eq!(res.status(), 409);
    let res = app.admin_post("/admin/outbox/999999/retry").await;
    assert_eq!(res.status(), 404);
    let res = app.admin_post("/admin/outbox/retry-dead").await;
    assert_eq!(res.status(), 200);
    assert_eq!(res.json::<Value>().await.unwrap()["requeued"], 1);
    let accepted = hook.wait_accepted(2, Duration::from_secs(5)).await;
    assert!(accepted.iter().any(|r| r.id == second));
    let res = app.get("/admin/outbox").await;
    assert_eq!(res.status(), 401, "the outbox is admin only");
    let res = app.admin_get("/admin/outbox?state=lost").await;
    assert_eq!(res.status(), 400);
    app.stop().await;
}

both_backends!(dead_events_are_listed_and_retried: webhook_dead_sqlite, webhook_dead_postgres);

/// Events written while the receiver is down survive a SIGKILL and are delivered by the next
/// process.
#[test]
fn undelivered_events_survive_sigkill() {
    let data = tempfile::tempdir().unwrap();
    let db_url = format!("sqlite://{}", data.path().join("tipoff.db").display());
    // Nothing listens on this port while the first process runs.
    let port = free_port();
    let down = format!("http://127.0.0.1:{port}/hook");
    let base = |url: &str| {
        vec![
            ("TIPOFF_DATABASE_URL", db_url.clone()),
            ("TIPOFF_WEBHOOK_URLS", url.to_string()),
            ("TIPOFF_WEBHOOK_SECRET", WEBHOOK_SECRET.to_string()),
            ("TIPOFF_OUTBOX_INTERVAL", "100ms".to_string()),
            ("TIPOFF_WEBHOOK_BACKOFF_BASE", "100ms".to_string()),
            ("TIPOFF_WEBHOOK_BACKOFF_CAP", "200ms".to_string()),
        ]
    };
    let env = base(&down);
    let mut first = Daemon::spawn(&as_refs(&env));
    first.wait_notify("READY=1", Duration::from_secs(20));
    let client = reqwest::blocking::Client::new();
    for _ in 0..3 {
        let res = client
            .post(first.url("/api/v1/users"))
            .json(&serde_json::json!({"name": "crash"}))
            .send()
            .unwrap();
        assert_eq!(res.status(), 201);
    }
    std::thread::sleep(Duration::from_millis(300));
    first.signal(libc::SIGKILL);
    first.wait_exit(Duration::from_secs(5));

    let hook = MockWebhook::start();
    let env = base(&hook.url);
    let second = Daemon::spawn(&as_refs(&env));
    second.wait_notify("READY=1", Duration::from_secs(20));
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while hook.accepted().len() < 3 {
        assert!(
            std::time::Instant::now() < deadline,
            "delivered after restart: {:?}\n{}",
            hook.received(),
            second.stderr()
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    let types: Vec<String> = hook
        .accepted()
        .iter()
        .map(|r| r.event_type.clone())
        .collect();
    assert_eq!(types, ["user.registered"; 3]);
}
