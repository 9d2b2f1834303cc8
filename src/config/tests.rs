//! Loading, layering, provenance and the documentation of the settings.

use super::*;
use std::time::Duration;

fn env(pairs: &[(&str, &str)]) -> HashMap<String, String> {
    pairs
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

#[test]
fn defaults_give_a_sqlite_database_under_the_data_directory() {
    let c = Config::load(None, &env(&[])).unwrap();
    assert_eq!(c.server.listen.to_string(), "127.0.0.1:8080");
    assert_eq!(c.server.database_url(), "sqlite://./data/tipoff.db");
    assert!(c.espn.leagues.is_empty());
    assert!(c.server.admin_token.is_none());
    assert_eq!(c.server.shutdown_timeout, Duration::from_secs(25));
}

#[test]
fn state_directory_is_the_default_data_directory_under_systemd() {
    let c = Config::load(None, &env(&[("STATE_DIRECTORY", "/var/lib/tipoff:/other")])).unwrap();
    assert_eq!(
        c.server.database_url(),
        "sqlite:///var/lib/tipoff/tipoff.db"
    );
}

#[test]
fn environment_beats_file_beats_defaults() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("tipoff.toml");
    std::fs::write(
        &path,
        "listen = \"127.0.0.1:9000\"\nleagues = [\"nba\", \"mlb\"]\nlog = \"debug\"\n",
    )
    .unwrap();
    let c = Config::load(Some(&path), &env(&[("TIPOFF_LOG", "warn")])).unwrap();
    assert_eq!(c.server.listen.port(), 9000);
    assert_eq!(c.espn.leagues, vec!["nba", "mlb"]);
    assert_eq!(c.server.log, "warn");
}

#[test]
fn watcher_starts_are_a_slot_or_a_signature_per_configured_token() {
    let tokens = "usdc:EPjFWdd5AufqSSqeM2qN1xzybapC8G4wEGGkZwyTDt1v:6:H51DXRt3ubThhdhNeDMScfkbC5X4AWzYfHaZS3JKEfPh";
    let sig =
        "5VERv8NMvzbJMEkV8xnrLkEaWRtSz9CosKDYjCJjBRnbJLgp8uirBgmQpjKhoR4tjF3ZpRzrFmBV6UjKdiSZkQUW";
    let c = Config::load(
        None,
        &env(&[
            ("TIPOFF_TOKENS", tokens),
            ("TIPOFF_SOLANA_START", "usdc=250000000"),
        ]),
    )
    .unwrap();
    assert_eq!(
        c.watcher.starts,
        vec![(
            "usdc".to_string(),
            tipoff_actors::watcher::StartAt::Slot(250_000_000)
        )]
    );
    let start = format!("usdc={sig}");
    let c = Config::load(
        None,
        &env(&[("TIPOFF_TOKENS", tokens), ("TIPOFF_SOLANA_START", &start)]),
    )
    .unwrap();
    assert_eq!(
        c.watcher.starts[0].1,
        tipoff_actors::watcher::StartAt::Signature(sig.into())
    );
    for (bad, says) in [
        ("usdc=not-a-signature", "neither a slot"),
        ("pump=5", "not a configured token"),
        ("usdc", "name=<signature or slot>"),
        ("usdc=1,usdc=2", "twice"),
    ] {
        let err = Config::load(
            None,
            &env(&[("TIPOFF_TOKENS", tokens), ("TIPOFF_SOLANA_START", bad)]),
        )
        .unwrap_err();
        assert!(err.setting.starts_with("TIPOFF_SOLANA_START"), "{err}");
        assert!(err.message.contains(says), "{bad}: {err}");
    }
}

#[test]
fn a_bad_value_names_the_setting_and_its_source() {
    let err = Config::load(None, &env(&[("TIPOFF_LISTEN", "nowhere")])).unwrap_err();
    assert_eq!(err.setting, "TIPOFF_LISTEN (environment)");
    let err = Config::load(None, &env(&[("TIPOFF_LEAGUES", "nba,xfl")])).unwrap_err();
    assert!(
        err.to_string().contains("TIPOFF_LEAGUES") && err.message.contains("xfl"),
        "{err}"
    );
    let err = Config::load(None, &env(&[("TIPOFF_SHUTDOWN_TIMEOUT", "soon")])).unwrap_err();
    assert!(err.setting.starts_with("TIPOFF_SHUTDOWN_TIMEOUT"), "{err}");
}

#[test]
fn an_unknown_file_key_is_an_error_naming_it() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("tipoff.toml");
    std::fs::write(&path, "lissten = \"x\"\n").unwrap();
    let err = Config::load(Some(&path), &env(&[])).unwrap_err();
    assert!(err.setting.starts_with("lissten"), "{err}");
}

#[test]
fn render_never_shows_secrets() {
    let c = Config::load(
        None,
        &env(&[
            ("TIPOFF_ADMIN_TOKEN", "super-secret-admin-token"),
            (
                "TIPOFF_DATABASE_URL",
                "postgres://tipoff:hunter2hunter2@db.internal:5432/tipoff",
            ),
        ]),
    )
    .unwrap();
    let out = c.render();
    assert!(!out.contains("super-secret-admin-token"), "{out}");
    assert!(!out.contains("hunter2hunter2"), "{out}");
    assert!(
        out.contains("postgres://tipoff:***@db.internal:5432/tipoff"),
        "{out}"
    );
    assert!(out.contains("admin_token = \"[redacted]\""), "{out}");
    assert!(!format!("{c:?}").contains("hunter2hunter2"));
}

#[test]
fn credentials_in_any_configured_url_are_redacted_by_check_config() {
    let c = Config::load(
        None,
        &env(&[
            ("TIPOFF_SOLANA_RPC_URL", "https://rpc.example/?api-key=rpc-secret-1"),
            ("TIPOFF_EMBEDDINGS_URL", "https://user:emb-secret-2@emb.example/v1"),
            ("TIPOFF_EMBEDDINGS_API_KEY", "sk-emb-secret-3"),
            (
                "TIPOFF_WEBHOOK_URLS",
                "https://hooks.example/in?token=hook-secret-4,https://b.example/x?secret=hook-secret-5",
            ),
            ("TIPOFF_WEBHOOK_SECRET", "webhook-signing-secret-6"),
            ("TIPOFF_ESPN_BASE_URL", "https://proxy.example/?key=espn-secret-7"),
        ]),
    )
    .unwrap();
    let out = c.render();
    for secret in [
        "rpc-secret-1",
        "emb-secret-2",
        "sk-emb-secret-3",
        "hook-secret-4",
        "hook-secret-5",
        "webhook-signing-secret-6",
        "espn-secret-7",
    ] {
        assert!(!out.contains(secret), "{secret} in\n{out}");
    }
    assert!(out.contains("https://rpc.example/?api-key=***"), "{out}");
    let err = Config::load(
        None,
        &env(&[(
            "TIPOFF_SOLANA_RPC_URL",
            "ftp://u:rpc-secret-8@x/?token=rpc-secret-9",
        )]),
    )
    .unwrap_err()
    .to_string();
    assert!(
        !err.contains("rpc-secret-8") && !err.contains("rpc-secret-9"),
        "{err}"
    );
}

#[test]
fn poller_settings_have_the_documented_defaults_and_are_validated() {
    let c = Config::load(None, &env(&[])).unwrap();
    assert_eq!(c.poller.schedule_interval, Duration::from_secs(6 * 3600));
    assert_eq!(c.poller.lookahead_days, 7);
    assert_eq!(c.poller.live_interval, Duration::from_secs(60));
    assert_eq!(c.poller.idle_interval, Duration::from_secs(15 * 60));
    assert_eq!(c.poller.live_lead, Duration::from_secs(15 * 60));
    let err = Config::load(None, &env(&[("TIPOFF_ESPN_CONCURRENCY", "0")])).unwrap_err();
    assert!(err.setting.starts_with("TIPOFF_ESPN_CONCURRENCY"), "{err}");
    let err = Config::load(None, &env(&[("TIPOFF_SCHEDULE_LOOKAHEAD_DAYS", "400")])).unwrap_err();
    assert!(
        err.setting.starts_with("TIPOFF_SCHEDULE_LOOKAHEAD_DAYS"),
        "{err}"
    );
    let err = Config::load(None, &env(&[("TIPOFF_SCORE_LIVE_INTERVAL", "0s")])).unwrap_err();
    assert!(
        err.setting.starts_with("TIPOFF_SCORE_LIVE_INTERVAL"),
        "{err}"
    );
}

#[test]
fn the_env_example_lists_every_setting() {
    let example = include_str!("../../deploy/tipoff.env.example");
    for key in Config::settings() {
        let name = key.env_name();
        assert!(
            example.contains(&format!("{name}=")),
            "deploy/tipoff.env.example lacks {name}"
        );
    }
}

/// The TOML example is generated from the settings types: their names, docs and defaults.
#[test]
fn the_toml_example_is_the_settings_types_documentation_and_loads() {
    let example = include_str!("../../deploy/tipoff.toml.example");
    assert!(
        example == example_toml(),
        "deploy/tipoff.toml.example is out of date: cargo run -- settings > deploy/tipoff.toml.example"
    );
    for key in Config::settings() {
        assert!(
            example.contains(&format!("{} = ", key.name)),
            "{}",
            key.name
        );
    }
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("tipoff.toml");
    std::fs::write(&file, example).unwrap();
    let config = Config::load(Some(&file), &HashMap::new()).expect("the example loads");
    assert_eq!(config.server.listen.to_string(), "127.0.0.1:8080");
}

/// The README's settings table names every setting (a row may write `TIPOFF_X_BASE` /
/// `_CAP`: a name starting with `_` continues the row's first name without its last word).
#[test]
fn the_readme_lists_every_setting() {
    let readme = include_str!("../../README.md");
    let mut named = std::collections::HashSet::new();
    for row in readme.lines().filter(|l| l.starts_with("| `TIPOFF_")) {
        let first_cell = row.split(" | ").next().unwrap_or("");
        let names: Vec<&str> = first_cell
            .split('`')
            .skip(1)
            .step_by(2)
            .filter(|n| n.starts_with("TIPOFF_") || n.starts_with('_'))
            .collect();
        let Some(first) = names.first() else { continue };
        let prefix = first.rsplit_once('_').map_or(*first, |(p, _)| p);
        for n in &names {
            named.insert(if n.starts_with('_') {
                format!("{prefix}{n}")
            } else {
                n.to_string()
            });
        }
    }
    for key in Config::settings() {
        let name = key.env_name();
        assert!(
            named.contains(&name),
            "the README's settings table lacks {name}"
        );
    }
}

#[test]
fn the_env_file_sits_between_the_toml_file_and_the_environment_and_is_named() {
    let file_vars = env(&[("TIPOFF_LOG", "debug"), ("TIPOFF_HTTP_WORKERS", "3")]);
    let vars = Vars {
        env: env(&[("TIPOFF_HTTP_WORKERS", "5")]),
        file: Some((PathBuf::from("/run/tipoff/tipoff.env"), file_vars)),
    };
    let c = Config::load_vars(None, &vars).unwrap();
    assert_eq!(c.server.log, "debug", "the env file over the defaults");
    assert_eq!(
        c.server.http_workers, 5,
        "the environment over the env file"
    );
    let out = c.render();
    assert!(
        out.lines()
            .any(|l| l.starts_with("log = ")
                && l.ends_with("# TIPOFF_LOG in /run/tipoff/tipoff.env")),
        "{out}"
    );
    assert!(
        out.lines()
            .any(|l| l.starts_with("http_workers = ") && l.ends_with("# TIPOFF_HTTP_WORKERS")),
        "{out}"
    );
    let bad = Vars {
        env: HashMap::new(),
        file: Some((
            PathBuf::from("/run/tipoff/tipoff.env"),
            env(&[("TIPOFF_LISTEN", "nowhere")]),
        )),
    };
    let err = Config::load_vars(None, &bad).unwrap_err();
    assert_eq!(err.setting, "TIPOFF_LISTEN (in /run/tipoff/tipoff.env)");
}
