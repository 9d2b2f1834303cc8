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

use tipoff_actors::backfill::Backfill;
use tipoff_actors::cleanup::Cleanup;
use tipoff_actors::db::DbService;
use tipoff_actors::embeddings::EmbeddingsClient;
use tipoff_actors::espn::EspnClient;
use tipoff_actors::events::{EventHub, EventsFeed};
use tipoff_actors::leader::Leader;
use tipoff_actors::listener::Listener;
use tipoff_actors::outbox::{Outbox, WebhookClient};
use tipoff_actors::poller::Poller;
use tipoff_actors::search::{SearchHub, SearchIndex};
use tipoff_actors::settings::fingerprint;
use tipoff_actors::solana::RpcClient;
use tipoff_actors::store::catalog_league;
use tipoff_actors::watcher::Watcher;
use tipoff_actors::{factory, Backend, ChildSpec, Store};

use crate::config::Config;

/// What a child spec is built from.
pub struct Ctx<'a> {
    pub config: &'a Config,
    pub store: &'a Store,
    pub hub: &'a Arc<EventHub>,
    pub search: &'a Arc<SearchHub>,
    pub instance: &'a str,
}

/// A service's child specs (several for one per league or token; a skipped one names why).
type Service = fn(&Ctx) -> Result<Vec<ChildSpec>, String>;

/// The children of the root supervisor, in start order: one function per service.
pub fn child_specs(
    config: &Config,
    store: &Store,
    hub: &Arc<EventHub>,
    search: &Arc<SearchHub>,
    instance: &str,
) -> Result<Vec<ChildSpec>, String> {
    let ctx = Ctx {
        config,
        store,
        hub,
        search,
        instance,
    };
    let services: [Service; 9] = [
        db,
        leader,
        pollers,
        watchers,
        cleanup,
        outbox,
        events,
        search_index,
        backfill,
    ];
    let mut specs = Vec::new();
    for service in services {
        specs.extend(service(&ctx)?);
    }
    Ok(specs)
}

fn db(ctx: &Ctx) -> Result<Vec<ChildSpec>, String> {
    let (store, ping) = (ctx.store.clone(), ctx.config.db.ping_interval);
    Ok(vec![ChildSpec::new(
        "db",
        factory(move |svc| Ok(DbService::new(store.clone(), svc, ping))),
    )
    .critical()
    .hang_deadline(ctx.config.supervisor.hang_timeout)
    .fingerprint(format!("{ping:?}"))])
}

/// The leader lease and the listener (PostgreSQL); on SQLite the one process always leads.
fn leader(ctx: &Ctx) -> Result<Vec<ChildSpec>, String> {
    if ctx.store.backend() == Backend::Sqlite {
        return Ok(vec![
            ChildSpec::skipped(
                "leader",
                "SQLite: this process holds the database file's lock and always leads (epoch 1)",
            ),
            ChildSpec::skipped(
                "listener",
                "SQLite: one process, no other replica to hear from",
            ),
        ]);
    }
    let settings = ctx.config.leader.clone();
    let (store, print) = (ctx.store.clone(), fingerprint(&settings));
    let listener_store = ctx.store.clone();
    Ok(vec![
        ChildSpec::new(
            "leader",
            factory(move |svc| Ok(Leader::new(store.clone(), settings.clone(), svc))),
        )
        .critical()
        .stop_timeout(Duration::from_secs(15))
        .hang_deadline(ctx.config.supervisor.hang_timeout)
        .fingerprint(print),
        ChildSpec::new(
            "listener",
            factory(move |svc| Ok(Listener::new(listener_store.clone(), svc))),
        )
        .hang_deadline(ctx.config.supervisor.hang_timeout),
    ])
}

fn pollers(ctx: &Ctx) -> Result<Vec<ChildSpec>, String> {
    let config = ctx.config;
    if config.espn.leagues.is_empty() {
        return Ok(vec![ChildSpec::skipped(
            "poller",
            "no leagues enabled (TIPOFF_LEAGUES is empty)",
        )]);
    }
    let espn = EspnClient::new(
        &config.espn.espn_base_url,
        config.espn.espn_connect_timeout,
        config.espn.espn_timeout,
        ctx.instance,
    )
    .map_err(|e| format!("cannot build the ESPN client: {e}"))?;
    let deadline = poller_hang_deadline(config);
    let print = format!(
        "{}{}{deadline:?}",
        fingerprint(&config.espn),
        fingerprint(&config.poller)
    );
    let mut specs = Vec::new();
    for league in &config.espn.leagues {
        let &tipoff_actors::store::CatalogLeague { key, espn_path, .. } = catalog_league(league)?;
        let (store, espn, settings) = (ctx.store.clone(), espn.clone(), config.poller.clone());
        specs.push(
            ChildSpec::new(
                format!("poller:{key}"),
                factory(move |svc| {
                    let store = svc.store(&store);
                    Ok(Poller::new(
                        key,
                        espn_path,
                        store,
                        espn.clone(),
                        settings.clone(),
                        svc,
                    ))
                }),
            )
            .singleton()
            .stop_timeout(Duration::from_secs(10))
            .hang_deadline(deadline)
            .fingerprint(print.clone()),
        );
    }
    Ok(specs)
}

fn watchers(ctx: &Ctx) -> Result<Vec<ChildSpec>, String> {
    let (config, solana) = (ctx.config, &ctx.config.watcher);
    let Some(url) = &solana.solana_rpc_url else {
        return Ok(vec![ChildSpec::skipped(
            "watcher",
            "TIPOFF_SOLANA_RPC_URL is not set",
        )]);
    };
    if config.money.tokens.is_empty() {
        return Ok(vec![ChildSpec::skipped(
            "watcher",
            "no tokens configured (TIPOFF_TOKENS is empty)",
        )]);
    }
    let rpc = RpcClient::new(
        url,
        solana.solana_connect_timeout,
        solana.solana_timeout,
        ctx.instance,
    )
    .map_err(|e| format!("cannot build the Solana RPC client: {e}"))?;
    let rpc = Arc::new(rpc);
    let mut specs = Vec::new();
    for (i, token) in config.money.tokens.iter().enumerate() {
        let settings = solana.for_token(i, &token.name);
        let print = format!("{}{token:?}", fingerprint(&settings));
        let (store, rpc, token) = (ctx.store.clone(), rpc.clone(), token.clone());
        specs.push(
            ChildSpec::new(
                format!("watcher:{}", token.name),
                factory(move |svc| {
                    let store = svc.store(&store);
                    Ok(Watcher::new(
                        token.clone(),
                        store,
                        rpc.clone(),
                        settings.clone(),
                        svc,
                    ))
                }),
            )
            .singleton()
            .stop_timeout(Duration::from_secs(10))
            .hang_deadline(watcher_hang_deadline(config))
            .fingerprint(print),
        );
    }
    Ok(specs)
}

fn cleanup(ctx: &Ctx) -> Result<Vec<ChildSpec>, String> {
    let (settings, store) = (ctx.config.cleanup.clone(), ctx.store.clone());
    let print = fingerprint(&settings);
    Ok(vec![ChildSpec::new(
        "cleanup",
        factory(move |svc| Ok(Cleanup::new(svc.store(&store), settings.clone(), svc))),
    )
    .singleton()
    .hang_deadline(ctx.config.supervisor.hang_timeout)
    .fingerprint(print)])
}

fn outbox(ctx: &Ctx) -> Result<Vec<ChildSpec>, String> {
    let settings = ctx.config.outbox.clone();
    let Some(secret) = settings
        .secret
        .clone()
        .filter(|_| !settings.urls.is_empty())
    else {
        return Ok(vec![ChildSpec::skipped(
            "outbox",
            "no webhooks configured (TIPOFF_WEBHOOK_URLS is empty)",
        )]);
    };
    let client = WebhookClient::new(secret.expose(), settings.timeout, ctx.instance)
        .map_err(|e| format!("cannot build the webhook client: {e}"))?;
    // A delivery pass POSTs each event of a batch to each URL in turn, each bounded by the
    // webhook timeout (a URL that fails is not retried within the pass).
    let posts = settings.batch as u32 + settings.urls.len() as u32;
    let deadline = ctx
        .config
        .supervisor
        .hang_timeout
        .max(settings.timeout * posts.min(10_000) + Duration::from_secs(30));
    let print = format!("{}{deadline:?}", fingerprint(&settings));
    let (store, stop) = (ctx.store.clone(), settings.timeout + Duration::from_secs(2));
    Ok(vec![ChildSpec::new(
        "outbox",
        factory(move |svc| {
            let store = svc.store(&store);
            Ok(Outbox::new(store, client.clone(), settings.clone(), svc))
        }),
    )
    .singleton()
    .stop_timeout(stop)
    .hang_deadline(deadline)
    .fingerprint(print)])
}

fn events(ctx: &Ctx) -> Result<Vec<ChildSpec>, String> {
    let (store, hub) = (ctx.store.clone(), ctx.hub.clone());
    let (every, print) = (
        ctx.config.events.poll_interval,
        fingerprint(&ctx.config.events),
    );
    Ok(vec![ChildSpec::new(
        "events",
        factory(move |svc| Ok(EventsFeed::new(store.clone(), hub.clone(), every, svc))),
    )
    .hang_deadline(ctx.config.supervisor.hang_timeout)
    .fingerprint(print)])
}

const NO_EMBEDDINGS: &str =
    "TIPOFF_EMBEDDINGS_URL is not set (search answers with keyword ranking)";

/// The in-memory vector index of hybrid search (every replica).
fn search_index(ctx: &Ctx) -> Result<Vec<ChildSpec>, String> {
    if ctx.config.embeddings.url.is_none() {
        return Ok(vec![ChildSpec::skipped("search", NO_EMBEDDINGS)]);
    }
    let settings = ctx.config.search.clone();
    let print = fingerprint(&settings);
    let (store, hub) = (ctx.store.clone(), ctx.search.clone());
    Ok(vec![ChildSpec::new(
        "search",
        factory(move |svc| {
            Ok(SearchIndex::new(
                store.clone(),
                hub.clone(),
                settings.clone(),
                svc,
            ))
        }),
    )
    .hang_deadline(ctx.config.supervisor.hang_timeout)
    .fingerprint(print)])
}

/// The embedding backfill (singleton).
fn backfill(ctx: &Ctx) -> Result<Vec<ChildSpec>, String> {
    let config = ctx.config;
    let Some(client) = embeddings_client(config, ctx.instance)? else {
        return Ok(vec![ChildSpec::skipped("backfill", NO_EMBEDDINGS)]);
    };
    let settings = config.backfill.clone();
    let timeout = config.embeddings.timeout;
    let deadline = config
        .supervisor
        .hang_timeout
        .max(settings.slice + timeout * 2 + Duration::from_secs(30));
    let print = format!(
        "{}{}{deadline:?}",
        fingerprint(&settings),
        fingerprint(&config.embeddings)
    );
    let (store, hub) = (ctx.store.clone(), ctx.search.clone());
    Ok(vec![ChildSpec::new(
        "backfill",
        factory(move |svc| {
            let store = svc.store(&store);
            Ok(Backfill::new(
                store,
                client.clone(),
                hub.clone(),
                settings.clone(),
                svc,
            ))
        }),
    )
    .singleton()
    // A call cut short loses no data (nothing of its batch is written), so the stop does not
    // wait a whole embeddings timeout inside the shutdown deadline.
    .stop_timeout(timeout.min(Duration::from_secs(8)) + Duration::from_secs(2))
    .hang_deadline(deadline)
    .fingerprint(print)])
}

/// The one embeddings client of this configuration (`backfill` and the search handlers), or
/// `None` when `TIPOFF_EMBEDDINGS_URL` is unset.
pub fn embeddings_client(
    config: &Config,
    instance: &str,
) -> Result<Option<EmbeddingsClient>, String> {
    if config.embeddings.url.is_none() {
        return Ok(None);
    }
    EmbeddingsClient::new(&config.embeddings, instance)
        .map(Some)
        .map_err(|e| format!("cannot build the embeddings client: {e}"))
}

/// A watcher's pass makes up to 1,000 `getTransaction` calls, `solana_concurrency` at a time,
/// each bounded by the RPC timeout: the hang deadline allows every round to time out.
fn watcher_hang_deadline(config: &Config) -> Duration {
    let rounds = 1000usize.div_ceil(config.watcher.concurrency) as u32 + 10;
    config
        .supervisor
        .hang_timeout
        .max(config.watcher.solana_timeout * rounds)
}

/// A poller's pass may legitimately take as long as its slowest rounds of fetches (every
/// attempt timing out, with the waits between): the hang deadline is at least that, so only a
/// real hang trips it.
fn poller_hang_deadline(config: &Config) -> Duration {
    let p = &config.poller;
    let attempts = p.fetch_attempts;
    let one_board = config.espn.espn_timeout * attempts + p.retry_max_wait * (attempts - 1);
    let boards = p.lookahead_days as usize + 2;
    let rounds = boards.div_ceil(p.concurrency) as u32;
    config
        .supervisor
        .hang_timeout
        .max(one_board * rounds + p.import_slice + Duration::from_secs(30))
}
