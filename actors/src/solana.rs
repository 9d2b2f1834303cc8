//! Solana JSON-RPC for the deposit watchers: the configured tokens, a small client for
//! `getSignaturesForAddress` and `getTransaction` (jsonParsed, `maxSupportedTransactionVersion`
//! 0, finalized), and the reading of a transaction: how much the treasury account of a mint
//! gained, and its memos.
//!
//! The credited amount comes from the token balances, not from the instructions: post minus
//! pre balance of the treasury account for the mint (a missing pre-balance is 0, as for an
//! account created in the same transaction). So top-level and inner transfers count alike, and
//! instructions the RPC could not parse do not matter.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use serde::Deserialize;
use serde_json::{json, Value};

/// One SPL token a watcher credits.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Token {
    /// The name users see (`towai`); lower-case letters, digits, `-` and `_`.
    pub name: String,
    pub mint: String,
    pub decimals: u8,
    /// The treasury's token account for the mint (deposits are transfers into it).
    pub treasury: String,
}

const ALPHABET: &[u8; 58] = b"123456789ABCDEFGHJKLMNPQRSTUVWXYZabcdefghijkmnopqrstuvwxyz";

/// Decodes base58 (Bitcoin alphabet, as Solana uses); `None` on any other character.
pub fn base58_decode(text: &str) -> Option<Vec<u8>> {
    let mut bytes: Vec<u8> = Vec::with_capacity(text.len());
    for c in text.bytes() {
        let mut carry = ALPHABET.iter().position(|&a| a == c)? as u32;
        for b in bytes.iter_mut().rev() {
            carry += *b as u32 * 58;
            *b = (carry & 0xff) as u8;
            carry >>= 8;
        }
        while carry > 0 {
            bytes.insert(0, (carry & 0xff) as u8);
            carry >>= 8;
        }
    }
    let zeros = text.bytes().take_while(|&c| c == b'1').count();
    let mut out = vec![0u8; zeros];
    out.extend(bytes);
    Some(out)
}

/// A base58 string of 32 bytes: a public key (wallet or token account).
pub fn is_pubkey(text: &str) -> bool {
    (32..=44).contains(&text.len()) && base58_decode(text).is_some_and(|b| b.len() == 32)
}

/// A base58 string of 64 bytes: a transaction signature.
pub fn is_signature(text: &str) -> bool {
    (64..=88).contains(&text.len()) && base58_decode(text).is_some_and(|b| b.len() == 64)
}

/// One entry of `getSignaturesForAddress` (newest first).
#[derive(Debug, Clone, Deserialize, PartialEq)]
pub struct SignatureInfo {
    pub signature: String,
    pub slot: u64,
    /// `null` for a successful transaction.
    #[serde(default)]
    pub err: Option<Value>,
    #[serde(default)]
    pub memo: Option<String>,
}

/// A failed RPC call. Every kind is absorbed by the watcher, which backs off.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum RpcError {
    #[error("RPC answered HTTP {status}")]
    Http {
        status: u16,
        retry_after: Option<Duration>,
    },
    #[error("RPC error {code}: {message}")]
    Rpc { code: i64, message: String },
    #[error("RPC unreachable: {0}")]
    Transport(String),
    #[error("unexpected RPC answer: {0}")]
    Decode(String),
}

impl RpcError {
    /// How long the RPC asked us to wait (HTTP `Retry-After`), if it did.
    pub fn retry_after(&self) -> Option<Duration> {
        match self {
            RpcError::Http { retry_after, .. } => *retry_after,
            _ => None,
        }
    }
}

/// A JSON-RPC client with timeouts, shared by every watcher of one RPC URL.
#[derive(Debug)]
pub struct RpcClient {
    http: reqwest::Client,
    url: String,
    next_id: AtomicU64,
}

impl RpcClient {
    /// `instance` names this replica in the `User-Agent` (see [`crate::user_agent`]).
    pub fn new(
        url: &str,
        connect_timeout: Duration,
        timeout: Duration,
        instance: &str,
    ) -> Result<Self, String> {
        let http = reqwest::Client::builder()
            .connect_timeout(connect_timeout)
            .timeout(timeout)
            .user_agent(crate::user_agent(instance))
            .build()
            .map_err(|e| e.to_string())?;
        Ok(RpcClient {
            http,
            url: url.to_string(),
            next_id: AtomicU64::new(1),
        })
    }

    /// One call; the `result` (which may be `null`) or the error.
    pub async fn call(&self, method: &str, params: Value) -> Result<Value, RpcError> {
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        let body = json!({"jsonrpc": "2.0", "id": id, "method": method, "params": params});
        let res = self
            .http
            .post(&self.url)
            .json(&body)
            .send()
            .await
            .map_err(|e| RpcError::Transport(e.without_url().to_string()))?;
        let status = res.status();
        if !status.is_success() {
            let retry_after = crate::upstream::retry_after(&res);
            return Err(RpcError::Http {
                status: status.as_u16(),
                retry_after,
            });
        }
        let mut envelope: Value = res
            .json()
            .await
            .map_err(|e| RpcError::Decode(e.without_url().to_string()))?;
        if let Some(err) = envelope.get("error").filter(|e| !e.is_null()) {
            return Err(RpcError::Rpc {
                code: err.get("code").and_then(Value::as_i64).unwrap_or(0),
                message: err
                    .get("message")
                    .and_then(Value::as_str)
                    .unwrap_or("(no message)")
                    .to_string(),
            });
        }
        match envelope.get_mut("result") {
            Some(result) => Ok(result.take()),
            None => Err(RpcError::Decode(
                "neither `result` nor `error` in the answer".into(),
            )),
        }
    }

    /// Signatures touching `address`, newest first: at most `limit`, older than `before`,
    /// newer than `until` (both exclusive), finalized.
    pub async fn signatures(
        &self,
        address: &str,
        before: Option<&str>,
        until: Option<&str>,
        limit: usize,
    ) -> Result<Vec<SignatureInfo>, RpcError> {
        let mut options = json!({"limit": limit, "commitment": "finalized"});
        if let Some(b) = before {
            options["before"] = json!(b);
        }
        if let Some(u) = until {
            options["until"] = json!(u);
        }
        let result = self
            .call("getSignaturesForAddress", json!([address, options]))
            .await?;
        serde_json::from_value(result).map_err(|e| RpcError::Decode(e.to_string()))
    }

    /// A finalized transaction in `jsonParsed` form; `None` when the RPC does not have it
    /// (yet): the watcher then retries the whole window later.
    pub async fn transaction(&self, signature: &str) -> Result<Option<Value>, RpcError> {
        let options = json!({"encoding": "jsonParsed", "maxSupportedTransactionVersion": 0, "commitment": "finalized"});
        let result = self
            .call("getTransaction", json!([signature, options]))
            .await?;
        Ok((!result.is_null()).then_some(result))
    }
}

/// What a transaction did for one treasury: `None` when the transaction failed (nothing
/// moved), else the treasury's gain in base units of `mint` (negative or zero: not a deposit).
pub fn treasury_delta(tx: &Value, treasury: &str, mint: &str) -> Result<Option<i128>, String> {
    let meta = tx.get("meta").ok_or("transaction without `meta`")?;
    if meta.get("err").is_some_and(|e| !e.is_null()) {
        return Ok(None);
    }
    let keys = tx
        .pointer("/transaction/message/accountKeys")
        .and_then(Value::as_array)
        .ok_or("transaction without `accountKeys`")?;
    let mut indexes: Vec<u64> = keys
        .iter()
        .enumerate()
        .filter(|(_, k)| {
            k.get("pubkey")
                .and_then(Value::as_str)
                .or_else(|| k.as_str())
                == Some(treasury)
        })
        .map(|(i, _)| i as u64)
        .collect();
    // Accounts loaded from lookup tables follow the static keys (v0 transactions).
    if let Some(loaded) = meta.get("loadedAddresses") {
        let extra = ["writable", "readonly"].iter().flat_map(|k| {
            loaded
                .get(*k)
                .and_then(Value::as_array)
                .cloned()
                .unwrap_or_default()
        });
        for (i, k) in extra.enumerate() {
            if k.as_str() == Some(treasury) {
                indexes.push((keys.len() + i) as u64);
            }
        }
    }
    let balance = |field: &str| -> Result<i128, String> {
        let mut sum = 0i128;
        for b in meta
            .get(field)
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
        {
            let index = b.get("accountIndex").and_then(Value::as_u64);
            let this_mint = b.get("mint").and_then(Value::as_str);
            if this_mint == Some(mint) && index.is_some_and(|i| indexes.contains(&i)) {
                let amount = b
                    .pointer("/uiTokenAmount/amount")
                    .and_then(Value::as_str)
                    .ok_or_else(|| format!("{field} entry without uiTokenAmount.amount"))?;
                sum += amount
                    .parse::<u64>()
                    .map_err(|_| format!("{field} amount `{amount}` is not a whole number"))?
                    as i128;
            }
        }
        Ok(sum)
    };
    Ok(Some(
        balance("postTokenBalances")? - balance("preTokenBalances")?,
    ))
}

/// Memo texts of a transaction's memo instructions (top-level and inner; `jsonParsed` gives
/// a memo's `parsed` as a plain string).
pub fn memos(tx: &Value) -> Vec<String> {
    let top = tx
        .pointer("/transaction/message/instructions")
        .and_then(Value::as_array)
        .cloned()
        .unwrap_or_default();
    let inner = tx
        .pointer("/meta/innerInstructions")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .filter_map(|group| group.get("instructions").and_then(Value::as_array))
        .flatten()
        .cloned();
    top.into_iter()
        .chain(inner)
        .filter(|i| i.get("program").and_then(Value::as_str) == Some("spl-memo"))
        .filter_map(|i| i.get("parsed").and_then(Value::as_str).map(str::to_string))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn base58_round_trips_known_keys() {
        assert!(is_pubkey("EPjFWdd5AufqSSqeM2qN1xzybapC8G4wEGGkZwyTDt1v"));
        assert!(is_pubkey("11111111111111111111111111111111"));
        assert!(!is_pubkey("1111111111111111111111111111111"), "31 bytes");
        assert!(
            !is_pubkey("EPjFWdd5AufqSSqeM2qN1xzybapC8G4wEGGkZwyTDt"),
            "30 or 31 bytes"
        );
        assert!(!is_pubkey("0PjFWdd5AufqSSqeM2qN1xzybapC8G4wEGGkZwyTDt1v"));
        assert!(!is_pubkey(""));
        assert!(is_signature("2S2rTZjaqzxYRw9mnqzwtyqitKtSsnE8GVqLn1KrD5R2YpXZnU4GdjppsgfSAbrzJfaqadfi8CtrqEBy588WVQ3E"));
        assert!(!is_signature(
            "EPjFWdd5AufqSSqeM2qN1xzybapC8G4wEGGkZwyTDt1v"
        ));
    }

    #[test]
    fn failed_transactions_move_nothing() {
        let tx = json!({"meta": {"err": {"InstructionError": [0, {"Custom": 1}]}}});
        assert_eq!(treasury_delta(&tx, "x", "m").unwrap(), None);
    }
}
