//! Admin authentication: `Authorization: Bearer <admin token>`, compared in constant time over
//! SHA-256 digests (so neither content nor length leaks through timing).
//!
//! The dashboard (`/admin/ui`) signs in once with the token and then carries it in an
//! `HttpOnly`, `SameSite=Strict` cookie; a state-changing request authenticated by that cookie
//! must also carry `X-Tipoff-UI: 1`, which a cross-site form cannot send (CSRF).

use std::future::{ready, Ready};

use actix_web::{dev::Payload, web, FromRequest, HttpRequest};
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

    fn check(&self, presented: Option<&str>) -> Result<(), ApiError> {
        let Some(expected) = &self.0 else {
            return Err(ApiError::Forbidden(
                "admin endpoints are disabled: TIPOFF_ADMIN_TOKEN is not set".into(),
            ));
        };
        let presented = presented.ok_or_else(|| {
            ApiError::Unauthorized(
                "missing bearer token: send Authorization: Bearer <admin token>".into(),
            )
        })?;
        if bool::from(digest(presented).ct_eq(expected)) {
            Ok(())
        } else {
            Err(ApiError::Unauthorized("invalid admin token".into()))
        }
    }
}

/// The token of an `Authorization: Bearer <token>` header, if the request has one.
pub fn bearer(req: &HttpRequest) -> Option<&str> {
    req.headers()
        .get("authorization")
        .and_then(|h| h.to_str().ok())
        .and_then(|h| h.strip_prefix("Bearer "))
        .map(str::trim)
}

/// The dashboard's session cookie.
pub const UI_COOKIE: &str = "tipoff_admin";

/// The admin token a request presents: its bearer token, else the dashboard cookie (which a
/// state-changing request may only use with `X-Tipoff-UI: 1`).
fn presented(req: &HttpRequest) -> Result<Option<String>, ApiError> {
    if let Some(token) = bearer(req) {
        return Ok(Some(token.to_string()));
    }
    let Some(cookie) = req.cookie(UI_COOKIE) else {
        return Ok(None);
    };
    let safe = matches!(
        *req.method(),
        actix_web::http::Method::GET | actix_web::http::Method::HEAD
    );
    if !safe && req.headers().get("x-tipoff-ui").is_none() {
        return Err(ApiError::Forbidden(
            "a dashboard session needs the X-Tipoff-UI header on this request".into(),
        ));
    }
    Ok(Some(cookie.value().to_string()))
}

fn digest(token: &str) -> [u8; 32] {
    Sha256::digest(token.as_bytes()).into()
}

/// Extractor guarding admin handlers.
pub struct Admin;

impl FromRequest for Admin {
    type Error = ApiError;
    type Future = Ready<Result<Self, Self::Error>>;

    fn from_request(req: &HttpRequest, _: &mut Payload) -> Self::Future {
        let result = match req.app_data::<web::Data<AppState>>() {
            Some(state) => {
                presented(req).and_then(|token| state.admin.check(token.as_deref()).map(|()| Admin))
            }
            None => Err(ApiError::Internal("application state missing".into())),
        };
        ready(result)
    }
}

/// Whether `req` is authenticated as admin (bearer token or dashboard cookie), with the error
/// the admin extractor would give.
pub fn check_admin(req: &HttpRequest, state: &AppState) -> Result<(), ApiError> {
    let token = presented(req)?;
    state.admin.check(token.as_deref())
}

/// Whether the request carries the admin token (for endpoints open to all that show admins
/// more); never an error.
pub struct IsAdmin(pub bool);

impl FromRequest for IsAdmin {
    type Error = ApiError;
    type Future = Ready<Result<Self, Self::Error>>;

    fn from_request(req: &HttpRequest, _: &mut Payload) -> Self::Future {
        let admin = match (req.app_data::<web::Data<AppState>>(), presented(req)) {
            (Some(state), Ok(Some(token))) => state.admin.matches(&token),
            _ => false,
        };
        ready(Ok(IsAdmin(admin)))
    }
}
