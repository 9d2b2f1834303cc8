//! Configuration: defaults < TOML file < env file < environment (`TIPOFF_*`), layered by
//! figment, composed of the services' own settings types ([`tipoff_actors::settings`]) and
//! the daemon's ([`crate::settings`]).
//!
//! Every setting has one name: `listen` in the TOML file is `TIPOFF_LISTEN` in the
//! environment. A bad value's error names the setting and where its value came from; an
//! unknown key in the file is an error. [`Config::render`] prints the effective configuration
//! for `tipoff check-config`, with secrets redacted and each value's source.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use figment::providers::{Format, Serialized, Toml};
use figment::value::{Dict, Map, Value};
use figment::{Figment, Metadata, Profile, Provider};
use schemars::schema::{Schema, SchemaObject};
use tipoff_actors::backfill::BackfillSettings;
use tipoff_actors::cleanup::CleanupSettings;
use tipoff_actors::embeddings::EmbeddingsConfig;
use tipoff_actors::espn::EspnSettings;
use tipoff_actors::events::EventsSettings;
use tipoff_actors::leader::LeaderSettings;
use tipoff_actors::money::MoneySettings;
use tipoff_actors::outbox::OutboxSettings;
use tipoff_actors::poller::PollerSettings;
use tipoff_actors::restart::RestartSettings;
use tipoff_actors::search::SearchSettings;
use tipoff_actors::settings::{Invalid, Secret, Section};
use tipoff_actors::watcher::WatcherSettings;
use tipoff_actors::{StoreOptions, SupervisorSettings};

pub use crate::settings::{Environment, LogFormat, ServerSettings};
pub use tipoff_actors::money::PerToken;
pub use tipoff_actors::settings::duration::parse as parse_duration;

/// Exit code for a bad configuration (sysexits `EX_CONFIG`); systemd does not restart on it.
pub const EXIT_CONFIG: u8 = 78;

/// A setting that could not be used. Displayed as one line that names it.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid setting {setting}: {message}")]
pub struct ConfigError {
    /// The setting as the operator wrote it: `TIPOFF_LISTEN (environment)` or `listen (in FILE)`.
    pub setting: String,
    pub message: String,
}

/// One setting, as its settings type declares it.
#[derive(Debug, Clone)]
pub struct Setting {
    pub name: String,
    pub doc: String,
    pub secret: bool,
    /// The default as the TOML file would write it (`""` when unset).
    pub default: String,
}

impl Setting {
    pub fn env_name(&self) -> String {
        env_name(&self.name)
    }
}

fn env_name(key: &str) -> String {
    format!("TIPOFF_{}", key.to_ascii_uppercase())
}

/// The configuration's sections, each a service's (or the daemon's) settings type: the one
/// list of what can be configured.
macro_rules! sections {
    ($($field:ident: $ty:ty),* $(,)?) => {
        /// The effective configuration.
        #[derive(Clone)]
        pub struct Config {
            $(pub $field: $ty,)*
            /// The layered sources, for `check-config`'s provenance.
            figment: Figment,
        }

        /// The sections (the raw layered values, secrets among them, are left out).
        impl std::fmt::Debug for Config {
            fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.debug_struct("Config")$(.field(stringify!($field), &self.$field))*.finish()
            }
        }

        impl Config {
            fn extract(figment: Figment) -> Result<Config, ConfigError> {
                Ok(Config {
                    $($field: section::<$ty>(&figment)?,)*
                    figment,
                })
            }

            /// Every section's defaults, as one provider.
            fn defaults() -> Figment {
                Figment::new()$(.merge(Serialized::defaults(<$ty>::default())))*
            }

            /// Every setting, in section order (a setting two services read is listed once);
            /// derived from the types once per process.
            pub fn settings() -> &'static [Setting] {
                static ALL: std::sync::OnceLock<Vec<Setting>> = std::sync::OnceLock::new();
                ALL.get_or_init(|| {
                    let mut all = Vec::new();
                    let defaults = Config::defaults();
                    $(describe::<$ty>(&defaults, &mut all);)*
                    all
                })
            }
        }
    };
}

sections! {
    server: ServerSettings,
    db: StoreOptions,
    leader: LeaderSettings,
    supervisor: SupervisorSettings,
    restart: RestartSettings,
    espn: EspnSettings,
    poller: PollerSettings,
    money: MoneySettings,
    watcher: WatcherSettings,
    cleanup: CleanupSettings,
    outbox: OutboxSettings,
    events: EventsSettings,
    embeddings: EmbeddingsConfig,
    search: SearchSettings,
    backfill: BackfillSettings,
}

/// A section from the layered sources, its fields' rules and its own rules applied.
fn section<T: Section>(figment: &Figment) -> Result<T, ConfigError> {
    let value: T = figment.extract_lossy().map_err(|e| {
        let key = e.path.last().cloned().unwrap_or_default();
        ConfigError {
            setting: label(&key, e.metadata.as_ref()),
            message: e.kind.to_string(),
        }
    })?;
    value.check().map_err(|i| invalid(figment, i))?;
    Ok(value)
}

fn invalid(figment: &Figment, i: Invalid) -> ConfigError {
    ConfigError {
        setting: label(i.key, figment.find_metadata(i.key)),
        message: i.message,
    }
}

/// `TIPOFF_X (environment)`, `x (in FILE)` or `x (default)`.
fn label(key: &str, source: Option<&Metadata>) -> String {
    match source {
        Some(m) if m.name == ENVIRONMENT => format!("{} (environment)", env_name(key)),
        Some(m) if m.name == ENV_FILE => match m.source.as_ref().and_then(|s| s.file_path()) {
            Some(path) => format!("{} (in {})", env_name(key), path.display()),
            None => format!("{} (env file)", env_name(key)),
        },
        Some(m) => match m.source.as_ref().and_then(|s| s.file_path()) {
            Some(path) => format!("{key} (in {})", path.display()),
            None => format!("{key} (default)"),
        },
        None => format!("{key} (default)"),
    }
}

fn describe<T: schemars::JsonSchema>(defaults: &Figment, all: &mut Vec<Setting>) {
    let mut settings = schemars::gen::SchemaSettings::default();
    settings.inline_subschemas = true;
    let root = settings.into_generator().into_root_schema_for::<T>();
    let Some(object) = root.schema.object.as_ref() else {
        return;
    };
    for (name, schema) in &object.properties {
        if all.iter().any(|s| s.name == *name) {
            continue;
        }
        let schema = match schema {
            Schema::Object(o) => o.clone(),
            Schema::Bool(_) => SchemaObject::default(),
        };
        // A `Secret` is a string of format `password` (inlined, whatever wraps it).
        let secret =
            serde_json::to_string(&schema).is_ok_and(|j| j.contains(r#""format":"password""#));
        let default = defaults
            .find_value(name)
            .map(|v| text(&v))
            .unwrap_or_default();
        all.push(Setting {
            name: name.clone(),
            doc: schema
                .metadata
                .as_ref()
                .and_then(|m| m.description.clone())
                .unwrap_or_default(),
            secret,
            default: if secret { String::new() } else { default },
        });
    }
}

/// A value as text, as `check-config` shows it (lists comma separated).
fn text(value: &Value) -> String {
    match value {
        Value::String(_, s) => s.clone(),
        Value::Char(_, c) => c.to_string(),
        Value::Bool(_, b) => b.to_string(),
        Value::Num(_, n) => n
            .to_u128()
            .map(|u| u.to_string())
            .or_else(|| n.to_i128().map(|i| i.to_string()))
            .or_else(|| n.to_f64().map(|f| f.to_string()))
            .unwrap_or_default(),
        Value::Empty(..) => String::new(),
        Value::Array(_, items) => items.iter().map(text).collect::<Vec<_>>().join(","),
        Value::Dict(..) => String::new(),
    }
}

const ENVIRONMENT: &str = "environment";
const ENV_FILE: &str = "env file";

/// The variables settings are read from: the process environment, and an env file's (read by
/// tipoff itself; the process environment wins).
#[derive(Debug, Clone, Default)]
pub struct Vars {
    pub env: HashMap<String, String>,
    pub file: Option<(PathBuf, HashMap<String, String>)>,
}

impl Vars {
    /// Both, the environment over the file.
    pub fn merged(&self) -> HashMap<String, String> {
        let mut all = self
            .file
            .as_ref()
            .map(|(_, v)| v.clone())
            .unwrap_or_default();
        all.extend(self.env.clone());
        all
    }
}

/// The `TIPOFF_*` variables that name a setting, of the environment or of an env file.
struct EnvVars(Dict, Option<PathBuf>);

impl EnvVars {
    fn of(vars: &HashMap<String, String>, settings: &[Setting], file: Option<&Path>) -> Self {
        let dict = settings
            .iter()
            .filter_map(|s| {
                Some((
                    s.name.clone(),
                    Value::from(vars.get(&s.env_name())?.clone()),
                ))
            })
            .collect();
        EnvVars(dict, file.map(Path::to_path_buf))
    }
}

impl Provider for EnvVars {
    fn metadata(&self) -> Metadata {
        let named = match &self.1 {
            None => Metadata::named(ENVIRONMENT),
            Some(path) => Metadata::from(ENV_FILE, path.as_path()),
        };
        named.interpolater(|_: &Profile, keys: &[&str]| env_name(&keys.join(".")))
    }

    fn data(&self) -> Result<Map<Profile, Dict>, figment::Error> {
        Ok(Profile::Default.collect(self.0.clone()))
    }
}

impl Config {
    /// Reads the TOML file (when given) and the `TIPOFF_*` variables of `env`.
    pub fn load(file: Option<&Path>, env: &HashMap<String, String>) -> Result<Config, ConfigError> {
        let vars = Vars {
            env: env.clone(),
            file: None,
        };
        Config::load_vars(file, &vars)
    }

    /// Defaults < the TOML file (when given) < the env file's variables < the environment's.
    pub fn load_vars(file: Option<&Path>, vars: &Vars) -> Result<Config, ConfigError> {
        let settings = Config::settings();
        let mut figment = Config::defaults();
        if let Some(path) = file {
            check_file(path, settings)?;
            figment = figment.merge(Toml::file_exact(path));
        }
        if let Some((path, file_vars)) = &vars.file {
            figment = figment.merge(EnvVars::of(file_vars, settings, Some(path)));
        }
        figment = figment.merge(EnvVars::of(&vars.env, settings, None));
        let mut config = Config::extract(figment)?;
        config.compose(&vars.merged())?;
        Ok(config)
    }

    /// What one section derives from another, and the rules across sections.
    fn compose(&mut self, env: &HashMap<String, String>) -> Result<(), ConfigError> {
        let data_dir = self.server.data_dir.clone().unwrap_or_else(|| {
            env.get("STATE_DIRECTORY")
                .and_then(|s| s.split(':').next())
                .filter(|s| !s.is_empty())
                .map_or_else(|| PathBuf::from("./data"), PathBuf::from)
        });
        if self.server.database_url.is_none() {
            let url = format!("sqlite://{}", data_dir.join("tipoff.db").display());
            self.server.database_url = Some(Secret::new(url));
        }
        self.server.data_dir = Some(data_dir);
        self.supervisor.restart = self.restart.clone();
        self.db.idle_in_transaction_timeout = self.leader.ttl;
        self.cleanup.webhooks_enabled = !self.outbox.urls.is_empty();
        if let Some((name, _)) = self
            .watcher
            .starts
            .iter()
            .find(|(n, _)| !self.money.has_token(n))
        {
            let message = format!("`{name}` is not a configured token (TIPOFF_TOKENS)");
            return Err(invalid(
                &self.figment,
                Invalid::new("solana_start", message),
            ));
        }
        Ok(())
    }

    /// The data directory (the default SQLite database lives there).
    pub fn data_dir(&self) -> &Path {
        self.server
            .data_dir
            .as_deref()
            .unwrap_or(Path::new("./data"))
    }

    /// `TIPOFF_*` variables in `env` that name no setting (likely typos), for a warning.
    pub fn unknown_env(env: &HashMap<String, String>) -> Vec<String> {
        let known: Vec<String> = Config::settings().iter().map(Setting::env_name).collect();
        let mut unknown: Vec<String> = env
            .keys()
            .filter(|k| {
                k.starts_with("TIPOFF_")
                    && *k != "TIPOFF_CONFIG"
                    && *k != "TIPOFF_ENV_FILE"
                    && !k.starts_with("TIPOFF_TEST_")
            })
            .filter(|k| !known.contains(k))
            .cloned()
            .collect();
        unknown.sort();
        unknown
    }

    /// The effective configuration as TOML, secrets redacted, each line saying where it came from.
    pub fn render(&self) -> String {
        let mut out = String::from("# tipoff effective configuration (environment > env file > TOML file > defaults); secrets are redacted\n");
        for setting in Config::settings() {
            let name = setting.name.as_str();
            let value = self
                .figment
                .find_value(name)
                .map(|v| text(&v))
                .unwrap_or_default();
            let shown = match name {
                "database_url" => redact_url(self.server.database_url()),
                "data_dir" => self.data_dir().display().to_string(),
                _ if setting.secret && !value.trim().is_empty() => "[redacted]".to_string(),
                _ if name.ends_with("_url") || name.ends_with("_urls") => value
                    .split(',')
                    .map(|u| redact_url(u.trim()))
                    .collect::<Vec<_>>()
                    .join(","),
                _ => value,
            };
            let source = self.figment.find_metadata(name);
            let origin = match source {
                Some(m) if m.name == ENVIRONMENT => setting.env_name(),
                Some(m) if m.name == ENV_FILE => format!(
                    "{} in {}",
                    setting.env_name(),
                    m.source
                        .as_ref()
                        .and_then(|s| s.file_path())
                        .map_or_else(String::new, |p| p.display().to_string())
                ),
                Some(m) if m.source.as_ref().and_then(|s| s.file_path()).is_some() => m
                    .source
                    .as_ref()
                    .and_then(|s| s.file_path())
                    .map(|p| p.display().to_string())
                    .unwrap_or_default(),
                _ if name == "database_url" || name == "data_dir" => "default (computed)".into(),
                _ => "default".into(),
            };
            let quoted = toml::Value::String(shown).to_string();
            out.push_str(&format!("{name} = {quoted:<40} # {origin}\n"));
        }
        out
    }
}

/// Every setting with its documentation and default, as a TOML file
/// (`deploy/tipoff.toml.example` is this text; `tipoff settings` prints it).
pub fn example_toml() -> String {
    let mut out = String::from(
        "# tipoff.toml: every setting with its documentation and default (`tipoff settings` prints\n\
         # this file). Point TIPOFF_CONFIG (or --config) at a copy. The env file and environment\n\
         # variables (TIPOFF_<NAME>) override this file; the file overrides the defaults. Keys left\n\
         # commented out have no default or a computed one. Durations: 250ms, 5s, 5m, 6h, 1d.\n\
         # Secrets are better kept in the env file, readable by root only.\n",
    );
    for setting in Config::settings() {
        out.push('\n');
        let mut line = String::from("#");
        for word in setting.doc.split_whitespace() {
            if line.len() + word.len() > 95 {
                out.push_str(&line);
                out.push('\n');
                line = String::from("#");
            }
            line.push(' ');
            line.push_str(word);
        }
        if line.len() > 1 {
            out.push_str(&line);
            out.push('\n');
        }
        let value = toml::Value::String(setting.default.clone()).to_string();
        let comment = if setting.default.is_empty() { "# " } else { "" };
        out.push_str(&format!("{comment}{} = {value}\n", setting.name));
    }
    out
}

/// A URL with its user-info password and secret query parameters replaced by `***`.
pub fn redact_url(url: &str) -> String {
    tipoff_actors::redact::url(url)
}

/// The file exists, is TOML, and names only settings.
fn check_file(path: &Path, settings: &[Setting]) -> Result<(), ConfigError> {
    let label = format!("file {}", path.display());
    let text = std::fs::read_to_string(path).map_err(|e| ConfigError {
        setting: format!("TIPOFF_CONFIG / --config ({label})"),
        message: format!("cannot read it: {e}"),
    })?;
    let table: toml::Table = text.parse().map_err(|e: toml::de::Error| ConfigError {
        setting: label.clone(),
        message: format!("not valid TOML: {}", e.message()),
    })?;
    let mut unknown: Vec<&String> = table
        .keys()
        .filter(|k| !settings.iter().any(|s| s.name == **k))
        .collect();
    unknown.sort();
    match unknown.first() {
        None => Ok(()),
        Some(first) => Err(ConfigError {
            setting: format!("{first} (in {})", path.display()),
            message: format!(
                "unknown setting{} {}",
                if unknown.len() > 1 { "s" } else { "" },
                unknown
                    .iter()
                    .map(|k| format!("`{k}`"))
                    .collect::<Vec<_>>()
                    .join(", ")
            ),
        }),
    }
}

#[cfg(test)]
mod tests;
