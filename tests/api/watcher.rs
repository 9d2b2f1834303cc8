//! Deposit watchers against the mock JSON-RPC serving the real Solana fixtures: exact
//! treasury deltas, failed and foreign transactions credit nothing, the 1,000-entry page walks
//! back with `before`, replays credit nothing twice, a restart resumes from the cursor, and RPC
//! faults back off inside the actor.

use std::time::{Duration, Instant};

use serde_json::{json, Value};
use tipoff_actors::solana::{RpcClient, Token};
use tipoff_actors::watcher::{run_pass, WatcherSettings};
use tipoff_actors::Store;

use crate::helpers::*;
use crate::money::{register, tokens_setting, PUMP_TREASURY, USDC_MINT, USDC_TREASURY};
use crate::rpc_mock::*;

const USDC_FIXTURE: &str = "getTransaction-jsonParsed-transferChecked-usdc-keyapp-2023.json";
const SOL_FIXTURE: &str = "getTransaction-jsonParsed-system-transfer-sol-keyapp-2023.json";
const UNPARSED_FIXTURE: &str = "getTransaction-jsonParsed-unparsed-program-solana-swift-2022.json";
const PUMP_FIXTURE: &str = "getTransaction-jsonParsed-v0-pumpfun-inner-spl-transfer-2024.json";

/// Serves a transaction fixture under its own first signature; returns its signature-list
/// entry (CONSTRUCTED from the transaction's signature and slot where the fixtures hold none).
fn serve_transaction(rpc: &MockRpc, fixture: &str) -> Value {
    let tx = result_of(fixture);
    let sig = tx["transaction"]["signatures"][0]
        .as_str()
        .unwrap()
        .to_string();
    rpc.add_transaction(&sig, tx.clone());
    signature_entry(&sig, tx["slot"].as_u64().unwrap(), None)
}

/// The real failed entries of the solanakit signature list.
fn failed_entries() -> Vec<Value> {
    let list = solana_fixture("getSignaturesForAddress-with-failed-txs-solanakit-2025.json");
    list["result"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|e| !e["err"].is_null())
        .cloned()
        .collect()
}

fn calls<'a>(
    log: &'a [(String, Value, Instant)],
    method: &str,
) -> Vec<&'a (String, Value, Instant)> {
    log.iter().filter(|(m, ..)| m == method).collect()
}

async fn wait_for<F, Fut>(what: &str, within: Duration, mut check: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = Instant::now() + within;
    while !check().await {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

async fn real_transactions_credit_exactly_the_treasury_gain(db: Db) {
    let rpc = MockRpc::start();
    let usdc_entry =
        solana_fixture("getSignaturesForAddress-keyapp-usdc-send-2023.json")["result"][0].clone();
    let usdc_sig = usdc_entry["signature"].as_str().unwrap().to_string();
    rpc.add_transaction(&usdc_sig, result_of(USDC_FIXTURE));
    let sol = serve_transaction(&rpc, SOL_FIXTURE);
    let unparsed = serve_transaction(&rpc, UNPARSED_FIXTURE);
    let failed = failed_entries();
    let mut list = failed.clone();
    list.extend([sol, usdc_entry, unparsed]);
    rpc.push_signatures(USDC_TREASURY, list);
    let pump = serve_transaction(&rpc, PUMP_FIXTURE);
    rpc.push_signatures(PUMP_TREASURY, vec![pump]);

    let tokens = tokens_setting();
    let app = spawn_app(
        &db,
        &[
            ("TIPOFF_TOKENS", &tokens),
            ("TIPOFF_SOLANA_RPC_URL", &rpc.url),
            ("TIPOFF_SOLANA_POLL_INTERVAL", "100ms"),
            ("TIPOFF_SOLANA_START_STAGGER", "400ms"),
        ],
    )
    .await;
    let user = register(&app.client, &app.address).await;
    wait_for("both deposits", Duration::from_secs(10), || async {
        app.json("/admin/deposits").await["items"]
            .as_array()
            .unwrap()
            .len()
            >= 2
    })
    .await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    let deposits = app.json("/admin/deposits?unattributed=true").await;
    let items = deposits["items"].as_array().unwrap();
    assert_eq!(
        items.len(),
        2,
        "only the two token transfers into a treasury credit: {deposits:#}"
    );
    let pump = &items[0];
    assert_eq!(
        (pump["token"].as_str(), pump["amount"].as_str()),
        (Some("pump"), Some("3461738833969")),
        "the inner transfer of a v0 transaction counts"
    );
    let usdc = &items[1];
    assert_eq!(
        (
            usdc["token"].as_str(),
            usdc["amount"].as_str(),
            usdc["signature"].as_str()
        ),
        (Some("usdc"), Some("1000"), Some(usdc_sig.as_str()))
    );
    assert_eq!(
        usdc["memo"], "[8] transfer | transfer",
        "memo from the signature list and the transaction"
    );
    assert_eq!(usdc["state"], "unattributed");

    let log = rpc.log();
    let fetched: Vec<&str> = calls(&log, "getTransaction")
        .iter()
        .map(|(_, p, _)| p[0].as_str().unwrap())
        .collect();
    for f in &failed {
        assert!(
            !fetched.contains(&f["signature"].as_str().unwrap()),
            "failed signatures are never fetched"
        );
    }
    let first = |address: &str| {
        calls(&log, "getSignaturesForAddress")
            .into_iter()
            .find(|(_, p, _)| p[0] == address)
            .unwrap()
            .2
    };
    let gap = first(PUMP_TREASURY).duration_since(first(USDC_TREASURY));
    assert!(
        gap >= Duration::from_millis(350),
        "watchers start staggered ({gap:?})"
    );
    // Later passes ask only for what is newer than the cursor.
    let last = calls(&log, "getSignaturesForAddress")
        .into_iter()
        .rev()
        .find(|(_, p, _)| p[0] == USDC_TREASURY)
        .unwrap();
    assert_eq!(
        last.1[1]["until"], failed[0]["signature"],
        "the cursor is the newest signature, failed or not"
    );

    an_unattributed_deposit_is_assigned_once(&app, usdc, pump, &user).await;
    let audit = crate::money::assert_audit(&app).await;
    assert_eq!(audit["tokens"][0]["unattributed"], 3461738833969i64);
    app.stop().await;
}

/// An admin assigns an unattributed deposit to a user, once; to an unknown user, never.
async fn an_unattributed_deposit_is_assigned_once(
    app: &TestApp,
    usdc: &Value,
    pump: &Value,
    user: &crate::money::Account,
) {
    let id = usdc["id"].as_i64().unwrap();
    let res = app
        .admin_post_json(
            &format!("/admin/deposits/{id}/assign"),
            &json!({"user_id": user.id}),
        )
        .await;
    assert_eq!(res.status(), 200);
    let res = app
        .admin_post_json(
            &format!("/admin/deposits/{id}/assign"),
            &json!({"user_id": user.id}),
        )
        .await;
    assert_eq!(res.status(), 409, "a deposit is assigned once");
    let res = app
        .admin_post_json(
            &format!("/admin/deposits/{}/assign", pump["id"]),
            &json!({"user_id": 987654}),
        )
        .await;
    assert_eq!(res.status(), 400, "an unknown user is refused");
    let (_, me) = crate::money::user_call(
        &app.client,
        &app.address,
        &user.key,
        reqwest::Method::GET,
        "/api/v1/me",
        None,
    )
    .await;
    assert_eq!(
        me["balances"][0],
        json!({"token": "usdc", "amount": "1000", "decimals": 6})
    );
}
both_backends!(real_transactions_credit_exactly_the_treasury_gain: watcher_fixtures_sqlite, watcher_fixtures_postgres);

fn usdc_token() -> Token {
    Token {
        name: "usdc".into(),
        mint: USDC_MINT.into(),
        decimals: 6,
        treasury: USDC_TREASURY.into(),
    }
}

/// CONSTRUCTED amounts for the 1,000-entry page: every successful signature gets a transfer.
fn serve_page(rpc: &MockRpc) -> (i64, usize) {
    let list = solana_fixture("getSignaturesForAddress-result-only-solana-go-2021.json");
    let list = list.as_array().unwrap().clone();
    let mut total = 0i64;
    let mut ok = 0;
    for e in &list {
        if e["err"].is_null() {
            let slot = e["slot"].as_u64().unwrap();
            let amount = slot % 1000 + 1;
            total += amount as i64;
            ok += 1;
            let sig = e["signature"].as_str().unwrap();
            rpc.add_transaction(
                sig,
                constructed_transfer(sig, slot, USDC_MINT, USDC_TREASURY, 0, amount, None),
            );
        }
    }
    rpc.push_signatures(USDC_TREASURY, list);
    (total, ok)
}

async fn the_thousand_entry_page_walks_back_replays_nothing_and_resumes(db: Db) {
    let rpc = MockRpc::start();
    let (total, ok) = serve_page(&rpc);
    assert_eq!(ok, 969);
    let dir = tempfile::tempdir().unwrap();
    let client = RpcClient::new(
        &rpc.url,
        Duration::from_secs(2),
        Duration::from_secs(5),
        "test",
    )
    .unwrap();
    let settings = WatcherSettings {
        page_limit: 100,
        ..Default::default()
    };
    let token = usdc_token();

    let store = fresh_store(&db, dir.path()).await;
    let pass = run_pass(&token, &store, &client, &settings).await.unwrap();
    assert_eq!(
        (pass.signatures, pass.pages, pass.failed_skipped, pass.more),
        (1000, 11, 31, false)
    );
    assert_eq!(
        (pass.credited.unattributed, pass.credited.amount),
        (969, total)
    );
    let log = rpc.log();
    let pages = calls(&log, "getSignaturesForAddress");
    let list = solana_fixture("getSignaturesForAddress-result-only-solana-go-2021.json");
    assert_eq!(pages[0].1[1].get("before"), None);
    for (i, page) in pages.iter().enumerate().skip(1) {
        assert_eq!(
            page.1[1]["before"],
            list[i * 100 - 1]["signature"],
            "page {i} continues before the last one"
        );
        assert_eq!(page.1[1]["limit"], 100);
    }
    assert_eq!(
        calls(&log, "getTransaction").len(),
        969,
        "one fetch per successful signature"
    );
    store.close().await;
    drop(store);

    // A restart (a new pool) resumes from the cursor: three new transfers, nothing else.
    let store = fresh_store(&db, dir.path()).await;
    let newest = list[0]["signature"].as_str().unwrap().to_string();
    let new: Vec<Value> = (0..3u64)
        .map(|i| {
            let sig = constructed_signature("N", i);
            rpc.add_transaction(
                &sig,
                constructed_transfer(&sig, 90_000_000 + i, USDC_MINT, USDC_TREASURY, 5, 7, None),
            );
            signature_entry(&sig, 90_000_000 + i, None)
        })
        .rev()
        .collect();
    rpc.push_signatures(USDC_TREASURY, new);
    rpc.clear_log();
    let pass = run_pass(&token, &store, &client, &settings).await.unwrap();
    assert_eq!(
        (
            pass.signatures,
            pass.credited.unattributed,
            pass.credited.amount
        ),
        (3, 3, 21)
    );
    let log = rpc.log();
    assert_eq!(
        calls(&log, "getSignaturesForAddress")[0].1[1]["until"],
        newest.as_str()
    );
    assert_eq!(calls(&log, "getTransaction").len(), 3);

    // Replaying the whole history (the cursor lost) credits nothing twice.
    match &store {
        Store::Sqlite(pool, _) => sqlx::query("DELETE FROM watcher_cursors")
            .execute(pool)
            .await
            .map(drop),
        Store::Postgres(pool, _) => sqlx::query("DELETE FROM watcher_cursors")
            .execute(pool)
            .await
            .map(drop),
    }
    .unwrap();
    let first = run_pass(&token, &store, &client, &settings).await.unwrap();
    assert!(first.more, "1,003 signatures are more than one window");
    let second = run_pass(&token, &store, &client, &settings).await.unwrap();
    assert_eq!(first.credited.amount + second.credited.amount, 0);
    assert_eq!(first.credited.duplicates + second.credited.duplicates, 972);
    let audit = store.audit().await.unwrap();
    assert!(audit.problems.is_empty(), "{:?}", audit.problems);
    assert_eq!(audit.tokens[0].deposits, total + 21);
    assert_eq!(audit.tokens[0].unattributed, total + 21);
    store.close().await;
}
both_backends!(the_thousand_entry_page_walks_back_replays_nothing_and_resumes: watcher_paging_sqlite, watcher_paging_postgres);

#[actix_rt::test]
async fn rpc_faults_back_off_inside_the_actor_and_never_restart_it() {
    let rpc = MockRpc::start();
    let entry =
        solana_fixture("getSignaturesForAddress-keyapp-usdc-send-2023.json")["result"][0].clone();
    let sig = entry["signature"].as_str().unwrap().to_string();
    rpc.add_transaction(&sig, result_of(USDC_FIXTURE));
    rpc.push_signatures(USDC_TREASURY, vec![entry]);
    let unhealthy = solana_fixture("error-32005-node-unhealthy-solana-swift.json");
    rpc.fault(Fault::Body(unhealthy.clone()));
    rpc.fault(Fault::Body(unhealthy));
    // CONSTRUCTED: the fixtures hold no real 429 body; this one carries Retry-After: 1.
    rpc.fault(Fault::Status(429, Some(1)));
    rpc.null_once(&sig);
    let token = format!("usdc:{USDC_MINT}:6:{USDC_TREASURY}");
    let app = spawn_app(
        &Db::Sqlite,
        &[
            ("TIPOFF_TOKENS", &token),
            ("TIPOFF_SOLANA_RPC_URL", &rpc.url),
            ("TIPOFF_SOLANA_POLL_INTERVAL", "100ms"),
            ("TIPOFF_SOLANA_BACKOFF_BASE", "100ms"),
            ("TIPOFF_SOLANA_BACKOFF_CAP", "2s"),
        ],
    )
    .await;
    wait_for("the deposit", Duration::from_secs(15), || async {
        app.json("/admin/deposits").await["items"]
            .as_array()
            .unwrap()
            .len()
            == 1
    })
    .await;
    let status = app.json("/debug/status").await;
    let watcher = status["services"]
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["name"] == "watcher:usdc")
        .unwrap()
        .clone();
    assert_eq!(watcher["restarts"], 0, "RPC faults are absorbed: {watcher}");
    assert_eq!(
        watcher["errors"], 4,
        "-32005 twice, 429, result null: {watcher}"
    );
    assert!(watcher["last_error"]["message"]
        .as_str()
        .unwrap()
        .contains("not available yet"));
    let log = rpc.log();
    let after_429 = log
        .iter()
        .position(|(m, ..)| m == "getSignaturesForAddress")
        .unwrap()
        + 2;
    let waited = log[after_429 + 1].2.duration_since(log[after_429].2);
    assert!(
        waited >= Duration::from_millis(950),
        "Retry-After: 1 is honoured ({waited:?})"
    );
    crate::money::assert_audit(&app).await;
    app.stop().await;
}

/// CONSTRUCTED: `n` transfers of 1 + i base units into the USDC treasury at slots from `slot0`
/// up; answers their list entries newest first.
fn constructed_history(rpc: &MockRpc, tag: &str, slot0: u64, n: u64) -> Vec<Value> {
    (0..n)
        .map(|i| {
            let sig = constructed_signature(tag, i);
            rpc.add_transaction(
                &sig,
                constructed_transfer(&sig, slot0 + i, USDC_MINT, USDC_TREASURY, 0, 1 + i, None),
            );
            signature_entry(&sig, slot0 + i, None)
        })
        .rev()
        .collect()
}

fn test_client(rpc: &MockRpc) -> RpcClient {
    RpcClient::new(
        &rpc.url,
        Duration::from_secs(2),
        Duration::from_secs(5),
        "test",
    )
    .unwrap()
}

/// A signature whose `getTransaction` always answers null holds the cursor for
/// `quarantine_after` passes (credits before it still land), is then quarantined and the
/// deposits after it are credited; the admin lists it, asks for a retry, and once the node can
/// serve it the next pass credits it, once.
async fn an_unreadable_signature_is_quarantined_and_later_deposits_are_credited(db: Db) {
    let rpc = MockRpc::start();
    let app = spawn_app(&db, &[("TIPOFF_TOKENS", &tokens_setting())]).await;
    let client = test_client(&rpc);
    let settings = WatcherSettings {
        quarantine_after: 3,
        ..Default::default()
    };
    let token = usdc_token();
    // Oldest first: two readable, the pruned one, two readable.
    let before = constructed_history(&rpc, "B", 100, 2);
    let pruned = constructed_signature("P", 1);
    let after = constructed_history(&rpc, "A", 200, 2);
    let mut list = after.clone();
    list.push(signature_entry(&pruned, 150, Some("[9] lost")));
    list.extend(before);
    rpc.push_signatures(USDC_TREASURY, list);

    for attempt in 1..=2 {
        let err = run_pass(&token, &app.store, &client, &settings)
            .await
            .expect_err("the pruned signature holds the window");
        assert!(err.to_string().contains(&pruned), "{err}");
        let cursor = app.store.watcher_cursor("usdc").await.unwrap().unwrap();
        assert_eq!(
            cursor.slot, 101,
            "credited up to just before it (attempt {attempt})"
        );
    }
    let audit = crate::money::assert_audit(&app).await;
    assert_eq!(audit["tokens"][0]["deposits"], 1 + 2);
    let res = app
        .admin_get("/admin/deposits/quarantine?state=failing")
        .await;
    let body: Value = res.json().await.unwrap();
    assert_eq!(body["items"][0]["attempts"], 2, "{body}");

    let pass = run_pass(&token, &app.store, &client, &settings)
        .await
        .expect("the third attempt quarantines it and moves on");
    assert_eq!((pass.quarantined, pass.credited.unattributed), (1, 2));
    let cursor = app.store.watcher_cursor("usdc").await.unwrap().unwrap();
    assert_eq!(cursor.slot, 201);
    let res = app
        .admin_get("/admin/deposits/quarantine?state=quarantined")
        .await;
    let body: Value = res.json().await.unwrap();
    let row = body["items"][0].clone();
    assert_eq!(
        (
            row["signature"].as_str(),
            row["attempts"].as_i64(),
            row["memo"].as_str()
        ),
        (Some(pruned.as_str()), Some(3), Some("[9] lost")),
        "{body}"
    );
    assert!(
        row["last_error"].as_str().unwrap().contains("null"),
        "{row}"
    );
    let metrics = app.get("/metrics").await.text().await.unwrap();
    assert!(
        metrics.contains("tipoff_deposits_quarantined{token=\"usdc\"} 1"),
        "{metrics}"
    );
    // Later passes skip it: no more getTransaction for it.
    rpc.clear_log();
    let more = constructed_history(&rpc, "L", 300, 1);
    rpc.push_signatures(USDC_TREASURY, more);
    let pass = run_pass(&token, &app.store, &client, &settings)
        .await
        .unwrap();
    assert_eq!(pass.credited.unattributed, 1);
    assert!(calls(&rpc.log(), "getTransaction")
        .iter()
        .all(|(_, p, _)| p[0] != pruned.as_str()));

    // The node serves it again (an archive node); the admin asks for a retry.
    rpc.add_transaction(
        &pruned,
        constructed_transfer(&pruned, 150, USDC_MINT, USDC_TREASURY, 0, 1000, None),
    );
    let id = row["id"].as_i64().unwrap();
    let res = app
        .admin_post(&format!("/admin/deposits/quarantine/{id}/retry"))
        .await;
    assert_eq!(res.status(), 200);
    let res = app
        .admin_post(&format!("/admin/deposits/quarantine/{id}/retry"))
        .await;
    assert_eq!(res.status(), 409, "a retry is asked once");
    let pass = run_pass(&token, &app.store, &client, &settings)
        .await
        .unwrap();
    assert_eq!((pass.retried, pass.credited.amount), (1, 1000));
    let pass = run_pass(&token, &app.store, &client, &settings)
        .await
        .unwrap();
    assert_eq!((pass.retried, pass.credited.amount), (0, 0));
    let res = app
        .admin_get("/admin/deposits/quarantine?state=resolved")
        .await;
    let body: Value = res.json().await.unwrap();
    assert_eq!(body["items"][0]["resolution"], "credited", "{body}");
    let audit = crate::money::assert_audit(&app).await;
    // 1 + 2 before, 1 + 2 after, 1 later, 1000 recovered.
    assert_eq!(audit["tokens"][0]["deposits"], 3 + 3 + 1 + 1000);
    let res = app
        .admin_get("/admin/deposits/quarantine?state=bogus")
        .await;
    assert_eq!(res.status(), 400);
    app.stop().await;
}
both_backends!(an_unreadable_signature_is_quarantined_and_later_deposits_are_credited: quarantine_sqlite, quarantine_postgres);

/// A first run against a 5,000-signature history with a start signature reads only what is
/// after it (pages and transactions); with a start slot, only what is at or after the slot.
async fn a_first_run_begins_at_the_configured_start(db: Db) {
    let rpc = MockRpc::start();
    let dir = tempfile::tempdir().unwrap();
    let store = fresh_store(&db, dir.path()).await;
    let client = test_client(&rpc);
    let history = constructed_history(&rpc, "H", 1_000, 5_000);
    rpc.push_signatures(USDC_TREASURY, history.clone());
    // Newest first: index 30 is the 4,970th oldest; 30 signatures come after it.
    let start = history[30]["signature"].as_str().unwrap().to_string();
    let settings = WatcherSettings {
        start: Some(tipoff_actors::watcher::StartAt::Signature(start.clone())),
        ..Default::default()
    };
    let token = usdc_token();
    let pass = run_pass(&token, &store, &client, &settings).await.unwrap();
    assert_eq!((pass.signatures, pass.pages, pass.more), (30, 1, false));
    let log = rpc.log();
    assert_eq!(
        calls(&log, "getSignaturesForAddress")[0].1[1]["until"],
        start.as_str()
    );
    assert_eq!(calls(&log, "getTransaction").len(), 30);
    // The amounts of the 30 newest: 1 + i for i in 4,970..5,000.
    assert_eq!(pass.credited.amount, (4_971..=5_000).sum::<i64>());
    store.close().await;
    drop(store);

    // A slot start for another token on the same treasury (a cursor of its own), paging 500 at
    // a time: only slots ≥ 5,500 (500 signatures; the second page reaches below the start).
    let store = fresh_store(&db, dir.path()).await;
    let token = Token {
        name: "second".into(),
        ..usdc_token()
    };
    let settings = WatcherSettings {
        start: Some(tipoff_actors::watcher::StartAt::Slot(5_500)),
        page_limit: 500,
        ..Default::default()
    };
    let pass = run_pass(&token, &store, &client, &settings).await.unwrap();
    assert_eq!((pass.signatures, pass.pages), (500, 2));
    assert_eq!(pass.credited.amount, (4_501..=5_000).sum::<i64>());
    store.close().await;
    drop(store);

    // No start: the whole history, oldest first, one 1,000-signature window per pass (the
    // newer ones are dropped while paging back, so memory holds a window and a page).
    let store = fresh_store(&db, dir.path()).await;
    let token = Token {
        name: "third".into(),
        ..usdc_token()
    };
    let settings = WatcherSettings {
        page_limit: 1000,
        ..Default::default()
    };
    let first = run_pass(&token, &store, &client, &settings).await.unwrap();
    assert_eq!((first.signatures, first.more), (1000, true));
    assert_eq!(first.credited.amount, (1..=1000).sum::<i64>());
    let mut total = first.credited.amount;
    loop {
        let pass = run_pass(&token, &store, &client, &settings).await.unwrap();
        total += pass.credited.amount;
        if !pass.more {
            break;
        }
    }
    assert_eq!(total, (1..=5_000).sum::<i64>());
    let audit = store.audit().await.unwrap();
    assert!(audit.problems.is_empty(), "{:?}", audit.problems);
    store.close().await;
}
both_backends!(a_first_run_begins_at_the_configured_start: watcher_start_sqlite, watcher_start_postgres);
