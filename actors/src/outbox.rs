//! The `outbox` service: delivers the domain events of the outbox table to every
//! configured webhook URL, at least once.
//!
//! - Each event is POSTed as JSON (`{"id", "type", "created_at", "league", "payload"}`) with
//!   headers `X-Tipoff-Event-Id`, `X-Tipoff-Event-Type` and `X-Tipoff-Signature: sha256=<hex>`,
//!   the HMAC-SHA256 of the exact body bytes under the configured secret.
//! - A 2xx answer acknowledges the event for that URL (remembered, so a retry goes only to the
//!   URLs that have not acknowledged). Anything else is a failed attempt of that event: its
//!   next one waits an exponential backoff with jitter, at least the receiver's `Retry-After`
//!   (capped); an event that fails once its retry window (`retry_window`, 3 days by default,
//!   like Stripe's) has passed is `dead` (an admin can retry it).
//! - A circuit per receiver URL: a failed POST marks the URL down (`webhook_health`, shared by
//!   replicas). While it is down no event is sent to it and none is charged an attempt, except
//!   one probe — the oldest due event — when its probe time comes (on the same backoff
//!   schedule, counted in the URL's failures). A probe that succeeds brings the URL up and the
//!   waiting events go out in order at full speed. A long outage therefore costs each event
//!   nothing; events whose window passes while their URL is down become `dead`.
//! - Progress lives in the database only, so a restart or a crash loses nothing: an event
//!   delivered but not yet marked is sent again (receivers deduplicate by the event id).
//!
//! Messages: [`Control`] (ping / stop / wake: deliver now).
//! Timers: one pass every interval; a pass that filled its batch is followed at once.
//! Stops: at once, or when the pass in flight ends.

use std::collections::{HashMap, HashSet};
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, Utc};
use hmac::{Hmac, Mac};
use rand::Rng;
use sha2::Sha256;

use crate::service::{Every, Outcome, Periodic, ServiceCtx};
use crate::settings::{self, NonZero, Secret};
use crate::store::{Attempt, OutboxEvent, Store, StoreError, WebhookDown};

/// The webhook outbox's settings; the service runs only when `webhook_urls` is set.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize, schemars::JsonSchema)]
#[serde(default)]
pub struct OutboxSettings {
    /// Receivers every domain event is POSTed to (comma separated).
    #[serde(rename = "webhook_urls", deserialize_with = "settings::http_urls")]
    pub urls: Vec<String>,
    /// Signs every webhook body (HMAC-SHA256, `X-Tipoff-Signature`); required with
    /// `webhook_urls`, at least 16 characters.
    #[serde(rename = "webhook_secret", deserialize_with = "settings::secret")]
    pub secret: Option<Secret>,
    /// Whole-request timeout per POST.
    #[serde(rename = "webhook_timeout", with = "NonZero")]
    pub timeout: Duration,
    /// How long an event is retried, from its creation, before it is dead.
    #[serde(rename = "webhook_retry_window", with = "NonZero")]
    pub retry_window: Duration,
    /// Delivery backoff per receiver: base × 2^(attempts − 1), up to the cap.
    #[serde(rename = "webhook_backoff_base", with = "NonZero")]
    pub backoff_base: Duration,
    #[serde(rename = "webhook_backoff_cap", with = "NonZero")]
    pub backoff_cap: Duration,
    /// Time between delivery passes.
    #[serde(rename = "outbox_interval", with = "NonZero")]
    pub interval: Duration,
    /// Events read per pass.
    #[serde(
        rename = "outbox_batch",
        deserialize_with = "settings::at_least::<1, _, _>"
    )]
    pub batch: i64,
}

impl OutboxSettings {
    pub fn backoff(&self) -> crate::restart::Backoff {
        crate::restart::Backoff::new(self.backoff_base, self.backoff_cap)
    }
}

impl settings::Section for OutboxSettings {
    fn check(&self) -> Result<(), settings::Invalid> {
        use settings::Invalid;
        match &self.secret {
            None if !self.urls.is_empty() => return Err(Invalid::new(
                "webhook_secret",
                "must be set when TIPOFF_WEBHOOK_URLS is set (webhook bodies are signed with it)",
            )),
            Some(s) if s.expose().len() < 16 => {
                return Err(Invalid::new(
                    "webhook_secret",
                    "must be at least 16 characters long",
                ))
            }
            _ => {}
        }
        settings::backoff(
            self.backoff_base,
            self.backoff_cap,
            "webhook_backoff_base",
            "webhook_backoff_cap",
        )
        .map(drop)
    }
}

impl Default for OutboxSettings {
    fn default() -> Self {
        OutboxSettings {
            urls: Vec::new(),
            secret: None,
            timeout: Duration::from_secs(10),
            retry_window: Duration::from_secs(3 * 24 * 3600),
            backoff_base: Duration::from_secs(5),
            backoff_cap: Duration::from_secs(1800),
            interval: Duration::from_secs(1),
            batch: 100,
        }
    }
}

/// `sha256=<hex>`: the HMAC-SHA256 of `body` under `secret`, as sent in `X-Tipoff-Signature`.
pub fn signature(secret: &[u8], body: &[u8]) -> String {
    let mut mac = Hmac::<Sha256>::new_from_slice(secret).expect("HMAC takes keys of any length");
    mac.update(body);
    let digest = mac.finalize().into_bytes();
    format!("sha256={}", hex::encode(digest))
}

/// The HTTP side of delivery: one client with timeouts and the signing secret.
#[derive(Clone)]
pub struct WebhookClient {
    http: reqwest::Client,
    secret: Arc<[u8]>,
}

impl std::fmt::Debug for WebhookClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("WebhookClient { secret: [redacted] }")
    }
}

/// Why one POST failed, with the receiver's `Retry-After` when it sent one.
#[derive(Debug, Clone)]
pub struct PostError {
    pub message: String,
    pub retry_after: Option<Duration>,
}

impl WebhookClient {
    /// `instance` names this replica in the `User-Agent` (see [`crate::user_agent`]).
    pub fn new(secret: &str, timeout: Duration, instance: &str) -> Result<Self, String> {
        let http = reqwest::Client::builder()
            .timeout(timeout)
            .connect_timeout(timeout.min(Duration::from_secs(5)))
            .user_agent(crate::user_agent(instance))
            .build()
            .map_err(|e| e.to_string())?;
        Ok(WebhookClient {
            http,
            secret: Arc::from(secret.as_bytes()),
        })
    }

    /// POSTs one signed event to `url`; `Ok` on a 2xx answer.
    pub async fn post(&self, url: &str, event: &OutboxEvent) -> Result<(), PostError> {
        let body = serde_json::to_vec(&event.body()).unwrap_or_default();
        let sig = signature(&self.secret, &body);
        let res = self
            .http
            .post(url)
            .header("content-type", "application/json")
            .header("x-tipoff-event-id", event.id.to_string())
            .header("x-tipoff-event-type", &event.event_type)
            .header("x-tipoff-signature", sig)
            .body(body)
            .send()
            .await
            .map_err(|e| PostError {
                message: format!("{}: {}", crate::redact::host(url), without_url(&e)),
                retry_after: None,
            })?;
        let status = res.status();
        if status.is_success() {
            return Ok(());
        }
        let retry_after = crate::upstream::retry_after(&res);
        Err(PostError {
            message: format!("{}: HTTP {}", crate::redact::host(url), status.as_u16()),
            retry_after,
        })
    }
}

fn without_url(e: &reqwest::Error) -> String {
    let kind = if e.is_timeout() {
        "timed out"
    } else if e.is_connect() {
        "connection failed"
    } else {
        "request failed"
    };
    kind.to_string()
}

/// Delay before attempt `attempts + 1`: exponential from the base, capped, with equal jitter
/// (half fixed, half random), and never shorter than the receiver's `Retry-After` (itself
/// capped at the backoff cap).
pub fn retry_delay(
    settings: &OutboxSettings,
    attempts: u32,
    retry_after: Option<Duration>,
) -> Duration {
    let ceiling = settings.backoff().exponential(attempts.saturating_sub(1));
    let half = ceiling / 2;
    let jitter = rand::thread_rng().gen_range(0..=half.as_millis() as u64);
    let backoff = half + Duration::from_millis(jitter);
    backoff.max(retry_after.unwrap_or_default().min(settings.backoff_cap))
}

/// What one pass did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Delivered {
    /// Events every URL has now acknowledged.
    pub delivered: usize,
    /// Events with a failed attempt, to be retried.
    pub retrying: usize,
    /// Events given up: failed, or waited for a URL that was down, past their retry window.
    pub dead: usize,
    /// Events left for later because a URL they need is down (not charged an attempt).
    pub deferred: usize,
    /// Events read (a full batch means more may be due).
    pub read: usize,
    /// Probes sent to URLs that were down.
    pub probes: usize,
    /// URLs that came back up in this pass.
    pub recovered: usize,
    pub last_error: Option<String>,
}

/// One delivery pass over the events due at `now` (the clock is a parameter so tests can
/// drive days of outage in moments).
pub async fn deliver_due(
    store: &Store,
    client: &WebhookClient,
    settings: &OutboxSettings,
    now: DateTime<Utc>,
) -> Result<Delivered, StoreError> {
    let mut done = Delivered::default();
    // URLs down now; those whose probe is due may take one event in this pass.
    let mut down: HashMap<String, WebhookDown> = store
        .webhooks_down()
        .await?
        .into_iter()
        .filter(|d| settings.urls.contains(&d.url))
        .map(|d| (d.url.clone(), d))
        .collect();
    let mut probe_due: HashSet<String> = down
        .values()
        .filter(|d| d.next_probe_at <= now)
        .map(|d| d.url.clone())
        .collect();
    if !settings.urls.is_empty()
        && settings
            .urls
            .iter()
            .all(|u| down.contains_key(u) && !probe_due.contains(u))
    {
        // Every receiver is down and none is due for a probe: nothing to read or charge.
        done.last_error = down.values().next().map(|d| d.last_error.clone());
        return Ok(done);
    }
    let window = chrono::Duration::from_std(settings.retry_window).unwrap_or(chrono::Duration::MAX);
    let events = store.outbox_due(now, settings.batch).await?;
    done.read = events.len();
    for event in events {
        let before = event.acknowledged();
        let mut acknowledged = before.clone();
        let wanted: Vec<&String> = settings
            .urls
            .iter()
            .filter(|u| !acknowledged.contains(u))
            .collect();
        let mut errors = Vec::new();
        let mut waiting = Vec::new();
        let mut retry_after = None;
        for url in wanted {
            if down.contains_key(url) && !probe_due.remove(url) {
                waiting.push(url.clone());
                continue;
            }
            let probing = down.contains_key(url);
            done.probes += usize::from(probing);
            match client.post(url, &event).await {
                Ok(()) => {
                    acknowledged.push(url.clone());
                    if let Some(was) = down.remove(url) {
                        store.webhook_recovered(url, now).await?;
                        done.recovered += 1;
                        tracing::info!(url = %crate::redact::host(url), failures = was.failures, down_since = %was.down_since, "webhook receiver is up again; delivering in order");
                    }
                }
                Err(e) => {
                    let row = store
                        .webhook_failed(
                            url,
                            &e.message,
                            |failures| {
                                now + chrono::Duration::from_std(retry_delay(
                                    settings,
                                    failures,
                                    e.retry_after,
                                ))
                                .unwrap_or_default()
                            },
                            now,
                        )
                        .await?;
                    if row.failures == 1 {
                        tracing::warn!(url = %crate::redact::host(url), error = %e.message, "webhook receiver is down; probing it with one event on the backoff schedule");
                    }
                    down.insert(url.clone(), row);
                    retry_after = retry_after.max(e.retry_after);
                    errors.push(e.message);
                }
            }
        }
        let Some(attempt) = attempt_of(
            &event,
            (&errors, &waiting, retry_after),
            acknowledged != before,
            (settings, window, now),
            &mut done,
        ) else {
            continue;
        };
        store
            .outbox_attempted(event.id, &acknowledged, &attempt, now)
            .await?;
        if done.recovered > 0 {
            // Events that probed earlier are due again: the next pass, at once, takes the
            // backlog from the oldest.
            break;
        }
    }
    if done.last_error.is_none() {
        done.last_error = down.values().next().map(|d| d.last_error.clone());
    }
    Ok(done)
}

/// What a pass records for one event from what its receivers answered (errors, receivers
/// still down, the longest `Retry-After`): failed (or dead past the retry window), expired
/// while a receiver was down, newly acknowledged by some, or delivered; `None` when nothing
/// changed (every receiver it still needs is down and not due for a probe).
fn attempt_of(
    event: &OutboxEvent,
    (errors, waiting, retry_after): (&[String], &[String], Option<Duration>),
    acknowledged_more: bool,
    (settings, window, now): (&OutboxSettings, chrono::Duration, DateTime<Utc>),
    done: &mut Delivered,
) -> Option<Attempt> {
    let age = now - event.created_at;
    if !errors.is_empty() {
        let attempts = event.attempts as u32 + 1;
        let dead = age >= window;
        let error = errors.join("; ");
        if dead {
            done.dead += 1;
            tracing::error!(event = event.id, event_type = %event.event_type, attempts, %error, "webhook event dead: its retry window has passed");
        } else {
            done.retrying += 1;
        }
        done.last_error = Some(error.clone());
        let delay = retry_delay(settings, attempts, retry_after);
        Some(Attempt::Failed {
            error,
            next_at: now + chrono::Duration::from_std(delay).unwrap_or_default(),
            dead,
        })
    } else if !waiting.is_empty() {
        if age >= window {
            done.dead += 1;
            let error = format!(
                "retry window passed while {} was down",
                waiting
                    .iter()
                    .map(|u| crate::redact::host(u))
                    .collect::<Vec<_>>()
                    .join(", ")
            );
            tracing::error!(event = event.id, event_type = %event.event_type, %error, "webhook event dead");
            Some(Attempt::Expired { error })
        } else if acknowledged_more {
            done.deferred += 1;
            Some(Attempt::Acknowledged)
        } else {
            done.deferred += 1;
            None
        }
    } else {
        done.delivered += 1;
        Some(Attempt::Delivered)
    }
}

/// The delivery job of the `outbox` service: one pass delivers what is due, and the next
/// follows at once while full batches keep coming.
pub struct Delivery {
    store: Store,
    client: WebhookClient,
    settings: OutboxSettings,
}

/// The `outbox` service.
pub type Outbox = Every<Delivery>;

impl Outbox {
    pub fn new(
        store: Store,
        client: WebhookClient,
        settings: OutboxSettings,
        svc: ServiceCtx,
    ) -> Self {
        Every::of(
            Delivery {
                store,
                client,
                settings,
            },
            svc,
        )
    }
}

impl Periodic for Delivery {
    type Done = Result<Delivered, StoreError>;
    const WHAT: &'static str = "deliver";

    fn interval(&self) -> Duration {
        self.settings.interval
    }

    fn pass(&mut self) -> Pin<Box<dyn Future<Output = Self::Done>>> {
        let (store, client, settings) = (
            self.store.clone(),
            self.client.clone(),
            self.settings.clone(),
        );
        Box::pin(async move { deliver_due(&store, &client, &settings, Utc::now()).await })
    }

    fn finished(&mut self, done: Self::Done, _: &ServiceCtx) -> Outcome {
        let done = match done {
            Ok(done) => done,
            Err(e) => return Err(e.to_string()).into(),
        };
        let sent = done.delivered + done.retrying + done.dead;
        if sent > 0 {
            tracing::info!(
                delivered = done.delivered,
                retrying = done.retrying,
                dead = done.dead,
                deferred = done.deferred,
                "outbox pass"
            );
        }
        // A receiver's failures back off per receiver in the database; the pass keeps its pace.
        if let Some(e) = &done.last_error {
            return Err(format!("webhook delivery failed: {e}")).into();
        }
        if done.recovered > 0 || (done.read as i64 >= self.settings.batch && sent > 0) {
            return Outcome::More("more due: a full batch".into());
        }
        Outcome::Done
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn signature_matches_a_known_hmac() {
        // RFC 4231 test case 2.
        assert_eq!(
            signature(b"Jefe", b"what do ya want for nothing?"),
            "sha256=5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843"
        );
    }

    #[test]
    fn retry_delay_grows_is_capped_and_honours_retry_after() {
        let s = OutboxSettings {
            backoff_base: Duration::from_secs(4),
            backoff_cap: Duration::from_secs(60),
            ..OutboxSettings::default()
        };
        for _ in 0..50 {
            let first = retry_delay(&s, 1, None);
            assert!(
                first >= Duration::from_secs(2) && first <= Duration::from_secs(4),
                "{first:?}"
            );
            let late = retry_delay(&s, 20, None);
            assert!(
                late >= Duration::from_secs(30) && late <= Duration::from_secs(60),
                "{late:?}"
            );
        }
        assert!(retry_delay(&s, 1, Some(Duration::from_secs(30))) >= Duration::from_secs(30));
        assert_eq!(
            retry_delay(&s, 1, Some(Duration::from_secs(3600))),
            Duration::from_secs(60)
        );
    }
}
