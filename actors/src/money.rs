//! The money settings: which SPL tokens are staked and deposited, and the smallest amounts.

use serde::de::Error as _;
use serde::{Deserializer, Serialize, Serializer};

use crate::settings::{self, Invalid};
use crate::solana::{is_pubkey, Token};

/// Tokens, stake and withdrawal limits (the HTTP money API and the watchers read them).
#[derive(Debug, Clone, Serialize, serde::Deserialize, schemars::JsonSchema)]
#[serde(default)]
pub struct MoneySettings {
    /// SPL tokens as `name:mint:decimals:treasury_token_account`, comma separated: stakes,
    /// balances and one deposit watcher each.
    #[serde(with = "tokens")]
    #[schemars(with = "String")]
    pub tokens: Vec<Token>,
    /// The smallest withdrawal in base units: one number for every token, or `name=amount`
    /// pairs (tokens not named: 1).
    #[schemars(with = "String")]
    pub min_withdrawal: PerToken,
    /// The smallest stake in base units, per token as above: bounds how many positions a
    /// market can gather for a given amount staked.
    #[schemars(with = "String")]
    pub min_stake: PerToken,
    /// Pending and claimed withdrawals one user may have at once.
    #[serde(deserialize_with = "settings::at_least::<1, _, _>")]
    pub max_pending_withdrawals: i64,
}

impl Default for MoneySettings {
    fn default() -> Self {
        MoneySettings {
            tokens: Vec::new(),
            min_withdrawal: PerToken::default(),
            min_stake: PerToken::default(),
            max_pending_withdrawals: 10,
        }
    }
}

impl settings::Section for MoneySettings {
    fn check(&self) -> Result<(), Invalid> {
        for (key, per) in [
            ("min_withdrawal", &self.min_withdrawal),
            ("min_stake", &self.min_stake),
        ] {
            if let Some((name, _)) = per.per.iter().find(|(n, _)| !self.has_token(n)) {
                return Err(Invalid::new(
                    key,
                    format!("`{name}` is not a configured token (TIPOFF_TOKENS)"),
                ));
            }
        }
        Ok(())
    }
}

impl MoneySettings {
    pub fn has_token(&self, name: &str) -> bool {
        self.tokens.iter().any(|t| t.name == name)
    }
}

/// An amount in base units for each configured token: one number for every token, or
/// `name=amount` pairs separated by commas (tokens not named get the default of 1).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct PerToken {
    all: Option<i64>,
    per: Vec<(String, i64)>,
}

impl PerToken {
    /// The amount for token `name` (1 when none is set).
    pub fn of(&self, name: &str) -> i64 {
        self.per
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| *v)
            .or(self.all)
            .unwrap_or(1)
    }
}

impl Serialize for PerToken {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let text = match self.all {
            Some(n) => n.to_string(),
            None => {
                let pairs: Vec<String> = self.per.iter().map(|(n, v)| format!("{n}={v}")).collect();
                pairs.join(",")
            }
        };
        s.serialize_str(&text)
    }
}

impl<'de> serde::Deserialize<'de> for PerToken {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let items = settings::list(d)?;
        let positive = |v: &str| match v.trim().parse::<i64>() {
            Ok(n) if n >= 1 => Ok(n),
            _ => Err(D::Error::custom(format!(
                "`{v}` is not a whole number of base units of at least 1"
            ))),
        };
        match &items[..] {
            [] => Ok(PerToken::default()),
            [one] if !one.contains('=') => Ok(PerToken {
                all: Some(positive(one)?),
                per: Vec::new(),
            }),
            pairs => {
                let mut per = Vec::new();
                for pair in pairs {
                    let Some((name, amount)) = pair.split_once('=') else {
                        return Err(D::Error::custom(format!(
                            "`{pair}` is not name=amount (or give one number for every token)"
                        )));
                    };
                    per.push((name.trim().to_ascii_lowercase(), positive(amount)?));
                }
                Ok(PerToken { all: None, per })
            }
        }
    }
}

/// `name:mint:decimals:treasury` entries, comma separated.
mod tokens {
    use super::*;

    pub fn serialize<S: Serializer>(tokens: &[Token], s: S) -> Result<S::Ok, S::Error> {
        let text: Vec<String> = tokens
            .iter()
            .map(|t| format!("{}:{}:{}:{}", t.name, t.mint, t.decimals, t.treasury))
            .collect();
        s.serialize_str(&text.join(","))
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<Token>, D::Error> {
        let mut tokens: Vec<Token> = Vec::new();
        for entry in settings::list(d)? {
            tokens.push(token(&entry, &tokens).map_err(D::Error::custom)?);
        }
        Ok(tokens)
    }

    fn token(entry: &str, before: &[Token]) -> Result<Token, String> {
        let parts: Vec<&str> = entry.split(':').map(str::trim).collect();
        let [name, mint, decimals, treasury] = parts[..] else {
            return Err(format!(
                "`{entry}` is not name:mint:decimals:treasury_token_account"
            ));
        };
        let name = name.to_ascii_lowercase();
        if name.is_empty()
            || name.len() > 32
            || !name
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
        {
            return Err(format!(
                "token name `{name}` must be 1 to 32 letters, digits, - or _"
            ));
        }
        if before.iter().any(|t| t.name == name) {
            return Err(format!("token `{name}` is listed twice"));
        }
        if !is_pubkey(mint) {
            return Err(format!(
                "token `{name}`: mint `{mint}` is not a base58 public key"
            ));
        }
        if !is_pubkey(treasury) {
            return Err(format!(
                "token `{name}`: treasury `{treasury}` is not a base58 public key"
            ));
        }
        if let Some(other) = before.iter().find(|t| t.treasury == treasury) {
            return Err(if other.mint == mint {
                format!(
                    "tokens `{}` and `{name}` have the same mint and treasury: every deposit would be credited twice",
                    other.name
                )
            } else {
                format!(
                    "tokens `{}` and `{name}` name the same treasury token account `{treasury}` (a token account holds one mint)",
                    other.name
                )
            });
        }
        let decimals: u8 = match decimals.parse() {
            Ok(d) if d <= 18 => d,
            _ => {
                return Err(format!(
                    "token `{name}`: decimals `{decimals}` is not a whole number from 0 to 18"
                ))
            }
        };
        Ok(Token {
            name,
            mint: mint.to_string(),
            decimals,
            treasury: treasury.to_string(),
        })
    }
}
