//! Games and markets on both backends: idempotent upserts from the real ESPN fixtures, markets
//! locked, settled and voided exactly once, and the read API over them.

use chrono::{Duration, Utc};
use serde_json::Value;
use tipoff_actors::espn::{parse_scoreboard, GameState};
use tipoff_actors::store::{GameFilter, MarketFilter, MarketTransition};

use crate::helpers::*;

async fn a_scoreboard_imported_twice_creates_each_game_and_market_once(db: Db) {
    let dir = tempfile::tempdir().unwrap();
    let store = fresh_store(&db, dir.path()).await;
    let games = parse_scoreboard(&espn_fixture("nba-scoreboard-20240129.json")).unwrap();
    let now = Utc::now();
    for g in &games {
        let up = store.upsert_game("nba", g, now).await.unwrap();
        assert!(up.created);
        let expected = if g.home.score > g.away.score {
            "home"
        } else {
            "away"
        };
        assert_eq!(
            up.transition,
            MarketTransition::Settled(expected),
            "{}",
            g.short_name
        );
    }
    for g in &games {
        let up = store.upsert_game("nba", g, now).await.unwrap();
        assert!(!up.created && !up.updated, "{}", g.short_name);
        assert_eq!(
            up.transition,
            MarketTransition::Unchanged,
            "a settled market is never settled again"
        );
    }
    let all = store
        .games(&GameFilter {
            limit: 100,
            ..Default::default()
        })
        .await
        .unwrap();
    assert_eq!(all.len(), 12);
    let markets = store
        .markets(&MarketFilter {
            limit: 100,
            ..Default::default()
        })
        .await
        .unwrap();
    assert_eq!(markets.len(), 12);
    for g in &all {
        let m = store
            .market(g.market_id.expect("one market per game"))
            .await
            .unwrap();
        assert_eq!(m.state, "settled");
        let home_won = g.home_score > g.away_score;
        assert_eq!(
            m.winning_outcome.as_deref(),
            Some(if home_won { "home" } else { "away" })
        );
        assert_eq!(m.question, format!("Who wins {}?", g.short_name));
    }
}

both_backends!(a_scoreboard_imported_twice_creates_each_game_and_market_once:
    a_scoreboard_imported_twice_creates_each_game_and_market_once_on_sqlite, a_scoreboard_imported_twice_creates_each_game_and_market_once_on_postgres);

async fn markets_lock_at_start_void_when_postponed_and_are_never_resettled(db: Db) {
    let dir = tempfile::tempdir().unwrap();
    let store = fresh_store(&db, dir.path()).await;
    // Constructed from a real scheduled game: the fixtures hold no postponed game.
    let mut game = parse_scoreboard(&espn_fixture("mlb-scoreboard-20250928.json"))
        .unwrap()
        .remove(0);
    let before_start = game.starts_at - Duration::hours(1);
    let up = store.upsert_game("mlb", &game, before_start).await.unwrap();
    assert_eq!(up.transition, MarketTransition::Unchanged);
    assert_eq!(store.market(up.market_id).await.unwrap().state, "open");

    let up = store
        .upsert_game("mlb", &game, game.starts_at + Duration::minutes(1))
        .await
        .unwrap();
    assert_eq!(
        up.transition,
        MarketTransition::Locked,
        "a market locks at the game's start"
    );

    game.state = GameState::Postponed;
    game.status_detail = "Postponed".into();
    let up = store.upsert_game("mlb", &game, Utc::now()).await.unwrap();
    assert!(up.updated);
    assert_eq!(up.transition, MarketTransition::Voided);
    assert_eq!(store.market(up.market_id).await.unwrap().state, "void");

    game.state = GameState::Final;
    game.home.score = Some(5);
    game.away.score = Some(3);
    game.home.winner = Some(true);
    let up = store.upsert_game("mlb", &game, Utc::now()).await.unwrap();
    assert_eq!(up.transition, MarketTransition::IgnoredAfterSettlement);
    let m = store.market(up.market_id).await.unwrap();
    assert_eq!(
        (m.state.as_str(), m.winning_outcome),
        ("void", None),
        "a closed market is never re-settled"
    );

    let live = parse_scoreboard(&espn_fixture("nba-scoreboard-20260224.json")).unwrap();
    let live = live.iter().find(|g| g.state == GameState::Live).unwrap();
    let up = store.upsert_game("nba", live, Utc::now()).await.unwrap();
    assert_eq!(up.transition, MarketTransition::Locked);
}

both_backends!(markets_lock_at_start_void_when_postponed_and_are_never_resettled:
    markets_lock_at_start_void_when_postponed_and_are_never_resettled_on_sqlite, markets_lock_at_start_void_when_postponed_and_are_never_resettled_on_postgres);

async fn the_read_api_lists_filters_and_pages_games_and_markets(db: Db) {
    let app = spawn_app(&db, &[("TIPOFF_LEAGUES", "nba")]).await;
    let now = Utc::now();
    for (league, file) in [
        ("nba", "nba-scoreboard-20240129.json"),
        ("mlb", "mlb-scoreboard-20250927.json"),
    ] {
        for g in parse_scoreboard(&espn_fixture(file)).unwrap() {
            app.store.upsert_game(league, &g, now).await.unwrap();
        }
    }
    let leagues: Value = app.get("/api/v1/leagues").await.json().await.unwrap();
    let nba = leagues["items"]
        .as_array()
        .unwrap()
        .iter()
        .find(|l| l["key"] == "nba")
        .unwrap()
        .clone();
    assert_eq!(nba["enabled"], true);
    assert_eq!(nba["espn_path"], "basketball/nba");

    pages_of_5_walk_every_game_once(&app).await;

    let finals: Value = app
        .get("/api/v1/games?league=nba&state=final&date=2024-01-30")
        .await
        .json()
        .await
        .unwrap();
    let items = finals["items"].as_array().unwrap();
    assert!(
        !items.is_empty()
            && items
                .iter()
                .all(|g| g["league"] == "nba" && g["state"] == "final")
    );
    let game = &items[0];
    for field in [
        "id",
        "league",
        "external_id",
        "name",
        "short_name",
        "starts_at",
        "state",
        "home",
        "away",
        "market_id",
    ] {
        assert!(game.get(field).is_some(), "game lacks {field}: {game}");
    }
    assert!(game["home"]["abbreviation"].is_string() && game["home"]["score"].is_i64());
    let delayed: Value = app
        .get("/api/v1/games?state=delayed")
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(delayed["items"][0]["short_name"], "CHW @ WSH");

    let one: Value = app
        .get(&format!("/api/v1/games/{}", game["id"]))
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(one["id"], game["id"]);
    let market: Value = app
        .get(&format!("/api/v1/markets/{}", game["market_id"]))
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(market["state"], "settled");
    assert_eq!(market["outcomes"][0]["key"], "home");
    assert_eq!(market["outcomes"][1]["key"], "away");
    assert_eq!(market["outcomes"][0]["pool"], serde_json::json!({}));
    assert!(market["winning_outcome"].is_string());

    let settled: Value = app
        .get("/api/v1/markets?state=settled&league=nba&limit=200")
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(settled["items"].as_array().unwrap().len(), 12);
    assert!(settled["next"].is_null());

    for (path, needle) in [
        ("/api/v1/games?state=exploded", "state"),
        ("/api/v1/games?date=2024-13-01", "date"),
        ("/api/v1/games?limit=0", "limit"),
        ("/api/v1/games?cursor=zzz", "cursor"),
        ("/api/v1/markets?state=maybe", "state"),
    ] {
        let res = app.get(path).await;
        assert_eq!(res.status(), 400, "{path}");
        let body: Value = res.json().await.unwrap();
        assert!(
            body["error"]["message"].as_str().unwrap().contains(needle),
            "{path}: {body}"
        );
    }
    assert_eq!(app.get("/api/v1/games/999999").await.status(), 404);
    assert_eq!(app.get("/api/v1/markets/999999").await.status(), 404);
    app.stop().await;
}

/// Pages of 5 walk all 27 games once, in a stable order.
async fn pages_of_5_walk_every_game_once(app: &TestApp) {
    let mut seen = Vec::new();
    let mut next = String::new();
    loop {
        let page: Value = app
            .get(&format!("/api/v1/games?limit=5{next}"))
            .await
            .json()
            .await
            .unwrap();
        for g in page["items"].as_array().unwrap() {
            seen.push(g["id"].as_i64().unwrap());
        }
        match page["next"].as_str() {
            Some(cursor) => next = format!("&cursor={cursor}"),
            None => break,
        }
    }
    assert_eq!(seen.len(), 27);
    let mut unique = seen.clone();
    unique.sort();
    unique.dedup();
    assert_eq!(unique.len(), 27, "no game twice across pages");
}

both_backends!(the_read_api_lists_filters_and_pages_games_and_markets:
    the_read_api_lists_filters_and_pages_games_and_markets_on_sqlite, the_read_api_lists_filters_and_pages_games_and_markets_on_postgres);
