//! League pollers end to end, against a local mock ESPN serving the real fixtures: manual
//! imports create each game once with one market, settle finals, void postponed and canceled
//! games, survive upstream faults, refuse bad input, and resume after SIGKILL.

use std::collections::HashSet;
use std::time::{Duration, Instant};

use chrono::NaiveDate;
use serde_json::{json, Value};

use crate::espn_mock::{generated_board, with_status, MockEspn, Reply};
use crate::helpers::*;

pub const NBA: &str = "basketball/nba";

pub fn day(text: &str) -> NaiveDate {
    NaiveDate::parse_from_str(text, "%Y-%m-%d").unwrap()
}

/// Settings for an app whose NBA poller reads `espn`.
pub fn poller_env<'a>(espn: &'a MockEspn, extra: &[(&'a str, &'a str)]) -> Vec<(&'a str, &'a str)> {
    let mut env = vec![
        ("TIPOFF_LEAGUES", "nba"),
        ("TIPOFF_ESPN_BASE_URL", espn.base_url.as_str()),
        ("TIPOFF_IMPORT_CHECK_INTERVAL", "100ms"),
        ("TIPOFF_ESPN_TIMEOUT", "2s"),
        ("TIPOFF_ESPN_RETRY_MAX_WAIT", "2s"),
    ];
    env.extend_from_slice(extra);
    env
}

/// Asks for an import and asserts the answer's status; returns the job.
async fn request_import(app: &TestApp, from: &str, to: &str, status: u16) -> Value {
    let res = app
        .admin_post_json(
            "/admin/imports",
            &json!({"league": "nba", "from": from, "to": to}),
        )
        .await;
    assert_eq!(res.status(), status, "POST /admin/imports {from}..{to}");
    res.json().await.unwrap()
}

/// Polls the job until it has ended.
async fn finished_job(app: &TestApp, id: &Value) -> Value {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let job = app.json(&format!("/admin/imports/{id}")).await;
        if !["queued", "running"].contains(&job["state"].as_str().unwrap()) {
            return job;
        }
        assert!(Instant::now() < deadline, "import did not end: {job}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Every item of a paginated list.
async fn all(app: &TestApp, path: &str) -> Vec<Value> {
    let mut items = Vec::new();
    let mut url = format!("{path}?limit=200");
    loop {
        let page = app.json(&url).await;
        items.extend(page["items"].as_array().unwrap().iter().cloned());
        match page["next"].as_str() {
            Some(next) => url = format!("{path}?limit=200&cursor={next}"),
            None => return items,
        }
    }
}

async fn an_import_creates_each_game_once_settles_finals_and_a_rerun_changes_nothing(db: Db) {
    let espn = MockEspn::start();
    espn.serve(
        NBA,
        day("2024-01-29"),
        espn_fixture("nba-scoreboard-20240129.json"),
    );
    espn.serve(
        NBA,
        day("2024-01-30"),
        espn_fixture("nba-scoreboard-20260224.json"),
    );
    let app = spawn_app(&db, &poller_env(&espn, &[])).await;

    let job = request_import(&app, "2024-01-28", "2024-01-31", 202).await;
    assert_eq!(job["dates_total"], 4);
    assert_eq!(job["from"], "2024-01-28");
    let job = finished_job(&app, &job["id"]).await;
    assert_eq!(job["state"], "succeeded", "{job}");
    assert_eq!(job["dates_done"], 4);
    assert_eq!(job["dates_failed"], 0);
    assert_eq!(job["games_upserted"], 23);
    assert_eq!(job["failed_dates"], json!([]));
    // Its import.finished event was written with the job's end, and each new market's event.
    let events = app.store.events_after(0, 1000).await.unwrap();
    let finished: Vec<_> = events
        .iter()
        .filter(|e| e.event_type == "import.finished")
        .collect();
    assert_eq!(finished.len(), 1);
    let payload: serde_json::Value = serde_json::from_str(&finished[0].payload).unwrap();
    assert_eq!(payload["state"], "succeeded");
    assert_eq!(payload["games_upserted"], 23);
    assert_eq!(
        events
            .iter()
            .filter(|e| e.event_type == "market.created")
            .count(),
        23
    );

    let games = all(&app, "/api/v1/games").await;
    assert_eq!(games.len(), 23);
    let ids: HashSet<&str> = games
        .iter()
        .map(|g| g["external_id"].as_str().unwrap())
        .collect();
    assert_eq!(ids.len(), 23, "each ESPN event stored once");
    let markets = all(&app, "/api/v1/markets").await;
    assert_eq!(markets.len(), 23, "one market per game");
    let mut settled = 0;
    for g in &games {
        let m = markets
            .iter()
            .find(|m| m["id"] == g["market_id"])
            .expect("its market");
        assert_eq!(m["game_id"], g["id"]);
        if g["state"] == "final" {
            settled += 1;
            let (h, a) = (
                g["home"]["score"].as_i64().unwrap(),
                g["away"]["score"].as_i64().unwrap(),
            );
            let winner = if h > a { "home" } else { "away" };
            assert_eq!(m["state"], "settled", "{g}");
            assert_eq!(m["winning_outcome"], winner, "{g}");
        } else {
            // Live or past its start time: no more stakes.
            assert_eq!(m["state"], "locked", "{g}");
        }
    }
    assert_eq!(settled, 12);
    for date in ["2024-01-28", "2024-01-29", "2024-01-30", "2024-01-31"] {
        assert_eq!(espn.hits(NBA, day(date)), 1, "{date} fetched once");
    }

    let again = request_import(&app, "2024-01-28", "2024-01-31", 202).await;
    assert_ne!(
        again["id"], job["id"],
        "the first job has ended, so this is a new one"
    );
    let again = finished_job(&app, &again["id"]).await;
    assert_eq!(again["state"], "succeeded");
    assert_eq!(again["games_upserted"], 23);
    assert_eq!(
        all(&app, "/api/v1/games").await,
        games,
        "a rerun changes no game"
    );
    assert_eq!(
        all(&app, "/api/v1/markets").await,
        markets,
        "a rerun changes no market"
    );
    assert_eq!(espn.hits(NBA, day("2024-01-29")), 2);
    assert_eq!(app.stop().await, tipoff::startup::Exit::Requested);
}

both_backends!(an_import_creates_each_game_once_settles_finals_and_a_rerun_changes_nothing:
    an_import_creates_each_game_once_settles_finals_and_a_rerun_changes_nothing_on_sqlite,
    an_import_creates_each_game_once_settles_finals_and_a_rerun_changes_nothing_on_postgres);

/// Imports ESPN's 2026-02-24 board and waits for success.
async fn import_feb_24(app: &TestApp) {
    let job = request_import(app, "2026-02-24", "2026-02-24", 202).await;
    let job = finished_job(app, &job["id"]).await;
    assert_eq!(job["state"], "succeeded", "{job}");
}

/// A stored game by ESPN event id, and its market.
async fn game_and_market(app: &TestApp, external_id: &str) -> (Value, Value) {
    let games = all(app, "/api/v1/games").await;
    let g = games
        .into_iter()
        .find(|g| g["external_id"] == external_id)
        .expect("game stored");
    let m = app
        .json(&format!("/api/v1/markets/{}", g["market_id"]))
        .await;
    (g, m)
}

async fn postponed_and_canceled_games_void_their_markets_and_are_never_resettled(db: Db) {
    let espn = MockEspn::start();
    let board = day("2026-02-24");
    let real = espn_fixture("nba-scoreboard-20260224.json");
    espn.serve(NBA, board, real.clone());
    let app = spawn_app(&db, &poller_env(&espn, &[])).await;
    import_feb_24(&app).await;
    let (_, m) = game_and_market(&app, "401810687").await;
    assert_eq!(m["state"], "locked", "past its start time");

    // CONSTRUCTED: WSH @ ATL postponed and DAL @ BKN canceled (the fixtures have neither).
    let postponed = with_status(&real, "401810687", "STATUS_POSTPONED", "post", false, None);
    let both = with_status(
        &postponed,
        "401810688",
        "STATUS_CANCELED",
        "post",
        false,
        None,
    );
    espn.serve(NBA, board, both);
    import_feb_24(&app).await;
    let (g, m) = game_and_market(&app, "401810687").await;
    assert_eq!(g["state"], "postponed");
    assert_eq!(m["state"], "void");
    assert_eq!(m["winning_outcome"], Value::Null);
    let (g, m) = game_and_market(&app, "401810688").await;
    assert_eq!(g["state"], "canceled");
    assert_eq!(m["state"], "void");

    // CONSTRUCTED: the postponed game later reported final: stored, never re-settled.
    let finished = with_status(
        &real,
        "401810687",
        "STATUS_FINAL",
        "post",
        true,
        Some((101, 99)),
    );
    espn.serve(NBA, board, finished);
    import_feb_24(&app).await;
    let (g, m) = game_and_market(&app, "401810687").await;
    assert_eq!(g["state"], "final");
    assert_eq!(g["home"]["score"], 101);
    assert_eq!(m["state"], "void", "a closed market is never settled again");
    assert_eq!(m["winning_outcome"], Value::Null);
    app.stop().await;
}

both_backends!(postponed_and_canceled_games_void_their_markets_and_are_never_resettled:
    postponed_and_canceled_games_void_their_markets_and_are_never_resettled_on_sqlite,
    postponed_and_canceled_games_void_their_markets_and_are_never_resettled_on_postgres);

async fn upstream_faults_fail_only_their_dates_and_the_poller_keeps_running(db: Db) {
    let espn = MockEspn::start();
    let fixture = espn_fixture("nba-scoreboard-20240129.json");
    let (d1, d2, d3, d4, d5) = (
        day("2024-01-01"),
        day("2024-01-02"),
        day("2024-01-03"),
        day("2024-01-04"),
        day("2024-01-05"),
    );
    espn.script(NBA, d1, vec![Reply::status(500)]);
    espn.script(
        NBA,
        d2,
        vec![
            Reply::status(429).header("retry-after", "1"),
            Reply::ok(generated_board(d2, 3)),
        ],
    );
    espn.script(
        NBA,
        d3,
        vec![Reply::ok(b"{\"events\": [{\"id\": 7".to_vec())],
    );
    espn.script(
        NBA,
        d4,
        vec![Reply::ok(fixture).delayed(Duration::from_secs(3))],
    );
    espn.script(
        NBA,
        d5,
        vec![Reply::status(503), Reply::ok(generated_board(d5, 4))],
    );
    let app = spawn_app(
        &db,
        &poller_env(
            &espn,
            &[
                ("TIPOFF_ESPN_TIMEOUT", "500ms"),
                ("TIPOFF_ESPN_ATTEMPTS", "3"),
                ("TIPOFF_IMPORT_ATTEMPTS", "1"), // one pass per date: what fails is final
            ],
        ),
    )
    .await;

    let job = request_import(&app, "2024-01-01", "2024-01-05", 202).await;
    let job = finished_job(&app, &job["id"]).await;
    assert_eq!(job["state"], "failed", "{job}");
    assert_eq!(job["dates_done"], 2, "{job}");
    assert_eq!(job["dates_failed"], 3, "{job}");
    assert_eq!(job["games_upserted"], 7);
    let failed: Vec<(&str, &str)> = job["failed_dates"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| (f["date"].as_str().unwrap(), f["error"].as_str().unwrap()))
        .collect();
    assert_eq!(failed.len(), 3, "{job}");
    assert_eq!(failed[0].0, "2024-01-01");
    assert!(failed[0].1.contains("HTTP 500"), "{failed:?}");
    assert_eq!(failed[1].0, "2024-01-03");
    assert!(failed[1].1.contains("malformed"), "{failed:?}");
    assert_eq!(failed[2].0, "2024-01-04");
    assert!(failed[2].1.contains("timed out"), "{failed:?}");
    assert!(
        job["error"].as_str().unwrap().contains("3 date(s) failed"),
        "{job}"
    );
    assert_eq!(
        espn.hits(NBA, d1),
        3,
        "a 500 is retried up to the attempt limit"
    );
    assert_eq!(
        espn.hits(NBA, d2),
        2,
        "a 429 waits for Retry-After, then succeeds"
    );
    assert_eq!(espn.hits(NBA, d3), 1, "a malformed body is not retried");
    assert_eq!(espn.hits(NBA, d5), 2);

    let status = app.json("/debug/status").await;
    let poller = status["services"]
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["name"] == "poller:nba")
        .expect("poller listed")
        .clone();
    assert_eq!(poller["state"], "running", "{poller}");
    assert_eq!(
        poller["restarts"], 0,
        "a flaky ESPN never costs a restart: {poller}"
    );
    assert!(
        poller["last_error"]["message"]
            .as_str()
            .unwrap()
            .contains("scoreboards failed"),
        "{poller}"
    );

    // ESPN recovers: importing again fills the gaps without duplicating anything.
    espn.serve(NBA, d1, generated_board(d1, 2));
    espn.serve(NBA, d3, generated_board(d3, 2));
    espn.serve(NBA, d4, generated_board(d4, 2));
    let job = request_import(&app, "2024-01-01", "2024-01-05", 202).await;
    let job = finished_job(&app, &job["id"]).await;
    assert_eq!(job["state"], "succeeded", "{job}");
    let games = all(&app, "/api/v1/games").await;
    assert_eq!(games.len(), 3 + 4 + 2 + 2 + 2);
    let ids: HashSet<&str> = games
        .iter()
        .map(|g| g["external_id"].as_str().unwrap())
        .collect();
    assert_eq!(ids.len(), games.len(), "no duplicate rows");
    app.stop().await;
}

both_backends!(upstream_faults_fail_only_their_dates_and_the_poller_keeps_running:
    upstream_faults_fail_only_their_dates_and_the_poller_keeps_running_on_sqlite,
    upstream_faults_fail_only_their_dates_and_the_poller_keeps_running_on_postgres);

#[actix_rt::test]
async fn bad_import_requests_are_refused_with_a_message_naming_the_problem() {
    let espn = MockEspn::start();
    let app = spawn_app(&Db::Sqlite, &poller_env(&espn, &[])).await;
    let cases = [
        (
            json!({"league": "xfl", "from": "2024-01-01", "to": "2024-01-02"}),
            "unknown league `xfl`",
        ),
        (
            json!({"league": "nba", "from": "2024-01-05", "to": "2024-01-02"}),
            "is after `to`",
        ),
        (
            json!({"league": "nba", "from": "2024-01-01", "to": "2025-01-01"}),
            "367 days",
        ),
        (
            json!({"league": "nba", "from": "2024-02-30", "to": "2024-03-01"}),
            "`from` must be a date",
        ),
        (
            json!({"league": "nba", "from": "yesterday", "to": "2024-03-01"}),
            "`from` must be a date",
        ),
        (
            json!({"league": "nba", "from": "2024-01-01"}),
            "missing field `to`",
        ),
    ];
    for (body, needle) in cases {
        let res = app.admin_post_json("/admin/imports", &body).await;
        assert_eq!(res.status(), 400, "{body}");
        let err: Value = res.json().await.unwrap();
        assert_eq!(err["error"]["code"], "bad_request");
        let message = err["error"]["message"].as_str().unwrap();
        assert!(message.contains(needle), "{body}: {message}");
    }
    // A league this daemon does not poll: well formed, refused by the configuration.
    let res = app
        .admin_post_json(
            "/admin/imports",
            &json!({"league": "mlb", "from": "2024-01-01", "to": "2024-01-02"}),
        )
        .await;
    assert_eq!(res.status(), 409);
    let err: Value = res.json().await.unwrap();
    assert!(err["error"]["message"]
        .as_str()
        .unwrap()
        .contains("not enabled"));
    let res = app
        .client
        .post(format!("{}/admin/imports", app.address))
        .json(&json!({"league": "nba", "from": "2024-01-01", "to": "2024-01-02"}))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 401, "admin token required");
    assert_eq!(
        app.admin_get("/admin/imports?state=bogus").await.status(),
        400
    );
    assert_eq!(app.admin_get("/admin/imports/999").await.status(), 404);
    assert_eq!(
        app.admin_post("/admin/imports/999/cancel").await.status(),
        404
    );
    assert_eq!(
        app.json("/admin/imports").await["items"],
        json!([]),
        "nothing was created"
    );
    app.stop().await;
}

#[actix_rt::test]
async fn an_overlapping_request_returns_the_active_job_and_cancel_stops_it() {
    let espn = MockEspn::start();
    espn.set_delay(Duration::from_millis(200));
    let app = spawn_app(
        &Db::Sqlite,
        &poller_env(
            &espn,
            &[
                ("TIPOFF_ESPN_CONCURRENCY", "1"),
                ("TIPOFF_IMPORT_SLICE", "300ms"),
            ],
        ),
    )
    .await;
    let first = request_import(&app, "2024-01-01", "2024-01-31", 202).await;
    let same = request_import(&app, "2024-01-20", "2024-02-10", 200).await;
    assert_eq!(
        same["id"], first["id"],
        "overlapping request returns the active job"
    );
    let second = request_import(&app, "2024-03-01", "2024-03-02", 202).await;
    assert_ne!(second["id"], first["id"]);

    let listed = app.json("/admin/imports?limit=1").await;
    assert_eq!(listed["items"][0]["id"], second["id"], "newest first");
    let next = listed["next"].as_str().expect("a second page");
    let rest = app
        .json(&format!("/admin/imports?limit=1&cursor={next}"))
        .await;
    assert_eq!(rest["items"][0]["id"], first["id"]);
    assert_eq!(rest["next"], Value::Null);

    let res = app
        .admin_post(&format!("/admin/imports/{}/cancel", first["id"]))
        .await;
    assert_eq!(res.status(), 200);
    let canceled: Value = res.json().await.unwrap();
    assert_eq!(canceled["state"], "canceled");
    let res = app
        .admin_post(&format!("/admin/imports/{}/cancel", first["id"]))
        .await;
    assert_eq!(res.status(), 409, "an ended job cannot be canceled again");

    let second = finished_job(&app, &second["id"]).await;
    assert_eq!(
        second["state"], "succeeded",
        "the next job runs after the cancel"
    );
    let first = app.json(&format!("/admin/imports/{}", first["id"])).await;
    assert_eq!(first["state"], "canceled");
    assert!(first["dates_done"].as_i64().unwrap() < 31, "{first}");
    app.stop().await;
}

#[test]
fn an_import_killed_mid_run_resumes_where_it_stopped() {
    let espn = MockEspn::start();
    let first = day("2024-01-01");
    let dates: Vec<NaiveDate> = first.iter_days().take(60).collect();
    for d in &dates {
        espn.serve(NBA, *d, generated_board(*d, 5));
    }
    espn.set_delay(Duration::from_millis(40));
    let env = [
        ("TIPOFF_LEAGUES", "nba"),
        ("TIPOFF_ESPN_BASE_URL", espn.base_url.as_str()),
        ("TIPOFF_IMPORT_CHECK_INTERVAL", "100ms"),
        ("TIPOFF_ESPN_CONCURRENCY", "2"),
    ];
    let mut d = Daemon::spawn(&env);
    d.wait_notify("READY=1", Duration::from_secs(15));
    let get_job = import_60_days(&d);
    job_until(
        &d,
        Duration::from_secs(30),
        &get_job,
        |_| {},
        |job| job["dates_done"].as_i64().unwrap() >= 10,
    );
    d.child.kill().unwrap();
    d.child.wait().unwrap();

    // What the killed process left: a running job whose counters match its committed dates.
    let db = d.dir.path().join("data/tipoff.db");
    let (state, dates_done, games_upserted, done, games) = left_behind(&db);
    assert_eq!(state, "running", "killed mid-run");
    assert!((10..60).contains(&dates_done), "{dates_done}");
    assert_eq!(
        done.len() as i64,
        dates_done,
        "progress matches the committed dates"
    );
    assert_eq!(
        games,
        dates_done * 5,
        "each committed date holds its games, nothing more"
    );
    assert_eq!(games_upserted, games);

    let dir = std::mem::replace(&mut d.dir, tempfile::tempdir().unwrap());
    drop(d);
    let d = Daemon::spawn_in(dir, &env);
    d.wait_notify("READY=1", Duration::from_secs(15));
    let job = ended_job(&d, Duration::from_secs(30), &get_job, |_| {});
    assert_eq!(job["state"], "succeeded", "{job}");
    assert_eq!(job["dates_done"], 60);
    assert_eq!(
        job["games_upserted"], 300,
        "every date counted once across both runs"
    );
    for date in &done {
        assert_eq!(
            espn.hits(NBA, *date),
            1,
            "{date} was done before the kill: not fetched again"
        );
    }
    for date in &dates {
        assert!(espn.hits(NBA, *date) >= 1, "{date} fetched");
    }
    let http = reqwest::blocking::Client::new();
    let mut external_ids = HashSet::new();
    let mut url = d.url("/api/v1/games?limit=200");
    loop {
        let page: Value = http.get(&url).send().unwrap().json().unwrap();
        for g in page["items"].as_array().unwrap() {
            assert!(
                external_ids.insert(g["external_id"].as_str().unwrap().to_string()),
                "{g}"
            );
        }
        match page["next"].as_str() {
            Some(next) => url = d.url(&format!("/api/v1/games?limit=200&cursor={next}")),
            None => break,
        }
    }
    assert_eq!(external_ids.len(), 300, "every game stored exactly once");
    assert!(d.stderr().contains("resuming import"), "{}", d.stderr());
}

/// What a killed process left in its SQLite file: the job's (state, dates done, games
/// upserted), its dates done, and the games stored.
fn left_behind(db: &std::path::Path) -> (String, i64, i64, Vec<NaiveDate>, i64) {
    tokio::runtime::Runtime::new().unwrap().block_on(async {
        let pool = sqlx::SqlitePool::connect(&format!("sqlite://{}", db.display()))
            .await
            .unwrap();
        let job: (String, i64, i64) = sqlx::query_as(
            "SELECT state, dates_done, games_upserted FROM import_jobs WHERE id = 1",
        )
        .fetch_one(&pool)
        .await
        .unwrap();
        let done: Vec<NaiveDate> = sqlx::query_scalar(
            "SELECT date FROM import_job_dates WHERE job_id = 1 AND state = 'done'",
        )
        .fetch_all(&pool)
        .await
        .unwrap();
        let games: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM games")
            .fetch_one(&pool)
            .await
            .unwrap();
        pool.close().await;
        (job.0, job.1, job.2, done, games)
    })
}

/// An ESPN that fails 30 % of requests (500, 429, stalls past the timeout, truncated JSON):
/// a 60-day import requested once gives its failed dates further passes with backoff and
/// ends `succeeded` with every game stored once, through three SIGKILLs of the daemon.
#[test]
fn a_flaky_upstream_import_finishes_every_date_through_three_sigkills() {
    let espn = MockEspn::start();
    let dates: Vec<NaiveDate> = day("2024-01-01").iter_days().take(60).collect();
    for d in &dates {
        espn.serve(NBA, *d, generated_board(*d, 5));
    }
    espn.set_flaky(30);
    let env = [
        ("TIPOFF_LEAGUES", "nba"),
        ("TIPOFF_ESPN_BASE_URL", espn.base_url.as_str()),
        ("TIPOFF_IMPORT_CHECK_INTERVAL", "100ms"),
        ("TIPOFF_ESPN_CONCURRENCY", "4"),
        // One request per date and pass, so the passes do the retrying.
        ("TIPOFF_ESPN_ATTEMPTS", "1"),
        ("TIPOFF_ESPN_TIMEOUT", "300ms"),
        ("TIPOFF_IMPORT_ATTEMPTS", "12"),
        ("TIPOFF_POLLER_BACKOFF_BASE", "50ms"),
        ("TIPOFF_POLLER_BACKOFF_CAP", "400ms"),
        ("TIPOFF_IMPORT_SLICE", "1s"),
    ];
    let mut d = Daemon::spawn(&env);
    d.wait_notify("READY=1", Duration::from_secs(15));
    let job_of = import_60_days(&d);
    let mut retrying_seen = false;
    for kill_after in [10, 25, 40] {
        job_until(
            &d,
            Duration::from_secs(60),
            &job_of,
            |job| {
                retrying_seen |= job["dates_retrying"].as_i64().unwrap() > 0
                    && job["next_attempt_at"].is_string();
            },
            |job| job["dates_done"].as_i64().unwrap() >= kill_after,
        );
        d.child.kill().unwrap();
        d.child.wait().unwrap();
        let dir = std::mem::replace(&mut d.dir, tempfile::tempdir().unwrap());
        d = Daemon::spawn_in(dir, &env);
        d.wait_notify("READY=1", Duration::from_secs(15));
    }
    let job = ended_job(&d, Duration::from_secs(90), &job_of, |job| {
        retrying_seen |= job["dates_retrying"].as_i64().unwrap() > 0;
    });
    assert_eq!(job["state"], "succeeded", "{job}");
    assert_eq!(job["dates_done"], 60, "{job}");
    assert_eq!(job["dates_failed"], 0, "{job}");
    assert_eq!(job["dates_retrying"], 0, "{job}");
    assert!(job["next_attempt_at"].is_null(), "{job}");
    assert!(
        retrying_seen,
        "the job showed dates waiting for another pass"
    );
    let (_, dates_done, games_upserted, done, games) =
        left_behind(&d.dir.path().join("data/tipoff.db"));
    assert_eq!((dates_done, done.len()), (60, 60));
    assert_eq!(games, 300, "every game stored exactly once");
    assert!(games_upserted >= 300);
    let retried = dates.iter().filter(|d| espn.hits(NBA, **d) > 1).count();
    assert!(
        retried > 5,
        "faults made dates take more than one pass ({retried})"
    );
}

/// Polls a daemon's import job (`read`) until it has ended, showing each answer to `seen`.
fn ended_job(
    d: &Daemon,
    within: Duration,
    read: impl Fn(&Daemon) -> Value,
    seen: impl FnMut(&Value),
) -> Value {
    job_until(d, within, read, seen, |job| {
        job["state"] != "running" && job["state"] != "queued"
    })
}

/// Polls a daemon's import job (`read`) until `done` holds, showing each answer to `seen`.
fn job_until(
    d: &Daemon,
    within: Duration,
    read: impl Fn(&Daemon) -> Value,
    mut seen: impl FnMut(&Value),
    done: impl Fn(&Value) -> bool,
) -> Value {
    let deadline = Instant::now() + within;
    loop {
        let job = read(d);
        seen(&job);
        if done(&job) {
            return job;
        }
        assert!(
            Instant::now() < deadline,
            "the import did not get there in {within:?}: {job}\n{}",
            d.stderr()
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Asks `d` for an NBA import of 2024-01-01 … 2024-02-29 (202); answers a reader of that job
/// on any daemon of the same database.
fn import_60_days(d: &Daemon) -> impl Fn(&Daemon) -> Value {
    let http = reqwest::blocking::Client::new();
    let res = http
        .post(d.url("/admin/imports"))
        .bearer_auth(ADMIN_TOKEN)
        .json(&json!({"league": "nba", "from": "2024-01-01", "to": "2024-02-29"}))
        .send()
        .unwrap();
    assert_eq!(res.status(), 202);
    let job_url = format!("/admin/imports/{}", res.json::<Value>().unwrap()["id"]);
    move |d: &Daemon| {
        http.get(d.url(&job_url))
            .bearer_auth(ADMIN_TOKEN)
            .send()
            .unwrap()
            .json()
            .unwrap()
    }
}
