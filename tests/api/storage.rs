//! Storage on both backends: migrations, seeding, the single-process SQLite lock, and the db
//! service's health following a PostgreSQL that goes away and comes back.

use std::time::Duration;

use serde_json::Value;
use tipoff_actors::{Store, StoreError, StoreOptions};

use crate::helpers::*;

async fn migrations_apply_cleanly_and_seed_the_catalog(url: &str) {
    let store = Store::connect(url, &StoreOptions::default()).await.unwrap();
    store.migrate().await.unwrap();
    assert!(store
        .table_names()
        .await
        .unwrap()
        .contains(&"leagues".to_string()));
    assert_eq!(store.reconcile_catalog().await.unwrap().added.len(), 5);
    store.migrate().await.expect("migrating twice is a no-op");
    assert_eq!(
        store.reconcile_catalog().await.unwrap(),
        Default::default(),
        "a catalog in line is left alone"
    );
    let leagues = store.leagues().await.unwrap();
    let nba = leagues.iter().find(|l| l.key == "nba").unwrap();
    assert_eq!(nba.espn_path, "basketball/nba");
    assert_eq!(leagues.len(), 5);
    store.close().await;
}

#[actix_rt::test]
async fn migrations_apply_cleanly_and_seed_the_catalog_on_sqlite() {
    let dir = tempfile::tempdir().unwrap();
    let url = format!(
        "sqlite://{}",
        dir.path().join("fresh/nested/tipoff.db").display()
    );
    migrations_apply_cleanly_and_seed_the_catalog(&url).await;
    assert!(
        dir.path().join("fresh/nested/tipoff.db").exists(),
        "a missing SQLite file is created"
    );
}

#[actix_rt::test]
async fn migrations_apply_cleanly_and_seed_the_catalog_on_postgres() {
    let Some(url) = postgres_db("migrations_apply_cleanly_and_seed_the_catalog_on_postgres").await
    else {
        return;
    };
    migrations_apply_cleanly_and_seed_the_catalog(&url).await;
}

#[actix_rt::test]
async fn a_second_store_on_the_same_sqlite_file_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let url = format!("sqlite://{}", dir.path().join("tipoff.db").display());
    let first = Store::connect(&url, &StoreOptions::default())
        .await
        .unwrap();
    let err = Store::connect(&url, &StoreOptions::default())
        .await
        .unwrap_err();
    assert!(matches!(err, StoreError::Locked { .. }), "{err}");
    assert!(err.to_string().contains("another tipoff process"), "{err}");
    first.close().await;
    drop(first);
    Store::connect(&url, &StoreOptions::default())
        .await
        .expect("the lock is released with the store");
}

#[actix_rt::test]
async fn sqlite_runs_in_wal_mode() {
    let dir = tempfile::tempdir().unwrap();
    let url = format!("sqlite://{}", dir.path().join("tipoff.db").display());
    let store = Store::connect(&url, &StoreOptions::default())
        .await
        .unwrap();
    let Store::Sqlite(pool, _) = &store else {
        unreachable!()
    };
    let mode: String = sqlx::query_scalar("PRAGMA journal_mode")
        .fetch_one(pool)
        .await
        .unwrap();
    assert_eq!(mode, "wal");
    let busy: i64 = sqlx::query_scalar("PRAGMA busy_timeout")
        .fetch_one(pool)
        .await
        .unwrap();
    assert!(busy >= 1000, "busy timeout {busy} ms");
}

#[actix_rt::test]
async fn db_reports_unhealthy_while_postgres_is_unreachable_and_recovers_by_itself() {
    let Some(url) =
        postgres_db("db_reports_unhealthy_while_postgres_is_unreachable_and_recovers_by_itself")
            .await
    else {
        return;
    };
    let opts: sqlx::postgres::PgConnectOptions = url.parse().unwrap();
    let mut proxy = Proxy::start(&format!("{}:{}", opts.get_host(), opts.get_port())).await;
    let proxied = url.replacen(
        &format!("{}:{}", opts.get_host(), opts.get_port()),
        &format!("127.0.0.1:{}", proxy.port),
        1,
    );
    assert_ne!(proxied, url, "the URL must go through the proxy");
    let app = spawn_app(
        &Db::Postgres(proxied),
        &[("TIPOFF_DB_STARTUP_TIMEOUT", "1s")],
    )
    .await;

    proxy.cut();
    app.wait_status("/ready", 503, Duration::from_secs(10))
        .await;
    let body: Value = app.get("/ready").await.json().await.unwrap();
    assert_eq!(body["error"]["message"], "database unavailable");
    let status: Value = app.admin_get("/debug/status").await.json().await.unwrap();
    assert_eq!(status["database"]["healthy"], false);
    assert!(
        status["services"][0]["last_error"]["message"]
            .as_str()
            .unwrap()
            .contains("database unreachable"),
        "{status}"
    );
    assert_eq!(
        status["services"][0]["state"], "running",
        "an unreachable database is not a crash loop"
    );

    proxy.restore().await;
    app.wait_status("/ready", 200, Duration::from_secs(10))
        .await;
    let status: Value = app.admin_get("/debug/status").await.json().await.unwrap();
    assert_eq!(status["database"]["healthy"], true);
    assert_eq!(app.stop().await.code(), 0);
}

/// SQLite commits reach the disk before they return (`synchronous=FULL`), and an amount can
/// never become a float: an overflowing update is refused and changes nothing.
#[actix_rt::test]
async fn sqlite_commits_are_durable_and_amounts_stay_integers() {
    let dir = tempfile::tempdir().unwrap();
    let store = fresh_store(&Db::Sqlite, dir.path()).await;
    let Store::Sqlite(pool, _) = &store else {
        unreachable!("a SQLite store")
    };
    let synchronous: i64 = sqlx::query_scalar("PRAGMA synchronous")
        .fetch_one(pool)
        .await
        .unwrap();
    assert_eq!(synchronous, 2, "FULL");
    sqlx::query("INSERT INTO balances (account, token, amount) VALUES ('house', 'usdc', 9223372036854775000)")
        .execute(pool)
        .await
        .unwrap();
    let overflow =
        sqlx::query("UPDATE balances SET amount = amount + 1000 WHERE account = 'house'")
            .execute(pool)
            .await
            .expect_err("an overflow is refused");
    assert!(
        overflow.to_string().contains("must be an integer"),
        "{overflow}"
    );
    let float = sqlx::query("INSERT INTO ledger_entries (transfer_id, account, token, amount, kind, reference, created_at) VALUES ('t1', 'house', 'usdc', 1.5, 'fee', 'x', '2026-01-01T00:00:00Z')")
        .execute(pool)
        .await
        .expect_err("a fractional amount is refused");
    assert!(float.to_string().contains("must be an integer"), "{float}");
    let (amount, kind): (i64, String) =
        sqlx::query_as("SELECT amount, typeof(amount) FROM balances WHERE account = 'house'")
            .fetch_one(pool)
            .await
            .unwrap();
    assert_eq!((amount, kind.as_str()), (9223372036854775000, "integer"));
}

/// A database that stops answering gives clients a 503 `unavailable` with `Retry-After` on
/// every kind of route (reads, writes, user and admin authentication), never a 500.
#[actix_rt::test]
async fn a_database_outage_answers_503_with_retry_after_not_500() {
    let Some(url) = postgres_db("a_database_outage_answers_503_with_retry_after_not_500").await
    else {
        return;
    };
    let opts: sqlx::postgres::PgConnectOptions = url.parse().unwrap();
    let upstream = format!("{}:{}", opts.get_host(), opts.get_port());
    let mut proxy = Proxy::start(&upstream).await;
    let proxied = url.replacen(&upstream, &format!("127.0.0.1:{}", proxy.port), 1);
    let app = spawn_app(
        &Db::Postgres(proxied),
        &[
            ("TIPOFF_TOKENS", &crate::money::tokens_setting()),
            ("TIPOFF_DB_STARTUP_TIMEOUT", "1s"),
            ("TIPOFF_READ_CACHE_TTL", "0s"),
        ],
    )
    .await;
    let user = crate::money::register(&app.client, &app.address).await;
    proxy.cut();
    let calls = [
        ("GET", "/api/v1/games?limit=7", None),
        ("GET", "/api/v1/me", Some(user.key.as_str())),
        ("POST", "/api/v1/users", None),
        ("GET", "/admin/withdrawals", Some(ADMIN_TOKEN)),
    ];
    for (method, path, key) in calls {
        let mut req = app
            .client
            .request(method.parse().unwrap(), format!("{}{path}", app.address))
            .timeout(Duration::from_secs(10));
        if let Some(key) = key {
            req = req.bearer_auth(key);
        }
        if method == "POST" {
            req = req.json(&serde_json::json!({}));
        }
        let res = req.send().await.unwrap();
        assert_eq!(res.status(), 503, "{method} {path}");
        assert_eq!(
            res.headers()
                .get("retry-after")
                .map(|v| v.to_str().unwrap()),
            Some("2"),
            "{method} {path}"
        );
        let body: Value = res.json().await.unwrap();
        assert_eq!(
            body["error"]["code"], "unavailable",
            "{method} {path}: {body}"
        );
    }
    proxy.restore().await;
    app.stop().await;
}

/// A database made by an older catalog (a league missing, a path since changed, one the
/// catalog no longer has) is brought in line on the next start, and the games of the added
/// league can then be stored.
async fn the_catalog_heals_an_existing_database(db: Db) {
    let dir = tempfile::tempdir().unwrap();
    let store = fresh_store(&db, dir.path()).await;
    let url = database_url(&db, dir.path());
    let raw = |sql: &'static str| {
        let url = url.clone();
        let db = db.clone();
        async move {
            match db {
                Db::Sqlite => {
                    let pool = sqlx::SqlitePool::connect(&url).await.unwrap();
                    sqlx::query(sql).execute(&pool).await.unwrap();
                    pool.close().await;
                }
                Db::Postgres(_) => {
                    let pool = sqlx::PgPool::connect(&url).await.unwrap();
                    sqlx::query(sql).execute(&pool).await.unwrap();
                    pool.close().await;
                }
            }
        }
    };
    raw("DELETE FROM leagues WHERE key = 'nhl'").await;
    raw("UPDATE leagues SET espn_path = 'basketball/old-nba' WHERE key = 'nba'").await;
    raw("INSERT INTO leagues (key, name, sport, espn_path) VALUES ('xfl', 'XFL', 'football', 'football/xfl')").await;
    let changes = store.reconcile_catalog().await.unwrap();
    assert_eq!(changes.added, vec!["nhl".to_string()]);
    assert_eq!(changes.updated, vec!["nba".to_string()]);
    assert_eq!(changes.unknown, vec!["xfl".to_string()]);
    let leagues = store.leagues().await.unwrap();
    let nba = leagues.iter().find(|l| l.key == "nba").unwrap();
    assert_eq!(nba.espn_path, "basketball/nba");
    assert!(leagues.iter().any(|l| l.key == "nhl"));
    // A game of the added league is stored (its foreign key holds).
    let games =
        tipoff_actors::espn::parse_scoreboard(&espn_fixture("nba-scoreboard-20240129.json"))
            .unwrap();
    store
        .upsert_game("nhl", &games[0], chrono::Utc::now())
        .await
        .expect("a game of the healed league is stored");
    assert_eq!(
        store.reconcile_catalog().await.unwrap().added,
        Vec::<String>::new(),
        "once in line, nothing more to add"
    );
}

both_backends!(the_catalog_heals_an_existing_database:
    the_catalog_heals_on_sqlite, the_catalog_heals_on_postgres);

/// The storage class a SQLite declared type stands for (its type affinity, with BOOLEAN as
/// the integer it is stored as).
fn sqlite_affinity(declared: &str) -> &'static str {
    let t = declared.to_ascii_uppercase();
    if t.contains("INT") || t == "BOOLEAN" {
        "INTEGER"
    } else if t.contains("REAL") || t.contains("FLOA") || t.contains("DOUB") {
        "REAL"
    } else if t.contains("BLOB") {
        "BLOB"
    } else {
        "TEXT"
    }
}

/// SQLite's declared type a PostgreSQL column type is stored as.
fn sqlite_type_of(pg: &str) -> &'static str {
    match pg {
        "bigint" | "integer" | "smallint" | "boolean" => "INTEGER",
        "double precision" | "real" | "numeric" => "REAL",
        "bytea" => "BLOB",
        _ => "TEXT", // text, timestamps, dates, json
    }
}

/// The two migration trees cannot drift: the same versions, and after them both backends
/// hold the same tables with the same columns (types mapped). The full-text machinery is the
/// one documented difference: SQLite's FTS5 table (`market_fts` and its shadow tables) and
/// PostgreSQL's generated `tsv` column.
#[actix_rt::test]
async fn both_migration_trees_have_the_same_versions_tables_and_columns() {
    let versions = |tree: &str| -> Vec<String> {
        let dir = format!("{}/migrations/{tree}", env!("CARGO_MANIFEST_DIR"));
        let mut names: Vec<String> = std::fs::read_dir(dir)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        names.sort();
        names
    };
    assert_eq!(versions("sqlite"), versions("postgres"));

    let Some(pg_url) = postgres_db("both_migration_trees_have_the_same_versions").await else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let sqlite_url = database_url(&Db::Sqlite, dir.path());
    for url in [&sqlite_url, &pg_url] {
        let store = Store::connect(url, &StoreOptions::default()).await.unwrap();
        store.migrate().await.unwrap();
        store.close().await;
    }
    type Columns = std::collections::BTreeMap<String, Vec<(String, String)>>;
    let mut sqlite: Columns = Default::default();
    let pool = sqlx::SqlitePool::connect(&sqlite_url).await.unwrap();
    let tables: Vec<String> = sqlx::query_scalar(
        "SELECT name FROM sqlite_master WHERE type = 'table' AND name NOT LIKE 'sqlite_%' AND name NOT LIKE '_sqlx%' AND name NOT LIKE 'market_fts%'",
    )
    .fetch_all(&pool)
    .await
    .unwrap();
    for t in tables {
        let cols: Vec<(String, String)> = sqlx::query_as(&format!(
            "SELECT name, upper(type) FROM pragma_table_info('{t}')"
        ))
        .fetch_all(&pool)
        .await
        .unwrap();
        let mut cols: Vec<(String, String)> = cols
            .into_iter()
            .map(|(n, ty)| (n, sqlite_affinity(&ty).to_string()))
            .collect();
        cols.sort();
        sqlite.insert(t, cols);
    }
    pool.close().await;
    let mut postgres: Columns = Default::default();
    let pool = sqlx::PgPool::connect(&pg_url).await.unwrap();
    let rows: Vec<(String, String, String)> = sqlx::query_as(
        "SELECT table_name::text, column_name::text, data_type::text FROM information_schema.columns WHERE table_schema = current_schema() AND table_name NOT LIKE '_sqlx%'",
    )
    .fetch_all(&pool)
    .await
    .unwrap();
    pool.close().await;
    for (t, c, ty) in rows {
        if c == "tsv" && ty == "tsvector" {
            continue;
        }
        postgres
            .entry(t)
            .or_default()
            .push((c, sqlite_type_of(&ty).to_string()));
    }
    for cols in postgres.values_mut() {
        cols.sort();
    }
    assert_eq!(
        sqlite.keys().collect::<Vec<_>>(),
        postgres.keys().collect::<Vec<_>>(),
        "the same tables"
    );
    for (table, cols) in &sqlite {
        assert_eq!(
            cols, &postgres[table],
            "columns of {table} (SQLite vs PostgreSQL)"
        );
    }
}
