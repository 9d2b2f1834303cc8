//! tipoff: the daemon around the supervision tree.
//!
//! # Layout
//! - `config`: settings from environment > TOML file > defaults; validation that names the
//!   setting (exit 78); the redacted rendering for `check-config`.
//! - `cli`: `serve` (default), `migrate`, `check-config`, `status`.
//! - `status`: `tipoff status`, the table of a running daemon's services.
//! - `services`: **what runs**: the root supervisor's children in start order, gated by config.
//! - `startup`: `Application::build` (database, supervisor, bound listener) and
//!   `run_until_stopped` (ready, then the phased shutdown under one deadline).
//! - `http`: the actix-web API; handlers read the store and message the supervisor.
//! - `signals`: SIGTERM / SIGINT → shutdown; SIGHUP → reload.
//! - `systemd`: `NOTIFY_SOCKET` protocol (`READY`, `STATUS`, `STOPPING`, `RELOADING`, `WATCHDOG`).
//! - `telemetry`: `tracing` output (pretty or JSON) with a reloadable filter.
//!
//! The supervision tree, the service actors and storage live in the `tipoff-actors` crate.

pub mod cli;
pub mod config;
pub mod http;
pub mod services;
pub mod settings;
pub mod signals;
pub mod startup;
pub mod status;
pub mod systemd;
pub mod telemetry;
