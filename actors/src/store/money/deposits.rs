//! Deposits: the watchers' cursors, crediting exactly once, assigning unattributed ones.

use super::*;

impl Store {
    /// The watcher cursor of `token`, if it has processed any window.
    pub async fn watcher_cursor(&self, token: &str) -> Result<Option<Cursor>, StoreError> {
        let sql = "SELECT signature, slot FROM watcher_cursors WHERE token = $1";
        on_pool!(self, pool => Ok(sqlx::query_as(sql).bind(token).fetch_optional(pool).await?))
    }

    /// Records a watcher's window, oldest first, in one transaction: each deposit unique by
    /// (token, signature) — a replayed one credits nothing — credited to the user whose deposit
    /// code its memo carries, else to `unattributed`; then the cursor moves to `cursor`.
    #[tracing::instrument(skip_all, fields(%token, deposits = deposits.len()))]
    pub async fn credit_deposits(
        &self,
        token: &str,
        deposits: &[IncomingDeposit],
        cursor: Option<&Cursor>,
        now: DateTime<Utc>,
    ) -> Result<Credited, StoreError> {
        let mut words: Vec<String> = deposits
            .iter()
            .filter_map(|d| d.memo.as_deref())
            .flat_map(memo_words)
            .collect();
        words.sort();
        words.dedup();
        let _writer = self.writer().await?;
        let backend = self.backend();
        retrying!(on_pool!(self, pool => {
            let mut done = Credited::default();
            let mut tx = pool.begin().await?;
            let mut codes: HashMap<String, i64> = HashMap::new();
            for chunk in words.chunks(500) {
                let mut q = sqlx::QueryBuilder::new("SELECT deposit_code, id FROM users WHERE deposit_code IN (");
                let mut list = q.separated(", ");
                for w in chunk {
                    list.push_bind(w.clone());
                }
                q.push(")");
                let rows: Vec<(String, i64)> = q.build_query_as().fetch_all(&mut *tx).await?;
                codes.extend(rows);
            }
            let owner = |d: &IncomingDeposit| d.memo.as_deref().map(memo_words).unwrap_or_default().iter().find_map(|w| codes.get(w).copied());
            if backend == crate::store::Backend::Postgres {
                // Every balance row this window touches, locked first in the global order
                // (`lock_rank`), so a settlement paying the same users cannot deadlock with it.
                let mut accounts: Vec<String> = deposits.iter()
                    .map(|d| owner(d).map(user_account).unwrap_or_else(|| "unattributed".into()))
                    .chain(["external".to_string()])
                    .collect();
                accounts.sort_by_key(|a| lock_rank(a));
                accounts.dedup();
                for account in &accounts {
                    sqlx::query("INSERT INTO balances (account, token, amount) VALUES ($1, $2, 0) ON CONFLICT (account, token) DO UPDATE SET amount = balances.amount")
                        .bind(account).bind(token)
                        .execute(&mut *tx).await?;
                }
            }
            for d in deposits {
                let user = owner(d);
                let state = if user.is_some() { "credited" } else { "unattributed" };
                let id: Option<i64> = sqlx::query_scalar(
                    "INSERT INTO deposits (token, signature, slot, amount, user_id, memo, state, created_at) \
                     VALUES ($1, $2, $3, $4, $5, $6, $7, $8) ON CONFLICT (token, signature) DO NOTHING RETURNING id",
                )
                .bind(token).bind(&d.signature).bind(d.slot).bind(d.amount).bind(user).bind(&d.memo).bind(state).bind(now)
                .fetch_optional(&mut *tx).await?;
                let Some(id) = id else {
                    done.duplicates += 1;
                    continue;
                };
                let account = match user {
                    Some(u) => {
                        done.attributed += 1;
                        emit!(tx, "deposit.credited", None::<&str>, serde_json::json!({
                            "deposit_id": id, "user_id": u, "token": token, "amount": d.amount.to_string(),
                            "signature": d.signature, "slot": d.slot,
                        }), now);
                        user_account(u)
                    }
                    None => { done.unattributed += 1; "unattributed".to_string() }
                };
                done.amount += d.amount;
                transfer!(tx, credit_first, token, "external", &account, d.amount, "deposit", &format!("deposit:{id}"), now);
            }
            if let Some(c) = cursor {
                sqlx::query(
                    "INSERT INTO watcher_cursors (token, signature, slot, updated_at) VALUES ($1, $2, $3, $4) \
                     ON CONFLICT (token) DO UPDATE SET signature = excluded.signature, slot = excluded.slot, updated_at = excluded.updated_at",
                )
                .bind(token).bind(&c.signature).bind(c.slot).bind(now)
                .execute(&mut *tx).await?;
            }
            commit!(self, tx);
            Ok(done)
        }))
    }

    /// Deposits, newest first, strictly before the id `before`; only unattributed ones if asked.
    pub async fn deposits(
        &self,
        unattributed: bool,
        before: Option<i64>,
        limit: i64,
    ) -> Result<Vec<Deposit>, StoreError> {
        let filter = if unattributed {
            "state = 'unattributed' AND"
        } else {
            ""
        };
        let sql = format!("SELECT {DEPOSIT_COLUMNS} FROM deposits WHERE {filter} id < $1 ORDER BY id DESC LIMIT $2");
        on_pool!(self, pool => Ok(sqlx::query_as(&sql).bind(before.unwrap_or(i64::MAX)).bind(limit).fetch_all(pool).await?))
    }

    /// Credits an unattributed deposit to a user (compare-and-set: once).
    pub async fn assign_deposit(
        &self,
        deposit_id: i64,
        user_id: i64,
        now: DateTime<Utc>,
    ) -> Result<Deposit, StoreError> {
        let _writer = self.writer().await?;
        retrying!(on_pool!(self, pool => {
            let mut tx = pool.begin().await?;
            let exists: Option<i64> = sqlx::query_scalar("SELECT id FROM deposits WHERE id = $1").bind(deposit_id).fetch_optional(&mut *tx).await?;
            if exists.is_none() {
                return Err(StoreError::NotFound);
            }
            let user: Option<i64> = sqlx::query_scalar("SELECT id FROM users WHERE id = $1").bind(user_id).fetch_optional(&mut *tx).await?;
            if user.is_none() {
                return Err(StoreError::Invalid(format!("user {user_id} does not exist")));
            }
            let updated: Option<Deposit> = sqlx::query_as(&format!(
                "UPDATE deposits SET user_id = $1, state = 'assigned', assigned_at = $2 WHERE id = $3 AND state = 'unattributed' RETURNING {DEPOSIT_COLUMNS}"
            ))
            .bind(user_id).bind(now).bind(deposit_id)
            .fetch_optional(&mut *tx).await?;
            let Some(deposit) = updated else {
                let found: Option<Deposit> = sqlx::query_as(&format!("SELECT {DEPOSIT_COLUMNS} FROM deposits WHERE id = $1"))
                    .bind(deposit_id).fetch_optional(&mut *tx).await?;
                return Err(match found {
                    None => StoreError::NotFound,
                    Some(d) => crate::store::refused("already_assigned", format!(
                        "deposit {deposit_id} is already {} to user {}", if d.state == "assigned" { "assigned" } else { "credited" },
                        d.user_id.unwrap_or_default()
                    )),
                });
            };
            transfer!(tx, debit_first, &deposit.token, "unattributed", &user_account(user_id), deposit.amount, "deposit", &format!("deposit:{deposit_id}"), now);
            emit!(tx, "deposit.credited", None::<&str>, serde_json::json!({
                "deposit_id": deposit_id, "user_id": user_id, "token": deposit.token, "amount": deposit.amount.to_string(),
                "signature": deposit.signature, "slot": deposit.slot, "assigned": true,
            }), now);
            commit!(self, tx);
            Ok(deposit)
        }))
    }
}
