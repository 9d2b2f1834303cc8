//! The whole picture of what runs: the root supervisor's children, in start order, each gated
//! by configuration.
//!
//! ```text
//! root supervisor
//! ├── db               critical, permanent: database health pings; /ready and dependent services follow it
//! ├── leader           (PostgreSQL; skipped on SQLite, whose one process always leads) critical,
//! │                    permanent: takes and renews the leader lease; the singletons below run
//! │                    only while this replica holds it, and write fenced by its epoch
//! ├── listener         (PostgreSQL) permanent, every replica: LISTEN for other replicas' writes
//! │                    (read caches), a released lease, commands forwarded to the leader
//! ├── poller:<league>  one per league in TIPOFF_LEAGUES (skipped when empty), permanent, singleton:
//! │                    schedule loop, adaptive score loop, import jobs (markets settle here,
//! │                    with their payouts); one shared ESPN client
//! ├── watcher:<token>  one per token in TIPOFF_TOKENS (skipped without TIPOFF_SOLANA_RPC_URL),
//! │                    permanent, singleton, started staggered: deposits credited exactly once
//! ├── cleanup          permanent, singleton: stale withdrawals expire, old history is pruned
//! ├── outbox           (skipped without TIPOFF_WEBHOOK_URLS) permanent, singleton: domain
//! │                    events POSTed to the webhooks, signed, retried, dead after N attempts
//! ├── events           permanent, every replica: new outbox rows → the live SSE streams
//! ├── search           (skipped without TIPOFF_EMBEDDINGS_URL) permanent, every replica: the
//! │                    in-memory vector index hybrid search ranks with (keyword search needs
//! │                    no service: it is always on)
//! └── backfill         (skipped without TIPOFF_EMBEDDINGS_URL) permanent, singleton: embeddings
//!                      for markets whose document has no vector for the model, in batches
//! ```

use std::sync::Arc;
use std::time::Duration;

use sha2::{Digest, Sha256};
use tipoff_actors::backfill::{Backfill, BackfillSettings};
use tipoff_actors::cleanup::{Cleanup, CleanupSettings};
use tipoff_actors::db::DbService;
use tipoff_actors::embeddings::{EmbeddingsClient, EmbeddingsConfig};
use tipoff_actors::espn::EspnClient;
use tipoff_actors::events::{EventHub, EventsFeed};
use tipoff_actors::leader::{Leader, LeaderSettings};
use tipoff_actors::listener::Listener;
use tipoff_actors::outbox::{Outbox, OutboxSettings, WebhookClient};
use tipoff_actors::poller::{Poller, PollerSettings};
use tipoff_actors::restart::RestartSettings;
use tipoff_actors::search::{SearchHub, SearchIndex, SearchSettings};
use tipoff_actors::solana::RpcClient;
use tipoff_actors::store::catalog_league;
use tipoff_actors::watcher::{Watcher, WatcherSettings};
use tipoff_actors::{factory, Backend, ChildSpec, Store, SupervisorSettings};

use crate::config::Config;

/// The children of the root supervisor, in start order.
pub fn child_specs(
    config: &Config,
    store: &Store,
    hub: &Arc<EventHub>,
    search: &Arc<SearchHub>,
    instance: &str,
) -> Result<Vec<ChildSpec>, String> {
    let mut specs = Vec::new();
    let db_store = store.clone();
    let ping = config.db_ping_interval;
    specs.push(
        ChildSpec::new(
            "db",
            factory(move |svc| Ok(DbService::new(db_store.clone(), svc, ping))),
        )
        .critical()
        .hang_deadline(config.hang_timeout)
        .fingerprint(format!("{ping:?}")),
    );

    if store.backend() == Backend::Sqlite {
        specs.push(ChildSpec::skipped(
            "leader",
            "SQLite: this process holds the database file's lock and always leads (epoch 1)",
        ));
        specs.push(ChildSpec::skipped(
            "listener",
            "SQLite: one process, no other replica to hear from",
        ));
    } else {
        let settings = leader_settings(config);
        let (leader_store, fingerprint) = (store.clone(), format!("{settings:?}"));
        specs.push(
            ChildSpec::new(
                "leader",
                factory(move |svc| Ok(Leader::new(leader_store.clone(), settings.clone(), svc))),
            )
            .critical()
            .stop_timeout(Duration::from_secs(15))
            .hang_deadline(config.hang_timeout)
            .fingerprint(fingerprint),
        );
        let listener_store = store.clone();
        specs.push(
            ChildSpec::new(
                "listener",
                factory(move |svc| Ok(Listener::new(listener_store.clone(), svc))),
            )
            .hang_deadline(config.hang_timeout),
        );
    }

    if config.leagues.is_empty() {
        specs.push(ChildSpec::skipped(
            "poller",
            "no leagues enabled (TIPOFF_LEAGUES is empty)",
        ));
    } else {
        let espn = EspnClient::new(
            &config.espn_base_url,
            config.espn_connect_timeout,
            config.espn_timeout,
            instance,
        )
        .map_err(|e| format!("cannot build the ESPN client: {e}"))?;
        let settings = poller_settings(config);
        let fingerprint = format!(
            "{:?}",
            (
                &config.espn_base_url,
                config.espn_timeout,
                config.espn_connect_timeout,
                poller_fingerprint(&settings),
                poller_hang_deadline(config),
            )
        );
        for league in &config.leagues {
            let &tipoff_actors::store::CatalogLeague { key, espn_path, .. } =
                catalog_league(league)?;
            let (store, espn, settings) = (store.clone(), espn.clone(), settings.clone());
            specs.push(
                ChildSpec::new(
                    format!("poller:{key}"),
                    factory(move |svc| {
                        Ok(Poller::new(
                            key,
                            espn_path,
                            svc.store(&store),
                            espn.clone(),
                            settings.clone(),
                            svc,
                        ))
                    }),
                )
                .singleton()
                .stop_timeout(Duration::from_secs(10))
                .hang_deadline(poller_hang_deadline(config))
                .fingerprint(fingerprint.clone()),
            );
        }
    }

    match (&config.solana_rpc_url, config.tokens.is_empty()) {
        (None, _) => specs.push(ChildSpec::skipped(
            "watcher",
            "TIPOFF_SOLANA_RPC_URL is not set",
        )),
        (Some(_), true) => specs.push(ChildSpec::skipped(
            "watcher",
            "no tokens configured (TIPOFF_TOKENS is empty)",
        )),
        (Some(url), false) => {
            let rpc = Arc::new(
                RpcClient::new(
                    url,
                    config.solana_connect_timeout,
                    config.solana_timeout,
                    instance,
                )
                .map_err(|e| format!("cannot build the Solana RPC client: {e}"))?,
            );
            for (i, token) in config.tokens.iter().enumerate() {
                let settings = WatcherSettings {
                    interval: config.solana_poll_interval,
                    page_limit: config.solana_page_limit,
                    concurrency: config.solana_concurrency,
                    max_window: 1000,
                    start_delay: config.solana_start_stagger * i as u32,
                    backoff: config.solana_backoff,
                    quarantine_after: config.solana_quarantine_after,
                    start: config
                        .solana_start
                        .iter()
                        .find(|(name, _)| *name == token.name)
                        .map(|(_, at)| at.clone()),
                };
                let fingerprint = format!(
                    "{:?}",
                    (
                        url,
                        config.solana_timeout,
                        config.solana_connect_timeout,
                        token,
                        &settings
                    )
                );
                let (store, rpc, token) = (store.clone(), rpc.clone(), token.clone());
                specs.push(
                    ChildSpec::new(
                        format!("watcher:{}", token.name),
                        factory(move |svc| {
                            Ok(Watcher::new(
                                token.clone(),
                                svc.store(&store),
                                rpc.clone(),
                                settings.clone(),
                                svc,
                            ))
                        }),
                    )
                    .singleton()
                    .stop_timeout(Duration::from_secs(10))
                    .hang_deadline(watcher_hang_deadline(config))
                    .fingerprint(fingerprint),
                );
            }
        }
    }

    let cleanup = CleanupSettings {
        interval: config.cleanup_interval,
        withdrawal_ttl: config.withdrawal_ttl,
        retention: config.history_retention,
        events_retention: config.events_retention,
        webhooks_enabled: !config.webhook_urls.is_empty(),
    };
    let cleanup_store = store.clone();
    let fingerprint = format!("{cleanup:?}");
    specs.push(
        ChildSpec::new(
            "cleanup",
            factory(move |svc| {
                Ok(Cleanup::new(
                    svc.store(&cleanup_store),
                    cleanup.clone(),
                    svc,
                ))
            }),
        )
        .singleton()
        .hang_deadline(config.hang_timeout)
        .fingerprint(fingerprint),
    );

    match (&config.webhook_urls[..], &config.webhook_secret) {
        ([], _) => specs.push(ChildSpec::skipped(
            "outbox",
            "no webhooks configured (TIPOFF_WEBHOOK_URLS is empty)",
        )),
        (_, None) => return Err("TIPOFF_WEBHOOK_SECRET is required with webhook URLs".into()),
        (urls, Some(secret)) => {
            let settings = outbox_settings(config, urls);
            let client = WebhookClient::new(secret.expose(), config.webhook_timeout, instance)
                .map_err(|e| format!("cannot build the webhook client: {e}"))?;
            let deadline = outbox_hang_deadline(config, &settings);
            let secret_digest: [u8; 32] = Sha256::digest(secret.expose().as_bytes()).into();
            let fingerprint = format!("{:?}", (&settings, secret_digest, deadline));
            let outbox_store = store.clone();
            specs.push(
                ChildSpec::new(
                    "outbox",
                    factory(move |svc| {
                        Ok(Outbox::new(
                            svc.store(&outbox_store),
                            client.clone(),
                            settings.clone(),
                            svc,
                        ))
                    }),
                )
                .singleton()
                .stop_timeout(config.webhook_timeout + Duration::from_secs(2))
                .hang_deadline(deadline)
                .fingerprint(fingerprint),
            );
        }
    }

    let (events_store, hub, every) = (store.clone(), hub.clone(), config.events_poll_interval);
    specs.push(
        ChildSpec::new(
            "events",
            factory(move |svc| {
                Ok(EventsFeed::new(
                    events_store.clone(),
                    hub.clone(),
                    every,
                    svc,
                ))
            }),
        )
        .hang_deadline(config.hang_timeout)
        .fingerprint(format!("{every:?}")),
    );

    match embeddings_client(config, instance)? {
        None => {
            let why = "TIPOFF_EMBEDDINGS_URL is not set (search answers with keyword ranking)";
            specs.push(ChildSpec::skipped("search", why));
            specs.push(ChildSpec::skipped("backfill", why));
        }
        Some(client) => {
            let settings = SearchSettings {
                model: config.embeddings_model.clone(),
                refresh_interval: config.search_refresh_interval,
            };
            let fingerprint = format!("{settings:?}");
            let (search_store, hub) = (store.clone(), search.clone());
            specs.push(
                ChildSpec::new(
                    "search",
                    factory(move |svc| {
                        Ok(SearchIndex::new(
                            search_store.clone(),
                            hub.clone(),
                            settings.clone(),
                            svc,
                        ))
                    }),
                )
                .hang_deadline(config.hang_timeout)
                .fingerprint(fingerprint),
            );
            let settings = backfill_settings(config);
            let deadline = config
                .hang_timeout
                .max(settings.slice + config.embeddings_timeout * 2 + Duration::from_secs(30));
            let key = config
                .embeddings_api_key
                .as_ref()
                .map_or("", |k| k.expose());
            let key_digest: [u8; 32] = Sha256::digest(key.as_bytes()).into();
            let fingerprint = format!(
                "{:?}",
                (&settings, embeddings_config(config), key_digest, deadline)
            );
            let (backfill_store, hub) = (store.clone(), search.clone());
            specs.push(
                ChildSpec::new(
                    "backfill",
                    factory(move |svc| {
                        Ok(Backfill::new(
                            svc.store(&backfill_store),
                            client.clone(),
                            hub.clone(),
                            settings.clone(),
                            svc,
                        ))
                    }),
                )
                .singleton()
                // A call cut short loses no data (nothing of its batch is written), so the
                // stop does not wait a whole embeddings timeout inside the shutdown deadline.
                .stop_timeout(
                    config.embeddings_timeout.min(Duration::from_secs(8)) + Duration::from_secs(2),
                )
                .hang_deadline(deadline)
                .fingerprint(fingerprint),
            );
        }
    }
    Ok(specs)
}

/// The embeddings API's settings, when `TIPOFF_EMBEDDINGS_URL` is set. Its `Debug` redacts
/// the key (the reload fingerprint adds a digest of it).
fn embeddings_config(config: &Config) -> Option<EmbeddingsConfig> {
    let url = config.embeddings_url.as_ref()?;
    Some(EmbeddingsConfig {
        url: url.clone(),
        model: config.embeddings_model.clone(),
        api_key: config
            .embeddings_api_key
            .as_ref()
            .map(|k| k.expose().to_string()),
        connect_timeout: config.embeddings_connect_timeout,
        timeout: config.embeddings_timeout,
    })
}

/// The one embeddings client of this configuration (`backfill` and the search handlers), or
/// `None` when `TIPOFF_EMBEDDINGS_URL` is unset.
pub fn embeddings_client(
    config: &Config,
    instance: &str,
) -> Result<Option<EmbeddingsClient>, String> {
    embeddings_config(config)
        .map(|c| {
            EmbeddingsClient::new(&c, instance)
                .map_err(|e| format!("cannot build the embeddings client: {e}"))
        })
        .transpose()
}

fn backfill_settings(config: &Config) -> BackfillSettings {
    BackfillSettings {
        batch: config.embeddings_batch,
        concurrency: config.embeddings_concurrency,
        interval: config.embeddings_interval,
        backoff: config.embeddings_backoff,
        slice: Duration::from_secs(10),
    }
}

/// The leader lease's settings from configuration.
pub fn leader_settings(config: &Config) -> LeaderSettings {
    LeaderSettings {
        ttl: config.leader_ttl,
    }
}

/// The pacing part of the poller settings, as text (the clock is left out).
fn poller_fingerprint(s: &PollerSettings) -> String {
    format!(
        "{:?}",
        (
            s.schedule_interval,
            s.lookahead_days,
            s.live_interval,
            s.idle_interval,
            s.live_lead,
            s.concurrency,
            s.fetch_attempts,
            s.retry_max_wait,
            s.import_check_interval,
            s.import_slice,
            (s.backoff, s.fee_bps),
        )
    )
}

fn outbox_settings(config: &Config, urls: &[String]) -> OutboxSettings {
    OutboxSettings {
        urls: urls.to_vec(),
        interval: config.outbox_interval,
        batch: config.outbox_batch,
        retry_window: config.webhook_retry_window,
        backoff: config.webhook_backoff,
        timeout: config.webhook_timeout,
    }
}

/// A delivery pass POSTs each event of a batch to each URL in turn, each bounded by the
/// webhook timeout (a URL that fails is not retried within the pass).
fn outbox_hang_deadline(config: &Config, settings: &OutboxSettings) -> Duration {
    let posts = settings.batch as u32 + settings.urls.len() as u32;
    config
        .hang_timeout
        .max(config.webhook_timeout * posts.min(10_000) + Duration::from_secs(30))
}

/// A watcher's pass makes up to 1,000 `getTransaction` calls, `solana_concurrency` at a time,
/// each bounded by the RPC timeout: the hang deadline allows every round to time out.
fn watcher_hang_deadline(config: &Config) -> Duration {
    let rounds = 1000usize.div_ceil(config.solana_concurrency) as u32 + 10;
    config.hang_timeout.max(config.solana_timeout * rounds)
}

/// Poller pacing from configuration.
pub fn poller_settings(config: &Config) -> PollerSettings {
    PollerSettings {
        schedule_interval: config.schedule_interval,
        lookahead_days: config.schedule_lookahead_days,
        live_interval: config.score_live_interval,
        idle_interval: config.score_idle_interval,
        live_lead: config.score_live_lead,
        concurrency: config.espn_concurrency,
        fetch_attempts: config.espn_attempts,
        retry_max_wait: config.espn_retry_max_wait,
        import_check_interval: config.import_check_interval,
        import_slice: config.import_slice,
        backoff: config.poller_backoff,
        fee_bps: config.settlement_fee_bps,
        clock: Arc::new(chrono::Utc::now),
    }
}

/// A poller's pass may legitimately take as long as its slowest rounds of fetches (every
/// attempt timing out, with the waits between): the hang deadline is at least that, so only a
/// real hang trips it.
fn poller_hang_deadline(config: &Config) -> Duration {
    let attempts = config.espn_attempts;
    let one_board = config.espn_timeout * attempts + config.espn_retry_max_wait * (attempts - 1);
    let boards = config.schedule_lookahead_days as usize + 2;
    let rounds = boards.div_ceil(config.espn_concurrency) as u32;
    config
        .hang_timeout
        .max(one_board * rounds + config.import_slice + Duration::from_secs(30))
}

/// Restart and liveness settings from configuration.
pub fn supervisor_settings(config: &Config) -> SupervisorSettings {
    SupervisorSettings {
        restart: RestartSettings {
            backoff: config.restart_backoff,
            jitter: true,
            reset_after: config.restart_reset_after,
            intensity_max: config.restart_max,
            intensity_window: config.restart_window,
        },
        check_interval: config.supervisor_check_interval,
    }
}
