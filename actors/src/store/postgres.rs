//! PostgreSQL: the production backend.

use std::str::FromStr;

use std::time::Instant;

use sqlx::postgres::{PgConnectOptions, PgPoolOptions};
use sqlx::{ConnectOptions, Connection};

use super::{Store, StoreError, StoreOptions};

pub(super) static MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!("../migrations/postgres");

pub(super) async fn connect(url: &str, options: &StoreOptions) -> Result<Store, StoreError> {
    let idle_ms = options.idle_in_transaction_timeout.as_millis().max(1000);
    let opts = PgConnectOptions::from_str(url)
        .map_err(|e| StoreError::Connect {
            target: "PostgreSQL".into(),
            cause: e.to_string(),
        })?
        .options([(
            "idle_in_transaction_session_timeout",
            format!("{idle_ms}ms"),
        )]);
    let target = format!(
        "PostgreSQL at {}:{} (database {})",
        opts.get_host(),
        opts.get_port(),
        opts.get_database().unwrap_or("(default)")
    );
    // Direct attempts first, retried until the startup timeout, so the error names the real
    // cause (refused, authentication, unknown database) rather than a pool timeout.
    let deadline = Instant::now() + options.connect_timeout;
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        let cause = match tokio::time::timeout(left, opts.connect()).await {
            Ok(Ok(conn)) => {
                let _ = conn.close().await;
                break;
            }
            Ok(Err(e)) => e.to_string(),
            Err(_) => format!("timed out after {:?}", options.connect_timeout),
        };
        if Instant::now() + std::time::Duration::from_millis(250) >= deadline {
            return Err(StoreError::Connect { target, cause });
        }
        tracing::warn!(%target, %cause, "database not reachable yet; retrying");
        tokio::time::sleep(std::time::Duration::from_millis(250)).await;
    }
    let pool = PgPoolOptions::new()
        .max_connections(options.max_connections.max(1))
        .acquire_timeout(options.connect_timeout)
        .connect_with(opts);
    let pool = tokio::time::timeout(options.connect_timeout, pool)
        .await
        .map_err(|_| StoreError::Connect {
            target: target.clone(),
            cause: format!("timed out after {:?}", options.connect_timeout),
        })?
        .map_err(|e| StoreError::Connect {
            target: target.clone(),
            cause: e.to_string(),
        })?;
    Ok(Store::Postgres(pool, None))
}

/// Creates the database `name` on the server of `base` (a PostgreSQL URL) and answers `base`
/// naming it instead: the fresh databases of the test suites and benches.
pub async fn create_database(base: &str, name: &str) -> Result<String, sqlx::Error> {
    let mut admin = sqlx::PgConnection::connect(base).await?;
    sqlx::query(&format!("CREATE DATABASE {name}"))
        .execute(&mut admin)
        .await?;
    let _ = admin.close().await;
    let without_query = base.split('?').next().unwrap_or(base);
    let scheme_end = without_query.find("://").map_or(0, |i| i + 3);
    Ok(match without_query[scheme_end..].find('/') {
        Some(slash) => format!("{}/{name}", &without_query[..scheme_end + slash]),
        None => format!("{without_query}/{name}"),
    })
}
