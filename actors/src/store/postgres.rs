//! PostgreSQL: the production backend.

use std::str::FromStr;

use sqlx::postgres::{PgConnectOptions, PgPoolOptions};

use super::{Store, StoreError, StoreOptions};

pub(super) static MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!("../migrations/postgres");

pub(super) async fn connect(url: &str, options: &StoreOptions) -> Result<Store, StoreError> {
    let opts = PgConnectOptions::from_str(url).map_err(|e| StoreError::Connect {
        target: "PostgreSQL".into(),
        cause: e.to_string(),
    })?;
    let target = format!(
        "PostgreSQL at {}:{} (database {})",
        opts.get_host(),
        opts.get_port(),
        opts.get_database().unwrap_or("(default)")
    );
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
    Ok(Store::Postgres(pool))
}
