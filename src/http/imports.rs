//! Manual imports (admin): `POST /admin/imports {league, from, to}` creates a persistent job
//! (202) or, when a queued or running job of the league overlaps the range, returns that job
//! (200); `GET /admin/imports` lists jobs newest first; `GET /admin/imports/{id}` shows one with
//! the dates that failed; `POST /admin/imports/{id}/cancel` cancels a queued or running job.
//!
//! The job is stored before the answer; the league's poller is then woken (it also looks for
//! queued jobs on its own timer, so a lost nudge only delays the start by that interval).

use actix_web::{web, HttpResponse};
use chrono::{NaiveDate, Utc};
use serde::Deserialize;
use tipoff_actors::store::{catalog_league, ImportFilter, ImportJob, IMPORT_STATES};

use super::auth::Admin;
use super::read::{id_cursor, limit, not_found, page};
use super::{error::ApiError, AppState};

/// The longest range one import may cover, in days.
pub const MAX_IMPORT_DAYS: i64 = 366;

#[derive(Debug, Deserialize, schemars::JsonSchema)]
pub struct NewImport {
    #[schemars(schema_with = "super::schema::league_field")]
    league: String,
    /// The first day (UTC).
    #[schemars(schema_with = "super::schema::date_field")]
    from: String,
    /// The last day, on or after `from`, at most 366 days on.
    #[schemars(schema_with = "super::schema::date_field")]
    to: String,
}

fn date(field: &str, text: &str) -> Result<NaiveDate, ApiError> {
    NaiveDate::parse_from_str(text.trim(), "%Y-%m-%d").map_err(|_| {
        ApiError::BadRequest(format!(
            "`{field}` must be a date like 2024-01-29, not `{text}`"
        ))
    })
}

/// `POST /admin/imports`
pub async fn create(
    _: Admin,
    state: web::Data<AppState>,
    body: super::body::Deferred<NewImport>,
) -> Result<HttpResponse, ApiError> {
    let body = super::body::parsed(body)?;
    let league = body.league.trim().to_ascii_lowercase();
    catalog_league(&league).map_err(ApiError::BadRequest)?;
    if !state.leagues_enabled().contains(&league) {
        let enabled = if state.leagues_enabled().is_empty() {
            "none".to_string()
        } else {
            state.leagues_enabled().join(", ")
        };
        // The request is well formed; this daemon's configuration is what stands in the way.
        return Err(ApiError::Refused("league_not_polled", format!(
            "league `{league}` is not enabled, so no poller would run the import: add it to TIPOFF_LEAGUES (enabled: {enabled})"
        )));
    }
    let from = date("from", &body.from)?;
    let to = date("to", &body.to)?;
    if from > to {
        return Err(ApiError::BadRequest(format!(
            "`from` ({from}) is after `to` ({to})"
        )));
    }
    let days = (to - from).num_days() + 1;
    if days > MAX_IMPORT_DAYS {
        return Err(ApiError::BadRequest(format!(
            "the range {from} … {to} covers {days} days; one import covers at most {MAX_IMPORT_DAYS}"
        )));
    }
    let (job, created) = state
        .store
        .create_import(&league, from, to, Utc::now())
        .await?;
    super::ops::wake(&state, &format!("poller:{league}")).await;
    tracing::info!(job_id = job.id, %league, %from, %to, created, "import requested");
    let mut res = if created {
        HttpResponse::Accepted()
    } else {
        HttpResponse::Ok()
    };
    Ok(res.json(job))
}

#[derive(Debug, Deserialize)]
pub struct ListQuery {
    league: Option<String>,
    state: Option<String>,
    limit: Option<String>,
    cursor: Option<String>,
}

/// `GET /admin/imports?league=&state=&limit=&cursor=`: newest first.
pub async fn list(
    _: Admin,
    state: web::Data<AppState>,
    q: web::Query<ListQuery>,
) -> Result<HttpResponse, ApiError> {
    let limit = limit(q.limit.as_deref())?;
    if let Some(s) = &q.state {
        if !IMPORT_STATES.contains(&s.as_str()) {
            return Err(ApiError::BadRequest(format!(
                "unknown state `{s}`: use {}",
                IMPORT_STATES.join(", ")
            )));
        }
    }
    let before = id_cursor(q.cursor.as_deref())?;
    let filter = ImportFilter {
        league: super::read::league_filter(q.league.as_deref())?,
        state: q.state.clone(),
        before,
        limit: limit + 1,
    };
    let (items, next) = page(state.store.import_jobs(&filter).await?, limit, |j| {
        j.id.to_string()
    });
    Ok(HttpResponse::Ok().json(super::schema::Page { items, next }))
}

/// A job with the dates that failed.
#[derive(serde::Serialize, schemars::JsonSchema)]
pub struct ImportView {
    #[serde(flatten)]
    job: ImportJob,
    failed_dates: Vec<tipoff_actors::store::FailedDate>,
}

async fn with_failed_dates(state: &AppState, job: ImportJob) -> Result<ImportView, ApiError> {
    let failed_dates = state.store.import_failed_dates(job.id).await?;
    Ok(ImportView { job, failed_dates })
}

/// `GET /admin/imports/{id}`: the job and the dates that failed.
pub async fn get(
    _: Admin,
    state: web::Data<AppState>,
    id: web::Path<i64>,
) -> Result<HttpResponse, ApiError> {
    let id = id.into_inner();
    let job = state
        .store
        .import_job(id)
        .await
        .map_err(not_found("import", id))?;
    Ok(HttpResponse::Ok().json(with_failed_dates(&state, job).await?))
}

/// `POST /admin/imports/{id}/cancel`: 200 with the canceled job; 409 when it already ended.
pub async fn cancel(
    _: Admin,
    state: web::Data<AppState>,
    id: web::Path<i64>,
) -> Result<HttpResponse, ApiError> {
    let id = id.into_inner();
    let (job, canceled) = state
        .store
        .cancel_import(id, Utc::now())
        .await
        .map_err(not_found("import", id))?;
    if !canceled {
        return Err(ApiError::Refused(
            "import_finished",
            format!(
            "import {id} has already ended ({}); only queued or running imports can be canceled",
            job.state
        ),
        ));
    }
    tracing::info!(job_id = id, "import canceled");
    Ok(HttpResponse::Ok().json(with_failed_dates(&state, job).await?))
}
