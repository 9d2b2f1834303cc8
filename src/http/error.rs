//! Errors that decide their own HTTP status and stable code. Bodies are
//! `{"error": {"code", "message"}}`; unexpected errors log their cause and answer a generic message.

use actix_web::http::StatusCode;
use actix_web::{HttpResponse, ResponseError};
use serde::Serialize;

/// An error as the API reports it.
#[derive(Debug, Clone, thiserror::Error)]
pub enum ApiError {
    #[error("{0}")]
    BadRequest(String),
    #[error("{0}")]
    Unauthorized(String),
    #[error("{0}")]
    Forbidden(String),
    #[error("{0}")]
    NotFound(String),
    #[error("{0}")]
    Conflict(String),
    /// A 409 with a specific, stable code (one of [`ApiError::conflict_codes`]).
    #[error("{1}")]
    Refused(&'static str, String),
    /// The path exists, but not with this method (the answer carries `Allow`).
    #[error("{0}")]
    MethodNotAllowed(String),
    /// The request body is over the size limit.
    #[error("{0}")]
    PayloadTooLarge(String),
    /// The request body is not in a media type the endpoint takes.
    #[error("{0}")]
    UnsupportedMediaType(String),
    /// Too many failed attempts from this client: try again after the given seconds.
    #[error("{0}")]
    TooManyRequests(String, u64),
    #[error("{0}")]
    Unavailable(String),
    /// The message is logged, never sent.
    #[error("internal error")]
    Internal(String),
}

impl ApiError {
    /// Every code an error answer can carry.
    pub const CODES: &'static [&'static str] = &[
        "bad_request",
        "unauthorized",
        "forbidden",
        "not_found",
        "conflict",
        "method_not_allowed",
        "payload_too_large",
        "unsupported_media_type",
        "too_many_requests",
        "unavailable",
        "internal",
    ];

    /// The conflicts the HTTP layer itself answers, with what each means (409).
    pub const HTTP_CONFLICT_CODES: &'static [(&'static str, &'static str)] = &[
        (
            "league_not_polled",
            "the import's league is not in TIPOFF_LEAGUES",
        ),
        ("import_finished", "the import job already ended"),
        (
            "embeddings_off",
            "embeddings are not configured (TIPOFF_EMBEDDINGS_URL)",
        ),
        (
            "not_leader",
            "a step-down on a follower, or on SQLite (one process always leads)",
        ),
        (
            "no_replica",
            "a singleton's command on a replica with no leader to forward it to",
        ),
        ("service_skipped", "the service is skipped by configuration"),
        (
            "service_standby",
            "the singleton waits in standby on a follower",
        ),
    ];

    /// Every specific 409 code: the store's and the HTTP layer's, with their meanings.
    pub fn conflict_codes() -> impl Iterator<Item = &'static (&'static str, &'static str)> {
        tipoff_actors::store::CONFLICT_CODES
            .iter()
            .chain(Self::HTTP_CONFLICT_CODES)
    }

    pub fn code(&self) -> &'static str {
        match self {
            ApiError::BadRequest(_) => "bad_request",
            ApiError::Unauthorized(_) => "unauthorized",
            ApiError::Forbidden(_) => "forbidden",
            ApiError::NotFound(_) => "not_found",
            ApiError::Conflict(_) => "conflict",
            ApiError::Refused(code, _) => code,
            ApiError::MethodNotAllowed(_) => "method_not_allowed",
            ApiError::PayloadTooLarge(_) => "payload_too_large",
            ApiError::UnsupportedMediaType(_) => "unsupported_media_type",
            ApiError::TooManyRequests(..) => "too_many_requests",
            ApiError::Unavailable(_) => "unavailable",
            ApiError::Internal(_) => "internal",
        }
    }
}

/// The body of every error answer.
#[derive(Serialize, schemars::JsonSchema)]
pub struct Body<'a> {
    error: Inner<'a>,
}

#[derive(Serialize, schemars::JsonSchema)]
pub struct Inner<'a> {
    #[schemars(schema_with = "code_field")]
    code: &'a str,
    /// For people: names the problem, never echoes more than a short slice of the input.
    message: String,
}

fn code_field(_: &mut schemars::gen::SchemaGenerator) -> schemars::schema::Schema {
    let codes = ApiError::CODES
        .iter()
        .copied()
        .chain(ApiError::conflict_codes().map(|(c, _)| *c));
    let mut schema = super::schema::enum_of(codes);
    let conflicts: Vec<String> = ApiError::conflict_codes()
        .map(|(c, m)| format!("`{c}`: {m}"))
        .collect();
    schema["description"] = serde_json::Value::String(format!(
        "Stable: clients may match on it. A 409 carries `conflict` or one of: {}.",
        conflicts.join("; ")
    ));
    serde_json::from_value(schema).unwrap_or(schemars::schema::Schema::Bool(true))
}

impl ResponseError for ApiError {
    fn status_code(&self) -> StatusCode {
        match self {
            ApiError::BadRequest(_) => StatusCode::BAD_REQUEST,
            ApiError::Unauthorized(_) => StatusCode::UNAUTHORIZED,
            ApiError::Forbidden(_) => StatusCode::FORBIDDEN,
            ApiError::NotFound(_) => StatusCode::NOT_FOUND,
            ApiError::Conflict(_) | ApiError::Refused(..) => StatusCode::CONFLICT,
            ApiError::MethodNotAllowed(_) => StatusCode::METHOD_NOT_ALLOWED,
            ApiError::PayloadTooLarge(_) => StatusCode::PAYLOAD_TOO_LARGE,
            ApiError::UnsupportedMediaType(_) => StatusCode::UNSUPPORTED_MEDIA_TYPE,
            ApiError::TooManyRequests(..) => StatusCode::TOO_MANY_REQUESTS,
            ApiError::Unavailable(_) => StatusCode::SERVICE_UNAVAILABLE,
            ApiError::Internal(_) => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }

    fn error_response(&self) -> HttpResponse {
        if let ApiError::Internal(cause) = self {
            tracing::error!(%cause, "internal error");
        }
        let mut res = HttpResponse::build(self.status_code());
        if matches!(self, ApiError::Unauthorized(_)) {
            res.insert_header(("WWW-Authenticate", "Bearer"));
        }
        if matches!(self, ApiError::Unavailable(_)) {
            // Overload, a database that is down, shutting down: worth another try soon.
            res.insert_header(("Retry-After", "2"));
        }
        if let ApiError::TooManyRequests(_, after) = self {
            res.insert_header(("Retry-After", after.to_string()));
        }
        res.json(Body {
            error: Inner {
                code: self.code(),
                message: self.to_string(),
            },
        })
    }
}

impl From<tipoff_actors::StoreError> for ApiError {
    fn from(e: tipoff_actors::StoreError) -> Self {
        match e {
            tipoff_actors::StoreError::NotFound => ApiError::NotFound("not found".into()),
            tipoff_actors::StoreError::Conflict(m) => ApiError::Conflict(m),
            tipoff_actors::StoreError::Refused { code, message } => {
                ApiError::Refused(code, message)
            }
            tipoff_actors::StoreError::Invalid(m) => ApiError::BadRequest(m),
            e @ (tipoff_actors::StoreError::Fenced(_)
            | tipoff_actors::StoreError::Unavailable(_)) => ApiError::Unavailable(e.to_string()),
            other => ApiError::Internal(other.to_string()),
        }
    }
}

impl From<tipoff_actors::supervisor::Unanswered> for ApiError {
    fn from(e: tipoff_actors::supervisor::Unanswered) -> Self {
        ApiError::Unavailable(e.to_string())
    }
}

impl From<tipoff_actors::supervisor::SupervisorError> for ApiError {
    fn from(e: tipoff_actors::supervisor::SupervisorError) -> Self {
        use tipoff_actors::supervisor::SupervisorError;
        match e {
            SupervisorError::NotFound(_) => ApiError::NotFound(e.to_string()),
            SupervisorError::Skipped(..) => ApiError::Refused("service_skipped", e.to_string()),
            SupervisorError::ShuttingDown => ApiError::Unavailable(e.to_string()),
            SupervisorError::Standby { .. } => ApiError::Refused("service_standby", e.to_string()),
        }
    }
}
