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

mod audit;
mod deposits;
mod settlement;
mod sqlite_stakes;
mod stakes;
pub use stakes::StakeRequest;
mod users;
mod withdrawals;

pub use settlement::{parimutuel, OpenStake};
pub use withdrawals::WithdrawalOutcome;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn memo_words_are_upper_case_alphanumeric_runs() {
        assert_eq!(memo_words("[8] abc-DEF9"), vec!["8", "ABC", "DEF9"]);
    }
}
