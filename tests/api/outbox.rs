//! The outbox: domain events written with their change, delivered to webhooks signed and at
//! least once, a receiver that is down probed by one event while the others wait uncharged (a
//! simulated day of outage loses nothing), dead after the retry window and retried by an
//! admin, and delivered after a SIGKILL.

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

/// A receiver that is down is probed with one due event at a time (the others are not charged
/// an attempt); once it answers, every event goes out once, in order.
async fn failing_receiver_gets_the_same_ids_after_recovery(db: Db) {
    let hook = MockWebhook::start();
    hook.fail(503, Some("0"));
    let env = outbox_env(&hook, &[]);
    let app = spawn_app(&db, &as_refs(&env)).await;
    let n = make_events(&app).await;
    // Wait until the receiver has been probed three times.
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while hook.received().len() < 3 {
        assert!(
            std::time::Instant::now() < deadline,
            "probes: {:?}",
            hook.received()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    // The receiver sees a probe before its attempt commits: wait for the third to be counted.
    let charged_of = |listing: &Value| -> i64 {
        listing["items"]
            .as_array()
            .unwrap()
            .iter()
            .map(|e| e["attempts"].as_i64().unwrap())
            .sum()
    };
    let pending: Value = loop {
        let listing: Value = app
            .admin_get("/admin/outbox?state=pending")
            .await
            .json()
            .await
            .unwrap();
        if charged_of(&listing) >= 3 || std::time::Instant::now() > deadline {
            break listing;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    assert_eq!(pending["stats"]["pending"], n as i64);
    let items = pending["items"].as_array().unwrap();
    // Every attempt counted is a probe the receiver saw: no event is charged while it waits.
    let charged = charged_of(&pending);
    let seen = hook.received().len() as i64;
    assert!(
        charged <= seen && charged >= 3,
        "charged {charged}, probes {seen}: {pending}"
    );
    assert!(items
        .iter()
        .filter(|e| e["attempts"].as_i64().unwrap() > 0)
        .all(|e| e["last_error"].as_str().unwrap().contains("HTTP 503")));
    // A receiver's URL may carry a credential: errors name its host, never its path.
    assert!(items
        .iter()
        .filter_map(|e| e["last_error"].as_str())
        .all(|m| !m.contains("/hook")));

    hook.recover();
    let accepted = hook.wait_accepted(n, Duration::from_secs(10)).await;
    let ids: Vec<i64> = accepted.iter().map(|r| r.id).collect();
    // The probe that found it up first (one of the due events), then the backlog in order.
    let mut rest = ids[1..].to_vec();
    rest.sort();
    assert_eq!(ids[1..], rest[..], "in order after the probe: {ids:?}");
    let mut sorted = ids.clone();
    sorted.sort();
    sorted.dedup();
    assert_eq!(sorted.len(), n, "each accepted once");
    for r in &accepted {
        assert!(r.verifies(WEBHOOK_SECRET));
    }
    app.stop().await;
}

both_backends!(failing_receiver_gets_the_same_ids_after_recovery: webhook_retry_sqlite, webhook_retry_postgres);

async fn dead_events_are_listed_and_retried(db: Db) {
    let hook = MockWebhook::start();
    hook.fail(500, None);
    let env = outbox_env(&hook, &[("TIPOFF_WEBHOOK_RETRY_WINDOW", "1s")]);
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
    // Probes failed until the window passed: dead, each with its last error.
    let errors: Vec<&str> = dead["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["last_error"].as_str().unwrap())
        .collect();
    assert!(errors.iter().any(|e| e.contains("HTTP 500")), "{dead}");
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

/// A receiver down for a simulated day (the delivery pass takes its clock as a parameter:
/// one pass per simulated minute): nothing is lost, no event is dead, only probes reach the
/// receiver while it is down, and after it recovers every event is delivered once, in order.
/// With a 12-hour retry window instead, the same outage ends every event `dead`.
async fn a_receiver_down_for_a_day_loses_nothing(db: Db) {
    use tipoff_actors::outbox::{deliver_due, OutboxSettings, WebhookClient};
    let hook = MockWebhook::start();
    hook.fail(503, None);
    let dir = tempfile::tempdir().unwrap();
    let store = fresh_store(&db, dir.path()).await;
    let client = WebhookClient::new(WEBHOOK_SECRET, Duration::from_secs(2), "test").unwrap();
    let settings = OutboxSettings {
        urls: vec![hook.url.clone()],
        ..OutboxSettings::default()
    };
    let user = |i: usize| {
        let store = store.clone();
        async move {
            store
                .create_user(
                    "u",
                    &format!("hash-{i}"),
                    &format!("CODE{i:04}"),
                    Utc::now(),
                )
                .await
                .unwrap();
        }
    };
    for i in 0..20 {
        user(i).await;
    }
    let start = Utc::now();
    let minute = chrono::Duration::minutes(1);
    let mut at = start;
    for m in 0..24 * 60 {
        if m == 12 * 60 {
            for i in 20..30 {
                user(i).await;
            }
        }
        let done = deliver_due(&store, &client, &settings, at).await.unwrap();
        assert_eq!((done.delivered, done.dead), (0, 0), "minute {m}: {done:?}");
        at += minute;
    }
    let probes = hook.received().len();
    assert!(
        (20..=80).contains(&probes),
        "a day of outage costs a few dozen probes, not an attempt per event per pass: {probes}"
    );
    let pending = store.outbox_stats(at).await.unwrap();
    assert_eq!((pending.pending, pending.dead), (30, 0));

    hook.recover();
    let mut delivered = 0;
    for _ in 0..60 {
        delivered += deliver_due(&store, &client, &settings, at)
            .await
            .unwrap()
            .delivered;
        at += minute;
    }
    assert_eq!(delivered, 30);
    let ids: Vec<i64> = hook.accepted().iter().map(|r| r.id).collect();
    // The probe that found it up (a due event), then the backlog in order.
    let mut rest = ids[1..].to_vec();
    rest.sort();
    assert_eq!(ids[1..], rest[..], "in order after the probe: {ids:?}");
    let mut sorted = ids.clone();
    sorted.sort();
    sorted.dedup();
    assert_eq!(sorted.len(), 30, "each event delivered once: {ids:?}");
    let stats = store.outbox_stats(at).await.unwrap();
    assert_eq!((stats.pending, stats.dead, stats.delivered), (0, 0, 30));
    assert!(store.webhooks_down().await.unwrap().is_empty());

    // The same outage against a 12-hour window: the events die after it, none is delivered.
    let other = MockWebhook::start();
    other.fail(500, None);
    let short = OutboxSettings {
        urls: vec![other.url.clone()],
        retry_window: Duration::from_secs(12 * 3600),
        ..OutboxSettings::default()
    };
    for i in 30..35 {
        user(i).await;
    }
    let mut at = Utc::now();
    let mut dead = 0;
    for _ in 0..24 * 60 {
        dead += deliver_due(&store, &client, &short, at).await.unwrap().dead;
        at += minute;
    }
    assert_eq!(dead, 5);
    assert!(other.accepted().is_empty());
    store.close().await;
}
both_backends!(a_receiver_down_for_a_day_loses_nothing: webhook_outage_sqlite, webhook_outage_postgres);
