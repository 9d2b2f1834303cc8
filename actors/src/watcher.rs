//! The `watcher:<token>` services: one per configured SPL token, crediting deposits into its
//! treasury account exactly once.
//!
//! A pass reads the window of new signatures: `getSignaturesForAddress(treasury, until =
//! cursor)` newest first, paging back with `before` until a page comes back short. It then
//! reads each successful transaction oldest first (at most `max_window` signatures per pass;
//! a longer backlog is worked through oldest first, window by window) (`getTransaction`, a few at a time, in
//! order), computes the treasury's gain for the mint (see [`crate::solana`]) and hands the
//! whole window to [`Store::credit_deposits`], which credits each new (token, signature) once
//! and moves the cursor in the same transaction. Signatures the list marks failed are never
//! fetched. If any transaction of the window cannot be read (an RPC error, or `result: null`
//! for one not available yet) nothing is written and the cursor stays: the next pass reads
//! the same window again, and signatures already credited are skipped by their unique key.
//!
//! Messages: [`Control`] (ping / stop / wake: poll now).
//! Timers: one pass at a time; the next after the poll interval, or after a backoff of
//! base × 2^(failures − 1) (at least the RPC's `Retry-After`) while the RPC fails. The first
//! pass waits for the start delay, so the watchers of one RPC start staggered.
//! Stops: at once, or when the pass in flight ends.

use std::sync::Arc;
use std::time::Duration;

use actix::prelude::*;
use futures_util::{StreamExt, TryStreamExt};

use crate::db::humantime;
use crate::restart::exponential;
use crate::service::{Control, ServiceCtx, TickGate};
use crate::solana::{memos, treasury_delta, RpcClient, RpcError, SignatureInfo, Token};
use crate::store::{Credited, Cursor, IncomingDeposit, Store, StoreError};

/// Watcher pacing.
#[derive(Debug, Clone)]
pub struct WatcherSettings {
    /// Time between passes while the RPC answers.
    pub interval: Duration,
    /// Signatures asked per `getSignaturesForAddress` page (the RPC's maximum is 1,000).
    pub page_limit: usize,
    /// `getTransaction` calls in flight at once.
    pub concurrency: usize,
    /// Most signatures one pass processes: a longer backlog is taken oldest first, this many
    /// at a time, the cursor moving after each such window, and the next pass follows at once.
    pub max_window: usize,
    /// Delay before the first pass (staggering the watchers of one RPC).
    pub start_delay: Duration,
    pub backoff_base: Duration,
    pub backoff_cap: Duration,
}

impl Default for WatcherSettings {
    fn default() -> Self {
        WatcherSettings {
            interval: Duration::from_secs(10),
            page_limit: 1000,
            concurrency: 8,
            max_window: 1000,
            start_delay: Duration::ZERO,
            backoff_base: Duration::from_secs(5),
            backoff_cap: Duration::from_secs(300),
        }
    }
}

/// Why a pass wrote nothing.
#[derive(Debug, thiserror::Error)]
pub enum WatchError {
    #[error(transparent)]
    Rpc(#[from] RpcError),
    #[error("transaction {0} is not available yet (getTransaction answered null)")]
    Missing(String),
    #[error("transaction {signature}: {message}")]
    Unreadable { signature: String, message: String },
    #[error("storage: {0}")]
    Store(#[from] StoreError),
}

/// What one pass did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Pass {
    pub signatures: usize,
    pub pages: usize,
    pub failed_skipped: usize,
    /// The backlog was longer than one window: more is waiting.
    pub more: bool,
    pub credited: Credited,
}

/// The watcher actor of one token.
pub struct Watcher {
    token: Token,
    store: Store,
    rpc: Arc<RpcClient>,
    settings: WatcherSettings,
    svc: ServiceCtx,
    gate: TickGate,
    failures: u32,
    next: Option<SpawnHandle>,
}

impl Watcher {
    pub fn new(
        token: Token,
        store: Store,
        rpc: Arc<RpcClient>,
        settings: WatcherSettings,
        svc: ServiceCtx,
    ) -> Self {
        Watcher {
            token,
            store,
            rpc,
            settings,
            svc,
            gate: TickGate::default(),
            failures: 0,
            next: None,
        }
    }

    fn later(&mut self, ctx: &mut Context<Self>, delay: Duration, reason: String) {
        if let Some(h) = self.next.take() {
            ctx.cancel_future(h);
        }
        self.svc.schedule(delay, reason);
        self.next = Some(ctx.run_later(delay, |act, ctx| {
            act.next = None;
            act.pass(ctx);
        }));
    }

    fn pass(&mut self, ctx: &mut Context<Self>) {
        if !self.gate.ready() {
            return;
        }
        if !self.svc.may_work() {
            let every = self.settings.interval;
            self.later(ctx, every, "database unhealthy: waiting".into());
            return;
        }
        self.gate.begin(&self.svc);
        let (token, store, rpc, settings) = (
            self.token.clone(),
            self.store.clone(),
            self.rpc.clone(),
            self.settings.clone(),
        );
        let fut = async move { run_pass(&token, &store, &rpc, &settings).await };
        ctx.spawn(fut.into_actor(self).map(|res, act, ctx| {
            let stop = act.gate.end();
            match res {
                Ok(pass) => {
                    act.failures = 0;
                    act.svc.tick_ok();
                    if pass.signatures > 0 {
                        tracing::info!(service = %act.svc.name(), signatures = pass.signatures, pages = pass.pages,
                            failed_skipped = pass.failed_skipped, attributed = pass.credited.attributed,
                            unattributed = pass.credited.unattributed, duplicates = pass.credited.duplicates,
                            amount = pass.credited.amount, "window processed");
                    }
                    if pass.more {
                        act.later(ctx, Duration::ZERO, "catching up: backlog left".into());
                    } else {
                        let every = act.settings.interval;
                        act.later(ctx, every, format!("poll: {}", humantime(every)));
                    }
                }
                Err(e) => {
                    act.failures += 1;
                    act.svc.tick_err(&e);
                    let mut delay = exponential(
                        act.settings.backoff_base,
                        act.settings.backoff_cap,
                        act.failures,
                    );
                    if let WatchError::Rpc(rpc) = &e {
                        if let Some(wait) = rpc.retry_after() {
                            delay = delay.max(wait.min(act.settings.backoff_cap));
                        }
                    }
                    let n = act.failures;
                    act.later(
                        ctx,
                        delay,
                        format!("RPC failing ({n} in a row): {}", humantime(delay)),
                    );
                }
            }
            if stop {
                ctx.stop();
            }
        }));
    }
}

/// One pass: read the window after the cursor, then credit it with the new cursor.
pub async fn run_pass(
    token: &Token,
    store: &Store,
    rpc: &RpcClient,
    settings: &WatcherSettings,
) -> Result<Pass, WatchError> {
    let cursor = store.watcher_cursor(&token.name).await?;
    let until = cursor.as_ref().map(|c| c.signature.as_str());
    let limit = settings.page_limit.max(1);
    let mut pass = Pass::default();
    let mut window: Vec<SignatureInfo> = Vec::new();
    let mut before: Option<String> = None;
    loop {
        let page = rpc
            .signatures(&token.treasury, before.as_deref(), until, limit)
            .await?;
        pass.pages += 1;
        let full = page.len() >= limit;
        before = page.last().map(|s| s.signature.clone());
        window.extend(page);
        if !full || before.is_none() {
            break;
        }
    }
    window.reverse();
    if window.len() > settings.max_window.max(1) {
        window.truncate(settings.max_window.max(1));
        pass.more = true;
    }
    pass.signatures = window.len();
    let Some(newest) = window.last() else {
        return Ok(pass);
    };
    let newest = Cursor {
        signature: newest.signature.clone(),
        slot: newest.slot as i64,
    };
    let live: Vec<SignatureInfo> = window.into_iter().filter(|s| s.err.is_none()).collect();
    pass.failed_skipped = pass.signatures - live.len();
    let fetched: Vec<(SignatureInfo, serde_json::Value)> = futures_util::stream::iter(live)
        .map(|s| async move {
            match rpc.transaction(&s.signature).await? {
                Some(tx) => Ok((s, tx)),
                None => Err(WatchError::Missing(s.signature)),
            }
        })
        .buffered(settings.concurrency.max(1))
        .try_collect()
        .await?;
    let mut deposits = Vec::new();
    for (s, tx) in fetched {
        let unreadable = |message: String| WatchError::Unreadable {
            signature: s.signature.clone(),
            message,
        };
        let Some(delta) = treasury_delta(&tx, &token.treasury, &token.mint).map_err(unreadable)?
        else {
            pass.failed_skipped += 1;
            continue;
        };
        if delta <= 0 {
            continue;
        }
        let Ok(amount) = i64::try_from(delta) else {
            return Err(unreadable(format!(
                "a deposit of {delta} base units is beyond what the ledger holds (2^63 - 1)"
            )));
        };
        let mut memo: Vec<String> = s.memo.iter().cloned().collect();
        memo.extend(memos(&tx));
        deposits.push(IncomingDeposit {
            signature: s.signature,
            slot: s.slot as i64,
            amount,
            memo: (!memo.is_empty()).then(|| memo.join(" | ")),
        });
    }
    pass.credited = store
        .credit_deposits(&token.name, &deposits, Some(&newest), chrono::Utc::now())
        .await?;
    Ok(pass)
}

impl Actor for Watcher {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Self::Context) {
        let delay = self.settings.start_delay;
        if delay.is_zero() {
            self.pass(ctx);
        } else {
            self.later(ctx, delay, format!("staggered start: {}", humantime(delay)));
        }
    }
}

impl Handler<Control> for Watcher {
    type Result = ();

    fn handle(&mut self, msg: Control, ctx: &mut Self::Context) {
        if self.gate.control(msg, ctx) {
            self.pass(ctx);
        }
    }
}
