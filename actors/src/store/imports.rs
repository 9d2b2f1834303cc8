//! Manual import jobs: persistent, one row per job and one per date of its range.
//!
//! A job goes `queued` → `running` → `succeeded` | `failed` | `canceled`. Its league's poller
//! claims it ([`Store::claim_import`]), fetches pending dates and records each with
//! [`Store::record_import_date`]: the date's games, the date's row and the job's counters
//! commit in one transaction, so progress is exact after a crash and a resumed job fetches only
//! dates still pending. Creating a job that overlaps a queued or running job of the same league
//! returns that job instead; the check and the insert are atomic on both backends.

use chrono::{DateTime, NaiveDate, Utc};
use serde::Serialize;

use super::games::{question, winner, Existing};
use super::{Backend, MarketTransition, Store, StoreError, Upserted};
use crate::domain::{GameState, ScoreboardGame};

/// Job states that still have work to do.
pub const ACTIVE_IMPORT_STATES: &[&str] = &["queued", "running"];
/// Every job state.
pub const IMPORT_STATES: &[&str] = &["queued", "running", "succeeded", "failed", "canceled"];

/// An import job as stored and served.
#[derive(Debug, Clone, Serialize, sqlx::FromRow, PartialEq, schemars::JsonSchema)]
pub struct ImportJob {
    pub id: i64,
    pub league: String,
    #[sqlx(rename = "date_from")]
    pub from: NaiveDate,
    #[sqlx(rename = "date_to")]
    pub to: NaiveDate,
    pub state: String,
    pub dates_total: i64,
    /// Dates imported successfully.
    pub dates_done: i64,
    /// Dates that could not be fetched or parsed after every pass they were given
    /// (`TIPOFF_IMPORT_ATTEMPTS`, each with the client's own retries).
    pub dates_failed: i64,
    /// Dates that failed a pass and wait for another (after a backoff); not failed yet.
    pub dates_retrying: i64,
    /// When the next of those is due.
    pub next_attempt_at: Option<DateTime<Utc>>,
    /// Games written (created or refreshed) by this job.
    pub games_upserted: i64,
    pub error: Option<String>,
    pub created_at: DateTime<Utc>,
    pub started_at: Option<DateTime<Utc>>,
    pub updated_at: DateTime<Utc>,
    pub finished_at: Option<DateTime<Utc>>,
}

/// One date a job could not import, and why.
#[derive(Debug, Clone, Serialize, sqlx::FromRow, PartialEq, schemars::JsonSchema)]
pub struct FailedDate {
    pub date: NaiveDate,
    pub error: Option<String>,
    /// The passes it was given.
    pub attempts: i64,
}

/// How one pass over a date of an import went.
#[derive(Debug, Clone, Copy)]
pub enum DatePass<'a> {
    /// The board's games.
    Imported(&'a [ScoreboardGame]),
    /// Failed; the date stays pending until `at`.
    Retry { error: &'a str, at: DateTime<Utc> },
    /// Failed its last pass: the date counts as failed.
    Failed(&'a str),
}

/// A date of a job due for a pass, with the passes it has had.
#[derive(Debug, Clone, Copy, PartialEq, Eq, sqlx::FromRow)]
pub struct PendingDate {
    pub date: NaiveDate,
    pub attempts: i64,
}

#[derive(Debug, Clone, Default)]
pub struct ImportFilter {
    pub league: Option<String>,
    pub state: Option<String>,
    /// Keyset cursor: ids strictly smaller (newest first).
    pub before: Option<i64>,
    pub limit: i64,
}

const JOB_COLUMNS: &str = "id, league, date_from, date_to, state, dates_total, dates_done, dates_failed, games_upserted, error, created_at, started_at, updated_at, finished_at, \
     (SELECT COUNT(*) FROM import_job_dates d WHERE d.job_id = import_jobs.id AND d.state = 'pending' AND d.attempts > 0) AS dates_retrying, \
     (SELECT MIN(d.next_attempt_at) FROM import_job_dates d WHERE d.job_id = import_jobs.id AND d.state = 'pending') AS next_attempt_at";

impl Store {
    /// Creates a job for `league` over `from..=to`, unless a queued or running job of the
    /// league overlaps the range: then that job is returned. The bool says whether it is new.
    #[tracing::instrument(skip_all, fields(league = %league, %from, %to))]
    pub async fn create_import(
        &self,
        league: &str,
        from: NaiveDate,
        to: NaiveDate,
        now: DateTime<Utc>,
    ) -> Result<(ImportJob, bool), StoreError> {
        let total = (to - from).num_days() + 1;
        let backend = self.backend();
        on_pool!(self, pool => {
            let mut tx = pool.begin().await?;
            if backend == Backend::Postgres {
                // Serialises creators per league; SQLite's single writer does the same, as the
                // guarded insert below is the transaction's first statement.
                sqlx::query("SELECT pg_advisory_xact_lock(hashtext($1))")
                    .bind(format!("tipoff.import.{league}"))
                    .execute(&mut *tx)
                    .await?;
            }
            let created: Option<i64> = sqlx::query_scalar(
                "INSERT INTO import_jobs (league, date_from, date_to, state, dates_total, created_at, updated_at) \
                 SELECT $1, $2, $3, 'queued', $4, $5, $5 WHERE NOT EXISTS (SELECT 1 FROM import_jobs \
                 WHERE league = $1 AND state IN ('queued', 'running') AND date_from <= $3 AND date_to >= $2) \
                 RETURNING id",
            )
            .bind(league).bind(from).bind(to).bind(total).bind(now)
            .fetch_optional(&mut *tx)
            .await?;
            let (id, is_new) = match created {
                Some(id) => {
                    // One statement for every date (at most 366 rows, 732 parameters).
                    sqlx::QueryBuilder::new("INSERT INTO import_job_dates (job_id, date) ")
                        .push_values(from.iter_days().take(total as usize), |mut row, date| {
                            row.push_bind(id).push_bind(date);
                        })
                        .build()
                        .execute(&mut *tx)
                        .await?;
                    (id, true)
                }
                None => {
                    let id: i64 = sqlx::query_scalar(
                        "SELECT id FROM import_jobs WHERE league = $1 AND state IN ('queued', 'running') \
                         AND date_from <= $3 AND date_to >= $2 ORDER BY id LIMIT 1",
                    )
                    .bind(league).bind(from).bind(to)
                    .fetch_one(&mut *tx)
                    .await?;
                    (id, false)
                }
            };
            let sql = format!("SELECT {JOB_COLUMNS} FROM import_jobs WHERE id = $1");
            let job: ImportJob = sqlx::query_as(&sql).bind(id).fetch_one(&mut *tx).await?;
            commit!(self, tx);
            Ok((job, is_new))
        })
    }

    pub async fn import_job(&self, id: i64) -> Result<ImportJob, StoreError> {
        let sql = format!("SELECT {JOB_COLUMNS} FROM import_jobs WHERE id = $1");
        on_pool!(self, pool => Ok(sqlx::query_as(&sql).bind(id).fetch_one(pool).await?))
    }

    /// Jobs newest first.
    pub async fn import_jobs(&self, f: &ImportFilter) -> Result<Vec<ImportJob>, StoreError> {
        on_pool!(self, pool => {
            let mut q = sqlx::QueryBuilder::new(format!("SELECT {JOB_COLUMNS} FROM import_jobs WHERE 1 = 1"));
            if let Some(league) = &f.league {
                q.push(" AND league = ").push_bind(league.clone());
            }
            if let Some(state) = &f.state {
                q.push(" AND state = ").push_bind(state.clone());
            }
            if let Some(before) = f.before {
                q.push(" AND id < ").push_bind(before);
            }
            q.push(" ORDER BY id DESC LIMIT ").push_bind(f.limit);
            Ok(q.build_query_as().fetch_all(pool).await?)
        })
    }

    /// The dates of a job that failed, in date order.
    pub async fn import_failed_dates(&self, id: i64) -> Result<Vec<FailedDate>, StoreError> {
        let sql = "SELECT date, error, attempts FROM import_job_dates WHERE job_id = $1 AND state = 'failed' ORDER BY date";
        on_pool!(self, pool => Ok(sqlx::query_as(sql).bind(id).fetch_all(pool).await?))
    }

    /// The league's next job to work on: one left `running` (by a crash or a stop) first, so it
    /// resumes, else the oldest queued one, which becomes `running`.
    pub async fn claim_import(
        &self,
        league: &str,
        now: DateTime<Utc>,
    ) -> Result<Option<ImportJob>, StoreError> {
        let sql = format!(
            "SELECT {JOB_COLUMNS} FROM import_jobs WHERE league = $1 AND state IN ('running', 'queued') \
             ORDER BY CASE state WHEN 'running' THEN 0 ELSE 1 END, id LIMIT 1"
        );
        on_pool!(self, pool => {
            let job: Option<ImportJob> = sqlx::query_as(&sql).bind(league).fetch_optional(pool).await?;
            let Some(mut job) = job else { return Ok(None) };
            if job.state == "queued" {
                let mut tx = pool.begin().await?;
                let n = sqlx::query(
                    "UPDATE import_jobs SET state = 'running', started_at = $1, updated_at = $1 WHERE id = $2 AND state = 'queued'",
                )
                .bind(now).bind(job.id)
                .execute(&mut *tx).await?.rows_affected();
                if n == 0 {
                    return Ok(None);
                }
                commit!(self, tx);
                job.state = "running".into();
                job.started_at = Some(now);
            }
            Ok(Some(job))
        })
    }

    /// The dates of a job still to import and due for a pass at `now` (a date that failed a
    /// pass waits for its next attempt), in date order (at most 366).
    pub async fn pending_import_dates(
        &self,
        job_id: i64,
        now: DateTime<Utc>,
    ) -> Result<Vec<PendingDate>, StoreError> {
        let sql =
            "SELECT date, attempts FROM import_job_dates WHERE job_id = $1 AND state = 'pending' \
                   AND (next_attempt_at IS NULL OR next_attempt_at <= $2) ORDER BY date";
        on_pool!(self, pool => Ok(sqlx::query_as(sql).bind(job_id).bind(now).fetch_all(pool).await?))
    }

    /// Records one pass over a date of a job: its games (upserted with their markets) or why
    /// it failed, the date's row and the job's counters, in one transaction. A `Retry` leaves
    /// the date pending until its time (its error kept); a `Failed` counts it as failed. A date
    /// already recorded is not counted twice.
    #[tracing::instrument(skip_all, fields(job_id = job_id, %date))]
    pub async fn record_import_date(
        &self,
        job_id: i64,
        league: &str,
        date: NaiveDate,
        outcome: DatePass<'_>,
        now: DateTime<Utc>,
        fee_bps: u32,
    ) -> Result<Vec<Upserted>, StoreError> {
        let writer = self.writer().await?;
        let done = retrying!(on_pool!(self, pool => {
            let mut tx = pool.begin().await?;
            let mut done = Vec::new();
            if let DatePass::Imported(games) = outcome {
                let mut documents = Vec::new();
                for game in games {
                    done.push(upsert_in_tx!(tx, documents, league, Some(date), game, now));
                }
                index_markets!(tx, &documents, now);
            }
            let (state, error, next) = match outcome {
                DatePass::Imported(_) => ("done", None, None),
                DatePass::Retry { error, at } => ("pending", Some(error), Some(at)),
                DatePass::Failed(error) => ("failed", Some(error), None),
            };
            let games = done.len() as i64;
            let n = sqlx::query(
                "UPDATE import_job_dates SET state = $1, games = $2, error = $3, attempts = attempts + 1, next_attempt_at = $6 \
                 WHERE job_id = $4 AND date = $5 AND state = 'pending'",
            )
            .bind(state).bind(games).bind(error).bind(job_id).bind(date).bind(next)
            .execute(&mut *tx).await?.rows_affected();
            if n == 1 && state == "pending" {
                sqlx::query("UPDATE import_jobs SET updated_at = $1 WHERE id = $2")
                    .bind(now).bind(job_id)
                    .execute(&mut *tx).await?;
            } else if n == 1 {
                let ok = i64::from(state == "done");
                sqlx::query(
                    "UPDATE import_jobs SET dates_done = dates_done + $1, dates_failed = dates_failed + $2, \
                     games_upserted = games_upserted + $3, updated_at = $4 WHERE id = $5",
                )
                .bind(ok).bind(1 - ok).bind(games).bind(now).bind(job_id)
                .execute(&mut *tx).await?;
            }
            crate::store::lease::Fenced::announce_writes(&mut *tx).await?;
            commit!(self, tx);
            Ok(done)
        }))?;
        drop(writer);
        Store::wrote();
        self.pay_closed_markets(league, fee_bps, now).await?;
        Ok(done)
    }

    /// Ends a running job whose dates are all recorded: `succeeded`, or `failed` naming the
    /// dates that failed. `None` while dates are pending or when the job is no longer running.
    pub async fn finish_import(
        &self,
        job_id: i64,
        now: DateTime<Utc>,
    ) -> Result<Option<ImportJob>, StoreError> {
        let pending: i64 = on_pool!(self, pool => sqlx::query_scalar(
            "SELECT COUNT(*) FROM import_job_dates WHERE job_id = $1 AND state = 'pending'",
        ).bind(job_id).fetch_one(pool).await?);
        if pending > 0 {
            return Ok(None);
        }
        let failed = self.import_failed_dates(job_id).await?;
        let error = (!failed.is_empty()).then(|| {
            let shown: Vec<String> = failed
                .iter()
                .take(5)
                .map(|f| format!("{} ({})", f.date, f.error.as_deref().unwrap_or("unknown")))
                .collect();
            let more = failed.len().saturating_sub(5);
            let tail = if more > 0 {
                format!(" and {more} more")
            } else {
                String::new()
            };
            format!(
                "{} date(s) failed: {}{tail}",
                failed.len(),
                shown.join(", ")
            )
        });
        let state = if failed.is_empty() {
            "succeeded"
        } else {
            "failed"
        };
        let finished = self
            .end_import(job_id, state, error, &["running"], now)
            .await?;
        if !finished {
            return Ok(None);
        }
        Ok(Some(self.import_job(job_id).await?))
    }

    /// Cancels a queued or running job; the bool says whether this call canceled it (a job
    /// already finished is returned unchanged).
    pub async fn cancel_import(
        &self,
        id: i64,
        now: DateTime<Utc>,
    ) -> Result<(ImportJob, bool), StoreError> {
        let canceled = self
            .end_import(id, "canceled", None, &["queued", "running"], now)
            .await?;
        Ok((self.import_job(id).await?, canceled))
    }
}

impl Store {
    /// Moves a job in one of `from` to the final `state` and writes its `import.finished`
    /// event in the same transaction; `false` when the job was not in `from` any more.
    async fn end_import(
        &self,
        id: i64,
        state: &str,
        error: Option<String>,
        from: &[&str],
        now: DateTime<Utc>,
    ) -> Result<bool, StoreError> {
        let _writer = self.writer().await?;
        on_pool!(self, pool => {
            let mut tx = pool.begin().await?;
            let mut q = sqlx::QueryBuilder::new("UPDATE import_jobs SET state = ");
            q.push_bind(state).push(", error = ").push_bind(error.clone());
            q.push(", finished_at = ").push_bind(now).push(", updated_at = ").push_bind(now);
            q.push(" WHERE id = ").push_bind(id).push(" AND state IN (");
            let mut list = q.separated(", ");
            for s in from {
                list.push_bind(*s);
            }
            q.push(") RETURNING league, dates_total, dates_done, games_upserted");
            let row: Option<(String, i64, i64, i64)> = q.build_query_as().fetch_optional(&mut *tx).await?;
            if let Some((league, total, done, games)) = &row {
                emit!(tx, "import.finished", Some(league.as_str()), serde_json::json!({
                    "job_id": id, "league": league, "state": state, "error": error,
                    "dates_total": total, "dates_done": done, "games_upserted": games,
                }), now);
            }
            commit!(self, tx);
            Ok(row.is_some())
        })
    }

    /// Deletes import jobs that ended before `cutoff` (their dates go with them); returns how
    /// many jobs were removed.
    pub async fn prune_import_jobs(&self, cutoff: DateTime<Utc>) -> Result<u64, StoreError> {
        let sql = "DELETE FROM import_jobs WHERE state IN ('succeeded', 'failed', 'canceled') AND finished_at < $1";
        self.delete_before(sql, cutoff).await
    }
}
