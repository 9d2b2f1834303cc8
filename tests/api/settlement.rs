//! Settlement that cannot be stalled, on both backends: stakes add up to positions, a market is
//! paid out set-based in its own transaction after its board commits, a crash between the two
//! is healed by the league's next pass, and the minimum stake is enforced.

use std::time::{Duration, Instant};

use chrono::Utc;
use serde_json::{json, Value};

use crate::crash::board;
use crate::espn_mock::MockEspn;
use crate::helpers::*;
use crate::money::{
    assert_audit, balance, fund, funded, open_market, post, register, tokens_setting,
};
use crate::seed::{seed_stakes, Seed};
use tipoff_actors::store::user_account;

const USERS: i64 = 1_000;
const STAKES_PER_POSITION: i64 = 50;

/// The market of the first game of [`board`] once the poller has stored it.
async fn first_market(app: &TestApp) -> (i64, Value) {
    let board: Value = serde_json::from_slice(&board(0)).unwrap();
    let first = board["events"][0]["id"].clone();
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let games = app.json("/api/v1/games?league=nba&limit=100").await;
        if let Some(g) = games["items"]
            .as_array()
            .and_then(|items| items.iter().find(|g| g["external_id"] == first))
        {
            return (g["market_id"].as_i64().unwrap(), g.clone());
        }
        assert!(
            Instant::now() < deadline,
            "the poller never stored the board"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// 100,000 one-unit stakes from 1,000 users (each backing both sides: 2,000 positions) on one
/// market; the game goes final on the mock ESPN; the next score pass settles and pays it, the
/// poller never restarts, and every unit is where the audit says.
async fn a_hundred_thousand_stakes_settle_within_one_score_pass(db: Db) {
    let espn = MockEspn::start();
    let today = (Utc::now() - chrono::Duration::hours(5)).date_naive();
    espn.serve("basketball/nba", today, board(0));
    let app = spawn_app(
        &db,
        &[
            ("TIPOFF_TOKENS", &tokens_setting()),
            ("TIPOFF_LEAGUES", "nba"),
            ("TIPOFF_ESPN_BASE_URL", &espn.base_url),
            ("TIPOFF_SCORE_LIVE_INTERVAL", "500ms"),
            ("TIPOFF_SCORE_IDLE_INTERVAL", "500ms"),
            ("TIPOFF_SCHEDULE_LOOKAHEAD_DAYS", "1"),
        ],
    )
    .await;
    let (market, game) = first_market(&app).await;
    assert_eq!(game["state"], "scheduled", "{game}");
    let stakes = seed_stakes(
        &app.store,
        &Seed {
            market_id: market,
            token: "usdc",
            users: USERS,
            stakes_per_position: STAKES_PER_POSITION,
            both_sides: true,
        },
    )
    .await;
    assert_eq!(stakes, 100_000);
    let before = assert_audit(&app).await;
    assert_eq!(before["tokens"][0]["escrow"], 100_000);

    // The first game goes final, home winning 5-3: every user gets back 50 + 50·0.98 = 99.
    let started = Instant::now();
    espn.serve("basketball/nba", today, board(1));
    let deadline = Instant::now() + Duration::from_secs(60);
    let settled = loop {
        let m = app.json(&format!("/api/v1/markets/{market}")).await;
        if m["state"] == "settled" && balance(&app.store, "house", "usdc").await > 0 {
            break m;
        }
        assert!(Instant::now() < deadline, "not paid within 60 s: {m}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    let took = started.elapsed();
    assert_eq!(settled["winning_outcome"], "home");
    // Losers' pool 50,000; fee 2 % = 1,000; 49,000 shared pro rata: 49 per winning position.
    assert_eq!(balance(&app.store, "house", "usdc").await, 1_000);
    let status = app
        .admin_get("/debug/status")
        .await
        .json::<Value>()
        .await
        .unwrap();
    let poller = service(&status, "poller:nba").expect("the poller row");
    assert_eq!(poller["restarts"], 0, "the poller restarted: {poller}");
    assert_eq!(poller["state"], "running", "{poller}");
    let after = assert_audit(&app).await;
    assert_eq!(after["tokens"][0]["escrow"], 0);
    assert_eq!(after["tokens"][0]["users"], 99_000);
    assert_eq!(after["tokens"][0]["house"], 1_000);
    eprintln!("100,000 stakes (2,000 positions) settled {took:?} after the board went final");
    app.stop().await;
}
both_backends!(a_hundred_thousand_stakes_settle_within_one_score_pass: hundred_thousand_stakes_sqlite, hundred_thousand_stakes_postgres);

/// Stakes of one user on one outcome in one token add up to one position; the stakes list
/// shows each stake's share of its position's payout; a stake below `TIPOFF_MIN_STAKE` is a
/// 400 naming the minimum and changes nothing.
async fn stakes_add_up_to_positions_and_small_stakes_are_refused(db: Db) {
    let app = spawn_app(
        &db,
        &[
            ("TIPOFF_TOKENS", &tokens_setting()),
            ("TIPOFF_MIN_STAKE", "usdc=10"),
        ],
    )
    .await;
    let (a, b) = (
        funded(&app, "usdc", 1000).await,
        funded(&app, "usdc", 1000).await,
    );
    fund(&app.store, "pump", &a, 5).await;
    let (market, game) = open_market(&app.store).await;
    let path = format!("/api/v1/markets/{market}/stakes");
    let stake = |who: &crate::money::Account, outcome: &str, amount: i64, token: &str| {
        post(
            &app,
            who,
            &path,
            json!({"outcome": outcome, "amount": amount, "token": token}),
        )
    };
    let (status, body) = stake(&a, "home", 9, "usdc").await;
    assert_eq!(status, 400, "{body}");
    let message = body["error"]["message"].as_str().unwrap();
    assert!(
        message.contains("minimum stake of 10") && message.contains("TIPOFF_MIN_STAKE"),
        "{message}"
    );
    // Tokens not named keep the default minimum of 1.
    assert_eq!(stake(&a, "home", 5, "pump").await.0, 201);
    for amount in [100, 200] {
        assert_eq!(stake(&a, "home", amount, "usdc").await.0, 201);
    }
    assert_eq!(stake(&b, "away", 300, "usdc").await.0, 201);
    let (_, positions) = crate::money::user_call(
        &app.client,
        &app.address,
        &a.key,
        reqwest::Method::GET,
        "/api/v1/me/positions",
        None,
    )
    .await;
    let items = positions["items"].as_array().unwrap();
    assert_eq!(items.len(), 2, "{positions}");
    let usdc = items.iter().find(|p| p["token"] == "usdc").unwrap();
    assert_eq!(usdc["amount"], "300");
    assert_eq!(usdc["stakes"], 2);
    assert_eq!(usdc["payout"], Value::Null);
    assert_eq!(balance(&app.store, &user_account(a.id), "usdc").await, 700);

    // Home wins: losers' pool 300, fee 6, 294 to a's position: 594. Her two stakes show their
    // shares of it (198 and 396).
    app.store
        .upsert_game("mlb", &crate::money::finished(game, "home"), Utc::now())
        .await
        .unwrap();
    assert_eq!(
        balance(&app.store, &user_account(a.id), "usdc").await,
        700 + 594
    );
    let (_, stakes) = crate::money::user_call(
        &app.client,
        &app.address,
        &a.key,
        reqwest::Method::GET,
        "/api/v1/me/stakes",
        None,
    )
    .await;
    let payouts: Vec<&str> = stakes["items"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|s| s["token"] == "usdc")
        .map(|s| s["payout"].as_str().unwrap())
        .collect();
    assert_eq!(payouts, vec!["396", "198"]);
    let (_, positions) = crate::money::user_call(
        &app.client,
        &app.address,
        &a.key,
        reqwest::Method::GET,
        "/api/v1/me/positions",
        None,
    )
    .await;
    let usdc = positions["items"]
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p["token"] == "usdc")
        .unwrap()
        .clone();
    assert_eq!(usdc["payout"], "594");
    // The pump position had nobody against it: refunded.
    assert_eq!(balance(&app.store, &user_account(a.id), "pump").await, 5);
    assert_audit(&app).await;
    app.stop().await;
}
both_backends!(stakes_add_up_to_positions_and_small_stakes_are_refused: positions_sqlite, positions_postgres);

/// A crash after the board that closed a market committed but before its payout: the market is
/// settled and unpaid (the audit accepts it: its escrow still holds every position), and the
/// league's next board pays it, once.
async fn a_market_closed_but_unpaid_is_paid_by_the_next_pass(db: Db) {
    let app = spawn_app(&db, &[("TIPOFF_TOKENS", &tokens_setting())]).await;
    let a = register(&app.client, &app.address).await;
    let b = register(&app.client, &app.address).await;
    fund(&app.store, "usdc", &a, 100).await;
    fund(&app.store, "usdc", &b, 100).await;
    let (market, game) = open_market(&app.store).await;
    for (who, outcome) in [(&a, "home"), (&b, "away")] {
        let (status, body) = crate::money::user_call(
            &app.client,
            &app.address,
            &who.key,
            reqwest::Method::POST,
            &format!("/api/v1/markets/{market}/stakes"),
            Some(json!({"outcome": outcome, "amount": 100, "token": "usdc"})),
        )
        .await;
        assert_eq!(status, 201, "{body}");
    }
    // What the board's own transaction commits, without the payout that follows it.
    let sql = "UPDATE markets SET state = 'settled', winning_outcome = 'home', settled_at = $1 WHERE id = $2";
    match &app.store {
        tipoff_actors::Store::Sqlite(pool, _) => {
            sqlx::query(sql)
                .bind(Utc::now())
                .bind(market)
                .execute(pool)
                .await
                .unwrap();
        }
        tipoff_actors::Store::Postgres(pool, _) => {
            sqlx::query(sql)
                .bind(Utc::now())
                .bind(market)
                .execute(pool)
                .await
                .unwrap();
        }
    }
    let audit = assert_audit(&app).await;
    assert_eq!(audit["tokens"][0]["escrow"], 200);
    // Another game of the league goes through a board: the unpaid market is paid.
    open_market(&app.store).await;
    assert_eq!(balance(&app.store, &user_account(a.id), "usdc").await, 198);
    assert_eq!(balance(&app.store, "house", "usdc").await, 2);
    // Seen again: nothing more.
    app.store
        .upsert_game("mlb", &crate::money::finished(game, "home"), Utc::now())
        .await
        .unwrap();
    assert_eq!(balance(&app.store, &user_account(a.id), "usdc").await, 198);
    let audit = assert_audit(&app).await;
    assert_eq!(audit["tokens"][0]["escrow"], 0);
    app.stop().await;
}
both_backends!(a_market_closed_but_unpaid_is_paid_by_the_next_pass: unpaid_sqlite, unpaid_postgres);

/// A scheduled game of `league` (constructed from a real one), starting in two hours.
async fn game_of(app: &TestApp, league: &str) -> (i64, tipoff_actors::espn::ScoreboardGame) {
    let (market, mut game) = open_market(&app.store).await;
    if league == "mlb" {
        return (market, game);
    }
    game.external_id = format!("{league}-{}", uuid::Uuid::new_v4().simple());
    let up = app
        .store
        .upsert_game(league, &game, Utc::now())
        .await
        .unwrap();
    (up.market_id, game)
}

/// Deadlock hunt on PostgreSQL: rounds in which two leagues settle markets whose winners are
/// the same users, while 32 clients stake on other markets and deposit windows credit those
/// users in descending order. Every stake answers 201, every settlement and credit succeeds
/// (a deadlock the lock order missed would be retried inside the store, never surfaced), and
/// the audit holds.
#[actix_rt::test]
async fn deadlock_hunt_two_leagues_settle_while_clients_stake_and_deposits_land() {
    let Some(url) = postgres_db("deadlock_hunt").await else {
        return;
    };
    let app = spawn_app(
        &Db::Postgres(url),
        &[
            ("TIPOFF_TOKENS", &tokens_setting()),
            ("TIPOFF_DB_MAX_CONNECTIONS", "48"),
        ],
    )
    .await;
    let mut users = Vec::new();
    for _ in 0..16 {
        let u = register(&app.client, &app.address).await;
        fund(&app.store, "usdc", &u, 1_000_000).await;
        users.push(u);
    }
    let users = std::sync::Arc::new(users);
    let mut open = Vec::new();
    for _ in 0..4 {
        open.push(open_market(&app.store).await.0);
    }
    let stake_on = |who: usize, market: i64, outcome: &'static str| {
        let (client, base, key) = (
            app.client.clone(),
            app.address.clone(),
            users[who].key.clone(),
        );
        async move {
            crate::money::user_call(
                &client,
                &base,
                &key,
                reqwest::Method::POST,
                &format!("/api/v1/markets/{market}/stakes"),
                Some(json!({"outcome": outcome, "amount": 1, "token": "usdc"})),
            )
            .await
        }
    };
    for round in 0..4 {
        // Each league gets markets every user backs on both sides: all share the winners.
        let mut boards: Vec<(&str, Vec<tipoff_actors::espn::ScoreboardGame>)> = Vec::new();
        for league in ["mlb", "nba"] {
            let mut games = Vec::new();
            for _ in 0..4 {
                let (market, game) = game_of(&app, league).await;
                for who in 0..users.len() {
                    for outcome in ["home", "away"] {
                        let (status, body) = stake_on(who, market, outcome).await;
                        assert_eq!(status, 201, "{body}");
                    }
                }
                games.push(crate::money::finished(game, "home"));
            }
            boards.push((league, games));
        }
        let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let mut clients = Vec::new();
        for c in 0..32usize {
            let (stop, open) = (stop.clone(), open.clone());
            let (client, base, key) = (
                app.client.clone(),
                app.address.clone(),
                users[(c * 7 + round) % users.len()].key.clone(),
            );
            clients.push(tokio::spawn(async move {
                stake_until(&stop, &client, &base, &key, &open, c).await
            }));
        }
        let depositor = {
            let (store, users, stop) = (app.store.clone(), users.clone(), stop.clone());
            tokio::spawn(async move { deposit_until(&store, &users, &stop).await })
        };
        let settlements: Vec<_> = boards
            .into_iter()
            .map(|(league, games)| {
                let store = app.store.clone();
                tokio::spawn(async move {
                    store
                        .upsert_games(league, None, &games, Utc::now(), 200)
                        .await
                        .expect("a settlement failed")
                })
            })
            .collect();
        for s in settlements {
            let done = s.await.unwrap();
            assert!(done.iter().all(|u| matches!(
                u.transition,
                tipoff_actors::store::MarketTransition::Settled("home")
            )));
        }
        stop.store(true, std::sync::atomic::Ordering::Relaxed);
        let mut stakes = 0;
        for c in clients {
            stakes += c.await.unwrap();
        }
        let windows = depositor.await.unwrap();
        eprintln!("round {round}: {stakes} client stakes and {windows} deposit windows during two leagues' settlements");
    }
    let audit = assert_audit(&app).await;
    assert!(
        audit["tokens"][0]["escrow"].as_i64().unwrap() > 0,
        "the open markets hold the clients' stakes"
    );
    for league in ["mlb", "nba"] {
        let unpaid = app.store.unpaid_markets(league, 10).await.unwrap();
        assert!(
            unpaid.is_empty(),
            "{league} markets left unpaid: {unpaid:?}"
        );
    }
    app.stop().await;
}

/// One client staking `away` on the open markets in turn until `stop` (at least once).
async fn stake_until(
    stop: &std::sync::atomic::AtomicBool,
    client: &reqwest::Client,
    base: &str,
    key: &str,
    open: &[i64],
    c: usize,
) -> usize {
    let mut n = 0;
    while !stop.load(std::sync::atomic::Ordering::Relaxed) || n == 0 {
        let market = open[(c + n) % open.len()];
        let (status, body) = crate::money::user_call(
            client,
            base,
            key,
            reqwest::Method::POST,
            &format!("/api/v1/markets/{market}/stakes"),
            Some(json!({"outcome": "away", "amount": 1, "token": "usdc"})),
        )
        .await;
        assert_eq!(status, 201, "a client's stake failed: {body}");
        n += 1;
    }
    n
}

/// Deposit windows credited to every user until `stop` (at least one); how many.
async fn deposit_until(
    store: &tipoff_actors::Store,
    users: &[crate::money::Account],
    stop: &std::sync::atomic::AtomicBool,
) -> usize {
    let mut windows = 0;
    while !stop.load(std::sync::atomic::Ordering::Relaxed) || windows == 0 {
        let window: Vec<tipoff_actors::store::IncomingDeposit> = users
            .iter()
            .rev()
            .map(|u| tipoff_actors::store::IncomingDeposit {
                signature: crate::rpc_mock::constructed_signature(
                    "D",
                    uuid::Uuid::new_v4().as_u64_pair().0,
                ),
                slot: 1,
                amount: 3,
                memo: Some(u.code.clone()),
            })
            .collect();
        let done = store
            .credit_deposits("usdc", &window, None, Utc::now())
            .await
            .expect("a deposit window failed");
        assert_eq!(done.attributed, window.len());
        windows += 1;
    }
    windows
}
