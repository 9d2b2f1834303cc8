//! A local stand-in for ESPN's scoreboard API, serving the real fixtures of
//! `../shared/fixtures/espn` (and, where they lack a case, boards CONSTRUCTED from their shapes,
//! marked as such below). It runs on its own thread with its own actix system, so a test that
//! blocks (waiting on a daemon process) never starves it.
//!
//! Every `(espn path, YYYYMMDD)` board can be given a script of replies (status, headers, body,
//! delay): they are served in order and the last one repeats. Boards without a script get the
//! real empty-day fixture. Hits are counted per board.

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use actix_web::{web, HttpRequest, HttpResponse};
use chrono::NaiveDate;
use serde_json::Value;

/// A real ESPN fixture from `../shared/fixtures/espn` (or `$TIPOFF_FIXTURES_DIR/espn`).
pub fn espn_fixture(name: &str) -> Vec<u8> {
    let dir = std::env::var("TIPOFF_FIXTURES_DIR")
        .unwrap_or_else(|_| concat!(env!("CARGO_MANIFEST_DIR"), "/../shared/fixtures").to_string());
    std::fs::read(format!("{dir}/espn/{name}"))
        .unwrap_or_else(|e| panic!("fixture {name} in {dir}: {e}"))
}

/// One scripted answer.
#[derive(Debug, Clone)]
pub struct Reply {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
    pub delay: Duration,
}

impl Reply {
    pub fn ok(body: Vec<u8>) -> Reply {
        Reply {
            status: 200,
            headers: vec![("content-type".into(), "application/json".into())],
            body,
            delay: Duration::ZERO,
        }
    }

    pub fn status(status: u16) -> Reply {
        Reply {
            status,
            headers: Vec::new(),
            body: format!("upstream says {status}").into_bytes(),
            delay: Duration::ZERO,
        }
    }

    pub fn header(mut self, name: &str, value: &str) -> Reply {
        self.headers.push((name.into(), value.into()));
        self
    }

    pub fn delayed(mut self, delay: Duration) -> Reply {
        self.delay = delay;
        self
    }
}

#[derive(Default)]
struct State {
    scripts: HashMap<String, VecDeque<Reply>>,
    hits: HashMap<String, usize>,
    /// Requests per tipoff instance.
    agents: HashMap<String, usize>,
    /// Added to every reply (to keep imports in flight long enough to interrupt them).
    delay: Duration,
    /// Percent of requests answered with a fault instead (CONSTRUCTED faults: 500, 429 with
    /// `Retry-After: 1`, a stall of 3 s, or the board's JSON cut in half), chosen by a
    /// deterministic sequence.
    flaky: u64,
    requests: u64,
}

/// The fault for request number `n` when `percent` of requests fail (`None`: answer).
fn fault(n: u64, percent: u64, reply: &Reply) -> Option<Reply> {
    // splitmix64: a fixed, well-mixed sequence, so a run's faults are reproducible.
    let mut z = n.wrapping_add(0x9E37_79B9_7F4A_7C15);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^= z >> 31;
    if z % 100 >= percent {
        return None;
    }
    Some(match (z / 100) % 4 {
        0 => Reply::status(500),
        1 => Reply::status(429).header("retry-after", "1"),
        2 => Reply::status(200).delayed(Duration::from_secs(3)),
        _ => Reply::ok(reply.body[..reply.body.len() / 2].to_vec()),
    })
}

/// The mock server; stops when dropped.
pub struct MockEspn {
    pub base_url: String,
    state: Arc<Mutex<State>>,
    handle: actix_web::dev::ServerHandle,
}

fn key(espn_path: &str, date: NaiveDate) -> String {
    format!("{espn_path}/{}", date.format("%Y%m%d"))
}

async fn scoreboard(
    req: HttpRequest,
    path: web::Path<(String, String)>,
    state: web::Data<Arc<Mutex<State>>>,
) -> HttpResponse {
    let (sport, league) = path.into_inner();
    let dates = web::Query::<HashMap<String, String>>::from_query(req.query_string())
        .ok()
        .and_then(|q| q.get("dates").cloned())
        .unwrap_or_default();
    let board = format!("{sport}/{league}/{dates}");
    let (reply, extra) = {
        let mut s = state.lock().unwrap();
        *s.hits.entry(board.clone()).or_default() += 1;
        crate::mock_server::count(&mut s.agents, crate::mock_server::instance_of(&req));
        let reply = match s.scripts.get_mut(&board) {
            Some(queue) if queue.len() > 1 => queue.pop_front().unwrap(),
            Some(queue) => queue.front().cloned().unwrap(),
            None => Reply::ok(empty_day()),
        };
        s.requests += 1;
        let reply = fault(s.requests, s.flaky, &reply).unwrap_or(reply);
        (reply, s.delay)
    };
    let wait = reply.delay + extra;
    if !wait.is_zero() {
        actix_rt::time::sleep(wait).await;
    }
    let mut res = HttpResponse::build(actix_web::http::StatusCode::from_u16(reply.status).unwrap());
    for (k, v) in &reply.headers {
        res.insert_header((k.as_str(), v.as_str()));
    }
    res.body(reply.body)
}

impl MockEspn {
    pub fn start() -> MockEspn {
        let state = Arc::new(Mutex::new(State::default()));
        let data = state.clone();
        let (port, handle) = crate::mock_server::serve("ESPN", 2, data, |cfg| {
            cfg.route(
                "/apis/site/v2/sports/{sport}/{league}/scoreboard",
                web::get().to(scoreboard),
            );
        });
        MockEspn {
            base_url: format!("http://127.0.0.1:{port}"),
            state,
            handle,
        }
    }

    /// Serves `body` for the board from now on.
    pub fn serve(&self, espn_path: &str, date: NaiveDate, body: Vec<u8>) {
        self.script(espn_path, date, vec![Reply::ok(body)]);
    }

    /// Serves `replies` in order for the board; the last one repeats.
    pub fn script(&self, espn_path: &str, date: NaiveDate, replies: Vec<Reply>) {
        assert!(!replies.is_empty());
        self.state
            .lock()
            .unwrap()
            .scripts
            .insert(key(espn_path, date), replies.into());
    }

    /// Requests seen for the board.
    pub fn hits(&self, espn_path: &str, date: NaiveDate) -> usize {
        let s = self.state.lock().unwrap();
        s.hits.get(&key(espn_path, date)).copied().unwrap_or(0)
    }

    /// Requests so far per tipoff instance (by `User-Agent`).
    pub fn agents(&self) -> HashMap<String, usize> {
        self.state.lock().unwrap().agents.clone()
    }

    /// Answers `percent` of the requests from now on with a fault (see [`fault`]).
    pub fn set_flaky(&self, percent: u64) {
        self.state.lock().unwrap().flaky = percent;
    }

    /// Delays every reply by `delay` (on top of its own).
    pub fn set_delay(&self, delay: Duration) {
        self.state.lock().unwrap().delay = delay;
    }
}

impl Drop for MockEspn {
    fn drop(&mut self) {
        // Sends the stop command at once; the server's own thread finishes it.
        drop(self.handle.stop(false));
    }
}

fn json(body: &[u8]) -> Value {
    let body = body.strip_prefix(b"\xEF\xBB\xBF").unwrap_or(body);
    serde_json::from_slice(body).expect("fixture is JSON")
}

fn empty_day() -> Vec<u8> {
    static EMPTY: OnceLock<Vec<u8>> = OnceLock::new();
    EMPTY
        .get_or_init(|| espn_fixture("nba-scoreboard-20260218-empty.json"))
        .clone()
}

/// CONSTRUCTED: `fixture` with event `event_id` given ESPN status `name` (`state`,
/// `completed`), as ESPN reports postponed, canceled or finished games. A finished one gets
/// `winner` flags from its scores (and `final_score` when given as (home, away)).
pub fn with_status(
    fixture: &[u8],
    event_id: &str,
    name: &str,
    state: &str,
    completed: bool,
    final_score: Option<(u32, u32)>,
) -> Vec<u8> {
    let mut board = json(fixture);
    let event = board["events"]
        .as_array_mut()
        .unwrap()
        .iter_mut()
        .find(|e| e["id"] == event_id)
        .unwrap_or_else(|| panic!("no event {event_id}"));
    let detail = match name {
        "STATUS_POSTPONED" => "Postponed",
        "STATUS_CANCELED" => "Canceled",
        "STATUS_FINAL" => "Final",
        other => other,
    };
    let kind = serde_json::json!({
        "name": name, "state": state, "completed": completed,
        "description": detail, "detail": detail, "shortDetail": detail,
    });
    event["status"]["type"] = kind.clone();
    event["competitions"][0]["status"]["type"] = kind;
    let competitors = event["competitions"][0]["competitors"]
        .as_array_mut()
        .unwrap();
    if let Some((home, away)) = final_score {
        for c in competitors.iter_mut() {
            let score = if c["homeAway"] == "home" { home } else { away };
            c["score"] = score.to_string().into();
        }
    }
    if completed {
        let score = |c: &Value| c["score"].as_str().unwrap().parse::<u32>().unwrap();
        let (a, b) = (score(&competitors[0]), score(&competitors[1]));
        competitors[0]["winner"] = (a > b).into();
        competitors[1]["winner"] = (b > a).into();
    }
    serde_json::to_vec(&board).unwrap()
}

/// CONSTRUCTED: a board of `n` final games on `date`, each a copy of a real final event of
/// `nba-scoreboard-20240129.json` with a new event id (`<YYYYMMDD><nn>`) and start time.
pub fn generated_board(date: NaiveDate, n: usize) -> Vec<u8> {
    static TEMPLATE: OnceLock<Value> = OnceLock::new();
    let template = TEMPLATE.get_or_init(|| json(&espn_fixture("nba-scoreboard-20240129.json")));
    let events = template["events"].as_array().unwrap();
    let next_day = date.succ_opt().unwrap();
    let generated: Vec<Value> = (0..n)
        .map(|j| {
            let mut e = events[j % events.len()].clone();
            let id = format!("{}{j:02}", date.format("%Y%m%d"));
            let starts = format!("{}T{:02}:{:02}Z", next_day, j % 5, (j * 30) % 60);
            e["id"] = id.clone().into();
            e["uid"] = format!("s:40~l:46~e:{id}").into();
            e["date"] = starts.clone().into();
            e["competitions"][0]["id"] = id.into();
            e["competitions"][0]["date"] = starts.into();
            e
        })
        .collect();
    serde_json::to_vec(&serde_json::json!({
        "leagues": template["leagues"],
        "events": generated,
    }))
    .unwrap()
}
