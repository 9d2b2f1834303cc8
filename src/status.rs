//! `tipoff status`: asks a running daemon (`GET /debug/status` with the admin token) and prints
//! its services as a table.
//!
//! Exit codes: 0 ready; 1 answering but not ready (starting, stopping, database down); 2 not
//! reachable, or the request was refused (no or wrong token).

use std::process::ExitCode;

use chrono::{DateTime, Utc};
use serde_json::Value;

use crate::cli::StatusArgs;
use crate::config::Config;

/// The base URL the configured listen address answers on (a wildcard address is asked on
/// loopback).
pub fn default_url(config: &Config) -> String {
    let mut addr = config.server.listen;
    if addr.ip().is_unspecified() {
        addr.set_ip(if addr.is_ipv4() {
            std::net::Ipv4Addr::LOCALHOST.into()
        } else {
            std::net::Ipv6Addr::LOCALHOST.into()
        });
    }
    format!("http://{addr}")
}

pub fn run(config: &Config, args: &StatusArgs) -> ExitCode {
    let url = args
        .url
        .clone()
        .unwrap_or_else(|| default_url(config))
        .trim_end_matches('/')
        .to_string();
    let token = args.token.clone().or_else(|| {
        config
            .server
            .admin_token
            .as_ref()
            .map(|t| t.expose().to_string())
    });
    let Some(token) = token else {
        eprintln!("tipoff status: no admin token: set TIPOFF_ADMIN_TOKEN or pass --token");
        return ExitCode::from(2);
    };
    let client = match reqwest::blocking::Client::builder()
        .timeout(args.timeout)
        .build()
    {
        Ok(c) => c,
        Err(e) => {
            eprintln!("tipoff status: {e}");
            return ExitCode::from(2);
        }
    };
    let res = match client
        .get(format!("{url}/debug/status"))
        .bearer_auth(&token)
        .send()
    {
        Ok(res) => res,
        Err(e) => {
            let why = if e.is_timeout() {
                "timed out"
            } else {
                "connection failed"
            };
            eprintln!("tipoff status: the daemon at {url} is unreachable ({why})");
            return ExitCode::from(2);
        }
    };
    let code = res.status();
    let body: Value = res.json().unwrap_or(Value::Null);
    if !code.is_success() {
        let message = body["error"]["message"].as_str().unwrap_or("no details");
        eprintln!("tipoff status: {url} answered {}: {message}", code.as_u16());
        return ExitCode::from(2);
    }
    if args.json {
        println!(
            "{}",
            serde_json::to_string_pretty(&body).unwrap_or_default()
        );
    } else {
        print!("{}", render(&body, Utc::now()));
    }
    if body["ready"].as_bool() == Some(true) {
        ExitCode::SUCCESS
    } else {
        eprintln!("tipoff status: the daemon is not ready");
        ExitCode::from(1)
    }
}

fn ago(at: &Value, now: DateTime<Utc>) -> String {
    let Some(at) = at
        .as_str()
        .and_then(|s| DateTime::parse_from_rfc3339(s).ok())
    else {
        return "-".into();
    };
    let secs = (now - at.with_timezone(&Utc)).num_seconds();
    if secs >= 0 {
        format!("{} ago", short(secs))
    } else {
        format!("in {}", short(-secs))
    }
}

fn short(secs: i64) -> String {
    match secs {
        s if s < 120 => format!("{s}s"),
        s if s < 7200 => format!("{}m", s / 60),
        s if s < 172_800 => format!("{}h", s / 3600),
        s => format!("{}d", s / 86400),
    }
}

/// The status document as a table, one service per line.
pub fn render(status: &Value, now: DateTime<Utc>) -> String {
    let mut out = format!(
        "tipoff {} ({}), instance {}, {} database{}, {}\n\n",
        status["version"].as_str().unwrap_or("?"),
        status["environment"].as_str().unwrap_or("?"),
        status["instance_id"].as_str().unwrap_or("?"),
        status["database"]["backend"].as_str().unwrap_or("?"),
        if status["database"]["healthy"].as_bool() == Some(true) {
            ""
        } else {
            " (UNAVAILABLE)"
        },
        if status["ready"].as_bool() == Some(true) {
            "ready"
        } else {
            "NOT READY"
        },
    );
    let header = [
        "SERVICE",
        "STATE",
        "SINCE",
        "RESTARTS",
        "LAST SUCCESS",
        "NEXT RUN",
        "INTERVAL",
        "NOTE",
    ];
    let mut rows: Vec<Vec<String>> = vec![header.iter().map(|s| s.to_string()).collect()];
    for s in status["services"].as_array().into_iter().flatten() {
        let note = s["skip_reason"]
            .as_str()
            .map(str::to_string)
            .or_else(|| {
                s["last_error"]["message"]
                    .as_str()
                    .map(|m| format!("last error: {m}"))
            })
            .unwrap_or_default();
        rows.push(vec![
            s["name"].as_str().unwrap_or("?").to_string(),
            s["state"].as_str().unwrap_or("?").to_string(),
            ago(&s["since"], now),
            s["restarts"].to_string(),
            ago(&s["last_success_at"], now),
            ago(&s["next_run_at"], now),
            s["interval_reason"].as_str().unwrap_or("-").to_string(),
            note.chars().take(80).collect(),
        ]);
    }
    let widths: Vec<usize> = (0..header.len())
        .map(|i| rows.iter().map(|r| r[i].chars().count()).max().unwrap_or(0))
        .collect();
    for row in rows {
        let line: Vec<String> = row
            .iter()
            .zip(&widths)
            .map(|(cell, w)| format!("{cell:<w$}"))
            .collect();
        out.push_str(line.join("  ").trim_end());
        out.push('\n');
    }
    out
}
