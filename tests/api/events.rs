//! The live event stream `GET /api/v1/events` (SSE): settlement events arrive, a reconnect
//! with `Last-Event-ID` gets what it missed, filters and access are enforced, and SIGTERM ends
//! open streams with a final event while the process exits within its deadline.

use std::time::{Duration, Instant};

use chrono::Utc;
use serde_json::Value;

use crate::helpers::*;
use crate::money::{finished, open_market};

/// One SSE event as parsed from the stream.
#[derive(Debug, Clone)]
pub struct SseEvent {
    pub id: Option<i64>,
    pub event: String,
    pub data: String,
}

/// Reads an SSE response incrementally.
pub struct SseReader {
    res: reqwest::Response,
    buf: String,
}

impl SseReader {
    pub fn new(res: reqwest::Response) -> Self {
        SseReader {
            res,
            buf: String::new(),
        }
    }

    /// The next event (comments and `retry:` skipped); `None` when the stream ended.
    pub async fn next(&mut self, within: Duration) -> Option<SseEvent> {
        let deadline = Instant::now() + within;
        loop {
            while let Some(end) = self.buf.find("\n\n") {
                let block: String = self.buf.drain(..end + 2).collect();
                let mut ev = SseEvent {
                    id: None,
                    event: "message".into(),
                    data: String::new(),
                };
                let mut any = false;
                for line in block.lines() {
                    if let Some(v) = line.strip_prefix("id: ") {
                        ev.id = v.parse().ok();
                        any = true;
                    } else if let Some(v) = line.strip_prefix("event: ") {
                        ev.event = v.to_string();
                        any = true;
                    } else if let Some(v) = line.strip_prefix("data: ") {
                        ev.data.push_str(v);
                        any = true;
                    }
                }
                if any {
                    return Some(ev);
                }
            }
            let left = deadline.saturating_duration_since(Instant::now());
            assert!(!left.is_zero(), "no SSE event within {within:?}");
            match tokio::time::timeout(left, self.res.chunk()).await {
                Ok(Ok(Some(chunk))) => self.buf.push_str(&String::from_utf8_lossy(&chunk)),
                Ok(Ok(None)) | Ok(Err(_)) => return None,
                Err(_) => panic!("no SSE event within {within:?}"),
            }
        }
    }

    /// The next event of type `event`, skipping others.
    pub async fn next_of(&mut self, event: &str, within: Duration) -> SseEvent {
        loop {
            let ev = self.next(within).await.expect("stream open");
            if ev.event == event {
                return ev;
            }
        }
    }
}

const FAST: &[(&str, &str)] = &[("TIPOFF_EVENTS_POLL_INTERVAL", "50ms")];

async fn settle_one(app: &TestApp) -> i64 {
    let (market_id, game) = open_market(&app.store).await;
    app.store
        .upsert_game("mlb", &finished(game, "away"), Utc::now())
        .await
        .unwrap();
    market_id
}

async fn settlement_arrives_and_resume_gets_what_was_missed(db: Db) {
    let app = spawn_app(&db, FAST).await;
    let res = app.get("/api/v1/events?types=market.settled").await;
    assert_eq!(res.status(), 200);
    assert_eq!(res.headers()["content-type"], "text/event-stream");
    let mut stream = SseReader::new(res);
    let market = settle_one(&app).await;
    let ev = stream
        .next_of("market.settled", Duration::from_secs(5))
        .await;
    let data: Value = serde_json::from_str(&ev.data).unwrap();
    assert_eq!(data["payload"]["market_id"].as_i64(), Some(market));
    assert_eq!(data["payload"]["winning_outcome"], "away");
    let seen = ev.id.expect("events carry ids");
    drop(stream);

    // Missed while disconnected: two more settlements.
    let missed = [settle_one(&app).await, settle_one(&app).await];
    let res = app
        .client
        .get(format!(
            "{}/api/v1/events?types=market.settled",
            app.address
        ))
        .header("Last-Event-ID", seen.to_string())
        .send()
        .await
        .unwrap();
    let mut stream = SseReader::new(res);
    for want in missed {
        let ev = stream
            .next_of("market.settled", Duration::from_secs(5))
            .await;
        assert!(ev.id.unwrap() > seen);
        let data: Value = serde_json::from_str(&ev.data).unwrap();
        assert_eq!(data["payload"]["market_id"].as_i64(), Some(want));
    }
    // And live again after the replay.
    let live = settle_one(&app).await;
    let ev = stream
        .next_of("market.settled", Duration::from_secs(5))
        .await;
    let data: Value = serde_json::from_str(&ev.data).unwrap();
    assert_eq!(data["payload"]["market_id"].as_i64(), Some(live));
    app.stop().await;
}

both_backends!(settlement_arrives_and_resume_gets_what_was_missed: sse_resume_sqlite, sse_resume_postgres);

#[actix_rt::test]
async fn filters_and_access_are_checked() {
    let app = spawn_app(&Db::Sqlite, FAST).await;
    let res = app.get("/api/v1/events?types=deposit.credited").await;
    assert_eq!(res.status(), 403, "money events need the admin token");
    let body: Value = res.json().await.unwrap();
    assert!(body["error"]["message"]
        .as_str()
        .unwrap()
        .contains("admin token"));
    let res = app.get("/api/v1/events?types=market.exploded").await;
    assert_eq!(res.status(), 400);
    let res = app
        .client
        .get(format!("{}/api/v1/events", app.address))
        .header("Last-Event-ID", "yesterday")
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 400);

    // League filter: an NBA-only stream does not see an MLB market.
    let nba = SseReader::new(app.get("/api/v1/events?league=nba").await);
    let mut all = SseReader::new(app.get("/api/v1/events").await);
    let mut admin = SseReader::new(app.admin_get("/api/v1/events?types=user.registered").await);
    settle_one(&app).await;
    crate::money::register(&app.client, &app.address).await;
    let created = all.next_of("market.created", Duration::from_secs(5)).await;
    assert!(created.data.contains("\"league\":\"mlb\""));
    let registered = admin
        .next_of("user.registered", Duration::from_secs(5))
        .await;
    assert!(!registered.data.contains("api_key"));
    let mut nba = nba;
    let quiet =
        tokio::time::timeout(Duration::from_millis(500), nba.next(Duration::from_secs(1))).await;
    assert!(quiet.is_err(), "the NBA stream saw an MLB event: {quiet:?}");
    app.stop().await;
}

/// SIGTERM: the open stream gets the final `shutdown` event and ends; the process exits 0
/// well within its deadline (the drain does not wait on the stream).
#[actix_rt::test]
async fn sigterm_ends_streams_with_a_final_event() {
    let mut daemon = Daemon::spawn(&[
        ("TIPOFF_SHUTDOWN_TIMEOUT", "10s"),
        ("TIPOFF_EVENTS_POLL_INTERVAL", "50ms"),
        ("TIPOFF_SSE_HEARTBEAT", "1h"),
    ]);
    daemon.wait_notify("READY=1", Duration::from_secs(20));
    let res = reqwest::Client::new()
        .get(daemon.url("/api/v1/events"))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 200);
    let mut stream = SseReader::new(res);
    tokio::time::sleep(Duration::from_millis(200)).await;
    let sent = Instant::now();
    daemon.signal(libc::SIGTERM);
    let last = stream
        .next(Duration::from_secs(5))
        .await
        .expect("a final event");
    assert_eq!(last.event, "shutdown");
    assert!(
        stream.next(Duration::from_secs(5)).await.is_none(),
        "then the stream ends"
    );
    let (code, _) = daemon.wait_exit(Duration::from_secs(10));
    assert_eq!(code, Some(0));
    assert!(
        sent.elapsed() < Duration::from_secs(5),
        "exit took {:?} (deadline 10s)",
        sent.elapsed()
    );
}
