//! The leader lease and fencing (PostgreSQL; SQLite's one process always leads, epoch 1).
//!
//! - [`Store::acquire_lease`] takes or renews the one lease row with a compare-and-set on the
//!   database's clock: free or lapsed ⇒ taken with the next epoch; held by the caller ⇒ renewed
//!   (same epoch while it had not lapsed); held by another ⇒ untouched, and the answer names
//!   the holder.
//! - [`Store::release_lease`] ends it at once and tells the other replicas (`NOTIFY
//!   tipoff_lease`), so one of them takes over without waiting for the expiry.
//! - A store made with [`Store::fenced`] checks, right before every commit of a write, that the
//!   lease still names its instance with its epoch and has not expired, locking the row `FOR
//!   SHARE` so a takeover waits for that commit; otherwise the transaction is rolled back with
//!   [`StoreError::Fenced`]. Singleton services get such a store.
//! - Writes of games and markets also `NOTIFY tipoff_writes` in their transaction, so the other
//!   replicas drop their read caches when it commits.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, Utc};
use sqlx::{ConnectOptions, PgConnection, SqliteConnection};

use super::{Store, StoreError};

/// The lease row's key: there is one leader per database.
const LEASE: &str = "leader";

/// The channel a released lease is announced on.
pub const LEASE_CHANNEL: &str = "tipoff_lease";
/// The channel committed writes of games and markets are announced on (read caches listen).
pub const WRITES_CHANNEL: &str = "tipoff_writes";
/// The channel followers send service commands on (wake an import, restart a poller); the
/// leader acts on them.
pub const CONTROL_CHANNEL: &str = "tipoff_control";

/// Writes committed but not yet announced on `tipoff_writes` (stakes, batched).
static UNANNOUNCED: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);

/// Writes this process had rolled back by the fence (for metrics).
static FENCED_WRITES: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);

/// Who may write as the leader: an instance and the lease epoch it holds.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Fence {
    pub instance: Arc<str>,
    pub epoch: i64,
}

/// The lease as the database saw it after an acquire or renew attempt.
#[derive(Debug, Clone, PartialEq, Eq, sqlx::FromRow)]
pub struct Lease {
    /// `None` when the row could not be read back (a racing first insert); try again.
    pub holder: Option<String>,
    pub epoch: i64,
    pub expires_at: DateTime<Utc>,
    /// The database's clock when it answered.
    pub now: DateTime<Utc>,
}

impl Lease {
    /// Whether `instance` holds this lease, by the database's clock.
    pub fn held_by(&self, instance: &str) -> bool {
        self.holder.as_deref() == Some(instance) && self.expires_at > self.now
    }
}

/// What a fenced transaction runs before its commit, per backend.
pub(crate) trait Fenced {
    /// Fails with [`StoreError::Fenced`] unless `fence` still holds the lease (no-op without
    /// a fence, and on SQLite).
    fn check_fence<'a>(
        &'a mut self,
        fence: Option<&'a Fence>,
    ) -> impl Future<Output = Result<(), StoreError>> + Send + 'a;

    /// Announces, at commit, that games or markets changed (PostgreSQL only).
    fn announce_writes(&mut self) -> impl Future<Output = Result<(), StoreError>> + Send + '_;
}

impl Fenced for SqliteConnection {
    async fn check_fence(&mut self, _: Option<&Fence>) -> Result<(), StoreError> {
        Ok(())
    }

    async fn announce_writes(&mut self) -> Result<(), StoreError> {
        Ok(())
    }
}

impl Fenced for PgConnection {
    async fn check_fence(&mut self, fence: Option<&Fence>) -> Result<(), StoreError> {
        let Some(fence) = fence else { return Ok(()) };
        let held: Option<i32> = sqlx::query_scalar(
            "SELECT 1 FROM leader_lease WHERE name = $1 AND holder = $2 AND epoch = $3 \
             AND expires_at > clock_timestamp() FOR SHARE",
        )
        .bind(LEASE)
        .bind(&*fence.instance)
        .bind(fence.epoch)
        .fetch_optional(&mut *self)
        .await?;
        match held {
            Some(_) => Ok(()),
            None => {
                FENCED_WRITES.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                tracing::warn!(
                    epoch = fence.epoch,
                    "fenced: a write of a former leader was rolled back"
                );
                Err(StoreError::Fenced(fence.epoch))
            }
        }
    }

    async fn announce_writes(&mut self) -> Result<(), StoreError> {
        sqlx::query("SELECT pg_notify($1, '')")
            .bind(WRITES_CHANNEL)
            .execute(&mut *self)
            .await?;
        Ok(())
    }
}

/// Commits a write transaction of a (possibly fenced) store: the fence check, then the commit.
macro_rules! commit {
    ($store:expr, $tx:ident) => {{
        $crate::store::lease::Fenced::check_fence(&mut *$tx, $store.fence()).await?;
        $tx.commit().await?;
        $crate::store::outbox::committed();
    }};
}

impl Store {
    /// This store, writing as `fence` (or unfenced with `None`): every write it commits first
    /// checks that the lease is still held with that epoch.
    pub fn fenced(&self, fence: Option<Fence>) -> Store {
        match self {
            Store::Sqlite(pool, shared) => Store::Sqlite(pool.clone(), shared.clone()),
            Store::Postgres(pool, _) => Store::Postgres(pool.clone(), fence.map(Arc::new)),
        }
    }

    /// The fence this store writes under, if any (never on SQLite).
    pub(crate) fn fence(&self) -> Option<&Fence> {
        match self {
            Store::Sqlite(..) => None,
            Store::Postgres(_, fence) => fence.as_deref(),
        }
    }

    /// Takes the lease for `instance` or renews it, for `ttl` from the database's clock;
    /// answers the lease as it stands (held by `instance` or by another). On SQLite the one
    /// process always holds epoch 1.
    pub async fn acquire_lease(&self, instance: &str, ttl: Duration) -> Result<Lease, StoreError> {
        let pool = match self {
            Store::Sqlite(..) => {
                let now = Utc::now();
                return Ok(Lease {
                    holder: Some(instance.to_string()),
                    epoch: 1,
                    expires_at: DateTime::<Utc>::MAX_UTC,
                    now,
                });
            }
            Store::Postgres(pool, _) => pool,
        };
        let row: Option<Lease> = sqlx::query_as(
            "WITH taken AS ( \
               INSERT INTO leader_lease AS l (name, holder, epoch, expires_at, acquired_at) \
               VALUES ($1, $2, 1, clock_timestamp() + make_interval(secs => $3), clock_timestamp()) \
               ON CONFLICT (name) DO UPDATE SET \
                 holder = EXCLUDED.holder, \
                 epoch = CASE WHEN l.holder = EXCLUDED.holder AND l.expires_at > clock_timestamp() \
                              THEN l.epoch ELSE l.epoch + 1 END, \
                 acquired_at = CASE WHEN l.holder = EXCLUDED.holder AND l.expires_at > clock_timestamp() \
                              THEN l.acquired_at ELSE EXCLUDED.acquired_at END, \
                 expires_at = EXCLUDED.expires_at \
               WHERE l.holder = EXCLUDED.holder OR l.holder IS NULL OR l.expires_at <= clock_timestamp() \
               RETURNING holder, epoch, expires_at \
             ) \
             SELECT holder, epoch, expires_at, clock_timestamp() AS now FROM taken \
             UNION ALL \
             SELECT holder, epoch, expires_at, clock_timestamp() AS now FROM leader_lease \
             WHERE name = $1 AND NOT EXISTS (SELECT 1 FROM taken)",
        )
        .bind(LEASE)
        .bind(instance)
        .bind(ttl.as_secs_f64())
        .fetch_optional(pool)
        .await?;
        Ok(match row {
            Some(lease) => lease,
            None => Lease {
                holder: None,
                epoch: 0,
                expires_at: DateTime::<Utc>::MIN_UTC,
                now: Utc::now(),
            },
        })
    }

    /// The lease as it stands, without trying to take it (`None` before anyone took it).
    pub async fn current_lease(&self) -> Result<Option<Lease>, StoreError> {
        let Store::Postgres(pool, _) = self else {
            return Ok(None);
        };
        Ok(sqlx::query_as(
            "SELECT holder, epoch, expires_at, clock_timestamp() AS now FROM leader_lease WHERE name = $1",
        )
        .bind(LEASE)
        .fetch_optional(pool)
        .await?)
    }

    /// Ends the lease `instance` holds with `epoch` now, and tells the other replicas; `false`
    /// when it did not hold it (any more).
    pub async fn release_lease(&self, instance: &str, epoch: i64) -> Result<bool, StoreError> {
        let Store::Postgres(pool, _) = self else {
            return Ok(false);
        };
        // A connection of its own: the pool's idle ones may have been opened on the thread of
        // a service that just stopped (as all singletons do right before the release), and
        // their I/O dies with it.
        let mut conn = pool.connect_options().connect().await?;
        let mut tx = sqlx::Connection::begin(&mut conn).await?;
        let n = sqlx::query(
            "UPDATE leader_lease SET expires_at = clock_timestamp() \
             WHERE name = $1 AND holder = $2 AND epoch = $3 AND expires_at > clock_timestamp()",
        )
        .bind(LEASE)
        .bind(instance)
        .bind(epoch)
        .execute(&mut *tx)
        .await?
        .rows_affected();
        if n == 1 {
            sqlx::query("SELECT pg_notify($1, $2)")
                .bind(LEASE_CHANNEL)
                .bind(instance)
                .execute(&mut *tx)
                .await?;
        }
        tx.commit().await?;
        let _ = sqlx::Connection::close(conn).await;
        Ok(n == 1)
    }

    /// Sends `payload` on `channel` to every replica listening (PostgreSQL; a no-op on SQLite).
    pub async fn notify(&self, channel: &str, payload: &str) -> Result<(), StoreError> {
        if let Store::Postgres(pool, _) = self {
            sqlx::query("SELECT pg_notify($1, $2)")
                .bind(channel)
                .bind(payload)
                .execute(pool)
                .await?;
        }
        Ok(())
    }

    /// A connection listening on `channels` (PostgreSQL; `None` on SQLite). It leaves the
    /// pool's count, and reconnects through the pool when it is lost.
    pub async fn listen(
        &self,
        channels: &[&str],
    ) -> Result<Option<sqlx::postgres::PgListener>, StoreError> {
        let Store::Postgres(pool, _) = self else {
            return Ok(None);
        };
        let mut listener = sqlx::postgres::PgListener::connect_with(pool).await?;
        listener.listen_all(channels.iter().copied()).await?;
        Ok(Some(listener))
    }

    /// How many writes the fence rolled back in this process.
    pub fn fenced_writes() -> u64 {
        FENCED_WRITES.load(std::sync::atomic::Ordering::Relaxed)
    }

    /// A committed write of market pools (a stake): this process's caches are dropped now,
    /// the other replicas' on the next batched announcement ([`Store::take_unannounced`]).
    pub(crate) fn wrote_unannounced() {
        Store::wrote();
        UNANNOUNCED.store(true, std::sync::atomic::Ordering::Release);
    }

    /// Whether writes are waiting to be announced to the other replicas (clears the flag).
    pub fn take_unannounced() -> bool {
        UNANNOUNCED.swap(false, std::sync::atomic::Ordering::AcqRel)
    }

    /// Runs a pruning `DELETE` whose one parameter is `cutoff`, as a (fenced) write
    /// transaction; answers how many rows went.
    pub(crate) async fn delete_before(
        &self,
        sql: &str,
        cutoff: DateTime<Utc>,
    ) -> Result<u64, StoreError> {
        let _writer = self.writer().await?;
        on_pool!(self, pool => {
            let mut tx = pool.begin().await?;
            let n = sqlx::query(sql).bind(cutoff).execute(&mut *tx).await?.rows_affected();
            commit!(self, tx);
            Ok(n)
        })
    }

    /// Drops every read-cache answer of this process (another replica wrote, or notifications
    /// may have been missed).
    pub fn invalidate_reads() {
        Store::wrote();
    }
}
