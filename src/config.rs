//! Configuration: environment (`TIPOFF_*`) over an optional TOML file over defaults.
//!
//! Every setting has one name: `listen` in the TOML file is `TIPOFF_LISTEN` in the
//! environment. Values from every source pass through the same parsers, so an error always
//! names the setting and where its value came from. [`Config::render`] prints the effective
//! configuration for `tipoff check-config`, with secrets redacted.

use std::collections::{BTreeMap, HashMap};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use tipoff_actors::restart::Backoff;
use tipoff_actors::solana::{is_pubkey, Token};
use tipoff_actors::store::{catalog_league, Backend};

/// Exit code for a bad configuration (sysexits `EX_CONFIG`); systemd does not restart on it.
pub const EXIT_CONFIG: u8 = 78;

/// A secret value: never printed by `Debug`, `Display` or `check-config`.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(String);

impl Secret {
    pub fn new(value: impl Into<String>) -> Self {
        Secret(value.into())
    }

    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl std::fmt::Debug for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Secret([redacted])")
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Environment {
    Development,
    Production,
}

impl Environment {
    pub fn as_str(self) -> &'static str {
        match self {
            Environment::Development => "development",
            Environment::Production => "production",
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LogFormat {
    Pretty,
    Json,
}

/// A setting that could not be used. Displayed as one line that names it.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid setting {setting}: {message}")]
pub struct ConfigError {
    /// The setting as the operator wrote it: `TIPOFF_LISTEN (environment)` or `listen (in FILE)`.
    pub setting: String,
    pub message: String,
}

/// Where a value came from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Source {
    Default,
    File(PathBuf),
    Env,
}

#[derive(Debug)]
struct Key {
    name: &'static str,
    default: &'static str,
    secret: bool,
}

const fn key(name: &'static str, default: &'static str) -> Key {
    Key {
        name,
        default,
        secret: false,
    }
}

const fn secret(name: &'static str) -> Key {
    Key {
        name,
        default: "",
        secret: true,
    }
}

/// Every setting, with its default (`""` is unset). `database_url` and `data_dir` have computed
/// defaults (see [`Config::load`]).
const KEYS: &[Key] = &[
    key("env", "development"),
    key("listen", "127.0.0.1:8080"),
    secret("database_url"),
    key("data_dir", ""),
    secret("admin_token"),
    key("log", "info"),
    key("log_format", "pretty"),
    key("leagues", ""),
    key("espn_base_url", "https://site.api.espn.com"),
    key("solana_rpc_url", ""),
    key("embeddings_url", ""),
    key("webhook_urls", ""),
    key("http_workers", "2"),
    key("shutdown_timeout", "25s"),
    key("shutdown_drain_delay", "0s"),
    key("db_startup_timeout", "10s"),
    key("db_ping_interval", "5s"),
    key("db_max_connections", "8"),
    key("leader_ttl", "15s"),
    key("db_write_timeout", "5s"),
    key("restart_backoff_base", "1s"),
    key("restart_backoff_cap", "5m"),
    key("restart_reset_after", "60s"),
    key("restart_max", "5"),
    key("restart_window", "60s"),
    key("hang_timeout", "60s"),
    key("supervisor_check_interval", "1s"),
    key("actor_timeout", "5s"),
    key("espn_timeout", "10s"),
    key("espn_connect_timeout", "5s"),
    key("espn_attempts", "3"),
    key("espn_retry_max_wait", "10s"),
    key("espn_concurrency", "4"),
    key("schedule_interval", "6h"),
    key("schedule_lookahead_days", "7"),
    key("score_live_interval", "60s"),
    key("score_idle_interval", "15m"),
    key("score_live_lead", "15m"),
    key("import_check_interval", "2s"),
    key("import_slice", "5s"),
    key("poller_backoff_base", "30s"),
    key("poller_backoff_cap", "15m"),
    key("read_cache_ttl", "1s"),
    key("tokens", ""),
    key("settlement_fee_bps", "200"),
    key("registration", ""),
    key("solana_poll_interval", "10s"),
    key("solana_page_limit", "1000"),
    key("solana_concurrency", "8"),
    key("solana_timeout", "10s"),
    key("solana_connect_timeout", "5s"),
    key("solana_start_stagger", "5s"),
    key("solana_backoff_base", "5s"),
    key("solana_backoff_cap", "5m"),
    key("solana_quarantine_after", "5"),
    key("solana_start", ""),
    key("withdrawal_ttl", "30m"),
    key("min_withdrawal", "1"),
    key("min_stake", "1"),
    key("max_pending_withdrawals", "10"),
    key("cleanup_interval", "60s"),
    key("history_retention", "30d"),
    secret("webhook_secret"),
    key("webhook_timeout", "10s"),
    key("webhook_retry_window", "3d"),
    key("webhook_backoff_base", "5s"),
    key("webhook_backoff_cap", "30m"),
    key("outbox_interval", "1s"),
    key("outbox_batch", "100"),
    key("events_retention", "7d"),
    key("events_poll_interval", "500ms"),
    key("sse_heartbeat", "15s"),
    key("sse_max_streams", "10000"),
    key("sse_max_streams_per_client", "32"),
    key("read_cache_max_bytes", "16777216"),
    key("metrics_db_interval", "5s"),
    key("session_ttl", "12h"),
    key("auth_failure_limit", "10"),
    key("auth_failure_window", "5m"),
    key("docs", ""),
    key("embeddings_model", "text-embedding-3-small"),
    secret("embeddings_api_key"),
    key("embeddings_batch", "64"),
    key("embeddings_concurrency", "2"),
    key("embeddings_timeout", "30s"),
    key("embeddings_connect_timeout", "5s"),
    key("embeddings_interval", "30s"),
    key("embeddings_backoff_base", "5s"),
    key("embeddings_backoff_cap", "5m"),
    key("search_embed_timeout", "300ms"),
    key("search_refresh_interval", "10s"),
];

fn env_name(key: &str) -> String {
    format!("TIPOFF_{}", key.to_ascii_uppercase())
}

/// The effective configuration.
#[derive(Debug, Clone)]
pub struct Config {
    pub env: Environment,
    pub listen: SocketAddr,
    pub database_url: Secret,
    pub data_dir: PathBuf,
    pub admin_token: Option<Secret>,
    pub log: String,
    pub log_format: LogFormat,
    /// Enabled leagues (catalog keys), in the order given.
    pub leagues: Vec<String>,
    pub espn_base_url: String,
    pub solana_rpc_url: Option<String>,
    pub embeddings_url: Option<String>,
    pub webhook_urls: Vec<String>,
    pub http_workers: usize,
    /// The one overall shutdown deadline (keep it under systemd's `TimeoutStopSec`).
    pub shutdown_timeout: Duration,
    /// Time between `/ready` turning 503 and the listener closing, for load balancers to notice.
    pub shutdown_drain_delay: Duration,
    pub db_startup_timeout: Duration,
    pub db_ping_interval: Duration,
    pub db_max_connections: u32,
    /// `restart_backoff_base` and `restart_backoff_cap` (the cap not below the base).
    pub restart_backoff: Backoff,
    pub restart_reset_after: Duration,
    pub restart_max: u32,
    pub restart_window: Duration,
    pub hang_timeout: Duration,
    pub supervisor_check_interval: Duration,
    /// Bound on every HTTP handler → actor request.
    pub actor_timeout: Duration,
    /// ESPN request timeout (whole request) and connect timeout.
    pub espn_timeout: Duration,
    pub espn_connect_timeout: Duration,
    /// Attempts per scoreboard, and the longest wait between them (`Retry-After` is capped by it).
    pub espn_attempts: u32,
    pub espn_retry_max_wait: Duration,
    /// Scoreboards a poller fetches at once.
    pub espn_concurrency: usize,
    pub schedule_interval: Duration,
    pub schedule_lookahead_days: u32,
    pub score_live_interval: Duration,
    pub score_idle_interval: Duration,
    /// A game starting within this keeps the score loop at the live interval.
    pub score_live_lead: Duration,
    pub import_check_interval: Duration,
    /// Longest an import pass keeps starting new fetches before yielding to the other loops.
    pub import_slice: Duration,
    /// `poller_backoff_base` and `poller_backoff_cap` (the cap not below the base).
    pub poller_backoff: Backoff,
    /// Longest a cached public list answer is served (it is dropped at once on a local write;
    /// the TTL bounds how long another replica's writes go unseen). Zero turns the cache off.
    pub read_cache_ttl: Duration,
    /// SPL tokens: stakes, balances and one deposit watcher each.
    pub tokens: Vec<Token>,
    /// The smallest withdrawal, in base units, per token.
    pub min_withdrawal: PerToken,
    /// The smallest stake, in base units, per token: bounds how many positions a market can
    /// gather for a given amount staked.
    pub min_stake: PerToken,
    /// Pending and claimed withdrawals one user may have at once.
    pub max_pending_withdrawals: i64,
    /// Settlement fee in basis points of the losing side's pool (0 to 10000).
    pub settlement_fee_bps: u32,
    /// Whether `POST /api/v1/users` registers (default: on in development, off in production).
    pub registration: bool,
    pub solana_poll_interval: Duration,
    pub solana_page_limit: usize,
    pub solana_concurrency: usize,
    pub solana_timeout: Duration,
    pub solana_connect_timeout: Duration,
    /// Delay between the starts of successive watchers on the one RPC.
    pub solana_start_stagger: Duration,
    /// `solana_backoff_base` and `solana_backoff_cap` (the cap not below the base).
    pub solana_backoff: Backoff,
    /// Failed reads of one treasury signature before it is quarantined (the cursor moves on).
    pub solana_quarantine_after: u32,
    /// Where each token's first run begins (no cursor yet): after a signature, or at a slot.
    pub solana_start: Vec<(String, tipoff_actors::watcher::StartAt)>,
    /// A withdrawal still pending after this expires (its hold is refunded).
    pub withdrawal_ttl: Duration,
    pub cleanup_interval: Duration,
    /// The leader lease's time to live (PostgreSQL); renewed every third of it.
    pub leader_ttl: Duration,
    /// How long a SQLite write waits for the writer (and for a locked file) before it answers 503.
    pub db_write_timeout: Duration,
    /// Finished history (import jobs) older than this is pruned.
    pub history_retention: Duration,
    /// Signs every webhook body (HMAC-SHA256); required when `webhook_urls` is set.
    pub webhook_secret: Option<Secret>,
    pub webhook_timeout: Duration,
    /// Attempts before an event is marked dead.
    /// How long an event is retried, from its creation, before it is dead.
    pub webhook_retry_window: Duration,
    /// `webhook_backoff_base` and `webhook_backoff_cap` (the cap not below the base).
    pub webhook_backoff: Backoff,
    pub outbox_interval: Duration,
    pub outbox_batch: i64,
    /// Outbox events older than this are pruned (once delivered); SSE resume reaches back this far.
    pub events_retention: Duration,
    /// How often the `events` service reads new events for the live streams.
    pub events_poll_interval: Duration,
    /// Comment line sent on idle SSE streams.
    pub sse_heartbeat: Duration,
    /// Live streams open at once on this daemon, and per client address; 503 beyond.
    pub sse_max_streams: usize,
    pub sse_max_streams_per_client: usize,
    /// Bytes of cached answers the read cache keeps at most (least recently used go first).
    pub read_cache_max_bytes: usize,
    /// The longest `/metrics` reuses its database figures (zero: read them on every scrape).
    pub metrics_db_interval: Duration,
    /// How long a dashboard session lasts.
    pub session_ttl: Duration,
    /// Failed admin authentications one client address may make per window before 429.
    pub auth_failure_limit: u32,
    pub auth_failure_window: Duration,
    /// Whether `/docs` and `/openapi.json` are served (default: on in development).
    pub docs: bool,
    /// The embeddings model (`backfill` and query vectors); vectors are stored per model.
    pub embeddings_model: String,
    /// Sent as a bearer token to the embeddings API.
    pub embeddings_api_key: Option<Secret>,
    /// Documents per embeddings call, and calls in flight at once.
    pub embeddings_batch: usize,
    pub embeddings_concurrency: usize,
    pub embeddings_timeout: Duration,
    pub embeddings_connect_timeout: Duration,
    /// Pause between backfill passes once the backlog is empty.
    pub embeddings_interval: Duration,
    /// `embeddings_backoff_base` and `embeddings_backoff_cap` (the cap not below the base).
    pub embeddings_backoff: Backoff,
    /// Longest a search waits for its query's embedding (and the vector index) before it
    /// answers with keyword ranking alone.
    pub search_embed_timeout: Duration,
    /// How often each replica's vector index reads vectors other replicas wrote.
    pub search_refresh_interval: Duration,
    /// Each setting's raw value and source, for `check-config`.
    entries: Vec<(&'static Key, String, Source)>,
}

struct Raw<'a> {
    key: &'a Key,
    value: String,
    source: Source,
}

impl Raw<'_> {
    fn label(&self) -> String {
        match &self.source {
            Source::Env => format!("{} (environment)", env_name(self.key.name)),
            Source::File(path) => format!("{} (in {})", self.key.name, path.display()),
            Source::Default => format!("{} (default)", self.key.name),
        }
    }

    fn err(&self, message: impl Into<String>) -> ConfigError {
        ConfigError {
            setting: self.label(),
            message: message.into(),
        }
    }

    fn opt(&self) -> Option<String> {
        let v = self.value.trim();
        (!v.is_empty()).then(|| v.to_string())
    }

    fn list(&self) -> Vec<String> {
        self.value
            .split(',')
            .map(str::trim)
            .filter(|s| !s.is_empty())
            .map(str::to_string)
            .collect()
    }

    fn duration(&self) -> Result<Duration, ConfigError> {
        parse_duration(&self.value).map_err(|m| self.err(m))
    }

    fn nonzero_duration(&self) -> Result<Duration, ConfigError> {
        match self.duration()? {
            d if d.is_zero() => Err(self.err("must be greater than zero")),
            d => Ok(d),
        }
    }

    fn number<T>(&self, min: T) -> Result<T, ConfigError>
    where
        T: std::str::FromStr + PartialOrd + std::fmt::Display + Copy,
    {
        let n: T = self
            .value
            .trim()
            .parse()
            .map_err(|_| self.err(format!("`{}` is not a whole number", self.value)))?;
        if n < min {
            return Err(self.err(format!("must be at least {min}")));
        }
        Ok(n)
    }

    fn url(&self) -> Result<Option<String>, ConfigError> {
        match self.opt() {
            None => Ok(None),
            Some(u) if u.starts_with("http://") || u.starts_with("https://") => {
                Ok(Some(u.trim_end_matches('/').to_string()))
            }
            Some(u) => Err(self.err(format!(
                "`{}` is not an http:// or https:// URL",
                redact_url(&u)
            ))),
        }
    }
}

/// `250ms`, `5s`, `5m`, `6h`, `1d`, or a plain number of seconds.
pub fn parse_duration(text: &str) -> Result<Duration, String> {
    let t = text.trim();
    let split = t.find(|c: char| !c.is_ascii_digit()).unwrap_or(t.len());
    let (digits, unit) = t.split_at(split);
    let n: u64 = digits
        .parse()
        .map_err(|_| format!("`{text}` is not a duration (use e.g. 250ms, 5s, 5m, 6h)"))?;
    let d = match unit.trim() {
        "ms" => Duration::from_millis(n),
        "" | "s" => Duration::from_secs(n),
        "m" => Duration::from_secs(n * 60),
        "h" => Duration::from_secs(n * 3600),
        "d" => Duration::from_secs(n * 86400),
        _ => {
            return Err(format!(
                "`{text}` has an unknown unit (use ms, s, m, h or d)"
            ))
        }
    };
    Ok(d)
}

/// A URL with its user-info password and secret query parameters replaced by `***`.
pub fn redact_url(url: &str) -> String {
    tipoff_actors::redact::url(url)
}

impl Config {
    /// Reads the TOML file (when given) and the `TIPOFF_*` variables of `env`.
    pub fn load(file: Option<&Path>, env: &HashMap<String, String>) -> Result<Config, ConfigError> {
        let file_values = match file {
            Some(path) => read_file(path)?,
            None => BTreeMap::new(),
        };
        let raws: Vec<Raw<'_>> = KEYS
            .iter()
            .map(|key| {
                if let Some(v) = env.get(&env_name(key.name)) {
                    Raw {
                        key,
                        value: v.clone(),
                        source: Source::Env,
                    }
                } else if let Some(v) = file_values.get(key.name) {
                    Raw {
                        key,
                        value: v.clone(),
                        source: Source::File(file.map(Path::to_path_buf).unwrap_or_default()),
                    }
                } else {
                    Raw {
                        key,
                        value: key.default.to_string(),
                        source: Source::Default,
                    }
                }
            })
            .collect();
        let get = |name: &str| raws.iter().find(|r| r.key.name == name).expect("known key");

        let env_raw = get("env");
        let environment = match env_raw.value.trim() {
            "development" | "dev" => Environment::Development,
            "production" | "prod" => Environment::Production,
            other => {
                return Err(env_raw.err(format!("`{other}` is not one of development, production")))
            }
        };
        let listen_raw = get("listen");
        let listen: SocketAddr = listen_raw.value.trim().parse().map_err(|_| {
            listen_raw.err(format!(
                "`{}` is not a socket address like 127.0.0.1:8080",
                listen_raw.value
            ))
        })?;

        let data_dir = match get("data_dir").opt() {
            Some(dir) => PathBuf::from(dir),
            None => match env
                .get("STATE_DIRECTORY")
                .and_then(|s| s.split(':').next())
                .filter(|s| !s.is_empty())
            {
                Some(dir) => PathBuf::from(dir),
                None => PathBuf::from("./data"),
            },
        };
        let db_raw = get("database_url");
        let database_url = match db_raw.opt() {
            Some(url) => {
                if Backend::of_url(&url).is_none() {
                    return Err(db_raw.err(format!(
                        "`{}` is not a sqlite: or postgres:// URL",
                        redact_url(&url)
                    )));
                }
                url
            }
            None => format!("sqlite://{}", data_dir.join("tipoff.db").display()),
        };
        let admin_token = get("admin_token").opt().map(Secret::new);
        if let Some(token) = &admin_token {
            if token.expose().len() < 16 {
                return Err(get("admin_token").err("must be at least 16 characters long"));
            }
        }
        let format_raw = get("log_format");
        let log_format = match format_raw.value.trim() {
            "pretty" => LogFormat::Pretty,
            "json" => LogFormat::Json,
            other => return Err(format_raw.err(format!("`{other}` is not one of pretty, json"))),
        };
        let log_raw = get("log");
        let log = log_raw.value.trim().to_string();
        tracing_subscriber::EnvFilter::try_new(&log)
            .map_err(|e| log_raw.err(format!("`{log}` is not a log filter: {e}")))?;

        let leagues_raw = get("leagues");
        let mut leagues = Vec::new();
        for league in leagues_raw.list() {
            let league = league.to_ascii_lowercase();
            catalog_league(&league).map_err(|m| leagues_raw.err(m))?;
            if !leagues.contains(&league) {
                leagues.push(league);
            }
        }
        let espn_base_url = get("espn_base_url")
            .url()?
            .ok_or_else(|| get("espn_base_url").err("must not be empty"))?;
        let webhooks_raw = get("webhook_urls");
        let mut webhook_urls = Vec::new();
        for url in webhooks_raw.list() {
            if !(url.starts_with("http://") || url.starts_with("https://")) {
                return Err(webhooks_raw.err(format!(
                    "`{}` is not an http:// or https:// URL",
                    redact_url(&url)
                )));
            }
            webhook_urls.push(url);
        }

        let nonzero = |name: &str| get(name).nonzero_duration();
        // One rule for every backoff: the cap is not below the base.
        let backoff = |prefix: &str, zero_ok: bool| -> Result<Backoff, ConfigError> {
            let (base_key, cap_key) = (
                format!("{prefix}_backoff_base"),
                format!("{prefix}_backoff_cap"),
            );
            let read = |key: &str| {
                if zero_ok {
                    get(key).duration()
                } else {
                    get(key).nonzero_duration()
                }
            };
            Backoff::checked(read(&base_key)?, read(&cap_key)?)
                .map_err(|_| get(&cap_key).err(format!("must not be smaller than {base_key}")))
        };
        let restart_backoff = backoff("restart", true)?;
        let lookahead_days = get("schedule_lookahead_days").number(0u32)?;
        if lookahead_days > 60 {
            return Err(get("schedule_lookahead_days").err("must be at most 60"));
        }
        let poller_backoff = backoff("poller", false)?;

        let settlement_fee_bps = get("settlement_fee_bps").number(0u32)?;
        if settlement_fee_bps > 10_000 {
            return Err(get("settlement_fee_bps").err("must be at most 10000 (100 %)"));
        }
        let registration_raw = get("registration");
        let registration = match registration_raw.value.trim() {
            "" => environment == Environment::Development,
            "true" | "on" | "1" => true,
            "false" | "off" | "0" => false,
            other => {
                return Err(registration_raw.err(format!("`{other}` is not one of true, false")))
            }
        };
        let solana_page_limit = get("solana_page_limit").number(1usize)?;
        if solana_page_limit > 1000 {
            return Err(get("solana_page_limit").err("must be at most 1000 (the RPC's maximum)"));
        }
        let solana_backoff = backoff("solana", false)?;

        let webhook_secret = get("webhook_secret").opt().map(Secret::new);
        if !webhook_urls.is_empty() {
            match &webhook_secret {
                None => {
                    return Err(get("webhook_secret")
                        .err("must be set when TIPOFF_WEBHOOK_URLS is set (webhook bodies are signed with it)"))
                }
                Some(s) if s.expose().len() < 16 => {
                    return Err(get("webhook_secret").err("must be at least 16 characters long"))
                }
                Some(_) => {}
            }
        }
        let webhook_backoff = backoff("webhook", false)?;
        let tokens = parse_tokens(get("tokens"))?;
        let solana_start = parse_starts(get("solana_start"), &tokens)?;
        let leader_ttl_raw = get("leader_ttl");
        let leader_ttl = leader_ttl_raw.duration()?;
        if leader_ttl < Duration::from_secs(1) {
            return Err(leader_ttl_raw.err("must be at least 1s (it is renewed every third of it)"));
        }
        let embeddings_backoff = backoff("embeddings", false)?;
        let embeddings_batch = get("embeddings_batch").number(1usize)?;
        if embeddings_batch > 2048 {
            return Err(get("embeddings_batch")
                .err("must be at most 2048 (the OpenAI API's limit of inputs per call)"));
        }
        let embeddings_model = get("embeddings_model").value.trim().to_string();
        if embeddings_model.is_empty() || embeddings_model.len() > 200 {
            return Err(get("embeddings_model").err("must be a model name of 1 to 200 characters"));
        }
        let docs_raw = get("docs");
        let docs = match docs_raw.value.trim() {
            "" => environment == Environment::Development,
            "true" | "on" | "1" => true,
            "false" | "off" | "0" => false,
            other => return Err(docs_raw.err(format!("`{other}` is not one of true, false"))),
        };

        let config = Config {
            env: environment,
            listen,
            database_url: Secret::new(database_url),
            data_dir,
            admin_token,
            log,
            log_format,
            leagues,
            espn_base_url,
            solana_rpc_url: get("solana_rpc_url").url()?,
            embeddings_url: get("embeddings_url").url()?,
            webhook_urls,
            http_workers: get("http_workers").number(1usize)?,
            shutdown_timeout: nonzero("shutdown_timeout")?,
            shutdown_drain_delay: get("shutdown_drain_delay").duration()?,
            db_startup_timeout: nonzero("db_startup_timeout")?,
            db_ping_interval: nonzero("db_ping_interval")?,
            db_max_connections: get("db_max_connections").number(1u32)?,
            restart_backoff,
            restart_reset_after: get("restart_reset_after").duration()?,
            restart_max: get("restart_max").number(1u32)?,
            restart_window: nonzero("restart_window")?,
            hang_timeout: nonzero("hang_timeout")?,
            supervisor_check_interval: nonzero("supervisor_check_interval")?,
            actor_timeout: nonzero("actor_timeout")?,
            espn_timeout: nonzero("espn_timeout")?,
            espn_connect_timeout: nonzero("espn_connect_timeout")?,
            espn_attempts: get("espn_attempts").number(1u32)?,
            espn_retry_max_wait: get("espn_retry_max_wait").duration()?,
            espn_concurrency: get("espn_concurrency").number(1usize)?,
            schedule_interval: nonzero("schedule_interval")?,
            schedule_lookahead_days: lookahead_days,
            score_live_interval: nonzero("score_live_interval")?,
            score_idle_interval: nonzero("score_idle_interval")?,
            score_live_lead: get("score_live_lead").duration()?,
            import_check_interval: nonzero("import_check_interval")?,
            import_slice: nonzero("import_slice")?,
            poller_backoff,
            read_cache_ttl: get("read_cache_ttl").duration()?,
            min_withdrawal: PerToken::parse(get("min_withdrawal"), &tokens)?,
            min_stake: PerToken::parse(get("min_stake"), &tokens)?,
            max_pending_withdrawals: get("max_pending_withdrawals").number(1i64)?,
            tokens,
            settlement_fee_bps,
            registration,
            solana_poll_interval: nonzero("solana_poll_interval")?,
            solana_page_limit,
            solana_quarantine_after: get("solana_quarantine_after").number(1u32)?,
            solana_start,
            solana_concurrency: get("solana_concurrency").number(1usize)?,
            solana_timeout: nonzero("solana_timeout")?,
            solana_connect_timeout: nonzero("solana_connect_timeout")?,
            solana_start_stagger: get("solana_start_stagger").duration()?,
            solana_backoff,
            withdrawal_ttl: nonzero("withdrawal_ttl")?,
            cleanup_interval: nonzero("cleanup_interval")?,
            leader_ttl,
            db_write_timeout: nonzero("db_write_timeout")?,
            history_retention: nonzero("history_retention")?,
            webhook_secret,
            webhook_timeout: nonzero("webhook_timeout")?,
            webhook_retry_window: nonzero("webhook_retry_window")?,
            webhook_backoff,
            outbox_interval: nonzero("outbox_interval")?,
            outbox_batch: get("outbox_batch").number(1i64)?,
            events_retention: nonzero("events_retention")?,
            events_poll_interval: nonzero("events_poll_interval")?,
            sse_heartbeat: nonzero("sse_heartbeat")?,
            sse_max_streams: get("sse_max_streams").number(1usize)?,
            sse_max_streams_per_client: get("sse_max_streams_per_client").number(1usize)?,
            read_cache_max_bytes: get("read_cache_max_bytes").number(65536usize)?,
            metrics_db_interval: get("metrics_db_interval").duration()?,
            session_ttl: nonzero("session_ttl")?,
            auth_failure_limit: get("auth_failure_limit").number(1u32)?,
            auth_failure_window: nonzero("auth_failure_window")?,
            docs,
            embeddings_model,
            embeddings_api_key: get("embeddings_api_key").opt().map(Secret::new),
            embeddings_batch,
            embeddings_concurrency: get("embeddings_concurrency").number(1usize)?,
            embeddings_timeout: nonzero("embeddings_timeout")?,
            embeddings_connect_timeout: nonzero("embeddings_connect_timeout")?,
            embeddings_interval: nonzero("embeddings_interval")?,
            embeddings_backoff,
            search_embed_timeout: nonzero("search_embed_timeout")?,
            search_refresh_interval: nonzero("search_refresh_interval")?,
            entries: raws
                .into_iter()
                .map(|r| {
                    // Secrets are never kept in the rendering table, only a marker that one is set.
                    let value = if r.key.secret && !r.value.trim().is_empty() {
                        "[redacted]".to_string()
                    } else {
                        r.value
                    };
                    (r.key, value, r.source)
                })
                .collect(),
        };
        Ok(config)
    }

    /// `TIPOFF_*` variables in `env` that name no setting (likely typos), for a warning.
    pub fn unknown_env(env: &HashMap<String, String>) -> Vec<String> {
        let mut unknown: Vec<String> = env
            .keys()
            .filter(|k| {
                k.starts_with("TIPOFF_")
                    && *k != "TIPOFF_CONFIG"
                    && *k != "TIPOFF_ENV_FILE"
                    && !k.starts_with("TIPOFF_TEST_")
            })
            .filter(|k| !KEYS.iter().any(|key| env_name(key.name) == **k))
            .cloned()
            .collect();
        unknown.sort();
        unknown
    }

    /// The effective configuration as TOML, secrets redacted, each line saying where it came from.
    pub fn render(&self) -> String {
        let mut out = String::from("# tipoff effective configuration (environment > file > defaults); secrets are redacted\n");
        for (key, value, source) in &self.entries {
            let shown = match key.name {
                "database_url" => redact_url(self.database_url.expose()),
                "embeddings_url" | "solana_rpc_url" | "espn_base_url" => redact_url(value),
                "webhook_urls" => value
                    .split(',')
                    .map(|u| redact_url(u.trim()))
                    .collect::<Vec<_>>()
                    .join(","),
                "data_dir" => self.data_dir.display().to_string(),
                _ => value.clone(),
            };
            let origin = match source {
                Source::Env => env_name(key.name),
                Source::File(path) => path.display().to_string(),
                Source::Default if key.name == "database_url" || key.name == "data_dir" => {
                    "default (computed)".to_string()
                }
                Source::Default => "default".to_string(),
            };
            let quoted = toml::Value::String(shown).to_string();
            out.push_str(&format!("{} = {quoted:<40} # {origin}\n", key.name));
        }
        out
    }
}

/// `name=<signature or slot>` pairs, comma separated: where each token's first run begins.
fn parse_starts(
    raw: &Raw<'_>,
    tokens: &[Token],
) -> Result<Vec<(String, tipoff_actors::watcher::StartAt)>, ConfigError> {
    use tipoff_actors::watcher::StartAt;
    let mut starts = Vec::new();
    for pair in raw.list() {
        let Some((name, at)) = pair.split_once('=') else {
            return Err(raw.err(format!(
                "`{pair}` is not name=<signature or slot> (e.g. usdc=250000000)"
            )));
        };
        let (name, at) = (name.trim().to_ascii_lowercase(), at.trim());
        if !tokens.iter().any(|t| t.name == name) {
            return Err(raw.err(format!(
                "`{name}` is not a configured token (TIPOFF_TOKENS)"
            )));
        }
        if starts.iter().any(|(n, _)| *n == name) {
            return Err(raw.err(format!("token `{name}` is given twice")));
        }
        let start = if !at.is_empty() && at.bytes().all(|b| b.is_ascii_digit()) {
            StartAt::Slot(
                at.parse()
                    .map_err(|_| raw.err(format!("slot `{at}` is too large")))?,
            )
        } else if (64..=88).contains(&at.len())
            && at
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() && !b"0OIl".contains(&b))
        {
            StartAt::Signature(at.to_string())
        } else {
            return Err(raw.err(format!(
                "`{}` for token `{name}` is neither a slot (a number) nor a base58 transaction signature",
                at.chars().take(100).collect::<String>()
            )));
        };
        starts.push((name, start));
    }
    Ok(starts)
}

/// `name:mint:decimals:treasury` entries, comma separated.
/// An amount in base units for each configured token: one number for every token, or
/// `name=amount` pairs separated by commas (tokens not named get the default of 1).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct PerToken {
    all: Option<i64>,
    per: Vec<(String, i64)>,
}

impl PerToken {
    fn parse(raw: &Raw<'_>, tokens: &[Token]) -> Result<PerToken, ConfigError> {
        let value = raw.value.trim();
        let positive = |v: &str| -> Result<i64, ConfigError> {
            match v.trim().parse::<i64>() {
                Ok(n) if n >= 1 => Ok(n),
                _ => Err(raw.err(format!(
                    "`{v}` is not a whole number of base units of at least 1"
                ))),
            }
        };
        if value.is_empty() {
            return Ok(PerToken::default());
        }
        if !value.contains('=') {
            return Ok(PerToken {
                all: Some(positive(value)?),
                per: Vec::new(),
            });
        }
        let mut per = Vec::new();
        for pair in raw.list() {
            let Some((name, amount)) = pair.split_once('=') else {
                return Err(raw.err(format!(
                    "`{pair}` is not name=amount (or give one number for every token)"
                )));
            };
            let name = name.trim().to_ascii_lowercase();
            if !tokens.iter().any(|t| t.name == name) {
                return Err(raw.err(format!(
                    "`{name}` is not a configured token (TIPOFF_TOKENS)"
                )));
            }
            per.push((name, positive(amount)?));
        }
        Ok(PerToken { all: None, per })
    }

    /// The amount for token `name` (1 when none is set).
    pub fn of(&self, name: &str) -> i64 {
        self.per
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| *v)
            .or(self.all)
            .unwrap_or(1)
    }
}

fn parse_tokens(raw: &Raw<'_>) -> Result<Vec<Token>, ConfigError> {
    let mut tokens: Vec<Token> = Vec::new();
    for entry in raw.list() {
        let parts: Vec<&str> = entry.split(':').map(str::trim).collect();
        let [name, mint, decimals, treasury] = parts[..] else {
            return Err(raw.err(format!(
                "`{entry}` is not name:mint:decimals:treasury_token_account"
            )));
        };
        let name = name.to_ascii_lowercase();
        if name.is_empty()
            || name.len() > 32
            || !name
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
        {
            return Err(raw.err(format!(
                "token name `{name}` must be 1 to 32 letters, digits, - or _"
            )));
        }
        if tokens.iter().any(|t| t.name == name) {
            return Err(raw.err(format!("token `{name}` is listed twice")));
        }
        if !is_pubkey(mint) {
            return Err(raw.err(format!(
                "token `{name}`: mint `{mint}` is not a base58 public key"
            )));
        }
        if !is_pubkey(treasury) {
            return Err(raw.err(format!(
                "token `{name}`: treasury `{treasury}` is not a base58 public key"
            )));
        }
        if let Some(other) = tokens.iter().find(|t| t.treasury == treasury) {
            return Err(raw.err(if other.mint == mint {
                format!(
                    "tokens `{}` and `{name}` have the same mint and treasury: every deposit would be credited twice",
                    other.name
                )
            } else {
                format!(
                    "tokens `{}` and `{name}` name the same treasury token account `{treasury}` (a token account holds one mint)",
                    other.name
                )
            }));
        }
        let decimals: u8 = match decimals.parse() {
            Ok(d) if d <= 18 => d,
            _ => {
                return Err(raw.err(format!(
                    "token `{name}`: decimals `{decimals}` is not a whole number from 0 to 18"
                )))
            }
        };
        tokens.push(Token {
            name,
            mint: mint.to_string(),
            decimals,
            treasury: treasury.to_string(),
        });
    }
    Ok(tokens)
}

fn read_file(path: &Path) -> Result<BTreeMap<String, String>, ConfigError> {
    let label = format!("file {}", path.display());
    let text = std::fs::read_to_string(path).map_err(|e| ConfigError {
        setting: format!("TIPOFF_CONFIG / --config ({label})"),
        message: format!("cannot read it: {e}"),
    })?;
    let table: toml::Table = text.parse().map_err(|e: toml::de::Error| ConfigError {
        setting: label.clone(),
        message: format!("not valid TOML: {}", e.message()),
    })?;
    let mut values = BTreeMap::new();
    for (name, value) in table {
        if !KEYS.iter().any(|k| k.name == name) {
            return Err(ConfigError {
                setting: format!("{name} (in {})", path.display()),
                message: "unknown setting".into(),
            });
        }
        let text = match value {
            toml::Value::String(s) => s,
            toml::Value::Integer(i) => i.to_string(),
            toml::Value::Float(f) => f.to_string(),
            toml::Value::Boolean(b) => b.to_string(),
            toml::Value::Array(items) => items
                .into_iter()
                .map(|v| match v {
                    toml::Value::String(s) => s,
                    other => other.to_string(),
                })
                .collect::<Vec<_>>()
                .join(","),
            other => {
                return Err(ConfigError {
                    setting: format!("{name} (in {})", path.display()),
                    message: format!("unsupported value {other}"),
                })
            }
        };
        values.insert(name, text);
    }
    Ok(values)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env(pairs: &[(&str, &str)]) -> HashMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn defaults_give_a_sqlite_database_under_the_data_directory() {
        let c = Config::load(None, &env(&[])).unwrap();
        assert_eq!(c.listen.to_string(), "127.0.0.1:8080");
        assert_eq!(c.database_url.expose(), "sqlite://./data/tipoff.db");
        assert!(c.leagues.is_empty());
        assert!(c.admin_token.is_none());
        assert_eq!(c.shutdown_timeout, Duration::from_secs(25));
    }

    #[test]
    fn state_directory_is_the_default_data_directory_under_systemd() {
        let c = Config::load(None, &env(&[("STATE_DIRECTORY", "/var/lib/tipoff:/other")])).unwrap();
        assert_eq!(
            c.database_url.expose(),
            "sqlite:///var/lib/tipoff/tipoff.db"
        );
    }

    #[test]
    fn environment_beats_file_beats_defaults() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("tipoff.toml");
        std::fs::write(
            &path,
            "listen = \"127.0.0.1:9000\"\nleagues = [\"nba\", \"mlb\"]\nlog = \"debug\"\n",
        )
        .unwrap();
        let c = Config::load(Some(&path), &env(&[("TIPOFF_LOG", "warn")])).unwrap();
        assert_eq!(c.listen.port(), 9000);
        assert_eq!(c.leagues, vec!["nba", "mlb"]);
        assert_eq!(c.log, "warn");
    }

    #[test]
    fn watcher_starts_are_a_slot_or_a_signature_per_configured_token() {
        let tokens = "usdc:EPjFWdd5AufqSSqeM2qN1xzybapC8G4wEGGkZwyTDt1v:6:H51DXRt3ubThhdhNeDMScfkbC5X4AWzYfHaZS3JKEfPh";
        let sig = "5VERv8NMvzbJMEkV8xnrLkEaWRtSz9CosKDYjCJjBRnbJLgp8uirBgmQpjKhoR4tjF3ZpRzrFmBV6UjKdiSZkQUW";
        let c = Config::load(
            None,
            &env(&[
                ("TIPOFF_TOKENS", tokens),
                ("TIPOFF_SOLANA_START", "usdc=250000000"),
            ]),
        )
        .unwrap();
        assert_eq!(
            c.solana_start,
            vec![(
                "usdc".to_string(),
                tipoff_actors::watcher::StartAt::Slot(250_000_000)
            )]
        );
        let start = format!("usdc={sig}");
        let c = Config::load(
            None,
            &env(&[("TIPOFF_TOKENS", tokens), ("TIPOFF_SOLANA_START", &start)]),
        )
        .unwrap();
        assert_eq!(
            c.solana_start[0].1,
            tipoff_actors::watcher::StartAt::Signature(sig.into())
        );
        for (bad, says) in [
            ("usdc=not-a-signature", "neither a slot"),
            ("pump=5", "not a configured token"),
            ("usdc", "name=<signature or slot>"),
            ("usdc=1,usdc=2", "twice"),
        ] {
            let err = Config::load(
                None,
                &env(&[("TIPOFF_TOKENS", tokens), ("TIPOFF_SOLANA_START", bad)]),
            )
            .unwrap_err();
            assert!(err.setting.starts_with("TIPOFF_SOLANA_START"), "{err}");
            assert!(err.message.contains(says), "{bad}: {err}");
        }
    }

    #[test]
    fn a_bad_value_names_the_setting_and_its_source() {
        let err = Config::load(None, &env(&[("TIPOFF_LISTEN", "nowhere")])).unwrap_err();
        assert_eq!(err.setting, "TIPOFF_LISTEN (environment)");
        let err = Config::load(None, &env(&[("TIPOFF_LEAGUES", "nba,xfl")])).unwrap_err();
        assert!(
            err.to_string().contains("TIPOFF_LEAGUES") && err.message.contains("xfl"),
            "{err}"
        );
        let err = Config::load(None, &env(&[("TIPOFF_SHUTDOWN_TIMEOUT", "soon")])).unwrap_err();
        assert!(err.setting.starts_with("TIPOFF_SHUTDOWN_TIMEOUT"), "{err}");
    }

    #[test]
    fn an_unknown_file_key_is_an_error_naming_it() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("tipoff.toml");
        std::fs::write(&path, "lissten = \"x\"\n").unwrap();
        let err = Config::load(Some(&path), &env(&[])).unwrap_err();
        assert!(err.setting.starts_with("lissten"), "{err}");
    }

    #[test]
    fn render_never_shows_secrets() {
        let c = Config::load(
            None,
            &env(&[
                ("TIPOFF_ADMIN_TOKEN", "super-secret-admin-token"),
                (
                    "TIPOFF_DATABASE_URL",
                    "postgres://tipoff:hunter2hunter2@db.internal:5432/tipoff",
                ),
            ]),
        )
        .unwrap();
        let out = c.render();
        assert!(!out.contains("super-secret-admin-token"), "{out}");
        assert!(!out.contains("hunter2hunter2"), "{out}");
        assert!(
            out.contains("postgres://tipoff:***@db.internal:5432/tipoff"),
            "{out}"
        );
        assert!(out.contains("admin_token = \"[redacted]\""), "{out}");
        assert!(!format!("{c:?}").contains("hunter2hunter2"));
    }

    #[test]
    fn credentials_in_any_configured_url_are_redacted_by_check_config() {
        let c = Config::load(
            None,
            &env(&[
                ("TIPOFF_SOLANA_RPC_URL", "https://rpc.example/?api-key=rpc-secret-1"),
                ("TIPOFF_EMBEDDINGS_URL", "https://user:emb-secret-2@emb.example/v1"),
                ("TIPOFF_EMBEDDINGS_API_KEY", "sk-emb-secret-3"),
                (
                    "TIPOFF_WEBHOOK_URLS",
                    "https://hooks.example/in?token=hook-secret-4,https://b.example/x?secret=hook-secret-5",
                ),
                ("TIPOFF_WEBHOOK_SECRET", "webhook-signing-secret-6"),
                ("TIPOFF_ESPN_BASE_URL", "https://proxy.example/?key=espn-secret-7"),
            ]),
        )
        .unwrap();
        let out = c.render();
        for secret in [
            "rpc-secret-1",
            "emb-secret-2",
            "sk-emb-secret-3",
            "hook-secret-4",
            "hook-secret-5",
            "webhook-signing-secret-6",
            "espn-secret-7",
        ] {
            assert!(!out.contains(secret), "{secret} in\n{out}");
        }
        assert!(out.contains("https://rpc.example/?api-key=***"), "{out}");
        let err = Config::load(
            None,
            &env(&[(
                "TIPOFF_SOLANA_RPC_URL",
                "ftp://u:rpc-secret-8@x/?token=rpc-secret-9",
            )]),
        )
        .unwrap_err()
        .to_string();
        assert!(
            !err.contains("rpc-secret-8") && !err.contains("rpc-secret-9"),
            "{err}"
        );
    }

    #[test]
    fn poller_settings_have_the_documented_defaults_and_are_validated() {
        let c = Config::load(None, &env(&[])).unwrap();
        assert_eq!(c.schedule_interval, Duration::from_secs(6 * 3600));
        assert_eq!(c.schedule_lookahead_days, 7);
        assert_eq!(c.score_live_interval, Duration::from_secs(60));
        assert_eq!(c.score_idle_interval, Duration::from_secs(15 * 60));
        assert_eq!(c.score_live_lead, Duration::from_secs(15 * 60));
        let err = Config::load(None, &env(&[("TIPOFF_ESPN_CONCURRENCY", "0")])).unwrap_err();
        assert!(err.setting.starts_with("TIPOFF_ESPN_CONCURRENCY"), "{err}");
        let err =
            Config::load(None, &env(&[("TIPOFF_SCHEDULE_LOOKAHEAD_DAYS", "400")])).unwrap_err();
        assert!(
            err.setting.starts_with("TIPOFF_SCHEDULE_LOOKAHEAD_DAYS"),
            "{err}"
        );
        let err = Config::load(None, &env(&[("TIPOFF_SCORE_LIVE_INTERVAL", "0s")])).unwrap_err();
        assert!(
            err.setting.starts_with("TIPOFF_SCORE_LIVE_INTERVAL"),
            "{err}"
        );
    }

    #[test]
    fn the_env_example_lists_every_setting() {
        let example = include_str!("../deploy/tipoff.env.example");
        for key in KEYS {
            let name = env_name(key.name);
            assert!(
                example.contains(&format!("{name}=")),
                "deploy/tipoff.env.example lacks {name}"
            );
        }
    }

    #[test]
    fn the_toml_example_lists_every_setting_with_its_default_and_loads() {
        let example = include_str!("../deploy/tipoff.toml.example");
        for key in KEYS {
            let line = example
                .lines()
                .find(|l| {
                    l.trim_start_matches("# ")
                        .starts_with(&format!("{} = ", key.name))
                })
                .unwrap_or_else(|| panic!("deploy/tipoff.toml.example lacks {}", key.name));
            if !key.default.is_empty() {
                assert_eq!(line, format!("{} = \"{}\"", key.name, key.default));
            }
        }
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("tipoff.toml");
        std::fs::write(&file, example).unwrap();
        let config = Config::load(Some(&file), &HashMap::new()).expect("the example loads");
        assert_eq!(config.listen.to_string(), "127.0.0.1:8080");
    }

    /// The README's settings table names every setting (a row may write `TIPOFF_X_BASE` /
    /// `_CAP`: a name starting with `_` continues the row's first name without its last word).
    #[test]
    fn the_readme_lists_every_setting() {
        let readme = include_str!("../README.md");
        let mut named = std::collections::HashSet::new();
        for row in readme.lines().filter(|l| l.starts_with("| `TIPOFF_")) {
            let first_cell = row.split(" | ").next().unwrap_or("");
            let names: Vec<&str> = first_cell
                .split('`')
                .skip(1)
                .step_by(2)
                .filter(|n| n.starts_with("TIPOFF_") || n.starts_with('_'))
                .collect();
            let Some(first) = names.first() else { continue };
            let prefix = first.rsplit_once('_').map_or(*first, |(p, _)| p);
            for n in &names {
                named.insert(if n.starts_with('_') {
                    format!("{prefix}{n}")
                } else {
                    n.to_string()
                });
            }
        }
        for key in KEYS {
            let name = env_name(key.name);
            assert!(
                named.contains(&name),
                "the README's settings table lacks {name}"
            );
        }
    }

    #[test]
    fn durations_parse_with_units() {
        assert_eq!(parse_duration("250ms").unwrap(), Duration::from_millis(250));
        assert_eq!(parse_duration("5").unwrap(), Duration::from_secs(5));
        assert_eq!(parse_duration("6h").unwrap(), Duration::from_secs(21600));
        assert!(parse_duration("5 parsecs").is_err());
        assert!(parse_duration("").is_err());
    }
}
