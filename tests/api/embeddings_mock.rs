//! A local stand-in for an OpenAI-compatible embeddings API (`POST /v1/embeddings`), served
//! by `mock_server::serve` like the other mocks. Its vectors are deterministic and carry real
//! similarity: each text's character trigrams (per word, padded with spaces, lower case) are
//! hashed into `dim` buckets and the counts L2-normalised, so `celtcs` lands near `Celtics`.
//!
//! It can be told to misbehave: answer a status (with `Retry-After`), stall past any timeout,
//! send garbage, send the wrong number of vectors, or switch dimension. It counts calls and
//! the inputs it embedded.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use actix_web::{web, HttpRequest, HttpResponse};
use serde_json::{json, Value};

/// How the mock answers.
#[derive(Debug, Clone, PartialEq)]
pub enum Behaviour {
    Healthy,
    /// This status, with `Retry-After` seconds when given.
    Status(u16, Option<u64>),
    /// No answer for this long.
    Stall(Duration),
    /// A 200 whose body is not JSON.
    Garbage,
    /// One vector fewer than inputs.
    WrongCount,
}

struct State {
    dim: usize,
    behaviour: Behaviour,
    /// Added to every healthy answer.
    delay: Duration,
    calls: usize,
    /// Every input of a call answered healthily, in the order the calls arrived.
    inputs: Vec<String>,
    /// The `Authorization` header of the last call.
    authorization: Option<String>,
}

#[derive(Clone)]
struct Shared(Arc<Mutex<State>>);

pub struct MockEmbeddings {
    pub url: String,
    state: Arc<Mutex<State>>,
    handle: actix_web::dev::ServerHandle,
}

fn fnv(text: &str) -> u64 {
    text.bytes().fold(0xcbf29ce484222325u64, |h, b| {
        (h ^ u64::from(b)).wrapping_mul(0x100000001b3)
    })
}

/// The mock's vector of `text` (see the module documentation).
pub fn embed(text: &str, dim: usize) -> Vec<f32> {
    let mut v = vec![0f32; dim];
    for word in text
        .to_lowercase()
        .split(|c: char| !c.is_alphanumeric())
        .filter(|w| !w.is_empty())
    {
        let padded: Vec<char> = format!(" {word} ").chars().collect();
        for tri in padded.windows(3) {
            let s: String = tri.iter().collect();
            v[(fnv(&s) % dim as u64) as usize] += 1.0;
        }
    }
    let norm = v.iter().map(|x| x * x).sum::<f32>().sqrt().max(1e-6);
    v.iter().map(|x| x / norm).collect()
}

async fn embeddings(
    req: HttpRequest,
    state: web::Data<Shared>,
    body: web::Json<Value>,
) -> HttpResponse {
    let inputs: Vec<String> = match &body["input"] {
        Value::String(s) => vec![s.clone()],
        Value::Array(items) => items
            .iter()
            .map(|i| i.as_str().unwrap_or_default().to_string())
            .collect(),
        _ => return HttpResponse::BadRequest().json(json!({"error": "input is required"})),
    };
    let (behaviour, delay, dim) = {
        let mut s = state.0.lock().unwrap();
        s.calls += 1;
        s.authorization = req
            .headers()
            .get("authorization")
            .and_then(|v| v.to_str().ok())
            .map(str::to_string);
        if s.behaviour == Behaviour::Healthy {
            s.inputs.extend(inputs.iter().cloned());
        }
        (s.behaviour.clone(), s.delay, s.dim)
    };
    match behaviour {
        Behaviour::Status(status, retry_after) => {
            let mut res =
                HttpResponse::build(actix_web::http::StatusCode::from_u16(status).unwrap());
            if let Some(secs) = retry_after {
                res.insert_header(("Retry-After", secs.to_string()));
            }
            return res.json(json!({"error": {"message": "mock says no"}}));
        }
        Behaviour::Stall(d) => {
            tokio::time::sleep(d).await;
        }
        Behaviour::Garbage => {
            return HttpResponse::Ok()
                .content_type("application/json")
                .body("{\"data\": [ {\"index\": 0, \"embedd");
        }
        Behaviour::WrongCount | Behaviour::Healthy => {}
    }
    if !delay.is_zero() {
        tokio::time::sleep(delay).await;
    }
    let mut data: Vec<Value> = inputs
        .iter()
        .enumerate()
        .map(|(i, text)| json!({"object": "embedding", "index": i, "embedding": embed(text, dim)}))
        .collect();
    if behaviour == Behaviour::WrongCount {
        data.pop();
    }
    HttpResponse::Ok().json(json!({
        "object": "list",
        "data": data,
        "model": body["model"],
        "usage": {"prompt_tokens": 0, "total_tokens": 0},
    }))
}

fn routes(cfg: &mut web::ServiceConfig) {
    cfg.route("/v1/embeddings", web::post().to(embeddings));
}

impl MockEmbeddings {
    /// A healthy mock answering `dim`-dimension vectors.
    pub fn start(dim: usize) -> MockEmbeddings {
        let state = Arc::new(Mutex::new(State {
            dim,
            behaviour: Behaviour::Healthy,
            delay: Duration::ZERO,
            calls: 0,
            inputs: Vec::new(),
            authorization: None,
        }));
        let (port, handle) =
            crate::mock_server::serve("embeddings", 4, Shared(state.clone()), routes);
        MockEmbeddings {
            url: format!("http://127.0.0.1:{port}"),
            state,
            handle,
        }
    }

    pub fn set(&self, behaviour: Behaviour) {
        self.state.lock().unwrap().behaviour = behaviour;
    }

    pub fn set_dim(&self, dim: usize) {
        self.state.lock().unwrap().dim = dim;
    }

    pub fn set_delay(&self, delay: Duration) {
        self.state.lock().unwrap().delay = delay;
    }

    pub fn calls(&self) -> usize {
        self.state.lock().unwrap().calls
    }

    /// Inputs of the calls answered healthily so far (recorded as they arrive).
    pub fn inputs(&self) -> Vec<String> {
        self.state.lock().unwrap().inputs.clone()
    }

    pub fn authorization(&self) -> Option<String> {
        self.state.lock().unwrap().authorization.clone()
    }
}

impl Drop for MockEmbeddings {
    fn drop(&mut self) {
        // Sends the stop command at once; the server's own thread finishes it.
        drop(self.handle.stop(false));
    }
}
