//! The money path on both backends, through the HTTP API: users and keys, stakes, parimutuel
//! settlement by the market's own upsert, refunds, withdrawals and their expiry, races, and
//! bad input that must change nothing. Every test ends with the ledger audit.

use chrono::{Duration, Utc};
use serde_json::{json, Value};
use tipoff_actors::cleanup::{sweep, CleanupSettings};
use tipoff_actors::espn::{parse_scoreboard, GameState, ScoreboardGame};
use tipoff_actors::store::{user_account, IncomingDeposit};
use tipoff_actors::Store;

use crate::helpers::*;
use crate::rpc_mock::constructed_signature;

pub const USDC_MINT: &str = "EPjFWdd5AufqSSqeM2qN1xzybapC8G4wEGGkZwyTDt1v";
/// The treasury of the real USDC transfer fixture (its destination token account).
pub const USDC_TREASURY: &str = "H51DXRt3ubThhdhNeDMScfkbC5X4AWzYfHaZS3JKEfPh";
pub const PUMP_MINT: &str = "3hUb4Av47q5XemKTf2rtmdrEDMUe7pun6NL5Vi1XrHvk";
/// The receiving token account of the real v0 transaction with an inner `transfer`.
pub const PUMP_TREASURY: &str = "93ZRXBKwom4XaejU5JB2VePPHkt4UnYYyANwWz1iit77";

/// A wallet of the real fixtures (a transfer's authority): a valid withdrawal destination.
pub const WALLET: &str = "8fusVwhgo4oS1fGpZKeRaXrJXQk9auKnAgcj9A97wR3t";

pub fn tokens_setting() -> String {
    format!("usdc:{USDC_MINT}:6:{USDC_TREASURY},pump:{PUMP_MINT}:6:{PUMP_TREASURY}")
}

/// A registered user: id, API key, deposit code.
pub struct Account {
    pub id: i64,
    pub key: String,
    pub code: String,
}

pub async fn register(client: &reqwest::Client, base: &str) -> Account {
    let res = client
        .post(format!("{base}/api/v1/users"))
        .json(&json!({"name": "tester"}))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 201);
    let body: Value = res.json().await.unwrap();
    Account {
        id: body["id"].as_i64().unwrap(),
        key: body["api_key"].as_str().unwrap().to_string(),
        code: body["deposit_code"].as_str().unwrap().to_string(),
    }
}

/// Credits `amount` to `who` as a deposit whose memo carries their code.
pub async fn fund(store: &Store, token: &str, who: &Account, amount: i64) {
    let signature = constructed_signature("F", rand_u64());
    let done = store
        .credit_deposits(
            token,
            &[IncomingDeposit {
                signature,
                slot: 1,
                amount,
                memo: Some(format!("[12] {}", who.code)),
            }],
            None,
            Utc::now(),
        )
        .await
        .unwrap();
    assert_eq!(done.attributed, 1);
}

fn rand_u64() -> u64 {
    uuid::Uuid::new_v4().as_u64_pair().0
}

/// A scheduled game (constructed from a real one) starting in two hours, with its open market.
pub async fn open_market(store: &Store) -> (i64, ScoreboardGame) {
    let mut game = parse_scoreboard(&espn_fixture("mlb-scoreboard-20250928.json"))
        .unwrap()
        .remove(0);
    game.external_id = format!("T{}", rand_u64());
    game.starts_at = Utc::now() + Duration::hours(2);
    let up = store.upsert_game("mlb", &game, Utc::now()).await.unwrap();
    (up.market_id, game)
}

/// The game as final, `winner` side winning.
pub fn finished(mut game: ScoreboardGame, winner: &str) -> ScoreboardGame {
    game.state = GameState::Final;
    let (h, a) = if winner == "home" { (5, 3) } else { (3, 5) };
    game.home.score = Some(h);
    game.away.score = Some(a);
    game.home.winner = Some(winner == "home");
    game.away.winner = Some(winner == "away");
    game
}

pub async fn user_call(
    client: &reqwest::Client,
    base: &str,
    key: &str,
    method: reqwest::Method,
    path: &str,
    body: Option<Value>,
) -> (u16, Value) {
    let mut req = client
        .request(method, format!("{base}{path}"))
        .bearer_auth(key);
    if let Some(b) = body {
        req = req.json(&b);
    }
    let res = req.send().await.unwrap();
    let status = res.status().as_u16();
    (status, res.json().await.unwrap_or(Value::Null))
}

/// POSTs `body` to `path` as `who`. The future owns what it sends, so it can be spawned.
pub fn post(
    app: &TestApp,
    who: &Account,
    path: &str,
    body: Value,
) -> impl std::future::Future<Output = (u16, Value)> + Send + 'static {
    let (client, base, key, path) = (
        app.client.clone(),
        app.address.clone(),
        who.key.clone(),
        path.to_string(),
    );
    async move {
        user_call(
            &client,
            &base,
            &key,
            reqwest::Method::POST,
            &path,
            Some(body),
        )
        .await
    }
}

/// A registered user holding `amount` of `token`.
pub async fn funded(app: &TestApp, token: &str, amount: i64) -> Account {
    let who = register(&app.client, &app.address).await;
    fund(&app.store, token, &who, amount).await;
    who
}

async fn get(app: &TestApp, who: &Account, path: &str) -> (u16, Value) {
    user_call(
        &app.client,
        &app.address,
        &who.key,
        reqwest::Method::GET,
        path,
        None,
    )
    .await
}

pub async fn balance(store: &Store, account: &str, token: &str) -> i64 {
    store
        .balances(account)
        .await
        .unwrap()
        .iter()
        .find(|b| b.token == token)
        .map_or(0, |b| b.amount)
}

/// Asserts every money invariant holds, and returns the audit.
pub async fn assert_audit(app: &TestApp) -> Value {
    let res = app.admin_get("/admin/ledger/audit").await;
    let status = res.status();
    let body: Value = res.json().await.unwrap();
    assert_eq!(status, 200, "ledger audit: {body:#}");
    assert_eq!(body["problems"], json!([]));
    body
}

async fn money_app(db: &Db) -> TestApp {
    spawn_app(db, &[("TIPOFF_TOKENS", &tokens_setting())]).await
}

async fn stakes_settle_parimutuel_once_and_every_unit_adds_up(db: Db) {
    let app = money_app(&db).await;
    let (a, b, c) = (
        register(&app.client, &app.address).await,
        register(&app.client, &app.address).await,
        register(&app.client, &app.address).await,
    );
    fund(&app.store, "usdc", &a, 1000).await;
    fund(&app.store, "usdc", &b, 500).await;
    fund(&app.store, "usdc", &c, 700).await;
    let (market, game) = open_market(&app.store).await;
    let path = format!("/api/v1/markets/{market}/stakes");
    for (who, outcome, amount) in [
        (&a, "home", json!(300)),
        (&b, "home", json!("100")),
        (&c, "away", json!(500)),
    ] {
        let (status, body) = post(
            &app,
            who,
            &path,
            json!({"outcome": outcome, "amount": amount, "token": "usdc"}),
        )
        .await;
        assert_eq!(status, 201, "{body}");
        assert_eq!(body["payout"], Value::Null);
    }
    let m: Value = app.json(&format!("/api/v1/markets/{market}")).await;
    assert_eq!(m["outcomes"][0]["pool"], json!({"usdc": "400"}));
    assert_eq!(m["outcomes"][1]["pool"], json!({"usdc": "500"}));
    let (_, me) = get(&app, &a, "/api/v1/me").await;
    assert_eq!(
        me["balances"][0],
        json!({"token": "usdc", "amount": "700", "decimals": 6})
    );

    // Home wins. Losers' pool 500, fee 2 % = 10, 490 shared 3:1 → 367.5 and 122.5, rounded
    // down; the half units (1) go to the house with the fee.
    let up = app
        .store
        .upsert_game("mlb", &finished(game.clone(), "home"), Utc::now())
        .await
        .unwrap();
    assert_eq!(
        up.transition,
        tipoff_actors::store::MarketTransition::Settled("home")
    );
    assert_eq!(
        balance(&app.store, &user_account(a.id), "usdc").await,
        700 + 667
    );
    assert_eq!(
        balance(&app.store, &user_account(b.id), "usdc").await,
        400 + 222
    );
    assert_eq!(balance(&app.store, &user_account(c.id), "usdc").await, 200);
    assert_eq!(balance(&app.store, "house", "usdc").await, 11);
    assert_eq!(
        balance(&app.store, &format!("escrow:{market}"), "usdc").await,
        0
    );

    // Seen again (every poll sees the final game): nothing more is paid.
    app.store
        .upsert_game("mlb", &finished(game, "home"), Utc::now())
        .await
        .unwrap();
    assert_eq!(balance(&app.store, &user_account(a.id), "usdc").await, 1367);

    let (_, stakes) = get(&app, &a, "/api/v1/me/stakes").await;
    assert_eq!(stakes["items"][0]["payout"], "667");
    let (_, ledger) = get(&app, &a, "/api/v1/me/ledger?limit=2").await;
    let kinds: Vec<&str> = ledger["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["kind"].as_str().unwrap())
        .collect();
    assert_eq!(kinds, vec!["payout", "stake"]);
    assert_eq!(ledger["items"][1]["amount"], "-300");
    let (_, older) = get(
        &app,
        &a,
        &format!(
            "/api/v1/me/ledger?cursor={}",
            ledger["next"].as_str().unwrap()
        ),
    )
    .await;
    assert_eq!(older["items"][0]["kind"], "deposit");
    assert_eq!(older["next"], Value::Null);

    let (status, body) = post(
        &app,
        &c,
        &path,
        json!({"outcome": "away", "amount": 1, "token": "usdc"}),
    )
    .await;
    assert_eq!(status, 409, "{body}");
    assert!(body["error"]["message"]
        .as_str()
        .unwrap()
        .contains("settled"));
    let audit = assert_audit(&app).await;
    assert_eq!(audit["tokens"][0]["deposits"], 2200);
    assert_eq!(audit["tokens"][0]["house"], 11);
    app.stop().await;
}
both_backends!(stakes_settle_parimutuel_once_and_every_unit_adds_up: settlement_sqlite, settlement_postgres);

async fn void_and_one_sided_markets_refund_everyone(db: Db) {
    let app = money_app(&db).await;
    let (a, b) = (
        funded(&app, "usdc", 1000).await,
        funded(&app, "pump", 1000).await,
    );
    let (one_sided, g1) = open_market(&app.store).await;
    let (voided, mut g2) = open_market(&app.store).await;
    for (m, who, token) in [
        (one_sided, &a, "usdc"),
        (voided, &a, "usdc"),
        (voided, &b, "pump"),
    ] {
        let (status, body) = post(
            &app,
            who,
            &format!("/api/v1/markets/{m}/stakes"),
            json!({"outcome": "home", "amount": "250", "token": token}),
        )
        .await;
        assert_eq!(status, 201, "{body}");
    }
    // Away wins, and nobody backed away: everyone gets their stake back, the house nothing.
    app.store
        .upsert_game("mlb", &finished(g1, "away"), Utc::now())
        .await
        .unwrap();
    g2.state = GameState::Postponed;
    let up = app.store.upsert_game("mlb", &g2, Utc::now()).await.unwrap();
    assert_eq!(
        up.transition,
        tipoff_actors::store::MarketTransition::Voided
    );
    assert_eq!(balance(&app.store, &user_account(a.id), "usdc").await, 1000);
    assert_eq!(balance(&app.store, &user_account(b.id), "pump").await, 1000);
    assert_eq!(balance(&app.store, "house", "usdc").await, 0);
    let (_, stakes) = get(&app, &a, "/api/v1/me/stakes").await;
    assert!(stakes["items"]
        .as_array()
        .unwrap()
        .iter()
        .all(|s| s["payout"] == "250"));
    let (_, ledger) = get(&app, &a, "/api/v1/me/ledger").await;
    assert_eq!(ledger["items"][0]["kind"], "refund");
    assert_audit(&app).await;
    app.stop().await;
}
both_backends!(void_and_one_sided_markets_refund_everyone: refunds_sqlite, refunds_postgres);

async fn parallel_stakes_never_overdraw(db: Db) {
    let app = money_app(&db).await;
    let a = register(&app.client, &app.address).await;
    fund(&app.store, "usdc", &a, 1000).await;
    let (market, _) = open_market(&app.store).await;
    let path = format!("/api/v1/markets/{market}/stakes");
    let attempts = (0..60).map(|i| {
        let outcome = if i % 2 == 0 { "home" } else { "away" };
        post(
            &app,
            &a,
            &path,
            json!({"outcome": outcome, "amount": 100, "token": "usdc"}),
        )
    });
    let results = futures_util::future::join_all(attempts).await;
    let created = results.iter().filter(|(s, _)| *s == 201).count();
    let refused = results
        .iter()
        .filter(|(s, b)| {
            *s == 409
                && b["error"]["message"]
                    .as_str()
                    .unwrap()
                    .contains("insufficient balance")
        })
        .count();
    assert_eq!((created, refused), (10, 50), "{results:?}");
    assert_eq!(balance(&app.store, &user_account(a.id), "usdc").await, 0);
    assert_eq!(
        balance(&app.store, &format!("escrow:{market}"), "usdc").await,
        1000
    );
    assert_audit(&app).await;
    app.stop().await;
}
both_backends!(parallel_stakes_never_overdraw: parallel_stakes_sqlite, parallel_stakes_postgres);

/// Group commit: one batch holding stakes that succeed, one on a settled market, one on no
/// market, one past its user's balance (after an earlier stake of the same batch spent it):
/// each answers alone, only the good ones commit, and every unit adds up.
async fn a_refused_stake_in_a_batch_fails_alone(db: Db) {
    use tipoff_actors::store::StakeRequest;
    let app = money_app(&db).await;
    let (a, b) = (
        funded(&app, "usdc", 1000).await,
        funded(&app, "usdc", 300).await,
    );
    let (open, _) = open_market(&app.store).await;
    let (closed, game) = open_market(&app.store).await;
    app.store
        .upsert_game("mlb", &finished(game, "home"), Utc::now())
        .await
        .unwrap();
    let stake = |user: &Account, market: i64, amount: i64| StakeRequest {
        user_id: user.id,
        market_id: market,
        outcome: "home".into(),
        token: "usdc".into(),
        amount,
    };
    let batch = [
        stake(&a, open, 400),
        stake(&b, closed, 100),
        stake(&b, 999_999_999, 100),
        stake(&b, open, 250),
        stake(&b, open, 100), // 50 left after the one before
        stake(&a, open, 600),
    ];
    let results = app.store.place_stakes(&batch, Utc::now()).await.unwrap();
    let codes = outcome_codes(&results);
    assert_eq!(
        codes,
        [
            "ok",
            "market_closed",
            "not_found",
            "ok",
            "insufficient_balance",
            "ok"
        ]
    );
    assert_eq!(balance(&app.store, &user_account(a.id), "usdc").await, 0);
    assert_eq!(balance(&app.store, &user_account(b.id), "usdc").await, 50);
    assert_eq!(
        balance(&app.store, &format!("escrow:{open}"), "usdc").await,
        1250
    );
    let (_, market) = get(&app, &a, &format!("/api/v1/markets/{open}")).await;
    assert_eq!(market["outcomes"][0]["pool"], json!({"usdc": "1250"}));
    assert_eq!(app.store.stakes_of(b.id, None, 10).await.unwrap().len(), 1);
    assert_audit(&app).await;

    // No balance short (PostgreSQL writes such a batch set-based, summing a user's stakes on one
    // position): the closed market's stake still fails alone.
    fund(&app.store, "usdc", &a, 300).await;
    let batch = [
        stake(&a, open, 100),
        stake(&a, closed, 100),
        stake(&b, open, 50),
        stake(&a, open, 200),
    ];
    let results = app.store.place_stakes(&batch, Utc::now()).await.unwrap();
    assert_eq!(outcome_codes(&results), ["ok", "market_closed", "ok", "ok"]);
    let (first, last) = (results[0].as_ref().unwrap(), results[3].as_ref().unwrap());
    assert_eq!(first.position_id, last.position_id);
    assert!(first.id < last.id, "{first:?} {last:?}");
    assert_eq!(balance(&app.store, &user_account(a.id), "usdc").await, 0);
    assert_eq!(balance(&app.store, &user_account(b.id), "usdc").await, 0);
    assert_eq!(
        balance(&app.store, &format!("escrow:{open}"), "usdc").await,
        1600
    );
    let held = "SELECT amount, stakes FROM positions WHERE market_id = $1 AND user_id = $2 AND outcome = 'home'";
    let position: (i64, i64) = match &app.store {
        Store::Sqlite(pool, _) => {
            sqlx::query_as(held)
                .bind(open)
                .bind(a.id)
                .fetch_one(pool)
                .await
        }
        Store::Postgres(pool, _) => {
            sqlx::query_as(held)
                .bind(open)
                .bind(a.id)
                .fetch_one(pool)
                .await
        }
    }
    .unwrap();
    assert_eq!(position, (1300, 4), "a's four stakes on one position");
    assert_audit(&app).await;

    stakes_as_the_leader_are_refused_alike(&app, &a, open, closed).await;

    // Every refused stake above, the short balance's included, left its market's stake count
    // as it found it: the audits before passed.
    drifts_are_named(&app, open).await;
    app.stop().await;
}

/// A pool that drifted from the positions it sums, and a stake count that drifted from the
/// stakes it counts, are audit problems, named (`open`'s pools total 2,100).
async fn drifts_are_named(app: &TestApp, open: i64) {
    for drift in [
        "UPDATE market_pools SET amount = amount + 1 WHERE market_id = $1 AND outcome = 'home'",
        "UPDATE markets SET stake_count = stake_count + 1 WHERE id = $1",
    ] {
        match &app.store {
            Store::Sqlite(pool, _) => sqlx::query(drift).bind(open).execute(pool).await.map(drop),
            Store::Postgres(pool, _) => sqlx::query(drift).bind(open).execute(pool).await.map(drop),
        }
        .unwrap();
    }
    let audit: Value = app
        .admin_get("/admin/ledger/audit")
        .await
        .json()
        .await
        .unwrap();
    let count = "SELECT COUNT(*) FROM stakes WHERE market_id = $1";
    let n: i64 = match &app.store {
        Store::Sqlite(pool, _) => sqlx::query_scalar(count).bind(open).fetch_one(pool).await,
        Store::Postgres(pool, _) => sqlx::query_scalar(count).bind(open).fetch_one(pool).await,
    }
    .unwrap();
    let expected = [
        format!("market {open}'s home pool shows 2101 usdc but its positions total 2100"),
        format!("market {open} counts {} stakes but has {n}", n + 1),
    ];
    assert_eq!(audit["problems"], json!(expected), "{audit:#}");
}

both_backends!(a_refused_stake_in_a_batch_fails_alone: batch_refusals_sqlite, batch_refusals_postgres);

/// Two replicas' stake batches over the same markets and users in opposite orders, at once,
/// round after round: the `place_stakes` function takes its rows in the payouts' lock order
/// before it writes, so neither batch waits on the other in a cycle. (Were it to, PostgreSQL
/// would abort one with a deadlock; the function is called here without the store's retries,
/// so that would fail the round.) Withdrawals of the same users run meanwhile: they lock the
/// user's row before its balances, as the batches do.
#[actix_rt::test]
async fn stake_batches_in_opposite_orders_never_deadlock() {
    let Some(url) = postgres_db("stake_batches_never_deadlock").await else {
        return;
    };
    let app = money_app(&Db::Postgres(url.clone())).await;
    let Store::Postgres(pool, _) = &app.store else {
        unreachable!()
    };
    let replica = sqlx::PgPool::connect(&url).await.unwrap();
    let (mut users, mut markets) = (Vec::new(), Vec::new());
    for _ in 0..4 {
        let u = register(&app.client, &app.address).await;
        fund(&app.store, "usdc", &u, 100_000).await;
        users.push(u.id);
        markets.push(open_market(&app.store).await.0);
    }
    // Each stake's id, or its refusal's SQLSTATE.
    type Answer = (Option<i64>, Option<String>);
    let call = |pool: sqlx::PgPool, pairs: Vec<(i64, i64)>| async move {
        let (m, u): (Vec<i64>, Vec<i64>) = pairs.into_iter().unzip();
        let n = m.len();
        let rows: Result<Vec<Answer>, sqlx::Error> = sqlx::query_as(
            "SELECT o_stake, o_refusal FROM place_stakes($1, $2, $3, $4, $5, now(), $6)",
        )
        .bind(&m)
        .bind(&u)
        .bind(vec!["home".to_string(); n])
        .bind(vec!["usdc".to_string(); n])
        .bind(vec![10i64; n])
        .bind(
            (0..n)
                .map(|_| uuid::Uuid::new_v4().to_string())
                .collect::<Vec<_>>(),
        )
        .fetch_all(&pool)
        .await;
        rows
    };
    let rounds = 40;
    for round in 0..rounds {
        // Every user on every market, one batch forwards and the other backwards.
        let forwards: Vec<(i64, i64)> = (0..16)
            .map(|i| (markets[i % 4], users[(i / 4 + round) % 4]))
            .collect();
        let backwards: Vec<(i64, i64)> = forwards.iter().rev().copied().collect();
        // And a withdrawal of one of the users, which locks the user before the balances.
        let withdrawal =
            app.store
                .request_withdrawal(users[round % 4], "usdc", 1, WALLET, 1_000, Utc::now());
        let (x, y, w) = tokio::join!(
            call(pool.clone(), forwards),
            call(replica.clone(), backwards),
            withdrawal
        );
        w.unwrap();
        for answer in [x, y] {
            let rows = answer.unwrap_or_else(|e| panic!("round {round}: {e}"));
            assert_eq!(rows.len(), 16);
            assert!(
                rows.iter()
                    .all(|(stake, refusal)| stake.is_some() && refusal.is_none()),
                "{rows:?}"
            );
        }
    }
    for market in &markets {
        assert_eq!(
            balance(&app.store, &format!("escrow:{market}"), "usdc").await,
            rounds as i64 * 2 * 4 * 10
        );
    }
    // A stake the server refuses outright (an amount its checks forbid, which the HTTP layer
    // never sends) fails the batch's statement: the batch is taken again stake by stake, so
    // only that stake fails.
    use tipoff_actors::store::{StakeRequest, StoreError};
    let stake = |i: usize, amount: i64| StakeRequest {
        user_id: users[i],
        market_id: markets[i],
        outcome: "away".into(),
        token: "usdc".into(),
        amount,
    };
    let batch = [stake(0, 10), stake(1, 0), stake(2, 10)];
    let results = app.store.place_stakes(&batch, Utc::now()).await.unwrap();
    assert!(results[0].is_ok() && results[2].is_ok(), "{results:?}");
    assert!(
        matches!(results[1], Err(StoreError::Query(_))),
        "{results:?}"
    );
    assert_eq!(
        balance(&app.store, &format!("escrow:{}", markets[1]), "usdc").await,
        rounds as i64 * 2 * 4 * 10
    );
    // The withdrawals retry a deadlock; the server counts each one (its statistics reach
    // other sessions within a second or so).
    tokio::time::sleep(std::time::Duration::from_millis(2_500)).await;
    let deadlocks: i64 = sqlx::query_scalar(
        "SELECT deadlocks FROM pg_stat_database WHERE datname = current_database()",
    )
    .fetch_one(&replica)
    .await
    .unwrap();
    assert_eq!(deadlocks, 0, "stake batches deadlocked with withdrawals");
    assert_audit(&app).await;
    app.stop().await;
}

/// An in-memory SQLite database has no stake writer of its own: its batches take the
/// transaction path (`stake_in_tx!`, a savepoint a stake). A batch with a refusal of each kind
/// answers there as it does on a file, and only the good stakes commit.
#[actix_rt::test]
async fn an_in_memory_database_takes_a_batch_as_a_file_does() {
    use tipoff_actors::store::StakeRequest;
    let store = Store::connect("sqlite::memory:", &Default::default())
        .await
        .unwrap();
    store.migrate().await.unwrap();
    store.reconcile_catalog().await.unwrap();
    let mut accounts = Vec::new();
    for (name, code) in [("a", "MEMAAAAA"), ("b", "MEMBBBBB")] {
        let user = store
            .create_user(name, &format!("digest-{name}"), code, Utc::now())
            .await
            .unwrap();
        let who = Account {
            id: user.id,
            key: String::new(),
            code: code.into(),
        };
        fund(&store, "usdc", &who, 300).await;
        accounts.push(who);
    }
    let (a, b) = (&accounts[0], &accounts[1]);
    let (open, _) = open_market(&store).await;
    let (closed, game) = open_market(&store).await;
    store
        .upsert_game("mlb", &finished(game, "home"), Utc::now())
        .await
        .unwrap();
    let stake = |who: &Account, market: i64, amount: i64| StakeRequest {
        user_id: who.id,
        market_id: market,
        outcome: "home".into(),
        token: "usdc".into(),
        amount,
    };
    let batch = [
        stake(a, open, 200),
        stake(b, closed, 100),
        stake(b, 999_999_999, 100),
        stake(a, open, 200),
        stake(b, open, 300),
    ];
    let results = store.place_stakes(&batch, Utc::now()).await.unwrap();
    assert_eq!(
        outcome_codes(&results),
        [
            "ok",
            "market_closed",
            "not_found",
            "insufficient_balance",
            "ok"
        ]
    );
    assert_eq!(balance(&store, &user_account(a.id), "usdc").await, 100);
    assert_eq!(balance(&store, &user_account(b.id), "usdc").await, 0);
    assert_eq!(
        balance(&store, &format!("escrow:{open}"), "usdc").await,
        500
    );
    let audit = store.audit().await.unwrap();
    assert!(audit.problems.is_empty(), "{:?}", audit.problems);
}

/// A stake waiting on a row another transaction holds (a user's balance while a large market
/// pays its winners out) holds up only its own batch: a stake on another market, by another
/// user, is answered meanwhile (it leads a batch beside the stuck one).
#[actix_rt::test]
async fn a_stake_stuck_on_a_locked_balance_holds_up_only_its_own_batch() {
    let Some(url) = postgres_db("stuck_stake_holds_up_only_its_batch").await else {
        return;
    };
    let app = money_app(&Db::Postgres(url.clone())).await;
    let (a, b) = (
        funded(&app, "usdc", 1000).await,
        funded(&app, "usdc", 1000).await,
    );
    let (first, _) = open_market(&app.store).await;
    let (second, _) = open_market(&app.store).await;
    let holder = sqlx::PgPool::connect(&url).await.unwrap();
    let mut held = holder.begin().await.unwrap();
    sqlx::query("SELECT amount FROM balances WHERE account = $1 AND token = 'usdc' FOR UPDATE")
        .bind(user_account(a.id))
        .fetch_one(&mut *held)
        .await
        .unwrap();
    let body = json!({"outcome": "home", "amount": 100, "token": "usdc"});
    let stuck = tokio::spawn(post(
        &app,
        &a,
        &format!("/api/v1/markets/{first}/stakes"),
        body.clone(),
    ));
    tokio::time::sleep(std::time::Duration::from_millis(300)).await;
    let path = format!("/api/v1/markets/{second}/stakes");
    let (status, answer) = tokio::time::timeout(
        std::time::Duration::from_secs(10),
        post(&app, &b, &path, body),
    )
    .await
    .expect("a stake on another market waited behind the stuck batch");
    assert_eq!(status, 201, "{answer}");
    assert!(
        !stuck.is_finished(),
        "the stuck stake did not wait on the lock"
    );
    held.rollback().await.unwrap();
    let (status, answer) = stuck.await.unwrap();
    assert_eq!(status, 201, "{answer}");
    assert_eq!(balance(&app.store, &user_account(a.id), "usdc").await, 900);
    assert_eq!(balance(&app.store, &user_account(b.id), "usdc").await, 900);
    assert_audit(&app).await;
    app.stop().await;
}

/// Each stake's outcome as its refusal code (`ok` when taken).
fn outcome_codes(
    results: &[Result<tipoff_actors::store::Stake, tipoff_actors::store::StoreError>],
) -> Vec<&str> {
    use tipoff_actors::store::StoreError;
    results
        .iter()
        .map(|r| match r {
            Ok(_) => "ok",
            Err(StoreError::Refused { code, .. }) => code,
            Err(StoreError::NotFound) => "not_found",
            Err(e) => panic!("unexpected {e}"),
        })
        .collect()
}

/// The refusals of [`a_refused_stake_in_a_batch_fails_alone`] through a store fenced by the
/// lease (on PostgreSQL the transaction path, `stake_in_tx!`, which checks the fence; unfenced
/// stakes there are one statement), and a stale fence taking nothing.
async fn stakes_as_the_leader_are_refused_alike(
    app: &TestApp,
    a: &Account,
    open: i64,
    closed: i64,
) {
    use tipoff_actors::store::lease::Fence;
    use tipoff_actors::store::StakeRequest;
    let stake = |market: i64, amount: i64| StakeRequest {
        user_id: a.id,
        market_id: market,
        outcome: "home".into(),
        token: "usdc".into(),
        amount,
    };
    // Written as whoever leads (the daemon under test, or this test where no leader runs).
    let mut lease = app.store.current_lease().await.unwrap();
    if lease.as_ref().and_then(|l| l.holder.as_ref()).is_none() {
        let ttl = std::time::Duration::from_secs(60);
        lease = Some(app.store.acquire_lease("stake-test", ttl).await.unwrap());
    }
    let lease = lease.unwrap();
    let holder = lease.holder.clone().unwrap();
    let fence = |epoch| Fence {
        instance: holder.as_str().into(),
        epoch,
    };
    fund(&app.store, "usdc", a, 500).await;
    let fenced = app.store.fenced(Some(fence(lease.epoch)));
    let batch = [
        stake(open, 200),
        stake(closed, 10),
        stake(999_999_999, 10),
        stake(open, 400),
        stake(open, 300),
    ];
    let results = fenced.place_stakes(&batch, Utc::now()).await.unwrap();
    let codes = outcome_codes(&results);
    assert_eq!(
        codes,
        [
            "ok",
            "market_closed",
            "not_found",
            "insufficient_balance",
            "ok"
        ]
    );
    assert_eq!(balance(&app.store, &user_account(a.id), "usdc").await, 0);
    let (_, market) = get(app, a, &format!("/api/v1/markets/{open}")).await;
    assert_eq!(market["outcomes"][0]["pool"], json!({"usdc": "2100"}));
    if let Store::Postgres(..) = app.store {
        // An epoch no longer held commits nothing.
        fund(&app.store, "usdc", a, 100).await;
        let stale = app.store.fenced(Some(fence(lease.epoch - 1)));
        let lost = stale.place_stakes(&batch[..1], Utc::now()).await;
        assert!(
            !matches!(lost.as_deref(), Ok([Ok(_)])),
            "a stale fence took a stake: {lost:?}"
        );
        assert_eq!(balance(&app.store, &user_account(a.id), "usdc").await, 100);
    }
    assert_audit(app).await;
}

/// Concurrent stake requests through the HTTP API share commits: all 96 are taken, in fewer
/// batches than stakes, and the ledger adds up (on PostgreSQL a batch is one statement).
async fn concurrent_stakes_are_group_committed(db: Db) {
    let app = money_app(&db).await;
    let mut users = Vec::new();
    for _ in 0..8 {
        let u = register(&app.client, &app.address).await;
        fund(&app.store, "usdc", &u, 1_000).await;
        users.push(u);
    }
    let (market, _) = open_market(&app.store).await;
    let path = format!("/api/v1/markets/{market}/stakes");
    let before = app.admin_get("/metrics").await.text().await.unwrap();
    let attempts = (0..96).map(|i| {
        let (client, base, key, path) = (
            app.client.clone(),
            app.address.clone(),
            users[i % users.len()].key.clone(),
            path.clone(),
        );
        async move {
            user_call(&client, &base, &key, reqwest::Method::POST, &path,
                Some(json!({"outcome": if i % 3 == 0 { "away" } else { "home" }, "amount": 10, "token": "usdc"}))).await
        }
    });
    let results = futures_util::future::join_all(attempts).await;
    assert!(results.iter().all(|(s, _)| *s == 201), "{results:?}");
    let after = app.admin_get("/metrics").await.text().await.unwrap();
    let metric = |text: &str, name: &str| -> f64 {
        text.lines()
            .find(|l| l.starts_with(name))
            .and_then(|l| l.split_whitespace().last())
            .map_or(0.0, |v| v.parse().unwrap())
    };
    let stakes = metric(&after, "tipoff_stakes_batched_total")
        - metric(&before, "tipoff_stakes_batched_total");
    let batches = metric(&after, "tipoff_stake_batches_total")
        - metric(&before, "tipoff_stake_batches_total");
    assert_eq!(stakes, 96.0, "{after}");
    assert!(
        (1.0..96.0).contains(&batches),
        "96 stakes in {batches} batches"
    );
    assert_eq!(
        balance(&app.store, &format!("escrow:{market}"), "usdc").await,
        960
    );
    assert_audit(&app).await;
    app.stop().await;
}
both_backends!(concurrent_stakes_are_group_committed: group_commit_sqlite, group_commit_postgres);

async fn bad_input_is_refused_by_name_and_changes_nothing(db: Db) {
    let app = money_app(&db).await;
    let (a, b) = (
        funded(&app, "usdc", 1000).await,
        register(&app.client, &app.address).await,
    );
    let (market, game) = open_market(&app.store).await;
    let (started, mut g) = open_market(&app.store).await;
    g.starts_at = Utc::now() - Duration::minutes(1);
    app.store
        .upsert_game("mlb", &g, Utc::now() - Duration::minutes(2))
        .await
        .unwrap();
    let _ = game;
    let stake = format!("/api/v1/markets/{market}/stakes");
    let before = app
        .store
        .ledger(&user_account(a.id), None, 1000)
        .await
        .unwrap();
    let cases = bad_money_inputs(&stake, started);
    for (path, body, status, needle) in &cases {
        let (got, answer) = post(&app, &a, path, body.clone()).await;
        assert_eq!(got, *status, "{path} {body} → {answer}");
        let message = answer["error"]["message"].as_str().unwrap_or_default();
        assert!(
            message.contains(needle),
            "{path} {body}: `{message}` should say `{needle}`"
        );
        // Each conflict carries its stable code.
        if *status == 409 {
            let code = if needle.contains("insufficient") {
                "insufficient_balance"
            } else {
                "market_closed"
            };
            assert_eq!(answer["error"]["code"], code, "{path} {body} → {answer}");
        }
    }
    // Someone else's key spends nothing of a's; no key and a made-up key are refused.
    let (status, body) = post(
        &app,
        &b,
        &stake,
        json!({"outcome": "home", "amount": 5, "token": "usdc"}),
    )
    .await;
    assert_eq!(
        (
            status,
            body["error"]["message"]
                .as_str()
                .unwrap()
                .contains("insufficient")
        ),
        (409, true)
    );
    let res = app
        .client
        .post(format!("{}{stake}", app.address))
        .json(&json!({"outcome": "home", "amount": 5, "token": "usdc"}))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 401);
    let bogus = Account {
        id: 0,
        key: "tpk_00".into(),
        code: String::new(),
    };
    let (status, body) = post(
        &app,
        &bogus,
        &stake,
        json!({"outcome": "home", "amount": 5, "token": "usdc"}),
    )
    .await;
    assert_eq!(
        (status, body["error"]["message"].as_str().unwrap()),
        (401, "invalid API key")
    );

    let after = app
        .store
        .ledger(&user_account(a.id), None, 1000)
        .await
        .unwrap();
    assert_eq!(before, after, "refused requests wrote nothing");
    assert_eq!(balance(&app.store, &user_account(a.id), "usdc").await, 1000);
    assert_audit(&app).await;
    app.stop().await;
}

/// Bad stake and withdrawal requests: (path, body, status, what the message must name).
fn bad_money_inputs(stake: &str, started: i64) -> Vec<(String, Value, u16, &'static str)> {
    let mut cases = bad_stakes(stake, started);
    cases.extend(bad_withdrawals());
    cases
}

fn bad_stakes(stake: &str, started: i64) -> Vec<(String, Value, u16, &'static str)> {
    vec![
        (
            stake.to_string(),
            json!({"outcome": "home", "amount": -5, "token": "usdc"}),
            400,
            "negative",
        ),
        (
            stake.to_string(),
            json!({"outcome": "home", "amount": "-5", "token": "usdc"}),
            400,
            "negative",
        ),
        (
            stake.to_string(),
            json!({"outcome": "home", "amount": 0, "token": "usdc"}),
            400,
            "zero",
        ),
        (
            stake.to_string(),
            json!({"outcome": "home", "amount": 1.5, "token": "usdc"}),
            400,
            "whole number",
        ),
        (
            stake.to_string(),
            json!({"outcome": "home", "amount": "1e3", "token": "usdc"}),
            400,
            "whole number",
        ),
        (
            stake.to_string(),
            json!({"outcome": "home", "amount": "99999999999999999999", "token": "usdc"}),
            400,
            "too large",
        ),
        (
            stake.to_string(),
            json!({"outcome": "home", "amount": 18446744073709551615u64, "token": "usdc"}),
            400,
            "too large",
        ),
        (
            stake.to_string(),
            json!({"outcome": "home", "amount": true, "token": "usdc"}),
            400,
            "not a number",
        ),
        (
            stake.to_string(),
            json!({"outcome": "draw", "amount": 5, "token": "usdc"}),
            400,
            "unknown outcome",
        ),
        (
            stake.to_string(),
            json!({"outcome": "home", "amount": 5, "token": "doge"}),
            400,
            "unknown token `doge`",
        ),
        (
            stake.to_string(),
            json!({"outcome": "home", "token": "usdc"}),
            400,
            "amount",
        ),
        (
            stake.to_string(),
            json!({"outcome": "home", "amount": 5000, "token": "usdc"}),
            409,
            "insufficient balance: 1000 usdc available, 5000 needed",
        ),
        (
            "/api/v1/markets/999999/stakes".into(),
            json!({"outcome": "home", "amount": 5, "token": "usdc"}),
            404,
            "no market 999999",
        ),
        (
            format!("/api/v1/markets/{started}/stakes"),
            json!({"outcome": "home", "amount": 5, "token": "usdc"}),
            409,
            "closed: its game started",
        ),
    ]
}

fn bad_withdrawals() -> Vec<(String, Value, u16, &'static str)> {
    vec![
        (
            "/api/v1/me/withdrawals".into(),
            json!({"token": "usdc", "amount": 5, "destination": "not-base58!"}),
            400,
            "destination",
        ),
        (
            "/api/v1/me/withdrawals".into(),
            json!({"token": "usdc", "amount": 5, "destination": "EPjFWdd5AufqSSqeM2qN1xzybapC8G4wEGGkZwyTDt"}),
            400,
            "destination",
        ),
        (
            "/api/v1/me/withdrawals".into(),
            json!({"token": "usdc", "amount": 1001, "destination": WALLET}),
            409,
            "insufficient balance",
        ),
        (
            "/api/v1/me/withdrawals".into(),
            json!({"token": "usdc", "amount": "0", "destination": WALLET}),
            400,
            "zero",
        ),
        (
            "/api/v1/me/withdrawals".into(),
            json!({"token": "usdc", "amount": 5, "destination": "11111111111111111111111111111111"}),
            400,
            "system program",
        ),
        (
            "/api/v1/me/withdrawals".into(),
            json!({"token": "usdc", "amount": 5, "destination": USDC_MINT}),
            400,
            "the mint of token `usdc`",
        ),
        (
            "/api/v1/me/withdrawals".into(),
            json!({"token": "usdc", "amount": 5, "destination": PUMP_TREASURY}),
            400,
            "the treasury of token `pump`",
        ),
        (
            "/api/v1/me/withdrawals".into(),
            json!({"token": "usdc", "amount": 5, "destination": USDC_TREASURY}),
            400,
            "the treasury of token `usdc`",
        ),
    ]
}
both_backends!(bad_input_is_refused_by_name_and_changes_nothing: bad_money_input_sqlite, bad_money_input_postgres);

async fn withdrawals_hold_then_complete_fail_or_expire_exactly_once(db: Db) {
    let app = money_app(&db).await;
    let a = register(&app.client, &app.address).await;
    fund(&app.store, "usdc", &a, 1000).await;
    let ask = |amount: i64| json!({"token": "usdc", "amount": amount, "destination": WALLET});
    let (status, w1) = post(&app, &a, "/api/v1/me/withdrawals", ask(300)).await;
    assert_eq!((status, w1["state"].as_str()), (201, Some("pending")));
    assert_eq!(balance(&app.store, &user_account(a.id), "usdc").await, 700);
    assert_eq!(
        balance(&app.store, &format!("holds:{}", a.id), "usdc").await,
        300
    );

    let id1 = w1["id"].as_i64().unwrap();
    let res = app
        .admin_post_json(
            &format!("/admin/withdrawals/{id1}/complete"),
            &json!({"signature": "abc"}),
        )
        .await;
    assert_eq!(res.status(), 400, "a malformed signature is refused");
    let sig =
        "2S2rTZjaqzxYRw9mnqzwtyqitKtSsnE8GVqLn1KrD5R2YpXZnU4GdjppsgfSAbrzJfaqadfi8CtrqEBy588WVQ3E";
    let res = app
        .admin_post_json(
            &format!("/admin/withdrawals/{id1}/complete"),
            &json!({"signature": sig}),
        )
        .await;
    assert_eq!(res.status(), 200);
    let res = app
        .admin_post_json(&format!("/admin/withdrawals/{id1}/fail"), &json!({}))
        .await;
    assert_eq!(res.status(), 409, "a completed withdrawal cannot fail");
    let body: Value = res.json().await.unwrap();
    assert_eq!(body["error"]["code"], "withdrawal_finished", "{body}");
    assert_eq!(balance(&app.store, "withdrawn", "usdc").await, 300);

    let (status, w2) = post(&app, &a, "/api/v1/me/withdrawals", ask(200)).await;
    let id2 = w2["id"]
        .as_i64()
        .unwrap_or_else(|| panic!("the second withdrawal was not taken: {status} {w2}"));
    let res = app
        .admin_post_json(
            &format!("/admin/withdrawals/{id2}/fail"),
            &json!({"reason": "node down"}),
        )
        .await;
    let body: Value = res.json().await.unwrap();
    assert_eq!(
        (body["state"].as_str(), body["reason"].as_str()),
        (Some("failed"), Some("node down"))
    );
    assert_eq!(
        balance(&app.store, &user_account(a.id), "usdc").await,
        700,
        "the hold came back"
    );

    // Two cleanup passes race for one stale withdrawal: it expires, and is refunded, once.
    let (_, w3) = post(&app, &a, "/api/v1/me/withdrawals", ask(100)).await;
    let id3 = w3["id"].as_i64().unwrap();
    assert_eq!(balance(&app.store, &user_account(a.id), "usdc").await, 600);
    let other = match &db {
        // A second pool, as a second replica would have.
        Db::Postgres(url) => Store::connect(url, &Default::default()).await.unwrap(),
        Db::Sqlite => app.store.clone(),
    };
    let settings = CleanupSettings {
        withdrawal_ttl: std::time::Duration::ZERO,
        ..Default::default()
    };
    let (x, y) = tokio::join!(sweep(&app.store, &settings), sweep(&other, &settings));
    let (x, y) = (x.unwrap(), y.unwrap());
    assert_eq!(
        x.withdrawals_expired + y.withdrawals_expired,
        1,
        "{x:?} {y:?}"
    );
    assert_eq!(balance(&app.store, &user_account(a.id), "usdc").await, 700);
    let (_, list) = get(&app, &a, "/api/v1/me/withdrawals").await;
    let states: Vec<(i64, &str)> = list["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|w| (w["id"].as_i64().unwrap(), w["state"].as_str().unwrap()))
        .collect();
    assert_eq!(
        states,
        vec![(id3, "expired"), (id2, "failed"), (id1, "completed")]
    );
    let res = app
        .admin_post_json(
            &format!("/admin/withdrawals/{id3}/complete"),
            &json!({"signature": sig}),
        )
        .await;
    assert_eq!(res.status(), 409, "an expired withdrawal cannot complete");
    let audit = assert_audit(&app).await;
    assert_eq!(audit["tokens"][0]["withdrawn"], 300);
    assert_eq!(audit["tokens"][0]["users"], 700);
    app.stop().await;
}
both_backends!(withdrawals_hold_then_complete_fail_or_expire_exactly_once: withdrawals_sqlite, withdrawals_postgres);

/// A key's user is looked up once a second at most (`Callers`): a key an operator revokes in
/// the database stops working within that second, and a made-up key is refused every time.
async fn a_key_revoked_in_the_database_stops_working_within_a_second(db: Db) {
    let app = money_app(&db).await;
    let a = register(&app.client, &app.address).await;
    for _ in 0..3 {
        let (status, body) = get(&app, &a, "/api/v1/me").await;
        assert_eq!(status, 200, "{body}");
    }
    let revoke = "UPDATE users SET api_key_hash = 'revoked-by-hand' WHERE id = $1";
    match &app.store {
        Store::Sqlite(pool, _) => sqlx::query(revoke).bind(a.id).execute(pool).await.map(drop),
        Store::Postgres(pool, _) => sqlx::query(revoke).bind(a.id).execute(pool).await.map(drop),
    }
    .unwrap();
    tokio::time::sleep(std::time::Duration::from_millis(1_100)).await;
    let (status, body) = get(&app, &a, "/api/v1/me").await;
    assert_eq!(status, 401, "a revoked key still works: {body}");
    let stranger = Account {
        key: format!("{}x", a.key),
        ..a
    };
    for _ in 0..2 {
        let (status, _) = get(&app, &stranger, "/api/v1/me").await;
        assert_eq!(status, 401);
    }
    app.stop().await;
}
both_backends!(a_key_revoked_in_the_database_stops_working_within_a_second: revoked_key_sqlite, revoked_key_postgres);

/// The signer protocol: a claimed withdrawal is never expired (the signer may already have sent
/// it), an unclaimed one is expired and refunded once, and a signature pays one withdrawal.
async fn a_claimed_withdrawal_is_never_refunded_and_a_signature_pays_once(db: Db) {
    let app = money_app(&db).await;
    let a = register(&app.client, &app.address).await;
    fund(&app.store, "usdc", &a, 1000).await;
    let ask = |amount: i64| json!({"token": "usdc", "amount": amount, "destination": WALLET});
    let mut ids = Vec::new();
    for amount in [300, 200, 100] {
        let (status, w) = post(&app, &a, "/api/v1/me/withdrawals", ask(amount)).await;
        assert_eq!(status, 201);
        ids.push(w["id"].as_i64().unwrap());
    }
    let (claimed, unclaimed) = (ids[0], &ids[1..]);

    the_signers_queue_is_oldest_first(&app, &ids).await;

    let res = app
        .admin_post_json(
            &format!("/admin/withdrawals/{claimed}/claim"),
            &json!({"claimer": "signer-1"}),
        )
        .await;
    assert_eq!(res.status(), 200);
    let body: Value = res.json().await.unwrap();
    assert_eq!(
        (body["state"].as_str(), body["claimed_by"].as_str()),
        (Some("processing"), Some("signer-1"))
    );
    let res = app
        .admin_post_json(
            &format!("/admin/withdrawals/{claimed}/claim"),
            &json!({"claimer": "signer-2"}),
        )
        .await;
    assert_eq!(res.status(), 409, "one claim only");
    let body: Value = res.json().await.unwrap();
    assert_eq!(body["error"]["code"], "already_claimed", "{body}");
    assert!(
        body["error"]["message"]
            .as_str()
            .unwrap()
            .contains("signer-1"),
        "{body}"
    );

    // The TTL passes for all three while the signer is sending the first on chain.
    let settings = CleanupSettings {
        withdrawal_ttl: std::time::Duration::ZERO,
        ..Default::default()
    };
    let swept = sweep(&app.store, &settings).await.unwrap();
    assert_eq!(
        swept.withdrawals_expired, 2,
        "only the unclaimed ones: {swept:?}"
    );
    let again = sweep(&app.store, &settings).await.unwrap();
    assert_eq!(again.withdrawals_expired, 0, "refunded once");
    assert_eq!(
        balance(&app.store, &user_account(a.id), "usdc").await,
        1000 - 300
    );
    let open = app.json("/admin/withdrawals?state=processing").await;
    assert_eq!(open["items"][0]["id"], claimed);
    assert!(
        open["items"][0]["claim_age_secs"].as_f64().is_some(),
        "{open}"
    );

    let sig =
        "2S2rTZjaqzxYRw9mnqzwtyqitKtSsnE8GVqLn1KrD5R2YpXZnU4GdjppsgfSAbrzJfaqadfi8CtrqEBy588WVQ3E";
    let res = app
        .admin_post_json(
            &format!("/admin/withdrawals/{claimed}/complete"),
            &json!({"signature": sig}),
        )
        .await;
    assert_eq!(
        res.status(),
        200,
        "the paid withdrawal completes after its TTL"
    );
    assert_eq!(balance(&app.store, "withdrawn", "usdc").await, 300);
    assert_eq!(
        balance(&app.store, &user_account(a.id), "usdc").await,
        700,
        "and is not refunded"
    );
    for id in unclaimed {
        let res = app
            .admin_post_json(&format!("/admin/withdrawals/{id}/claim"), &json!({}))
            .await;
        assert_eq!(res.status(), 409, "an expired withdrawal cannot be claimed");
    }

    a_signature_pays_one_withdrawal(&app, &a, sig).await;

    // Every request was announced for the signer (webhook and SSE for admins).
    let events = app.json("/admin/outbox?limit=200").await;
    let requested = events["items"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|e| e["type"] == "withdrawal.requested")
        .count();
    assert_eq!(requested, 4);
    let audit = assert_audit(&app).await;
    assert_eq!(audit["tokens"][0]["withdrawn"], 300);
    app.stop().await;
}

/// The signer's queue: oldest first, with ages, from the admin API (not the database).
async fn the_signers_queue_is_oldest_first(app: &TestApp, ids: &[i64]) {
    let claimed = ids[0];
    let queue = app.json("/admin/withdrawals?state=pending&limit=2").await;
    let items = queue["items"].as_array().unwrap();
    assert_eq!(items.len(), 2);
    assert_eq!(items[0]["id"], claimed);
    assert!(items[0]["age_secs"].as_f64().unwrap() >= 0.0);
    let rest = app
        .json(&format!(
            "/admin/withdrawals?state=pending&cursor={}",
            queue["next"].as_str().unwrap()
        ))
        .await;
    assert_eq!(rest["items"][0]["id"], ids[2]);
    let res = app.admin_get("/admin/withdrawals?state=lost").await;
    assert_eq!(res.status(), 400);
}

/// The same transaction cannot pay a second withdrawal; that claim can fail, and its hold
/// comes back.
async fn a_signature_pays_one_withdrawal(app: &TestApp, a: &Account, sig: &str) {
    let ask = |amount: i64| json!({"token": "usdc", "amount": amount, "destination": WALLET});
    let (status, w) = post(app, a, "/api/v1/me/withdrawals", ask(50)).await;
    let id = w["id"].as_i64().unwrap_or_else(|| panic!("{status} {w}"));
    app.admin_post_json(&format!("/admin/withdrawals/{id}/claim"), &json!({}))
        .await;
    let res = app
        .admin_post_json(
            &format!("/admin/withdrawals/{id}/complete"),
            &json!({"signature": sig}),
        )
        .await;
    assert_eq!(res.status(), 409, "a signature completes one withdrawal");
    let body: Value = res.json().await.unwrap();
    assert_eq!(body["error"]["code"], "signature_used", "{body}");
    let res = app
        .admin_post_json(
            &format!("/admin/withdrawals/{id}/fail"),
            &json!({"reason": "not sent"}),
        )
        .await;
    assert_eq!(res.status(), 200, "a claim can fail; the hold comes back");
    assert_eq!(balance(&app.store, &user_account(a.id), "usdc").await, 700);
}
both_backends!(a_claimed_withdrawal_is_never_refunded_and_a_signature_pays_once: claims_sqlite, claims_postgres);

async fn withdrawals_below_the_minimum_or_past_the_pending_cap_are_refused(db: Db) {
    let app = spawn_app(
        &db,
        &[
            ("TIPOFF_TOKENS", &tokens_setting()),
            ("TIPOFF_MIN_WITHDRAWAL", "usdc=100,pump=7"),
            ("TIPOFF_MAX_PENDING_WITHDRAWALS", "3"),
        ],
    )
    .await;
    let a = register(&app.client, &app.address).await;
    fund(&app.store, "usdc", &a, 10_000).await;
    let ask = |amount: i64| json!({"token": "usdc", "amount": amount, "destination": WALLET});
    let (status, body) = post(&app, &a, "/api/v1/me/withdrawals", ask(99)).await;
    assert_eq!(status, 400);
    let message = body["error"]["message"].as_str().unwrap();
    assert!(message.contains("minimum withdrawal of 100"), "{message}");

    // Ten at once against a cap of three: exactly three get through.
    let calls: Vec<_> = (0..10)
        .map(|_| post(&app, &a, "/api/v1/me/withdrawals", ask(100)))
        .collect();
    let answers = futures_util::future::join_all(calls).await;
    let created = answers.iter().filter(|(s, _)| *s == 201).count();
    let refused: Vec<&Value> = answers
        .iter()
        .filter(|(s, _)| *s == 409)
        .map(|(_, b)| b)
        .collect();
    assert_eq!((created, refused.len()), (3, 7), "{answers:?}");
    assert!(refused[0]["error"]["message"]
        .as_str()
        .unwrap()
        .contains("at most 3 at once"));
    assert_eq!(
        balance(&app.store, &user_account(a.id), "usdc").await,
        10_000 - 300
    );
    assert_audit(&app).await;
    app.stop().await;
}
both_backends!(withdrawals_below_the_minimum_or_past_the_pending_cap_are_refused: withdrawal_limits_sqlite, withdrawal_limits_postgres);

#[actix_rt::test]
async fn registration_is_off_in_production_and_admins_still_create_users() {
    let app = spawn_app(
        &Db::Sqlite,
        &[
            ("TIPOFF_ENV", "production"),
            ("TIPOFF_TOKENS", &tokens_setting()),
        ],
    )
    .await;
    let res = app
        .client
        .post(format!("{}/api/v1/users", app.address))
        .json(&json!({}))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 403);
    let body: Value = res.json().await.unwrap();
    assert!(body["error"]["message"]
        .as_str()
        .unwrap()
        .contains("TIPOFF_REGISTRATION"));
    let res = app
        .admin_post_json("/admin/users", &json!({"name": "ops"}))
        .await;
    assert_eq!(res.status(), 201);
    let user: Value = res.json().await.unwrap();
    let key = user["api_key"].as_str().unwrap();
    assert!(key.starts_with("tpk_") && key.len() == 68);
    let (status, me) = user_call(
        &app.client,
        &app.address,
        key,
        reqwest::Method::GET,
        "/api/v1/me",
        None,
    )
    .await;
    assert_eq!(status, 200);
    assert_eq!(me["deposit_code"], user["deposit_code"]);
    assert_eq!(
        me["balances"].as_array().unwrap().len(),
        2,
        "one balance per configured token"
    );
    // The key itself is stored nowhere.
    let Store::Sqlite(pool, _) = &app.store else {
        unreachable!()
    };
    let stored: String = sqlx::query_scalar("SELECT api_key_hash FROM users")
        .fetch_one(pool)
        .await
        .unwrap();
    assert_ne!(stored, key);
    assert_eq!(stored.len(), 64);
    app.stop().await;
}
