//! Several `tipoff` processes (the built binary) on one PostgreSQL database: one leader at a
//! time, singletons only there, failover after SIGKILL, fencing after SIGSTOP, handover on
//! SIGTERM, recovery from a database outage, webhooks across a failover, and cross-replica
//! cache freshness. The mocks tell replicas apart by the `User-Agent` each request carries.

use std::collections::HashSet;
use std::time::{Duration, Instant};

use chrono::{NaiveDate, Utc};
use serde_json::{json, Value};

use crate::espn_mock::{generated_board, MockEspn, Reply};
use crate::helpers::*;
use crate::money::{USDC_MINT, USDC_TREASURY};
use crate::rpc_mock::*;
use crate::webhook_mock::{MockWebhook, WEBHOOK_SECRET};

const NBA: &str = "basketball/nba";

/// A PostgreSQL database for the test, or `None` (skipped loudly outside CI).
fn database(test: &str) -> Option<String> {
    tokio::runtime::Runtime::new()
        .unwrap()
        .block_on(postgres_db(test))
}

fn client() -> reqwest::blocking::Client {
    reqwest::blocking::Client::builder()
        .timeout(Duration::from_secs(3))
        .build()
        .unwrap()
}

/// Replicas started one after the other, each ready before the next starts.
struct Replicas {
    daemons: Vec<Option<Daemon>>,
    http: reqwest::blocking::Client,
}

impl Replicas {
    fn start(n: usize, env: &[(&str, &str)]) -> Replicas {
        let daemons = (0..n)
            .map(|_| {
                let d = Daemon::spawn(env);
                d.wait_notify("READY=1", Duration::from_secs(20));
                Some(d)
            })
            .collect();
        Replicas {
            daemons,
            http: client(),
        }
    }

    fn get(&self, i: usize) -> &Daemon {
        self.daemons[i].as_ref().expect("replica running")
    }

    fn alive(&self) -> Vec<usize> {
        (0..self.daemons.len())
            .filter(|&i| self.daemons[i].is_some())
            .collect()
    }

    /// `/debug/status` of replica `i`, if it answers.
    fn status(&self, i: usize) -> Option<Value> {
        let d = self.daemons[i].as_ref()?;
        self.http
            .get(d.url("/debug/status"))
            .bearer_auth(ADMIN_TOKEN)
            .send()
            .ok()?
            .json()
            .ok()
    }

    /// The replicas that say they lead.
    fn leaders(&self) -> Vec<usize> {
        self.alive()
            .into_iter()
            .filter(|&i| self.status(i).is_some_and(|s| s["leader"] == true))
            .collect()
    }

    /// Waits until exactly one replica leads; returns it.
    fn one_leader(&self, within: Duration) -> usize {
        let deadline = Instant::now() + within;
        loop {
            let leaders = self.leaders();
            if leaders.len() == 1 {
                return leaders[0];
            }
            assert!(
                Instant::now() < deadline,
                "no single leader within {within:?}: {leaders:?}\n{}",
                self.stderr()
            );
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    fn instance(&self, i: usize) -> String {
        self.status(i).expect("status")["instance_id"]
            .as_str()
            .unwrap()
            .to_string()
    }

    fn take(&mut self, i: usize) -> Daemon {
        self.daemons[i].take().expect("replica running")
    }

    fn stderr(&self) -> String {
        self.daemons
            .iter()
            .flatten()
            .map(|d| d.stderr())
            .collect::<Vec<_>>()
            .join("\n----\n")
    }
}

/// A metric of `d`, if `/metrics` answered with it.
fn metric(http: &reqwest::blocking::Client, d: &Daemon, name: &str) -> Option<f64> {
    let text = http.get(d.url("/metrics")).send().ok()?.text().ok()?;
    text.lines()
        .find_map(|l| l.strip_prefix(&format!("{name} ")))?
        .trim()
        .parse()
        .ok()
}

fn scalar(url: &str, sql: &str) -> i64 {
    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(async {
        let pool = sqlx::PgPool::connect(url).await.unwrap();
        let n: i64 = sqlx::query_scalar(sql).fetch_one(&pool).await.unwrap();
        pool.close().await;
        n
    })
}

#[test]
fn three_replicas_elect_one_leader_and_only_it_runs_the_singletons() {
    let Some(url) = database("three_replicas_elect_one_leader_and_only_it_runs_the_singletons")
    else {
        return;
    };
    let espn = MockEspn::start();
    let rpc = MockRpc::start();
    rpc.push_signatures(
        USDC_TREASURY,
        vec![signature_entry(&constructed_signature("R", 1), 10, None)],
    );
    let token = format!("usdc:{USDC_MINT}:6:{USDC_TREASURY}");
    let env = [
        ("TIPOFF_DATABASE_URL", url.as_str()),
        ("TIPOFF_LEADER_TTL", "2s"),
        ("TIPOFF_LEAGUES", "nba"),
        ("TIPOFF_ESPN_BASE_URL", espn.base_url.as_str()),
        ("TIPOFF_SCORE_IDLE_INTERVAL", "200ms"),
        ("TIPOFF_SCHEDULE_INTERVAL", "300ms"),
        ("TIPOFF_SCHEDULE_LOOKAHEAD_DAYS", "1"),
        ("TIPOFF_TOKENS", token.as_str()),
        ("TIPOFF_SOLANA_RPC_URL", rpc.url.as_str()),
        ("TIPOFF_SOLANA_POLL_INTERVAL", "100ms"),
    ];
    let r = Replicas::start(3, &env);
    let leader = r.one_leader(Duration::from_secs(5));
    let leader_id = r.instance(leader);

    // Sampled for 3 s: exactly one leader every time, always the same.
    let until = Instant::now() + Duration::from_secs(3);
    while Instant::now() < until {
        let statuses: Vec<Value> = (0..3).map(|i| r.status(i).expect("status")).collect();
        let leading: Vec<&Value> = statuses.iter().filter(|s| s["leader"] == true).collect();
        assert_eq!(leading.len(), 1, "{statuses:#?}");
        for s in &statuses {
            assert_eq!(s["leader_instance"], leader_id.as_str());
            let poller = service(s, "poller:nba").expect("poller:nba");
            if s["leader"] == true {
                assert_eq!(poller["state"], "running", "{s:#}");
                assert_eq!(service(s, "cleanup").expect("cleanup")["state"], "running");
            } else {
                assert_eq!(poller["state"], "standby", "{s:#}");
                assert_eq!(
                    poller["standby_reason"],
                    format!("follower (leader: {leader_id})")
                );
                assert_eq!(
                    service(s, "watcher:usdc").expect("watcher:usdc")["state"],
                    "standby"
                );
                assert_eq!(service(s, "cleanup").expect("cleanup")["state"], "standby");
                assert_eq!(service(s, "events").expect("events")["state"], "running");
                assert_eq!(
                    service(s, "listener").expect("listener")["state"],
                    "running"
                );
            }
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    let espn_agents = espn.agents();
    let rpc_agents = rpc.agents();
    assert_eq!(
        espn_agents.keys().collect::<Vec<_>>(),
        vec![&leader_id],
        "ESPN polled by the leader only: {espn_agents:?}"
    );
    assert!(espn_agents[&leader_id] >= 5, "{espn_agents:?}");
    assert_eq!(
        rpc_agents.keys().collect::<Vec<_>>(),
        vec![&leader_id],
        "the RPC polled by the leader only: {rpc_agents:?}"
    );
    // The role is in systemd's STATUS= line and in the metrics.
    let follower = (0..3).find(|&i| i != leader).unwrap();
    let http = client();
    assert_eq!(metric(&http, r.get(leader), "tipoff_leader"), Some(1.0));
    assert_eq!(metric(&http, r.get(follower), "tipoff_leader"), Some(0.0));
    r.get(leader)
        .wait_notify("STATUS=leader (epoch", Duration::from_secs(10));

    // A restart asked of a follower is carried out by the leader.
    let restarts = |i: usize| {
        service(&r.status(i).unwrap(), "poller:nba").expect("poller:nba")["restarts"].as_u64()
    };
    let before = restarts(leader);
    let res = http
        .post(r.get(follower).url("/admin/services/poller:nba/restart"))
        .bearer_auth(ADMIN_TOKEN)
        .send()
        .unwrap();
    assert_eq!(res.status(), 202);
    let body: Value = res.json().unwrap();
    assert_eq!(body["forwarded"], true, "{body}");
    assert_eq!(body["leader"], leader_id.as_str());
    let deadline = Instant::now() + Duration::from_secs(5);
    while restarts(leader) == before {
        assert!(Instant::now() < deadline, "the leader never restarted it");
        std::thread::sleep(Duration::from_millis(20));
    }
    assert_eq!(restarts(follower), Some(0), "the follower ran nothing");
}

#[test]
fn a_killed_leader_is_replaced_within_two_ttls_and_its_import_finishes_once() {
    let Some(url) =
        database("a_killed_leader_is_replaced_within_two_ttls_and_its_import_finishes_once")
    else {
        return;
    };
    let espn = MockEspn::start();
    let first: NaiveDate = "2024-01-01".parse().unwrap();
    let dates: Vec<NaiveDate> = first.iter_days().take(40).collect();
    for d in &dates {
        espn.serve(NBA, *d, generated_board(*d, 5));
    }
    espn.set_delay(Duration::from_millis(60));
    let ttl = Duration::from_secs(2);
    let env = [
        ("TIPOFF_DATABASE_URL", url.as_str()),
        ("TIPOFF_LEADER_TTL", "2s"),
        ("TIPOFF_LEAGUES", "nba"),
        ("TIPOFF_ESPN_BASE_URL", espn.base_url.as_str()),
        ("TIPOFF_IMPORT_CHECK_INTERVAL", "100ms"),
        ("TIPOFF_ESPN_CONCURRENCY", "2"),
        ("TIPOFF_SCHEDULE_LOOKAHEAD_DAYS", "0"),
    ];
    let mut r = Replicas::start(3, &env);
    let leader = r.one_leader(Duration::from_secs(5));
    let follower = (0..3).find(|&i| i != leader).unwrap();
    let http = client();

    // Asked of a follower: the job is durable, the leader's poller runs it.
    let res = http
        .post(r.get(follower).url("/admin/imports"))
        .bearer_auth(ADMIN_TOKEN)
        .json(&json!({"league": "nba", "from": "2024-01-01", "to": "2024-02-09"}))
        .send()
        .unwrap();
    assert_eq!(res.status(), 202);
    let id = res.json::<Value>().unwrap()["id"].as_i64().unwrap();
    let job = |r: &Replicas, i: usize| -> Value {
        http.get(r.get(i).url(&format!("/admin/imports/{id}")))
            .bearer_auth(ADMIN_TOKEN)
            .send()
            .unwrap()
            .json()
            .unwrap()
    };
    let deadline = Instant::now() + Duration::from_secs(20);
    while job(&r, follower)["dates_done"].as_i64().unwrap() < 8 {
        assert!(Instant::now() < deadline, "no progress:\n{}", r.stderr());
        std::thread::sleep(Duration::from_millis(20));
    }

    let mut old = r.take(leader);
    old.signal(libc::SIGKILL);
    let killed = Instant::now();
    old.wait_exit(Duration::from_secs(5));
    let new = r.one_leader(2 * ttl + Duration::from_secs(1));
    // Its singletons tick within 2 × TTL of the kill.
    loop {
        let s = r.status(new).unwrap();
        let poller = service(&s, "poller:nba").expect("poller:nba");
        if poller["state"] == "running" && poller["ticks"].as_u64().unwrap() > 0 {
            break;
        }
        assert!(
            killed.elapsed() < 2 * ttl,
            "the new leader's poller did not tick within 2 × TTL: {s:#}"
        );
        std::thread::sleep(Duration::from_millis(10));
    }
    let failover = killed.elapsed();
    assert!(failover <= 2 * ttl, "failover took {failover:?}");

    let deadline = Instant::now() + Duration::from_secs(30);
    let done = loop {
        let j = job(&r, new);
        if j["state"] != "running" && j["state"] != "queued" {
            break j;
        }
        assert!(Instant::now() < deadline, "import did not finish: {j}");
        std::thread::sleep(Duration::from_millis(50));
    };
    assert_eq!(done["state"], "succeeded", "{done}");
    assert_eq!(done["dates_done"], 40);
    assert_eq!(
        done["games_upserted"], 200,
        "each date counted once: {done}"
    );
    assert_eq!(scalar(&url, "SELECT COUNT(*) FROM games"), 200);
    assert_eq!(scalar(&url, "SELECT COUNT(*) FROM markets"), 200);
    assert_eq!(
        scalar(
            &url,
            "SELECT COUNT(*) FROM outbox_events WHERE event_type = 'market.created'"
        ),
        200,
        "one market.created per market"
    );
}

#[test]
fn a_leader_paused_past_its_lease_commits_nothing_when_it_wakes() {
    let Some(url) = database("a_leader_paused_past_its_lease_commits_nothing_when_it_wakes") else {
        return;
    };
    let espn = MockEspn::start();
    let env = [
        ("TIPOFF_DATABASE_URL", url.as_str()),
        ("TIPOFF_LEADER_TTL", "2s"),
        ("TIPOFF_LEAGUES", "nba"),
        ("TIPOFF_ESPN_BASE_URL", espn.base_url.as_str()),
        ("TIPOFF_SCHEDULE_LOOKAHEAD_DAYS", "0"),
        ("TIPOFF_SCORE_IDLE_INTERVAL", "300ms"),
        ("TIPOFF_HANG_TIMEOUT", "60s"),
    ];
    // The first replica leads alone; then every board answers slowly, so its next pass has a
    // write in flight when it is paused.
    let mut r = Replicas::start(1, &env);
    let leader = r.one_leader(Duration::from_secs(5));
    let today = tipoff_actors::poller::espn_today(Utc::now());
    let slow = generated_board(today, 3);
    // Every answer is slow, so whichever request is in flight at the pause still is after it.
    espn.script(
        NBA,
        today,
        vec![Reply::ok(slow).delayed(Duration::from_millis(1500))],
    );
    let before = espn.hits(NBA, today);
    let deadline = Instant::now() + Duration::from_secs(10);
    while espn.hits(NBA, today) == before {
        assert!(Instant::now() < deadline, "no pass reached the board");
        std::thread::sleep(Duration::from_millis(5));
    }
    let old = r.take(leader);
    old.signal(libc::SIGSTOP);
    let old_epoch = {
        r.daemons.push(Some(Daemon::spawn(&env)));
        let new = r.daemons.len() - 1;
        r.get(new).wait_notify("READY=1", Duration::from_secs(20));
        let deadline = Instant::now() + Duration::from_secs(15);
        let s = loop {
            let s = r.status(new).unwrap();
            if s["leader"] == true {
                break s;
            }
            assert!(
                Instant::now() < deadline,
                "no takeover from the paused leader: {s:#}\n{}",
                r.stderr()
            );
            std::thread::sleep(Duration::from_millis(20));
        };
        s["epoch"].as_i64().unwrap() - 1
    };
    // Past the delayed answer, then wake the old leader up: its pass finishes and tries to
    // commit the board under the old epoch.
    std::thread::sleep(Duration::from_millis(1000));
    old.signal(libc::SIGCONT);
    let http = client();
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let fenced = metric(&http, &old, "tipoff_fenced_writes_total").unwrap_or(0.0);
        let status: Value = http
            .get(old.url("/debug/status"))
            .bearer_auth(ADMIN_TOKEN)
            .send()
            .unwrap()
            .json()
            .unwrap();
        // The write in flight was rejected: by the fence at its commit, or, when the pause
        // fell inside its transaction, by the server ending the idle transaction's session.
        let poller_error = service(&status, "poller:nba")
            .and_then(|p| p["last_error"]["message"].as_str().map(str::to_string))
            .unwrap_or_default();
        let rejected = fenced >= 1.0 || poller_error.contains("idle-in-transaction");
        // A follower now, that knows the new epoch (from its next renewal attempt).
        if rejected && status["leader"] == false && status["epoch"].as_i64().unwrap() > old_epoch {
            let poller = service(&status, "poller:nba").expect("poller:nba");
            assert_eq!(poller["state"], "standby", "{status:#}");
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the woken leader's write was not rejected (fenced writes {fenced}): {status:#}\n{}",
            old.stderr()
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    assert!(
        old.stderr().contains("fenced") || old.stderr().contains("idle-in-transaction"),
        "the rejected write is logged:\n{}",
        old.stderr()
    );
    // Everything in the database was written under the new epoch (its passes are slow too):
    // the three games exist once, with one market each, and the ledger holds.
    let deadline = Instant::now() + Duration::from_secs(10);
    while scalar(&url, "SELECT COUNT(*) FROM games") < 3 {
        assert!(
            Instant::now() < deadline,
            "the new leader never wrote the board"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    assert_eq!(scalar(&url, "SELECT COUNT(*) FROM games"), 3);
    assert_eq!(scalar(&url, "SELECT COUNT(*) FROM markets"), 3);
    crate::crash::audit(&http, r.get(1));
    drop(old);
}

#[test]
fn sigterm_on_the_leader_hands_over_in_under_a_second() {
    let Some(url) = database("sigterm_on_the_leader_hands_over_in_under_a_second") else {
        return;
    };
    let env = [
        ("TIPOFF_DATABASE_URL", url.as_str()),
        // Long enough that a takeover by expiry would be far slower than a handover.
        ("TIPOFF_LEADER_TTL", "10s"),
        ("TIPOFF_CLEANUP_INTERVAL", "200ms"),
    ];
    let mut r = Replicas::start(2, &env);
    let leader = r.one_leader(Duration::from_secs(5));
    let follower = 1 - leader;
    let mut old = r.take(leader);
    old.signal(libc::SIGTERM);
    let sent = Instant::now();
    loop {
        let s = r.status(follower).unwrap();
        if s["leader"] == true
            && service(&s, "cleanup").expect("cleanup")["ticks"]
                .as_u64()
                .unwrap()
                > 0
        {
            break;
        }
        assert!(
            sent.elapsed() < Duration::from_secs(1),
            "no handover within 1 s: {s:#}\n{}",
            old.stderr()
        );
        std::thread::sleep(Duration::from_millis(5));
    }
    let handover = sent.elapsed();
    assert_eq!(old.wait_exit(Duration::from_secs(10)).0, Some(0));
    eprintln!("handover in {handover:?}");

    // And back, without exiting: step down on request.
    r.daemons.push(Some(Daemon::spawn(&env)));
    r.get(2).wait_notify("READY=1", Duration::from_secs(20));
    let http = client();
    let res = http
        .post(r.get(2).url("/admin/leader/step-down"))
        .bearer_auth(ADMIN_TOKEN)
        .send()
        .unwrap();
    assert_eq!(res.status(), 409, "a follower has nothing to give up");
    let res = http
        .post(r.get(follower).url("/admin/leader/step-down"))
        .bearer_auth(ADMIN_TOKEN)
        .send()
        .unwrap();
    assert_eq!(res.status(), 200);
    let body: Value = res.json().unwrap();
    assert_eq!(body["released"], true, "{body}");
    let sent = Instant::now();
    loop {
        if r.status(2).unwrap()["leader"] == true {
            break;
        }
        assert!(sent.elapsed() < Duration::from_secs(1), "no takeover");
        std::thread::sleep(Duration::from_millis(5));
    }
    assert_eq!(r.status(follower).unwrap()["leader"], false);
}

#[test]
fn replicas_recover_by_themselves_from_a_database_outage_with_one_leader() {
    let Some(url) =
        database("replicas_recover_by_themselves_from_a_database_outage_with_one_leader")
    else {
        return;
    };
    // The server is shared with other tests running in parallel, so the outage is a proxy
    // in front of it that drops every connection and refuses new ones, as a restart does.
    let rt = tokio::runtime::Runtime::new().unwrap();
    let opts: sqlx::postgres::PgConnectOptions = url.parse().unwrap();
    let upstream = format!("{}:{}", opts.get_host(), opts.get_port());
    let mut proxy = rt.block_on(Proxy::start(&upstream));
    let proxied = url.replacen(&upstream, &format!("127.0.0.1:{}", proxy.port), 1);
    let hook = MockWebhook::start();
    let env = [
        ("TIPOFF_DATABASE_URL", proxied.as_str()),
        ("TIPOFF_LEADER_TTL", "2s"),
        ("TIPOFF_DB_PING_INTERVAL", "200ms"),
        ("TIPOFF_DB_STARTUP_TIMEOUT", "2s"),
        ("TIPOFF_WEBHOOK_URLS", hook.url.as_str()),
        ("TIPOFF_WEBHOOK_SECRET", WEBHOOK_SECRET),
        ("TIPOFF_WEBHOOK_BACKOFF_BASE", "200ms"),
        ("TIPOFF_WEBHOOK_BACKOFF_CAP", "1s"),
        ("TIPOFF_OUTBOX_INTERVAL", "100ms"),
        ("TIPOFF_REGISTRATION", "true"),
    ];
    let r = Replicas::start(3, &env);
    r.one_leader(Duration::from_secs(5));
    let http = client();
    let register = |i: usize| {
        http.post(r.get(i).url("/api/v1/users"))
            .json(&json!({}))
            .send()
            .map(|res| res.status().as_u16())
            .unwrap_or(0)
    };
    for i in 0..6 {
        assert_eq!(register(i % 3), 201);
    }

    proxy.cut();
    let down = Instant::now();
    // Every replica notices: not ready, and no one leads once the local bounds ran out.
    let deadline = down + Duration::from_secs(8);
    loop {
        let leaders = r.leaders();
        let ready: Vec<u16> = (0..3)
            .map(|i| {
                http.get(r.get(i).url("/ready"))
                    .send()
                    .map(|res| res.status().as_u16())
                    .unwrap_or(0)
            })
            .collect();
        if leaders.is_empty() && ready.iter().all(|&s| s == 503) {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "leaders {leaders:?}, ready {ready:?}"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    std::thread::sleep(Duration::from_secs(1));
    rt.block_on(proxy.restore());

    let leader = r.one_leader(Duration::from_secs(15));
    for i in 0..3 {
        r.get(i)
            .wait_notify("database: ok", Duration::from_secs(15));
    }
    for i in 0..6 {
        assert_eq!(register(i % 3), 201, "registration after the outage");
    }
    // Nothing lost: all twelve registrations reach the receiver.
    rt.block_on(hook.wait_accepted(12, Duration::from_secs(20)));
    // Still exactly one leader a while later.
    std::thread::sleep(Duration::from_secs(1));
    assert_eq!(r.leaders(), vec![leader]);
    crate::crash::audit(&http, r.get(leader));
}

#[test]
fn webhooks_survive_a_leader_kill_with_duplicates_only_for_the_delivery_in_flight() {
    let Some(url) =
        database("webhooks_survive_a_leader_kill_with_duplicates_only_for_the_delivery_in_flight")
    else {
        return;
    };
    let hook = MockWebhook::start();
    let env = [
        ("TIPOFF_DATABASE_URL", url.as_str()),
        ("TIPOFF_LEADER_TTL", "2s"),
        ("TIPOFF_WEBHOOK_URLS", hook.url.as_str()),
        ("TIPOFF_WEBHOOK_SECRET", WEBHOOK_SECRET),
        ("TIPOFF_OUTBOX_INTERVAL", "50ms"),
        ("TIPOFF_REGISTRATION", "true"),
    ];
    let mut r = Replicas::start(3, &env);
    let leader = r.one_leader(Duration::from_secs(5));
    let followers: Vec<usize> = (0..3).filter(|&i| i != leader).collect();
    let http = client();
    let mut registered = 0;
    for n in 0..200 {
        // Registrations go to the followers (the leader dies half way).
        let at = followers[n % 2];
        let res = http
            .post(r.get(at).url("/api/v1/users"))
            .json(&json!({}))
            .send()
            .unwrap();
        assert_eq!(res.status(), 201);
        registered += 1;
        if n == 100 {
            let mut old = r.take(leader);
            old.signal(libc::SIGKILL);
            old.wait_exit(Duration::from_secs(5));
        }
    }
    let accepted = tokio::runtime::Runtime::new()
        .unwrap()
        .block_on(hook.wait_accepted(registered, Duration::from_secs(30)));
    let ids: HashSet<i64> = accepted.iter().map(|d| d.id).collect();
    assert_eq!(ids.len(), registered, "every event delivered");
    let duplicates = accepted.len() - ids.len();
    assert!(
        duplicates <= 1,
        "only the delivery in flight at the kill may repeat; {duplicates} did"
    );
    assert!(accepted.iter().all(|d| d.verifies(WEBHOOK_SECRET)));
    let senders: HashSet<&str> = accepted.iter().map(|d| d.instance.as_str()).collect();
    assert_eq!(senders.len(), 2, "the old leader, then the new one");
    let new = r.one_leader(Duration::from_secs(5));
    crate::crash::audit(&http, r.get(new));
}

#[test]
fn a_follower_serves_a_settlement_made_on_the_leader_within_100_ms() {
    let _alone = exclusive();
    let Some(url) = database("a_follower_serves_a_settlement_made_on_the_leader_within_100_ms")
    else {
        return;
    };
    let espn = MockEspn::start();
    let today = tipoff_actors::poller::espn_today(Utc::now());
    espn.serve(NBA, today, crate::crash::board(0));
    let env = [
        ("TIPOFF_DATABASE_URL", url.as_str()),
        ("TIPOFF_LEADER_TTL", "2s"),
        ("TIPOFF_LEAGUES", "nba"),
        ("TIPOFF_ESPN_BASE_URL", espn.base_url.as_str()),
        ("TIPOFF_SCHEDULE_LOOKAHEAD_DAYS", "0"),
        ("TIPOFF_SCORE_IDLE_INTERVAL", "300ms"),
        ("TIPOFF_SCORE_LIVE_INTERVAL", "300ms"),
        // Long enough that only the NOTIFY path can explain a fresh answer.
        ("TIPOFF_READ_CACHE_TTL", "30s"),
    ];
    let r = Replicas::start(2, &env);
    let leader = r.one_leader(Duration::from_secs(5));
    let follower = 1 - leader;
    let http = client();
    let list = |i: usize| -> Value {
        http.get(r.get(i).url("/api/v1/markets?league=nba&limit=200"))
            .send()
            .unwrap()
            .json()
            .unwrap()
    };
    let deadline = Instant::now() + Duration::from_secs(10);
    while list(follower)["items"].as_array().unwrap().len() < 15 {
        assert!(Instant::now() < deadline, "markets never appeared");
        std::thread::sleep(Duration::from_millis(50));
    }
    // Cached on the follower now, with no settled market.
    let settled = |v: &Value| -> Vec<i64> {
        v["items"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|m| m["state"] == "settled")
            .map(|m| m["id"].as_i64().unwrap())
            .collect()
    };
    assert!(settled(&list(follower)).is_empty());

    espn.serve(NBA, today, crate::crash::board(1));
    let rt = tokio::runtime::Runtime::new().unwrap();
    let pool = rt.block_on(sqlx::PgPool::connect(&url)).unwrap();
    // The lag is counted from the first moment the database shows the settlement committed
    // (not from the pass's `settled_at`, stamped before the rest of its board and its commit,
    // whose length depends on how busy the machine is).
    let committed = || -> bool {
        rt.block_on(
            sqlx::query_scalar::<_, i64>("SELECT count(*) FROM markets WHERE state = 'settled'")
                .fetch_one(&pool),
        )
        .unwrap()
            > 0
    };
    let deadline = Instant::now() + Duration::from_secs(10);
    let mut committed_at = None;
    let seen_at = loop {
        if committed_at.is_none() && committed() {
            committed_at = Some(Instant::now());
        }
        if !settled(&list(follower)).is_empty() {
            break Instant::now();
        }
        assert!(Instant::now() < deadline, "the follower never saw it");
        std::thread::sleep(Duration::from_millis(2));
    };
    // Seen by the follower in the same step as by the database: no lag to count.
    let lag = committed_at.map_or(0, |at| seen_at.duration_since(at).as_millis());
    assert!(
        lag <= 100,
        "the follower served the settlement {lag} ms after the database showed it committed"
    );
}
