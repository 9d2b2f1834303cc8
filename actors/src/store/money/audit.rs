//! The audit: the ledger, the balances and the positions checked against each other.

use super::*;

/// What the audit reads, in one snapshot.
struct Snapshot {
    balances: Vec<(String, String, i64)>,
    sums: Vec<(String, String, i64)>,
    deposits: Vec<(String, i64)>,
    entry_totals: Vec<(String, i64)>,
    double_credits: Vec<(String, i64)>,
    double_payouts: Vec<(String, i64)>,
    holds_vs_pending: Vec<(i64, String, i64, i64)>,
    withdrawn_vs_completed: Vec<(String, i64, i64)>,
    escrow_vs_stakes: Vec<(i64, String, String, i64, i64)>,
    unpaid: Vec<(i64, i64)>,
    positions_vs_stakes: Vec<(i64, i64, String, String, i64, i64)>,
    pools_vs_positions: Vec<(i64, String, String, i64, i64)>,
    counts_vs_stakes: Vec<(i64, i64, i64)>,
}

impl Store {
    /// Checks every money invariant and sums each token's money by where it is.
    pub async fn audit(&self) -> Result<Audit, StoreError> {
        let snapshot = self.audit_snapshot().await?;
        let mut audit = Audit::default();
        audit.tokens = balances_match_the_ledger(&snapshot, &mut audit.problems);
        links_hold(snapshot, &mut audit.problems);
        Ok(audit)
    }

    /// One snapshot, so writes racing with the audit cannot look like broken invariants.
    async fn audit_snapshot(&self) -> Result<Snapshot, StoreError> {
        let backend = self.backend();
        Ok(on_pool!(self, pool => {
            let mut tx = pool.begin().await?;
            if backend == crate::store::Backend::Postgres {
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
        // The pools the reads show, against the positions they sum (either side missing is 0).
        let pools_vs_positions: Vec<(i64, String, String, i64, i64)> = all!(
            "SELECT market_id, outcome, token, CAST(SUM(pool) AS BIGINT), CAST(SUM(staked) AS BIGINT) FROM ( \
               SELECT market_id, outcome, token, amount AS pool, 0 AS staked FROM market_pools \
               UNION ALL SELECT market_id, outcome, token, 0, amount FROM positions) t \
             GROUP BY market_id, outcome, token HAVING SUM(pool) <> SUM(staked)"
        );
        // Each market's stake count (settlement's `stakes_paid`) against its stakes: a refused
        // stake must leave the count as it found it.
        let counts_vs_stakes: Vec<(i64, i64, i64)> = all!(
            "SELECT m.id, CAST(m.stake_count AS BIGINT), CAST(COALESCE(c.n, 0) AS BIGINT) FROM markets m \
             LEFT JOIN (SELECT market_id, COUNT(*) AS n FROM stakes GROUP BY market_id) c ON c.market_id = m.id \
             WHERE m.stake_count <> COALESCE(c.n, 0)"
        );
            tx.rollback().await?;
            Snapshot { balances, sums, deposits, entry_totals, double_credits, double_payouts, holds_vs_pending, withdrawn_vs_completed, escrow_vs_stakes, unpaid, positions_vs_stakes, pools_vs_positions, counts_vs_stakes }
        }))
    }
}

/// Every balance equals its ledger entries, each token's entries sum to zero, and the money
/// held everywhere adds up to the deposits; the totals per token.
fn balances_match_the_ledger(snapshot: &Snapshot, problems: &mut Vec<String>) -> Vec<TokenTotals> {
    let Snapshot {
        balances,
        sums,
        deposits,
        entry_totals,
        ..
    } = snapshot;
    let sum_of: HashMap<(&str, &str), i64> = sums
        .iter()
        .map(|(a, t, s)| ((a.as_str(), t.as_str()), *s))
        .collect();
    let mut totals: BTreeMap<String, TokenTotals> = BTreeMap::new();
    for (account, token, amount) in balances {
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
    for (token, total) in entry_totals {
        if *total != 0 {
            problems.push(format!("{token} ledger entries sum to {total}, not 0"));
        }
    }
    for (token, amount) in deposits {
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
    totals.into_values().collect()
}

/// Nothing credited or paid twice, holds match open withdrawals, withdrawn matches completed,
/// escrow matches positions, positions match stakes, pools match positions, stake counts match
/// stakes.
fn links_hold(snapshot: Snapshot, problems: &mut Vec<String>) {
    let Snapshot {
        pools_vs_positions,
        counts_vs_stakes,
        double_credits,
        double_payouts,
        holds_vs_pending,
        withdrawn_vs_completed,
        escrow_vs_stakes,
        unpaid,
        positions_vs_stakes,
        ..
    } = snapshot;
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
    for (market, outcome, token, pool, staked) in pools_vs_positions {
        problems.push(format!(
            "market {market}'s {outcome} pool shows {pool} {token} but its positions total {staked}"
        ));
    }
    for (market, count, stakes) in counts_vs_stakes {
        problems.push(format!(
            "market {market} counts {count} stakes but has {stakes}"
        ));
    }
}
