//! Deposits that never stall: treasury signatures whose transaction a watcher cannot read count
//! their attempts here, and past a bound are quarantined so the token's cursor moves on (see
//! `watcher.rs`). States: `failing` (counting, still holding the cursor), `quarantined`
//! (skipped), `retry` (an admin asked the watcher to read it again), `resolved` (credited, or
//! found to be no deposit).

use std::collections::HashSet;

use chrono::{DateTime, Utc};
use serde::Serialize;

use super::{Store, StoreError};

/// The states of a quarantine row.
pub const QUARANTINE_STATES: &[&str] = &["failing", "quarantined", "retry", "resolved"];

#[derive(Debug, Clone, Serialize, sqlx::FromRow, PartialEq, Eq)]
pub struct QuarantinedDeposit {
    pub id: i64,
    pub token: String,
    pub signature: String,
    pub slot: i64,
    pub memo: Option<String>,
    pub attempts: i64,
    pub last_error: String,
    pub state: String,
    pub first_seen_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
    /// How a `resolved` row ended: `credited` or why it was no deposit.
    pub resolution: Option<String>,
}

const COLUMNS: &str = "id, token, signature, slot, memo, attempts, last_error, state, first_seen_at, updated_at, resolution";

impl Store {
    /// Signatures of `token` the watcher must not read in its window (quarantined, or waiting
    /// for an admin's retry, read on their own), and whether any is still `failing`.
    pub async fn quarantined_signatures(
        &self,
        token: &str,
    ) -> Result<(HashSet<String>, bool), StoreError> {
        let sql = "SELECT signature, state FROM deposit_quarantine WHERE token = $1 AND state IN ('failing', 'quarantined', 'retry')";
        let rows: Vec<(String, String)> =
            on_pool!(self, pool => sqlx::query_as(sql).bind(token).fetch_all(pool).await?);
        let failing = rows.iter().any(|(_, state)| state == "failing");
        let skip = rows
            .into_iter()
            .filter(|(_, state)| state != "failing")
            .map(|(signature, _)| signature)
            .collect();
        Ok((skip, failing))
    }

    /// Counts one more failed read of `signature`; at `quarantine_after` attempts it becomes
    /// `quarantined`. Answers the row as it now stands.
    #[allow(clippy::too_many_arguments)]
    pub async fn note_unreadable(
        &self,
        token: &str,
        signature: &str,
        slot: i64,
        memo: Option<&str>,
        error: &str,
        quarantine_after: u32,
        now: DateTime<Utc>,
    ) -> Result<QuarantinedDeposit, StoreError> {
        let sql = format!(
            "INSERT INTO deposit_quarantine (token, signature, slot, memo, attempts, last_error, state, first_seen_at, updated_at) \
             VALUES ($1, $2, $3, $4, 1, $5, CASE WHEN $6 <= 1 THEN 'quarantined' ELSE 'failing' END, $7, $7) \
             ON CONFLICT (token, signature) DO UPDATE SET attempts = deposit_quarantine.attempts + 1, last_error = excluded.last_error, \
             updated_at = excluded.updated_at, resolution = NULL, \
             state = CASE WHEN deposit_quarantine.attempts + 1 >= $6 THEN 'quarantined' ELSE 'failing' END \
             RETURNING {COLUMNS}"
        );
        let _writer = self.writer().await?;
        on_pool!(self, pool => {
            let mut tx = pool.begin().await?;
            let row: QuarantinedDeposit = sqlx::query_as(&sql)
                .bind(token).bind(signature).bind(slot).bind(memo).bind(error)
                .bind(i64::from(quarantine_after)).bind(now)
                .fetch_one(&mut *tx).await?;
            commit!(self, tx);
            Ok(row)
        })
    }

    /// Ends a row: `resolution` says how (`credited`, or why it was no deposit). With
    /// `signature` `None`, ends every `failing` row of `token` (its window was credited whole).
    pub async fn resolve_quarantine(
        &self,
        token: &str,
        signature: Option<&str>,
        resolution: &str,
        now: DateTime<Utc>,
    ) -> Result<u64, StoreError> {
        let _writer = self.writer().await?;
        on_pool!(self, pool => {
            let mut tx = pool.begin().await?;
            let n = sqlx::query(
                "UPDATE deposit_quarantine SET state = 'resolved', resolution = $1, updated_at = $2 \
                 WHERE token = $3 AND state != 'resolved' AND (signature = $4 OR ($4 IS NULL AND state = 'failing'))",
            )
            .bind(resolution).bind(now).bind(token).bind(signature)
            .execute(&mut *tx).await?.rows_affected();
            commit!(self, tx);
            Ok(n)
        })
    }

    /// Rows of `token` an admin asked to read again.
    pub async fn quarantine_retries(
        &self,
        token: &str,
    ) -> Result<Vec<QuarantinedDeposit>, StoreError> {
        let sql = format!("SELECT {COLUMNS} FROM deposit_quarantine WHERE token = $1 AND state = 'retry' ORDER BY slot, id LIMIT 100");
        on_pool!(self, pool => Ok(sqlx::query_as(&sql).bind(token).fetch_all(pool).await?))
    }

    /// Quarantine rows in `state` (all when `None`), oldest first from `after` (an id cursor).
    pub async fn quarantine(
        &self,
        state: Option<&str>,
        after: Option<i64>,
        limit: i64,
    ) -> Result<Vec<QuarantinedDeposit>, StoreError> {
        let sql = format!(
            "SELECT {COLUMNS} FROM deposit_quarantine WHERE ($1 IS NULL OR state = $1) AND id > $2 ORDER BY id LIMIT $3"
        );
        on_pool!(self, pool => Ok(sqlx::query_as(&sql).bind(state).bind(after.unwrap_or(0)).bind(limit).fetch_all(pool).await?))
    }

    /// An admin asks the watcher to read a quarantined signature again: `quarantined` →
    /// `retry` (compare-and-set; any other state is refused (`not_quarantined`) naming it).
    pub async fn retry_quarantined(
        &self,
        id: i64,
        now: DateTime<Utc>,
    ) -> Result<QuarantinedDeposit, StoreError> {
        let sql = format!(
            "UPDATE deposit_quarantine SET state = 'retry', updated_at = $1 WHERE id = $2 AND state = 'quarantined' RETURNING {COLUMNS}"
        );
        let _writer = self.writer().await?;
        on_pool!(self, pool => {
            let mut tx = pool.begin().await?;
            let row: Option<QuarantinedDeposit> = sqlx::query_as(&sql).bind(now).bind(id).fetch_optional(&mut *tx).await?;
            let Some(row) = row else {
                let state: Option<String> = sqlx::query_scalar("SELECT state FROM deposit_quarantine WHERE id = $1")
                    .bind(id).fetch_optional(&mut *tx).await?;
                return Err(match state {
                    None => StoreError::NotFound,
                    Some(s) => super::refused("not_quarantined", format!("quarantined deposit {id} is {s}, not quarantined")),
                });
            };
            commit!(self, tx);
            Ok(row)
        })
    }

    /// Signatures quarantined or waiting for a retry, per token.
    pub async fn quarantine_counts(&self) -> Result<Vec<(String, i64)>, StoreError> {
        let sql = "SELECT token, COUNT(*) FROM deposit_quarantine WHERE state IN ('quarantined', 'retry') GROUP BY token ORDER BY token";
        on_pool!(self, pool => Ok(sqlx::query_as(sql).fetch_all(pool).await?))
    }
}
