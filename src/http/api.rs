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
    /// JSON request body schema, if the endpoint takes one (derived from its Rust type).
    pub body: Option<fn() -> Value>,
    /// The success answer's schema (derived from its Rust type), when it has one.
    pub returns: Option<fn() -> Value>,
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
        $(, returns: $returns:expr)?
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
                returns: endpoints!(@body $($returns)?),
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

endpoints! {
    get "/health" => ops::health { tag: "operations", access: Public, summary: "Liveness: the process answers HTTP", returns: of::<ops::Status> }
    get "/ready" => ops::ready { tag: "operations", access: Public, summary: "Readiness: started, not stopping, database reachable (503 otherwise)", returns: of::<ops::Status> }
    get "/metrics" => metrics::metrics { tag: "operations", access: Public, summary: "Prometheus metrics (text format 0.0.4)", produces: "text/plain" }
    get "/openapi.json" => openapi_json { tag: "operations", access: Public, summary: "This OpenAPI 3 document (off in production unless TIPOFF_DOCS=true)" }
    get "/docs" => docs_page { tag: "operations", access: Public, summary: "API reference page (self-contained; off in production unless TIPOFF_DOCS=true)", produces: "text/html" }
    get "/debug/status" => ops::debug_status { tag: "operations", access: Admin, summary: "Instance facts and the status registry of every service", returns: of::<ops::DebugStatus> }
    get "/api/v1/leagues" => read::leagues { tag: "games", access: Public, summary: "The league catalog, each with whether its poller is enabled", returns: page_of::<read::League> }
    get "/api/v1/games" => read::games { tag: "games", access: Public, summary: "Games in start order",
        query: [("league", "league key, e.g. nba"), ("date", "UTC start date YYYY-MM-DD"), ("state", "scheduled, live, final, postponed, canceled, delayed or suspended"), ("limit", "page size, 1 to 200 (default 50)"), ("cursor", "the `next` value of the previous page")],
        returns: page_of::<read::Game<'static>> }
    get "/api/v1/games/{id}" => read::game_by_id { tag: "games", access: Public, summary: "One game", returns: of::<read::Game<'static>> }
    get "/api/v1/markets" => read::markets { tag: "markets", access: Public, summary: "Markets in id order",
        query: [("league", "league key"), ("state", "open, locked, settled or void"), ("limit", "page size, 1 to 200 (default 50)"), ("cursor", "the `next` value of the previous page")],
        returns: page_of::<read::Market> }
    get "/api/v1/markets/search" => search::search { tag: "markets", access: Public, summary: "Search markets: keyword ranking always (full text over the question, league, teams, game names and date); fused with embedding similarity when embeddings are configured (`mode` says which answered). Each item is a market with its `score`",
        query: [("q", "the words to search for (1 to 200 characters; the first 32 distinct words count; no letters or digits matches nothing)"), ("league", "league key"), ("state", "open, locked, settled or void"), ("limit", "results, 1 to 100 (default 20)"), ("mode", "hybrid (default: fused with vectors when embeddings are configured) or keyword (keyword ranking only)")],
        returns: of::<search::Hits> }
    get "/api/v1/markets/{id}" => read::market_by_id { tag: "markets", access: Public, summary: "One market with its pools per token", returns: of::<read::Market> }
    post "/api/v1/markets/{id}/stakes" => money::stake { tag: "money", access: User, summary: "Stake on an outcome of an open market",
        body: of::<money::NewStake>,
        ok: (201, "the stake"), returns: of::<money::StakeView> }
    get "/api/v1/events" => events::stream { tag: "events", access: Public, summary: "Server-Sent Events: live domain events (market events public; the rest need the admin token)",
        query: [("types", "comma-separated event types"), ("league", "only events of this league"), ("last_event_id", "resume after this id (or the Last-Event-ID header)")],
        produces: "text/event-stream" }
    post "/api/v1/users" => money::register { tag: "money", access: Public, summary: "Register a user (when registration is enabled); the API key is shown once",
        body: of::<money::NewUser>,
        ok: (201, "the user with its API key and deposit code"), returns: of::<money::NewUserView> }
    get "/api/v1/me" => money::me { tag: "money", access: User, summary: "The caller, its deposit code and balances", returns: of::<money::MeView> }
    get "/api/v1/me/ledger" => money::ledger { tag: "money", access: User, summary: "The caller's ledger entries, newest first", query: [("limit", "page size, 1 to 200 (default 50)"), ("cursor", "the `next` value of the previous page")], returns: page_of::<money::EntryView> }
    get "/api/v1/me/stakes" => money::stakes { tag: "money", access: User, summary: "The caller's stakes, newest first; each stake's payout is its share of its position's", query: [("limit", "page size, 1 to 200 (default 50)"), ("cursor", "the `next` value of the previous page")], returns: page_of::<money::StakeView> }
    get "/api/v1/me/positions" => money::positions { tag: "money", access: User, summary: "The caller's positions (stakes on one market outcome in one token, added up; what settlement pays), newest first", query: [("limit", "page size, 1 to 200 (default 50)"), ("cursor", "the `next` value of the previous page")], returns: page_of::<money::PositionView> }
    post "/api/v1/me/withdrawals" => money::withdraw { tag: "money", access: User, summary: "Request a withdrawal (places a hold)",
        body: of::<money::NewWithdrawal>,
        ok: (201, "the pending withdrawal"), returns: of::<money::WithdrawalView> }
    get "/api/v1/me/withdrawals" => money::withdrawals { tag: "money", access: User, summary: "The caller's withdrawals, newest first", query: [("limit", "page size, 1 to 200 (default 50)"), ("cursor", "the `next` value of the previous page")], returns: page_of::<money::WithdrawalView> }
    post "/admin/users" => money::admin_create_user { tag: "admin", access: Admin, summary: "Create a user (works with registration off)",
        body: of::<money::NewUser>, ok: (201, "the user with its API key"), returns: of::<money::NewUserView> }
    get "/admin/deposits" => money::deposits { tag: "admin", access: Admin, summary: "Deposits, newest first",
        query: [("unattributed", "true: only deposits no user's code matched"), ("limit", "page size, 1 to 200 (default 50)"), ("cursor", "the `next` value of the previous page")], returns: page_of::<money::DepositView> }
    post "/admin/deposits/{id}/assign" => money::assign_deposit { tag: "admin", access: Admin, summary: "Credit an unattributed deposit to a user (once)",
        body: of::<money::Assign>, returns: of::<money::DepositView> }
    get "/admin/deposits/quarantine" => money::quarantine { tag: "admin", access: Admin, summary: "Treasury signatures a watcher could not read: failing (counting attempts), quarantined (skipped; the cursor moved on), retry (asked again), resolved; oldest first",
        query: [("state", "failing, quarantined, retry or resolved"), ("limit", "page size, 1 to 200 (default 50)"), ("cursor", "the `next` value of the previous page")], returns: page_of::<money::QuarantineView> }
    post "/admin/deposits/quarantine/{id}/retry" => money::retry_quarantined { tag: "admin", access: Admin, summary: "Ask the watcher to read a quarantined signature again on its next pass (credited if readable, else quarantined again)", returns: of::<money::QuarantineView> }
    get "/admin/withdrawals" => money::admin_withdrawals { tag: "admin", access: Admin, summary: "Withdrawals, oldest first (the signer's queue), with their age and the age of an open claim",
        query: [("state", "pending, processing, completed, failed or expired"), ("limit", "page size, 1 to 200 (default 50)"), ("cursor", "the `next` value of the previous page")], returns: page_of::<money::WithdrawalView> }
    post "/admin/withdrawals/{id}/{action}" => money::finish_withdrawal { tag: "admin", access: Admin, summary: "The signer protocol: claim a pending withdrawal (pending → processing) before sending it on chain, then complete it (with the transaction signature, which pays one withdrawal only) or fail it (hold released); action is claim, complete or fail",
        body: of::<money::FinishWithdrawal>, returns: of::<money::WithdrawalView> }
    get "/admin/ledger/audit" => money::audit { tag: "admin", access: Admin, summary: "Check every money invariant over one snapshot", returns: of::<money::AuditView> }
    get "/admin/embeddings" => search::status { tag: "admin", access: Admin, summary: "Embeddings: the model, markets, vectors stored, the backlog and rate, the local vector index, the open re-embed job", returns: of::<search::EmbeddingsView> }
    post "/admin/embeddings/reindex" => search::reindex { tag: "admin", access: Admin, summary: "Queue a full re-embed of every market for the configured model as a persistent job (or answer the one queued or running); 409 without embeddings configured",
        ok: (202, "the job"), returns: of::<tipoff_actors::store::EmbeddingJob> }
    get "/admin/embeddings/jobs" => search::jobs { tag: "admin", access: Admin, summary: "Re-embed jobs, newest first", query: [("limit", "page size, 1 to 200 (default 50)"), ("cursor", "the `next` value of the previous page")], returns: page_of::<tipoff_actors::store::EmbeddingJob> }
    get "/admin/embeddings/jobs/{id}" => search::job { tag: "admin", access: Admin, summary: "One re-embed job with its progress", returns: of::<tipoff_actors::store::EmbeddingJob> }
    post "/admin/imports" => imports::create { tag: "admin", access: Admin, summary: "Start (or join an overlapping) import job for a league and date range: `to` on or after `from`, at most 366 days on (400 otherwise); 409 for a league whose poller is not enabled",
        body: of::<imports::NewImport>,
        ok: (202, "the new job"), also: (200, "an overlapping job already queued or running, which this request joined"), returns: of::<tipoff_actors::store::ImportJob> }
    get "/admin/imports" => imports::list { tag: "admin", access: Admin, summary: "Import jobs, newest first",
        query: [("league", "league key"), ("state", "queued, running, succeeded, failed or canceled"), ("limit", "page size, 1 to 200 (default 50)"), ("cursor", "the `next` value of the previous page")], returns: page_of::<tipoff_actors::store::ImportJob> }
    get "/admin/imports/{id}" => imports::get { tag: "admin", access: Admin, summary: "One import job with its progress", returns: of::<imports::ImportView> }
    post "/admin/imports/{id}/cancel" => imports::cancel { tag: "admin", access: Admin, summary: "Cancel a queued or running import job", returns: of::<imports::ImportView> }
    get "/admin/outbox" => events::list { tag: "admin", access: Admin, summary: "Outbox events (webhook deliveries), newest first, with backlog figures",
        query: [("state", "pending, delivered or dead"), ("limit", "page size, 1 to 200 (default 50)"), ("cursor", "the `next` value of the previous page")], returns: of::<events::OutboxPage> }
    post "/admin/outbox/retry-dead" => events::retry_dead { tag: "admin", access: Admin, summary: "Queue every dead event again", returns: of::<events::Requeued> }
    post "/admin/outbox/{id}/retry" => events::retry { tag: "admin", access: Admin, summary: "Queue one dead event again with fresh attempts", returns: of::<events::EventView> }
    post "/admin/services/{name}/{action}" => ops::control_service { tag: "admin", access: Admin, summary: "Restart, stop or start a service; action is restart, stop or start. On a follower, a singleton's command is forwarded to the leader (202)",
        also: (202, "forwarded to the leader, which carries it out"), returns: of::<tipoff_actors::ServiceStatus> }
    post "/admin/leader/step-down" => ops::step_down { tag: "admin", access: Admin, summary: "The leader stops its singletons (current ticks finished), releases the lease at once and does not take it again for one lease TTL; 409 on a follower or on SQLite", returns: of::<tipoff_actors::service::StepDown> }
    get "/admin/ui" => dashboard::page { tag: "admin", access: Admin, summary: "Status dashboard (HTML); without a session it answers 401 with a sign-in form", produces: "text/html" }
    post "/admin/ui/login" => dashboard::login { tag: "admin", access: Public, summary: "Dashboard sign-in: form field `token`; sets the session cookie",
        ok: (303, "redirect to /admin/ui"), produces: "text/html" }
    post "/admin/ui/logout" => dashboard::logout { tag: "admin", access: Public, summary: "Dashboard sign-out (with X-Tipoff-UI: 1): deletes the session and clears its cookie", ok: (204, "signed out") }
}

/// The query parameters the route `pattern` takes with `method` (upper case), or `None` when
/// the table has no such route.
pub fn query_names(method: &str, pattern: &str) -> Option<&'static [&'static str]> {
    type Names = std::collections::HashMap<&'static str, Vec<(String, Vec<&'static str>)>>;
    static NAMES: std::sync::OnceLock<Names> = std::sync::OnceLock::new();
    let names = NAMES.get_or_init(|| {
        let mut names = Names::new();
        for e in endpoints() {
            let query = e.query.iter().map(|(n, _)| *n).collect();
            names
                .entry(e.path)
                .or_default()
                .push((e.method.to_ascii_uppercase(), query));
        }
        names
    });
    // HEAD is answered by the GET route.
    let method = if method == "HEAD" { "GET" } else { method };
    names
        .get(pattern)?
        .iter()
        .find(|(m, _)| m == method)
        .map(|(_, q)| q.as_slice())
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

/// One event of the live stream, as an SSE client reads it (OpenAPI 3.0: the schema of a
/// `text/event-stream` describes each event): a domain event, or the stream's own `reset`
/// (resume from the start), `error` and `shutdown` (reconnect with `Last-Event-ID`).
fn sse_event() -> Value {
    let mut names: Vec<&str> = tipoff_actors::store::EVENT_TYPES.to_vec();
    names.extend(["reset", "error", "shutdown"]);
    json!({
        "type": "object",
        "required": ["event", "data"],
        "properties": {
            "event": {"type": "string", "enum": names},
            "data": {"type": "string", "description": "JSON: a domain event {id, type, created_at, league, payload}, or {reason} for error and shutdown"},
            "id": {"type": "string", "pattern": "^[0-9]+$", "description": "the outbox id (domain events): send it back as Last-Event-ID"},
            "retry": {"type": "integer"},
        },
    })
}

use super::schema::{enum_of, leagues, of, page_of};

/// The schema of a path parameter, from the values the handlers accept.
fn path_schema(path: &str, name: &str) -> Value {
    match name {
        "id" => json!({"type": "integer", "format": "int64", "minimum": 1}),
        "action" if path.starts_with("/admin/withdrawals") => {
            enum_of(["claim", "complete", "fail"])
        }
        "action" => enum_of(["restart", "stop", "start"]),
        _ => json!({"type": "string", "minLength": 1, "maxLength": 100}),
    }
}

/// The schema of a query parameter, from the values the handlers accept.
fn query_schema(path: &str, name: &str) -> Value {
    use tipoff_actors::store::{
        IMPORT_STATES, OUTBOX_STATES, QUARANTINE_STATES, WITHDRAWAL_STATES,
    };
    match (path, name) {
        ("/api/v1/markets/search", "limit") => {
            json!({"type": "integer", "minimum": 1, "maximum": 100})
        }
        (_, "limit") => json!({"type": "integer", "minimum": 1, "maximum": 200}),
        ("/api/v1/games", "cursor") => {
            json!({"type": "string", "pattern": "^-?[0-9]{1,15}:[0-9]{1,18}$"})
        }
        (_, "cursor") => json!({"type": "string", "pattern": "^[0-9]{1,18}$"}),
        (_, "league") => leagues(),
        ("/api/v1/games", "state") => {
            enum_of(tipoff_actors::domain::GameState::ALL.map(|g| g.as_str()))
        }
        ("/api/v1/markets" | "/api/v1/markets/search", "state") => {
            enum_of(super::read::MARKET_STATES.iter().copied())
        }
        ("/admin/imports", "state") => enum_of(IMPORT_STATES.iter().copied()),
        ("/admin/outbox", "state") => enum_of(OUTBOX_STATES.iter().copied()),
        ("/admin/withdrawals", "state") => enum_of(WITHDRAWAL_STATES.iter().copied()),
        ("/admin/deposits/quarantine", "state") => enum_of(QUARANTINE_STATES.iter().copied()),
        (_, "date") => json!({"type": "string", "format": "date"}),
        // Any text; one without letters or digits matches nothing.
        (_, "q") => json!({"type": "string", "minLength": 1, "maxLength": 200}),
        (_, "mode") => enum_of(["hybrid", "keyword"]),
        (_, "unattributed") => enum_of(["true", "false"]),
        (_, "last_event_id") => json!({"type": "integer", "format": "int64", "minimum": 0}),
        (_, "types") => {
            let one = tipoff_actors::store::EVENT_TYPES
                .iter()
                .map(|t| t.replace('.', "\\."))
                .collect::<Vec<_>>()
                .join("|");
            json!({"type": "string", "pattern": format!("^({one})(,({one}))*$")})
        }
        _ => s("string"),
    }
}

/// The OpenAPI 3 document of the table.
pub fn openapi() -> Value {
    let mut paths = Map::new();
    for e in endpoints() {
        let entry = paths
            .entry(e.path.to_string())
            .or_insert_with(|| Value::Object(Map::new()));
        entry[e.method] = operation(&e);
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
                "dashboard": {"type": "apiKey", "in": "cookie", "name": "tipoff_session", "description": "the dashboard session (`__Host-tipoff_session` in production)"},
            },
            "schemas": {
                "Error": of::<super::error::Body<'static>>(),
            },
        },
    })
}

/// One endpoint's operation object: parameters, responses, security and body.
fn operation(e: &Endpoint) -> Value {
    let mut params: Vec<Value> = e
        .path
        .split('/')
        .filter_map(|seg| seg.strip_prefix('{').and_then(|s| s.strip_suffix('}')))
        .map(|name| {
            json!({"name": name, "in": "path", "required": true, "schema": path_schema(e.path, name)})
        })
        .collect();
    params.extend(e.query.iter().map(|(name, description)| {
        let required = e.path == "/api/v1/markets/search" && *name == "q";
        // An empty value is the same as leaving the parameter out.
        let schema = if required {
            query_schema(e.path, name)
        } else {
            json!({"anyOf": [query_schema(e.path, name), {"type": "string", "maxLength": 0}]})
        };
        json!({"name": name, "in": "query", "required": required, "description": description, "schema": schema})
    }));
    let responses = responses(e);
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
        let schema = body();
        // A body whose fields are all optional may be left out altogether.
        let required = schema.get("required").is_some();
        op["requestBody"] =
            json!({"required": required, "content": {"application/json": {"schema": schema}}});
    }
    if e.path == "/admin/ui/logout" {
        if let Some(params) = op["parameters"].as_array_mut() {
            params.push(json!({"name": "X-Tipoff-UI", "in": "header", "required": true, "description": "the dashboard's CSRF header", "schema": {"type": "string", "enum": ["1"]}}));
        }
    }
    if e.path == "/admin/ui/login" {
        op["requestBody"] = json!({"required": true, "content": {"application/x-www-form-urlencoded": {"schema": {"type": "object", "required": ["token"], "properties": {"token": s("string")}}}}});
    }
    op
}

/// One endpoint's answers: its success, the errors every route of its kind may give, and
/// those particular to it.
fn responses(e: &Endpoint) -> Map<String, Value> {
    let ok_content = match e.produces {
        "application/json" => {
            let schema = e.returns.map_or_else(|| s("object"), |returns| returns());
            json!({"application/json": {"schema": schema}})
        }
        "text/event-stream" => json!({"text/event-stream": {"schema": sse_event()}}),
        other => {
            let mut m = Map::new();
            m.insert(other.to_string(), json!({"schema": s("string")}));
            Value::Object(m)
        }
    };
    let mut responses = Map::new();
    let ok = if e.ok.0 == 303 || e.ok.0 == 204 {
        json!({"description": e.ok.1})
    } else {
        json!({"description": e.ok.1, "content": ok_content})
    };
    responses.insert(e.ok.0.to_string(), ok);
    if let Some((status, description)) = e.also {
        // A forwarded command answers what was forwarded; a joined job or an open re-embed
        // job has the shape of the success answer.
        let schema = if status == 202 && e.path.starts_with("/admin/services") {
            of::<ops::ForwardedCommand>()
        } else {
            e.returns.map_or_else(|| s("object"), |returns| returns())
        };
        responses.insert(
            status.to_string(),
            json!({"description": description, "content": {"application/json": {"schema": schema}}}),
        );
    }
    errors(e, &mut responses);
    responses
}

/// The error answers of an endpoint (every one is the `Error` shape but the dashboard's forms).
fn errors(e: &Endpoint, responses: &mut Map<String, Value>) {
    let error = |d: &str| json!({"description": d, "content": {"application/json": {"schema": {"$ref": "#/components/schemas/Error"}}}});
    // Every route refuses query parameters it does not take.
    responses.insert(
        "400".into(),
        error("bad input (a query parameter the route does not take included); the message names the problem"),
    );
    match e.access {
        Access::Admin => {
            responses.insert("401".into(), error("missing or wrong admin token"));
            responses.insert(
                "403".into(),
                error("admin endpoints are disabled (TIPOFF_ADMIN_TOKEN unset), or a dashboard session's write without X-Tipoff-UI"),
            );
            responses.insert(
                "429".into(),
                error("too many failed admin authentications from this address (see Retry-After)"),
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
    if e.body.is_some() || e.path == "/admin/ui/login" {
        responses.insert("413".into(), error("the body is over 16 KiB"));
        responses.insert(
            "415".into(),
            error("the body is not in the content type the endpoint takes"),
        );
    }
    if e.path == "/admin/ui/logout" {
        responses.insert(
            "403".into(),
            error("sign-out without the X-Tipoff-UI header"),
        );
    }
    if e.path == "/admin/ui/login" {
        responses.insert("429".into(), json!({"description": "too many failed sign-ins from this address (see Retry-After): the sign-in form says so", "content": {"text/html": {"schema": s("string")}}}));
    }
    if e.path.starts_with("/admin/ui") && e.path != "/admin/ui/logout" {
        responses.insert("401".into(), json!({"description": "no session, or a wrong token: the sign-in form", "content": {"text/html": {"schema": s("string")}}}));
        responses.insert("403".into(), json!({"description": "admin endpoints are disabled (TIPOFF_ADMIN_TOKEN unset): the sign-in form says so", "content": {"text/html": {"schema": s("string")}}}));
    }
    if e.path == "/api/v1/events" {
        responses.insert(
            "403".into(),
            error("event types other than market events need the admin token"),
        );
    }
    responses.insert(
        "405".into(),
        error("the path does not answer this method (see `Allow`)"),
    );
    responses.insert(
        "503".into(),
        error("unavailable: starting, stopping, database down, or an actor did not answer in time"),
    );
}

/// `/openapi.json`: the table's document, with the `token` fields of request bodies narrowed
/// to this daemon's configured tokens.
async fn openapi_json(
    state: web::Data<super::AppState>,
) -> Result<actix_web::HttpResponse, super::ApiError> {
    if !state.docs {
        return Err(docs_off());
    }
    let mut doc = openapi();
    doc["components"]["securitySchemes"]["dashboard"]["name"] = json!(state.sessions.cookie_name());
    let names: Vec<String> = state.tokens().into_iter().map(|t| t.name).collect();
    if names.is_empty() {
        return Ok(actix_web::HttpResponse::Ok().json(doc));
    }
    let token = json!({"type": "string", "enum": names, "description": "a configured token"});
    if let Some(paths) = doc["paths"].as_object_mut() {
        for item in paths.values_mut().filter_map(Value::as_object_mut) {
            for op in item.values_mut() {
                if let Some(field) =
                    op.pointer_mut("/requestBody/content/application~1json/schema/properties/token")
                {
                    *field = token.clone();
                }
            }
        }
    }
    Ok(actix_web::HttpResponse::Ok().json(doc))
}

fn docs_off() -> super::ApiError {
    super::ApiError::NotFound(
        "the API description is off in production; set TIPOFF_DOCS=true to serve /openapi.json and /docs".into(),
    )
}

const DOCS_HTML: &str = include_str!("docs.html");

async fn docs_page(
    state: web::Data<super::AppState>,
) -> Result<actix_web::HttpResponse, super::ApiError> {
    if !state.docs {
        return Err(docs_off());
    }
    Ok(actix_web::HttpResponse::Ok()
        .content_type("text/html; charset=utf-8")
        .insert_header((
            "content-security-policy",
            "default-src 'self'; script-src 'unsafe-inline'; style-src 'unsafe-inline'",
        ))
        .body(DOCS_HTML))
}
