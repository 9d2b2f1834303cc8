//! tipoff's supervision tree and the services it owns.
//!
//! # Layout
//! - [`supervisor`]: the root supervisor actor. Child specs, start in order, failure detection
//!   (errors, panics, hangs), restarts with backoff and an intensity limit, stop in reverse
//!   order under a deadline, the status registry.
//! - [`service`]: the contract every child follows: [`ServiceCtx`](service::ServiceCtx) to
//!   report ticks and failures, [`Control`](service::Control) to be pinged and stopped, and the
//!   factory that builds a fresh actor on every (re)start.
//! - [`restart`]: backoff and intensity arithmetic.
//! - [`status`]: the registry's types, as served by `/debug/status`.
//! - [`redact`]: credentials out of URLs before they reach a log line or an error.
//! - [`db`]: the `db` child: database health pings.
//! - [`leader`]: the `leader` child: holds the leader lease (PostgreSQL); singletons follow it.
//! - [`listener`]: the `listener` child (PostgreSQL, every replica): other replicas' writes
//!   drop the read caches, a released lease wakes `leader`, followers' commands reach the leader.
//! - [`espn`]: ESPN scoreboard client and parser (for the league pollers).
//! - [`poller`]: the `poller:<league>` children: schedule loop, adaptive score loop, import jobs.
//! - [`solana`] and [`watcher`]: the `watcher:<token>` children: Solana deposits credited once.
//! - [`cleanup`]: the `cleanup` child: stale withdrawals expire, old history is pruned.
//! - [`outbox`]: the `outbox` child: domain events delivered to webhooks, signed, retried.
//! - [`events`]: the `events` child: feeds the live SSE stream from the outbox table.
//! - [`embeddings`]: the OpenAI-compatible embeddings client (backfill and query vectors).
//! - [`search`]: the `search` child (every replica): the in-memory vector index hybrid
//!   search ranks with; [`backfill`]: the `backfill` child: embeddings for markets that lack one.
//! - [`store`]: the storage seam over SQLite and PostgreSQL, with their migrations: leagues,
//!   games and markets (`games.rs`), import jobs (`imports.rs`), users, ledger, stakes,
//!   deposits and withdrawals (`money.rs`), the outbox of domain events (`outbox.rs`), the
//!   leader lease and the fencing of singleton writes (`lease.rs`), market search documents,
//!   the keyword index and the stored vectors (`search.rs`).
//!
//! Data flow: the daemon builds a [`Store`](store::Store) and the child specs, starts the
//! [`Supervisor`](supervisor::Supervisor), and hands both to its HTTP handlers. Handlers read
//! through the store directly and send commands to the supervisor as messages.

pub mod backfill;
pub mod cleanup;
pub mod db;
pub mod domain;
pub mod embeddings;
pub mod espn;
pub mod events;
pub mod leader;
pub mod listener;
pub mod money;
pub mod outbox;
pub mod poller;
pub mod redact;
pub mod restart;
pub mod search;
pub mod service;
pub mod settings;
pub mod solana;
pub mod stakes;
pub mod status;
pub mod store;
pub mod supervisor;
pub mod upstream;
pub mod watcher;

pub use restart::RestartSettings;

/// The `User-Agent` of every outgoing request: the version and the replica that sent it, so an
/// upstream (or a test's mock) can tell replicas apart.
pub fn user_agent(instance: &str) -> String {
    format!("tipoff/{} (instance {instance})", env!("CARGO_PKG_VERSION"))
}
pub use service::{
    factory, ChildFactory, Control, LeaseView, ServiceCtx, Shared, StepDown, TickGate,
};
pub use status::{Registry, ServiceState, ServiceStatus};
pub use store::{Backend, Store, StoreError, StoreOptions};
pub use supervisor::{ChildSpec, RestartPolicy, Supervisor, SupervisorSettings};
