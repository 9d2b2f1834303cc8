//! The status dashboard, `GET /admin/ui`: one self-contained page (inline CSS and JS, no
//! external assets, no build step) served by the daemon.
//!
//! Signing in: without a session the page answers 401 with a sign-in form; the form posts the
//! admin token to `/admin/ui/login`, which opens a session (a random id in an `HttpOnly`,
//! `SameSite=Strict` cookie, stored server-side; see `auth.rs`) and redirects back. Sign-out
//! is `POST /admin/ui/logout` with `X-Tipoff-UI: 1`, which deletes the session. The page then polls `/debug/status`, `/admin/imports` and
//! `/admin/outbox` every 2 s and drives the service and import endpoints, sending
//! `X-Tipoff-UI: 1` with every request (see `auth.rs`).

use actix_web::cookie::{time::Duration as CookieAge, Cookie, SameSite};
use actix_web::{web, HttpRequest, HttpResponse};
use serde::Deserialize;

use super::auth::{attempt, check_admin, Attempt, AuthLimiter};
use super::{error::ApiError, AppState};

const PAGE: &str = include_str!("dashboard.html");

fn login_page(status: actix_web::http::StatusCode, message: &str) -> HttpResponse {
    let html = format!(
        r#"<!doctype html><html lang="en"><head><meta charset="utf-8"><title>tipoff: sign in</title>
<style>body{{font:15px system-ui,sans-serif;background:#f6f7f9;display:flex;justify-content:center;padding-top:12vh}}
form{{background:#fff;border:1px solid #d0d5dd;border-radius:8px;padding:24px;min-width:320px}}
input{{width:100%;padding:8px;margin:8px 0 14px;box-sizing:border-box}}button{{padding:8px 16px}}.msg{{color:#b42318}}</style></head>
<body><form method="post" action="/admin/ui/login"><h2>tipoff dashboard</h2><p class="msg">{message}</p>
<label for="token">Admin token</label><input id="token" name="token" type="password" autocomplete="current-password" autofocus>
<button id="sign-in" type="submit">Sign in</button></form></body></html>"#
    );
    HttpResponse::build(status)
        .content_type("text/html; charset=utf-8")
        .insert_header(("cache-control", "no-store"))
        .insert_header((
            "content-security-policy",
            "default-src 'none'; style-src 'unsafe-inline'; form-action 'self'; frame-ancestors 'none'",
        ))
        .body(html)
}

/// `GET /admin/ui`
pub async fn page(req: HttpRequest, state: web::Data<AppState>) -> HttpResponse {
    match check_admin(&req, &state).await {
        Ok(()) => HttpResponse::Ok()
            .content_type("text/html; charset=utf-8")
            .insert_header(("cache-control", "no-store"))
            .insert_header((
                "content-security-policy",
                "default-src 'self'; script-src 'unsafe-inline'; style-src 'unsafe-inline'; img-src 'self' data:; frame-ancestors 'none'",
            ))
            .body(PAGE),
        Err(ApiError::Forbidden(m)) => {
            login_page(actix_web::http::StatusCode::FORBIDDEN, &m)
        }
        Err(e @ ApiError::TooManyRequests(..)) => actix_web::ResponseError::error_response(&e),
        Err(_) => login_page(
            actix_web::http::StatusCode::UNAUTHORIZED,
            "Sign in with the admin token.",
        ),
    }
}

#[derive(Debug, Deserialize)]
pub struct Login {
    #[serde(default)]
    token: String,
}

/// `POST /admin/ui/login` (form): a right token sets the session cookie.
pub async fn login(
    req: HttpRequest,
    state: web::Data<AppState>,
    body: web::Bytes,
) -> Result<HttpResponse, ApiError> {
    let form_type = req
        .headers()
        .get(actix_web::http::header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with("application/x-www-form-urlencoded"));
    if !form_type {
        return Err(ApiError::UnsupportedMediaType(
            "sign in with the form: Content-Type: application/x-www-form-urlencoded, field `token`"
                .into(),
        ));
    }
    if body.len() > super::body::MAX_BODY {
        return Err(ApiError::PayloadTooLarge("the form is over 16 KiB".into()));
    }
    let form: Login = serde_urlencoded::from_bytes(&body).unwrap_or(Login {
        token: String::new(),
    });
    sign_in(&req, &state, &form).await
}

async fn sign_in(
    req: &HttpRequest,
    state: &AppState,
    form: &Login,
) -> Result<HttpResponse, ApiError> {
    if !state.admin.configured() {
        return Ok(login_page(
            actix_web::http::StatusCode::FORBIDDEN,
            "admin endpoints are disabled: TIPOFF_ADMIN_TOKEN is not set",
        ));
    }
    match attempt(req, state, form.token.trim()) {
        Attempt::Right => {}
        Attempt::Blocked(wait) => {
            let mut res = login_page(
                actix_web::http::StatusCode::TOO_MANY_REQUESTS,
                &format!("Too many failed sign-ins from this address; try again in {wait}s."),
            );
            if let Ok(v) = actix_web::http::header::HeaderValue::from_str(&wait.to_string()) {
                res.headers_mut()
                    .insert(actix_web::http::header::RETRY_AFTER, v);
            }
            return Ok(res);
        }
        Attempt::Wrong => {
            tracing::warn!(client = ?AuthLimiter::client(req), "dashboard sign-in with a wrong token");
            return Ok(login_page(
                actix_web::http::StatusCode::UNAUTHORIZED,
                "That token is not the admin token.",
            ));
        }
    }
    let id = state.sessions.open(state).await?;
    let cookie = Cookie::build(state.sessions.cookie_name(), id)
        .path("/")
        .http_only(true)
        .secure(state.sessions.secure)
        .same_site(SameSite::Strict)
        .max_age(CookieAge::seconds(state.sessions.ttl.as_secs() as i64))
        .finish();
    Ok(HttpResponse::SeeOther()
        .insert_header(("location", "/admin/ui"))
        .cookie(cookie)
        .finish())
}

/// `POST /admin/ui/logout` (with `X-Tipoff-UI: 1`): deletes the session and clears the cookie.
pub async fn logout(
    req: HttpRequest,
    state: web::Data<AppState>,
) -> Result<HttpResponse, ApiError> {
    if !super::auth::ui_header(&req) {
        return Err(ApiError::Forbidden(
            "sign out from the dashboard: this request needs the header X-Tipoff-UI: 1".into(),
        ));
    }
    let name = state.sessions.cookie_name();
    if let Some(session) = req.cookie(name) {
        if state.sessions.close(&state, session.value()).await? {
            tracing::info!("dashboard session signed out");
        }
    }
    let mut cookie = Cookie::build(name, "")
        .path("/")
        .secure(state.sessions.secure)
        .finish();
    cookie.make_removal();
    Ok(HttpResponse::NoContent().cookie(cookie).finish())
}
