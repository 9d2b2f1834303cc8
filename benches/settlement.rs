//! Settlement at scale: one market with 1,000 to 100,000 positions (one user each, one one-unit stake,
//! half on each side), then its game goes final.
//!
//! `cargo bench --bench settlement` (release build), on SQLite (a fresh file) and, when
//! `TIPOFF_TEST_POSTGRES_URL` is set, on PostgreSQL (a fresh database). `POSITIONS=` sets the
//! numbers of positions, comma separated (default 1,000, 10,000 and 100,000). Each size also
//! times a read of the market's pools (what every read of the market costs). The state is seeded by SQL set statements (see
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
    // A read of the market's pools, as every market read makes: the median of 200.
    let mut reads: Vec<std::time::Duration> = Vec::with_capacity(200);
    for _ in 0..200 {
        let started = Instant::now();
        let pools = store.market_pools(&[market]).await.unwrap();
        reads.push(started.elapsed());
        assert_eq!(pools.len(), 2, "both sides staked: {pools:?}");
    }
    reads.sort();
    let read = reads[reads.len() / 2];
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
        "{label}: {positions} positions on one market: seeded in {:.1} s; its pools read in {:.0} µs (median); settled and paid in {:.0} ms (board commit + payout transaction); audit ok (house {}, users {})",
        seeding.as_secs_f64(),
        read.as_secs_f64() * 1e6,
        took.as_secs_f64() * 1000.0,
        audit.tokens[0].house,
        audit.tokens[0].users,
    );
    store.close().await;
}

fn main() {
    let sizes: Vec<i64> = std::env::var("POSITIONS")
        .unwrap_or_else(|_| "1000,10000,100000".into())
        .split(',')
        .map(|s| {
            s.trim()
                .parse()
                .expect("POSITIONS: whole numbers, comma separated")
        })
        .collect();
    common::print_machine();
    actix_rt::System::new().block_on(async {
        let dir = tempfile::tempdir().unwrap();
        for &positions in &sizes {
            let url = format!(
                "sqlite://{}",
                dir.path().join(format!("settle-{positions}.db")).display()
            );
            settle("sqlite", &url, positions).await;
        }
        for &positions in &sizes {
            match common::postgres_url(&format!("settlement{positions}")).await {
                Some(url) => settle("postgres", &url, positions).await,
                None => println!("postgres: SKIPPED (set TIPOFF_TEST_POSTGRES_URL)"),
            }
        }
    });
}
