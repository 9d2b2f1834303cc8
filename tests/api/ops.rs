//! Operator endpoints in process: health, readiness, the status registry, service control,
//! admin authentication and the error format.

use std::sync::Arc;
use std::time::Duration;

use actix::prelude::*;
use serde_json::Value;
use tipoff::http::{AdminToken, AppState, Lifecycle};
use tipoff_actors::{Shared, Store, StoreOptions, Supervisor, SupervisorSettings};

use crate::helpers::*;

#[actix_rt::test]
async fn ready_is_503_until_the_daemon_is_ready_then_200() {
    let (app, dir) = build_app(&Db::Sqlite, &[]).await;
    let url = format!("http://127.0.0.1:{}", app.port());
    let res = reqwest::get(format!("{url}/ready")).await.unwrap();
    assert_eq!(res.status(), 503);
    let body: Value = res.json().await.unwrap();
    assert_eq!(body["error"]["code"], "unavailable");
    assert_eq!(body["error"]["message"], "starting");
    assert_eq!(
        reqwest::get(format!("{url}/health"))
            .await
            .unwrap()
            .status(),
        200,
        "liveness answers while starting"
    );
    let app = run(app, dir).await;
    assert_eq!(app.get("/ready").await.status(), 200);
    assert_eq!(app.stop().await.code(), 0);
}

async fn debug_status_lists_the_registry(db: Db) {
    let backend = db.backend();
    let app = spawn_app(&db, &[]).await;
    let res = app.admin_get("/debug/status").await;
    assert_eq!(res.status(), 200);
    let body: Value = res.json().await.unwrap();
    for field in [
        "instance_id",
        "version",
        "started_at",
        "ready",
        "leader",
        "database",
        "services",
    ] {
        assert!(body.get(field).is_some(), "missing {field}: {body}");
    }
    assert_eq!(body["ready"], true);
    assert_eq!(body["leader"], true);
    assert_eq!(body["database"]["backend"], backend);
    assert_eq!(body["database"]["healthy"], true);
    assert!(body["database"]["pool"]["size"].as_u64().unwrap() >= 1);
    let db_service = &body["services"][0];
    assert_eq!(db_service["name"], "db");
    assert_eq!(db_service["state"], "running");
    for field in [
        "since",
        "restarts",
        "last_error",
        "last_tick_at",
        "last_success_at",
        "next_run_at",
        "interval_secs",
        "interval_reason",
        "skip_reason",
    ] {
        assert!(
            db_service.get(field).is_some(),
            "service row lacks {field}: {db_service}"
        );
    }
    assert_eq!(db_service["interval_reason"], "health ping: 100ms");
    app.stop().await;
}

both_backends!(debug_status_lists_the_registry: debug_status_lists_the_registry_on_sqlite, debug_status_lists_the_registry_on_postgres);

#[actix_rt::test]
async fn admin_endpoints_need_the_token_and_say_so_when_none_is_configured() {
    let app = spawn_app(&Db::Sqlite, &[]).await;
    let res = app.get("/debug/status").await;
    assert_eq!(res.status(), 401);
    assert_eq!(res.headers()["www-authenticate"], "Bearer");
    let res = app
        .client
        .get(format!("{}/debug/status", app.address))
        .bearer_auth("wrong-token-wrong-token")
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 401);
    let body: Value = res.json().await.unwrap();
    assert_eq!(body["error"]["code"], "unauthorized");
    app.stop().await;

    let app = spawn_app(&Db::Sqlite, &[("TIPOFF_ADMIN_TOKEN", "")]).await;
    let res = app.admin_post("/admin/services/db/restart").await;
    assert_eq!(res.status(), 403);
    let body: Value = res.json().await.unwrap();
    assert_eq!(body["error"]["code"], "forbidden");
    assert!(
        body["error"]["message"]
            .as_str()
            .unwrap()
            .contains("TIPOFF_ADMIN_TOKEN is not set"),
        "{body}"
    );
    app.stop().await;
}

#[actix_rt::test]
async fn services_are_restarted_stopped_and_started_over_http() {
    let app = spawn_app(&Db::Sqlite, &[]).await;
    let res = app.admin_post("/admin/services/db/restart").await;
    assert_eq!(res.status(), 200);
    let body: Value = res.json().await.unwrap();
    assert_eq!(body["restarts"], 1);
    assert_eq!(body["state"], "running");

    let body: Value = app
        .admin_post("/admin/services/db/stop")
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(body["state"], "stopped");
    let body: Value = app
        .admin_post("/admin/services/db/start")
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(body["state"], "running");

    let res = app.admin_post("/admin/services/nope/restart").await;
    assert_eq!(res.status(), 404);
    let body: Value = res.json().await.unwrap();
    assert_eq!(body["error"]["message"], "no service named `nope`");
    let res = app.admin_post("/admin/services/db/explode").await;
    assert_eq!(res.status(), 404);
    let body: Value = res.json().await.unwrap();
    assert!(
        body["error"]["message"]
            .as_str()
            .unwrap()
            .contains("unknown action"),
        "{body}"
    );
    app.stop().await;
}

#[actix_rt::test]
async fn unknown_routes_answer_the_json_error_format() {
    let app = spawn_app(&Db::Sqlite, &[]).await;
    let res = app.get("/api/v0/nothing").await;
    assert_eq!(res.status(), 404);
    let body: Value = res.json().await.unwrap();
    assert_eq!(body["error"]["code"], "not_found");
    assert_eq!(body["error"]["message"], "no route for GET /api/v0/nothing");
    app.stop().await;
}

#[actix_rt::test]
async fn a_supervisor_that_does_not_answer_gives_503_not_a_hang() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::connect(
        &database_url(&Db::Sqlite, dir.path()),
        &StoreOptions::default(),
    )
    .await
    .unwrap();
    let arbiter = Arbiter::new();
    let (sup, _fatal) = Supervisor::new(
        vec![],
        SupervisorSettings::default(),
        Arc::new(Shared::default()),
    );
    let supervisor = Supervisor::start_in_arbiter(&arbiter.handle(), |_| sup);
    // Block the supervisor's thread longer than the handler's timeout.
    arbiter.spawn(async { std::thread::sleep(Duration::from_secs(2)) });
    let state = actix_web::web::Data::new(AppState {
        supervisor,
        store,
        shared: Arc::new(Shared::default()),
        lifecycle: Arc::new(Lifecycle::new()),
        admin: AdminToken::new(Some(ADMIN_TOKEN)),
        actor_timeout: Duration::from_millis(200),
        environment: "development",
        live: Default::default(),
        read_cache: tipoff::http::cache::ReadCache::new(Duration::ZERO, 1 << 20),
        registration: false,
        events: tipoff_actors::events::EventHub::new(16, 0),
        sse_heartbeat: Duration::from_secs(15),
        docs: false,
        metrics: Default::default(),
        search: tipoff_actors::search::SearchHub::new(),
        sessions: tipoff::http::auth::Sessions {
            ttl: Duration::from_secs(60),
            secure: false,
        },
        auth_limiter: tipoff::http::auth::AuthLimiter::new(10, Duration::from_secs(60)),
        streams: tipoff::http::events::StreamCaps::new(10, 10),
        stakes: tipoff_actors::stakes::StakeBatcher::new(),
        callers: Default::default(),
    });
    let service = actix_web::test::init_service(tipoff::http::app(state)).await;
    let req = actix_web::test::TestRequest::get()
        .uri("/debug/status")
        .insert_header(("authorization", format!("Bearer {ADMIN_TOKEN}")))
        .to_request();
    let started = std::time::Instant::now();
    let res = actix_web::test::call_service(&service, req).await;
    assert_eq!(res.status(), 503);
    assert!(
        started.elapsed() < Duration::from_secs(1),
        "took {:?}",
        started.elapsed()
    );
    let body: Value = actix_web::test::read_body_json(res).await;
    assert!(
        body["error"]["message"]
            .as_str()
            .unwrap()
            .contains("did not answer"),
        "{body}"
    );
    arbiter.stop();
}

/// A service that fails as soon as it starts.
struct Doomed(tipoff_actors::ServiceCtx);

impl Actor for Doomed {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Self::Context) {
        self.0.fail(&"doomed: cannot work");
        ctx.stop();
    }
}

impl Handler<tipoff_actors::Control> for Doomed {
    type Result = ();

    fn handle(&mut self, _: tipoff_actors::Control, _: &mut Self::Context) {}
}

#[actix_rt::test]
async fn a_critical_service_past_its_restart_limit_stops_the_daemon_with_a_non_zero_exit() {
    let dir = tempfile::tempdir().unwrap();
    let url = database_url(&Db::Sqlite, dir.path());
    let env = test_env(
        &url,
        &[
            ("TIPOFF_RESTART_BACKOFF_BASE", "10ms"),
            ("TIPOFF_RESTART_MAX", "2"),
        ],
    );
    let config = tipoff::config::Config::load(None, &env).unwrap();
    let doomed =
        tipoff_actors::ChildSpec::new("doomed", tipoff_actors::factory(|svc| Ok(Doomed(svc))))
            .critical();
    let app = tipoff::startup::Application::build_with(
        config,
        Arc::new(tipoff::systemd::Notifier::from_socket(None)),
        vec![doomed],
    )
    .await
    .unwrap();
    let store = app.store();
    let started = std::time::Instant::now();
    // No shutdown is ever requested: only the fatal failure can end the run.
    let exit = tokio::time::timeout(
        Duration::from_secs(10),
        app.run_until_stopped(std::future::pending()),
    )
    .await
    .expect("the daemon stops by itself");
    assert_eq!(exit.code(), 1);
    let tipoff::startup::Exit::Fatal(reason) = exit else {
        unreachable!()
    };
    assert!(
        reason.contains("doomed") && reason.contains("giving up"),
        "{reason}"
    );
    assert!(started.elapsed() < Duration::from_secs(5));
    // The orderly shutdown that followed closed the pool.
    assert!(
        store.ping().await.is_err(),
        "the pool is closed after the fatal exit"
    );
}
