//! CONSTRUCTED money state in bulk, for the settlement-at-scale test and bench: `users` new
//! users, each funded by one deposit and holding positions on one open market, written by SQL
//! set statements as the rows `place_stake` writes one stake at a time (the user, the deposit
//! and its two ledger entries, one stake row per unit with its two ledger entries, the
//! positions, the escrow, the balances, the market's stake count). The ledger audit holds
//! afterwards. Stakes on one market serialize on its row, so placing 100,000 of them through
//! the API would take minutes here; what these tests measure is what settlement does with them.

use chrono::Utc;
use tipoff_actors::Store;

macro_rules! exec {
    ($tx:ident, $sql:expr $(, $bind:expr)*) => {
        sqlx::query($sql)$(.bind($bind))*.execute(&mut *$tx).await.unwrap()
    };
}

/// How the seeded users stake.
pub struct Seed<'a> {
    pub market_id: i64,
    pub token: &'a str,
    pub users: i64,
    /// One-unit stakes in each position.
    pub stakes_per_position: i64,
    /// Each user backs both outcomes (two positions); otherwise one, home for even users.
    pub both_sides: bool,
}

/// Seeds as described above; returns the number of stakes written.
pub async fn seed_stakes(store: &Store, seed: &Seed<'_>) -> i64 {
    let tag = uuid::Uuid::new_v4().simple().to_string()[..12].to_uppercase();
    let now = Utc::now();
    let sides: i64 = if seed.both_sides { 2 } else { 1 };
    let per_user = seed.stakes_per_position * sides;
    let total = seed.users * per_user;
    let like = format!("seed:{tag}:%");
    let escrow = format!("escrow:{}", seed.market_id);
    macro_rules! run {
        ($pool:expr, $postgres:expr) => {{
            let pool = $pool;
            let mut tx = pool.begin().await.unwrap();
            exec!(tx,
                "WITH RECURSIVE c(n) AS (SELECT CAST(1 AS BIGINT) UNION ALL SELECT n + 1 FROM c WHERE n < $1) \
                 INSERT INTO users (name, api_key_hash, deposit_code, created_at) \
                 SELECT 'seeded', 'seed:' || $2 || ':' || n, 'S' || $2 || 'N' || n, $3 FROM c",
                seed.users, &tag, now
            );
            exec!(tx,
                "INSERT INTO deposits (token, signature, slot, amount, user_id, memo, state, created_at) \
                 SELECT $1, 'seed-' || $2 || '-' || id, 1, $3, id, NULL, 'credited', $4 FROM users WHERE api_key_hash LIKE $5",
                seed.token, &tag, per_user, now, &like
            );
            for (account, sign) in [("'user:' || user_id", ""), ("'external'", "-")] {
                exec!(tx,
                    &format!(
                        "INSERT INTO ledger_entries (transfer_id, account, token, amount, kind, reference, created_at) \
                         SELECT 'seed-deposit-' || id, {account}, token, {sign}amount, 'deposit', 'deposit:' || id, $1 \
                         FROM deposits WHERE signature LIKE $2"
                    ),
                    now, format!("seed-{tag}-%")
                );
            }
            let sides_sql = if seed.both_sides {
                "SELECT 'home' AS outcome UNION ALL SELECT 'away'"
            } else {
                "SELECT 'one' AS outcome"
            };
            // The pools: on SQLite the positions' trigger adds each row; on PostgreSQL one set
            // statement does, as migration 17's backfill, since a row trigger adding 100,000
            // rows to one pool row within one transaction lengthens that row's version chain
            // at every step (quadratic; a stake is a transaction of its own and never does).
            if $postgres {
                exec!(tx, "ALTER TABLE positions DISABLE TRIGGER market_pools_position_written");
            }
            exec!(tx,
                &format!(
                    "INSERT INTO positions (market_id, user_id, outcome, token, amount, stakes, created_at, updated_at) \
                     SELECT $1, u.id, CASE WHEN s.outcome = 'one' THEN (CASE WHEN u.id % 2 = 0 THEN 'home' ELSE 'away' END) ELSE s.outcome END, \
                     $2, $3, $3, $4, $4 FROM users u CROSS JOIN ({sides_sql}) s WHERE u.api_key_hash LIKE $5"
                ),
                seed.market_id, seed.token, seed.stakes_per_position, now, &like
            );
            if $postgres {
                exec!(tx, "ALTER TABLE positions ENABLE TRIGGER market_pools_position_written");
                exec!(tx,
                    "INSERT INTO market_pools (market_id, outcome, token, amount) \
                     SELECT p.market_id, p.outcome, p.token, SUM(p.amount) FROM positions p JOIN users u ON u.id = p.user_id \
                     WHERE p.market_id = $1 AND u.api_key_hash LIKE $2 GROUP BY p.market_id, p.outcome, p.token \
                     ON CONFLICT (market_id, outcome, token) DO UPDATE SET amount = market_pools.amount + excluded.amount",
                    seed.market_id, &like
                );
            }
            exec!(tx,
                "WITH RECURSIVE c(k) AS (SELECT CAST(1 AS BIGINT) UNION ALL SELECT k + 1 FROM c WHERE k < $1) \
                 INSERT INTO stakes (market_id, user_id, outcome, token, amount, created_at, position_id) \
                 SELECT p.market_id, p.user_id, p.outcome, p.token, 1, $2, p.id \
                 FROM positions p JOIN users u ON u.id = p.user_id JOIN c ON c.k <= p.stakes \
                 WHERE p.market_id = $3 AND u.api_key_hash LIKE $4",
                seed.stakes_per_position, now, seed.market_id, &like
            );
            for (account, sign) in [("'user:' || s.user_id", "-"), ("'escrow:' || s.market_id", "")] {
                exec!(tx,
                    &format!(
                        "INSERT INTO ledger_entries (transfer_id, account, token, amount, kind, reference, created_at) \
                         SELECT 'seed-stake-' || s.id, {account}, s.token, {sign}s.amount, 'stake', 'stake:' || s.id, $1 \
                         FROM stakes s JOIN users u ON u.id = s.user_id WHERE s.market_id = $2 AND u.api_key_hash LIKE $3"
                    ),
                    now, seed.market_id, &like
                );
            }
            exec!(tx,
                "INSERT INTO balances (account, token, amount) SELECT 'user:' || id, $1, 0 FROM users WHERE api_key_hash LIKE $2 \
                 ON CONFLICT (account, token) DO NOTHING",
                seed.token, &like
            );
            for (account, amount) in [(escrow.as_str(), total), ("external", -total)] {
                exec!(tx,
                    "INSERT INTO balances (account, token, amount) VALUES ($1, $2, $3) \
                     ON CONFLICT (account, token) DO UPDATE SET amount = balances.amount + excluded.amount",
                    account, seed.token, amount
                );
            }
            exec!(tx, "UPDATE markets SET stake_count = stake_count + $1 WHERE id = $2", total, seed.market_id);
            tx.commit().await.unwrap();
        }};
    }
    match store {
        Store::Sqlite(pool, _) => run!(pool, false),
        Store::Postgres(pool, _) => run!(pool, true),
    }
    total
}
