//! `poller:<league>`: one per enabled league, a child of the root supervisor.
//!
//! Owned by the supervisor, built fresh on every (re)start by the factory in the daemon's
//! `services.rs`. Its three loops run side by side, each with at most one pass in flight, off
//! its own thread's mailbox (the work is spawned futures; fetching and storing never block the
//! actor), so a score pass — the one that settles — never waits behind a schedule pass or an
//! import slice. The schedule and import passes share the league's ESPN concurrency; the score
//! pass's few boards take none of it:
//!
//! - **schedule** (every `schedule_interval`, default 6 h): scoreboards for yesterday … today +
//!   lookahead, fetched in parallel with bounded concurrency, games upserted by (league, ESPN
//!   event id), one market per new game.
//! - **scores** (adaptive): yesterday's and today's boards plus every board holding a live
//!   game; then the pace is chosen from the stored games: the live interval while a game is
//!   live or starts within the lead window, else the idle interval. The pace and its reason
//!   are reported to the status registry (`interval_secs`, `interval_reason`).
//! - **imports**: the league's persistent import jobs, a slice at a time (bounded by
//!   `import_slice`, so a tick never runs long and a stop or a cancel takes effect soon); a job
//!   left `running` by a crash or stop is resumed from its pending dates.
//!
//! Upstream failures are absorbed: the pass reports the error (`last_error`), and the loop backs
//! off exponentially (honouring `Retry-After`) without a restart. A panic or a hang is the
//! supervisor's to handle. While the database is unhealthy no pass starts.
//!
//! Messages: [`Control`] (ping, stop, wake: an import was queued), [`RunOnce`] (one pass now,
//! answering its [`Outcome`]: the one-step driver for tests and tools).
//! Timers: the schedule and score loops (re-armed after each pass with the delay it chose) and
//! the import check. Stops: at once when idle; when mid-pass, no new fetch starts, the fetches
//! in flight are recorded, then it stops. Every date commits on its own, so a stop or a kill at
//! any moment leaves an import resumable.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use actix::prelude::*;
use chrono::{DateTime, NaiveDate, Utc};
use futures_util::{stream, StreamExt};

use crate::db::humantime;
use crate::espn::{EspnClient, EspnError, ScoreboardGame};
use crate::restart::Backoff;
use crate::service::{Control, ServiceCtx};
use crate::settings::{self, Dur, NonZero};
use crate::store::{DatePass, ImportJob, MarketTransition, Store, StoreError, Upserted};

/// The wall clock the poller reads ("today", "starting soon", market lock times). Injected so
/// tests can put the poller at any moment of a fixture's day.
pub type Clock = Arc<dyn Fn() -> DateTime<Utc> + Send + Sync>;

/// How a league poller paces itself (every league's poller has the same settings).
#[derive(Clone, serde::Serialize, serde::Deserialize, schemars::JsonSchema)]
#[serde(default)]
pub struct PollerSettings {
    /// Time between schedule passes (today and the lookahead days are read, new games open
    /// markets).
    #[serde(with = "NonZero")]
    pub schedule_interval: Duration,
    /// Days after today the schedule loop reads (0 to 60).
    #[serde(
        rename = "schedule_lookahead_days",
        deserialize_with = "settings::between::<0, 60, _, _>"
    )]
    pub lookahead_days: u32,
    /// Score loop pace while a game is live or about to start.
    #[serde(rename = "score_live_interval", with = "NonZero")]
    pub live_interval: Duration,
    /// Score loop pace otherwise.
    #[serde(rename = "score_idle_interval", with = "NonZero")]
    pub idle_interval: Duration,
    /// A game starting within this keeps the score loop at the live interval.
    #[serde(rename = "score_live_lead", with = "Dur")]
    pub live_lead: Duration,
    /// Scoreboards a poller's schedule and import passes fetch at once, together (the score
    /// pass's few boards are not counted, so settlement never queues behind them).
    #[serde(
        rename = "espn_concurrency",
        deserialize_with = "settings::at_least::<1, _, _>"
    )]
    pub concurrency: usize,
    /// Attempts per scoreboard (429/503 wait for `Retry-After`, other failures a short delay).
    #[serde(
        rename = "espn_attempts",
        deserialize_with = "settings::at_least::<1, _, _>"
    )]
    pub fetch_attempts: u32,
    /// Longest wait between attempts, whatever `Retry-After` says.
    #[serde(rename = "espn_retry_max_wait", with = "Dur")]
    pub retry_max_wait: Duration,
    /// How often queued imports are looked for (a queued import also wakes the poller).
    #[serde(with = "NonZero")]
    pub import_check_interval: Duration,
    /// Longest an import pass keeps starting new fetches before yielding to the other loops.
    #[serde(with = "NonZero")]
    pub import_slice: Duration,
    /// Passes an import gives each date (each with the client's own attempts) before the date
    /// counts as failed; between them the date waits the poller backoff (base × 2^n, capped).
    #[serde(deserialize_with = "settings::at_least::<1, _, _>")]
    pub import_attempts: u32,
    /// Upstream failure backoff: base × 2^(failures − 1), up to the cap.
    #[serde(rename = "poller_backoff_base", with = "NonZero")]
    pub backoff_base: Duration,
    #[serde(rename = "poller_backoff_cap", with = "NonZero")]
    pub backoff_cap: Duration,
    /// Settlement fee in basis points of the losing side's pool (0 to 10000).
    #[serde(
        rename = "settlement_fee_bps",
        deserialize_with = "settings::between::<0, 10000, _, _>"
    )]
    pub fee_bps: u32,
    #[serde(skip, default = "system_clock")]
    pub clock: Clock,
}

fn system_clock() -> Clock {
    Arc::new(Utc::now)
}

impl PollerSettings {
    pub fn backoff(&self) -> Backoff {
        Backoff::new(self.backoff_base, self.backoff_cap)
    }
}

impl settings::Section for PollerSettings {
    fn check(&self) -> Result<(), settings::Invalid> {
        settings::backoff(
            self.backoff_base,
            self.backoff_cap,
            "poller_backoff_base",
            "poller_backoff_cap",
        )
        .map(drop)
    }
}

impl Default for PollerSettings {
    fn default() -> Self {
        PollerSettings {
            schedule_interval: Duration::from_secs(6 * 3600),
            lookahead_days: 7,
            live_interval: Duration::from_secs(60),
            idle_interval: Duration::from_secs(15 * 60),
            live_lead: Duration::from_secs(15 * 60),
            concurrency: 4,
            fetch_attempts: 3,
            retry_max_wait: Duration::from_secs(10),
            import_check_interval: Duration::from_secs(2),
            import_slice: Duration::from_secs(5),
            import_attempts: 5,
            backoff_base: Duration::from_secs(30),
            backoff_cap: Duration::from_secs(15 * 60),
            fee_bps: crate::store::DEFAULT_FEE_BPS,
            clock: system_clock(),
        }
    }
}

impl std::fmt::Debug for PollerSettings {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&settings::fingerprint(self))
    }
}

/// ESPN's calendar day at `now`: its scoreboards follow US Eastern time, approximated as UTC−5
/// (a game at 23:30 EDT is 03:30 UTC, still "yesterday"; the score loop reads yesterday too).
pub fn espn_today(now: DateTime<Utc>) -> NaiveDate {
    (now - chrono::Duration::hours(5)).date_naive()
}

/// One kind of pass.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Work {
    Schedule,
    Scores,
    Imports,
}

impl Work {
    pub fn as_str(self) -> &'static str {
        match self {
            Work::Schedule => "schedule",
            Work::Scores => "scores",
            Work::Imports => "imports",
        }
    }
}

/// The score loop's chosen pace.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Pace {
    pub interval: Duration,
    pub reason: String,
}

/// What one pass did.
#[derive(Debug, Clone, Default)]
pub struct Outcome {
    pub dates_fetched: usize,
    /// Dates whose scoreboard could not be fetched or parsed, with why.
    pub failures: Vec<(NaiveDate, String)>,
    pub games: usize,
    pub created: usize,
    pub settled: usize,
    pub voided: usize,
    /// The longest `Retry-After` ESPN asked for.
    pub retry_after: Option<Duration>,
    /// Scores: the pace chosen from the games after the pass.
    pub pace: Option<Pace>,
    /// Imports: the job worked on, as it stands after the pass.
    pub job: Option<ImportJob>,
}

impl Outcome {
    /// Counts what an upsert did, logging each settlement and void.
    fn absorb(&mut self, league: &str, done: &[Upserted]) {
        self.games += done.len();
        for up in done {
            self.created += usize::from(up.created);
            match up.transition {
                MarketTransition::Settled(side) => {
                    self.settled += 1;
                    tracing::info!(
                        league,
                        game_id = up.game_id,
                        market_id = up.market_id,
                        winner = side,
                        "market settled"
                    );
                }
                MarketTransition::Voided => {
                    self.voided += 1;
                    tracing::info!(
                        league,
                        game_id = up.game_id,
                        market_id = up.market_id,
                        "market voided"
                    );
                }
                _ => {}
            }
        }
    }

    fn fail(&mut self, date: NaiveDate, e: &EspnError) {
        if let EspnError::RateLimited {
            retry_after: Some(wait),
            ..
        } = e
        {
            self.retry_after = self.retry_after.max(Some(*wait));
        }
        self.failures.push((date, e.to_string()));
    }

    /// `2 of 9 scoreboards failed; first 2024-01-03: ESPN answered HTTP 500`
    fn failure_summary(&self) -> Option<String> {
        let (first_date, first) = self.failures.first()?;
        Some(format!(
            "{} of {} scoreboards failed; first {first_date}: {first}",
            self.failures.len(),
            self.dates_fetched
        ))
    }
}

/// Run one pass now and answer what it did (`Err` for a database error, or while another pass
/// is running).
#[derive(Debug, Message)]
#[rtype(result = "Result<Outcome, String>")]
pub struct RunOnce(pub Work);

/// What a pass needs; shared with the pass futures.
struct Inner {
    league: String,
    espn_path: String,
    store: Store,
    espn: EspnClient,
    settings: PollerSettings,
    /// Set on stop: passes start no new fetches.
    stopping: AtomicBool,
    /// The ESPN fetches the schedule and import passes share (`espn_concurrency`); the score
    /// pass, a few boards, takes none, so settlement never queues behind a backlog.
    permits: tokio::sync::Semaphore,
}

impl Inner {
    fn now(&self) -> DateTime<Utc> {
        (self.settings.clock)()
    }

    /// Fetches `dates` with bounded concurrency, yielding each board as it arrives. New fetches
    /// start only while `keep_going` holds (checked as each one is about to start).
    fn boards<'a>(
        &'a self,
        dates: Vec<NaiveDate>,
        shared: bool,
        keep_going: impl Fn() -> bool + 'a,
    ) -> impl futures_util::Stream<Item = (NaiveDate, Result<Vec<ScoreboardGame>, EspnError>)> + 'a
    {
        stream::iter(dates)
            .take_while(move |_| {
                futures_util::future::ready(!self.stopping.load(Ordering::Acquire) && keep_going())
            })
            .map(move |date| async move {
                // Schedule and import passes share the league's ESPN concurrency.
                let _permit = match shared {
                    true => self.permits.acquire().await.ok(),
                    false => None,
                };
                let res = self
                    .espn
                    .scoreboard_with_retry(
                        &self.espn_path,
                        date,
                        self.settings.fetch_attempts,
                        self.settings.retry_max_wait,
                    )
                    .await;
                (date, res)
            })
            .buffer_unordered(self.settings.concurrency.max(1))
    }

    /// Fetches and stores whole boards (schedule and score passes).
    async fn refresh(
        &self,
        dates: Vec<NaiveDate>,
        shared: bool,
        out: &mut Outcome,
    ) -> Result<(), StoreError> {
        let mut boards = std::pin::pin!(self.boards(dates, shared, || true));
        while let Some((date, res)) = boards.next().await {
            out.dates_fetched += 1;
            match res {
                Ok(games) => {
                    let done = self
                        .store
                        .upsert_games(
                            &self.league,
                            Some(date),
                            &games,
                            self.now(),
                            self.settings.fee_bps,
                        )
                        .await?;
                    out.absorb(&self.league, &done);
                }
                Err(e) => out.fail(date, &e),
            }
        }
        Ok(())
    }

    async fn schedule_pass(&self) -> Result<Outcome, StoreError> {
        let today = espn_today(self.now());
        let first = today - chrono::Duration::days(1);
        let dates: Vec<NaiveDate> = first
            .iter_days()
            .take(self.settings.lookahead_days as usize + 2)
            .collect();
        let mut out = Outcome::default();
        self.refresh(dates, true, &mut out).await?;
        Ok(out)
    }

    async fn score_pass(&self) -> Result<Outcome, StoreError> {
        let today = espn_today(self.now());
        let before = self.activity().await?;
        let mut dates = vec![today - chrono::Duration::days(1), today];
        dates.extend(before.boards);
        dates.sort();
        dates.dedup();
        let mut out = Outcome::default();
        // The score pass takes no shared permit: settlement never waits behind a backlog.
        self.refresh(dates, false, &mut out).await?;
        let after = self.activity().await?;
        let s = &self.settings;
        out.pace = Some(if after.live > 0 {
            Pace {
                interval: s.live_interval,
                reason: format!(
                    "live games ({}): {}",
                    after.live,
                    humantime(s.live_interval)
                ),
            }
        } else if after.starting_soon > 0 {
            Pace {
                interval: s.live_interval,
                reason: format!(
                    "games starting within {} ({}): {}",
                    humantime(s.live_lead),
                    after.starting_soon,
                    humantime(s.live_interval)
                ),
            }
        } else {
            Pace {
                interval: s.idle_interval,
                reason: format!("no live games: {}", humantime(s.idle_interval)),
            }
        });
        Ok(out)
    }

    async fn activity(&self) -> Result<crate::store::Activity, StoreError> {
        let now = self.now();
        let lead = chrono::Duration::from_std(self.settings.live_lead).unwrap_or_default();
        // A scheduled game whose start passed a little while ago has usually just not been
        // flipped to live by ESPN yet: keep the fast pace for it too.
        self.store
            .league_activity(&self.league, now - chrono::Duration::hours(6), now + lead)
            .await
    }

    /// When a date that has failed `passes` passes gets its next one: after the poller
    /// backoff, or never once it has had `import_attempts`.
    fn next_attempt(&self, passes: i64) -> Option<DateTime<Utc>> {
        if passes >= i64::from(self.settings.import_attempts) {
            return None;
        }
        let wait = self.settings.backoff().exponential(passes as u32 - 1);
        Some(self.now() + chrono::Duration::from_std(wait).unwrap_or(chrono::Duration::hours(1)))
    }

    async fn import_pass(&self) -> Result<Outcome, StoreError> {
        let mut out = Outcome::default();
        let Some(job) = self.store.claim_import(&self.league, self.now()).await? else {
            return Ok(out);
        };
        let pending = self.store.pending_import_dates(job.id, self.now()).await?;
        if job.dates_done + job.dates_failed > 0 && !pending.is_empty() {
            tracing::info!(league = %self.league, job_id = job.id, pending = pending.len(), "resuming import");
        }
        let passes: HashMap<NaiveDate, i64> =
            pending.iter().map(|p| (p.date, p.attempts)).collect();
        let dates = pending.iter().map(|p| p.date).collect();
        let deadline = Instant::now() + self.settings.import_slice;
        let mut boards = std::pin::pin!(self.boards(dates, true, || Instant::now() < deadline));
        while let Some((date, res)) = boards.next().await {
            out.dates_fetched += 1;
            let error = res.as_ref().err().map(|e| {
                out.fail(date, e);
                e.to_string()
            });
            let outcome = match (&res, &error) {
                (Ok(games), _) => DatePass::Imported(games),
                (Err(_), error) => {
                    let error = error.as_deref().unwrap_or_default();
                    match self.next_attempt(passes.get(&date).copied().unwrap_or(0) + 1) {
                        Some(at) => DatePass::Retry { error, at },
                        None => DatePass::Failed(error),
                    }
                }
            };
            let done = self
                .store
                .record_import_date(
                    job.id,
                    &self.league,
                    date,
                    outcome,
                    self.now(),
                    self.settings.fee_bps,
                )
                .await?;
            out.absorb(&self.league, &done);
        }
        out.job = Some(match self.store.finish_import(job.id, self.now()).await? {
            Some(finished) => {
                tracing::info!(
                    league = %self.league,
                    job_id = finished.id,
                    state = %finished.state,
                    dates_done = finished.dates_done,
                    dates_failed = finished.dates_failed,
                    games_upserted = finished.games_upserted,
                    "import finished"
                );
                finished
            }
            None => self.store.import_job(job.id).await?,
        });
        Ok(out)
    }
}

/// The league poller actor.
pub struct Poller {
    inner: Arc<Inner>,
    svc: ServiceCtx,
    /// Driven by [`RunOnce`] only: no timers.
    manual: bool,
    /// The passes in flight (one of each kind at most) and when each began.
    running: Vec<(Work, Instant)>,
    stop_requested: bool,
    due_schedule: bool,
    due_scores: bool,
    due_imports: bool,
    schedule_failures: u32,
    score_failures: u32,
    schedule_timer: Option<SpawnHandle>,
    score_timer: Option<SpawnHandle>,
}

impl Poller {
    pub fn new(
        league: &str,
        espn_path: &str,
        store: Store,
        espn: EspnClient,
        settings: PollerSettings,
        svc: ServiceCtx,
    ) -> Self {
        Poller {
            inner: Arc::new(Inner {
                league: league.to_string(),
                espn_path: espn_path.to_string(),
                store,
                espn,
                permits: tokio::sync::Semaphore::new(settings.concurrency.max(1)),
                settings,
                stopping: AtomicBool::new(false),
            }),
            svc,
            manual: false,
            running: Vec::new(),
            stop_requested: false,
            due_schedule: true,
            due_scores: true,
            due_imports: true,
            schedule_failures: 0,
            score_failures: 0,
            schedule_timer: None,
            score_timer: None,
        }
    }

    /// No timers: every pass is asked for with [`RunOnce`].
    pub fn manual(mut self) -> Self {
        self.manual = true;
        self
    }

    fn is_running(&self, work: Work) -> bool {
        self.running.iter().any(|(w, _)| *w == work)
    }

    fn due(&mut self, work: Work) -> &mut bool {
        match work {
            Work::Schedule => &mut self.due_schedule,
            Work::Scores => &mut self.due_scores,
            Work::Imports => &mut self.due_imports,
        }
    }

    /// Starts every due pass whose kind is not already running: the schedule, score and import
    /// loops run side by side (unless the database is down: the timers come back here).
    fn pump(&mut self, ctx: &mut Context<Self>) {
        if self.stop_requested || self.manual || !self.svc.may_work() {
            return;
        }
        for work in [Work::Scores, Work::Schedule, Work::Imports] {
            if !*self.due(work) || self.is_running(work) {
                continue;
            }
            *self.due(work) = false;
            let pass = self.run(work);
            ctx.spawn(pass.map(|_, _, _| ()));
        }
    }

    fn run(&mut self, work: Work) -> ResponseActFuture<Self, Result<Outcome, String>> {
        self.running.push((work, Instant::now()));
        self.svc.tick_begin();
        // The hang clock follows the oldest pass in flight.
        self.svc
            .tick_running_since(self.running.first().map(|(_, at)| *at));
        let inner = self.inner.clone();
        let pass = async move {
            match work {
                Work::Schedule => inner.schedule_pass().await,
                Work::Scores => inner.score_pass().await,
                Work::Imports => inner.import_pass().await,
            }
        };
        Box::pin(pass.into_actor(self).map(move |res, act, ctx| {
            act.running.retain(|(w, _)| *w != work);
            let res = res.map_err(|e| format!("database: {e}"));
            act.after(work, &res, ctx);
            act.svc
                .tick_running_since(act.running.first().map(|(_, at)| *at));
            if act.stop_requested {
                if act.running.is_empty() {
                    ctx.stop();
                }
            } else {
                act.pump(ctx);
            }
            res
        }))
    }

    /// Records the pass and arms the loop's next run.
    fn after(&mut self, work: Work, res: &Result<Outcome, String>, ctx: &mut Context<Self>) {
        let error = match res {
            Ok(out) => out.failure_summary(),
            Err(e) => Some(e.clone()),
        };
        match &error {
            None => self.svc.tick_ok(),
            Some(e) => self.svc.tick_err(&format!("{} pass: {e}", work.as_str())),
        }
        let retry_after = res.as_ref().ok().and_then(|o| o.retry_after);
        let s = self.inner.settings.clone();
        match work {
            Work::Schedule => {
                self.schedule_failures = if error.is_some() {
                    self.schedule_failures + 1
                } else {
                    0
                };
                let delay = match self.schedule_failures {
                    0 => s.schedule_interval,
                    n => backoff(&s, n)
                        .max(retry_after.unwrap_or_default())
                        .min(s.schedule_interval),
                };
                let previous = self.schedule_timer.take();
                self.schedule_timer = self.arm(previous, delay, ctx, |act| act.due_schedule = true);
            }
            Work::Scores => {
                self.score_failures = if error.is_some() {
                    self.score_failures + 1
                } else {
                    0
                };
                let pace = res
                    .as_ref()
                    .ok()
                    .and_then(|o| o.pace.clone())
                    .unwrap_or(Pace {
                        interval: s.live_interval,
                        reason: String::new(),
                    });
                let pace = match self.score_failures {
                    0 => pace,
                    n => {
                        let interval = pace
                            .interval
                            .max(backoff(&s, n))
                            .max(retry_after.unwrap_or_default());
                        Pace {
                            interval,
                            reason: format!("ESPN failing ({n} in a row): {}", humantime(interval)),
                        }
                    }
                };
                self.svc.schedule(pace.interval, pace.reason);
                let previous = self.score_timer.take();
                self.score_timer =
                    self.arm(previous, pace.interval, ctx, |act| act.due_scores = true);
            }
            Work::Imports => {
                // A job was worked on: look again at once (more dates, or the next job).
                if matches!(res, Ok(Outcome { job: Some(_), .. })) {
                    self.due_imports = true;
                }
            }
        }
    }

    fn arm(
        &self,
        previous: Option<SpawnHandle>,
        delay: Duration,
        ctx: &mut Context<Self>,
        mark: fn(&mut Self),
    ) -> Option<SpawnHandle> {
        if let Some(handle) = previous {
            ctx.cancel_future(handle);
        }
        if self.manual {
            return None;
        }
        Some(ctx.run_later(delay, move |act, ctx| {
            mark(act);
            act.pump(ctx);
        }))
    }
}

/// base × 2^(failures − 1), capped.
fn backoff(s: &PollerSettings, failures: u32) -> Duration {
    s.backoff().exponential(failures.saturating_sub(1))
}

impl Actor for Poller {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Self::Context) {
        if self.manual {
            return;
        }
        let every = self.inner.settings.import_check_interval;
        ctx.run_interval(every, |act, ctx| {
            act.due_imports = true;
            act.pump(ctx);
        });
        self.pump(ctx);
    }
}

impl Handler<Control> for Poller {
    type Result = ();

    fn handle(&mut self, msg: Control, ctx: &mut Self::Context) {
        match msg {
            Control::Ping => {}
            Control::Wake => {
                self.due_imports = true;
                self.pump(ctx);
            }
            Control::Stop => {
                self.inner.stopping.store(true, Ordering::Release);
                if !self.running.is_empty() {
                    self.stop_requested = true;
                } else {
                    ctx.stop();
                }
            }
        }
    }
}

impl Handler<RunOnce> for Poller {
    type Result = ResponseActFuture<Self, Result<Outcome, String>>;

    fn handle(&mut self, msg: RunOnce, _: &mut Self::Context) -> Self::Result {
        if self.is_running(msg.0) {
            return Box::pin(actix::fut::ready(Err(format!(
                "a {} pass is already running",
                msg.0.as_str()
            ))));
        }
        self.run(msg.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn espn_days_follow_us_eastern_time() {
        let at = |s: &str| DateTime::parse_from_rfc3339(s).unwrap().with_timezone(&Utc);
        assert_eq!(
            espn_today(at("2024-01-30T03:30:00Z")).to_string(),
            "2024-01-29"
        );
        assert_eq!(
            espn_today(at("2024-01-30T05:30:00Z")).to_string(),
            "2024-01-30"
        );
    }

    #[test]
    fn upstream_backoff_doubles_up_to_the_cap() {
        let s = PollerSettings::default();
        assert_eq!(backoff(&s, 1), Duration::from_secs(30));
        assert_eq!(backoff(&s, 3), Duration::from_secs(120));
        assert_eq!(backoff(&s, 40), Duration::from_secs(900));
    }
}
