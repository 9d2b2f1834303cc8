//! SQLite: the embedded default. WAL mode with `synchronous=FULL` (a commit is on disk when it
//! returns), a busy timeout, foreign keys on; one process per
//! database file, enforced by an exclusive `flock` on `<file>.lock`.

use std::os::fd::AsRawFd;
use std::str::FromStr;
use std::sync::Arc;

use sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode, SqlitePoolOptions, SqliteSynchronous};

use super::{Store, StoreError, StoreOptions};

pub(super) static MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!("../migrations/sqlite");

pub(super) async fn connect(url: &str, options: &StoreOptions) -> Result<Store, StoreError> {
    let connect_err = |cause: String| StoreError::Connect {
        target: format!("SQLite database {url}"),
        cause,
    };
    let opts = SqliteConnectOptions::from_str(url)
        .map_err(|e| connect_err(e.to_string()))?
        .create_if_missing(true)
        .journal_mode(SqliteJournalMode::Wal)
        // Every commit reaches the disk before it returns: money survives a power loss.
        .synchronous(SqliteSynchronous::Full)
        .busy_timeout(options.sqlite_busy_timeout)
        .foreign_keys(true);
    let filename = opts.get_filename().to_path_buf();
    let in_memory = url.contains(":memory:")
        || filename.as_os_str().is_empty()
        || filename.to_string_lossy() == ":memory:";
    let lock = if in_memory {
        None
    } else {
        if let Some(dir) = filename.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir)
                .map_err(|e| connect_err(format!("cannot create {}: {e}", dir.display())))?;
        }
        Some(lock_file(&filename)?)
    };
    let pool = SqlitePoolOptions::new()
        .max_connections(options.max_connections.max(1))
        .acquire_timeout(options.connect_timeout)
        .connect_with(opts);
    let pool = tokio::time::timeout(options.connect_timeout, pool)
        .await
        .map_err(|_| connect_err(format!("timed out after {:?}", options.connect_timeout)))?
        .map_err(|e| connect_err(e.to_string()))?;
    Ok(Store::Sqlite(
        pool,
        Arc::new(super::SqliteShared {
            lock_file: lock,
            writer: tokio::sync::Mutex::new(()),
            writer_wait: options.sqlite_busy_timeout,
            readers: (!in_memory)
                .then(|| super::reads::Readers::new(filename, options.sqlite_busy_timeout)),
            stake_writer: std::sync::Mutex::new(None),
        }),
    ))
}

fn lock_file(db: &std::path::Path) -> Result<std::fs::File, StoreError> {
    let mut name = db.as_os_str().to_owned();
    name.push(".lock");
    let file = std::fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(&name)
        .map_err(|e| StoreError::Connect {
            target: format!("SQLite lock file {}", name.to_string_lossy()),
            cause: e.to_string(),
        })?;
    // SAFETY: flock on a valid, open descriptor owned by `file`.
    let rc = unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) };
    if rc != 0 {
        return Err(StoreError::Locked {
            path: db.display().to_string(),
        });
    }
    Ok(file)
}
