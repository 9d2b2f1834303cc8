//! Integration and end-to-end tests of the daemon (one binary to keep link time down).
//!
//! PostgreSQL tests read their server from `TIPOFF_TEST_POSTGRES_URL` (e.g.
//! `postgres://postgres@127.0.0.1:5432/postgres`) and create a uniquely named database per test.
//! Without it they print a loud SKIPPED line; with `CI=true` a missing variable fails them.
//! ESPN is replaced by a local mock (`espn_mock.rs`) serving the real fixtures.

mod espn_mock;
mod games;
mod helpers;
mod imports;
mod lifecycle;
mod ops;
mod poller;
mod storage;
