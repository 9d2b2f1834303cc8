//! Dashboard sessions (see `migrations/*/..._admin_sessions.sql`): rows keyed by the SHA-256 of
//! a random session id, tied to a digest of the admin token they were opened with.

use chrono::{DateTime, Utc};

use super::{Store, StoreError};

impl Store {
    /// Opens a session until `expires_at`; expired sessions and those of another admin token
    /// are deleted in the same transaction.
    pub async fn open_session(
        &self,
        id_hash: &str,
        token_key: &str,
        now: DateTime<Utc>,
        expires_at: DateTime<Utc>,
    ) -> Result<(), StoreError> {
        let _writer = self.writer().await?;
        on_pool!(self, pool => {
            let mut tx = pool.begin().await?;
            sqlx::query("DELETE FROM admin_sessions WHERE expires_at <= $1 OR token_key <> $2")
                .bind(now).bind(token_key).execute(&mut *tx).await?;
            sqlx::query("INSERT INTO admin_sessions (id_hash, token_key, created_at, expires_at) VALUES ($1, $2, $3, $4)")
                .bind(id_hash).bind(token_key).bind(now).bind(expires_at)
                .execute(&mut *tx).await?;
            tx.commit().await?;
        });
        Ok(())
    }

    /// Whether `id_hash` names an unexpired session of the admin token `token_key`.
    pub async fn session_active(
        &self,
        id_hash: &str,
        token_key: &str,
        now: DateTime<Utc>,
    ) -> Result<bool, StoreError> {
        let sql = "SELECT COUNT(*) FROM admin_sessions WHERE id_hash = $1 AND token_key = $2 AND expires_at > $3";
        let n: i64 = on_pool!(self, pool => sqlx::query_scalar(sql).bind(id_hash).bind(token_key).bind(now).fetch_one(pool).await?);
        Ok(n > 0)
    }

    /// Ends a session (logout); `false` when there was none.
    pub async fn close_session(&self, id_hash: &str) -> Result<bool, StoreError> {
        let _writer = self.writer().await?;
        let n = on_pool!(self, pool => sqlx::query("DELETE FROM admin_sessions WHERE id_hash = $1").bind(id_hash).execute(pool).await?.rows_affected());
        Ok(n > 0)
    }
}
