//! What hostile or careless clients meet: dashboard sessions kept server-side and revoked on
//! sign-out, failed admin authentication limited per address, live-stream caps and resume
//! bounds, unknown query parameters refused, a read cache bounded in bytes, `/metrics` that
//! reads the database at most once per interval, secrets that never reach output, and a guard
//! on every route of the table.

use std::time::Duration;

use serde_json::Value;

use crate::helpers::*;

fn no_redirect_from(address: &str) -> reqwest::Client {
    reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .local_address(address.parse::<std::net::IpAddr>().ok())
        .build()
        .unwrap()
}

/// Signs in from the default address; answers the `name=value` of the session cookie.
async fn sign_in(app: &TestApp) -> String {
    let res = no_redirect_from("127.0.0.1")
        .post(format!("{}/admin/ui/login", app.address))
        .form(&[("token", ADMIN_TOKEN)])
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 303);
    let cookie = res.headers()["set-cookie"].to_str().unwrap().to_string();
    cookie.split(';').next().unwrap().to_string()
}

async fn sessions_live_in_the_database_and_end_on_sign_out(db: Db) {
    let app = spawn_app(&db, &[]).await;
    let session = sign_in(&app).await;
    let (name, id) = session.split_once('=').unwrap();
    assert_eq!(name, "tipoff_session");
    assert!(
        id.len() == 64 && id.bytes().all(|b| b.is_ascii_hexdigit()),
        "a random id: {id}"
    );
    assert!(
        !session.contains(ADMIN_TOKEN),
        "the cookie is never the token"
    );
    let client = no_redirect_from("127.0.0.1");
    let page = |client: &reqwest::Client| {
        client
            .get(format!("{}/admin/ui", app.address))
            .header("cookie", &session)
            .send()
    };
    assert_eq!(page(&client).await.unwrap().status(), 200);

    // On PostgreSQL another replica knows the session too.
    if let Db::Postgres(_) = &db {
        let other = spawn_app(&db, &[]).await;
        let res = client
            .get(format!("{}/debug/status", other.address))
            .header("cookie", &session)
            .send()
            .await
            .unwrap();
        assert_eq!(res.status(), 200, "the session works on another replica");
        other.stop().await;
    }

    // Sign-out is a write: the dashboard's header is required (a cross-site form cannot).
    let logout = format!("{}/admin/ui/logout", app.address);
    let res = client
        .post(&logout)
        .header("cookie", &session)
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 403);
    assert_eq!(
        page(&client).await.unwrap().status(),
        200,
        "still signed in"
    );
    let res = client
        .post(&logout)
        .header("cookie", &session)
        .header("x-tipoff-ui", "1")
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 204);
    assert!(res.headers()["set-cookie"]
        .to_str()
        .unwrap()
        .contains("Max-Age=0"));
    // The old cookie, replayed, is no session any more.
    assert_eq!(page(&client).await.unwrap().status(), 401);
    let res = client
        .get(format!("{}/debug/status", app.address))
        .header("cookie", &session)
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 401);
    app.stop().await;
}

both_backends!(sessions_live_in_the_database_and_end_on_sign_out:
    sessions_end_on_sign_out_on_sqlite, sessions_end_on_sign_out_on_postgres);

async fn a_session_belongs_to_the_token_it_was_opened_with(db: Db) {
    let dir = tempfile::tempdir().unwrap();
    let store = fresh_store(&db, dir.path()).await;
    let now = chrono::Utc::now();
    let later = now + chrono::Duration::hours(1);
    store
        .open_session("a", "token-one", now, later)
        .await
        .unwrap();
    assert!(store.session_active("a", "token-one", now).await.unwrap());
    assert!(
        !store.session_active("a", "token-two", now).await.unwrap(),
        "a changed admin token revokes it"
    );
    assert!(
        !store.session_active("a", "token-one", later).await.unwrap(),
        "expired"
    );
    // Opening a session under the new token deletes the old token's.
    store
        .open_session("b", "token-two", now, later)
        .await
        .unwrap();
    assert!(!store.close_session("a").await.unwrap(), "already gone");
    assert!(store.close_session("b").await.unwrap());
    assert!(!store.session_active("b", "token-two", now).await.unwrap());
}

both_backends!(a_session_belongs_to_the_token_it_was_opened_with:
    session_token_on_sqlite, session_token_on_postgres);

/// Replicas share the sessions table; a replica started with another admin token does not
/// honour sessions opened under the old one.
#[actix_rt::test]
async fn a_changed_admin_token_signs_every_session_out() {
    let Some(url) = postgres_db("a_changed_admin_token_signs_every_session_out").await else {
        return;
    };
    let db = Db::Postgres(url);
    let app = spawn_app(&db, &[]).await;
    let session = sign_in(&app).await;
    app.stop().await;
    let app = spawn_app(
        &db,
        &[("TIPOFF_ADMIN_TOKEN", "another-admin-token-0123456789")],
    )
    .await;
    let res = app
        .client
        .get(format!("{}/debug/status", app.address))
        .header("cookie", &session)
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 401, "opened under the old token");
    app.stop().await;
}

#[actix_rt::test]
async fn failed_admin_authentication_is_limited_per_address() {
    let app = spawn_app(&Db::Sqlite, &[("TIPOFF_AUTH_FAILURE_LIMIT", "3")]).await;
    let from = |ip: &str| no_redirect_from(ip);
    let status = |client: reqwest::Client, token: &'static str| {
        let url = format!("{}/debug/status", app.address);
        async move { client.get(url).bearer_auth(token).send().await.unwrap() }
    };
    for _ in 0..3 {
        assert_eq!(status(from("127.0.0.1"), "wrong-token").await.status(), 401);
    }
    let res = status(from("127.0.0.1"), "wrong-token").await;
    assert_eq!(res.status(), 429);
    let wait: u64 = res.headers()["retry-after"]
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    assert!((1..=300).contains(&wait), "Retry-After {wait}");
    let body: Value = res.json().await.unwrap();
    assert_eq!(body["error"]["code"], "too_many_requests");
    // The right token is refused too while blocked: guessing gains nothing.
    assert_eq!(status(from("127.0.0.1"), ADMIN_TOKEN).await.status(), 429);
    // The sign-in form from that address as well.
    let res = from("127.0.0.1")
        .post(format!("{}/admin/ui/login", app.address))
        .form(&[("token", ADMIN_TOKEN)])
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 429);
    assert!(res.headers().contains_key("retry-after"));
    // Another address is not affected.
    assert_eq!(status(from("127.0.0.2"), ADMIN_TOKEN).await.status(), 200);
    // Wrong sign-in forms count as well.
    for _ in 0..3 {
        let res = from("127.0.0.3")
            .post(format!("{}/admin/ui/login", app.address))
            .form(&[("token", "wrong")])
            .send()
            .await
            .unwrap();
        assert_eq!(res.status(), 401);
    }
    assert_eq!(status(from("127.0.0.3"), ADMIN_TOKEN).await.status(), 429);
    app.stop().await;
}

/// Opens a live stream from `ip`; the response is kept open by the caller.
async fn open_stream(app: &TestApp, ip: &str, query: &str) -> reqwest::Response {
    no_redirect_from(ip)
        .get(format!("{}/api/v1/events{query}", app.address))
        .send()
        .await
        .unwrap()
}

/// The first `n` SSE frames of `res` (heartbeats skipped), within 5 s.
async fn frames(res: &mut reqwest::Response, n: usize) -> Vec<String> {
    let mut text = String::new();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
    loop {
        let found: Vec<String> = text
            .split("\n\n")
            .filter(|f| !f.trim().is_empty() && !f.starts_with(':'))
            .map(str::to_string)
            .collect();
        if text.ends_with("\n\n") && found.len() >= n {
            return found;
        }
        let chunk = tokio::time::timeout_at(deadline, res.chunk())
            .await
            .expect("frames within 5 s")
            .unwrap()
            .expect("the stream goes on");
        text.push_str(&String::from_utf8_lossy(&chunk));
    }
}

#[actix_rt::test]
async fn live_streams_are_capped_globally_and_per_address() {
    let app = spawn_app(
        &Db::Sqlite,
        &[
            ("TIPOFF_SSE_MAX_STREAMS", "3"),
            ("TIPOFF_SSE_MAX_STREAMS_PER_CLIENT", "2"),
            ("TIPOFF_SSE_HEARTBEAT", "100ms"),
        ],
    )
    .await;
    let a1 = open_stream(&app, "127.0.0.1", "").await;
    let a2 = open_stream(&app, "127.0.0.1", "").await;
    assert_eq!((a1.status().as_u16(), a2.status().as_u16()), (200, 200));
    let res = open_stream(&app, "127.0.0.1", "").await;
    assert_eq!(res.status(), 503, "the third from one address");
    let body: Value = res.json().await.unwrap();
    assert!(
        body["error"]["message"]
            .as_str()
            .unwrap()
            .contains("TIPOFF_SSE_MAX_STREAMS_PER_CLIENT"),
        "{body}"
    );
    let b1 = open_stream(&app, "127.0.0.2", "").await;
    assert_eq!(b1.status(), 200, "another address may");
    let res = open_stream(&app, "127.0.0.3", "").await;
    assert_eq!(res.status(), 503, "over the global cap");
    let body: Value = res.json().await.unwrap();
    assert!(body["error"]["message"]
        .as_str()
        .unwrap()
        .contains("TIPOFF_SSE_MAX_STREAMS"));
    // A closed stream gives its place back (noticed at its next heartbeat).
    drop(a1);
    let deadline = std::time::Instant::now() + Duration::from_secs(5);
    loop {
        let res = open_stream(&app, "127.0.0.1", "").await;
        if res.status() == 200 {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "the place never came back"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    drop((a2, b1));
    app.stop().await;
}

#[actix_rt::test]
async fn a_last_event_id_out_of_range_is_a_400_or_a_reset() {
    let app = spawn_app(&Db::Sqlite, &[]).await;
    for bad in ["-1", "9223372036854775808", "1e3", "abc"] {
        let res = app
            .client
            .get(format!("{}/api/v1/events", app.address))
            .header("last-event-id", bad)
            .send()
            .await
            .unwrap();
        assert_eq!(res.status(), 400, "Last-Event-ID {bad}");
        let body: Value = res.json().await.unwrap();
        assert!(body["error"]["message"]
            .as_str()
            .unwrap()
            .contains("Last-Event-ID"));
    }
    // One event, then resume from far ahead of it: a reset, never silence or an overflow.
    app.client
        .post(format!("{}/api/v1/users", app.address))
        .json(&serde_json::json!({"name": "x"}))
        .send()
        .await
        .unwrap();
    for ahead in ["9223372036854775807", "1000"] {
        let mut res = app
            .client
            .get(format!("{}/api/v1/events", app.address))
            .header("last-event-id", ahead)
            .send()
            .await
            .unwrap();
        assert_eq!(res.status(), 200);
        let got = frames(&mut res, 2).await;
        assert!(got[0].starts_with("retry:"), "{got:?}");
        assert!(got[1].contains("event: reset"), "{got:?}");
        assert!(got[1].contains("ahead of the newest"), "{got:?}");
    }
    app.stop().await;
}

async fn a_resume_is_filtered_by_the_database(db: Db) {
    let dir = tempfile::tempdir().unwrap();
    let store = fresh_store(&db, dir.path()).await;
    let now = chrono::Utc::now();
    for name in ["a", "b", "c"] {
        store
            .create_user(name, &format!("hash-{name}"), &format!("code-{name}"), now)
            .await
            .unwrap();
    }
    let all = store.events_after(0, 100).await.unwrap();
    assert_eq!(all.len(), 3);
    let types = vec!["user.registered".to_string()];
    let got = store.events_matching(0, &types, None, 100).await.unwrap();
    assert_eq!(got.len(), 3);
    let got = store
        .events_matching(all[0].id, &types, None, 1)
        .await
        .unwrap();
    assert_eq!(got.iter().map(|e| e.id).collect::<Vec<_>>(), [all[1].id]);
    let other = vec!["market.settled".to_string()];
    assert!(store
        .events_matching(0, &other, None, 100)
        .await
        .unwrap()
        .is_empty());
    assert!(
        store
            .events_matching(0, &types, Some("nba"), 100)
            .await
            .unwrap()
            .is_empty(),
        "user events have no league"
    );
}

both_backends!(a_resume_is_filtered_by_the_database:
    resume_filter_on_sqlite, resume_filter_on_postgres);

#[actix_rt::test]
async fn unknown_query_parameters_are_a_400_naming_them() {
    let app = spawn_app(&Db::Sqlite, &[]).await;
    for (path, name) in [
        ("/api/v1/games?leage=nba", "leage"),
        ("/api/v1/markets?date=2024-01-29", "date"),
        ("/api/v1/games?limit=5&_=123", "_"),
        ("/health?verbose=1", "verbose"),
    ] {
        let res = app.get(path).await;
        assert_eq!(res.status(), 400, "{path}");
        let body: Value = res.json().await.unwrap();
        let message = body["error"]["message"].as_str().unwrap();
        assert!(message.contains(&format!("`{name}`")), "{path}: {message}");
    }
    assert_eq!(
        app.get("/api/v1/games?league=nba&limit=5").await.status(),
        200
    );
    app.stop().await;
}

/// The value of one sample of `/metrics`.
fn sample(text: &str, series: &str) -> f64 {
    text.lines()
        .find_map(|l| l.strip_prefix(series).and_then(|v| v.trim().parse().ok()))
        .unwrap_or_else(|| panic!("{series} not in /metrics"))
}

/// Run on the daemon binary: the cache's write generation is per process, and the other
/// tests of this binary write games.
#[test]
fn the_read_cache_keys_on_meaning_and_stays_within_its_bytes() {
    let d = Daemon::spawn(&[
        ("TIPOFF_READ_CACHE_TTL", "60s"),
        ("TIPOFF_READ_CACHE_MAX_BYTES", "65536"),
    ]);
    d.wait_notify("READY=1", Duration::from_secs(15));
    let client = reqwest::blocking::Client::new();
    let get = |path: &str| client.get(d.url(path)).send().unwrap();
    let metrics = || get("/metrics").text().unwrap();
    // Spellings of one request share an entry.
    for path in [
        "/api/v1/games?league=NBA&limit=050",
        "/api/v1/games?limit=50&league=nba",
        "/api/v1/games?league=nba&limit=50&cursor=",
    ] {
        assert_eq!(get(path).status(), 200, "{path}");
    }
    let text = metrics();
    assert_eq!(sample(&text, "tipoff_read_cache{figure=\"entries\"}"), 1.0);
    assert_eq!(
        sample(&text, "tipoff_read_cache_events_total{event=\"hit\"}"),
        2.0
    );

    // 1,025 distinct (valid) junk pages, the hot one read between them.
    let hot = "/api/v1/markets?limit=10";
    get(hot);
    for i in 0..1025 {
        let res = get(&format!("/api/v1/markets?cursor={}", 1_000_000 + i));
        assert_eq!(res.status(), 200);
        get(hot);
    }
    // And 1,025 with junk parameters: refused, never cached.
    for i in 0..1025 {
        assert_eq!(get(&format!("/api/v1/markets?x{i}=1")).status(), 400);
    }
    let text = metrics();
    let bytes = sample(&text, "tipoff_read_cache{figure=\"bytes\"}");
    assert!(bytes <= 65536.0, "{bytes} bytes");
    assert!(
        sample(&text, "tipoff_read_cache_events_total{event=\"evicted\"}") > 500.0,
        "the junk pages were evicted"
    );
    // Every read of the hot page after the first was a hit: 2 + 1,025.
    assert_eq!(
        sample(&text, "tipoff_read_cache_events_total{event=\"hit\"}"),
        2.0 + 1025.0,
        "the hot entry was never evicted"
    );
}

#[actix_rt::test]
async fn metrics_read_the_database_at_most_once_per_interval() {
    let app = spawn_app(&Db::Sqlite, &[("TIPOFF_METRICS_DB_INTERVAL", "30s")]).await;
    let scrapes = (0..25).map(|_| async { app.get("/metrics").await.text().await.unwrap() });
    let all = futures_util::future::join_all(scrapes).await;
    let text = app.get("/metrics").await.text().await.unwrap();
    assert_eq!(
        sample(&text, "tipoff_metrics_db_refreshes_total"),
        1.0,
        "26 scrapes, one database read"
    );
    assert!(all.iter().all(|t| t.contains("tipoff_outbox_events")));
    app.stop().await;
}

#[test]
fn secrets_in_urls_never_reach_check_config_logs_or_status() {
    let secrets = [
        "userinfo-secret-1",
        "api-key-secret-2",
        "password-secret-3",
        "token-secret-4",
        "apikey-secret-5",
        "key-secret-6",
        "secret-secret-7",
    ];
    let rpc = format!("http://127.0.0.1:1/rpc?api-key={}", secrets[1]);
    let embeddings = format!(
        "http://user:{}@127.0.0.1:1/v1?password={}&token={}",
        secrets[0], secrets[2], secrets[3]
    );
    let webhooks = format!(
        "http://127.0.0.1:1/hook?apikey={}&key={},http://127.0.0.1:1/other?secret={}",
        secrets[4], secrets[5], secrets[6]
    );
    let env = [
        ("TIPOFF_SOLANA_RPC_URL", rpc.as_str()),
        ("TIPOFF_EMBEDDINGS_URL", embeddings.as_str()),
        ("TIPOFF_EMBEDDINGS_BACKOFF_BASE", "100ms"),
        ("TIPOFF_WEBHOOK_URLS", webhooks.as_str()),
        ("TIPOFF_WEBHOOK_SECRET", "webhook-signing-key-0123456789"),
        ("TIPOFF_LOG", "debug"),
    ];
    let dir = tempfile::tempdir().unwrap();
    let mut cmd = tipoff_command(dir.path());
    for (k, v) in env {
        cmd.env(k, v);
    }
    let out = cmd.arg("check-config").output().unwrap();
    assert_eq!(out.status.code(), Some(0), "{out:?}");
    let printed = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        printed.contains("127.0.0.1:1"),
        "the URLs are shown: {printed}"
    );

    let d = Daemon::spawn(&env);
    d.wait_notify("READY=1", Duration::from_secs(15));
    // A registration queues a webhook event the outbox fails to deliver; the backfill fails
    // to reach the embeddings API: both write errors.
    let client = reqwest::blocking::Client::new();
    client
        .post(d.url("/api/v1/users"))
        .json(&serde_json::json!({"name": "x"}))
        .send()
        .unwrap();
    std::thread::sleep(Duration::from_secs(3));
    let status = client
        .get(d.url("/debug/status"))
        .bearer_auth(ADMIN_TOKEN)
        .send()
        .unwrap()
        .text()
        .unwrap();
    let outbox = client
        .get(d.url("/admin/outbox"))
        .bearer_auth(ADMIN_TOKEN)
        .send()
        .unwrap()
        .text()
        .unwrap();
    let logs = d.stderr();
    assert!(
        status.contains("last_error") && logs.contains("127.0.0.1:1"),
        "errors were written: {status}"
    );
    for secret in secrets {
        for (what, text) in [
            ("check-config", &printed),
            ("logs", &logs),
            ("/debug/status", &status),
            ("/admin/outbox", &outbox),
        ] {
            assert!(!text.contains(secret), "{secret} in {what}:\n{text}");
        }
    }
}

/// A value the route's path parameter accepts.
fn fill(path: &str) -> String {
    path.replace("{id}", "1")
        .replace("{name}", "cleanup")
        .replace(
            "{action}",
            if path.starts_with("/admin/withdrawals") {
                "claim"
            } else {
                "restart"
            },
        )
}

#[actix_rt::test]
async fn every_route_of_the_table_is_guarded_as_it_says() {
    use tipoff::http::api::{endpoints, Access};
    // Every admin route gets a wrong bearer here: keep the failure limit out of the way.
    let app = spawn_app(&Db::Sqlite, &[("TIPOFF_AUTH_FAILURE_LIMIT", "100000")]).await;
    let user: Value = app
        .client
        .post(format!("{}/api/v1/users", app.address))
        .json(&serde_json::json!({}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let key = user["api_key"].as_str().unwrap().to_string();
    let mut checked = 0;
    for e in endpoints() {
        let url = format!("{}{}", app.address, fill(e.path));
        let method: reqwest::Method = e.method.to_ascii_uppercase().parse().unwrap();
        let send = |bearer: Option<&str>| {
            let mut req = no_redirect_from("127.0.0.9").request(method.clone(), &url);
            if let Some(b) = bearer {
                req = req.bearer_auth(b);
            }
            if method == reqwest::Method::POST {
                req = req.json(&serde_json::json!({}));
            }
            req.send()
        };
        match e.access {
            Access::Admin => {
                assert_eq!(
                    send(None).await.unwrap().status(),
                    401,
                    "{} {} without credentials",
                    e.method,
                    e.path
                );
                assert_eq!(
                    send(Some(&key)).await.unwrap().status(),
                    401,
                    "{} {} with a user's key",
                    e.method,
                    e.path
                );
                checked += 1;
            }
            Access::User => {
                assert_eq!(
                    send(None).await.unwrap().status(),
                    401,
                    "{} {} without a key",
                    e.method,
                    e.path
                );
                assert_eq!(
                    send(Some(ADMIN_TOKEN)).await.unwrap().status(),
                    401,
                    "{} {}: the admin token is not a user's key",
                    e.method,
                    e.path
                );
                checked += 1;
            }
            Access::Public => {}
        }
    }
    assert!(checked >= 25, "only {checked} guarded routes in the table");
    app.stop().await;
}

#[actix_rt::test]
async fn a_body_of_16_kib_is_read_and_one_byte_more_is_a_413() {
    let app = spawn_app(&Db::Sqlite, &[]).await;
    let body_of = |len: usize| {
        let frame = r#"{"name":""}"#.len();
        format!(r#"{{"name":"{}"}}"#, "y".repeat(len - frame))
    };
    for (len, status, code) in [
        (16 * 1024, 400, "bad_request"),
        (16 * 1024 + 1, 413, "payload_too_large"),
    ] {
        let body = body_of(len);
        assert_eq!(body.len(), len);
        let res = app
            .client
            .post(format!("{}/admin/users", app.address))
            .bearer_auth(ADMIN_TOKEN)
            .header("content-type", "application/json")
            .body(body)
            .send()
            .await
            .unwrap();
        assert_eq!(res.status(), status, "{len} bytes");
        let json: Value = res.json().await.unwrap();
        assert_eq!(json["error"]["code"], code, "{len} bytes: {json}");
    }
    app.stop().await;
}

#[actix_rt::test]
async fn in_production_the_session_cookie_is_host_prefixed_and_secure() {
    let app = spawn_app(&Db::Sqlite, &[("TIPOFF_ENV", "production")]).await;
    let res = no_redirect_from("127.0.0.1")
        .post(format!("{}/admin/ui/login", app.address))
        .form(&[("token", ADMIN_TOKEN)])
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 303);
    let cookie = res.headers()["set-cookie"].to_str().unwrap().to_string();
    assert!(cookie.starts_with("__Host-tipoff_session="), "{cookie}");
    for part in ["Secure", "HttpOnly", "SameSite=Strict", "Path=/"] {
        assert!(cookie.contains(part), "{part} in {cookie}");
    }
    assert!(
        !cookie.contains("Domain"),
        "__Host- cookies carry no Domain: {cookie}"
    );
    app.stop().await;
}
