//! A local webhook receiver: records every POST (event id and type headers, signature, body)
//! and answers 200, or, while told to fail, a chosen status with an optional `Retry-After`.
//! Served by `mock_server::serve`, like the other mocks.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use actix_web::{web, HttpRequest, HttpResponse};
use hmac::{Hmac, Mac};
use sha2::Sha256;

pub const WEBHOOK_SECRET: &str = "test-webhook-secret-0123456789";

/// One POST as received.
#[derive(Debug, Clone)]
pub struct Received {
    pub id: i64,
    pub event_type: String,
    pub signature: String,
    pub body: Vec<u8>,
    /// Whether it was answered 2xx.
    pub accepted: bool,
    /// The tipoff instance that sent it.
    pub instance: String,
}

impl Received {
    pub fn json(&self) -> serde_json::Value {
        serde_json::from_slice(&self.body).expect("webhook body is JSON")
    }

    /// Whether the signature header is the HMAC-SHA256 of the body under `secret`.
    pub fn verifies(&self, secret: &str) -> bool {
        let Some(hex) = self.signature.strip_prefix("sha256=") else {
            return false;
        };
        let Ok(bytes) = (0..hex.len())
            .step_by(2)
            .map(|i| u8::from_str_radix(hex.get(i..i + 2).unwrap_or("zz"), 16))
            .collect::<Result<Vec<u8>, _>>()
        else {
            return false;
        };
        let mut mac = Hmac::<Sha256>::new_from_slice(secret.as_bytes()).unwrap();
        mac.update(&self.body);
        mac.verify_slice(&bytes).is_ok()
    }
}

#[derive(Default)]
struct State {
    received: Vec<Received>,
    /// `Some((status, retry_after))` while failing.
    failing: Option<(u16, Option<String>)>,
}

pub struct MockWebhook {
    pub url: String,
    state: Arc<Mutex<State>>,
    handle: actix_web::dev::ServerHandle,
}

async fn receive(
    req: HttpRequest,
    body: web::Bytes,
    state: web::Data<Arc<Mutex<State>>>,
) -> HttpResponse {
    let header = |name: &str| {
        req.headers()
            .get(name)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("")
            .to_string()
    };
    let mut s = state.lock().unwrap();
    let failing = s.failing.clone();
    s.received.push(Received {
        id: header("x-tipoff-event-id").parse().unwrap_or(-1),
        event_type: header("x-tipoff-event-type"),
        signature: header("x-tipoff-signature"),
        body: body.to_vec(),
        accepted: failing.is_none(),
        instance: crate::mock_server::instance_of(&req),
    });
    match failing {
        None => HttpResponse::Ok().finish(),
        Some((status, retry_after)) => {
            let mut res =
                HttpResponse::build(actix_web::http::StatusCode::from_u16(status).unwrap());
            if let Some(r) = retry_after {
                res.insert_header(("retry-after", r));
            }
            res.body("receiver unavailable")
        }
    }
}

impl MockWebhook {
    pub fn start() -> MockWebhook {
        let state = Arc::new(Mutex::new(State::default()));
        let data = state.clone();
        let (port, handle) = crate::mock_server::serve("webhook", 1, data, |cfg| {
            cfg.route("/hook", web::post().to(receive));
        });
        MockWebhook {
            url: format!("http://127.0.0.1:{port}/hook"),
            state,
            handle,
        }
    }

    /// Answer `status` (with `Retry-After` when given) until [`recover`](Self::recover).
    pub fn fail(&self, status: u16, retry_after: Option<&str>) {
        self.state.lock().unwrap().failing = Some((status, retry_after.map(str::to_string)));
    }

    pub fn recover(&self) {
        self.state.lock().unwrap().failing = None;
    }

    pub fn received(&self) -> Vec<Received> {
        self.state.lock().unwrap().received.clone()
    }

    /// The accepted deliveries.
    pub fn accepted(&self) -> Vec<Received> {
        self.received().into_iter().filter(|r| r.accepted).collect()
    }

    /// Waits until `n` distinct event ids were accepted; returns the accepted deliveries.
    pub async fn wait_accepted(&self, n: usize, within: Duration) -> Vec<Received> {
        let started = Instant::now();
        loop {
            let accepted = self.accepted();
            let mut ids: Vec<i64> = accepted.iter().map(|r| r.id).collect();
            ids.sort();
            ids.dedup();
            if ids.len() >= n {
                return accepted;
            }
            assert!(
                started.elapsed() < within,
                "only {} of {n} events accepted within {within:?}: {ids:?}",
                ids.len()
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}

impl Drop for MockWebhook {
    fn drop(&mut self) {
        // Sends the stop command at once; the server's own thread finishes it.
        drop(self.handle.stop(false));
    }
}
