//! Stakes, positions, and paying a closed market out.

use super::*;

/// Sets the payout of every unpaid position of `$token` in market `$market_id` inside the
/// open transaction `$tx`: refunds, the parimutuel share computed by the database, or (for
/// amounts near 2^63) each payout in 128-bit arithmetic, one row at a time.
macro_rules! set_payouts {
    ($tx:ident, $market_id:expr, $token:expr, $winner:expr, $fee_bps:expr, $now:expr, $refund:expr, $on_winner:expr, $winnings:expr) => {{
        let (market_id, token, winner, fee_bps, now): (i64, &str, Option<&str>, u32, DateTime<Utc>) =
            ($market_id, $token, $winner, $fee_bps, $now);
        let (refund, on_winner, winnings): (bool, i128, i128) = ($refund, $on_winner, $winnings);
        if refund {
            sqlx::query("UPDATE positions SET payout = amount, settled_at = $3 WHERE market_id = $1 AND token = $2 AND payout IS NULL")
                .bind(market_id).bind(token).bind(now)
                .execute(&mut *$tx).await?;
        } else if on_winner * winnings <= i64::MAX as i128 {
            // No product can overflow a 64-bit integer: the database computes them.
            sqlx::query(
                "UPDATE positions SET payout = CASE WHEN outcome = $3 THEN amount + amount * $4 / $5 ELSE 0 END, settled_at = $6 \
                 WHERE market_id = $1 AND token = $2 AND payout IS NULL",
            )
            .bind(market_id).bind(token).bind(winner).bind(winnings as i64).bind(on_winner as i64).bind(now)
            .execute(&mut *$tx).await?;
        } else {
            // Amounts near 2^63: each payout in 128-bit arithmetic, one row at a time.
            let rows: Vec<OpenStake> = sqlx::query_as(
                "SELECT id, user_id, outcome, token, amount FROM positions WHERE market_id = $1 AND token = $2 AND payout IS NULL ORDER BY id",
            )
            .bind(market_id).bind(token)
            .fetch_all(&mut *$tx).await?;
            for (position, payout, _) in parimutuel(&rows, winner, fee_bps).stakes {
                sqlx::query("UPDATE positions SET payout = $1, settled_at = $2 WHERE id = $3")
                    .bind(payout).bind(now).bind(position.id)
                    .execute(&mut *$tx).await?;
            }
        }
    }};
}

/// One stake request: `user_id` stakes `amount` base units of `token` on `outcome` of a market.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StakeRequest {
    pub user_id: i64,
    pub market_id: i64,
    pub outcome: String,
    pub token: String,
    pub amount: i64,
}

/// One stake inside the open transaction `$tx` (see [`Store::place_stakes`]); evaluates to a
/// `Result<Stake, StoreError>`. A refusal returns before anything is written but the market's
/// counter, which the caller's savepoint takes back.
macro_rules! stake_in_tx {
    ($tx:ident, $request:expr, $now:expr) => {{
        let (r, now): (&StakeRequest, DateTime<Utc>) = ($request, $now);
        let result: Result<Stake, StoreError> = async {
            let (user_id, market_id, amount) = (r.user_id, r.market_id, r.amount);
            let (outcome, token) = (r.outcome.as_str(), r.token.as_str());
            let n = sqlx::query(
                "UPDATE markets SET stake_count = stake_count + 1 WHERE id = $1 AND state = 'open' \
                 AND game_id IN (SELECT id FROM games WHERE starts_at > $2)",
            )
            .bind(market_id).bind(now)
            .execute(&mut *$tx).await?.rows_affected();
            if n != 1 {
                let found: Option<(String, DateTime<Utc>)> = sqlx::query_as(
                    "SELECT m.state, g.starts_at FROM markets m JOIN games g ON g.id = m.game_id WHERE m.id = $1",
                )
                .bind(market_id)
                .fetch_optional(&mut *$tx).await?;
                return Err(market_refusal(market_id, found));
            }
            let position_id: i64 = sqlx::query_scalar(
                "INSERT INTO positions (market_id, user_id, outcome, token, amount, stakes, created_at, updated_at) \
                 VALUES ($1, $2, $3, $4, $5, 1, $6, $6) ON CONFLICT (market_id, token, outcome, user_id) \
                 DO UPDATE SET amount = positions.amount + excluded.amount, stakes = positions.stakes + 1, updated_at = excluded.updated_at \
                 RETURNING id",
            )
            .bind(market_id).bind(user_id).bind(outcome).bind(token).bind(amount).bind(now)
            .fetch_one(&mut *$tx).await?;
            let id: i64 = sqlx::query_scalar(
                "INSERT INTO stakes (market_id, user_id, outcome, token, amount, created_at, position_id) VALUES ($1, $2, $3, $4, $5, $6, $7) RETURNING id"
            )
            .bind(market_id).bind(user_id).bind(outcome).bind(token).bind(amount).bind(now).bind(position_id)
            .fetch_one(&mut *$tx).await?;
            // Lock order: the escrow row before the user's (see `lock_rank`).
            transfer!($tx, credit_first, token, &user_account(user_id), &escrow_account(market_id), amount, "stake", &format!("stake:{id}"), now);
            Ok(Stake {
                id, market_id, user_id, outcome: outcome.to_string(), token: token.to_string(), amount,
                payout: None, created_at: now, settled_at: None, position_id: Some(position_id),
            })
        }
        .await;
        result
    }};
}

/// Why market `market_id` took no stake, from its state and its game's start (`None`: no such
/// market).
fn market_refusal(market_id: i64, found: Option<(String, DateTime<Utc>)>) -> StoreError {
    match found {
        None => StoreError::NotFound,
        Some((state, _)) if state != "open" => crate::store::refused(
            "market_closed",
            format!("market {market_id} is {state}: it takes no more stakes"),
        ),
        Some((_, starts_at)) => crate::store::refused(
            "market_closed",
            format!(
                "market {market_id} is closed: its game started at {}",
                starts_at.to_rfc3339()
            ),
        ),
    }
}

/// One stake on PostgreSQL as one statement, its own transaction: the `place_stake` function
/// (migration 19) runs the legs of `stake_in_tx!` server-side, so a stake is one round trip
/// instead of eight. Its refusals (SQLSTATE `TS001`, `TS002`) roll every leg back and are worded
/// here, from a read after them, as the transaction path words them.
async fn place_on_postgres(
    pool: &sqlx::PgPool,
    r: &StakeRequest,
    now: DateTime<Utc>,
) -> Result<Stake, StoreError> {
    let placed: Result<(i64, i64), sqlx::Error> =
        sqlx::query_as("SELECT o_stake, o_position FROM place_stake($1, $2, $3, $4, $5, $6, $7)")
            .bind(r.market_id)
            .bind(r.user_id)
            .bind(&r.outcome)
            .bind(&r.token)
            .bind(r.amount)
            .bind(now)
            .bind(uuid::Uuid::new_v4().to_string())
            .fetch_one(pool)
            .await;
    let code = match &placed {
        Err(sqlx::Error::Database(d)) => d.code().map(|c| c.into_owned()),
        _ => None,
    };
    match (placed, code) {
        (Ok((id, position_id)), _) => Ok(placed_stake(r, id, position_id, now)),
        (Err(_), Some(code)) if code.starts_with("TS") => {
            Err(postgres_refusal(pool, r, &code).await)
        }
        (Err(e), _) => Err(e.into()),
    }
}

/// One row of `place_stakes`: the stake's place in the batch (from 1), and its stake and
/// position ids, or its refusal's SQLSTATE.
type BatchAnswer = (i32, Option<i64>, Option<i64>, Option<String>);

/// A batch of stakes on PostgreSQL as one statement and one transaction: the `place_stakes`
/// function (migration 20) takes the batch's locks in `lock_rank` order, then writes the
/// batch (set-based, or stake by stake when a user is short); a refused stake writes nothing
/// and comes back with its SQLSTATE, worded here as [`place_on_postgres`] words it. An error
/// of the statement fails the whole batch: nothing of it commits.
async fn place_batch_on_postgres(
    pool: &sqlx::PgPool,
    batch: &[StakeRequest],
    now: DateTime<Utc>,
) -> Result<Vec<Result<Stake, StoreError>>, StoreError> {
    let column = |f: fn(&StakeRequest) -> i64| batch.iter().map(f).collect::<Vec<i64>>();
    let text = |f: fn(&StakeRequest) -> &str| {
        batch
            .iter()
            .map(|r| f(r).to_string())
            .collect::<Vec<String>>()
    };
    let transfers: Vec<String> = batch
        .iter()
        .map(|_| uuid::Uuid::new_v4().to_string())
        .collect();
    let rows: Vec<BatchAnswer> = sqlx::query_as(
        "SELECT o_index, o_stake, o_position, o_refusal FROM place_stakes($1, $2, $3, $4, $5, $6, $7)",
    )
    .bind(column(|r| r.market_id))
    .bind(column(|r| r.user_id))
    .bind(text(|r| &r.outcome))
    .bind(text(|r| &r.token))
    .bind(column(|r| r.amount))
    .bind(now)
    .bind(transfers)
    .fetch_all(pool)
    .await?;
    if rows.len() != batch.len() {
        return Err(StoreError::Unavailable(format!(
            "a batch of {} stakes came back with {} answers",
            batch.len(),
            rows.len()
        )));
    }
    let mut results = Vec::with_capacity(batch.len());
    for ((index, stake, position, refusal), r) in rows.into_iter().zip(batch) {
        debug_assert_eq!(index as usize, results.len() + 1);
        results.push(match (stake, position, refusal) {
            (Some(id), Some(position_id), None) => Ok(placed_stake(r, id, position_id, now)),
            (_, _, Some(code)) => Err(postgres_refusal(pool, r, &code).await),
            _ => Err(StoreError::Unavailable(format!(
                "stake {index} of a batch came back with neither a stake nor a refusal"
            ))),
        });
    }
    Ok(results)
}

/// The stake `r` became, as row `id` of position `position_id`.
fn placed_stake(r: &StakeRequest, id: i64, position_id: i64, now: DateTime<Utc>) -> Stake {
    Stake {
        id,
        market_id: r.market_id,
        user_id: r.user_id,
        outcome: r.outcome.clone(),
        token: r.token.clone(),
        amount: r.amount,
        payout: None,
        created_at: now,
        settled_at: None,
        position_id: Some(position_id),
    }
}

/// The refusal of `r` that the `place_stake(s)` functions signalled by `code` (`TS001`: the
/// market, `TS002`: the balance), worded from a read after it as `stake_in_tx!` words it.
async fn postgres_refusal(pool: &sqlx::PgPool, r: &StakeRequest, code: &str) -> StoreError {
    let worded: Result<StoreError, sqlx::Error> = async {
        if code == "TS001" {
            let found: Option<(String, DateTime<Utc>)> = sqlx::query_as(
                "SELECT m.state, g.starts_at FROM markets m JOIN games g ON g.id = m.game_id WHERE m.id = $1",
            )
            .bind(r.market_id)
            .fetch_optional(pool)
            .await?;
            return Ok(market_refusal(r.market_id, found));
        }
        let have: Option<i64> =
            sqlx::query_scalar("SELECT amount FROM balances WHERE account = $1 AND token = $2")
                .bind(user_account(r.user_id))
                .bind(&r.token)
                .fetch_optional(pool)
                .await?;
        Ok(crate::store::refused(
            "insufficient_balance",
            format!(
                "insufficient balance: {} {} available, {} needed",
                have.unwrap_or(0),
                r.token,
                r.amount
            ),
        ))
    }
    .await;
    worded.unwrap_or_else(StoreError::from)
}

impl Store {
    /// Takes a stake on an open market whose game has not started (`now` is before its start):
    /// the market's compare-and-set, the debit of the user's balance and the stake row commit
    /// together. A closed or started market, or a short balance, is refused (`market_closed`, `insufficient_balance`).
    pub async fn place_stake(
        &self,
        user_id: i64,
        market_id: i64,
        outcome: &str,
        token: &str,
        amount: i64,
        now: DateTime<Utc>,
    ) -> Result<Stake, StoreError> {
        let request = StakeRequest {
            user_id,
            market_id,
            outcome: outcome.to_string(),
            token: token.to_string(),
            amount,
        };
        self.place_stakes(std::slice::from_ref(&request), now)
            .await?
            .remove(0)
    }

    /// Takes a batch of stakes in one transaction, so they share one commit (one fsync) — the
    /// group commit of [`crate::money::StakeBatcher`]. The stakes are taken in order: one
    /// refused (`market_closed`, `insufficient_balance`, an unknown market) leaves nothing
    /// written and is answered with its error, its neighbours commit (on a SQLite file the
    /// checks come before the stake's writes, `sqlite_stakes.rs`; on the transaction path each
    /// stake runs inside its own savepoint). The outer error
    /// (the database unavailable, the lease lost) fails the whole batch: nothing of it commits.
    ///
    /// On PostgreSQL the batch is one statement (the `place_stakes` function, migration 20),
    /// which takes the batch's rows in the payouts' lock order (`lock_rank`) before it writes,
    /// so batches and payouts never deadlock; a lone stake is the `place_stake` function. Should
    /// the server refuse the batch for another reason than a refusal it answers (a stake the
    /// functions cannot take), its stakes are taken again one by one, so that stake fails
    /// alone. A fenced store (a singleton's) takes the transaction path, which checks its
    /// fence, a transaction a stake.
    pub async fn place_stakes(
        &self,
        batch: &[StakeRequest],
        now: DateTime<Utc>,
    ) -> Result<Vec<Result<Stake, StoreError>>, StoreError> {
        if let Store::Postgres(pool, None) = self {
            let results = match batch {
                [] => Vec::new(),
                [one] => vec![retrying!(place_on_postgres(pool, one, now).await)],
                _ => match retrying!(place_batch_on_postgres(pool, batch, now).await) {
                    Ok(results) => results,
                    // The server refused the statement, so none of it committed: each stake
                    // again on its own. Any other failure (the connection lost mid-answer) may
                    // have committed the batch: it is the whole batch's error, never a retry.
                    Err(e @ StoreError::Query(sqlx::Error::Database(_))) => {
                        tracing::warn!(stakes = batch.len(), error = %e, "a batch of stakes failed; taking them one by one");
                        let mut results = Vec::with_capacity(batch.len());
                        for request in batch {
                            results.push(retrying!(place_on_postgres(pool, request, now).await));
                        }
                        results
                    }
                    Err(e) => return Err(e),
                },
            };
            Store::wrote_unannounced();
            return Ok(results);
        }
        if self.backend() == crate::store::Backend::Postgres && batch.len() > 1 {
            let mut results = Vec::with_capacity(batch.len());
            for request in batch {
                results.push(
                    match self.place_batch(std::slice::from_ref(request), now).await {
                        Ok(mut one) => one.remove(0),
                        Err(e) => Err(e),
                    },
                );
            }
            return Ok(results);
        }
        self.place_batch(batch, now).await
    }

    /// [`Store::place_stakes`] in one transaction.
    #[tracing::instrument(skip_all, fields(stakes = batch.len()))]
    async fn place_batch(
        &self,
        batch: &[StakeRequest],
        now: DateTime<Utc>,
    ) -> Result<Vec<Result<Stake, StoreError>>, StoreError> {
        let _writer = self.writer().await?;
        if let Store::Sqlite(_, shared) = self {
            if shared.readers.is_some() {
                // A file database: the batch on its own connection and a blocking thread.
                let (shared, batch) = (shared.clone(), batch.to_vec());
                let results = tokio::task::spawn_blocking(move || {
                    shared.with_stake_writer(|conn| super::sqlite_stakes::place(conn, &batch, now))
                })
                .await
                .map_err(|e| StoreError::Unavailable(format!("the stake batch stopped: {e}")))??;
                Store::wrote_unannounced();
                return Ok(results);
            }
        }
        let results = retrying!(on_pool!(self, pool => {
            let mut tx = pool.begin().await?;
            let mut results = Vec::with_capacity(batch.len());
            for request in batch {
                if batch.len() > 1 {
                    sqlx::query("SAVEPOINT stake").execute(&mut *tx).await?;
                }
                match stake_in_tx!(tx, request, now) {
                    Ok(stake) => {
                        if batch.len() > 1 {
                            sqlx::query("RELEASE SAVEPOINT stake").execute(&mut *tx).await?;
                        }
                        results.push(Ok(stake));
                    }
                    Err(e @ (StoreError::Refused { .. } | StoreError::NotFound)) => {
                        if batch.len() > 1 {
                            sqlx::query("ROLLBACK TO SAVEPOINT stake").execute(&mut *tx).await?;
                            sqlx::query("RELEASE SAVEPOINT stake").execute(&mut *tx).await?;
                            results.push(Err(e));
                        } else {
                            return Err(e);
                        }
                    }
                    Err(e) => return Err(e),
                }
            }
            commit!(self, tx);
            Ok(results)
        }));
        let results = match results {
            // A lone stake's refusal comes back as the transaction's error (nothing to commit).
            Err(e @ (StoreError::Refused { .. } | StoreError::NotFound)) if batch.len() == 1 => {
                vec![Err(e)]
            }
            other => other?,
        };
        // Stakes only move the pools: announced to the other replicas in batches (by the
        // `listener`), not one NOTIFY per stake, which would serialise their commits.
        Store::wrote_unannounced();
        Ok(results)
    }

    /// Pays out one closed market in a transaction of its own, set-based: the market's
    /// compare-and-set on `paid_at` (so at most once), then per token one statement per leg —
    /// every position's payout, the users' balances, their ledger entries, the escrow's — and
    /// the house's fee and rounding remainder. The payouts are exactly [`parimutuel`]'s. Emits
    /// `market.settled` or `market.voided`. `None` when the market is not closed or was paid.
    #[tracing::instrument(skip_all, fields(market_id))]
    pub async fn pay_market(
        &self,
        market_id: i64,
        fee_bps: u32,
        now: DateTime<Utc>,
    ) -> Result<Option<Paid>, StoreError> {
        let _writer = self.writer().await?;
        let paid = retrying!(on_pool!(self, pool => {
            let mut tx = pool.begin().await?;
            let closed: Option<(String, Option<String>, i64, i64)> = sqlx::query_as(
                "UPDATE markets SET paid_at = $1 WHERE id = $2 AND state IN ('settled', 'void') AND paid_at IS NULL \
                 RETURNING state, winning_outcome, game_id, stake_count",
            )
            .bind(now).bind(market_id)
            .fetch_optional(&mut *tx).await?;
            let Some((state, winning, game_id, stake_count)) = closed else {
                return Ok(None);
            };
            let winner = if state == "settled" { winning } else { None };
            let pools: Vec<(String, i64, i64, i64)> = sqlx::query_as(
                "SELECT token, CAST(SUM(amount) AS BIGINT), CAST(SUM(CASE WHEN outcome = $2 THEN amount ELSE 0 END) AS BIGINT), COUNT(*) \
                 FROM positions WHERE market_id = $1 AND payout IS NULL GROUP BY token ORDER BY token",
            )
            .bind(market_id).bind(winner.as_deref())
            .fetch_all(&mut *tx).await?;
            let escrow = escrow_account(market_id);
            let reference = format!("market:{market_id}");
            let mut done = Paid { market_id, state: state.clone(), ..Paid::default() };
            for (token, total, on_winner, positions) in &pools {
                let (total, on_winner) = (*total as i128, *on_winner as i128);
                let refund = on_winner == 0;
                let losers = total - on_winner;
                let fee = if refund { 0 } else { losers * fee_bps as i128 / 10_000 };
                let winnings = losers - fee;
                let kind = if refund { "refund" } else { "payout" };
                set_payouts!(tx, market_id, token, winner.as_deref(), fee_bps, now, refund, on_winner, winnings);
                let paid: i64 = sqlx::query_scalar(
                    "SELECT CAST(COALESCE(SUM(payout), 0) AS BIGINT) FROM positions WHERE market_id = $1 AND token = $2",
                )
                .bind(market_id).bind(token)
                .fetch_one(&mut *tx).await?;
                // Lock order (`lock_rank`): the escrow row, the users' rows by id, the house last.
                let n = sqlx::query("UPDATE balances SET amount = amount - $1 WHERE account = $2 AND token = $3 AND amount >= $1")
                    .bind(paid).bind(&escrow).bind(token)
                    .execute(&mut *tx).await?.rows_affected();
                if n != 1 && paid > 0 {
                    return Err(crate::store::refused("escrow_short", format!("escrow of market {market_id} holds less than the {paid} {token} its positions are owed")));
                }
                sqlx::query(
                    "INSERT INTO balances (account, token, amount) \
                     SELECT 'user:' || user_id, token, SUM(payout) FROM positions WHERE market_id = $1 AND token = $2 AND payout > 0 \
                     GROUP BY user_id, token ORDER BY user_id \
                     ON CONFLICT (account, token) DO UPDATE SET amount = balances.amount + excluded.amount",
                )
                .bind(market_id).bind(token)
                .execute(&mut *tx).await?;
                for (account, sign) in [("'user:' || user_id", ""), ("'escrow:' || market_id", "-")] {
                    sqlx::query(&format!(
                        "INSERT INTO ledger_entries (transfer_id, account, token, amount, kind, reference, created_at) \
                         SELECT 'position:' || id, {account}, token, {sign}payout, $3, 'position:' || id, $4 \
                         FROM positions WHERE market_id = $1 AND token = $2 AND payout > 0 ORDER BY id"
                    ))
                    .bind(market_id).bind(token).bind(kind).bind(now)
                    .execute(&mut *tx).await?;
                }
                let remainder = total - paid as i128 - fee;
                if fee > 0 {
                    transfer!(tx, debit_first, token, &escrow, "house", fee as i64, "fee", &reference, now);
                }
                if remainder > 0 {
                    transfer!(tx, debit_first, token, &escrow, "house", remainder as i64, "rounding", &reference, now);
                }
                done.positions += *positions as u64;
                done.paid += paid;
            }
            let (league, home_score, away_score): (String, Option<i64>, Option<i64>) =
                sqlx::query_as("SELECT league, home_score, away_score FROM games WHERE id = $1")
                    .bind(game_id).fetch_one(&mut *tx).await?;
            if state == "settled" {
                emit!(tx, "market.settled", Some(league.as_str()), serde_json::json!({
                    "market_id": market_id, "game_id": game_id, "league": league, "winning_outcome": winner,
                    "home_score": home_score, "away_score": away_score, "stakes_paid": stake_count,
                    "positions_paid": done.positions,
                }), now);
            } else {
                emit!(tx, "market.voided", Some(league.as_str()), serde_json::json!({
                    "market_id": market_id, "game_id": game_id, "league": league, "stakes_refunded": stake_count,
                    "positions_refunded": done.positions,
                }), now);
            }
            commit!(self, tx);
            Ok(Some(done))
        }))?;
        if paid.is_some() {
            Store::wrote();
        }
        Ok(paid)
    }

    /// Closed markets of `league` not yet paid out, oldest first (a crash between a board's
    /// commit and its payouts leaves some; the league's next pass pays them).
    pub async fn unpaid_markets(&self, league: &str, limit: i64) -> Result<Vec<i64>, StoreError> {
        let sql = "SELECT m.id FROM markets m JOIN games g ON g.id = m.game_id \
                   WHERE m.paid_at IS NULL AND m.state IN ('settled', 'void') AND g.league = $1 ORDER BY m.id LIMIT $2";
        on_pool!(self, pool => Ok(sqlx::query_scalar(sql).bind(league).bind(limit).fetch_all(pool).await?))
    }

    /// A user's stakes, newest first, strictly before the id `before`.
    pub async fn stakes_of(
        &self,
        user_id: i64,
        before: Option<i64>,
        limit: i64,
    ) -> Result<Vec<Stake>, StoreError> {
        let sql = format!(
            "SELECT {STAKE_COLUMNS} FROM stakes s LEFT JOIN positions p ON p.id = s.position_id \
             WHERE s.user_id = $1 AND s.id < $2 ORDER BY s.id DESC LIMIT $3"
        );
        let rows: Vec<StakeRow> = on_pool!(self, pool => sqlx::query_as(&sql).bind(user_id).bind(before.unwrap_or(i64::MAX)).bind(limit).fetch_all(pool).await?);
        Ok(rows.into_iter().map(Stake::from).collect())
    }

    /// A user's positions, newest first, strictly before the id `before`.
    pub async fn positions_of(
        &self,
        user_id: i64,
        before: Option<i64>,
        limit: i64,
    ) -> Result<Vec<Position>, StoreError> {
        let sql = format!("SELECT {POSITION_COLUMNS} FROM positions WHERE user_id = $1 AND id < $2 ORDER BY id DESC LIMIT $3");
        on_pool!(self, pool => Ok(sqlx::query_as(&sql).bind(user_id).bind(before.unwrap_or(i64::MAX)).bind(limit).fetch_all(pool).await?))
    }

    /// Each market's pools: `(market, outcome, token, total staked)`, by market, home's
    /// before away's.
    pub async fn market_pools(
        &self,
        market_ids: &[i64],
    ) -> Result<Vec<crate::store::PoolRow>, StoreError> {
        if market_ids.is_empty() {
            return Ok(Vec::new());
        }
        let q = crate::store::reads::market_pools_query(market_ids);
        self.read_all(&q, |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?)))
            .await
    }
}
