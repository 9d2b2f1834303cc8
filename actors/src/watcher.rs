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

use std::collections::VecDeque;
use std::sync::Arc;
use std::time::Duration;

use futures_util::{StreamExt, TryStreamExt};
use std::future::Future;
use std::pin::Pin;

use crate::db::humantime;
use crate::service::{Every, Outcome, Periodic, ServiceCtx};
use crate::settings::{self, Dur, NonZero};
use crate::solana::{memos, treasury_delta, RpcClient, RpcError, SignatureInfo, Token};
use crate::store::{Credited, Cursor, IncomingDeposit, Store, StoreError};

/// The deposit watchers' settings (one watcher per token, all on one RPC).
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize, schemars::JsonSchema)]
#[serde(default)]
pub struct WatcherSettings {
    /// The Solana JSON-RPC endpoint; the watchers run only when it is set.
    #[serde(deserialize_with = "settings::http_url")]
    pub solana_rpc_url: Option<String>,
    /// Time between passes while the RPC answers.
    #[serde(rename = "solana_poll_interval", with = "NonZero")]
    pub interval: Duration,
    /// Signatures asked per `getSignaturesForAddress` page (1 to 1000, the RPC's maximum).
    #[serde(
        rename = "solana_page_limit",
        deserialize_with = "settings::between::<1, 1000, _, _>"
    )]
    pub page_limit: usize,
    /// `getTransaction` calls in flight at once.
    #[serde(
        rename = "solana_concurrency",
        deserialize_with = "settings::at_least::<1, _, _>"
    )]
    pub concurrency: usize,
    /// RPC request timeout (the whole request), and connect timeout.
    #[serde(with = "NonZero")]
    pub solana_timeout: Duration,
    #[serde(with = "NonZero")]
    pub solana_connect_timeout: Duration,
    /// Delay between the starts of successive watchers on the one RPC.
    #[serde(rename = "solana_start_stagger", with = "Dur")]
    pub start_stagger: Duration,
    /// RPC failure backoff: base × 2^(failures − 1), up to the cap.
    #[serde(rename = "solana_backoff_base", with = "NonZero")]
    pub backoff_base: Duration,
    #[serde(rename = "solana_backoff_cap", with = "NonZero")]
    pub backoff_cap: Duration,
    /// Failed reads of one treasury signature (passes) before it is quarantined and the
    /// cursor moves on.
    #[serde(
        rename = "solana_quarantine_after",
        deserialize_with = "settings::at_least::<1, _, _>"
    )]
    pub quarantine_after: u32,
    /// Where each token's first run (no cursor yet) begins: `name=<signature or slot>` pairs.
    #[serde(rename = "solana_start", with = "starts")]
    #[schemars(with = "String")]
    pub starts: Vec<(String, StartAt)>,
    /// Most signatures one pass processes: a longer backlog is taken oldest first, this many
    /// at a time, the cursor moving after each such window, and the next pass follows at once.
    #[serde(skip, default = "max_window")]
    pub max_window: usize,
    /// Delay before the first pass (this token's place in the stagger).
    #[serde(skip)]
    pub start_delay: Duration,
    /// Where this token's first run begins (from `starts`).
    #[serde(skip)]
    pub start: Option<StartAt>,
}

fn max_window() -> usize {
    1000
}

impl WatcherSettings {
    pub fn backoff(&self) -> crate::restart::Backoff {
        crate::restart::Backoff::new(self.backoff_base, self.backoff_cap)
    }

    /// The settings of the `index`-th token's watcher: its place in the stagger, its start.
    pub fn for_token(&self, index: usize, token: &str) -> WatcherSettings {
        WatcherSettings {
            start_delay: self.start_stagger * index as u32,
            start: self
                .starts
                .iter()
                .find(|(name, _)| name == token)
                .map(|(_, at)| at.clone()),
            ..self.clone()
        }
    }
}

impl settings::Section for WatcherSettings {
    fn check(&self) -> Result<(), settings::Invalid> {
        settings::backoff(
            self.backoff_base,
            self.backoff_cap,
            "solana_backoff_base",
            "solana_backoff_cap",
        )
        .map(drop)
    }
}

/// Where a token's watcher begins when it has no cursor yet.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StartAt {
    /// Only signatures newer than this one.
    Signature(String),
    /// Only signatures at this slot or later.
    Slot(u64),
}

/// `name=<signature or slot>` pairs, comma separated.
mod starts {
    use super::StartAt;
    use serde::{de::Error, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(starts: &[(String, StartAt)], s: S) -> Result<S::Ok, S::Error> {
        let text: Vec<String> = starts
            .iter()
            .map(|(name, at)| match at {
                StartAt::Signature(sig) => format!("{name}={sig}"),
                StartAt::Slot(slot) => format!("{name}={slot}"),
            })
            .collect();
        s.serialize_str(&text.join(","))
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(
        d: D,
    ) -> Result<Vec<(String, StartAt)>, D::Error> {
        let mut starts: Vec<(String, StartAt)> = Vec::new();
        for pair in crate::settings::list(d)? {
            let Some((name, at)) = pair.split_once('=') else {
                return Err(D::Error::custom(format!(
                    "`{pair}` is not name=<signature or slot> (e.g. usdc=250000000)"
                )));
            };
            let (name, at) = (name.trim().to_ascii_lowercase(), at.trim());
            if starts.iter().any(|(n, _)| *n == name) {
                return Err(D::Error::custom(format!("token `{name}` is given twice")));
            }
            let start = if !at.is_empty() && at.bytes().all(|b| b.is_ascii_digit()) {
                StartAt::Slot(
                    at.parse()
                        .map_err(|_| D::Error::custom(format!("slot `{at}` is too large")))?,
                )
            } else if crate::solana::is_signature(at) {
                StartAt::Signature(at.to_string())
            } else {
                return Err(D::Error::custom(format!(
                    "`{}` for token `{name}` is neither a slot (a number) nor a base58 transaction signature",
                    at.chars().take(100).collect::<String>()
                )));
            };
            starts.push((name, start));
        }
        Ok(starts)
    }
}

impl Default for WatcherSettings {
    fn default() -> Self {
        WatcherSettings {
            solana_rpc_url: None,
            interval: Duration::from_secs(10),
            page_limit: 1000,
            concurrency: 8,
            solana_timeout: Duration::from_secs(10),
            solana_connect_timeout: Duration::from_secs(5),
            start_stagger: Duration::from_secs(5),
            backoff_base: Duration::from_secs(5),
            backoff_cap: Duration::from_secs(300),
            quarantine_after: 5,
            starts: Vec::new(),
            max_window: max_window(),
            start_delay: Duration::ZERO,
            start: None,
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
    /// Signatures quarantined by this pass.
    pub quarantined: usize,
    /// Quarantined signatures in the window, not read.
    pub quarantine_skipped: usize,
    /// Quarantined signatures read again at an admin's request.
    pub retried: usize,
    pub credited: Credited,
}

/// The watching job of one token: a pass reads one window of the treasury's signatures.
pub struct Watch {
    token: Token,
    store: Store,
    rpc: Arc<RpcClient>,
    settings: WatcherSettings,
}

/// The watcher service of one token.
pub type Watcher = Every<Watch>;

impl Watcher {
    pub fn new(
        token: Token,
        store: Store,
        rpc: Arc<RpcClient>,
        settings: WatcherSettings,
        svc: ServiceCtx,
    ) -> Self {
        Every::of(
            Watch {
                token,
                store,
                rpc,
                settings,
            },
            svc,
        )
    }
}

impl Periodic for Watch {
    type Done = Result<Pass, WatchError>;
    const WHAT: &'static str = "poll";
    const FAILING: &'static str = "RPC";

    fn interval(&self) -> Duration {
        self.settings.interval
    }

    fn backoff(&self) -> Option<crate::restart::Backoff> {
        Some(self.settings.backoff())
    }

    fn first_delay(&self) -> Option<(Duration, String)> {
        let delay = self.settings.start_delay;
        Some((delay, format!("staggered start: {}", humantime(delay))))
    }

    fn pass(&mut self) -> Pin<Box<dyn Future<Output = Self::Done>>> {
        let (token, store, rpc, settings) = (
            self.token.clone(),
            self.store.clone(),
            self.rpc.clone(),
            self.settings.clone(),
        );
        Box::pin(async move { run_pass(&token, &store, &rpc, &settings).await })
    }

    fn finished(&mut self, done: Self::Done, svc: &ServiceCtx) -> Outcome {
        match done {
            Ok(pass) => {
                if pass.signatures > 0 {
                    tracing::info!(service = %svc.name(), signatures = pass.signatures, pages = pass.pages,
                        failed_skipped = pass.failed_skipped, attributed = pass.credited.attributed,
                        unattributed = pass.credited.unattributed, duplicates = pass.credited.duplicates,
                        amount = pass.credited.amount, "window processed");
                }
                if pass.more {
                    Outcome::More("catching up: backlog left".into())
                } else {
                    Outcome::Done
                }
            }
            Err(e) => Outcome::Failed {
                retry_after: match &e {
                    WatchError::Rpc(rpc) => rpc.retry_after(),
                    _ => None,
                },
                error: e.to_string(),
            },
        }
    }
}

/// What a transaction read for the window amounts to.
enum Read {
    Deposit(IncomingDeposit),
    /// Failed on chain, or no gain for the treasury: nothing to credit.
    Nothing(&'static str),
    /// Cannot be read (`result: null`, a malformed or oversized transfer): counts toward
    /// quarantine.
    Unreadable(WatchError),
}

/// Reads one listed signature's transaction into what it credits.
async fn read(rpc: &RpcClient, token: &Token, s: &SignatureInfo) -> Result<Read, WatchError> {
    let Some(tx) = rpc.transaction(&s.signature).await? else {
        return Ok(Read::Unreadable(WatchError::Missing(s.signature.clone())));
    };
    let unreadable = |message: String| {
        Read::Unreadable(WatchError::Unreadable {
            signature: s.signature.clone(),
            message,
        })
    };
    let delta = match treasury_delta(&tx, &token.treasury, &token.mint) {
        Ok(Some(delta)) => delta,
        Ok(None) => return Ok(Read::Nothing("the transaction failed on chain")),
        Err(message) => return Ok(unreadable(message)),
    };
    if delta <= 0 {
        return Ok(Read::Nothing("no gain for the treasury"));
    }
    let Ok(amount) = i64::try_from(delta) else {
        return Ok(unreadable(format!(
            "a deposit of {delta} base units is beyond what the ledger holds (2^63 - 1)"
        )));
    };
    let mut memo: Vec<String> = s.memo.iter().cloned().collect();
    memo.extend(memos(&tx));
    Ok(Read::Deposit(IncomingDeposit {
        signature: s.signature.clone(),
        slot: s.slot as i64,
        amount,
        memo: (!memo.is_empty()).then(|| memo.join(" | ")),
    }))
}

/// Reads again the quarantined signatures an admin asked to retry: credited (or found to be
/// no deposit) and resolved, or counted and quarantined again.
async fn retry_quarantined(
    token: &Token,
    store: &Store,
    rpc: &RpcClient,
    settings: &WatcherSettings,
    pass: &mut Pass,
) -> Result<(), WatchError> {
    for row in store.quarantine_retries(&token.name).await? {
        let s = SignatureInfo {
            signature: row.signature.clone(),
            slot: row.slot as u64,
            err: None,
            memo: row.memo.clone(),
        };
        let now = chrono::Utc::now();
        match read(rpc, token, &s).await? {
            Read::Deposit(d) => {
                let done = store.credit_deposits(&token.name, &[d], None, now).await?;
                pass.credited.attributed += done.attributed;
                pass.credited.unattributed += done.unattributed;
                pass.credited.duplicates += done.duplicates;
                pass.credited.amount += done.amount;
                store
                    .resolve_quarantine(&token.name, Some(&row.signature), "credited", now)
                    .await?;
                tracing::info!(token = %token.name, signature = %row.signature, "quarantined deposit read on retry and credited");
            }
            Read::Nothing(why) => {
                store
                    .resolve_quarantine(&token.name, Some(&row.signature), why, now)
                    .await?;
            }
            Read::Unreadable(e) => {
                store
                    .note_unreadable(
                        &token.name,
                        &row.signature,
                        row.slot,
                        row.memo.as_deref(),
                        &e.to_string(),
                        settings.quarantine_after,
                        now,
                    )
                    .await?;
                tracing::warn!(token = %token.name, signature = %row.signature, error = %e, "quarantined deposit still unreadable on retry");
            }
        }
        pass.retried += 1;
    }
    Ok(())
}

/// One pass: admins' quarantine retries, then the window after the cursor (or after the
/// configured start, on a first run), credited with the new cursor.
///
/// Paging keeps at most `max_window` + one page of signatures in memory, however long the
/// history: the oldest `max_window` are processed, the rest are left for the next pass. A
/// signature that cannot be read counts an attempt; while any such signature is not yet
/// quarantined, the window is credited up to just before it (the cursor stops there) and the
/// pass fails (backing off). Quarantined signatures are skipped, so the cursor moves on.
pub async fn run_pass(
    token: &Token,
    store: &Store,
    rpc: &RpcClient,
    settings: &WatcherSettings,
) -> Result<Pass, WatchError> {
    let mut pass = Pass::default();
    retry_quarantined(token, store, rpc, settings, &mut pass).await?;
    let window = list_window(token, store, rpc, settings, &mut pass).await?;
    pass.signatures = window.len();
    let Some(newest) = window.last() else {
        return Ok(pass);
    };
    let newest = Cursor {
        signature: newest.signature.clone(),
        slot: newest.slot as i64,
    };
    let (skip, failing) = store.quarantined_signatures(&token.name).await?;
    let live: Vec<(usize, &SignatureInfo)> = window
        .iter()
        .enumerate()
        .filter(|(_, s)| s.err.is_none() && !skip.contains(&s.signature))
        .collect();
    pass.failed_skipped = window.iter().filter(|s| s.err.is_some()).count();
    pass.quarantine_skipped = window.len() - pass.failed_skipped - live.len();
    let fetched: Vec<(usize, &SignatureInfo, Read)> = futures_util::stream::iter(live)
        .map(|(i, s)| async move { Ok::<_, WatchError>((i, s, read(rpc, token, s).await?)) })
        .buffered(settings.concurrency.max(1))
        .try_collect()
        .await?;
    let now = chrono::Utc::now();
    let mut deposits: Vec<(usize, IncomingDeposit)> = Vec::new();
    let mut holding: Option<(usize, WatchError)> = None;
    for (i, s, read) in fetched {
        match read {
            Read::Deposit(d) => deposits.push((i, d)),
            Read::Nothing(_) => pass.failed_skipped += 1,
            Read::Unreadable(e) => {
                let row = store
                    .note_unreadable(
                        &token.name,
                        &s.signature,
                        s.slot as i64,
                        s.memo.as_deref(),
                        &e.to_string(),
                        settings.quarantine_after,
                        now,
                    )
                    .await?;
                if row.state == "quarantined" {
                    pass.quarantined += 1;
                    tracing::error!(token = %token.name, signature = %s.signature, attempts = row.attempts, error = %e,
                        "deposit quarantined: unreadable after every attempt; the cursor moves on (list: GET /admin/deposits/quarantine)");
                } else if holding.is_none() {
                    holding = Some((i, e));
                }
            }
        }
    }
    match holding {
        None => {
            let deposits: Vec<IncomingDeposit> = deposits.into_iter().map(|(_, d)| d).collect();
            pass.credited = store
                .credit_deposits(&token.name, &deposits, Some(&newest), now)
                .await?;
            if failing {
                // Signatures counted by earlier passes that read fine this time.
                store
                    .resolve_quarantine(&token.name, None, "credited", now)
                    .await?;
            }
            Ok(pass)
        }
        Some((at, error)) => {
            // Everything before the unreadable signature is credited; the cursor stops there.
            if at > 0 {
                let before: Vec<IncomingDeposit> = deposits
                    .into_iter()
                    .filter(|(i, _)| *i < at)
                    .map(|(_, d)| d)
                    .collect();
                let last = &window[at - 1];
                let cursor = Cursor {
                    signature: last.signature.clone(),
                    slot: last.slot as i64,
                };
                store
                    .credit_deposits(&token.name, &before, Some(&cursor), now)
                    .await?;
            }
            Err(error)
        }
    }
}

/// The signatures this pass processes, oldest first: newer than the cursor (or the start),
/// at most `max_window` of them (`pass.more` when more wait).
async fn list_window(
    token: &Token,
    store: &Store,
    rpc: &RpcClient,
    settings: &WatcherSettings,
    pass: &mut Pass,
) -> Result<Vec<SignatureInfo>, WatchError> {
    let cursor = store.watcher_cursor(&token.name).await?;
    let (until, floor) = match (&cursor, &settings.start) {
        (Some(c), _) => (Some(c.signature.clone()), None),
        (None, Some(StartAt::Signature(s))) => (Some(s.clone()), None),
        (None, Some(StartAt::Slot(slot))) => (None, Some(*slot)),
        (None, None) => {
            tracing::warn!(token = %token.name, "first run without a start: reading the treasury's whole history, oldest first (set TIPOFF_SOLANA_START to begin later)");
            (None, None)
        }
    };
    let limit = settings.page_limit.max(1);
    let max_window = settings.max_window.max(1);
    // Newest first, as listed; only the oldest `max_window` are kept.
    let mut listed: VecDeque<SignatureInfo> = VecDeque::new();
    let mut before: Option<String> = None;
    loop {
        let page = rpc
            .signatures(&token.treasury, before.as_deref(), until.as_deref(), limit)
            .await?;
        pass.pages += 1;
        let full = page.len() >= limit;
        before = page.last().map(|s| s.signature.clone());
        let mut below_start = false;
        for s in page {
            if floor.is_some_and(|f| s.slot < f) {
                below_start = true;
                break;
            }
            listed.push_back(s);
        }
        while listed.len() > max_window {
            listed.pop_front();
            pass.more = true;
        }
        if !full || before.is_none() || below_start {
            break;
        }
    }
    Ok(listed.into_iter().rev().collect())
}
