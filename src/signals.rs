//! Unix signals: SIGTERM / SIGINT end the daemon; SIGHUP re-reads the configuration and applies
//! what can change without a restart (the log filter, enabled services and their intervals;
//! see [`Reloader`]), framed by `RELOADING=1` / `READY=1`. A configuration that does not load
//! is refused whole and the running one is kept.

use std::path::PathBuf;
use std::sync::Arc;

use tokio::signal::unix::{signal, SignalKind};

use crate::config::Config;
use crate::startup::Reloader;
use crate::systemd::Notifier;
use crate::telemetry::LogReload;

/// Resolves on the first SIGTERM or SIGINT.
pub async fn shutdown_signal() {
    let (Ok(mut term), Ok(mut int)) = (
        signal(SignalKind::terminate()),
        signal(SignalKind::interrupt()),
    ) else {
        tracing::error!("cannot install signal handlers; stop the process with SIGKILL");
        return std::future::pending().await;
    };
    tokio::select! {
        _ = term.recv() => tracing::info!(signal = "SIGTERM", "shutdown requested"),
        _ = int.recv() => tracing::info!(signal = "SIGINT", "shutdown requested"),
    }
}

/// Reloads on every SIGHUP until the task is dropped.
pub async fn reload_on_hangup(
    file: Option<PathBuf>,
    env_file: Option<PathBuf>,
    reload: LogReload,
    notifier: Arc<Notifier>,
    reloader: Reloader,
) {
    let Ok(mut hup) = signal(SignalKind::hangup()) else {
        tracing::error!("cannot install the SIGHUP handler; reload is unavailable");
        return;
    };
    while hup.recv().await.is_some() {
        notifier.reloading();
        // The env file is read again: systemd never refreshes a running process's environment.
        let env = match crate::cli::environment(env_file.as_deref()) {
            Ok(env) => env,
            Err(e) => {
                tracing::error!(error = %e, "reload refused; the running configuration is kept");
                notifier.notify("READY=1");
                continue;
            }
        };
        match Config::load_vars(file.as_deref(), &env) {
            Ok(config) => {
                if let Err(e) = reload.set(&config.server.log) {
                    tracing::error!(error = %e, "log filter not applied");
                }
                match reloader.apply(&config).await {
                    Ok(done) => tracing::info!(
                        log = %config.server.log,
                        started = ?done.started,
                        stopped = ?done.stopped,
                        replaced = ?done.replaced,
                        "configuration reloaded"
                    ),
                    Err(e) => {
                        tracing::error!(error = %e, "services not reconciled with the new configuration")
                    }
                }
            }
            Err(e) => {
                tracing::error!(error = %e, "reload refused; the running configuration is kept")
            }
        }
        notifier.notify("READY=1");
    }
}
