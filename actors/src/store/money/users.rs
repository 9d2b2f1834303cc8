//! Users, their balances and ledger.

use super::*;

impl Store {
    /// Registers a user. `api_key_hash` is the digest of the key (the key itself is never stored).
    pub async fn create_user(
        &self,
        name: &str,
        api_key_hash: &str,
        deposit_code: &str,
        now: DateTime<Utc>,
    ) -> Result<User, StoreError> {
        let sql = "INSERT INTO users (name, api_key_hash, deposit_code, created_at) VALUES ($1, $2, $3, $4) \
                   RETURNING id, name, deposit_code, created_at";
        let _writer = self.writer().await?;
        on_pool!(self, pool => {
            let mut tx = pool.begin().await?;
            let user: User = sqlx::query_as(sql).bind(name).bind(api_key_hash).bind(deposit_code).bind(now)
                .fetch_one(&mut *tx).await.map_err(|e| match &e {
                    sqlx::Error::Database(d) if d.is_unique_violation() => StoreError::Conflict("a user with this key or deposit code exists".into()),
                    _ => StoreError::from(e),
                })?;
            emit!(tx, "user.registered", None::<&str>, serde_json::json!({"user_id": user.id, "name": user.name}), now);
            commit!(self, tx);
            Ok(user)
        })
    }

    pub async fn user_by_key_hash(&self, api_key_hash: &str) -> Result<User, StoreError> {
        // Every authenticated request asks this: on the read path.
        let sql = "SELECT id, name, deposit_code, created_at FROM users WHERE api_key_hash = $1";
        let q = crate::store::reads::Query::of(
            sql,
            vec![crate::store::reads::Arg::Text(api_key_hash.to_string())],
        );
        self.read_one(&q, |r| {
            Ok(User {
                id: r.get(0)?,
                name: r.get(1)?,
                deposit_code: r.get(2)?,
                created_at: crate::store::reads::time(r, 3)?,
            })
        })
        .await
    }

    pub async fn user(&self, id: i64) -> Result<User, StoreError> {
        let sql = "SELECT id, name, deposit_code, created_at FROM users WHERE id = $1";
        on_pool!(self, pool => Ok(sqlx::query_as(sql).bind(id).fetch_one(pool).await?))
    }

    /// An account's balances, by token (tokens never touched are absent).
    pub async fn balances(&self, account: &str) -> Result<Vec<Balance>, StoreError> {
        let sql = "SELECT token, amount FROM balances WHERE account = $1 ORDER BY token";
        on_pool!(self, pool => Ok(sqlx::query_as(sql).bind(account).fetch_all(pool).await?))
    }

    /// An account's ledger, newest first, strictly before the id `before`.
    pub async fn ledger(
        &self,
        account: &str,
        before: Option<i64>,
        limit: i64,
    ) -> Result<Vec<LedgerEntry>, StoreError> {
        let sql = "SELECT id, transfer_id, token, amount, kind, reference, created_at FROM ledger_entries \
                   WHERE account = $1 AND id < $2 ORDER BY id DESC LIMIT $3";
        on_pool!(self, pool => Ok(sqlx::query_as(sql).bind(account).bind(before.unwrap_or(i64::MAX)).bind(limit).fetch_all(pool).await?))
    }
}
