//! Admin authentication: `Authorization: Bearer <admin token>`, compared in constant time over
//! SHA-256 digests (so neither content nor length leaks through timing).

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
            Some(state) => state.admin.check(bearer(req)).map(|()| Admin),
            None => Err(ApiError::Internal("application state missing".into())),
        };
        ready(result)
    }
}
