//! Crash consistency of the money path: the daemon binary is SIGKILLed at random moments, over
//! and over (50 times), while its watcher credits deposits from the mock RPC (some signatures
//! never readable, so quarantined), users place stakes through the API (adding to positions),
//! a signer claims withdrawals and completes or fails them, and its poller settles markets
//! (paid in transactions of their own) from the mock ESPN. After every restart the ledger
//! audit must hold (every balance equals its entries, each signature credited once, each
//! market paid once, deposits = balances + holds + escrow + house + withdrawn; withdrawals are
//! requested and expired by the cleanup meanwhile), and at the
//! end every deposit the RPC ever showed is credited exactly once.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use chrono::{NaiveDate, Utc};
use serde_json::{json, Value};

use crate::espn_mock::{with_status, MockEspn};
use crate::helpers::*;
use crate::money::{USDC_MINT, USDC_TREASURY};
use crate::rpc_mock::*;

const RESTARTS: usize = 50;

fn random(below: u64) -> u64 {
    uuid::Uuid::new_v4().as_u64_pair().0 % below
}

/// CONSTRUCTED: the real 2025-09-28 MLB board (15 scheduled games) moved to start tomorrow,
/// with the games in `finals` final (home wins when the index is even).
pub(crate) fn board(finals: usize) -> Vec<u8> {
    let fixture = espn_fixture("mlb-scoreboard-20250928.json");
    let mut value: Value = serde_json::from_slice(&fixture).unwrap();
    let start = (Utc::now() + chrono::Duration::days(1))
        .format("%Y-%m-%dT%H:%MZ")
        .to_string();
    let ids: Vec<String> = value["events"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["id"].as_str().unwrap().to_string())
        .collect();
    for e in value["events"].as_array_mut().unwrap() {
        e["date"] = json!(start);
        e["competitions"][0]["date"] = json!(start);
    }
    let mut bytes = serde_json::to_vec(&value).unwrap();
    for (i, id) in ids.iter().take(finals).enumerate() {
        let score = if i % 2 == 0 { (5, 3) } else { (2, 4) };
        bytes = with_status(&bytes, id, "STATUS_FINAL", "post", true, Some(score));
    }
    bytes
}

/// CONSTRUCTED: a well-formed transaction signature (64 bytes, base58) unique to `n`.
fn base58_signature(n: u64) -> String {
    let alphabet = b"123456789ABCDEFGHJKLMNPQRSTUVWXYZabcdefghijkmnopqrstuvwxyz";
    let mut bytes = [7u8; 64];
    bytes[56..].copy_from_slice(&n.to_be_bytes());
    // Base58 of a big-endian number: repeated division by 58.
    let mut digits: Vec<u8> = Vec::new();
    let mut num = bytes.to_vec();
    while num.iter().any(|b| *b != 0) {
        let mut rem = 0u32;
        for b in num.iter_mut() {
            let acc = (rem << 8) | u32::from(*b);
            *b = (acc / 58) as u8;
            rem = acc % 58;
        }
        digits.push(alphabet[rem as usize]);
    }
    digits.reverse();
    String::from_utf8(digits).unwrap()
}

/// The ledger audit of `d`, asserting it holds.
pub(crate) fn audit(client: &reqwest::blocking::Client, d: &Daemon) -> Value {
    let res = client
        .get(d.url("/admin/ledger/audit"))
        .bearer_auth(ADMIN_TOKEN)
        .send()
        .unwrap();
    let status = res.status();
    let body: Value = res.json().unwrap();
    assert_eq!(
        status,
        200,
        "ledger audit after a crash: {body:#}\n{}",
        d.stderr()
    );
    assert_eq!(body["problems"], json!([]));
    body
}

/// Waits until `d` holds the leader lease.
fn wait_leader(client: &reqwest::blocking::Client, d: &Daemon) {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let leader = client
            .get(d.url("/debug/status"))
            .bearer_auth(ADMIN_TOKEN)
            .send()
            .ok()
            .and_then(|r| r.json::<Value>().ok())
            .is_some_and(|s| s["leader"] == true);
        if leader {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "never became leader:\n{}",
            d.stderr()
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn crash_consistency(db: Db) {
    let data = tempfile::tempdir().unwrap();
    let url = database_url(&db, data.path());
    let espn = MockEspn::start();
    let today = (Utc::now() - chrono::Duration::hours(5)).date_naive();
    espn.serve("basketball/nba", today, board(0));
    let rpc = Arc::new(MockRpc::start());
    let env = crash_env(&url, &rpc, &espn);
    let env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (*k, v.as_str())).collect();
    let client = blocking_client();

    let first = Daemon::spawn(&env);
    first.wait_notify("READY=1", Duration::from_secs(20));
    // A first deposit per user, credited before the kills begin, so stakes are possible from
    // the first round however far the watcher lags behind the chain later.
    let pushed = Arc::new(AtomicU64::new(0));
    let pushed_amount = Arc::new(AtomicU64::new(0));
    let users = fund_users(&first, &client, &rpc, &pushed, &pushed_amount);
    drop(first);

    // The chain: a new deposit to a random user (or with no memo) every 15 ms.
    let stop = Arc::new(AtomicBool::new(false));
    // Signatures whose transaction the node never serves: each must end quarantined.
    let unreadable = Arc::new(AtomicU64::new(0));
    let feeder = {
        let (stop, pushed, pushed_amount, rpc, unreadable) = (
            stop.clone(),
            pushed.clone(),
            pushed_amount.clone(),
            rpc.clone(),
            unreadable.clone(),
        );
        let codes: Vec<String> = users.iter().map(|(_, c)| c.clone()).collect();
        std::thread::spawn(move || chain(&stop, &pushed, &pushed_amount, &rpc, &unreadable, &codes))
    };

    // Users stake on open markets whenever the daemon answers.
    let port_slot = Arc::new(Mutex::new(0u16));
    let stakers: Vec<_> = users
        .iter()
        .map(|(key, _)| {
            let (key, stop, port_slot, client) =
                (key.clone(), stop.clone(), port_slot.clone(), client.clone());
            std::thread::spawn(move || stake_loop(&key, &stop, &port_slot, &client))
        })
        .collect();

    // A signer: claims pending withdrawals (racing the cleanup's expiry), then completes (with
    // a signature of its own) or fails them; now and then leaves a claim open.
    let signer = {
        let (stop, port_slot, client) = (stop.clone(), port_slot.clone(), client.clone());
        std::thread::spawn(move || sign_loop(&stop, &port_slot, &client))
    };

    kill_rounds(&env, &client, &port_slot, &espn, today, &pushed_amount);

    stop.store(true, Ordering::Release);
    feeder.join().unwrap();
    let placed: u64 = stakers.into_iter().map(|s| s.join().unwrap()).sum();
    let (claimed, completed) = signer.join().unwrap();
    let unreadable = unreadable.load(Ordering::Acquire) as usize;
    // The last start catches up: every deposit the chain shows is credited exactly once.
    let d = Daemon::spawn(&env);
    d.wait_notify("READY=1", Duration::from_secs(20));
    let total = pushed_amount.load(Ordering::Acquire) as i64;
    let deadline = Instant::now() + Duration::from_secs(60);
    let quarantined = || {
        admin_items(
            &client,
            &d,
            "/admin/deposits/quarantine?state=quarantined&limit=200",
        )
        .len()
    };
    let last = loop {
        let a = audit(&client, &d);
        if (a["tokens"][0]["deposits"].as_i64() == Some(total) && quarantined() == unreadable)
            || Instant::now() > deadline
        {
            break a;
        }
        std::thread::sleep(Duration::from_millis(100));
    };
    assert_eq!(
        last["tokens"][0]["deposits"].as_i64(),
        Some(total),
        "{last:#}"
    );
    assert_eq!(
        quarantined(),
        unreadable,
        "every unreadable signature is quarantined, once"
    );
    let settled = admin_items(&client, &d, "/api/v1/markets?state=settled&limit=200").len();
    assert!(
        placed > 0 && settled > 0,
        "the run staked ({placed}) and settled ({settled})"
    );
    // Withdrawals requested along the way ended up expired by the cleanup (their TTL is 1 s).
    std::thread::sleep(Duration::from_millis(1500));
    let expired = expired_withdrawals(&client, &d, &users);
    assert!(expired > 0, "some withdrawals were expired by the cleanup");
    let last = audit(&client, &d);
    // Holds left are exactly the claims the signer left open: never expired, never refunded.
    let open_amount: i64 =
        admin_items(&client, &d, "/admin/withdrawals?state=processing&limit=200")
            .iter()
            .map(|w| w["amount"].as_str().unwrap().parse::<i64>().unwrap())
            .sum();
    assert_eq!(
        last["tokens"][0]["holds"].as_i64(),
        Some(open_amount),
        "holds are the open claims only"
    );
    assert!(
        claimed > 0 && completed > 0,
        "the signer claimed ({claimed}) and completed ({completed}) withdrawals"
    );
    eprintln!("crash consistency: {RESTARTS} SIGKILLs, {} deposits ({unreadable} quarantined), {placed} stakes, {settled} markets settled, {expired} withdrawals expired, {claimed} claimed, {completed} completed; audit: {}", pushed.load(Ordering::Acquire), last["tokens"][0]);
}

both_backends!(blocking crash_consistency: money_survives_repeated_sigkill_on_sqlite, money_survives_repeated_sigkill_on_postgres);

/// The chain: a new deposit to a random user (or with no memo) every 15 ms, and every 40th a
/// signature whose transaction the node never serves.
fn chain(
    stop: &AtomicBool,
    pushed: &AtomicU64,
    pushed_amount: &AtomicU64,
    rpc: &MockRpc,
    unreadable: &AtomicU64,
    codes: &[String],
) {
    let mut n = 0u64;
    while !stop.load(Ordering::Acquire) {
        n += 1;
        if n % 40 == 0 {
            let sig = constructed_signature("U", n);
            rpc.push_signatures(
                USDC_TREASURY,
                vec![signature_entry(&sig, 1_000_000 + n, None)],
            );
            unreadable.fetch_add(1, Ordering::AcqRel);
            std::thread::sleep(Duration::from_millis(15));
            continue;
        }
        let sig = constructed_signature("C", n);
        let amount = 100 + random(900);
        let memo = (n % 5 != 0).then(|| codes[(n % codes.len() as u64) as usize].clone());
        rpc.add_transaction(
            &sig,
            constructed_transfer(
                &sig,
                1_000_000 + n,
                USDC_MINT,
                USDC_TREASURY,
                0,
                amount,
                memo.as_deref(),
            ),
        );
        rpc.push_signatures(
            USDC_TREASURY,
            vec![signature_entry(&sig, 1_000_000 + n, memo.as_deref())],
        );
        pushed.fetch_add(1, Ordering::AcqRel);
        pushed_amount.fetch_add(amount, Ordering::AcqRel);
        std::thread::sleep(Duration::from_millis(15));
    }
}

/// One user staking on open markets whenever the daemon answers (now and then a withdrawal);
/// the stakes placed.
fn stake_loop(
    key: &str,
    stop: &AtomicBool,
    port_slot: &Mutex<u16>,
    client: &reqwest::blocking::Client,
) -> u64 {
    let mut placed = 0u64;
    while !stop.load(Ordering::Acquire) {
        let port = *port_slot.lock().unwrap();
        let base = format!("http://127.0.0.1:{port}");
        let markets = client
            .get(format!("{base}/api/v1/markets?state=open"))
            .send()
            .ok()
            .and_then(|r| r.json::<Value>().ok());
        let ids: Vec<i64> = markets
            .map(|m| {
                m["items"]
                    .as_array()
                    .cloned()
                    .unwrap_or_default()
                    .iter()
                    .filter_map(|m| m["id"].as_i64())
                    .collect()
            })
            .unwrap_or_default();
        if ids.is_empty() {
            std::thread::sleep(Duration::from_millis(20));
            continue;
        }
        if random(8) == 0 {
            // Now and then a withdrawal, left pending for the cleanup to expire.
            let _ = client.post(format!("{base}/api/v1/me/withdrawals")).bearer_auth(key)
                .json(&json!({"token": "usdc", "amount": 1 + random(30), "destination": crate::money::WALLET})).send();
        }
        let market = ids[random(ids.len() as u64) as usize];
        let outcome = if random(2) == 0 { "home" } else { "away" };
        let res = client
            .post(format!("{base}/api/v1/markets/{market}/stakes"))
            .bearer_auth(key)
            .json(&json!({"outcome": outcome, "amount": 1 + random(40), "token": "usdc"}))
            .send();
        if res.is_ok_and(|r| r.status() == 201) {
            placed += 1;
        }
    }
    placed
}

/// The signer: claims pending withdrawals, then completes or fails them, or leaves the claim
/// open; (claimed, completed).
fn sign_loop(
    stop: &AtomicBool,
    port_slot: &Mutex<u16>,
    client: &reqwest::blocking::Client,
) -> (u64, u64) {
    let (mut claimed, mut completed) = (0u64, 0u64);
    let mut n = 0u64;
    while !stop.load(Ordering::Acquire) {
        let port = *port_slot.lock().unwrap();
        let base = format!("http://127.0.0.1:{port}");
        let pending = client
            .get(format!("{base}/admin/withdrawals?state=pending&limit=5"))
            .bearer_auth(ADMIN_TOKEN)
            .send()
            .ok()
            .and_then(|r| r.json::<Value>().ok());
        let ids: Vec<i64> = pending
            .and_then(|p| p["items"].as_array().cloned())
            .unwrap_or_default()
            .iter()
            .filter_map(|w| w["id"].as_i64())
            .collect();
        // A third are left to the cleanup's expiry.
        for id in ids.into_iter().filter(|id| id % 3 != 0) {
            let claim = client
                .post(format!("{base}/admin/withdrawals/{id}/claim"))
                .bearer_auth(ADMIN_TOKEN)
                .json(&json!({"claimer": "crash-signer"}))
                .send();
            if !claim.is_ok_and(|r| r.status() == 200) {
                continue;
            }
            claimed += 1;
            n += 1;
            let body = match random(4) {
                0 => continue, // left claimed: it must never be refunded
                1 => json!({"reason": "node rejected it"}),
                _ => json!({"signature": base58_signature(n)}),
            };
            let action = if body.get("reason").is_some() {
                "fail"
            } else {
                "complete"
            };
            let done = client
                .post(format!("{base}/admin/withdrawals/{id}/{action}"))
                .bearer_auth(ADMIN_TOKEN)
                .json(&body)
                .send();
            if action == "complete" && done.is_ok_and(|r| r.status() == 200) {
                completed += 1;
            }
        }
        std::thread::sleep(Duration::from_millis(30));
    }
    (claimed, completed)
}

/// Three users, each with a first deposit credited before the kills begin, so stakes are
/// possible from the first round however far the watcher lags behind the chain later.
fn fund_users(
    first: &Daemon,
    client: &reqwest::blocking::Client,
    rpc: &MockRpc,
    pushed: &AtomicU64,
    pushed_amount: &AtomicU64,
) -> Vec<(String, String)> {
    let users: Vec<(String, String)> = (0..3)
        .map(|_| {
            let u: Value = client
                .post(first.url("/api/v1/users"))
                .json(&json!({}))
                .send()
                .unwrap()
                .json()
                .unwrap();
            (
                u["api_key"].as_str().unwrap().to_string(),
                u["deposit_code"].as_str().unwrap().to_string(),
            )
        })
        .collect();
    for (i, (_, code)) in users.iter().enumerate() {
        let sig = constructed_signature("F", i as u64 + 1);
        let slot = 900_000 + i as u64;
        rpc.add_transaction(
            &sig,
            constructed_transfer(&sig, slot, USDC_MINT, USDC_TREASURY, 0, 5_000, Some(code)),
        );
        rpc.push_signatures(USDC_TREASURY, vec![signature_entry(&sig, slot, Some(code))]);
        pushed.fetch_add(1, Ordering::AcqRel);
        pushed_amount.fetch_add(5_000, Ordering::AcqRel);
    }
    let deadline = Instant::now() + Duration::from_secs(20);
    for (key, _) in &users {
        loop {
            let me: Value = client
                .get(first.url("/api/v1/me"))
                .bearer_auth(key)
                .send()
                .unwrap()
                .json()
                .unwrap();
            let funded = me["balances"]
                .as_array()
                .into_iter()
                .flatten()
                .any(|b| b["token"] == "usdc" && b["amount"] != "0");
            if funded {
                break;
            }
            assert!(
                Instant::now() < deadline,
                "first deposits not credited: {me}\n{}",
                first.stderr()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }
    users
}

/// The items of a list answer (admin lists read with the admin token).
fn admin_items(client: &reqwest::blocking::Client, d: &Daemon, path: &str) -> Vec<Value> {
    let mut req = client.get(d.url(path));
    if path.starts_with("/admin/") {
        req = req.bearer_auth(ADMIN_TOKEN);
    }
    let list: Value = req.send().unwrap().json().unwrap();
    list["items"].as_array().unwrap().clone()
}

/// Withdrawals of `users` the cleanup expired.
fn expired_withdrawals(
    client: &reqwest::blocking::Client,
    d: &Daemon,
    users: &[(String, String)],
) -> usize {
    users
        .iter()
        .map(|(key, _)| {
            let list: Value = client
                .get(d.url("/api/v1/me/withdrawals?limit=200"))
                .bearer_auth(key)
                .send()
                .unwrap()
                .json()
                .unwrap();
            list["items"]
                .as_array()
                .unwrap()
                .iter()
                .filter(|w| w["state"] == "expired")
                .count()
        })
        .sum()
}

/// `RESTARTS` rounds: start a daemon, let it work a random while (now and then with games
/// going final), SIGKILL it; never more credited than the chain holds.
fn kill_rounds(
    env: &[(&str, &str)],
    client: &reqwest::blocking::Client,
    port_slot: &Mutex<u16>,
    espn: &MockEspn,
    today: NaiveDate,
    pushed_amount: &AtomicU64,
) {
    let mut finals = 0;
    for round in 0..RESTARTS {
        let d = Daemon::spawn(env);
        d.wait_notify("READY=1", Duration::from_secs(20));
        // On PostgreSQL the killed predecessor's lease lapses first (its TTL): kill at random
        // moments of the singletons' work, not while they stand by.
        wait_leader(client, &d);
        let before = audit(client, &d);
        *port_slot.lock().unwrap() = d.port;
        if round % 3 == 2 && finals < 15 {
            finals += 2;
            espn.serve("basketball/nba", today, board(finals));
        }
        std::thread::sleep(Duration::from_millis(150 + random(1000)));
        let mut d = d;
        d.signal(libc::SIGKILL);
        d.wait_exit(Duration::from_secs(5));
        let deposits = before["tokens"][0]["deposits"].as_i64().unwrap_or(0);
        assert!(
            deposits as u64 <= pushed_amount.load(Ordering::Acquire),
            "never more than the chain holds"
        );
    }
}

/// The daemon's settings for the crash run: fast pollers, watcher and cleanup, a short lease.
fn crash_env(url: &str, rpc: &MockRpc, espn: &MockEspn) -> Vec<(&'static str, String)> {
    let token = format!("usdc:{USDC_MINT}:6:{USDC_TREASURY}");
    let pairs = [
        ("TIPOFF_DATABASE_URL", url),
        ("TIPOFF_TOKENS", &token),
        ("TIPOFF_SOLANA_RPC_URL", &rpc.url),
        ("TIPOFF_SOLANA_POLL_INTERVAL", "50ms"),
        ("TIPOFF_LEAGUES", "nba"),
        ("TIPOFF_ESPN_BASE_URL", &espn.base_url),
        ("TIPOFF_SCORE_LIVE_INTERVAL", "300ms"),
        ("TIPOFF_SCORE_IDLE_INTERVAL", "300ms"),
        ("TIPOFF_SCHEDULE_LOOKAHEAD_DAYS", "1"),
        ("TIPOFF_WITHDRAWAL_TTL", "1s"),
        ("TIPOFF_SOLANA_QUARANTINE_AFTER", "2"),
        ("TIPOFF_SOLANA_BACKOFF_BASE", "50ms"),
        ("TIPOFF_SOLANA_BACKOFF_CAP", "100ms"),
        ("TIPOFF_CLEANUP_INTERVAL", "200ms"),
        // A SIGKILLed leader's lease lapses after its TTL; the restarted process (a new
        // instance) takes it then.
        ("TIPOFF_LEADER_TTL", "1s"),
        ("TIPOFF_LOG", "warn"),
    ];
    pairs.iter().map(|(k, v)| (*k, v.to_string())).collect()
}

/// A blocking HTTP client whose requests give up after 3 s (a killed daemon never answers).
fn blocking_client() -> reqwest::blocking::Client {
    reqwest::blocking::Client::builder()
        .timeout(Duration::from_secs(3))
        .build()
        .unwrap()
}
