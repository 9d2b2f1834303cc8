//! Market search on both backends: keyword search with nothing configured (real fixtures,
//! filters, bad and hostile queries, a renamed game), the `backfill` service against a mock
//! embeddings API (backlog drains, only changed markets re-embed, a failing API writes nothing
//! and restarts nothing, a dimension change needs a re-embed job), hybrid ranking that finds a
//! typo through the vectors, degradation to keyword search in time, and a SIGKILL mid-backfill
//! that resumes without re-embedding what committed.

use std::collections::HashSet;
use std::time::{Duration, Instant};

use chrono::Utc;
use serde_json::Value;
use tipoff_actors::espn::{parse_scoreboard, GameState, ScoreboardGame};

use crate::embeddings_mock::{Behaviour, MockEmbeddings};
use crate::helpers::*;

/// The real boards the tests search: two NBA days and one MLB day (38 games).
const BOARDS: &[(&str, &str)] = &[
    ("nba", "nba-scoreboard-20240129.json"),
    ("nba", "nba-scoreboard-20260224.json"),
    ("mlb", "mlb-scoreboard-20250928.json"),
];
const GAMES: usize = 38;

fn board(name: &str) -> Vec<ScoreboardGame> {
    parse_scoreboard(&espn_fixture(name)).expect("real fixture parses")
}

/// Stores every game of [`BOARDS`] (as a poller would) and answers how many.
async fn load_boards(store: &tipoff_actors::Store) -> usize {
    let mut n = 0;
    for (league, file) in BOARDS {
        let games = board(file);
        n += games.len();
        store
            .upsert_games(league, None, &games, Utc::now(), 200)
            .await
            .unwrap();
    }
    assert_eq!(n, GAMES);
    n
}

async fn search(app: &TestApp, query: &str) -> (u16, Value) {
    let res = app
        .client
        .get(format!("{}/api/v1/markets/search", app.address))
        .query(&[("q", query)])
        .send()
        .await
        .unwrap();
    let status = res.status().as_u16();
    (status, res.json().await.unwrap_or(Value::Null))
}

async fn search_with(app: &TestApp, params: &[(&str, &str)]) -> (u16, Value) {
    let res = app
        .client
        .get(format!("{}/api/v1/markets/search", app.address))
        .query(params)
        .send()
        .await
        .unwrap();
    let status = res.status().as_u16();
    (status, res.json().await.unwrap_or(Value::Null))
}

fn questions(body: &Value) -> Vec<String> {
    body["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["question"].as_str().unwrap().to_string())
        .collect()
}

async fn keyword_search_works_with_nothing_configured(db: Db) {
    let app = spawn_app(&db, &[]).await;
    load_boards(&app.store).await;

    let status = app.json("/debug/status").await;
    for name in ["search", "backfill"] {
        let row = service(&status, name).unwrap_or_else(|| panic!("{name} row: {status}"));
        assert_eq!(row["state"], "skipped");
        assert!(row["skip_reason"]
            .as_str()
            .unwrap()
            .contains("TIPOFF_EMBEDDINGS_URL"));
    }

    // Team names, abbreviations, cities; the mode says keyword.
    let (s, body) = search(&app, "celtics").await;
    assert_eq!(s, 200, "{body}");
    assert_eq!(body["mode"], "keyword");
    let q = questions(&body);
    assert_eq!(q.len(), 2, "{q:?}");
    assert!(q.iter().all(|q| q.contains("BOS")), "{q:?}");
    let first = &body["items"][0];
    assert!(first["score"].as_f64().unwrap() > 0.0);
    assert_eq!(first["ranks"]["keyword"], 1);
    assert!(first["ranks"]["vector"].is_null());
    assert_eq!(first["outcomes"][0]["key"], "home", "a market's own fields");

    let (_, body) = search(&app, "Boston").await;
    assert_eq!(
        questions(&body).len(),
        3,
        "two Celtics games, one Red Sox game"
    );
    let (_, body) = search_with(&app, &[("q", "bos"), ("league", "mlb")]).await;
    assert_eq!(questions(&body), vec!["Who wins DET @ BOS?"]);
    let (_, body) = search(&app, "LAL").await;
    assert_eq!(questions(&body).len(), 2);
    let (_, body) = search(&app, "Trail Blazers").await;
    assert!(questions(&body).iter().take(2).all(|q| q.contains("POR")));
    let (_, body) = search(&app, "2024-01-29").await;
    assert!(!questions(&body).is_empty(), "the start date is searchable");
    let (_, body) = search_with(&app, &[("q", "new york"), ("limit", "2")]).await;
    assert_eq!(questions(&body).len(), 2, "limit caps the answer");

    // Keyword search alone cannot see through a typo.
    let (_, body) = search(&app, "celtcs").await;
    assert!(questions(&body).is_empty(), "{body}");

    // State filter: one Celtics game is final on its board, the other has started; settle it.
    let (_, body) = search_with(&app, &[("q", "celtics"), ("state", "locked")]).await;
    assert_eq!(questions(&body), vec!["Who wins BOS @ PHX?"]);
    let mut game = board("nba-scoreboard-20260224.json")
        .into_iter()
        .find(|g| g.short_name == "BOS @ PHX")
        .unwrap();
    game.state = GameState::Final;
    game.home.score = Some(100);
    game.away.score = Some(110);
    app.store
        .upsert_games("nba", None, std::slice::from_ref(&game), Utc::now(), 200)
        .await
        .unwrap();
    let (_, body) = search_with(&app, &[("q", "celtics"), ("state", "settled")]).await;
    assert_eq!(questions(&body).len(), 2, "{body}");
    let (_, body) = search_with(&app, &[("q", "celtics"), ("state", "locked")]).await;
    assert!(questions(&body).is_empty(), "{body}");
    let (_, body) = search_with(&app, &[("q", "celtics"), ("league", "mlb")]).await;
    assert!(questions(&body).is_empty());

    // A re-import changes nothing; a game whose names change is found by its new name at once.
    load_boards(&app.store).await;
    let (_, body) = search(&app, "celtics").await;
    assert_eq!(questions(&body).len(), 2, "a re-import does not duplicate");
    game.name = "Boston Celtics at Phoenix Suns (Zzyzx Cup)".into();
    app.store
        .upsert_games("nba", None, std::slice::from_ref(&game), Utc::now(), 200)
        .await
        .unwrap();
    let (_, body) = search(&app, "zzyzx").await;
    assert_eq!(questions(&body), vec!["Who wins BOS @ PHX?"]);

    bad_queries_are_refused_or_match_nothing(&app).await;
    app.stop().await;
}

/// Bad queries are a 400 naming the problem; queries without letters or digits match nothing;
/// search syntax in user input never causes a 5xx.
async fn bad_queries_are_refused_or_match_nothing(app: &TestApp) {
    // Bad queries are a 400 naming the problem.
    for (params, needle) in [
        (vec![], "q is required"),
        (vec![("q", &*"a".repeat(201))], "201 characters"),
        (vec![("q", "celtics"), ("limit", "0")], "limit"),
        (vec![("q", "celtics"), ("limit", "abc")], "limit"),
        (vec![("q", "celtics"), ("state", "sideways")], "state"),
        (vec![("q", "celtics"), ("league", "xfl")], "league"),
    ] {
        let (s, body) = search_with(app, &params).await;
        assert_eq!(s, 400, "{params:?}: {body}");
        assert_eq!(body["error"]["code"], "bad_request");
        let message = body["error"]["message"].as_str().unwrap();
        assert!(message.contains(needle), "{params:?}: {message}");
    }

    // A query with no letters or digits (only spaces, only symbols) matches nothing.
    for q in ["   ", "*** :: &&", "\u{0345}"] {
        let (s, body) = search_with(app, &[("q", q)]).await;
        assert_eq!(s, 200, "{q:?}: {body}");
        assert_eq!(body["items"], serde_json::json!([]), "{q:?}");
    }

    // FTS syntax in user input never causes a 5xx.
    for q in [
        "\"",
        "\"\"",
        "celtics\"",
        "*",
        "celt*",
        "NEAR(celtics lakers)",
        "celtics NEAR lakers",
        "a:b",
        ":",
        "&",
        "celtics & lakers",
        "!celtics",
        "celtics | lakers",
        "(",
        ")",
        "((a",
        "'",
        "''",
        "-celtics",
        "+",
        "^",
        "{x}",
        "col:celtics",
        "terms:celtics",
        "AND",
        "OR",
        "NOT",
        "celtics AND",
        "OR OR",
        "\\",
        "%",
        "_",
        "😀",
        "Ωmega",
        "naïve",
        "\u{0}",
        "select * from markets",
        "'; drop table markets; --",
        "<script>",
        "0",
        "-1",
        "1e9",
        "ß",
        "İstanbul",
        "\u{202e}",
        "a\tb",
        "\n",
        "²",
        "㊿",
        "Ⅻ celtics",
        "x\u{301}",
        "١٢٣",
        "𝟙𝟚𝟛",
        "\"*\"",
        "NEAR/3",
        "celtics^2",
        "[celtics]",
    ] {
        let (s, body) = search(app, q).await;
        assert!(s == 200 || s == 400, "{q:?} answered {s}: {body}");
        if s == 200 {
            assert_eq!(body["mode"], "keyword");
        }
    }
}

both_backends!(keyword_search_works_with_nothing_configured:
    keyword_search_works_with_nothing_configured_on_sqlite,
    keyword_search_works_with_nothing_configured_on_postgres);

/// A database whose markets were stored before search existed (here: 2,500 markets whose
/// search rows are removed, every seventh kept) gets every document written at the next start,
/// across the start-up indexer's slices of 1,000, and each is searchable.
async fn markets_stored_before_search_are_indexed_at_start(db: Db) {
    let dir = tempfile::tempdir().unwrap();
    let store = fresh_store(&db, dir.path()).await;
    let template = board("nba-scoreboard-20240129.json").remove(0);
    let games: Vec<ScoreboardGame> = (0..2_500)
        .map(|i| {
            let mut g = template.clone();
            g.external_id = format!("constructed-{i}");
            g.name = format!("Game {i} of the Qwyx series");
            g.short_name = format!("G{i}");
            g.starts_at = template.starts_at + chrono::Duration::minutes(i);
            g
        })
        .collect();
    store
        .upsert_games("nba", None, &games, Utc::now(), 200)
        .await
        .unwrap();
    macro_rules! forget_and_count {
        ($pool:expr) => {{
            sqlx::query("DELETE FROM market_search WHERE market_id % 7 <> 0")
                .execute($pool)
                .await
                .unwrap();
            let kept: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM market_search")
                .fetch_one($pool)
                .await
                .unwrap();
            assert!((300..=400).contains(&kept), "{kept} documents kept");
            store.migrate().await.unwrap();
            let counts: (i64, i64) = sqlx::query_as(
                "SELECT (SELECT COUNT(*) FROM markets), (SELECT COUNT(*) FROM market_search)",
            )
            .fetch_one($pool)
            .await
            .unwrap();
            counts
        }};
    }
    let (markets, documents) = match &store {
        tipoff_actors::Store::Sqlite(pool, _) => forget_and_count!(pool),
        tipoff_actors::Store::Postgres(pool, _) => forget_and_count!(pool),
    };
    assert_eq!((markets, documents), (2_500, 2_500));

    let found = |q: &'static str| {
        let store = &store;
        async move {
            let query = tipoff_actors::store::KeywordQuery::parse(q).unwrap();
            let rows = store.keyword_search(&query, None, None, 5).await.unwrap();
            rows.into_iter().map(|r| r.question).collect::<Vec<_>>()
        }
    };
    assert_eq!(found("qwyx").await.len(), 5, "every new market matches");
    assert_eq!(
        found("G2499").await,
        vec!["Who wins G2499?"],
        "the last slice's last market"
    );
    assert_eq!(
        found("G1001").await,
        vec!["Who wins G1001?"],
        "past the first slice"
    );
    store.close().await;
}

both_backends!(markets_stored_before_search_are_indexed_at_start:
    markets_stored_before_search_are_indexed_at_start_on_sqlite,
    markets_stored_before_search_are_indexed_at_start_on_postgres);

/// The mock's URL as configured: with a path and a credential in the query, neither of which
/// may appear in an error.
fn configured_url(mock: &MockEmbeddings) -> &'static str {
    Box::leak(format!("{}/v1?api-version=hidden-credential", mock.url).into_boxed_str())
}

fn embeddings_env<'a>(
    mock: &'a MockEmbeddings,
    extra: &[(&'a str, &'a str)],
) -> Vec<(&'a str, &'a str)> {
    let mut env = vec![
        ("TIPOFF_EMBEDDINGS_URL", configured_url(mock)),
        ("TIPOFF_EMBEDDINGS_MODEL", "mock-trigrams"),
        ("TIPOFF_EMBEDDINGS_API_KEY", "sk-test-secret-key"),
        ("TIPOFF_EMBEDDINGS_BATCH", "8"),
        ("TIPOFF_EMBEDDINGS_INTERVAL", "200ms"),
        ("TIPOFF_EMBEDDINGS_BACKOFF_BASE", "100ms"),
        ("TIPOFF_EMBEDDINGS_BACKOFF_CAP", "300ms"),
        ("TIPOFF_EMBEDDINGS_TIMEOUT", "1s"),
        ("TIPOFF_SEARCH_REFRESH_INTERVAL", "200ms"),
    ];
    env.extend_from_slice(extra);
    env
}

/// Waits until the backlog is empty and the local index holds `vectors`; answers the status.
async fn wait_embedded(app: &TestApp, vectors: u64) -> Value {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let e = app.json("/admin/embeddings").await;
        if e["backlog"] == 0 && e["index_vectors"].as_u64() == Some(vectors) {
            return e;
        }
        assert!(Instant::now() < deadline, "backfill did not drain: {e}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

async fn backfill(app: &TestApp) -> Value {
    service(&app.json("/debug/status").await, "backfill").unwrap()
}

async fn hybrid_search_finds_a_typo_through_the_vectors(db: Db) {
    let mock = MockEmbeddings::start(1024);
    let app = spawn_app(&db, &embeddings_env(&mock, &[])).await;
    load_boards(&app.store).await;
    let e = wait_embedded(&app, GAMES as u64).await;
    assert_eq!(e["embedded"], GAMES as u64);
    let status = app.json("/debug/status").await;
    assert_eq!(status["search"]["mode"], "hybrid", "{status}");
    assert_eq!(status["search"]["backlog"], 0);
    assert_eq!(status["search"]["embedded_total"], GAMES as u64);
    assert!(status["search"]["rate_per_second"].as_f64().unwrap() > 0.0);
    assert_eq!(e["model"], "mock-trigrams");
    // Nothing embedded twice. Batches hold 8; one may be short when a pass ran while the
    // boards were still being stored.
    let inputs = mock.inputs();
    let unique: std::collections::HashSet<&String> = inputs.iter().collect();
    assert_eq!(inputs.len(), GAMES, "{inputs:?}");
    assert_eq!(unique.len(), GAMES, "a market embedded twice: {inputs:?}");
    assert!(
        (GAMES.div_ceil(8)..=GAMES.div_ceil(8) + 3).contains(&mock.calls()),
        "{} calls for {GAMES} markets in batches of 8",
        mock.calls()
    );
    assert_eq!(
        mock.authorization().as_deref(),
        Some("Bearer sk-test-secret-key")
    );

    // The typo: only the vector path can find it.
    let (s, body) = search(&app, "celtcs").await;
    assert_eq!(s, 200, "{body}");
    assert_eq!(body["mode"], "hybrid");
    let top = &body["items"][0];
    assert!(
        top["league"] == "nba" && top["question"].as_str().unwrap().contains("BOS"),
        "the Celtics first: {body}"
    );
    assert!(top["ranks"]["keyword"].is_null(), "{top}");
    assert_eq!(top["ranks"]["vector"], 1);
    // Both paths agree on an exact name; filters apply to both rankings.
    let (_, body) = search(&app, "celtics").await;
    let top = &body["items"][0];
    assert!(
        top["ranks"]["keyword"].is_number() && top["ranks"]["vector"].is_number(),
        "{top}"
    );
    let (_, body) = search_with(&app, &[("q", "celtcs"), ("league", "mlb")]).await;
    assert!(body["items"]
        .as_array()
        .unwrap()
        .iter()
        .all(|m| m["league"] == "mlb"));
    let (_, body) = search_with(&app, &[("q", "lakrs"), ("state", "open")]).await;
    assert!(
        body["items"].as_array().unwrap().is_empty(),
        "every fixture game has started: {body}"
    );

    // Nothing secret in the status or the metrics.
    let status = app.json("/debug/status").await.to_string();
    assert!(!status.contains("sk-test-secret-key"));
    let metrics = app.get("/metrics").await.text().await.unwrap();
    assert!(!metrics.contains("sk-test-secret-key"));
    for line in [
        "tipoff_embeddings_backlog 0",
        &format!("tipoff_embeddings_vectors {GAMES}"),
        &format!("tipoff_embeddings_embedded_total {GAMES}"),
        &format!("tipoff_search_index_vectors {GAMES}"),
        "tipoff_search_requests_total{mode=\"hybrid\"}",
    ] {
        assert!(metrics.contains(line), "{line} in\n{metrics}");
    }

    // The embeddings API stalls: the answer comes by keyword, in time.
    mock.set(Behaviour::Stall(Duration::from_secs(5)));
    let started = Instant::now();
    let (s, body) = search(&app, "celtics").await;
    let took = started.elapsed();
    assert_eq!(s, 200);
    assert_eq!(body["mode"], "keyword");
    assert_eq!(questions(&body).len(), 2);
    assert!(
        took < Duration::from_millis(1500),
        "answered after {took:?}"
    );
    // Down altogether: keyword again, never a 5xx.
    mock.set(Behaviour::Status(503, None));
    let (s, body) = search(&app, "lakers").await;
    assert_eq!((s, body["mode"].as_str()), (200, Some("keyword")));
    app.stop().await;
}

both_backends!(hybrid_search_finds_a_typo_through_the_vectors:
    hybrid_search_finds_a_typo_through_the_vectors_on_sqlite,
    hybrid_search_finds_a_typo_through_the_vectors_on_postgres);

async fn backfill_reembeds_only_what_changed_and_absorbs_a_failing_api(db: Db) {
    let mock = MockEmbeddings::start(64);
    mock.set(Behaviour::Status(500, None));
    let app = spawn_app(&db, &embeddings_env(&mock, &[])).await;
    load_boards(&app.store).await;

    // Every kind of bad answer: no vector written, the service running with the error.
    let unembedded = |app: &TestApp| {
        let store = app.store.clone();
        async move { store.embedded_count("mock-trigrams").await.unwrap() }
    };
    for (behaviour, needle) in [
        (Behaviour::Status(500, None), "HTTP 500"),
        (Behaviour::Status(429, Some(1)), "HTTP 429"),
        (Behaviour::Stall(Duration::from_secs(3)), "timed out"),
        (Behaviour::Garbage, "unusable"),
        (Behaviour::WrongCount, "7 vectors for 8 inputs"),
    ] {
        mock.set(behaviour.clone());
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let row = backfill(&app).await;
            let message = row["last_error"]["message"].as_str().unwrap_or("");
            if message.contains(needle) {
                assert_eq!(row["state"], "running", "{row}");
                assert_eq!(row["restarts"], 0, "absorbed, not restarted: {row}");
                assert!(
                    !message.contains("/v1") && !message.contains("hidden-credential"),
                    "the host, not the URL: {message}"
                );
                break;
            }
            assert!(Instant::now() < deadline, "{behaviour:?}: {row}");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        assert_eq!(unembedded(&app).await, 0, "{behaviour:?} wrote nothing");
    }
    let row = backfill(&app).await;
    assert!(
        row["interval_reason"].as_str().unwrap().contains("failing"),
        "{row}"
    );

    // Healthy again: the backlog drains.
    mock.set(Behaviour::Healthy);
    wait_embedded(&app, GAMES as u64).await;
    let before = mock.inputs().len();

    // A renamed game re-embeds that market only.
    let mut game = board("nba-scoreboard-20240129.json").remove(0);
    game.name = "New York Knicks at Charlotte Hornets, rescheduled".into();
    let market = app
        .store
        .upsert_games("nba", None, std::slice::from_ref(&game), Utc::now(), 200)
        .await
        .unwrap()[0]
        .market_id;
    let deadline = Instant::now() + Duration::from_secs(10);
    while mock.inputs().len() == before {
        assert!(
            Instant::now() < deadline,
            "the renamed market was not re-embedded"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    wait_embedded(&app, GAMES as u64).await;
    let again = mock.inputs()[before..].to_vec();
    let doc = app.store.search_document_of(market).await.unwrap();
    assert_eq!(again, vec![doc.document.clone()], "only the renamed market");
    assert!(doc.document.contains("rescheduled"));

    a_new_dimension_waits_for_a_reembed_job(&app, &mock).await;
    app.stop().await;
}

/// The API switches dimension: refused until a re-embed job is asked for, which then
/// re-embeds every market once.
async fn a_new_dimension_waits_for_a_reembed_job(app: &TestApp, mock: &MockEmbeddings) {
    // The API switches dimension: refused until a re-embed job is asked for.
    mock.set_dim(32);
    let mut game = board("mlb-scoreboard-20250928.json").remove(0);
    game.name = "Baltimore Orioles at New York Yankees, game two".into();
    app.store
        .upsert_games("mlb", None, std::slice::from_ref(&game), Utc::now(), 200)
        .await
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let row = backfill(app).await;
        if row["last_error"]["message"]
            .as_str()
            .is_some_and(|m| m.contains("32-dimension") && m.contains("reindex"))
        {
            assert_eq!(row["restarts"], 0);
            break;
        }
        assert!(Instant::now() < deadline, "{row}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let res = app.admin_post("/admin/embeddings/reindex").await;
    assert_eq!(res.status(), 202);
    let job: Value = res.json().await.unwrap();
    assert_eq!(job["total"], GAMES as u64);
    let again = app.admin_post("/admin/embeddings/reindex").await;
    assert!(again.status() == 200 || again.status() == 202);
    let deadline = Instant::now() + Duration::from_secs(20);
    let job = loop {
        let j = app
            .json(&format!("/admin/embeddings/jobs/{}", job["id"]))
            .await;
        if j["state"] == "succeeded" {
            break j;
        }
        assert!(Instant::now() < deadline, "{j}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert_eq!(job["done"], GAMES as u64);
    assert_eq!(
        app.store
            .stored_dimension("mock-trigrams", None)
            .await
            .unwrap(),
        Some(32)
    );
    let list = app.json("/admin/embeddings/jobs").await;
    assert_eq!(list["items"][0]["id"], job["id"]);
    assert_eq!(backfill(app).await["restarts"], 0);
}

both_backends!(backfill_reembeds_only_what_changed_and_absorbs_a_failing_api:
    backfill_reembeds_only_what_changed_and_absorbs_a_failing_api_on_sqlite,
    backfill_reembeds_only_what_changed_and_absorbs_a_failing_api_on_postgres);

#[actix_rt::test]
async fn reindex_without_embeddings_is_a_conflict_that_says_why() {
    let app = spawn_app(&Db::Sqlite, &[]).await;
    let res = app.admin_post("/admin/embeddings/reindex").await;
    assert_eq!(res.status(), 409);
    let body: Value = res.json().await.unwrap();
    assert!(body["error"]["message"]
        .as_str()
        .unwrap()
        .contains("TIPOFF_EMBEDDINGS_URL"));
    let e = app.json("/admin/embeddings").await;
    assert_eq!(e["configured"], false);
    app.stop().await;
}

/// A backfill killed mid-way resumes with what is left: no committed market is embedded again.
fn a_killed_backfill_resumes_without_reembedding_committed_batches(db: Db) {
    let mock = MockEmbeddings::start(64);
    mock.set_delay(Duration::from_millis(150));
    let dir = tempfile::tempdir().unwrap();
    let url = database_url(&db, dir.path());
    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(async {
        let store = fresh_store(&db, dir.path()).await;
        load_boards(&store).await;
        store.close().await;
    });
    let env = [
        ("TIPOFF_DATABASE_URL", url.as_str()),
        ("TIPOFF_EMBEDDINGS_URL", mock.url.as_str()),
        ("TIPOFF_EMBEDDINGS_MODEL", "mock-trigrams"),
        ("TIPOFF_EMBEDDINGS_BATCH", "4"),
        ("TIPOFF_EMBEDDINGS_CONCURRENCY", "1"),
        ("TIPOFF_LEADER_TTL", "2s"),
    ];
    let count = |url: &str| {
        rt.block_on(async {
            let store = tipoff_actors::Store::connect(url, &Default::default())
                .await
                .unwrap();
            let n = store.embedded_count("mock-trigrams").await.unwrap();
            store.close().await;
            n
        })
    };
    let mut d = Daemon::spawn_in(tempfile::tempdir().unwrap(), &env);
    d.wait_notify("READY=1", Duration::from_secs(20));
    let deadline = Instant::now() + Duration::from_secs(20);
    while mock.inputs().len() < 12 {
        assert!(
            Instant::now() < deadline,
            "backfill did not start: {}",
            d.stderr()
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    d.signal(libc::SIGKILL);
    d.wait_exit(Duration::from_secs(5));
    let first_run: Vec<String> = mock.inputs();
    let committed = count(&url) as usize;
    assert!(
        (8..GAMES).contains(&committed),
        "killed mid-way: {committed}"
    );

    let d = Daemon::spawn_in(tempfile::tempdir().unwrap(), &env);
    d.wait_notify("READY=1", Duration::from_secs(20));
    let client = reqwest::blocking::Client::new();
    let embedded = || -> i64 {
        let e: Value = client
            .get(d.url("/admin/embeddings"))
            .bearer_auth(ADMIN_TOKEN)
            .send()
            .unwrap()
            .json()
            .unwrap();
        e["embedded"].as_i64().unwrap()
    };
    let deadline = Instant::now() + Duration::from_secs(30);
    while embedded() < GAMES as i64 {
        assert!(
            Instant::now() < deadline,
            "backlog did not drain: {}",
            d.stderr()
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    let second_run: Vec<String> = mock.inputs()[first_run.len()..].to_vec();
    assert_eq!(
        second_run.len(),
        GAMES - committed,
        "after the restart only what had not committed is embedded"
    );
    // What the first run committed is never in the second run (the batch cut short is).
    let again: HashSet<&String> = second_run.iter().collect();
    let first_committed = &first_run[..committed];
    assert!(
        first_committed.iter().all(|doc| !again.contains(doc)),
        "a committed batch was embedded again"
    );
    drop(d);
}

both_backends!(blocking a_killed_backfill_resumes_without_reembedding_committed_batches: a_killed_backfill_resumes_without_reembedding_committed_batches_on_sqlite, a_killed_backfill_resumes_without_reembedding_committed_batches_on_postgres);

/// Two replicas on one PostgreSQL: only the leader embeds (every market once), and the
/// follower's index reads the leader's vectors from the database and answers hybrid searches.
#[actix_rt::test]
async fn a_follower_searches_with_the_vectors_its_leader_embedded_on_postgres() {
    let Some(url) = postgres_db("a_follower_searches_with_the_vectors_its_leader_embedded").await
    else {
        return;
    };
    let db = Db::Postgres(url);
    let mock = MockEmbeddings::start(1024);
    let env = embeddings_env(&mock, &[("TIPOFF_LEADER_TTL", "2s")]);
    let leader = spawn_app(&db, &env).await;
    let follower = spawn_app(&db, &env).await;
    let role = |status: &Value| status["leader"].as_bool().unwrap();
    assert!(role(&leader.json("/debug/status").await));
    assert!(!role(&follower.json("/debug/status").await));
    load_boards(&leader.store).await;
    wait_embedded(&leader, GAMES as u64).await;
    let e = wait_embedded(&follower, GAMES as u64).await;
    assert_eq!(e["embedded"], GAMES as u64);
    assert_eq!(
        service(&follower.json("/debug/status").await, "backfill").unwrap()["state"],
        "standby"
    );
    let (s, body) = search(&follower, "celtcs").await;
    assert_eq!(s, 200);
    assert_eq!(body["mode"], "hybrid", "{body}");
    let top = &body["items"][0];
    assert!(
        top["league"] == "nba" && top["question"].as_str().unwrap().contains("BOS"),
        "{body}"
    );
    let inputs = mock.inputs();
    let unique: HashSet<&String> = inputs.iter().filter(|i| i.contains('·')).collect();
    assert_eq!(
        inputs.iter().filter(|i| i.contains('·')).count(),
        unique.len(),
        "no document embedded twice"
    );
    assert_eq!(unique.len(), GAMES);
    follower.stop().await;
    leader.stop().await;
}
