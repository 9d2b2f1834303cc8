//! Settlement at scale: one market with 100,000 positions (100,000 users, one one-unit stake
//! each, half on each side), then its game goes final.
//!
//! `cargo bench --bench settlement` (release build), on SQLite (a fresh file) and, when
//! `TIPOFF_TEST_POSTGRES_URL` is set, on PostgreSQL (a fresh database). `POSITIONS=` sets the
//! number of positions (default 100,000). The state is seeded by SQL set statements (see
//! `tests/api/seed.rs`: the rows `place_stake` writes), then timed: the board's upsert that
//! settles the market, which commits and then pays it out in its own transaction (every
//! position, balance and ledger leg set-based). The audit must hold before and after.

#[path = "../tests/api/seed.rs"]
mod seed;

mod common;

use std::time::Instant;

use chrono::Utc;
use tipoff_actors::espn::{parse_scoreboard, GameState};
use tipoff_actors::{Store, StoreOptions};

async fn settle(label: &str, url: &str, positions: i64) {
    let store = Store::connect(url, &StoreOptions::default()).await.unwrap();
    store.migrate().await.unwrap();
    store.reconcile_catalog().await.unwrap();
    let fixture = std::fs::read(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../shared/fixtures/espn/mlb-scoreboard-20250928.json"
    ))
    .expect("the shared ESPN fixtures beside the project");
    let mut game = parse_scoreboard(&fixture).unwrap().remove(0);
    game.starts_at = Utc::now() + chrono::Duration::hours(2);
    let market = store
        .upsert_game("mlb", &game, Utc::now())
        .await
        .unwrap()
        .market_id;
    let seeded = Instant::now();
    seed::seed_stakes(
        &store,
        &seed::Seed {
            market_id: market,
            token: "usdc",
            users: positions,
            stakes_per_position: 1,
            both_sides: false,
        },
    )
    .await;
    let seeding = seeded.elapsed();
    let audit = store.audit().await.unwrap();
    assert!(audit.problems.is_empty(), "{:?}", audit.problems);
    assert_eq!(audit.tokens[0].escrow, positions);

    game.state = GameState::Final;
    game.home.score = Some(5);
    game.away.score = Some(3);
    game.home.winner = Some(true);
    game.away.winner = Some(false);
    let started = Instant::now();
    store
        .upsert_games("mlb", None, std::slice::from_ref(&game), Utc::now(), 200)
        .await
        .unwrap();
    let took = started.elapsed();
    let audit = store.audit().await.unwrap();
    assert!(audit.problems.is_empty(), "{:?}", audit.problems);
    assert_eq!(audit.tokens[0].escrow, 0);
    assert!(store.unpaid_markets("mlb", 10).await.unwrap().is_empty());
    println!(
        "{label}: {positions} positions on one market: seeded in {:.1} s; settled and paid in {:.0} ms (board commit + payout transaction); audit ok (house {}, users {})",
        seeding.as_secs_f64(),
        took.as_secs_f64() * 1000.0,
        audit.tokens[0].house,
        audit.tokens[0].users,
    );
    store.close().await;
}

fn main() {
    let positions: i64 = std::env::var("POSITIONS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(100_000);
    common::print_machine();
    actix_rt::System::new().block_on(async {
        let dir = tempfile::tempdir().unwrap();
        let url = format!("sqlite://{}", dir.path().join("settle.db").display());
        settle("sqlite", &url, positions).await;
        match common::postgres_url("settlement").await {
            Some(url) => settle("postgres", &url, positions).await,
            None => println!("postgres: SKIPPED (set TIPOFF_TEST_POSTGRES_URL)"),
        }
    });
}
