//! Integration and end-to-end tests of the daemon (one binary to keep link time down).
//!
//! PostgreSQL tests read their server from `TIPOFF_TEST_POSTGRES_URL` (e.g.
//! `postgres://postgres@127.0.0.1:5432/postgres`) and create a uniquely named database per test.
//! Without it they print a loud SKIPPED line; with `CI=true` a missing variable fails them.
//! ESPN, the Solana RPC and webhook receivers are replaced by local mocks (`espn_mock.rs`,
//! `rpc_mock.rs` serving the real fixtures, `webhook_mock.rs`).

#[macro_use]
mod helpers;
mod contract;
mod crash;
mod dashboard;
mod deploy;
mod embeddings_mock;
mod espn_mock;
mod events;
mod games;
mod hostile;
mod imports;
mod lifecycle;
mod metrics;
mod mock_server;
mod money;
mod openapi;
mod ops;
mod outbox;
mod poller;
mod replicas;
mod rpc_mock;
mod search;
mod security;
mod seed;
mod settlement;
mod storage;
mod watcher;
mod webhook_mock;
