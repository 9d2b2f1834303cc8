//! Admin authentication: `Authorization: Bearer <admin token>`, compared in constant time over
//! SHA-256 digests (so neither content nor length leaks through timing), or a dashboard session.
//!
//! - **Sessions.** Signing in to the dashboard (`/admin/ui/login`) opens a session: a random
//!   256-bit id in an `HttpOnly`, `SameSite=Strict` cookie (`__Host-` prefixed and `Secure` in
//!   production), stored in the database as its SHA-256 with an expiry (`TIPOFF_SESSION_TTL`)
//!   so every replica knows it. Logout deletes it; a session also belongs to the admin token it
//!   was opened with, so changing the token revokes them all. The cookie is never the token.
//! - **CSRF.** A state-changing request authenticated by the session cookie must also carry
//!   `X-Tipoff-UI: 1`, which a cross-site form cannot send.
//! - **Failed attempts.** A wrong admin token (bearer or sign-in form) counts against the
//!   client's address (IPv6: its /64); past `TIPOFF_AUTH_FAILURE_LIMIT` failures within
//!   `TIPOFF_AUTH_FAILURE_WINDOW` every token it presents answers 429 with `Retry-After` until
//!   the window ends, the right one included. Counts are per replica and in memory.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use actix_web::{dev::Payload, web, FromRequest, HttpRequest};
use futures_util::future::LocalBoxFuture;
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

use super::{error::ApiError, AppState};

/// The configured admin token, kept only as its digest.
#[derive(Clone)]
pub struct AdminToken(Option<[u8; 32]>);

impl AdminToken {
    pub fn new(token: Option<&str>) -> Self {
        AdminToken(token.map(digest))
    }

    /// Whether `presented` is the admin token (false when none is configured).
    pub fn matches(&self, presented: &str) -> bool {
        self.0
            .as_ref()
            .is_some_and(|expected| bool::from(digest(presented).ct_eq(expected)))
    }

    pub fn configured(&self) -> bool {
        self.0.is_some()
    }

    /// What a session stores to name the token it was opened with: a digest of the token's
    /// digest under a label, so the table never holds anything that signs in.
    fn session_key(&self) -> Option<String> {
        self.0.map(|d| {
            let mut h = Sha256::new();
            h.update(b"tipoff-session-token:");
            h.update(d);
            hex::encode(h.finalize())
        })
    }

    fn disabled() -> ApiError {
        ApiError::Forbidden("admin endpoints are disabled: TIPOFF_ADMIN_TOKEN is not set".into())
    }
}

fn digest(token: &str) -> [u8; 32] {
    Sha256::digest(token.as_bytes()).into()
}

/// The token of an `Authorization: Bearer <token>` header, if the request has one.
pub fn bearer(req: &HttpRequest) -> Option<&str> {
    req.headers()
        .get("authorization")
        .and_then(|h| h.to_str().ok())
        .and_then(|h| h.strip_prefix("Bearer "))
        .map(str::trim)
}

/// How dashboard sessions are kept.
#[derive(Debug, Clone)]
pub struct Sessions {
    pub ttl: Duration,
    /// Production: the `__Host-` cookie name and `Secure`.
    pub secure: bool,
}

impl Sessions {
    pub fn cookie_name(&self) -> &'static str {
        if self.secure {
            "__Host-tipoff_session"
        } else {
            "tipoff_session"
        }
    }

    /// A new random session id (256 bits, hex).
    pub fn new_id() -> String {
        let bytes: [u8; 32] = rand::random();
        hex::encode(bytes)
    }

    /// What the table stores for session `id`.
    fn id_hash(id: &str) -> String {
        hex::encode(Sha256::digest(id.as_bytes()))
    }

    /// Opens a session for `admin`'s token; answers its id.
    pub async fn open(&self, state: &AppState) -> Result<String, ApiError> {
        let key = state.admin.session_key().ok_or_else(AdminToken::disabled)?;
        let id = Self::new_id();
        let now = chrono::Utc::now();
        let ttl = chrono::Duration::from_std(self.ttl).unwrap_or(chrono::Duration::hours(12));
        state
            .store
            .open_session(&Self::id_hash(&id), &key, now, now + ttl)
            .await?;
        Ok(id)
    }

    /// Ends session `id`, if it exists.
    pub async fn close(&self, state: &AppState, id: &str) -> Result<bool, ApiError> {
        Ok(state.store.close_session(&Self::id_hash(id)).await?)
    }

    async fn active(&self, state: &AppState, id: &str) -> Result<bool, ApiError> {
        let Some(key) = state.admin.session_key() else {
            return Ok(false);
        };
        // Ids are 64 hex digits; anything else is no session (and costs no query).
        if id.len() != 64 || !id.bytes().all(|b| b.is_ascii_hexdigit()) {
            return Ok(false);
        }
        Ok(state
            .store
            .session_active(&Self::id_hash(id), &key, chrono::Utc::now())
            .await?)
    }
}

/// Failed admin authentications per client address, in fixed windows.
pub struct AuthLimiter {
    limit: u32,
    window: Duration,
    clients: Mutex<HashMap<IpAddr, (Instant, u32)>>,
}

/// Addresses tracked at most; past it, finished windows are dropped first.
const MAX_TRACKED: usize = 100_000;

impl AuthLimiter {
    pub fn new(limit: u32, window: Duration) -> Self {
        AuthLimiter {
            limit,
            window,
            clients: Mutex::new(HashMap::new()),
        }
    }

    /// The address failures are counted under: IPv4 as is, IPv6 by its /64 (one host's
    /// usual allocation).
    pub fn client(req: &HttpRequest) -> Option<IpAddr> {
        req.peer_addr().map(|a| match a.ip() {
            IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
                Some(v4) => IpAddr::V4(v4),
                None => {
                    let s = v6.segments();
                    IpAddr::V6(std::net::Ipv6Addr::new(s[0], s[1], s[2], s[3], 0, 0, 0, 0))
                }
            },
            v4 => v4,
        })
    }

    /// `Some(seconds to wait)` while `client` is over the limit.
    pub fn blocked(&self, client: Option<IpAddr>) -> Option<u64> {
        let client = client?;
        let clients = self.clients.lock().unwrap_or_else(|e| e.into_inner());
        let (started, failures) = clients.get(&client)?;
        let elapsed = started.elapsed();
        (*failures >= self.limit && elapsed < self.window)
            .then(|| (self.window - elapsed).as_secs().max(1))
    }

    /// Counts one failure of `client`.
    pub fn failed(&self, client: Option<IpAddr>) {
        let Some(client) = client else { return };
        let mut clients = self.clients.lock().unwrap_or_else(|e| e.into_inner());
        if clients.len() >= MAX_TRACKED && !clients.contains_key(&client) {
            let window = self.window;
            clients.retain(|_, (started, _)| started.elapsed() < window);
            if clients.len() >= MAX_TRACKED {
                clients.clear();
            }
        }
        let entry = clients.entry(client).or_insert((Instant::now(), 0));
        if entry.0.elapsed() >= self.window {
            *entry = (Instant::now(), 0);
        }
        entry.1 = entry.1.saturating_add(1);
        if entry.1 == self.limit {
            tracing::warn!(%client, failures = entry.1, "failed admin authentications: client blocked for the rest of the window");
        }
    }

    /// The error for a blocked client.
    pub fn too_many(wait: u64) -> ApiError {
        ApiError::TooManyRequests(
            format!(
                "too many failed admin authentications from this address; try again in {wait}s"
            ),
            wait,
        )
    }
}

/// What a request presents as admin credentials.
enum Credential {
    None,
    Bearer(String),
    Session(String),
}

/// The request's credential: its bearer token, else the dashboard session cookie (which a
/// state-changing request may only use with `X-Tipoff-UI: 1`).
fn presented(req: &HttpRequest, state: &AppState) -> Result<Credential, ApiError> {
    if let Some(token) = bearer(req) {
        return Ok(Credential::Bearer(token.to_string()));
    }
    let Some(cookie) = req.cookie(state.sessions.cookie_name()) else {
        return Ok(Credential::None);
    };
    let safe = matches!(
        *req.method(),
        actix_web::http::Method::GET | actix_web::http::Method::HEAD
    );
    if !safe && !ui_header(req) {
        return Err(ApiError::Forbidden(
            "a dashboard session needs the header X-Tipoff-UI: 1 on this request".into(),
        ));
    }
    Ok(Credential::Session(cookie.value().to_string()))
}

/// How a presented admin token fared.
pub enum Attempt {
    Right,
    Wrong,
    /// The client is over its failure limit: nothing it presents is checked (seconds to wait).
    Blocked(u64),
}

/// Checks an admin token `req` presents (bearer or sign-in form) against the failure limit of
/// its address, counting a wrong one.
pub fn attempt(req: &HttpRequest, state: &AppState, token: &str) -> Attempt {
    let client = AuthLimiter::client(req);
    if let Some(wait) = state.auth_limiter.blocked(client) {
        return Attempt::Blocked(wait);
    }
    if state.admin.matches(token) {
        Attempt::Right
    } else {
        state.auth_limiter.failed(client);
        Attempt::Wrong
    }
}

/// Whether `req` carries the dashboard's CSRF header, `X-Tipoff-UI: 1` (a cross-site form
/// cannot send it).
pub fn ui_header(req: &HttpRequest) -> bool {
    req.headers()
        .get("x-tipoff-ui")
        .is_some_and(|v| v.as_bytes() == b"1")
}

/// Whether `req` is authenticated as admin, with the error the admin extractor gives.
pub async fn check_admin(req: &HttpRequest, state: &AppState) -> Result<(), ApiError> {
    if !state.admin.configured() {
        return Err(AdminToken::disabled());
    }
    match presented(req, state)? {
        Credential::None => Err(ApiError::Unauthorized(
            "missing bearer token: send Authorization: Bearer <admin token>".into(),
        )),
        Credential::Bearer(token) => match attempt(req, state, &token) {
            Attempt::Right => Ok(()),
            Attempt::Wrong => Err(ApiError::Unauthorized("invalid admin token".into())),
            Attempt::Blocked(wait) => Err(AuthLimiter::too_many(wait)),
        },
        Credential::Session(id) => {
            if state.sessions.active(state, &id).await? {
                Ok(())
            } else {
                Err(ApiError::Unauthorized(
                    "the dashboard session expired or was signed out; sign in again".into(),
                ))
            }
        }
    }
}

fn app_state(req: &HttpRequest) -> Result<web::Data<AppState>, ApiError> {
    req.app_data::<web::Data<AppState>>()
        .cloned()
        .ok_or_else(|| ApiError::Internal("application state missing".into()))
}

/// Extractor guarding admin handlers.
pub struct Admin;

impl FromRequest for Admin {
    type Error = ApiError;
    type Future = LocalBoxFuture<'static, Result<Self, Self::Error>>;

    fn from_request(req: &HttpRequest, _: &mut Payload) -> Self::Future {
        let req = req.clone();
        Box::pin(async move {
            let state = app_state(&req)?;
            check_admin(&req, &state).await.map(|()| Admin)
        })
    }
}

/// Whether the request carries admin credentials (for endpoints open to all that show admins
/// more); never an error. A client blocked for failed attempts is not admin.
pub struct IsAdmin(pub bool);

impl FromRequest for IsAdmin {
    type Error = ApiError;
    type Future = LocalBoxFuture<'static, Result<Self, Self::Error>>;

    fn from_request(req: &HttpRequest, _: &mut Payload) -> Self::Future {
        let req = req.clone();
        Box::pin(async move {
            let Ok(state) = app_state(&req) else {
                return Ok(IsAdmin(false));
            };
            let admin = match presented(&req, &state) {
                Ok(Credential::Bearer(token)) => {
                    state
                        .auth_limiter
                        .blocked(AuthLimiter::client(&req))
                        .is_none()
                        && state.admin.matches(&token)
                }
                Ok(Credential::Session(id)) => {
                    state.sessions.active(&state, &id).await.unwrap_or(false)
                }
                _ => false,
            };
            Ok(IsAdmin(admin))
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_client_is_blocked_at_the_limit_and_only_for_the_window() {
        let limiter = AuthLimiter::new(3, Duration::from_millis(300));
        let a = Some("192.0.2.1".parse().unwrap());
        let b = Some("192.0.2.2".parse().unwrap());
        for _ in 0..2 {
            limiter.failed(a);
        }
        assert_eq!(limiter.blocked(a), None, "under the limit");
        limiter.failed(a);
        assert_eq!(limiter.blocked(a), Some(1), "at the limit");
        assert_eq!(limiter.blocked(b), None, "another address is not affected");
        std::thread::sleep(Duration::from_millis(350));
        assert_eq!(limiter.blocked(a), None, "the window ended");
        limiter.failed(a);
        assert_eq!(limiter.blocked(a), None, "a new window counts from zero");
    }

    #[test]
    fn session_ids_are_random_and_hex() {
        let (a, b) = (Sessions::new_id(), Sessions::new_id());
        assert_ne!(a, b);
        assert_eq!(a.len(), 64);
        assert!(a.bytes().all(|c| c.is_ascii_hexdigit()));
        assert_ne!(
            Sessions::id_hash(&a),
            a,
            "the table never holds the id itself"
        );
    }
}
