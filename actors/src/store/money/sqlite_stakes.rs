//! SQLite's stake batches, on a connection of their own and a blocking thread: the statements
//! of a batch run back to back there (no hand-off to sqlx's connection thread per statement,
//! no waiting behind the HTTP worker's other requests between them), and the commit's fsync
//! blocks no runtime. The store's one-writer lock is held around it, as for every write.
//!
//! A stake writes the rows `stake_in_tx!` writes, but takes its two checks first (its market
//! open, its user's balance enough) and writes nothing else until both pass, so a refused stake
//! leaves no trace without a savepoint of its own (two statements less a stake). With the one
//! writer nobody else's write can come between a check and the stake's other rows; row-lock
//! order (`lock_rank`) is PostgreSQL's concern, not SQLite's, whose writer holds the whole
//! database.

use chrono::{DateTime, SecondsFormat, Utc};
use rusqlite::{params, OptionalExtension};

use super::{escrow_account, user_account, Stake, StakeRequest};
use crate::store::{refused, StoreError};

/// Runs `batch` in one transaction on `conn` (see [`crate::store::Store::place_stakes`]): a
/// refused stake (closed market, short balance, unknown market) is answered alone and its
/// neighbours commit; any other failure is the whole batch's, and nothing of it is written.
pub(crate) fn place(
    conn: &mut rusqlite::Connection,
    batch: &[StakeRequest],
    now: DateTime<Utc>,
) -> Result<Vec<Result<Stake, StoreError>>, StoreError> {
    let tx = conn.transaction().map_err(write_error)?;
    let at = now.to_rfc3339_opts(SecondsFormat::AutoSi, false);
    let mut results = Vec::with_capacity(batch.len());
    for request in batch {
        match checks(&tx, request, &at)? {
            Ok(()) => results.push(Ok(stake(&tx, request, now, &at)?)),
            Err(refusal) => results.push(Err(refusal)),
        }
    }
    tx.commit().map_err(write_error)?;
    Ok(results)
}

fn run(
    tx: &rusqlite::Transaction<'_>,
    sql: &str,
    p: &[&dyn rusqlite::ToSql],
) -> Result<usize, StoreError> {
    tx.prepare_cached(sql)
        .and_then(|mut s| s.execute(p))
        .map_err(write_error)
}

/// A stake's two checks, each one conditional write: the market's stake count (open market,
/// game not started) and the user's debit (enough balance). Outer `Err`: the batch failed;
/// inner: this stake is refused, and nothing of it is left written.
fn checks(
    tx: &rusqlite::Transaction<'_>,
    r: &StakeRequest,
    at: &str,
) -> Result<Result<(), StoreError>, StoreError> {
    let (market_id, amount, token) = (r.market_id, r.amount, r.token.as_str());
    let n = run(
        tx,
        "UPDATE markets SET stake_count = stake_count + 1 WHERE id = $1 AND state = 'open' \
         AND game_id IN (SELECT id FROM games WHERE starts_at > $2)",
        params![market_id, at],
    )?;
    if n != 1 {
        let found: Option<(String, String)> = tx
            .prepare_cached("SELECT m.state, g.starts_at FROM markets m JOIN games g ON g.id = m.game_id WHERE m.id = $1")
            .and_then(|mut s| s.query_row(params![market_id], |row| Ok((row.get(0)?, row.get(1)?))).optional())
            .map_err(write_error)?;
        return Ok(Err(match found {
            None => StoreError::NotFound,
            Some((state, _)) if state != "open" => refused(
                "market_closed",
                format!("market {market_id} is {state}: it takes no more stakes"),
            ),
            Some((_, starts_at)) => {
                let starts_at = DateTime::parse_from_rfc3339(&starts_at)
                    .map(|t| t.to_rfc3339())
                    .unwrap_or(starts_at);
                refused(
                    "market_closed",
                    format!("market {market_id} is closed: its game started at {starts_at}"),
                )
            }
        }));
    }
    let user = user_account(r.user_id);
    let n = run(
        tx,
        "UPDATE balances SET amount = amount - $1 WHERE account = $2 AND token = $3 AND amount >= $1",
        params![amount, user, token],
    )?;
    if n != 1 {
        // The market's count goes back: the refused stake leaves nothing written.
        run(
            tx,
            "UPDATE markets SET stake_count = stake_count - 1 WHERE id = $1",
            params![market_id],
        )?;
        let have: Option<i64> = tx
            .prepare_cached("SELECT amount FROM balances WHERE account = $1 AND token = $2")
            .and_then(|mut s| {
                s.query_row(params![user, token], |row| row.get(0))
                    .optional()
            })
            .map_err(write_error)?;
        return Ok(Err(refused(
            "insufficient_balance",
            format!(
                "insufficient balance: {} {token} available, {amount} needed",
                have.unwrap_or(0)
            ),
        )));
    }
    Ok(Ok(()))
}

/// The rest of a stake whose checks passed: its position, the stake row, the escrow's credit
/// and the two ledger entries. Nothing here refuses: an error is the batch's.
fn stake(
    tx: &rusqlite::Transaction<'_>,
    r: &StakeRequest,
    now: DateTime<Utc>,
    at: &str,
) -> Result<Stake, StoreError> {
    let (user_id, market_id, amount) = (r.user_id, r.market_id, r.amount);
    let (outcome, token) = (r.outcome.as_str(), r.token.as_str());
    let one = |sql: &str, p: &[&dyn rusqlite::ToSql]| -> Result<i64, StoreError> {
        tx.prepare_cached(sql)
            .and_then(|mut s| s.query_row(p, |row| row.get(0)))
            .map_err(write_error)
    };
    let position_id = one(
        "INSERT INTO positions (market_id, user_id, outcome, token, amount, stakes, created_at, updated_at) \
         VALUES ($1, $2, $3, $4, $5, 1, $6, $6) ON CONFLICT (market_id, token, outcome, user_id) \
         DO UPDATE SET amount = positions.amount + excluded.amount, stakes = positions.stakes + 1, updated_at = excluded.updated_at \
         RETURNING id",
        params![market_id, user_id, outcome, token, amount, at],
    )?;
    let id = one(
        "INSERT INTO stakes (market_id, user_id, outcome, token, amount, created_at, position_id) VALUES ($1, $2, $3, $4, $5, $6, $7) RETURNING id",
        params![market_id, user_id, outcome, token, amount, at, position_id],
    )?;
    let (user, escrow) = (user_account(user_id), escrow_account(market_id));
    run(
        tx,
        "INSERT INTO balances (account, token, amount) VALUES ($1, $2, $3) \
         ON CONFLICT (account, token) DO UPDATE SET amount = balances.amount + excluded.amount",
        params![escrow, token, amount],
    )?;
    run(
        tx,
        "INSERT INTO ledger_entries (transfer_id, account, token, amount, kind, reference, created_at) \
         VALUES ($1, $2, $3, $4, $5, $6, $7), ($1, $8, $3, $9, $5, $6, $7)",
        params![
            uuid::Uuid::new_v4().to_string(),
            user,
            token,
            -amount,
            "stake",
            format!("stake:{id}"),
            at,
            escrow,
            amount
        ],
    )?;
    Ok(Stake {
        id,
        market_id,
        user_id,
        outcome: outcome.to_string(),
        token: token.to_string(),
        amount,
        payout: None,
        created_at: now,
        settled_at: None,
        position_id: Some(position_id),
    })
}

fn write_error(e: rusqlite::Error) -> StoreError {
    crate::store::reads::sqlite_error(e, "a stake batch failed")
}

impl crate::store::SqliteShared {
    /// Runs `f` on the stake writer connection (opening it on first use).
    pub(crate) fn with_stake_writer<T>(
        &self,
        f: impl FnOnce(&mut rusqlite::Connection) -> Result<T, StoreError>,
    ) -> Result<T, StoreError> {
        let mut writer = self.stake_writer.lock().expect("stake writer");
        if writer.is_none() {
            let readers = self.readers.as_ref().ok_or_else(|| {
                StoreError::Unavailable("an in-memory database has no stake writer".into())
            })?;
            *writer = Some(readers.open_writer()?);
        }
        f(writer.as_mut().expect("opened"))
    }
}
