//! The `cleanup` service: on its own timer, expires stale withdrawals and prunes old history.
//!
//! - A withdrawal still `pending` after the TTL becomes `expired` and its hold returns to the
//!   user, each in one compare-and-set transaction ([`Store::finish_withdrawal`]): when two
//!   passes race (two replicas, or a pass and an admin), only one of them changes it.
//! - Import jobs that ended more than the retention ago are deleted with their dates; outbox
//!   events past their own retention are deleted once delivered.
//!
//! A [`Periodic`] job: messages `Control` (ping / stop / wake: run now), one pass every
//! interval, stops at once or when the pass in flight ends (see `service::Every`).

use std::time::Duration;

use std::future::Future;
use std::pin::Pin;

use chrono::Utc;

use crate::service::{Every, Outcome, Periodic, ServiceCtx};
use crate::settings::{self, NonZero};
use crate::store::{Store, StoreError, WithdrawalOutcome};

/// The cleanup service's settings.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize, schemars::JsonSchema)]
#[serde(default)]
pub struct CleanupSettings {
    /// Time between cleanup passes.
    #[serde(rename = "cleanup_interval", with = "NonZero")]
    pub interval: Duration,
    /// A withdrawal still pending (unclaimed) after this expires and its hold is refunded.
    #[serde(with = "NonZero")]
    pub withdrawal_ttl: Duration,
    /// Finished history (import jobs) older than this is pruned.
    #[serde(rename = "history_retention", with = "NonZero")]
    pub retention: Duration,
    /// Outbox events older than this are pruned once delivered (all of them when no webhook
    /// is configured); the live stream's resume reaches back this far.
    #[serde(with = "NonZero")]
    pub events_retention: Duration,
    /// Whether webhooks are configured (events then wait for delivery before pruning).
    #[serde(skip)]
    pub webhooks_enabled: bool,
}

impl settings::Section for CleanupSettings {}

impl Default for CleanupSettings {
    fn default() -> Self {
        CleanupSettings {
            interval: Duration::from_secs(60),
            withdrawal_ttl: Duration::from_secs(30 * 60),
            retention: Duration::from_secs(30 * 86400),
            events_retention: Duration::from_secs(7 * 86400),
            webhooks_enabled: false,
        }
    }
}

/// What one pass did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Swept {
    pub withdrawals_expired: usize,
    /// Stale withdrawals another actor ended first.
    pub withdrawals_lost_race: usize,
    pub import_jobs_pruned: u64,
    pub events_pruned: u64,
}

/// One cleanup pass.
pub async fn sweep(store: &Store, settings: &CleanupSettings) -> Result<Swept, StoreError> {
    let now = Utc::now();
    let mut swept = Swept::default();
    let cutoff = now - chrono::Duration::from_std(settings.withdrawal_ttl).unwrap_or_default();
    loop {
        let stale = store.stale_withdrawals(cutoff, 100).await?;
        let (batch, expired_before) = (stale.len(), swept.withdrawals_expired);
        for id in stale {
            match store
                .finish_withdrawal(id, WithdrawalOutcome::Expired, Utc::now())
                .await
            {
                Ok(w) => {
                    swept.withdrawals_expired += 1;
                    tracing::info!(withdrawal = id, user = w.user_id, token = %w.token, amount = w.amount, "withdrawal expired; hold refunded");
                }
                Err(
                    StoreError::Conflict(_) | StoreError::Refused { .. } | StoreError::NotFound,
                ) => swept.withdrawals_lost_race += 1,
                Err(e) => return Err(e),
            }
        }
        // A full batch that expired nothing (all taken by another pass) would come back as is.
        if batch < 100 || swept.withdrawals_expired == expired_before {
            break;
        }
    }
    let keep = chrono::Duration::from_std(settings.retention).unwrap_or_default();
    swept.import_jobs_pruned = store.prune_import_jobs(now - keep).await?;
    let keep_events = chrono::Duration::from_std(settings.events_retention).unwrap_or_default();
    swept.events_pruned = store
        .prune_outbox(now - keep_events, !settings.webhooks_enabled)
        .await?;
    Ok(swept)
}

/// The cleanup job; its actor is [`Cleanup`].
pub struct Sweeper {
    store: Store,
    settings: CleanupSettings,
}

/// The `cleanup` service's actor.
pub type Cleanup = Every<Sweeper>;

impl Cleanup {
    pub fn new(store: Store, settings: CleanupSettings, svc: ServiceCtx) -> Self {
        Every::of(Sweeper { store, settings }, svc)
    }
}

impl Periodic for Sweeper {
    type Done = Result<Swept, StoreError>;
    const WHAT: &'static str = "sweep";

    fn interval(&self) -> Duration {
        self.settings.interval
    }

    fn pass(&mut self) -> Pin<Box<dyn Future<Output = Self::Done>>> {
        let (store, settings) = (self.store.clone(), self.settings.clone());
        Box::pin(async move { sweep(&store, &settings).await })
    }

    fn finished(&mut self, done: Self::Done, _: &ServiceCtx) -> Outcome {
        let swept = match done {
            Ok(swept) => swept,
            Err(e) => return Err(e.to_string()).into(),
        };
        if swept != Swept::default() {
            tracing::info!(
                expired = swept.withdrawals_expired,
                lost_race = swept.withdrawals_lost_race,
                import_jobs_pruned = swept.import_jobs_pruned,
                events_pruned = swept.events_pruned,
                "cleanup pass"
            );
        }
        Outcome::Done
    }
}
