//! The route table: every endpoint once, with its handler and its documentation. The same
//! table registers the routes with actix-web ([`register`]) and generates the OpenAPI 3
//! document served at `/openapi.json` ([`openapi`]), so a route cannot exist undocumented.

use actix_web::web;
use serde_json::{json, Map, Value};

use super::{dashboard, events, imports, metrics, money, ops, read, search};

/// Who may call an endpoint.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Access {
    Public,
    /// `Authorization: Bearer <api key>` of a registered user.
    User,
    /// `Authorization: Bearer <admin token>` (or the dashboard's session cookie).
    Admin,
}

/// One documented endpoint.
pub struct Endpoint {
    pub method: &'static str,
    pub path: &'static str,
    pub tag: &'static str,
    pub access: Access,
    pub summary: &'static str,
    /// Query parameters: (name, description).
    pub query: &'static [(&'static str, &'static str)],
    /// JSON request body schema, if the endpoint takes one.
    pub body: Option<fn() -> Value>,
    /// The success status and what it returns.
    pub ok: (u16, &'static str),
    /// Another success answer, e.g. 202 when a follower forwards a command to the leader.
    pub also: Option<(u16, &'static str)>,
    /// Content type of the success answer.
    pub produces: &'static str,
}

macro_rules! endpoints {
    ($( $method:ident $path:literal => $handler:path {
        tag: $tag:literal, access: $access:ident, summary: $summary:literal
        $(, query: [$( ($qn:literal, $qd:literal) ),* $(,)?])?
        $(, body: $body:expr)?
        $(, ok: ($status:literal, $okd:literal))?
        $(, also: ($astatus:literal, $aokd:literal))?
        $(, produces: $produces:literal)?
        $(,)?
    } )* ) => {
        /// Registers every route of the table, then, for each path, a 405 with `Allow` for
        /// the methods it does not declare.
        pub fn register(cfg: &mut web::ServiceConfig) {
            $( cfg.route($path, web::$method().to($handler)); )*
            for (path, allow) in allowed_methods() {
                cfg.route(path, web::route().to(move || method_not_allowed(allow.clone())));
            }
        }

        /// The table.
        pub fn endpoints() -> Vec<Endpoint> {
            vec![ $( Endpoint {
                method: stringify!($method),
                path: $path,
                tag: $tag,
                access: Access::$access,
                summary: $summary,
                query: &[ $($( ($qn, $qd) ),*)? ],
                body: endpoints!(@body $($body)?),
                ok: endpoints!(@ok $(($status, $okd))?),
                also: None $(.or(Some(($astatus, $aokd))))?,
                produces: endpoints!(@produces $($produces)?),
            } ),* ]
        }
    };
    (@body) => { None };
    (@body $body:expr) => { Some($body) };
    (@ok) => { (200, "OK") };
    (@ok ($status:literal, $okd:literal)) => { ($status, $okd) };
    (@produces) => { "application/json" };
    (@produces $p:literal) => { $p };
}

fn s(t: &str) -> Value {
    json!({"type": t})
}

fn amount() -> Value {
    json!({"description": "base units of the token, as a string (or an integer up to 2^53)", "oneOf": [{"type": "string", "pattern": "^[0-9]+$"}, {"type": "integer", "minimum": 1}]})
}

endpoints! {
    get "/health" => ops::health { tag: "operations", access: Public, summary: "Liveness: the process answers HTTP" }
    get "/ready" => ops::ready { tag: "operations", access: Public, summary: "Readiness: started, not stopping, database reachable (503 otherwise)" }
    get "/metrics" => metrics::metrics { tag: "operations", access: Public, summary: "Prometheus metrics (text format 0.0.4)", produces: "text/plain" }
    get "/openapi.json" => openapi_json { tag: "operations", access: Public, summary: "This OpenAPI 3 document" }
    get "/docs" => docs_page { tag: "operations", access: Public, summary: "API reference page (self-contained; off in production unless TIPOFF_DOCS=true)", produces: "text/html" }
    get "/debug/status" => ops::debug_status { tag: "operations", access: Admin, summary: "Instance facts and the status registry of every service" }
    get "/api/v1/leagues" => read::leagues { tag: "games", access: Public, summary: "The league catalog, each with whether its poller is enabled" }
    get "/api/v1/games" => read::games { tag: "games", access: Public, summary: "Games in start order",
        query: [("league", "league key, e.g. nba"), ("date", "UTC start date YYYY-MM-DD"), ("state", "scheduled, live, final, postponed, canceled, delayed or suspended"), ("limit", "page size, 1 to 200 (default 50)"), ("cursor", "the `next` value of the previous page")] }
    get "/api/v1/games/{id}" => read::game_by_id { tag: "games", access: Public, summary: "One game" }
    get "/api/v1/markets" => read::markets { tag: "markets", access: Public, summary: "Markets in id order",
        query: [("league", "league key"), ("state", "open, locked, settled or void"), ("limit", "page size, 1 to 200 (default 50)"), ("cursor", "the `next` value of the previous page")] }
    get "/api/v1/markets/search" => search::search { tag: "markets", access: Public, summary: "Search markets: keyword ranking always (full text over the question, league, teams, game names and date); fused with embedding similarity when embeddings are configured (`mode` says which answered). Each item is a market with its `score`",
        query: [("q", "the words to search for (1 to 200 characters)"), ("league", "league key"), ("state", "open, locked, settled or void"), ("limit", "results, 1 to 100 (default 20)"), ("mode", "hybrid (default: fused with vectors when embeddings are configured) or keyword (keyword ranking only)")] }
    get "/api/v1/markets/{id}" => read::market_by_id { tag: "markets", access: Public, summary: "One market with its pools per token" }
    post "/api/v1/markets/{id}/stakes" => money::stake { tag: "money", access: User, summary: "Stake on an outcome of an open market",
        body: || json!({"type": "object", "required": ["outcome", "token", "amount"], "properties": {"outcome": {"type": "string", "enum": ["home", "away"]}, "token": s("string"), "amount": amount()}}),
        ok: (201, "the stake") }
    get "/api/v1/events" => events::stream { tag: "events", access: Public, summary: "Server-Sent Events: live domain events (market events public; the rest need the admin token)",
        query: [("types", "comma-separated event types"), ("league", "only events of this league"), ("last_event_id", "resume after this id (or the Last-Event-ID header)")],
        produces: "text/event-stream" }
    post "/api/v1/users" => money::register { tag: "money", access: Public, summary: "Register a user (when registration is enabled); the API key is shown once",
        body: || json!({"type": "object", "properties": {"name": s("string")}}),
        ok: (201, "the user with its API key and deposit code") }
    get "/api/v1/me" => money::me { tag: "money", access: User, summary: "The caller, its deposit code and balances" }
    get "/api/v1/me/ledger" => money::ledger { tag: "money", access: User, summary: "The caller's ledger entries, newest first", query: [("limit", "page size, 1 to 200 (default 50)"), ("cursor", "the `next` value of the previous page")] }
    get "/api/v1/me/stakes" => money::stakes { tag: "money", access: User, summary: "The caller's stakes, newest first; each stake's payout is its share of its position's", query: [("limit", "page size, 1 to 200 (default 50)"), ("cursor", "the `next` value of the previous page")] }
    get "/api/v1/me/positions" => money::positions { tag: "money", access: User, summary: "The caller's positions (stakes on one market outcome in one token, added up; what settlement pays), newest first", query: [("limit", "page size, 1 to 200 (default 50)"), ("cursor", "the `next` value of the previous page")] }
    post "/api/v1/me/withdrawals" => money::withdraw { tag: "money", access: User, summary: "Request a withdrawal (places a hold)",
        body: || json!({"type": "object", "required": ["token", "amount", "destination"], "properties": {"token": s("string"), "amount": amount(), "destination": {"type": "string", "description": "base58 Solana address"}}}),
        ok: (201, "the pending withdrawal") }
    get "/api/v1/me/withdrawals" => money::withdrawals { tag: "money", access: User, summary: "The caller's withdrawals, newest first", query: [("limit", "page size, 1 to 200 (default 50)"), ("cursor", "the `next` value of the previous page")] }
    post "/admin/users" => money::admin_create_user { tag: "admin", access: Admin, summary: "Create a user (works with registration off)",
        body: || json!({"type": "object", "properties": {"name": s("string")}}), ok: (201, "the user with its API key") }
    get "/admin/deposits" => money::deposits { tag: "admin", access: Admin, summary: "Deposits, newest first",
        query: [("unattributed", "true: only deposits no user's code matched"), ("limit", "page size, 1 to 200 (default 50)"), ("cursor", "the `next` value of the previous page")] }
    post "/admin/deposits/{id}/assign" => money::assign_deposit { tag: "admin", access: Admin, summary: "Credit an unattributed deposit to a user (once)",
        body: || json!({"type": "object", "required": ["user_id"], "properties": {"user_id": s("integer")}}) }
    get "/admin/deposits/quarantine" => money::quarantine { tag: "admin", access: Admin, summary: "Treasury signatures a watcher could not read: failing (counting attempts), quarantined (skipped; the cursor moved on), retry (asked again), resolved; oldest first",
        query: [("state", "failing, quarantined, retry or resolved"), ("limit", "page size, 1 to 200 (default 50)"), ("cursor", "the `next` value of the previous page")] }
    post "/admin/deposits/quarantine/{id}/retry" => money::retry_quarantined { tag: "admin", access: Admin, summary: "Ask the watcher to read a quarantined signature again on its next pass (credited if readable, else quarantined again)" }
    get "/admin/withdrawals" => money::admin_withdrawals { tag: "admin", access: Admin, summary: "Withdrawals, oldest first (the signer's queue), with their age and the age of an open claim",
        query: [("state", "pending, processing, completed, failed or expired"), ("limit", "page size, 1 to 200 (default 50)"), ("cursor", "the `next` value of the previous page")] }
    post "/admin/withdrawals/{id}/{action}" => money::finish_withdrawal { tag: "admin", access: Admin, summary: "The signer protocol: claim a pending withdrawal (pending → processing) before sending it on chain, then complete it (with the transaction signature, which pays one withdrawal only) or fail it (hold released); action is claim, complete or fail",
        body: || json!({"type": "object", "properties": {"claimer": s("string"), "signature": s("string"), "reason": s("string")}}) }
    get "/admin/ledger/audit" => money::audit { tag: "admin", access: Admin, summary: "Check every money invariant over one snapshot" }
    get "/admin/embeddings" => search::status { tag: "admin", access: Admin, summary: "Embeddings: the model, markets, vectors stored, the backlog and rate, the local vector index, the open re-embed job" }
    post "/admin/embeddings/reindex" => search::reindex { tag: "admin", access: Admin, summary: "Queue a full re-embed of every market for the configured model as a persistent job (or answer the one queued or running); 409 without embeddings configured",
        ok: (202, "the job") }
    get "/admin/embeddings/jobs" => search::jobs { tag: "admin", access: Admin, summary: "Re-embed jobs, newest first", query: [("limit", "page size, 1 to 200 (default 50)"), ("cursor", "the `next` value of the previous page")] }
    get "/admin/embeddings/jobs/{id}" => search::job { tag: "admin", access: Admin, summary: "One re-embed job with its progress" }
    post "/admin/imports" => imports::create { tag: "admin", access: Admin, summary: "Start (or join an overlapping) import job for a league and date range",
        body: || json!({"type": "object", "required": ["league", "from", "to"], "properties": {"league": s("string"), "from": {"type": "string", "format": "date"}, "to": {"type": "string", "format": "date"}}}),
        ok: (202, "the job") }
    get "/admin/imports" => imports::list { tag: "admin", access: Admin, summary: "Import jobs, newest first",
        query: [("league", "league key"), ("state", "queued, running, succeeded, failed or canceled"), ("limit", "page size, 1 to 200 (default 50)"), ("cursor", "the `next` value of the previous page")] }
    get "/admin/imports/{id}" => imports::get { tag: "admin", access: Admin, summary: "One import job with its progress" }
    post "/admin/imports/{id}/cancel" => imports::cancel { tag: "admin", access: Admin, summary: "Cancel a queued or running import job" }
    get "/admin/outbox" => events::list { tag: "admin", access: Admin, summary: "Outbox events (webhook deliveries), newest first, with backlog figures",
        query: [("state", "pending, delivered or dead"), ("limit", "page size, 1 to 200 (default 50)"), ("cursor", "the `next` value of the previous page")] }
    post "/admin/outbox/retry-dead" => events::retry_dead { tag: "admin", access: Admin, summary: "Queue every dead event again" }
    post "/admin/outbox/{id}/retry" => events::retry { tag: "admin", access: Admin, summary: "Queue one dead event again with fresh attempts" }
    post "/admin/services/{name}/{action}" => ops::control_service { tag: "admin", access: Admin, summary: "Restart, stop or start a service; action is restart, stop or start. On a follower, a singleton's command is forwarded to the leader (202)",
        also: (202, "forwarded to the leader, which carries it out") }
    post "/admin/leader/step-down" => ops::step_down { tag: "admin", access: Admin, summary: "The leader stops its singletons (current ticks finished), releases the lease at once and does not take it again for one lease TTL; 409 on a follower or on SQLite" }
    get "/admin/ui" => dashboard::page { tag: "admin", access: Admin, summary: "Status dashboard (HTML); without a session it answers 401 with a sign-in form", produces: "text/html" }
    post "/admin/ui/login" => dashboard::login { tag: "admin", access: Public, summary: "Dashboard sign-in: form field `token`; sets the session cookie",
        ok: (303, "redirect to /admin/ui"), produces: "text/html" }
    post "/admin/ui/logout" => dashboard::logout { tag: "admin", access: Public, summary: "Dashboard sign-out: clears the session cookie", ok: (303, "redirect to /admin/ui"), produces: "text/html" }
}

/// Each path of the table with the methods it declares, as an `Allow` value.
fn allowed_methods() -> Vec<(&'static str, String)> {
    let mut out: Vec<(&'static str, Vec<String>)> = Vec::new();
    for e in endpoints() {
        let method = e.method.to_ascii_uppercase();
        match out.iter_mut().find(|(p, _)| *p == e.path) {
            Some((_, methods)) => methods.push(method),
            None => out.push((e.path, vec![method])),
        }
    }
    out.into_iter().map(|(p, m)| (p, m.join(", "))).collect()
}

async fn method_not_allowed(allow: String) -> actix_web::HttpResponse {
    let message = format!("this path answers {allow} only");
    let mut res =
        actix_web::ResponseError::error_response(&super::ApiError::MethodNotAllowed(message));
    if let Ok(value) = actix_web::http::header::HeaderValue::from_str(&allow) {
        res.headers_mut()
            .insert(actix_web::http::header::ALLOW, value);
    }
    res
}

/// The OpenAPI 3 document of the table.
pub fn openapi() -> Value {
    let mut paths = Map::new();
    for e in endpoints() {
        let mut params: Vec<Value> = e
            .path
            .split('/')
            .filter_map(|seg| seg.strip_prefix('{').and_then(|s| s.strip_suffix('}')))
            .map(|name| {
                let schema = if name == "id" {
                    s("integer")
                } else {
                    s("string")
                };
                json!({"name": name, "in": "path", "required": true, "schema": schema})
            })
            .collect();
        params.extend(e.query.iter().map(|(name, description)| {
            json!({"name": name, "in": "query", "required": false, "description": description, "schema": s("string")})
        }));
        let ok_content = match e.produces {
            "application/json" => json!({"application/json": {"schema": s("object")}}),
            other => {
                let mut m = Map::new();
                m.insert(other.to_string(), json!({"schema": s("string")}));
                Value::Object(m)
            }
        };
        let mut responses = Map::new();
        let ok = if e.ok.0 == 303 {
            json!({"description": e.ok.1})
        } else {
            json!({"description": e.ok.1, "content": ok_content})
        };
        responses.insert(e.ok.0.to_string(), ok);
        if let Some((status, description)) = e.also {
            responses.insert(
                status.to_string(),
                json!({"description": description, "content": {"application/json": {"schema": {"type": "object"}}}}),
            );
        }
        let error = |d: &str| json!({"description": d, "content": {"application/json": {"schema": {"$ref": "#/components/schemas/Error"}}}});
        if !params.is_empty() || e.body.is_some() {
            responses.insert(
                "400".into(),
                error("bad input; the message names the problem"),
            );
        }
        match e.access {
            Access::Admin => {
                responses.insert("401".into(), error("missing or wrong admin token"));
                responses.insert(
                    "403".into(),
                    error("admin endpoints are disabled (TIPOFF_ADMIN_TOKEN unset)"),
                );
            }
            Access::User => {
                responses.insert("401".into(), error("missing or unknown API key"));
            }
            Access::Public => {}
        }
        if e.path.contains('{') {
            responses.insert("404".into(), error("no such resource"));
        }
        if e.method == "post" {
            responses.insert("409".into(), error("conflicts with the current state"));
        }
        responses.insert("503".into(), error("unavailable: starting, stopping, database down, or an actor did not answer in time"));
        let mut op = json!({
            "tags": [e.tag],
            "summary": e.summary,
            "operationId": format!("{}_{}", e.method, e.path.trim_matches('/').replace(['/', '{', '}', '.', '-'], "_")),
            "parameters": params,
            "responses": responses,
        });
        match e.access {
            Access::Admin => op["security"] = json!([{"admin": []}, {"dashboard": []}]),
            Access::User => op["security"] = json!([{"apiKey": []}]),
            Access::Public => {}
        }
        if let Some(body) = e.body {
            op["requestBody"] =
                json!({"required": true, "content": {"application/json": {"schema": body()}}});
        }
        if e.path == "/admin/ui/login" {
            op["requestBody"] = json!({"required": true, "content": {"application/x-www-form-urlencoded": {"schema": {"type": "object", "required": ["token"], "properties": {"token": s("string")}}}}});
        }
        let entry = paths
            .entry(e.path.to_string())
            .or_insert_with(|| Value::Object(Map::new()));
        entry[e.method] = op;
    }
    json!({
        "openapi": "3.0.3",
        "info": {
            "title": "tipoff",
            "version": env!("CARGO_PKG_VERSION"),
            "description": "Sports prediction-market daemon: games and markets from ESPN, deposits from Solana, stakes and parimutuel settlement, live events, operations. Amounts are integers in base units, carried as strings. Lists answer {\"items\": [...], \"next\": cursor or null}.",
        },
        "tags": [
            {"name": "games"}, {"name": "markets"}, {"name": "money"}, {"name": "events"},
            {"name": "admin"}, {"name": "operations"},
        ],
        "paths": paths,
        "components": {
            "securitySchemes": {
                "admin": {"type": "http", "scheme": "bearer", "description": "the admin token (TIPOFF_ADMIN_TOKEN)"},
                "apiKey": {"type": "http", "scheme": "bearer", "description": "a user's API key"},
                "dashboard": {"type": "apiKey", "in": "cookie", "name": super::auth::UI_COOKIE},
            },
            "schemas": {
                "Error": {
                    "type": "object",
                    "required": ["error"],
                    "properties": {"error": {"type": "object", "required": ["code", "message"], "properties": {"code": s("string"), "message": s("string")}}},
                },
            },
        },
    })
}

async fn openapi_json() -> actix_web::HttpResponse {
    actix_web::HttpResponse::Ok().json(openapi())
}

const DOCS_HTML: &str = include_str!("docs.html");

async fn docs_page(
    state: web::Data<super::AppState>,
) -> Result<actix_web::HttpResponse, super::ApiError> {
    if !state.docs {
        return Err(super::ApiError::NotFound(
            "the docs page is off in production; set TIPOFF_DOCS=true to serve it (/openapi.json is always served)".into(),
        ));
    }
    Ok(actix_web::HttpResponse::Ok()
        .content_type("text/html; charset=utf-8")
        .insert_header((
            "content-security-policy",
            "default-src 'self'; script-src 'unsafe-inline'; style-src 'unsafe-inline'",
        ))
        .body(DOCS_HTML))
}
