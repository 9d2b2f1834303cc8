//! Money: users, the double-entry ledger and its balances, stakes with parimutuel settlement,
//! Solana deposits with each watcher's cursor, and withdrawals.
//!
//! # Rules every function here keeps
//! - Amounts are `i64` base units of one token; they are never floats.
//! - Every balance change is a transfer between two accounts: one debit and one credit ledger
//!   entry with the same transfer id, written in the same transaction as the balance rows. So
//!   each token's entries sum to zero and every balance equals the sum of its entries.
//! - Accounts: `user:<id>`, `escrow:<market>` (stakes of an unsettled market), `holds:<user>`
//!   (pending and claimed withdrawals), `house` (fees and rounding remainders), `unattributed` (deposits
//!   with no known memo), `withdrawn` (paid out on chain) and `external` (the outside world,
//!   minus every deposit). Only `external` may go below zero (a `CHECK` in the schema, and the
//!   conditional debit below).
//! - State changes are compare-and-set updates (`... WHERE state = 'pending'`), so a racing
//!   second actor (another cleanup pass, another replica) changes nothing.
//! - Withdrawals follow the signer protocol: a signer claims a pending one (`processing`)
//!   before sending it on chain, then completes it with the transaction signature (unique) or
//!   fails it. Cleanup expires only unclaimed `pending` ones: a paid withdrawal is never refunded.
//! - Lock order on PostgreSQL: row locks are taken markets and users first, then balance rows
//!   in one global order ([`lock_rank`]: escrow, external, holds, unattributed, users by id,
//!   withdrawn, `house` last), so two money transactions never wait on each other in a cycle;
//!   a serialization failure or deadlock that happens anyway is retried inside the store
//!   (`retrying!`). On SQLite, money transactions queue on the store's one writer lock.
//! - A stake adds to the user's position per (market, outcome, token); settlement pays
//!   positions, set-based, each market in its own transaction ([`Store::pay_market`]).

use std::collections::{BTreeMap, HashMap};

use chrono::{DateTime, Utc};
use serde::Serialize;

use super::{Store, StoreError};

/// The settlement fee when none is configured: 2 % of the losing side's pool.
pub const DEFAULT_FEE_BPS: u32 = 200;

/// The account of a user's spendable balance.
pub fn user_account(user_id: i64) -> String {
    format!("user:{user_id}")
}

pub(crate) fn escrow_account(market_id: i64) -> String {
    format!("escrow:{market_id}")
}

fn holds_account(user_id: i64) -> String {
    format!("holds:{user_id}")
}

#[derive(Debug, Clone, Serialize, sqlx::FromRow, PartialEq, Eq)]
pub struct User {
    pub id: i64,
    pub name: String,
    pub deposit_code: String,
    pub created_at: DateTime<Utc>,
}

#[derive(Debug, Clone, Serialize, sqlx::FromRow, PartialEq, Eq)]
pub struct Balance {
    pub token: String,
    pub amount: i64,
}

#[derive(Debug, Clone, Serialize, sqlx::FromRow, PartialEq, Eq)]
pub struct LedgerEntry {
    pub id: i64,
    pub transfer_id: String,
    pub token: String,
    /// Signed: positive credits the account.
    pub amount: i64,
    pub kind: String,
    pub reference: String,
    pub created_at: DateTime<Utc>,
}

#[derive(Debug, Clone, Serialize, sqlx::FromRow, PartialEq, Eq)]
pub struct Stake {
    pub id: i64,
    pub market_id: i64,
    pub user_id: i64,
    pub outcome: String,
    pub token: String,
    pub amount: i64,
    /// This stake's share of what settlement paid its position (0 for a losing stake), rounded
    /// down; `None` until then. The position's payout is what the ledger credits.
    pub payout: Option<i64>,
    pub created_at: DateTime<Utc>,
    pub settled_at: Option<DateTime<Utc>>,
    /// The position this stake adds to (`None` only for stakes older than positions that had
    /// no position yet, which the migration gave one).
    pub position_id: Option<i64>,
}

/// A user's stakes on one market outcome in one token, added up: what settlement pays.
#[derive(Debug, Clone, Serialize, sqlx::FromRow, PartialEq, Eq)]
pub struct Position {
    pub id: i64,
    pub market_id: i64,
    pub user_id: i64,
    pub outcome: String,
    pub token: String,
    pub amount: i64,
    /// How many stake requests added to it.
    pub stakes: i64,
    /// What settlement paid (0 for a losing position); `None` until the market is paid out.
    pub payout: Option<i64>,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
    pub settled_at: Option<DateTime<Utc>>,
}

/// What paying out one closed market did (see [`Store::pay_market`]).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Paid {
    pub market_id: i64,
    /// `settled` or `void`.
    pub state: String,
    pub positions: u64,
    /// Base units credited to users, all tokens together.
    pub paid: i64,
}

#[derive(Debug, Clone, Serialize, sqlx::FromRow, PartialEq, Eq)]
pub struct Deposit {
    pub id: i64,
    pub token: String,
    pub signature: String,
    pub slot: i64,
    pub amount: i64,
    pub user_id: Option<i64>,
    pub memo: Option<String>,
    /// `credited` (to the memo's user), `unattributed`, or `assigned` (by an admin).
    pub state: String,
    pub created_at: DateTime<Utc>,
    pub assigned_at: Option<DateTime<Utc>>,
}

#[derive(Debug, Clone, Serialize, sqlx::FromRow, PartialEq, Eq)]
pub struct Withdrawal {
    pub id: i64,
    pub user_id: i64,
    pub token: String,
    pub amount: i64,
    pub destination: String,
    pub state: String,
    pub signature: Option<String>,
    pub reason: Option<String>,
    /// Who claimed it (`processing`) to send it on chain, and when.
    pub claimed_by: Option<String>,
    pub claimed_at: Option<DateTime<Utc>>,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
}

/// A transfer into the treasury found by a watcher, ready to be credited.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IncomingDeposit {
    pub signature: String,
    pub slot: i64,
    pub amount: i64,
    /// Memo text (from the signature list and the transaction's memo instructions).
    pub memo: Option<String>,
}

/// What [`Store::credit_deposits`] did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Credited {
    /// Credited to a user by memo.
    pub attributed: usize,
    pub unattributed: usize,
    /// Already recorded (a replayed signature): nothing credited.
    pub duplicates: usize,
    pub amount: i64,
}

/// A watcher's position: the newest signature whose whole window is processed.
#[derive(Debug, Clone, PartialEq, Eq, sqlx::FromRow)]
pub struct Cursor {
    pub signature: String,
    pub slot: i64,
}

/// Where each token's money is, and any broken invariant.
#[derive(Debug, Clone, Default, Serialize, PartialEq, Eq)]
pub struct Audit {
    pub tokens: Vec<TokenTotals>,
    /// Empty when every invariant holds.
    pub problems: Vec<String>,
}

/// One token's totals. `deposits = users + holds + escrow + house + unattributed + withdrawn`.
#[derive(Debug, Clone, Default, Serialize, PartialEq, Eq)]
pub struct TokenTotals {
    pub token: String,
    pub deposits: i64,
    pub users: i64,
    pub holds: i64,
    pub escrow: i64,
    pub house: i64,
    pub unattributed: i64,
    pub withdrawn: i64,
}

/// One stake as settlement sees it.
#[derive(Debug, Clone, PartialEq, Eq, sqlx::FromRow)]
pub struct OpenStake {
    pub id: i64,
    pub user_id: i64,
    pub outcome: String,
    pub token: String,
    pub amount: i64,
}

/// What settling one market pays, per stake and to the house.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Plan {
    /// (stake, payout, kind `payout` | `refund`); losing stakes are listed with 0.
    pub stakes: Vec<(OpenStake, i64, &'static str)>,
    /// (token, fee, rounding remainder) going to the house.
    pub house: Vec<(String, i64, i64)>,
}

/// Parimutuel settlement of one market's stakes, each token on its own. With a winner and
/// stakes on it, winners get their stake back plus the losers' pool minus `fee_bps`, pro rata
/// to their stakes (rounded down); the fee and the rounding remainders go to the house. With
/// no winner (void) or no stake on the winner, everyone is refunded and the house takes nothing.
pub fn parimutuel(stakes: &[OpenStake], winner: Option<&str>, fee_bps: u32) -> Plan {
    let mut by_token: BTreeMap<&str, Vec<&OpenStake>> = BTreeMap::new();
    for s in stakes {
        by_token.entry(&s.token).or_default().push(s);
    }
    let mut plan = Plan::default();
    for (token, group) in by_token {
        let on_winner: i128 = group
            .iter()
            .filter(|s| Some(s.outcome.as_str()) == winner)
            .map(|s| s.amount as i128)
            .sum();
        let total: i128 = group.iter().map(|s| s.amount as i128).sum();
        if on_winner == 0 {
            for s in group {
                plan.stakes.push(((*s).clone(), s.amount, "refund"));
            }
            continue;
        }
        let losers = total - on_winner;
        let fee = losers * fee_bps as i128 / 10_000;
        let winnings = losers - fee;
        let mut paid: i128 = 0;
        for s in group {
            let payout = if Some(s.outcome.as_str()) == winner {
                s.amount as i128 + s.amount as i128 * winnings / on_winner
            } else {
                0
            };
            paid += payout;
            plan.stakes.push(((*s).clone(), payout as i64, "payout"));
        }
        let remainder = total - paid - fee;
        plan.house
            .push((token.to_string(), fee as i64, remainder as i64));
    }
    plan
}

/// Moves `$amount` of `$token` from `$from` to `$to` inside the open transaction `$tx`, with
/// its two ledger entries. `$order` is `debit_first` or `credit_first`: whichever touches the
/// account that comes first in the global lock order ([`lock_rank`]) goes first. A debit that would take an account other
/// than `external` below zero is refused (`insufficient_balance`) naming the shortfall.
macro_rules! transfer {
    ($tx:ident, $order:ident, $token:expr, $from:expr, $to:expr, $amount:expr, $kind:expr, $reference:expr, $now:expr) => {{
        let (token, from, to, amount, kind, reference, now): (&str, &str, &str, i64, &str, &str, DateTime<Utc>) =
            ($token, $from, $to, $amount, $kind, $reference, $now);
        transfer!(@$order $tx, token, from, to, amount);
        let transfer_id = uuid::Uuid::new_v4().to_string();
        sqlx::query(
            "INSERT INTO ledger_entries (transfer_id, account, token, amount, kind, reference, created_at) \
             VALUES ($1, $2, $3, $4, $5, $6, $7), ($1, $8, $3, $9, $5, $6, $7)",
        )
        .bind(&transfer_id).bind(from).bind(token).bind(-amount).bind(kind).bind(reference).bind(now)
        .bind(to).bind(amount)
        .execute(&mut *$tx).await?;
    }};
    (@debit_first $tx:ident, $token:ident, $from:ident, $to:ident, $amount:ident) => {
        transfer!(@debit $tx, $token, $from, $amount);
        transfer!(@credit $tx, $token, $to, $amount);
    };
    (@credit_first $tx:ident, $token:ident, $from:ident, $to:ident, $amount:ident) => {
        transfer!(@credit $tx, $token, $to, $amount);
        transfer!(@debit $tx, $token, $from, $amount);
    };
    (@credit $tx:ident, $token:ident, $account:expr, $amount:expr) => {
        sqlx::query(
            "INSERT INTO balances (account, token, amount) VALUES ($1, $2, $3) \
             ON CONFLICT (account, token) DO UPDATE SET amount = balances.amount + excluded.amount",
        )
        .bind($account).bind($token).bind($amount)
        .execute(&mut *$tx).await?;
    };
    (@debit $tx:ident, $token:ident, $account:expr, $amount:expr) => {
        if $account == "external" {
            transfer!(@credit $tx, $token, $account, -$amount);
        } else {
            let n = sqlx::query("UPDATE balances SET amount = amount - $1 WHERE account = $2 AND token = $3 AND amount >= $1")
                .bind($amount).bind($account).bind($token)
                .execute(&mut *$tx).await?.rows_affected();
            if n != 1 {
                let have: Option<i64> = sqlx::query_scalar("SELECT amount FROM balances WHERE account = $1 AND token = $2")
                    .bind($account).bind($token)
                    .fetch_optional(&mut *$tx).await?;
                return Err($crate::store::refused("insufficient_balance", format!(
                    "insufficient balance: {} {} available, {} needed",
                    have.unwrap_or(0), $token, $amount
                )));
            }
        }
    };
}

/// A stake with its position's amount and payout, from which its share is computed.
const STAKE_COLUMNS: &str = "s.id, s.market_id, s.user_id, s.outcome, s.token, s.amount, s.payout, s.created_at, \
     COALESCE(s.settled_at, p.settled_at) AS settled_at, s.position_id, p.amount AS position_amount, p.payout AS position_payout";
const POSITION_COLUMNS: &str =
    "id, market_id, user_id, outcome, token, amount, stakes, payout, created_at, updated_at, settled_at";

#[derive(sqlx::FromRow)]
struct StakeRow {
    id: i64,
    market_id: i64,
    user_id: i64,
    outcome: String,
    token: String,
    amount: i64,
    payout: Option<i64>,
    created_at: DateTime<Utc>,
    settled_at: Option<DateTime<Utc>>,
    position_id: Option<i64>,
    position_amount: Option<i64>,
    position_payout: Option<i64>,
}

impl From<StakeRow> for Stake {
    fn from(r: StakeRow) -> Stake {
        // Stakes paid one by one before positions keep their own payout.
        let payout = r.payout.or(match (r.position_payout, r.position_amount) {
            (Some(paid), Some(total)) if total > 0 => {
                Some((paid as i128 * r.amount as i128 / total as i128) as i64)
            }
            _ => None,
        });
        Stake {
            id: r.id,
            market_id: r.market_id,
            user_id: r.user_id,
            outcome: r.outcome,
            token: r.token,
            amount: r.amount,
            payout,
            created_at: r.created_at,
            settled_at: r.settled_at,
            position_id: r.position_id,
        }
    }
}

/// The global order in which a transaction locks balance rows on PostgreSQL: by kind, then by
/// the id in the key (numerically), with `house` — which every settlement touches — last. Two
/// money transactions that lock rows in this order never wait on each other in a cycle.
pub fn lock_rank(account: &str) -> (u8, i64) {
    let (kind, id) = account.split_once(':').unwrap_or((account, ""));
    let rank = match kind {
        "escrow" => 0,
        "external" => 1,
        "holds" => 2,
        "unattributed" => 3,
        "user" => 4,
        "withdrawn" => 5,
        "house" => 7,
        _ => 6,
    };
    (rank, id.parse().unwrap_or(0))
}
const DEPOSIT_COLUMNS: &str =
    "id, token, signature, slot, amount, user_id, memo, state, created_at, assigned_at";
const WITHDRAWAL_COLUMNS: &str =
    "id, user_id, token, amount, destination, state, signature, reason, claimed_by, claimed_at, created_at, updated_at";

/// The states a withdrawal goes through: `pending` (held, unclaimed) → `processing` (claimed by
/// a signer) → `completed` or `failed`; an unclaimed one may instead become `expired`.
pub const WITHDRAWAL_STATES: &[&str] = &["pending", "processing", "completed", "failed", "expired"];

/// Upper-case alphanumeric words of a memo: the candidates for a deposit code.
pub fn memo_words(memo: &str) -> Vec<String> {
    memo.split(|c: char| !c.is_ascii_alphanumeric())
        .filter(|w| !w.is_empty())
        .map(|w| w.to_ascii_uppercase())
        .collect()
}

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
        let sql = "SELECT id, name, deposit_code, created_at FROM users WHERE api_key_hash = $1";
        on_pool!(self, pool => Ok(sqlx::query_as(sql).bind(api_key_hash).fetch_one(pool).await?))
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

    /// Takes a stake on an open market whose game has not started (`now` is before its start):
    /// the market's compare-and-set, the debit of the user's balance and the stake row commit
    /// together. A closed or started market, or a short balance, is refused (`market_closed`, `insufficient_balance`).
    #[tracing::instrument(skip_all, fields(user_id, market_id, %token, amount))]
    pub async fn place_stake(
        &self,
        user_id: i64,
        market_id: i64,
        outcome: &str,
        token: &str,
        amount: i64,
        now: DateTime<Utc>,
    ) -> Result<Stake, StoreError> {
        let _writer = self.writer().await?;
        let stake = retrying!(on_pool!(self, pool => {
            let mut tx = pool.begin().await?;
            let n = sqlx::query(
                "UPDATE markets SET stake_count = stake_count + 1 WHERE id = $1 AND state = 'open' \
                 AND game_id IN (SELECT id FROM games WHERE starts_at > $2)",
            )
            .bind(market_id).bind(now)
            .execute(&mut *tx).await?.rows_affected();
            if n != 1 {
                let found: Option<(String, DateTime<Utc>)> = sqlx::query_as(
                    "SELECT m.state, g.starts_at FROM markets m JOIN games g ON g.id = m.game_id WHERE m.id = $1",
                )
                .bind(market_id)
                .fetch_optional(&mut *tx).await?;
                return Err(match found {
                    None => StoreError::NotFound,
                    Some((state, _)) if state != "open" => super::refused("market_closed", format!("market {market_id} is {state}: it takes no more stakes")),
                    Some((_, starts_at)) => super::refused("market_closed", format!(
                        "market {market_id} is closed: its game started at {}", starts_at.to_rfc3339()
                    )),
                });
            }
            let position_id: i64 = sqlx::query_scalar(
                "INSERT INTO positions (market_id, user_id, outcome, token, amount, stakes, created_at, updated_at) \
                 VALUES ($1, $2, $3, $4, $5, 1, $6, $6) ON CONFLICT (market_id, token, outcome, user_id) \
                 DO UPDATE SET amount = positions.amount + excluded.amount, stakes = positions.stakes + 1, updated_at = excluded.updated_at \
                 RETURNING id",
            )
            .bind(market_id).bind(user_id).bind(outcome).bind(token).bind(amount).bind(now)
            .fetch_one(&mut *tx).await?;
            let id: i64 = sqlx::query_scalar(
                "INSERT INTO stakes (market_id, user_id, outcome, token, amount, created_at, position_id) VALUES ($1, $2, $3, $4, $5, $6, $7) RETURNING id"
            )
            .bind(market_id).bind(user_id).bind(outcome).bind(token).bind(amount).bind(now).bind(position_id)
            .fetch_one(&mut *tx).await?;
            // Lock order: the escrow row before the user's (see `lock_rank`).
            transfer!(tx, credit_first, token, &user_account(user_id), &escrow_account(market_id), amount, "stake", &format!("stake:{id}"), now);
            let stake = Stake {
                id, market_id, user_id, outcome: outcome.to_string(), token: token.to_string(), amount,
                payout: None, created_at: now, settled_at: None, position_id: Some(position_id),
            };
            commit!(self, tx);
            Ok(stake)
        }))?;
        // Stakes only move the pools: announced to the other replicas in batches (by the
        // `listener`), not one NOTIFY per stake, which would serialise their commits.
        Store::wrote_unannounced();
        Ok(stake)
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
                if refund {
                    sqlx::query("UPDATE positions SET payout = amount, settled_at = $3 WHERE market_id = $1 AND token = $2 AND payout IS NULL")
                        .bind(market_id).bind(token).bind(now)
                        .execute(&mut *tx).await?;
                } else if on_winner * winnings <= i64::MAX as i128 {
                    // No product can overflow a 64-bit integer: the database computes them.
                    sqlx::query(
                        "UPDATE positions SET payout = CASE WHEN outcome = $3 THEN amount + amount * $4 / $5 ELSE 0 END, settled_at = $6 \
                         WHERE market_id = $1 AND token = $2 AND payout IS NULL",
                    )
                    .bind(market_id).bind(token).bind(winner.as_deref()).bind(winnings as i64).bind(on_winner as i64).bind(now)
                    .execute(&mut *tx).await?;
                } else {
                    // Amounts near 2^63: each payout in 128-bit arithmetic, one row at a time.
                    let rows: Vec<OpenStake> = sqlx::query_as(
                        "SELECT id, user_id, outcome, token, amount FROM positions WHERE market_id = $1 AND token = $2 AND payout IS NULL ORDER BY id",
                    )
                    .bind(market_id).bind(token)
                    .fetch_all(&mut *tx).await?;
                    for (position, payout, _) in parimutuel(&rows, winner.as_deref(), fee_bps).stakes {
                        sqlx::query("UPDATE positions SET payout = $1, settled_at = $2 WHERE id = $3")
                            .bind(payout).bind(now).bind(position.id)
                            .execute(&mut *tx).await?;
                    }
                }
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
                    return Err(super::refused("escrow_short", format!("escrow of market {market_id} holds less than the {paid} {token} its positions are owed")));
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

    /// Each market's pools: `(market, outcome, token, total staked)`.
    pub async fn market_pools(
        &self,
        market_ids: &[i64],
    ) -> Result<Vec<(i64, String, String, i64)>, StoreError> {
        if market_ids.is_empty() {
            return Ok(Vec::new());
        }
        on_pool!(self, pool => {
            let mut q = sqlx::QueryBuilder::new(
                "SELECT market_id, outcome, token, CAST(SUM(amount) AS BIGINT) FROM positions WHERE market_id IN (",
            );
            let mut list = q.separated(", ");
            for id in market_ids {
                list.push_bind(*id);
            }
            q.push(") GROUP BY market_id, outcome, token ORDER BY market_id, outcome, token");
            Ok(q.build_query_as().fetch_all(pool).await?)
        })
    }

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
            if backend == super::Backend::Postgres {
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
                    Some(d) => super::refused("already_assigned", format!(
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
            super::Backend::Postgres => "SELECT id FROM users WHERE id = $1 FOR UPDATE",
            super::Backend::Sqlite => "SELECT id FROM users WHERE id = $1",
        };
        retrying!(on_pool!(self, pool => {
            let mut tx = pool.begin().await?;
            sqlx::query(lock_user).bind(user_id).execute(&mut *tx).await?;
            let open: i64 = sqlx::query_scalar(
                "SELECT COUNT(*) FROM withdrawals WHERE user_id = $1 AND state IN ('pending', 'processing')",
            )
            .bind(user_id).fetch_one(&mut *tx).await?;
            if open >= max_pending {
                return Err(super::refused("too_many_pending_withdrawals", format!(
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
                    Some((state, Some(by))) if state == "processing" => super::refused("already_claimed", format!("withdrawal {id} is already claimed by {by}")),
                    Some((state, _)) => super::refused("withdrawal_not_pending", format!("withdrawal {id} is {state}, not pending")),
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
                    return Err(super::refused("signature_used", format!(
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
                sqlx::Error::Database(d) if d.is_unique_violation() => super::refused(
                    "signature_used",
                    "signature already completed another withdrawal; a transaction pays one withdrawal",
                ),
                other => StoreError::from(other),
            })?;
            let Some(w) = updated else {
                let found: Option<String> = sqlx::query_scalar("SELECT state FROM withdrawals WHERE id = $1").bind(id).fetch_optional(&mut *tx).await?;
                return Err(match found {
                    None => StoreError::NotFound,
                    Some(s) if s == "processing" => super::refused("withdrawal_claimed", format!("withdrawal {id} is claimed (processing): it completes or fails, it never expires")),
                    Some(s) => super::refused("withdrawal_finished", format!("withdrawal {id} is {s}, not pending or processing")),
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

    /// Checks every money invariant and sums each token's money by where it is.
    pub async fn audit(&self) -> Result<Audit, StoreError> {
        let mut audit = Audit::default();
        let problems = &mut audit.problems;
        // One snapshot, so writes racing with the audit cannot look like broken invariants.
        let backend = self.backend();
        let (
            balances,
            sums,
            deposits,
            entry_totals,
            double_credits,
            double_payouts,
            holds_vs_pending,
            withdrawn_vs_completed,
            escrow_vs_stakes,
            unpaid,
            positions_vs_stakes,
        ) = on_pool!(self, pool => {
            let mut tx = pool.begin().await?;
            if backend == super::Backend::Postgres {
                sqlx::query("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ, READ ONLY").execute(&mut *tx).await?;
            }
        macro_rules! all {
            ($sql:expr) => {
                sqlx::query_as($sql).fetch_all(&mut *tx).await?
            };
        }
        let balances: Vec<(String, String, i64)> =
            all!("SELECT account, token, amount FROM balances");
        let sums: Vec<(String, String, i64)> = all!("SELECT account, token, CAST(SUM(amount) AS BIGINT) FROM ledger_entries GROUP BY account, token");
        let deposits: Vec<(String, i64)> =
            all!("SELECT token, CAST(SUM(amount) AS BIGINT) FROM deposits GROUP BY token");
        let entry_totals: Vec<(String, i64)> =
            all!("SELECT token, CAST(SUM(amount) AS BIGINT) FROM ledger_entries GROUP BY token");
        let double_credits: Vec<(String, i64)> = all!("SELECT reference, COUNT(*) FROM ledger_entries WHERE account = 'external' GROUP BY reference HAVING COUNT(*) > 1");
        let double_payouts: Vec<(String, i64)> = all!("SELECT reference, COUNT(*) FROM ledger_entries WHERE kind IN ('payout', 'refund') AND account LIKE 'user:%' GROUP BY reference HAVING COUNT(*) > 1");
        let holds_vs_pending: Vec<(i64, String, i64, i64)> = all!(
            "SELECT u.id, b.token, b.amount, COALESCE((SELECT CAST(SUM(w.amount) AS BIGINT) FROM withdrawals w WHERE w.user_id = u.id AND w.token = b.token AND w.state IN ('pending', 'processing')), 0) \
             FROM users u JOIN balances b ON b.account = 'holds:' || CAST(u.id AS TEXT)"
        );
        let withdrawn_vs_completed: Vec<(String, i64, i64)> = all!(
            "SELECT b.token, b.amount, COALESCE((SELECT CAST(SUM(w.amount) AS BIGINT) FROM withdrawals w WHERE w.token = b.token AND w.state = 'completed'), 0) \
             FROM balances b WHERE b.account = 'withdrawn'"
        );
        // A market is paid out after the board that closed it commits: until then (`paid_at`
        // unset) its escrow still holds every position.
        let escrow_vs_stakes: Vec<(i64, String, String, i64, i64)> = all!(
            "SELECT m.id, CASE WHEN m.paid_at IS NULL THEN 'unpaid' ELSE 'paid' END, p.token, CAST(SUM(p.amount) AS BIGINT), \
             COALESCE((SELECT b.amount FROM balances b WHERE b.account = 'escrow:' || CAST(m.id AS TEXT) AND b.token = p.token), 0) \
             FROM markets m JOIN positions p ON p.market_id = m.id GROUP BY m.id, m.paid_at, p.token"
        );
        let unpaid: Vec<(i64, i64)> = all!(
            "SELECT m.id, COUNT(*) FROM markets m JOIN positions p ON p.market_id = m.id \
             WHERE m.paid_at IS NOT NULL AND p.payout IS NULL GROUP BY m.id"
        );
        let positions_vs_stakes: Vec<(i64, i64, String, String, i64, i64)> = all!(
            "SELECT s.market_id, s.user_id, s.outcome, s.token, CAST(SUM(s.amount) AS BIGINT), COALESCE(MAX(p.amount), 0) \
             FROM stakes s LEFT JOIN positions p ON p.id = s.position_id \
             GROUP BY s.market_id, s.user_id, s.outcome, s.token HAVING CAST(SUM(s.amount) AS BIGINT) != COALESCE(MAX(p.amount), 0) OR COUNT(DISTINCT p.id) != 1"
        );
            tx.rollback().await?;
            (balances, sums, deposits, entry_totals, double_credits, double_payouts, holds_vs_pending, withdrawn_vs_completed, escrow_vs_stakes, unpaid, positions_vs_stakes)
        });
        let sum_of: HashMap<(&str, &str), i64> = sums
            .iter()
            .map(|(a, t, s)| ((a.as_str(), t.as_str()), *s))
            .collect();
        let mut totals: BTreeMap<String, TokenTotals> = BTreeMap::new();
        for (account, token, amount) in &balances {
            let entries = sum_of
                .get(&(account.as_str(), token.as_str()))
                .copied()
                .unwrap_or(0);
            if entries != *amount {
                problems.push(format!(
                    "balance {account} {token} is {amount} but its ledger entries sum to {entries}"
                ));
            }
            if *amount < 0 && account != "external" {
                problems.push(format!("balance {account} {token} is negative ({amount})"));
            }
            let t = totals.entry(token.clone()).or_insert_with(|| TokenTotals {
                token: token.clone(),
                ..Default::default()
            });
            match account.split(':').next().unwrap_or_default() {
                "user" => t.users += amount,
                "holds" => t.holds += amount,
                "escrow" => t.escrow += amount,
                "house" => t.house += amount,
                "unattributed" => t.unattributed += amount,
                "withdrawn" => t.withdrawn += amount,
                "external" => {}
                other => problems.push(format!("unknown account kind {other} ({account})")),
            }
        }
        for ((account, token), s) in &sum_of {
            if *s != 0 && !balances.iter().any(|(a, t, _)| a == account && t == token) {
                problems.push(format!(
                    "ledger entries of {account} {token} sum to {s} but it has no balance"
                ));
            }
        }
        for (token, total) in &entry_totals {
            if *total != 0 {
                problems.push(format!("{token} ledger entries sum to {total}, not 0"));
            }
        }
        for (token, amount) in &deposits {
            let t = totals.entry(token.clone()).or_insert_with(|| TokenTotals {
                token: token.clone(),
                ..Default::default()
            });
            t.deposits = *amount;
        }
        for t in totals.values() {
            let held = t.users + t.holds + t.escrow + t.house + t.unattributed + t.withdrawn;
            if held != t.deposits {
                problems.push(format!(
                    "{}: deposits {} != users {} + holds {} + escrow {} + house {} + unattributed {} + withdrawn {} (= {held})",
                    t.token, t.deposits, t.users, t.holds, t.escrow, t.house, t.unattributed, t.withdrawn
                ));
            }
        }
        for (reference, n) in double_credits {
            problems.push(format!("{reference} was credited {n} times"));
        }
        for (reference, n) in double_payouts {
            problems.push(format!("{reference} was paid {n} times"));
        }
        for (user, token, held, pending) in holds_vs_pending {
            if held != pending {
                problems.push(format!(
                    "user {user} holds {held} {token} but has {pending} in pending and claimed withdrawals"
                ));
            }
        }
        for (token, withdrawn, completed) in withdrawn_vs_completed {
            if withdrawn != completed {
                problems.push(format!(
                    "withdrawn {token} is {withdrawn} but completed withdrawals total {completed}"
                ));
            }
        }
        for (market, state, token, staked, escrow) in escrow_vs_stakes {
            let expected = if state == "paid" { 0 } else { staked };
            if escrow != expected {
                problems.push(format!(
                    "market {market} ({state}) escrow holds {escrow} {token}, expected {expected}"
                ));
            }
        }
        for (market, n) in unpaid {
            problems.push(format!(
                "market {market} is paid out but {n} of its positions were never paid"
            ));
        }
        for (market, user, outcome, token, staked, position) in positions_vs_stakes {
            problems.push(format!(
                "user {user}'s stakes on {outcome} of market {market} total {staked} {token} but their position is {position}"
            ));
        }
        audit.tokens = totals.into_values().collect();
        Ok(audit)
    }
}

/// How a pending withdrawal ends.
#[derive(Debug, Clone, Copy)]
pub enum WithdrawalOutcome<'a> {
    Completed { signature: &'a str },
    Failed { reason: &'a str },
    Expired,
}

#[cfg(test)]
mod tests {
    use super::*;

    fn stake(id: i64, outcome: &str, token: &str, amount: i64) -> OpenStake {
        OpenStake {
            id,
            user_id: id,
            outcome: outcome.into(),
            token: token.into(),
            amount,
        }
    }

    fn paid(plan: &Plan) -> Vec<i64> {
        plan.stakes.iter().map(|(_, p, _)| *p).collect()
    }

    #[test]
    fn winners_share_the_losers_pool_minus_the_fee_and_the_house_gets_the_rest() {
        let stakes = [
            stake(1, "home", "t", 100),
            stake(2, "home", "t", 200),
            stake(3, "away", "t", 301),
        ];
        let plan = parimutuel(&stakes, Some("home"), 200);
        // Losers 301, fee 6, winnings 295: 100 + 98 (98.33), 200 + 196 (196.67), 0.
        assert_eq!(paid(&plan), vec![198, 396, 0]);
        assert_eq!(plan.house, vec![("t".to_string(), 6, 1)]);
        let total: i64 = paid(&plan).iter().sum::<i64>() + 6 + 1;
        assert_eq!(total, 601, "every base unit is accounted for");
    }

    #[test]
    fn no_stake_on_the_winner_or_a_void_market_refunds_everyone() {
        let stakes = [stake(1, "away", "t", 50), stake(2, "away", "t", 70)];
        let plan = parimutuel(&stakes, Some("home"), 200);
        assert_eq!(paid(&plan), vec![50, 70]);
        assert!(plan.stakes.iter().all(|(_, _, k)| *k == "refund"));
        assert!(plan.house.is_empty());
        let both = [stake(1, "home", "t", 5), stake(2, "away", "t", 9)];
        assert_eq!(paid(&parimutuel(&both, None, 200)), vec![5, 9]);
    }

    #[test]
    fn tokens_settle_separately_and_large_amounts_do_not_overflow() {
        let big = i64::MAX / 2;
        let stakes = [
            stake(1, "home", "a", big),
            stake(2, "away", "a", big),
            stake(3, "away", "b", 10),
        ];
        let plan = parimutuel(&stakes, Some("home"), 0);
        assert_eq!(paid(&plan), vec![big * 2, 0, 10]);
        assert_eq!(plan.house, vec![("a".to_string(), 0, 0)]);
    }

    #[test]
    fn memo_words_are_upper_case_alphanumeric_runs() {
        assert_eq!(memo_words("[8] abc-DEF9"), vec!["8", "ABC", "DEF9"]);
    }
}
