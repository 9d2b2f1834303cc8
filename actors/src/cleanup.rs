//! The `cleanup` service: on its own timer, expires stale withdrawals and prunes old history.
//!
//! - A withdrawal still `pending` after the TTL becomes `expired` and its hold returns to the
//!   user, each in one compare-and-set transaction ([`Store::finish_withdrawal`]): when two
//!   passes race (two replicas, or a pass and an admin), only one of them changes it.
//! - Import jobs that ended more than the retention ago are deleted with their dates; outbox
//!   events past their own retention are deleted once delivered.
//!
//! Messages: [`Control`] (ping / stop / wake: run now).
//! Timers: one pass every interval. Stops: at once, or when the pass in flight ends.

use std::time::Duration;

use actix::prelude::*;
use chrono::Utc;

use crate::db::humantime;
use crate::service::{Control, ServiceCtx, TickGate};
use crate::store::{Store, StoreError, WithdrawalOutcome};

#[derive(Debug, Clone)]
pub struct CleanupSettings {
    pub interval: Duration,
    /// A pending withdrawal older than this expires.
    pub withdrawal_ttl: Duration,
    /// Finished history older than this is deleted.
    pub retention: Duration,
    /// Outbox events older than this are deleted once delivered (all of them when no webhook
    /// is configured: they then only serve the live stream's resume).
    pub events_retention: Duration,
    pub webhooks_enabled: bool,
}

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

pub struct Cleanup {
    store: Store,
    settings: CleanupSettings,
    svc: ServiceCtx,
    gate: TickGate,
}

impl Cleanup {
    pub fn new(store: Store, settings: CleanupSettings, svc: ServiceCtx) -> Self {
        Cleanup {
            store,
            settings,
            svc,
            gate: TickGate::default(),
        }
    }

    fn pass(&mut self, ctx: &mut Context<Self>) {
        if !self.gate.ready() || !self.svc.may_work() {
            return;
        }
        self.gate.begin(&self.svc);
        let (store, settings) = (self.store.clone(), self.settings.clone());
        ctx.spawn(
            async move { sweep(&store, &settings).await }
                .into_actor(self)
                .map(|res, act, ctx| {
                    let stop = act.gate.end();
                    match res {
                        Ok(swept) => {
                            act.svc.tick_ok();
                            if swept != Swept::default() {
                                tracing::info!(
                                    expired = swept.withdrawals_expired,
                                    lost_race = swept.withdrawals_lost_race,
                                    import_jobs_pruned = swept.import_jobs_pruned,
                                    events_pruned = swept.events_pruned,
                                    "cleanup pass"
                                );
                            }
                        }
                        Err(e) => act.svc.tick_err(&e),
                    }
                    let every = act.settings.interval;
                    act.svc
                        .schedule(every, format!("sweep: {}", humantime(every)));
                    if stop {
                        ctx.stop();
                    }
                }),
        );
    }
}

impl Actor for Cleanup {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Self::Context) {
        self.pass(ctx);
        ctx.run_interval(self.settings.interval, |act, ctx| act.pass(ctx));
    }
}

impl Handler<Control> for Cleanup {
    type Result = ();

    fn handle(&mut self, msg: Control, ctx: &mut Self::Context) {
        if self.gate.control(msg, ctx) {
            self.pass(ctx);
        }
    }
}
