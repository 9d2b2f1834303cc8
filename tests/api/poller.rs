//! The poller actor driven one pass at a time ([`RunOnce`]) with an injected clock: the score
//! loop's pace follows the games (live, starting soon, idle) and backs off while ESPN fails.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use actix::Actor;
use chrono::{DateTime, Utc};
use tipoff_actors::espn::EspnClient;
use tipoff_actors::poller::{Poller, PollerSettings, RunOnce, Work};
use tipoff_actors::service::{ServiceCtx, Shared, Telemetry};

use crate::espn_mock::{espn_fixture, generated_board, with_status, MockEspn, Reply};
use crate::helpers::*;
use crate::imports::{day, NBA};

fn at(text: &str) -> DateTime<Utc> {
    DateTime::parse_from_rfc3339(text)
        .unwrap()
        .with_timezone(&Utc)
}

#[actix_rt::test]
async fn the_score_loop_runs_at_the_live_pace_while_games_are_live_or_imminent_and_idles_otherwise()
{
    let espn = MockEspn::start();
    let board = day("2026-02-24");
    let real = espn_fixture("nba-scoreboard-20260224.json");
    espn.serve(NBA, board, real.clone());
    let now = Arc::new(Mutex::new(at("2026-02-24T23:00:00Z")));
    let (poller, telemetry, _dir) = manual_poller(&espn, &now).await;
    let run = |work| run_once(poller.clone(), work);
    let reported = || {
        let t = telemetry.lock().unwrap();
        (t.interval, t.interval_reason.clone().unwrap_or_default())
    };

    // The schedule pass reads yesterday … today + 7 (ESPN's day is 2026-02-24 at 23:00 UTC).
    let out = run(Work::Schedule).await;
    assert_eq!(out.dates_fetched, 9);
    assert_eq!(out.created, 11);

    // PHI @ IND is live: the live pace.
    let out = run(Work::Scores).await;
    let pace = out.pace.unwrap();
    assert_eq!(pace.interval, Duration::from_secs(60));
    assert_eq!(pace.reason, "live games (1): 1m");
    assert_eq!(
        reported(),
        (
            Some(Duration::from_secs(60)),
            "live games (1): 1m".to_string()
        )
    );

    // Two days later the game is final (CONSTRUCTED board). Its board is not today's or
    // yesterday's any more, but it is refetched because the game was live; then the pace idles.
    *now.lock().unwrap() = at("2026-02-26T10:00:00Z");
    let hits = espn.hits(NBA, board);
    espn.serve(
        NBA,
        board,
        with_status(
            &real,
            "401810686",
            "STATUS_FINAL",
            "post",
            true,
            Some((118, 110)),
        ),
    );
    let out = run(Work::Scores).await;
    assert_eq!(
        espn.hits(NBA, board),
        hits + 1,
        "the live game's board was read"
    );
    assert_eq!(out.settled, 1);
    let pace = out.pace.unwrap();
    assert_eq!(pace.interval, Duration::from_secs(15 * 60));
    assert_eq!(pace.reason, "no live games: 15m");
    assert_eq!(reported().0, Some(Duration::from_secs(15 * 60)));

    // Ten minutes before four games tip off at 00:30 UTC: the live pace again.
    *now.lock().unwrap() = at("2026-02-25T00:20:00Z");
    let pace = run(Work::Scores).await.pace.unwrap();
    assert_eq!(pace.interval, Duration::from_secs(60));
    assert_eq!(pace.reason, "games starting within 15m (4): 1m");

    // ESPN fails: the pass absorbs it and the loop backs off (base 2 m, doubling).
    espn.script(NBA, day("2026-02-23"), vec![Reply::status(500)]);
    espn.script(NBA, board, vec![Reply::status(500)]);
    let out = run(Work::Scores).await;
    assert_eq!(out.failures.len(), 2);
    assert_eq!(
        reported(),
        (
            Some(Duration::from_secs(120)),
            "ESPN failing (1 in a row): 2m".to_string()
        )
    );
    run(Work::Scores).await;
    assert_eq!(
        reported(),
        (
            Some(Duration::from_secs(240)),
            "ESPN failing (2 in a row): 4m".to_string()
        )
    );
    let last_error = telemetry
        .lock()
        .unwrap()
        .last_error
        .clone()
        .expect("error recorded");
    assert!(
        last_error.message.contains("2 of 2 scoreboards failed"),
        "{}",
        last_error.message
    );

    // ESPN is back: the normal pace returns.
    espn.serve(NBA, board, real);
    espn.serve(
        NBA,
        day("2026-02-23"),
        espn_fixture("nba-scoreboard-20260218-empty.json"),
    );
    let pace = run(Work::Scores).await.pace.unwrap();
    assert_eq!(pace.interval, Duration::from_secs(60));
    assert_eq!(
        reported().1,
        "live games (1): 1m",
        "the live game is live again on the real board"
    );
}

/// One pass of `work`, run by hand.
async fn run_once(poller: actix::Addr<Poller>, work: Work) -> tipoff_actors::poller::Outcome {
    poller
        .send(RunOnce(work))
        .await
        .expect("poller answers")
        .expect("pass runs")
}

/// A `poller:nba` on a fresh SQLite store, on the clock `now`, passes run by hand (`RunOnce`),
/// one attempt per board and a 2 min backoff base.
async fn manual_poller(
    espn: &MockEspn,
    now: &Arc<Mutex<DateTime<Utc>>>,
) -> (
    actix::Addr<Poller>,
    Arc<Mutex<Telemetry>>,
    tempfile::TempDir,
) {
    let dir = tempfile::tempdir().unwrap();
    let store = fresh_store(&Db::Sqlite, dir.path()).await;
    let clock = now.clone();
    let settings = PollerSettings {
        clock: Arc::new(move || *clock.lock().unwrap()),
        fetch_attempts: 1,
        backoff_base: Duration::from_secs(120),
        ..PollerSettings::default()
    };
    let telemetry = Arc::new(Mutex::new(Telemetry {
        generation: 1,
        ..Telemetry::default()
    }));
    let svc = ServiceCtx::new(
        "poller:nba",
        1,
        telemetry.clone(),
        Arc::new(Shared::default()),
    );
    let client = EspnClient::new(
        &espn.base_url,
        Duration::from_secs(2),
        Duration::from_secs(5),
        "test",
    )
    .unwrap();
    let poller = Poller::new("nba", NBA, store, client, settings, svc)
        .manual()
        .start();
    (poller, telemetry, dir)
}

/// The settled market of the game with ESPN id `event`, if it is settled.
async fn settled_market_of(store: &tipoff_actors::Store, event: &str) -> bool {
    use tipoff_actors::store::{GameFilter, MarketFilter};
    let games = store
        .games(&GameFilter {
            limit: 200,
            ..Default::default()
        })
        .await
        .unwrap();
    let Some(game) = games.iter().find(|g| g.external_id == event) else {
        return false;
    };
    let markets = store
        .markets(&MarketFilter {
            state: Some("settled".into()),
            limit: 200,
            ..Default::default()
        })
        .await
        .unwrap();
    markets.iter().any(|m| m.game_id == game.id)
}

/// While a 366-day import and a schedule pass crawl through a slow ESPN (2–3 s a board), a
/// live game that goes final is settled within about one live interval: the score loop runs
/// beside them, on its own timer, and takes none of their shared fetch slots.
#[actix_rt::test]
async fn a_final_game_settles_within_a_live_interval_while_an_import_and_a_schedule_pass_run() {
    let espn = MockEspn::start();
    let board = day("2024-01-29");
    let fixture = espn_fixture("nba-scoreboard-20240129.json");
    let live = with_status(
        &fixture,
        "401585287",
        "STATUS_IN_PROGRESS",
        "in",
        false,
        None,
    );
    let finished = with_status(
        &fixture,
        "401585287",
        "STATUS_FINAL",
        "post",
        true,
        Some((110, 99)),
    );
    espn.serve(NBA, board, live);
    // The schedule pass's days ahead and every import date are slow.
    for d in board.succ_opt().unwrap().iter_days().take(7) {
        espn.script(
            NBA,
            d,
            vec![Reply::ok(generated_board(d, 1)).delayed(Duration::from_secs(3))],
        );
    }
    let year: Vec<_> = day("2023-01-01").iter_days().take(366).collect();
    for d in &year {
        espn.script(
            NBA,
            *d,
            vec![Reply::ok(generated_board(*d, 1)).delayed(Duration::from_secs(2))],
        );
    }
    let dir = tempfile::tempdir().unwrap();
    let store = fresh_store(&Db::Sqlite, dir.path()).await;
    let now = at("2024-01-29T23:00:00Z");
    let (job, _) = store
        .create_import("nba", year[0], year[365], now)
        .await
        .unwrap();
    let settings = PollerSettings {
        clock: Arc::new(move || now),
        live_interval: Duration::from_millis(400),
        idle_interval: Duration::from_millis(400),
        import_check_interval: Duration::from_millis(100),
        concurrency: 2,
        fetch_attempts: 1,
        ..PollerSettings::default()
    };
    let shared = Arc::new(Shared::default());
    shared.set_db_healthy(true);
    let telemetry = Arc::new(Mutex::new(Telemetry {
        generation: 1,
        ..Telemetry::default()
    }));
    let svc = ServiceCtx::new("poller:nba", 1, telemetry, shared);
    let client = EspnClient::new(
        &espn.base_url,
        Duration::from_secs(2),
        Duration::from_secs(10),
        "test",
    )
    .unwrap();
    let poller = Poller::new("nba", NBA, store.clone(), client, settings, svc).start();

    // The first score pass sees the game live (and settles the board's finished games).
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while espn.hits(NBA, board) < 2 {
        assert!(
            std::time::Instant::now() < deadline,
            "the score loop did not run"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(
        !settled_market_of(&store, "401585287").await,
        "live, not settled yet"
    );
    espn.serve(NBA, board, finished);
    let went_final = std::time::Instant::now();
    while !settled_market_of(&store, "401585287").await {
        assert!(
            went_final.elapsed() < Duration::from_secs(2),
            "not settled within 2 s of going final (live interval 400 ms)"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let took = went_final.elapsed();
    // The slow passes were still under way: the schedule pass has not read its last day, the
    // import has most of its year ahead.
    let last_ahead = board.succ_opt().unwrap().iter_days().nth(6).unwrap();
    assert_eq!(
        espn.hits(NBA, last_ahead),
        0,
        "the schedule pass was still running"
    );
    let job = store.import_job(job.id).await.unwrap();
    assert_eq!(job.state, "running", "{job:?}");
    assert!(job.dates_done < 100, "{job:?}");
    eprintln!(
        "settled {took:?} after going final, beside an import ({} dates done) and a schedule pass",
        job.dates_done
    );
    poller.do_send(tipoff_actors::service::Control::Stop);
}
