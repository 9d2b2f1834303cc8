//! Storage behind one seam: [`Store`] is a PostgreSQL or SQLite pool. SQL that both backends
//! accept (`$1` placeholders work in both) is written once here; what differs lives in
//! `sqlite.rs` and `postgres.rs`, each with its own migration tree under `migrations/`.

/// Runs the same body against whichever pool `store` holds (the SQL must suit both).
macro_rules! on_pool {
    ($store:expr, $pool:ident => $body:expr) => {
        match $store {
            Store::Sqlite($pool, _) => $body,
            Store::Postgres($pool, _) => $body,
        }
    };
}

/// Runs a transaction body (an expression evaluating to `Result<_, StoreError>`, which may
/// `return` early) again when PostgreSQL aborted it for a serialization failure or a deadlock
/// (SQLSTATE 40001, 40P01): up to [`TRANSACTION_RETRIES`] more times, after a short jittered
/// pause, before the error reaches a caller. Each retry is counted in [`transaction_retries`].
macro_rules! retrying {
    ($body:expr) => {{
        let mut attempt: u32 = 0;
        loop {
            let result: Result<_, $crate::store::StoreError> = async { $body }.await;
            match result {
                Err(e) if e.is_retryable() && attempt < $crate::store::TRANSACTION_RETRIES => {
                    attempt += 1;
                    $crate::store::note_retry(attempt).await;
                }
                other => break other,
            }
        }
    }};
}

#[macro_use]
mod reads;
#[macro_use]
pub mod lease;
#[macro_use]
pub(crate) mod outbox;
#[macro_use]
pub(crate) mod money;
#[macro_use]
pub mod search;
#[macro_use]
mod games;
mod imports;
pub mod postgres;
mod quarantine;
mod sessions;
mod sqlite;

pub use games::{
    Activity, GameFilter, GameRow, MarketFilter, MarketRow, MarketTransition, Upserted,
};
pub use imports::{
    DatePass, FailedDate, ImportFilter, ImportJob, PendingDate, ACTIVE_IMPORT_STATES, IMPORT_STATES,
};
pub use money::{
    lock_rank, parimutuel, user_account, Audit, Balance, Credited, Cursor, Deposit,
    IncomingDeposit, LedgerEntry, Paid, Position, Stake, StakeRequest, TokenTotals, User,
    Withdrawal, WithdrawalOutcome, DEFAULT_FEE_BPS, WITHDRAWAL_STATES,
};
pub use outbox::{
    event_committed, Attempt, Counts, EventBody, OutboxEvent, OutboxStats, WebhookDown,
    EVENT_TYPES, OUTBOX_STATES, PUBLIC_EVENT_TYPES,
};
pub use quarantine::{QuarantinedDeposit, QUARANTINE_STATES};
pub use reads::JsonRows;
pub use reads::PoolRow;
pub use search::{BacklogItem, EmbeddingJob, KeywordQuery, NewVector, StoredVector};

use std::sync::Arc;
use std::time::Duration;

use serde::Serialize;
use sqlx::{PgPool, SqlitePool};

/// Which database a [`Store`] talks to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Backend {
    Sqlite,
    Postgres,
}

impl Backend {
    pub fn as_str(self) -> &'static str {
        match self {
            Backend::Sqlite => "sqlite",
            Backend::Postgres => "postgres",
        }
    }

    /// The backend a database URL names, if any.
    pub fn of_url(url: &str) -> Option<Backend> {
        if url.starts_with("sqlite:") {
            Some(Backend::Sqlite)
        } else if url.starts_with("postgres://") || url.starts_with("postgresql://") {
            Some(Backend::Postgres)
        } else {
            None
        }
    }
}

/// Connection settings.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize, schemars::JsonSchema)]
#[serde(default)]
pub struct StoreOptions {
    /// Connections in the pool.
    #[serde(
        rename = "db_max_connections",
        deserialize_with = "crate::settings::at_least::<1, _, _>"
    )]
    pub max_connections: u32,
    /// Bound on connecting at start (and on acquiring a connection later).
    #[serde(rename = "db_startup_timeout", with = "crate::settings::NonZero")]
    pub connect_timeout: Duration,
    /// How long a SQLite write waits for the writer (and for a locked file) before it answers 503.
    #[serde(rename = "db_write_timeout", with = "crate::settings::NonZero")]
    pub sqlite_busy_timeout: Duration,
    /// Time between database health pings (`/ready` and the dependent services follow them).
    #[serde(rename = "db_ping_interval", with = "crate::settings::NonZero")]
    pub ping_interval: Duration,
    /// PostgreSQL ends a session left idle inside a transaction this long (a paused or stuck
    /// process), releasing its locks: a leader paused mid-transaction cannot hold the lease
    /// row (or any other) for ever. Our transactions never wait on anything but the database.
    /// Set to the leader lease's TTL.
    #[serde(skip, default = "idle_in_transaction")]
    pub idle_in_transaction_timeout: Duration,
}

fn idle_in_transaction() -> Duration {
    Duration::from_secs(15)
}

impl Default for StoreOptions {
    fn default() -> Self {
        StoreOptions {
            idle_in_transaction_timeout: idle_in_transaction(),
            max_connections: 8,
            connect_timeout: Duration::from_secs(10),
            sqlite_busy_timeout: Duration::from_secs(5),
            ping_interval: Duration::from_secs(5),
        }
    }
}

impl crate::settings::Section for StoreOptions {}

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("cannot connect to {target}: {cause}")]
    Connect { target: String, cause: String },
    #[error("another tipoff process is using the SQLite database {path} (its lock file {path}.lock is held); stop it or set TIPOFF_DATABASE_URL to another database")]
    Locked { path: String },
    #[error("migrations failed: {0}")]
    Migrate(#[from] sqlx::migrate::MigrateError),
    #[error("not found")]
    NotFound,
    /// The request conflicts with the current state (a closed market, a short balance, a
    /// withdrawal no longer pending); the message says which.
    #[error("{0}")]
    Conflict(String),
    /// A conflict with a stable code clients can match on (`insufficient_balance`,
    /// `market_closed`, ...: see [`CONFLICT_CODES`]); the message says more.
    #[error("{message}")]
    Refused { code: &'static str, message: String },
    /// The request names something that does not exist or cannot be used.
    #[error("{0}")]
    Invalid(String),
    /// A singleton's write was rolled back: this instance no longer holds the leader lease
    /// with the epoch it started under.
    #[error("fenced: this instance no longer holds the leader lease (epoch {0}); the write was rolled back")]
    Fenced(i64),
    /// The database cannot take the request now (the pool is exhausted, the connection is
    /// gone, the SQLite writer is busy past its bound): the caller may retry.
    #[error("the database is unavailable: {0}")]
    Unavailable(String),
    #[error("database error: {0}")]
    Query(sqlx::Error),
}

impl StoreError {
    /// A transaction PostgreSQL aborted for a serialization failure or a deadlock: running it
    /// again can succeed.
    pub fn is_retryable(&self) -> bool {
        matches!(self, StoreError::Query(sqlx::Error::Database(d))
            if matches!(d.code().as_deref(), Some("40001") | Some("40P01")))
    }
}

/// How many more times a transaction aborted by a serialization failure or a deadlock runs.
pub const TRANSACTION_RETRIES: u32 = 5;

static RETRIES: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);

/// Transactions run again after a serialization failure or a deadlock, since the start.
pub fn transaction_retries() -> u64 {
    RETRIES.load(std::sync::atomic::Ordering::Relaxed)
}

/// Counts a retry and waits a few milliseconds (growing, jittered) so the transactions that
/// collided do not collide again at once.
pub(crate) async fn note_retry(attempt: u32) {
    RETRIES.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let base = 5u64 << attempt.min(6);
    let jitter = uuid::Uuid::new_v4().as_u64_pair().0 % base;
    tracing::debug!(
        attempt,
        "transaction aborted by a serialization failure or deadlock; running it again"
    );
    tokio::time::sleep(Duration::from_millis(base + jitter)).await;
}

impl From<sqlx::Error> for StoreError {
    fn from(e: sqlx::Error) -> Self {
        match e {
            sqlx::Error::RowNotFound => StoreError::NotFound,
            sqlx::Error::PoolTimedOut => {
                StoreError::Unavailable("no database connection was free in time".into())
            }
            sqlx::Error::PoolClosed => StoreError::Unavailable("the pool is closed".into()),
            sqlx::Error::Io(_) | sqlx::Error::Tls(_) => {
                StoreError::Unavailable("the database connection failed".into())
            }
            // SQLite's busy timeout ran out (SQLITE_BUSY).
            sqlx::Error::Database(d) if d.code().as_deref() == Some("5") => {
                StoreError::Unavailable("the database is busy".into())
            }
            other => StoreError::Query(other),
        }
    }
}

/// Pool statistics for `/debug/status` and metrics.
#[derive(Debug, Clone, Copy, Serialize, schemars::JsonSchema)]
pub struct PoolStats {
    pub size: u32,
    pub idle: u32,
    pub max: u32,
}

/// One league of the catalog.
#[derive(Debug, Clone, Serialize, sqlx::FromRow)]
pub struct League {
    pub key: String,
    pub name: String,
    pub sport: String,
    /// ESPN's `sport/league` path, e.g. `basketball/nba`.
    pub espn_path: String,
}

/// One league of the catalog, as the code knows it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CatalogLeague {
    /// The key used everywhere (`TIPOFF_LEAGUES`, `league=`): lower case.
    pub key: &'static str,
    pub name: &'static str,
    pub sport: &'static str,
    /// ESPN's `sport/league` path.
    pub espn_path: &'static str,
}

const fn league(
    key: &'static str,
    name: &'static str,
    sport: &'static str,
    espn_path: &'static str,
) -> CatalogLeague {
    CatalogLeague {
        key,
        name,
        sport,
        espn_path,
    }
}

/// The league catalog. [`Store::reconcile_catalog`] brings the database's `leagues` table in
/// line with it on every start, so adding a league here is all it takes.
pub const LEAGUE_CATALOG: &[CatalogLeague] = &[
    league("nba", "NBA", "basketball", "basketball/nba"),
    league("wnba", "WNBA", "basketball", "basketball/wnba"),
    league("mlb", "MLB", "baseball", "baseball/mlb"),
    league("nfl", "NFL", "football", "football/nfl"),
    league("nhl", "NHL", "hockey", "hockey/nhl"),
];

/// The catalog entry for a lower-case `key`, or a message naming the known keys.
pub fn catalog_league(key: &str) -> Result<&'static CatalogLeague, String> {
    LEAGUE_CATALOG.iter().find(|l| l.key == key).ok_or_else(|| {
        let known: Vec<&str> = LEAGUE_CATALOG.iter().map(|l| l.key).collect();
        format!("unknown league `{key}` (known: {})", known.join(", "))
    })
}

/// Every specific conflict code the store answers, with what it means (the HTTP API lists
/// them in `/openapi.json`; each is a 409).
pub const CONFLICT_CODES: &[(&str, &str)] = &[
    ("insufficient_balance", "the balance is short of the amount"),
    (
        "market_closed",
        "the market takes no more stakes (locked, settled, void, or its game started)",
    ),
    (
        "escrow_short",
        "a market's escrow holds less than its positions are owed (settlement refused)",
    ),
    (
        "already_assigned",
        "the deposit was already credited or assigned",
    ),
    (
        "too_many_pending_withdrawals",
        "the user has TIPOFF_MAX_PENDING_WITHDRAWALS pending or claimed",
    ),
    (
        "signature_used",
        "the transaction signature already completed another withdrawal",
    ),
    ("already_claimed", "the withdrawal is claimed by a signer"),
    (
        "withdrawal_not_pending",
        "the withdrawal is no longer pending",
    ),
    (
        "withdrawal_claimed",
        "the withdrawal is claimed: it completes or fails, it never expires",
    ),
    (
        "withdrawal_finished",
        "the withdrawal already completed, failed or expired",
    ),
    (
        "event_not_dead",
        "the outbox event is not dead, so there is nothing to retry",
    ),
    (
        "not_quarantined",
        "the deposit signature is not quarantined",
    ),
];

/// A [`StoreError::Refused`] with `code` (one of [`CONFLICT_CODES`]).
pub(crate) fn refused(code: &'static str, message: impl Into<String>) -> StoreError {
    debug_assert!(CONFLICT_CODES.iter().any(|(c, _)| *c == code), "{code}");
    StoreError::Refused {
        code,
        message: message.into(),
    }
}

/// What [`Store::reconcile_catalog`] changed.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct CatalogChanges {
    /// Leagues of the catalog the table lacked, now inserted.
    pub added: Vec<String>,
    /// Leagues whose name, sport or ESPN path differed, now updated.
    pub updated: Vec<String>,
    /// Leagues in the table the catalog no longer has (kept: games may refer to them).
    pub unknown: Vec<String>,
}

/// Bumped after every committed write of games or markets by any store of this process; read
/// caches compare it to know an answer is still current. Process-wide on purpose: a bump from
/// another store (tests run several) only costs a cache miss, never a stale answer.
static WRITE_GENERATION: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);

/// What every clone of a SQLite store shares: the process lock on the database file, and the
/// one writer. SQLite allows one write transaction at a time; money transactions take this
/// async lock first, so they queue in order instead of spinning on `SQLITE_BUSY`.
#[derive(Debug, Default)]
pub struct SqliteShared {
    /// Held, never read: the `flock` lasts as long as the file stays open.
    #[allow(dead_code)]
    pub(crate) lock_file: Option<std::fs::File>,
    pub(crate) writer: tokio::sync::Mutex<()>,
    /// How long a write waits for the writer before it gives up (`StoreError::Unavailable`).
    pub(crate) writer_wait: Duration,
    /// Read connections used on the caller's thread (`reads.rs`); none for an in-memory
    /// database, whose reads go through the pool.
    pub(crate) readers: Option<reads::Readers>,
    /// The connection stake batches write on (`money/sqlite_stakes.rs`), opened on first use.
    pub(crate) stake_writer: std::sync::Mutex<Option<rusqlite::Connection>>,
}

/// A database pool of either backend. Cheap to clone.
#[derive(Debug, Clone)]
pub enum Store {
    /// The lock file is held for as long as any clone lives.
    Sqlite(SqlitePool, Arc<SqliteShared>),
    /// With the fence its writes check, when it belongs to a singleton (see `lease.rs`).
    Postgres(PgPool, Option<Arc<lease::Fence>>),
}

impl Store {
    /// Connects within `options.connect_timeout`. A `sqlite:` URL naming a file that does not
    /// exist creates it; a SQLite file already used by another tipoff process is refused.
    pub async fn connect(url: &str, options: &StoreOptions) -> Result<Store, StoreError> {
        match Backend::of_url(url) {
            Some(Backend::Sqlite) => sqlite::connect(url, options).await,
            Some(Backend::Postgres) => postgres::connect(url, options).await,
            None => Err(StoreError::Connect {
                target: "the database".into(),
                cause: "the URL must start with sqlite: or postgres://".into(),
            }),
        }
    }

    /// The current write generation (see [`WRITE_GENERATION`]); read it *before* a query whose
    /// answer is cached, so a write racing with the query invalidates the answer.
    pub fn write_generation() -> u64 {
        WRITE_GENERATION.load(std::sync::atomic::Ordering::Acquire)
    }

    fn wrote() {
        WRITE_GENERATION.fetch_add(1, std::sync::atomic::Ordering::AcqRel);
    }

    /// On SQLite, the one-writer lock (held until the guard drops), waited for at most its
    /// bound; `None` on PostgreSQL, whose row locks do the ordering.
    pub(crate) async fn writer(
        &self,
    ) -> Result<Option<tokio::sync::MutexGuard<'_, ()>>, StoreError> {
        match self {
            Store::Sqlite(_, shared) => {
                match tokio::time::timeout(shared.writer_wait, shared.writer.lock()).await {
                    Ok(guard) => Ok(Some(guard)),
                    Err(_) => Err(StoreError::Unavailable(format!(
                        "the SQLite writer stayed busy for {:?}",
                        shared.writer_wait
                    ))),
                }
            }
            Store::Postgres(..) => Ok(None),
        }
    }

    pub fn backend(&self) -> Backend {
        match self {
            Store::Sqlite(..) => Backend::Sqlite,
            Store::Postgres(..) => Backend::Postgres,
        }
    }

    /// Applies this backend's migrations.
    pub async fn migrate(&self) -> Result<(), StoreError> {
        match self {
            Store::Sqlite(pool, _) => sqlite::MIGRATOR.run(pool).await?,
            Store::Postgres(pool, _) => postgres::MIGRATOR.run(pool).await?,
        }
        self.index_unindexed_markets().await?;
        Ok(())
    }

    /// Brings the `leagues` table in line with [`LEAGUE_CATALOG`] in one transaction:
    /// missing leagues are inserted, changed ones updated; leagues the catalog no longer has
    /// are kept (games may refer to them) and reported.
    #[tracing::instrument(skip_all)]
    pub async fn reconcile_catalog(&self) -> Result<CatalogChanges, StoreError> {
        let _writer = self.writer().await?;
        on_pool!(self, pool => {
            let mut tx = pool.begin().await?;
            let stored: Vec<League> = sqlx::query_as("SELECT key, name, sport, espn_path FROM leagues")
                .fetch_all(&mut *tx)
                .await?;
            let mut changes = CatalogChanges::default();
            for l in LEAGUE_CATALOG {
                let wanted = (l.name, l.sport, l.espn_path);
                match stored.iter().find(|s| s.key == l.key) {
                    Some(s) if (s.name.as_str(), s.sport.as_str(), s.espn_path.as_str()) == wanted => {}
                    Some(_) => {
                        sqlx::query("UPDATE leagues SET name = $2, sport = $3, espn_path = $4 WHERE key = $1")
                            .bind(l.key).bind(l.name).bind(l.sport).bind(l.espn_path)
                            .execute(&mut *tx).await?;
                        changes.updated.push(l.key.to_string());
                    }
                    None => {
                        sqlx::query("INSERT INTO leagues (key, name, sport, espn_path) VALUES ($1, $2, $3, $4) ON CONFLICT (key) DO NOTHING")
                            .bind(l.key).bind(l.name).bind(l.sport).bind(l.espn_path)
                            .execute(&mut *tx).await?;
                        changes.added.push(l.key.to_string());
                    }
                }
            }
            changes.unknown = stored
                .iter()
                .filter(|s| catalog_league(&s.key).is_err())
                .map(|s| s.key.clone())
                .collect();
            tx.commit().await?;
            Ok(changes)
        })
    }

    /// The league catalog, ordered by key.
    pub async fn leagues(&self) -> Result<Vec<League>, StoreError> {
        let sql = "SELECT key, name, sport, espn_path FROM leagues ORDER BY key";
        on_pool!(self, pool => Ok(sqlx::query_as(sql).fetch_all(pool).await?))
    }

    /// Names of the tables the migrations created (for tests and diagnostics).
    pub async fn table_names(&self) -> Result<Vec<String>, StoreError> {
        Ok(match self {
            Store::Sqlite(pool, _) => {
                sqlx::query_scalar("SELECT name FROM sqlite_master WHERE type = 'table' AND name NOT LIKE 'sqlite_%' AND name NOT LIKE '_sqlx%' ORDER BY name")
                    .fetch_all(pool)
                    .await?
            }
            Store::Postgres(pool, _) => {
                sqlx::query_scalar("SELECT table_name::text FROM information_schema.tables WHERE table_schema = current_schema() AND table_name NOT LIKE '_sqlx%' ORDER BY table_name")
                    .fetch_all(pool)
                    .await?
            }
        })
    }

    /// A round trip to the database.
    pub async fn ping(&self) -> Result<(), StoreError> {
        on_pool!(self, pool => sqlx::query("SELECT 1").execute(pool).await.map(drop)?);
        Ok(())
    }

    pub fn pool_stats(&self) -> PoolStats {
        on_pool!(self, pool => PoolStats {
            size: pool.size(),
            idle: pool.num_idle() as u32,
            max: pool.options().get_max_connections(),
        })
    }

    /// Closes the pool, waiting for checked-out connections to be returned.
    pub async fn close(&self) {
        on_pool!(self, pool => pool.close().await)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::Utc;

    #[tokio::test]
    async fn a_write_waiting_past_the_sqlite_writer_bound_is_unavailable_not_stuck() {
        let dir = tempfile::tempdir().unwrap();
        let url = format!("sqlite://{}", dir.path().join("t.db").display());
        let options = StoreOptions {
            sqlite_busy_timeout: Duration::from_millis(100),
            ..StoreOptions::default()
        };
        let store = Store::connect(&url, &options).await.unwrap();
        store.migrate().await.unwrap();
        let held = store.writer().await.unwrap();
        let started = std::time::Instant::now();
        let err = store
            .create_user("alice", "digest", "CODE2345", Utc::now())
            .await
            .expect_err("the writer is held");
        assert!(matches!(err, StoreError::Unavailable(_)), "{err}");
        assert!(started.elapsed() < Duration::from_secs(2));
        drop(held);
        store
            .create_user("alice", "digest", "CODE2345", Utc::now())
            .await
            .expect("free again");
    }
}
