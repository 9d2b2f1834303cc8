//! Withdrawals and the signer protocol: request, claim, complete or fail, expire.

use super::*;

impl Store {
    /// A withdrawal request: the amount moves from the user's balance to their hold. A user
    /// with `max_pending` withdrawals pending or claimed already is refused (`too_many_pending_withdrawals`).
    pub async fn request_withdrawal(
        &self,
        user_id: i64,
        token: &str,
        amount: i64,
        destination: &str,
        max_pending: i64,
        now: DateTime<Utc>,
    ) -> Result<Withdrawal, StoreError> {
        let _writer = self.writer().await?;
        let lock_user = match self.backend() {
            // Concurrent requests of one user queue here, so the count below is exact.
            crate::store::Backend::Postgres => "SELECT id FROM users WHERE id = $1 FOR UPDATE",
            crate::store::Backend::Sqlite => "SELECT id FROM users WHERE id = $1",
        };
        retrying!(on_pool!(self, pool => {
            let mut tx = pool.begin().await?;
            sqlx::query(lock_user).bind(user_id).execute(&mut *tx).await?;
            let open: i64 = sqlx::query_scalar(
                "SELECT COUNT(*) FROM withdrawals WHERE user_id = $1 AND state IN ('pending', 'processing')",
            )
            .bind(user_id).fetch_one(&mut *tx).await?;
            if open >= max_pending {
                return Err(crate::store::refused("too_many_pending_withdrawals", format!(
                    "{open} withdrawals are already pending or claimed; at most {max_pending} at once (TIPOFF_MAX_PENDING_WITHDRAWALS)"
                )));
            }
            let w: Withdrawal = sqlx::query_as(&format!(
                "INSERT INTO withdrawals (user_id, token, amount, destination, created_at, updated_at) VALUES ($1, $2, $3, $4, $5, $5) RETURNING {WITHDRAWAL_COLUMNS}"
            ))
            .bind(user_id).bind(token).bind(amount).bind(destination).bind(now)
            .fetch_one(&mut *tx).await?;
            transfer!(tx, credit_first, token, &user_account(user_id), &holds_account(user_id), amount, "withdrawal_hold", &format!("withdrawal:{}", w.id), now);
            emit!(tx, "withdrawal.requested", None::<&str>, serde_json::json!({
                "withdrawal_id": w.id, "user_id": w.user_id, "token": w.token, "amount": w.amount.to_string(),
                "destination": w.destination,
            }), now);
            commit!(self, tx);
            Ok(w)
        }))
    }

    pub async fn withdrawals_of(
        &self,
        user_id: i64,
        before: Option<i64>,
        limit: i64,
    ) -> Result<Vec<Withdrawal>, StoreError> {
        let sql = format!("SELECT {WITHDRAWAL_COLUMNS} FROM withdrawals WHERE user_id = $1 AND id < $2 ORDER BY id DESC LIMIT $3");
        on_pool!(self, pool => Ok(sqlx::query_as(&sql).bind(user_id).bind(before.unwrap_or(i64::MAX)).bind(limit).fetch_all(pool).await?))
    }

    /// Withdrawals in `state` (all when `None`), oldest first from `after` (an id cursor).
    pub async fn withdrawals(
        &self,
        state: Option<&str>,
        after: Option<i64>,
        limit: i64,
    ) -> Result<Vec<Withdrawal>, StoreError> {
        let sql = format!(
            "SELECT {WITHDRAWAL_COLUMNS} FROM withdrawals WHERE ($1 IS NULL OR state = $1) AND id > $2 ORDER BY id LIMIT $3"
        );
        on_pool!(self, pool => Ok(sqlx::query_as(&sql).bind(state).bind(after.unwrap_or(0)).bind(limit).fetch_all(pool).await?))
    }

    /// A signer takes a pending withdrawal before sending it on chain: `pending` →
    /// `processing`, recording `claimer` and the time. A compare-and-set: a withdrawal no
    /// longer pending (claimed by another, expired, ended) is refused (`already_claimed`, `withdrawal_not_pending`) naming
    /// its state. A claimed withdrawal is never expired; it ends only by `complete` or `fail`.
    pub async fn claim_withdrawal(
        &self,
        id: i64,
        claimer: &str,
        now: DateTime<Utc>,
    ) -> Result<Withdrawal, StoreError> {
        let _writer = self.writer().await?;
        retrying!(on_pool!(self, pool => {
            let mut tx = pool.begin().await?;
            let claimed: Option<Withdrawal> = sqlx::query_as(&format!(
                "UPDATE withdrawals SET state = 'processing', claimed_by = $1, claimed_at = $2, updated_at = $2 \
                 WHERE id = $3 AND state = 'pending' RETURNING {WITHDRAWAL_COLUMNS}"
            ))
            .bind(claimer).bind(now).bind(id)
            .fetch_optional(&mut *tx).await?;
            let Some(w) = claimed else {
                let found: Option<(String, Option<String>)> = sqlx::query_as("SELECT state, claimed_by FROM withdrawals WHERE id = $1")
                    .bind(id).fetch_optional(&mut *tx).await?;
                return Err(match found {
                    None => StoreError::NotFound,
                    Some((state, Some(by))) if state == "processing" => crate::store::refused("already_claimed", format!("withdrawal {id} is already claimed by {by}")),
                    Some((state, _)) => crate::store::refused("withdrawal_not_pending", format!("withdrawal {id} is {state}, not pending")),
                });
            };
            commit!(self, tx);
            Ok(w)
        }))
    }

    /// Claims still `processing` (claimed, neither completed nor failed): how many, and the age
    /// in seconds of the oldest at `now`.
    pub async fn open_claims(&self, now: DateTime<Utc>) -> Result<(i64, Option<f64>), StoreError> {
        let (n, oldest): (i64, Option<DateTime<Utc>>) = on_pool!(self, pool => sqlx::query_as(
            "SELECT COUNT(*), MIN(claimed_at) FROM withdrawals WHERE state = 'processing'"
        ).fetch_one(pool).await?);
        Ok((
            n,
            oldest.map(|t| (now - t).num_milliseconds().max(0) as f64 / 1000.0),
        ))
    }

    /// Ends a withdrawal: `completed` (with its on-chain signature; the hold moves to
    /// `withdrawn`) or `failed` from `pending` or `processing`; `expired` only from `pending`
    /// (unclaimed). `failed` and `expired` return the hold to the user. A compare-and-set: a
    /// withdrawal in any other state is refused (`withdrawal_finished`), and so is a signature that
    /// already completed another withdrawal.
    pub async fn finish_withdrawal(
        &self,
        id: i64,
        outcome: WithdrawalOutcome<'_>,
        now: DateTime<Utc>,
    ) -> Result<Withdrawal, StoreError> {
        let (state, signature, reason) = match outcome {
            WithdrawalOutcome::Completed { signature } => ("completed", Some(signature), None),
            WithdrawalOutcome::Failed { reason } => ("failed", None, Some(reason)),
            WithdrawalOutcome::Expired => ("expired", None, None),
        };
        let _writer = self.writer().await?;
        retrying!(on_pool!(self, pool => {
            let mut tx = pool.begin().await?;
            if let Some(sig) = signature {
                let used: Option<i64> = sqlx::query_scalar("SELECT id FROM withdrawals WHERE signature = $1")
                    .bind(sig).fetch_optional(&mut *tx).await?;
                if let Some(other) = used {
                    return Err(crate::store::refused("signature_used", format!(
                        "signature already completed withdrawal {other}; a transaction pays one withdrawal"
                    )));
                }
            }
            let from = if state == "expired" { "('pending')" } else { "('pending', 'processing')" };
            let updated: Option<Withdrawal> = sqlx::query_as(&format!(
                "UPDATE withdrawals SET state = $1, signature = $2, reason = $3, updated_at = $4 WHERE id = $5 AND state IN {from} RETURNING {WITHDRAWAL_COLUMNS}"
            ))
            .bind(state).bind(signature).bind(reason).bind(now).bind(id)
            .fetch_optional(&mut *tx).await.map_err(|e| match e {
                sqlx::Error::Database(d) if d.is_unique_violation() => crate::store::refused(
                    "signature_used",
                    "signature already completed another withdrawal; a transaction pays one withdrawal",
                ),
                other => StoreError::from(other),
            })?;
            let Some(w) = updated else {
                let found: Option<String> = sqlx::query_scalar("SELECT state FROM withdrawals WHERE id = $1").bind(id).fetch_optional(&mut *tx).await?;
                return Err(match found {
                    None => StoreError::NotFound,
                    Some(s) if s == "processing" => crate::store::refused("withdrawal_claimed", format!("withdrawal {id} is claimed (processing): it completes or fails, it never expires")),
                    Some(s) => crate::store::refused("withdrawal_finished", format!("withdrawal {id} is {s}, not pending or processing")),
                });
            };
            let reference = format!("withdrawal:{id}");
            let holds = holds_account(w.user_id);
            if state == "completed" {
                transfer!(tx, debit_first, &w.token, &holds, "withdrawn", w.amount, "withdrawal", &reference, now);
            } else {
                transfer!(tx, debit_first, &w.token, &holds, &user_account(w.user_id), w.amount, "hold_release", &reference, now);
            }
            emit!(tx, &format!("withdrawal.{state}"), None::<&str>, serde_json::json!({
                "withdrawal_id": w.id, "user_id": w.user_id, "token": w.token, "amount": w.amount.to_string(),
                "signature": w.signature, "reason": w.reason,
            }), now);
            commit!(self, tx);
            Ok(w)
        }))
    }

    /// Ids of withdrawals still pending that were requested before `cutoff`, oldest first.
    pub async fn stale_withdrawals(
        &self,
        cutoff: DateTime<Utc>,
        limit: i64,
    ) -> Result<Vec<i64>, StoreError> {
        let sql = "SELECT id FROM withdrawals WHERE state = 'pending' AND created_at < $1 ORDER BY created_at, id LIMIT $2";
        on_pool!(self, pool => Ok(sqlx::query_scalar(sql).bind(cutoff).bind(limit).fetch_all(pool).await?))
    }
}

/// How a pending withdrawal ends.
#[derive(Debug, Clone, Copy)]
pub enum WithdrawalOutcome<'a> {
    Completed { signature: &'a str },
    Failed { reason: &'a str },
    Expired,
}
