//! The outbox: domain events written in the same transaction as the change they
//! describe ([`emit!`]), delivered to webhooks by the `outbox` service and streamed live over
//! SSE from the same rows.
//!
//! An event is `pending` until every webhook URL acknowledged it (`delivered_to` remembers which
//! did, so a retry goes only to the others), `delivered` then, or `dead` after the configured
//! number of attempts; an admin can put dead events back to `pending`.

use chrono::{DateTime, Utc};
use serde::Serialize;

use super::{Store, StoreError};

/// Every event type the daemon writes.
pub const EVENT_TYPES: &[&str] = &[
    "market.created",
    "market.settled",
    "market.voided",
    "deposit.credited",
    "withdrawal.requested",
    "withdrawal.completed",
    "withdrawal.failed",
    "withdrawal.expired",
    "import.finished",
    "user.registered",
];

/// Event types anyone may follow on the public SSE stream; the rest (about users and money)
/// need the admin token.
pub const PUBLIC_EVENT_TYPES: &[&str] = &["market.created", "market.settled", "market.voided"];

pub const OUTBOX_STATES: &[&str] = &["pending", "delivered", "dead"];

/// Writes one event into the outbox inside the open transaction `$tx` (so it commits or rolls
/// back with the change it describes). Expands inside each backend's branch.
macro_rules! emit {
    ($tx:ident, $type:expr, $league:expr, $payload:expr, $now:expr) => {{
        let (league, now): (Option<&str>, DateTime<Utc>) = ($league, $now);
        let payload: serde_json::Value = $payload;
        sqlx::query(
            "INSERT INTO outbox_events (event_type, league, payload, created_at, next_attempt_at) VALUES ($1, $2, $3, $4, $4)",
        )
        .bind::<&str>($type)
        .bind(league)
        .bind(payload.to_string())
        .bind(now)
        .execute(&mut *$tx)
        .await?;
        $crate::store::outbox::EVENTS_PENDING.store(true, std::sync::atomic::Ordering::Release);
    }};
}

/// Set by [`emit!`]; the next commit ([`commit!`]) clears it and wakes the `events` feed, so a
/// live stream hears of an event at once rather than at the feed's next poll. A wake can come
/// early (another transaction's commit) or be missed (two transactions racing): the poll
/// interval bounds the rest.
pub(crate) static EVENTS_PENDING: std::sync::atomic::AtomicBool =
    std::sync::atomic::AtomicBool::new(false);

static EVENTS_COMMITTED: tokio::sync::Notify = tokio::sync::Notify::const_new();

/// After a commit: wakes the feed if an event was written since the last wake.
pub(crate) fn committed() {
    if EVENTS_PENDING.swap(false, std::sync::atomic::Ordering::AcqRel) {
        EVENTS_COMMITTED.notify_one();
    }
}

/// Waits for an event's commit (see [`EVENTS_PENDING`]), at most `bound`.
pub async fn event_committed(bound: std::time::Duration) {
    let _ = tokio::time::timeout(bound, EVENTS_COMMITTED.notified()).await;
}

/// One outbox row.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct OutboxEvent {
    pub id: i64,
    pub event_type: String,
    pub league: Option<String>,
    /// JSON object as text.
    pub payload: String,
    pub created_at: DateTime<Utc>,
    pub state: String,
    pub attempts: i64,
    pub next_attempt_at: DateTime<Utc>,
    /// JSON array of the webhook URLs that acknowledged it.
    pub delivered_to: String,
    pub last_error: Option<String>,
    pub delivered_at: Option<DateTime<Utc>>,
}

/// What receivers get (webhook body, SSE `data:`): id, type, time, league and payload.
#[derive(Debug, Clone, Serialize)]
pub struct EventBody {
    pub id: i64,
    #[serde(rename = "type")]
    pub event_type: String,
    pub created_at: DateTime<Utc>,
    pub league: Option<String>,
    pub payload: serde_json::Value,
}

impl OutboxEvent {
    pub fn body(&self) -> EventBody {
        EventBody {
            id: self.id,
            event_type: self.event_type.clone(),
            created_at: self.created_at,
            league: self.league.clone(),
            payload: serde_json::from_str(&self.payload).unwrap_or(serde_json::Value::Null),
        }
    }

    /// The URLs that already acknowledged this event.
    pub fn acknowledged(&self) -> Vec<String> {
        serde_json::from_str(&self.delivered_to).unwrap_or_default()
    }
}

/// Backlog figures for metrics and the dashboard.
#[derive(Debug, Clone, Default, Serialize, schemars::JsonSchema)]
pub struct OutboxStats {
    pub pending: i64,
    pub dead: i64,
    pub delivered: i64,
    /// Age of the oldest pending event.
    pub oldest_pending_secs: Option<f64>,
}

/// How one delivery attempt of an event ended.
#[derive(Debug, Clone)]
pub enum Attempt {
    /// Every URL has acknowledged.
    Delivered,
    /// Some URL acknowledged it; the others are down and were not tried (no attempt charged).
    Acknowledged,
    /// Some URL failed: try again at `next_at`, or give up (`dead`) past the retry window.
    Failed {
        error: String,
        next_at: DateTime<Utc>,
        dead: bool,
    },
    /// Its retry window passed while a URL it needs was down: `dead`, no attempt charged.
    Expired { error: String },
}

/// A webhook receiver that is down: probed by one event at `next_probe_at`.
#[derive(Debug, Clone, sqlx::FromRow, Serialize)]
pub struct WebhookDown {
    pub url: String,
    pub failures: i64,
    pub down_since: DateTime<Utc>,
    pub next_probe_at: DateTime<Utc>,
    pub last_error: String,
}

const OUTBOX_COLUMNS: &str = "id, event_type, league, payload, created_at, state, attempts, next_attempt_at, delivered_to, last_error, delivered_at";

impl Store {
    /// Pending events whose next attempt is due, oldest first.
    pub async fn outbox_due(
        &self,
        now: DateTime<Utc>,
        limit: i64,
    ) -> Result<Vec<OutboxEvent>, StoreError> {
        let sql = format!("SELECT {OUTBOX_COLUMNS} FROM outbox_events WHERE state = 'pending' AND next_attempt_at <= $1 ORDER BY id LIMIT $2");
        on_pool!(self, pool => Ok(sqlx::query_as(&sql).bind(now).bind(limit).fetch_all(pool).await?))
    }

    /// Records one delivery attempt. Only a still-pending event changes (an admin may have
    /// acted meanwhile); `acknowledged` is the full list of URLs that have it now.
    pub async fn outbox_attempted(
        &self,
        id: i64,
        acknowledged: &[String],
        attempt: &Attempt,
        now: DateTime<Utc>,
    ) -> Result<(), StoreError> {
        let delivered_to = serde_json::to_string(acknowledged).unwrap_or_else(|_| "[]".into());
        let _writer = self.writer().await?;
        match attempt {
            Attempt::Delivered => {
                let sql = "UPDATE outbox_events SET state = 'delivered', attempts = attempts + 1, delivered_to = $1, delivered_at = $2, last_error = NULL \
                           WHERE id = $3 AND state = 'pending'";
                on_pool!(self, pool => {
                    let mut tx = pool.begin().await?;
                    sqlx::query(sql).bind(delivered_to).bind(now).bind(id).execute(&mut *tx).await?;
                    commit!(self, tx);
                });
            }
            Attempt::Acknowledged => {
                let sql = "UPDATE outbox_events SET delivered_to = $1 WHERE id = $2 AND state = 'pending'";
                on_pool!(self, pool => {
                    let mut tx = pool.begin().await?;
                    sqlx::query(sql).bind(delivered_to).bind(id).execute(&mut *tx).await?;
                    commit!(self, tx);
                });
            }
            Attempt::Expired { error } => {
                let sql = "UPDATE outbox_events SET state = 'dead', delivered_to = $1, last_error = $2 WHERE id = $3 AND state = 'pending'";
                on_pool!(self, pool => {
                    let mut tx = pool.begin().await?;
                    sqlx::query(sql).bind(delivered_to).bind(error).bind(id).execute(&mut *tx).await?;
                    commit!(self, tx);
                });
            }
            Attempt::Failed {
                error,
                next_at,
                dead,
            } => {
                let state = if *dead { "dead" } else { "pending" };
                let sql = "UPDATE outbox_events SET state = $1, attempts = attempts + 1, delivered_to = $2, next_attempt_at = $3, last_error = $4 \
                           WHERE id = $5 AND state = 'pending'";
                on_pool!(self, pool => {
                    let mut tx = pool.begin().await?;
                    sqlx::query(sql).bind(state).bind(delivered_to).bind(next_at).bind(error).bind(id).execute(&mut *tx).await?;
                    commit!(self, tx);
                });
            }
        }
        Ok(())
    }

    /// Webhook receivers that are down.
    pub async fn webhooks_down(&self) -> Result<Vec<WebhookDown>, StoreError> {
        let sql = "SELECT url, failures, down_since, next_probe_at, last_error FROM webhook_health ORDER BY url";
        on_pool!(self, pool => Ok(sqlx::query_as(sql).fetch_all(pool).await?))
    }

    /// Counts a failed POST to `url` (down from now if it was up) and schedules its next probe
    /// by `next_probe`, given the failures so far. Answers the row.
    pub async fn webhook_failed(
        &self,
        url: &str,
        error: &str,
        next_probe: impl Fn(u32) -> DateTime<Utc>,
        now: DateTime<Utc>,
    ) -> Result<WebhookDown, StoreError> {
        let _writer = self.writer().await?;
        on_pool!(self, pool => {
            let mut tx = pool.begin().await?;
            let failures: i64 = sqlx::query_scalar("SELECT failures FROM webhook_health WHERE url = $1")
                .bind(url).fetch_optional(&mut *tx).await?.unwrap_or(0) + 1;
            let at = next_probe(failures.min(u32::MAX as i64) as u32);
            let row: WebhookDown = sqlx::query_as(
                "INSERT INTO webhook_health (url, failures, down_since, next_probe_at, last_error, updated_at) VALUES ($1, $2, $3, $4, $5, $3) \
                 ON CONFLICT (url) DO UPDATE SET failures = excluded.failures, next_probe_at = excluded.next_probe_at, \
                 last_error = excluded.last_error, updated_at = excluded.updated_at \
                 RETURNING url, failures, down_since, next_probe_at, last_error",
            )
            .bind(url).bind(failures).bind(now).bind(at).bind(error)
            .fetch_one(&mut *tx).await?;
            commit!(self, tx);
            Ok(row)
        })
    }

    /// `url` answered: it is up again, and the pending events that were probes (their own
    /// backoff pushed out by the outage) are due again at `now`, so the backlog goes out in
    /// order.
    pub async fn webhook_recovered(&self, url: &str, now: DateTime<Utc>) -> Result<(), StoreError> {
        let _writer = self.writer().await?;
        on_pool!(self, pool => {
            let mut tx = pool.begin().await?;
            sqlx::query("DELETE FROM webhook_health WHERE url = $1").bind(url).execute(&mut *tx).await?;
            sqlx::query("UPDATE outbox_events SET next_attempt_at = $1 WHERE state = 'pending' AND next_attempt_at > $1")
                .bind(now).execute(&mut *tx).await?;
            commit!(self, tx);
            Ok(())
        })
    }

    /// Events with an id above `after`, in id order (the SSE stream and its resume).
    pub async fn events_after(
        &self,
        after: i64,
        limit: i64,
    ) -> Result<Vec<OutboxEvent>, StoreError> {
        let sql = format!(
            "SELECT {OUTBOX_COLUMNS} FROM outbox_events WHERE id > $1 ORDER BY id LIMIT $2"
        );
        on_pool!(self, pool => Ok(sqlx::query_as(&sql).bind(after).bind(limit).fetch_all(pool).await?))
    }

    /// Events with an id above `after` of one of `types` (and of `league`, when given), in id
    /// order: an SSE stream's resume, filtered by the database.
    pub async fn events_matching(
        &self,
        after: i64,
        types: &[String],
        league: Option<&str>,
        limit: i64,
    ) -> Result<Vec<OutboxEvent>, StoreError> {
        if types.is_empty() {
            return Ok(Vec::new());
        }
        on_pool!(self, pool => {
            let mut q = sqlx::QueryBuilder::new(format!("SELECT {OUTBOX_COLUMNS} FROM outbox_events WHERE id > "));
            q.push_bind(after).push(" AND event_type IN (");
            let mut list = q.separated(", ");
            for t in types {
                list.push_bind(t.as_str());
            }
            q.push(")");
            if let Some(league) = league {
                q.push(" AND league = ").push_bind(league);
            }
            q.push(" ORDER BY id LIMIT ").push_bind(limit);
            Ok(q.build_query_as().fetch_all(pool).await?)
        })
    }

    /// The events among `ids` that exist now (ids skipped earlier may commit late).
    pub async fn events_by_ids(&self, ids: &[i64]) -> Result<Vec<OutboxEvent>, StoreError> {
        if ids.is_empty() {
            return Ok(Vec::new());
        }
        on_pool!(self, pool => {
            let mut q = sqlx::QueryBuilder::new(format!("SELECT {OUTBOX_COLUMNS} FROM outbox_events WHERE id IN ("));
            let mut list = q.separated(", ");
            for id in ids {
                list.push_bind(*id);
            }
            q.push(") ORDER BY id");
            Ok(q.build_query_as().fetch_all(pool).await?)
        })
    }

    /// The highest event id written so far (0 when there is none).
    pub async fn last_event_id(&self) -> Result<i64, StoreError> {
        let sql = "SELECT COALESCE(MAX(id), 0) FROM outbox_events";
        on_pool!(self, pool => Ok(sqlx::query_scalar(sql).fetch_one(pool).await?))
    }

    /// The lowest id still retained, if any.
    pub async fn first_event_id(&self) -> Result<Option<i64>, StoreError> {
        let sql = "SELECT MIN(id) FROM outbox_events";
        on_pool!(self, pool => Ok(sqlx::query_scalar(sql).fetch_one(pool).await?))
    }

    /// Outbox events for the admin, newest first, by state.
    pub async fn outbox_events(
        &self,
        state: Option<&str>,
        before: Option<i64>,
        limit: i64,
    ) -> Result<Vec<OutboxEvent>, StoreError> {
        on_pool!(self, pool => {
            let mut q = sqlx::QueryBuilder::new(format!("SELECT {OUTBOX_COLUMNS} FROM outbox_events WHERE id < "));
            q.push_bind(before.unwrap_or(i64::MAX));
            if let Some(state) = state {
                q.push(" AND state = ").push_bind(state.to_string());
            }
            q.push(" ORDER BY id DESC LIMIT ").push_bind(limit);
            Ok(q.build_query_as().fetch_all(pool).await?)
        })
    }

    pub async fn outbox_event(&self, id: i64) -> Result<OutboxEvent, StoreError> {
        let sql = format!("SELECT {OUTBOX_COLUMNS} FROM outbox_events WHERE id = $1");
        on_pool!(self, pool => Ok(sqlx::query_as(&sql).bind(id).fetch_one(pool).await?))
    }

    /// Puts a dead event back to `pending` with fresh attempts, due now. A compare-and-set: an
    /// event that is not dead is refused (`event_not_dead`).
    pub async fn retry_outbox_event(
        &self,
        id: i64,
        now: DateTime<Utc>,
    ) -> Result<OutboxEvent, StoreError> {
        let sql = "UPDATE outbox_events SET state = 'pending', attempts = 0, next_attempt_at = $1 WHERE id = $2 AND state = 'dead'";
        let _writer = self.writer().await?;
        let n = on_pool!(self, pool => sqlx::query(sql).bind(now).bind(id).execute(pool).await?.rows_affected());
        let event = self.outbox_event(id).await?;
        if n == 0 {
            return Err(super::refused(
                "event_not_dead",
                format!("event {id} is {}, not dead", event.state),
            ));
        }
        Ok(event)
    }

    /// Puts every dead event back to `pending`; returns how many.
    pub async fn retry_dead_events(&self, now: DateTime<Utc>) -> Result<u64, StoreError> {
        let sql = "UPDATE outbox_events SET state = 'pending', attempts = 0, next_attempt_at = $1 WHERE state = 'dead'";
        let _writer = self.writer().await?;
        on_pool!(self, pool => Ok(sqlx::query(sql).bind(now).execute(pool).await?.rows_affected()))
    }

    pub async fn outbox_stats(&self, now: DateTime<Utc>) -> Result<OutboxStats, StoreError> {
        let rows: Vec<(String, i64)> = on_pool!(self, pool => sqlx::query_as(
            "SELECT state, COUNT(*) FROM outbox_events GROUP BY state",
        ).fetch_all(pool).await?);
        let oldest: Option<DateTime<Utc>> = on_pool!(self, pool => sqlx::query_scalar(
            "SELECT created_at FROM outbox_events WHERE state = 'pending' ORDER BY id LIMIT 1",
        ).fetch_optional(pool).await?);
        let mut stats = OutboxStats {
            oldest_pending_secs: oldest
                .map(|t| (now - t).num_milliseconds().max(0) as f64 / 1000.0),
            ..OutboxStats::default()
        };
        for (state, n) in rows {
            match state.as_str() {
                "pending" => stats.pending = n,
                "dead" => stats.dead = n,
                _ => stats.delivered = n,
            }
        }
        Ok(stats)
    }

    /// Deletes events created before `cutoff` that are delivered (and, with `undeliverable`,
    /// pending or dead ones too: used when no webhook is configured, so events only serve the
    /// live stream). Returns how many.
    pub async fn prune_outbox(
        &self,
        cutoff: DateTime<Utc>,
        undeliverable: bool,
    ) -> Result<u64, StoreError> {
        let sql = if undeliverable {
            "DELETE FROM outbox_events WHERE created_at < $1"
        } else {
            "DELETE FROM outbox_events WHERE created_at < $1 AND state = 'delivered'"
        };
        self.delete_before(sql, cutoff).await
    }
}

/// Counts the metrics endpoint reads from the database at each scrape.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Counts {
    /// Import jobs per state.
    pub import_jobs: Vec<(String, i64)>,
    /// Dates of queued and running jobs: (total, done, failed).
    pub import_dates: (i64, i64, i64),
    /// Deposits per (token, state).
    pub deposits: Vec<(String, String, i64)>,
    /// Markets per closing state (`settled`, `void`).
    pub settlements: Vec<(String, i64)>,
    /// Watcher cursors: (token, slot, when it last moved).
    pub cursors: Vec<(String, i64, DateTime<Utc>)>,
}

impl Store {
    pub async fn counts(&self) -> Result<Counts, StoreError> {
        on_pool!(self, pool => {
            let import_jobs = sqlx::query_as("SELECT state, COUNT(*) FROM import_jobs GROUP BY state ORDER BY state")
                .fetch_all(pool).await?;
            let import_dates = sqlx::query_as(
                "SELECT CAST(COALESCE(SUM(dates_total), 0) AS BIGINT), CAST(COALESCE(SUM(dates_done), 0) AS BIGINT), \
                 CAST(COALESCE(SUM(dates_failed), 0) AS BIGINT) FROM import_jobs WHERE state IN ('queued', 'running')",
            ).fetch_one(pool).await?;
            let deposits = sqlx::query_as("SELECT token, state, COUNT(*) FROM deposits GROUP BY token, state ORDER BY token, state")
                .fetch_all(pool).await?;
            let settlements = sqlx::query_as("SELECT state, COUNT(*) FROM markets WHERE state IN ('settled', 'void') GROUP BY state ORDER BY state")
                .fetch_all(pool).await?;
            let cursors = sqlx::query_as("SELECT token, slot, updated_at FROM watcher_cursors ORDER BY token")
                .fetch_all(pool).await?;
            Ok(Counts { import_jobs, import_dates, deposits, settlements, cursors })
        })
    }
}
