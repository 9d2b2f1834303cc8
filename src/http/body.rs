//! Request bodies: at most [`MAX_BODY`] bytes of JSON, parsed strictly.
//!
//! A body over the limit is a 413, a body that is not JSON (or not the JSON the endpoint takes)
//! a 400, a body sent with another content type a 415 — all in the error shape, with messages
//! that quote at most a short slice of what was sent. [`OptionalJson`] is for endpoints whose
//! body may be left out entirely (`POST /api/v1/users`): no body at all is `None`, anything
//! else must parse.

use std::future::Future;
use std::pin::Pin;

use actix_web::error::JsonPayloadError;
use actix_web::{dev::Payload, web, FromRequest, HttpRequest};
use futures_util::StreamExt;
use serde::de::DeserializeOwned;

use super::error::ApiError;

/// Largest JSON body accepted, in bytes.
pub const MAX_BODY: usize = 16 * 1024;

/// Longest slice of an error message (which may quote the input) sent back.
const MAX_MESSAGE: usize = 200;

/// `text` cut to [`MAX_MESSAGE`] characters, marked when cut.
pub fn bounded(text: &str) -> String {
    if text.chars().count() <= MAX_MESSAGE {
        return text.to_string();
    }
    let cut: String = text.chars().take(MAX_MESSAGE).collect();
    format!("{cut}…")
}

fn too_large() -> ApiError {
    ApiError::PayloadTooLarge(format!("the body is larger than {MAX_BODY} bytes (16 KiB)"))
}

/// The error a JSON body extractor answers.
pub fn json_error(err: &JsonPayloadError) -> ApiError {
    match err {
        JsonPayloadError::Overflow { .. } | JsonPayloadError::OverflowKnownLength { .. } => {
            too_large()
        }
        JsonPayloadError::ContentType => ApiError::UnsupportedMediaType(
            "send the body as JSON with Content-Type: application/json".into(),
        ),
        other => ApiError::BadRequest(bounded(&format!("invalid JSON body: {other}"))),
    }
}

fn is_json(req: &HttpRequest) -> bool {
    req.headers()
        .get(actix_web::http::header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .map(|v| {
            v.split(';')
                .next()
                .unwrap_or("")
                .trim()
                .to_ascii_lowercase()
        })
        .is_some_and(|mime| mime == "application/json" || mime.ends_with("+json"))
}

/// A body whose errors wait for the handler: extractors run side by side, so a handler that
/// took `web::Json<T>` could answer a body's 400 before its guard's 401. Handlers take
/// `Deferred<T>` and call [`parsed`] after their guard has passed.
pub type Deferred<T> = Result<web::Json<T>, actix_web::Error>;

/// The body of a [`Deferred`], or the error its extractor answered.
pub fn parsed<T>(body: Deferred<T>) -> Result<T, ApiError> {
    body.map(web::Json::into_inner).map_err(|e| {
        e.as_error::<ApiError>()
            .cloned()
            .unwrap_or_else(|| ApiError::BadRequest(bounded(&format!("invalid JSON body: {e}"))))
    })
}

/// A JSON body that may be absent: `None` for an empty body (no bytes), else the parsed value
/// (or a 400 — blank text included —, 413 or 415).
pub struct OptionalJson<T>(pub Option<T>);

impl<T: DeserializeOwned + 'static> FromRequest for OptionalJson<T> {
    type Error = ApiError;
    type Future = Pin<Box<dyn Future<Output = Result<Self, ApiError>>>>;

    fn from_request(req: &HttpRequest, payload: &mut Payload) -> Self::Future {
        let json = is_json(req);
        let declared = req
            .headers()
            .get(actix_web::http::header::CONTENT_LENGTH)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.parse::<usize>().ok());
        let mut payload = payload.take();
        Box::pin(async move {
            if declared.is_some_and(|n| n > MAX_BODY) {
                return Err(too_large());
            }
            let mut body = web::BytesMut::new();
            while let Some(chunk) = payload.next().await {
                let chunk = chunk.map_err(|e| {
                    ApiError::BadRequest(bounded(&format!("the body broke off: {e}")))
                })?;
                if body.len() + chunk.len() > MAX_BODY {
                    return Err(too_large());
                }
                body.extend_from_slice(&chunk);
            }
            // No body at all is no body; blank text is not JSON (a 400 below).
            if body.is_empty() {
                return Ok(OptionalJson(None));
            }
            if !json {
                return Err(ApiError::UnsupportedMediaType(
                    "send the body as JSON with Content-Type: application/json".into(),
                ));
            }
            let invalid = |e: serde_json::Error| {
                ApiError::BadRequest(bounded(&format!("invalid JSON body: {e}")))
            };
            let value: serde_json::Value = serde_json::from_slice(&body).map_err(invalid)?;
            if !value.is_object() {
                return Err(ApiError::BadRequest(
                    "invalid JSON body: expected an object".into(),
                ));
            }
            serde_json::from_value(value)
                .map(|v| OptionalJson(Some(v)))
                .map_err(invalid)
        })
    }
}
