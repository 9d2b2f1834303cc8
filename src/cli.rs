//! The command line (clap): `serve` (default), `migrate`, `check-config`, `status`.

use std::collections::HashMap;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;

use clap::{Parser, Subcommand};

use crate::config::{Config, EXIT_CONFIG};
use crate::startup::Application;
use crate::systemd::Notifier;
use crate::{signals, telemetry};

#[derive(Debug, Parser)]
#[command(
    name = "tipoff",
    version,
    about = "Background daemon of a sports prediction-market backend"
)]
pub struct Cli {
    /// TOML configuration file (environment variables override it).
    #[arg(long, global = true, env = "TIPOFF_CONFIG")]
    pub config: Option<PathBuf>,
    /// An env file (`TIPOFF_X=value` lines) read by tipoff itself, at start and again on every
    /// reload (SIGHUP), so an edit applies without a restart. Between the TOML file and the
    /// environment: a variable set in the process environment wins.
    #[arg(long, global = true, env = "TIPOFF_ENV_FILE")]
    pub env_file: Option<PathBuf>,
    #[command(subcommand)]
    pub command: Option<Command>,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the daemon (the default).
    Serve,
    /// Apply database migrations and exit.
    Migrate,
    /// Print the effective configuration (secrets redacted); exit 78 when it is invalid.
    CheckConfig,
    /// Print every setting with its documentation and default, as a TOML file.
    Settings,
    /// Ask a running daemon for its services and print them as a table. Exit 0 when it is
    /// ready, 1 when it answers but is not ready, 2 when it cannot be reached or refuses.
    Status(StatusArgs),
}

#[derive(Debug, clap::Args)]
pub struct StatusArgs {
    /// The daemon's base URL (default: http:// and the configured listen address).
    #[arg(long)]
    pub url: Option<String>,
    /// Admin token (default: the configured TIPOFF_ADMIN_TOKEN).
    #[arg(long, env = "TIPOFF_STATUS_TOKEN", hide_env_values = true)]
    pub token: Option<String>,
    /// How long to wait for the answer.
    #[arg(long, default_value = "5s", value_parser = |s: &str| crate::config::parse_duration(s))]
    pub timeout: std::time::Duration,
    /// Print the raw JSON of /debug/status instead of the table.
    #[arg(long)]
    pub json: bool,
}

/// The settings' environment: the process environment and the env file's variables (when one
/// is given; the process environment wins). Called at start and on every reload.
pub fn environment(env_file: Option<&std::path::Path>) -> Result<crate::config::Vars, String> {
    let file = match env_file {
        None => None,
        Some(path) => {
            let lines = dotenvy::from_path_iter(path)
                .map_err(|e| format!("TIPOFF_ENV_FILE {}: {e}", path.display()))?;
            let mut vars = HashMap::new();
            for item in lines {
                let (k, v) =
                    item.map_err(|e| format!("TIPOFF_ENV_FILE {}: {e}", path.display()))?;
                vars.insert(k, v);
            }
            Some((path.to_path_buf(), vars))
        }
    };
    Ok(crate::config::Vars {
        env: std::env::vars().collect(),
        file,
    })
}

/// Reads `.env` (outside production), the env file, the TOML file and the environment.
fn load(cli: &Cli) -> Result<Config, ExitCode> {
    if std::env::var("TIPOFF_ENV")
        .map(|v| v != "production")
        .unwrap_or(true)
    {
        let _ = dotenvy::dotenv();
    }
    let env = match environment(cli.env_file.as_deref()) {
        Ok(env) => env,
        Err(e) => {
            eprintln!("tipoff: {e}");
            return Err(ExitCode::from(EXIT_CONFIG));
        }
    };
    match Config::load_vars(cli.config.as_deref(), &env) {
        Ok(config) => {
            for name in Config::unknown_env(&env.merged()) {
                eprintln!("warning: {name} is not a tipoff setting and is ignored");
            }
            Ok(config)
        }
        Err(e) => {
            eprintln!("tipoff: {e}");
            Err(ExitCode::from(EXIT_CONFIG))
        }
    }
}

pub fn main() -> ExitCode {
    let cli = Cli::parse();
    if let Some(Command::Settings) = cli.command {
        print!("{}", crate::config::example_toml());
        return ExitCode::SUCCESS;
    }
    let config = match load(&cli) {
        Ok(config) => config,
        Err(code) => return code,
    };
    match cli.command.as_ref().unwrap_or(&Command::Serve) {
        Command::Settings => ExitCode::SUCCESS,
        Command::CheckConfig => {
            print!("{}", config.render());
            if config.server.production() && config.server.admin_token.is_none() {
                eprintln!("note: TIPOFF_ADMIN_TOKEN is not set; admin endpoints will answer 403");
            }
            ExitCode::SUCCESS
        }
        Command::Status(args) => crate::status::run(&config, args),
        Command::Migrate => {
            telemetry::init(&config.server.log, config.server.log_format);
            actix_rt::System::new().block_on(migrate(config))
        }
        Command::Serve => {
            let reload = telemetry::init(&config.server.log, config.server.log_format);
            actix_rt::System::new().block_on(serve(cli, config, reload))
        }
    }
}

async fn migrate(config: Config) -> ExitCode {
    let result = async {
        let store = tipoff_actors::Store::connect(config.server.database_url(), &config.db).await?;
        store.migrate().await?;
        store.reconcile_catalog().await?;
        store.close().await;
        Ok::<_, tipoff_actors::StoreError>(())
    }
    .await;
    match result {
        Ok(()) => {
            tracing::info!("migrations applied");
            ExitCode::SUCCESS
        }
        Err(e) => {
            tracing::error!(error = %e, "migrations failed");
            eprintln!("tipoff: database: {e}");
            ExitCode::FAILURE
        }
    }
}

async fn serve(cli: Cli, config: Config, reload: telemetry::LogReload) -> ExitCode {
    let notifier = Arc::new(Notifier::from_env());
    let app = match Application::build(config, notifier.clone()).await {
        Ok(app) => app,
        Err(e) => {
            tracing::error!(error = %e, "startup failed");
            eprintln!("tipoff: {e}");
            return ExitCode::FAILURE;
        }
    };
    let reloader = actix_rt::spawn(signals::reload_on_hangup(
        cli.config.clone(),
        cli.env_file.clone(),
        reload,
        notifier,
        app.reloader(),
    ));
    let exit = app.run_until_stopped(signals::shutdown_signal()).await;
    reloader.abort();
    if let crate::startup::Exit::Fatal(reason) = &exit {
        eprintln!("tipoff: {reason}");
    }
    ExitCode::from(exit.code())
}
