//! A local stand-in for a Solana JSON-RPC node, serving the real responses of
//! `../shared/fixtures/solana` (and, where they lack a case, responses CONSTRUCTED from their
//! shapes, marked as such below). Like the ESPN mock it runs on its own thread and actix system.
//!
//! - `getSignaturesForAddress`: each address has a list, newest first; `before`, `until` and
//!   `limit` slice it as a node does (both bounds exclusive).
//! - `getTransaction`: the stored `result` for the signature, or `null` when unknown (or
//!   once, when told to answer `null` for it).
//! - Faults: scripted answers for the next calls (a JSON-RPC error body, an HTTP status with
//!   `Retry-After`), served before anything else. Every call is logged.

use std::collections::{HashMap, HashSet, VecDeque};
use std::sync::{Arc, Mutex};

use actix_web::{web, HttpResponse};
use serde_json::{json, Value};

/// A real fixture of `../shared/fixtures/solana`, parsed.
pub fn solana_fixture(name: &str) -> Value {
    let dir = std::env::var("TIPOFF_FIXTURES_DIR")
        .unwrap_or_else(|_| concat!(env!("CARGO_MANIFEST_DIR"), "/../shared/fixtures").to_string());
    let text = std::fs::read(format!("{dir}/solana/{name}"))
        .unwrap_or_else(|e| panic!("fixture {name} in {dir}: {e}"));
    serde_json::from_slice(&text).expect("fixture is JSON")
}

/// A scripted answer for the next call.
#[derive(Debug, Clone)]
pub enum Fault {
    /// HTTP 200 with this JSON-RPC body (an `error` envelope).
    Body(Value),
    /// An HTTP status, with `Retry-After` seconds when given.
    Status(u16, Option<u64>),
}

#[derive(Default)]
struct State {
    signatures: HashMap<String, Vec<Value>>,
    transactions: HashMap<String, Value>,
    null_once: HashSet<String>,
    faults: VecDeque<Fault>,
    log: Vec<(String, Value, std::time::Instant)>,
    /// Requests per tipoff instance.
    agents: HashMap<String, usize>,
}

pub struct MockRpc {
    pub url: String,
    state: Arc<Mutex<State>>,
    handle: actix_web::dev::ServerHandle,
}

async fn rpc(
    req: actix_web::HttpRequest,
    body: web::Json<Value>,
    state: web::Data<Arc<Mutex<State>>>,
) -> HttpResponse {
    let method = body["method"].as_str().unwrap_or_default().to_string();
    let params = body["params"].clone();
    let id = body["id"].clone();
    let mut s = state.lock().unwrap();
    crate::mock_server::count(&mut s.agents, crate::mock_server::instance_of(&req));
    s.log
        .push((method.clone(), params.clone(), std::time::Instant::now()));
    if let Some(fault) = s.faults.pop_front() {
        return match fault {
            Fault::Body(body) => HttpResponse::Ok().json(body),
            Fault::Status(status, retry) => {
                let mut res =
                    HttpResponse::build(actix_web::http::StatusCode::from_u16(status).unwrap());
                if let Some(secs) = retry {
                    res.insert_header(("Retry-After", secs.to_string()));
                }
                res.body(format!("{{\"error\": \"HTTP {status}\"}}"))
            }
        };
    }
    let result = match method.as_str() {
        "getSignaturesForAddress" => {
            let address = params[0].as_str().unwrap_or_default();
            let opts = &params[1];
            let list = s.signatures.get(address).cloned().unwrap_or_default();
            let pos = |key: &str| {
                opts[key]
                    .as_str()
                    .and_then(|sig| list.iter().position(|e| e["signature"] == sig))
            };
            let start = pos("before").map_or(0, |i| i + 1);
            let end = pos("until").unwrap_or(list.len()).max(start);
            let limit = opts["limit"].as_u64().unwrap_or(1000) as usize;
            json!(list[start..end.min(start + limit)])
        }
        "getTransaction" => {
            let sig = params[0].as_str().unwrap_or_default().to_string();
            assert_eq!(params[1]["encoding"], "jsonParsed");
            assert_eq!(params[1]["maxSupportedTransactionVersion"], 0);
            assert_eq!(params[1]["commitment"], "finalized");
            if s.null_once.remove(&sig) {
                Value::Null
            } else {
                s.transactions.get(&sig).cloned().unwrap_or(Value::Null)
            }
        }
        other => {
            return HttpResponse::Ok().json(json!({"jsonrpc": "2.0", "id": id,
                "error": {"code": -32601, "message": format!("Method not found: {other}")}}))
        }
    };
    HttpResponse::Ok().json(json!({"jsonrpc": "2.0", "id": id, "result": result}))
}

impl MockRpc {
    pub fn start() -> MockRpc {
        let state = Arc::new(Mutex::new(State::default()));
        let data = state.clone();
        let (port, handle) = crate::mock_server::serve("RPC", 2, data, |cfg| {
            cfg.app_data(web::JsonConfig::default().limit(64 << 20))
                .route("/", web::post().to(rpc));
        });
        MockRpc {
            url: format!("http://127.0.0.1:{port}/"),
            state,
            handle,
        }
    }

    /// Puts signature entries (newest first) at the head of `address`'s list.
    pub fn push_signatures(&self, address: &str, newest_first: Vec<Value>) {
        let mut s = self.state.lock().unwrap();
        let list = s.signatures.entry(address.to_string()).or_default();
        let mut new = newest_first;
        new.append(list);
        *list = new;
    }

    pub fn add_transaction(&self, signature: &str, result: Value) {
        self.state
            .lock()
            .unwrap()
            .transactions
            .insert(signature.to_string(), result);
    }

    /// The next `getTransaction` of `signature` answers `result: null`.
    pub fn null_once(&self, signature: &str) {
        self.state
            .lock()
            .unwrap()
            .null_once
            .insert(signature.to_string());
    }

    pub fn fault(&self, fault: Fault) {
        self.state.lock().unwrap().faults.push_back(fault);
    }

    /// Calls received: (method, params, when).
    pub fn log(&self) -> Vec<(String, Value, std::time::Instant)> {
        self.state.lock().unwrap().log.clone()
    }

    /// Requests so far per tipoff instance (by `User-Agent`).
    pub fn agents(&self) -> HashMap<String, usize> {
        self.state.lock().unwrap().agents.clone()
    }

    pub fn clear_log(&self) {
        self.state.lock().unwrap().log.clear();
    }
}

impl Drop for MockRpc {
    fn drop(&mut self) {
        drop(self.handle.stop(false));
    }
}

/// A fixture's `result` (the fixtures hold whole responses).
pub fn result_of(fixture: &str) -> Value {
    solana_fixture(fixture)["result"].clone()
}

/// CONSTRUCTED: a finalized jsonParsed transaction in the shape of the real USDC
/// `transferChecked` fixture: `amount` base units of `mint` from a sender's token account into
/// `treasury` (pre-balance `pre`), with an spl-memo instruction carrying `memo` when given.
pub fn constructed_transfer(
    signature: &str,
    slot: u64,
    mint: &str,
    treasury: &str,
    pre: u64,
    amount: u64,
    memo: Option<&str>,
) -> Value {
    let sender = "9rB2Poc468mPpY9WMUmaqEPsvJah8SpPB8bKqAjjXp5H";
    let balance = |index: u64, value: u64| {
        json!({"accountIndex": index, "mint": mint, "owner": "8fusVwhgo4oS1fGpZKeRaXrJXQk9auKnAgcj9A97wR3t",
               "programId": "TokenkegQfeZyiNwAJbNbGKPFXCWuBvf9Ss623VQ5DA",
               "uiTokenAmount": {"amount": value.to_string(), "decimals": 6, "uiAmount": null, "uiAmountString": value.to_string()}})
    };
    let mut instructions = vec![json!({
        "parsed": {"info": {"authority": "8fusVwhgo4oS1fGpZKeRaXrJXQk9auKnAgcj9A97wR3t", "destination": treasury,
                   "mint": mint, "source": sender,
                   "tokenAmount": {"amount": amount.to_string(), "decimals": 6, "uiAmount": null, "uiAmountString": amount.to_string()}},
                   "type": "transferChecked"},
        "program": "spl-token", "programId": "TokenkegQfeZyiNwAJbNbGKPFXCWuBvf9Ss623VQ5DA"})];
    if let Some(memo) = memo {
        instructions.push(json!({"parsed": memo, "program": "spl-memo",
                                 "programId": "MemoSq4gqABAXKb96qnH8TysNcWxMyWCqXgDLGmfcHr"}));
    }
    json!({
        "blockTime": 1680146043, "slot": slot,
        "meta": {"err": null, "fee": 5000, "innerInstructions": [], "logMessages": [],
                 "preBalances": [], "postBalances": [],
                 "preTokenBalances": [balance(1, 10_000_000_000), balance(2, pre)],
                 "postTokenBalances": [balance(1, 10_000_000_000 - amount), balance(2, pre + amount)],
                 "rewards": [], "status": {"Ok": null}},
        "transaction": {"signatures": [signature], "message": {
            "accountKeys": [
                {"pubkey": "8fusVwhgo4oS1fGpZKeRaXrJXQk9auKnAgcj9A97wR3t", "signer": true, "writable": true},
                {"pubkey": sender, "signer": false, "writable": true},
                {"pubkey": treasury, "signer": false, "writable": true},
                {"pubkey": mint, "signer": false, "writable": false}],
            "instructions": instructions, "recentBlockhash": "11111111111111111111111111111111"}}
    })
}

/// CONSTRUCTED: a base58 signature-like string unique to `n` (88 characters, like real ones).
pub fn constructed_signature(tag: &str, n: u64) -> String {
    let alphabet = b"123456789ABCDEFGHJKLMNPQRSTUVWXYZabcdefghijkmnopqrstuvwxyz";
    let mut x = n.wrapping_mul(0x9E37_79B9_7F4A_7C15) ^ 0xD1B5_4A32_D192_ED03;
    let mut s = String::from(tag);
    while s.len() < 88 {
        s.push(alphabet[(x % 58) as usize] as char);
        x = x
            .rotate_left(7)
            .wrapping_add(n + 1)
            .wrapping_mul(6364136223846793005);
    }
    s
}

/// A `getSignaturesForAddress` entry.
pub fn signature_entry(signature: &str, slot: u64, memo: Option<&str>) -> Value {
    json!({"signature": signature, "slot": slot, "err": null, "memo": memo,
           "blockTime": 1680146043, "confirmationStatus": "finalized"})
}
