//! The whole picture of what runs: the root supervisor's children, in start order, each gated
//! by configuration.
//!
//! ```text
//! root supervisor
//! └── db        critical, permanent: database health pings; /ready and dependent services follow it
//! ```

use tipoff_actors::db::DbService;
use tipoff_actors::restart::RestartSettings;
use tipoff_actors::{factory, ChildSpec, Store, SupervisorSettings};

use crate::config::Config;

/// The children of the root supervisor, in start order.
pub fn child_specs(config: &Config, store: &Store) -> Vec<ChildSpec> {
    let store = store.clone();
    let ping = config.db_ping_interval;
    vec![ChildSpec::new(
        "db",
        factory(move |svc| Ok(DbService::new(store.clone(), svc, ping))),
    )
    .critical()
    .hang_deadline(config.hang_timeout)]
}

/// Restart and liveness settings from configuration.
pub fn supervisor_settings(config: &Config) -> SupervisorSettings {
    SupervisorSettings {
        restart: RestartSettings {
            backoff_base: config.restart_backoff_base,
            backoff_cap: config.restart_backoff_cap,
            jitter: true,
            reset_after: config.restart_reset_after,
            intensity_max: config.restart_max,
            intensity_window: config.restart_window,
        },
        check_interval: config.supervisor_check_interval,
    }
}
