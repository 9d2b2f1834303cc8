//! Settlement arithmetic, pure: what a market's stakes are paid (parimutuel), no I/O.

use std::collections::BTreeMap;

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
}
