//! ESPN's public scoreboard API: the client and the parser.
//!
//! `GET {base}/apis/site/v2/sports/{sport}/{league}/scoreboard?dates=YYYYMMDD`. The parser
//! follows ESPN's real format (see the fixtures): minute-precision dates without seconds,
//! scores as strings, `winner` only on finished games, `season`/`day` sometimes absent, neutral
//! sites, non-league opponents. Game states come from `status.type.name`, falling back to
//! `status.type.state`. A body that does not parse is an error for that date, never a panic.

use std::time::Duration;

use crate::settings::{self, NonZero};
use chrono::{DateTime, NaiveDate, NaiveDateTime, Utc};
use serde::Deserialize;

pub use crate::domain::{GameState, ScoreboardGame, Side};

/// A game's state from ESPN's `status.type.name`, else its coarse `state` (`pre`/`in`/`post`)
/// and `completed`.
pub fn game_state(name: &str, state: &str, completed: bool) -> GameState {
    match name {
        "STATUS_SCHEDULED" | "STATUS_TBD" => GameState::Scheduled,
        "STATUS_FINAL" | "STATUS_FINAL_OT" | "STATUS_FULL_TIME" | "STATUS_FINAL_PEN"
        | "STATUS_FINAL_AET" => GameState::Final,
        "STATUS_POSTPONED" => GameState::Postponed,
        "STATUS_CANCELED" | "STATUS_CANCELLED" | "STATUS_FORFEIT" => GameState::Canceled,
        "STATUS_SUSPENDED" => GameState::Suspended,
        "STATUS_DELAYED" | "STATUS_RAIN_DELAY" => GameState::Delayed,
        "STATUS_IN_PROGRESS" | "STATUS_HALFTIME" | "STATUS_END_PERIOD" | "STATUS_END_OF_PERIOD" => {
            GameState::Live
        }
        _ => match (state, completed) {
            ("post", true) => GameState::Final,
            ("post", false) => GameState::Postponed,
            ("in", _) => GameState::Live,
            _ => GameState::Scheduled,
        },
    }
}

#[derive(Debug, thiserror::Error, PartialEq)]
pub enum EspnError {
    #[error("ESPN answered HTTP {0}")]
    Status(u16),
    #[error("ESPN is rate limiting (HTTP {status}); retry after {retry_after:?}")]
    RateLimited {
        status: u16,
        retry_after: Option<Duration>,
    },
    #[error("ESPN request failed: {0}")]
    Transport(String),
    #[error("ESPN request timed out")]
    Timeout,
    #[error("malformed scoreboard: {0}")]
    Malformed(String),
}

#[derive(Deserialize)]
struct RawBoard {
    events: Vec<RawEvent>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct RawEvent {
    id: String,
    date: String,
    #[serde(default)]
    name: String,
    #[serde(default)]
    short_name: String,
    season: Option<RawSeason>,
    status: RawStatus,
    competitions: Vec<RawCompetition>,
}

#[derive(Deserialize)]
struct RawSeason {
    year: Option<i32>,
    #[serde(rename = "type")]
    kind: Option<i32>,
}

#[derive(Deserialize)]
struct RawStatus {
    #[serde(rename = "type")]
    kind: RawStatusType,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct RawStatusType {
    #[serde(default)]
    name: String,
    #[serde(default)]
    state: String,
    #[serde(default)]
    completed: bool,
    #[serde(default)]
    short_detail: Option<String>,
    #[serde(default)]
    detail: Option<String>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct RawCompetition {
    #[serde(default)]
    neutral_site: bool,
    competitors: Vec<RawCompetitor>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct RawCompetitor {
    home_away: String,
    #[serde(default)]
    score: Option<serde_json::Value>,
    #[serde(default)]
    winner: Option<bool>,
    team: RawTeam,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct RawTeam {
    #[serde(default)]
    abbreviation: Option<String>,
    #[serde(default)]
    display_name: Option<String>,
    #[serde(default)]
    name: Option<String>,
}

/// ESPN dates: `2022-09-17T17:10Z` (minutes, no seconds), with seconds, or full RFC 3339.
pub fn parse_espn_date(text: &str) -> Option<DateTime<Utc>> {
    for format in ["%Y-%m-%dT%H:%MZ", "%Y-%m-%dT%H:%M:%SZ"] {
        if let Ok(naive) = NaiveDateTime::parse_from_str(text, format) {
            return Some(naive.and_utc());
        }
    }
    DateTime::parse_from_rfc3339(text)
        .ok()
        .map(|d| d.with_timezone(&Utc))
}

fn score(value: &Option<serde_json::Value>) -> Option<i64> {
    match value {
        Some(serde_json::Value::String(s)) => s.trim().parse().ok(),
        Some(serde_json::Value::Number(n)) => n.as_i64().or_else(|| n.as_f64().map(|f| f as i64)),
        Some(serde_json::Value::Object(o)) => {
            o.get("value").and_then(|v| v.as_f64()).map(|f| f as i64)
        }
        _ => None,
    }
}

fn side(c: &RawCompetitor) -> Side {
    let abbreviation = c.team.abbreviation.clone().unwrap_or_default();
    let name = c
        .team
        .display_name
        .clone()
        .or_else(|| c.team.name.clone())
        .unwrap_or_else(|| abbreviation.clone());
    Side {
        abbreviation,
        name,
        score: score(&c.score),
        winner: c.winner,
    }
}

/// Parses one scoreboard body.
pub fn parse_scoreboard(body: &[u8]) -> Result<Vec<ScoreboardGame>, EspnError> {
    let body = body.strip_prefix(b"\xEF\xBB\xBF").unwrap_or(body);
    let board: RawBoard =
        serde_json::from_slice(body).map_err(|e| EspnError::Malformed(e.to_string()))?;
    board
        .events
        .into_iter()
        .map(|e| {
            let starts_at = parse_espn_date(&e.date).ok_or_else(|| {
                EspnError::Malformed(format!("event {}: bad date `{}`", e.id, e.date))
            })?;
            let comp = e
                .competitions
                .first()
                .ok_or_else(|| EspnError::Malformed(format!("event {}: no competition", e.id)))?;
            let find = |which: &str| {
                comp.competitors
                    .iter()
                    .find(|c| c.home_away == which)
                    .map(side)
                    .ok_or_else(|| {
                        EspnError::Malformed(format!("event {}: no {which} competitor", e.id))
                    })
            };
            let home = find("home")?;
            let away = find("away")?;
            let t = &e.status.kind;
            Ok(ScoreboardGame {
                state: game_state(&t.name, &t.state, t.completed),
                status_detail: t
                    .short_detail
                    .clone()
                    .or_else(|| t.detail.clone())
                    .unwrap_or_default(),
                external_id: e.id,
                name: e.name,
                short_name: e.short_name,
                starts_at,
                neutral_site: comp.neutral_site,
                season_year: e.season.as_ref().and_then(|s| s.year),
                season_type: e.season.as_ref().and_then(|s| s.kind),
                home,
                away,
            })
        })
        .collect()
}

/// One shared, pooled HTTP client for ESPN, with connect and request timeouts.
#[derive(Debug, Clone)]
pub struct EspnClient {
    http: reqwest::Client,
    base_url: String,
}

/// Which leagues are polled, and how ESPN is reached (one client shared by every poller).
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize, schemars::JsonSchema)]
#[serde(default)]
pub struct EspnSettings {
    /// Enabled leagues (catalog keys, e.g. `nba,nfl`), one poller each, in the order given.
    #[serde(deserialize_with = "leagues")]
    pub leagues: Vec<String>,
    /// ESPN's base URL (a mock or a proxy in tests).
    #[serde(deserialize_with = "settings::required_http_url")]
    pub espn_base_url: String,
    /// ESPN request timeout (the whole request).
    #[serde(with = "NonZero")]
    pub espn_timeout: Duration,
    #[serde(with = "NonZero")]
    pub espn_connect_timeout: Duration,
}

impl Default for EspnSettings {
    fn default() -> Self {
        EspnSettings {
            leagues: Vec::new(),
            espn_base_url: "https://site.api.espn.com".into(),
            espn_timeout: Duration::from_secs(10),
            espn_connect_timeout: Duration::from_secs(5),
        }
    }
}

impl settings::Section for EspnSettings {}

/// League keys, lowercased, each in the catalog, each once.
fn leagues<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Vec<String>, D::Error> {
    let mut leagues = Vec::new();
    for league in settings::list(d)? {
        let league = league.to_ascii_lowercase();
        crate::store::catalog_league(&league).map_err(serde::de::Error::custom)?;
        if !leagues.contains(&league) {
            leagues.push(league);
        }
    }
    Ok(leagues)
}

impl EspnClient {
    /// `instance` names this replica in the `User-Agent` (see [`crate::user_agent`]).
    pub fn new(
        base_url: &str,
        connect_timeout: Duration,
        request_timeout: Duration,
        instance: &str,
    ) -> Result<Self, EspnError> {
        let http = reqwest::Client::builder()
            .connect_timeout(connect_timeout)
            .timeout(request_timeout)
            .pool_max_idle_per_host(8)
            .user_agent(crate::user_agent(instance))
            .build()
            .map_err(|e| EspnError::Transport(e.to_string()))?;
        Ok(EspnClient {
            http,
            base_url: base_url.trim_end_matches('/').to_string(),
        })
    }

    pub fn scoreboard_url(&self, espn_path: &str, date: NaiveDate) -> String {
        format!(
            "{}/apis/site/v2/sports/{espn_path}/scoreboard?dates={}",
            self.base_url,
            date.format("%Y%m%d")
        )
    }

    /// One request for one league and date.
    pub async fn scoreboard(
        &self,
        espn_path: &str,
        date: NaiveDate,
    ) -> Result<Vec<ScoreboardGame>, EspnError> {
        let res = self
            .http
            .get(self.scoreboard_url(espn_path, date))
            .send()
            .await
            .map_err(|e| {
                if e.is_timeout() {
                    EspnError::Timeout
                } else {
                    EspnError::Transport(e.without_url().to_string())
                }
            })?;
        let status = res.status().as_u16();
        if status == 429 || status == 503 {
            let retry_after = crate::upstream::retry_after(&res);
            return Err(EspnError::RateLimited {
                status,
                retry_after,
            });
        }
        if !res.status().is_success() {
            return Err(EspnError::Status(status));
        }
        let body = res.bytes().await.map_err(|e| {
            if e.is_timeout() {
                EspnError::Timeout
            } else {
                EspnError::Transport(e.without_url().to_string())
            }
        })?;
        parse_scoreboard(&body)
    }

    /// [`scoreboard`](Self::scoreboard) retried up to `attempts` times: after a 429/503 it
    /// waits what `Retry-After` says (capped at `max_wait`), after other failures a short
    /// doubling delay. A malformed body is not retried.
    pub async fn scoreboard_with_retry(
        &self,
        espn_path: &str,
        date: NaiveDate,
        attempts: u32,
        max_wait: Duration,
    ) -> Result<Vec<ScoreboardGame>, EspnError> {
        let mut delay = Duration::from_millis(200);
        let mut attempt = 1;
        loop {
            match self.scoreboard(espn_path, date).await {
                Ok(games) => return Ok(games),
                Err(e @ EspnError::Malformed(_)) => return Err(e),
                Err(e) if attempt >= attempts => return Err(e),
                Err(EspnError::RateLimited { retry_after, .. }) => {
                    tokio::time::sleep(retry_after.unwrap_or(delay).min(max_wait)).await;
                }
                Err(_) => tokio::time::sleep(delay.min(max_wait)).await,
            }
            delay *= 2;
            attempt += 1;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    fn fixture(name: &str) -> Vec<u8> {
        let dir = std::env::var("TIPOFF_FIXTURES_DIR").unwrap_or_else(|_| {
            concat!(env!("CARGO_MANIFEST_DIR"), "/../../shared/fixtures").to_string()
        });
        std::fs::read(format!("{dir}/espn/{name}"))
            .unwrap_or_else(|e| panic!("fixture {name} in {dir}: {e}"))
    }

    fn counts(games: &[ScoreboardGame]) -> HashMap<GameState, usize> {
        let mut m = HashMap::new();
        for g in games {
            *m.entry(g.state).or_default() += 1;
        }
        m
    }

    #[test]
    fn every_real_fixture_parses_with_the_right_states() {
        use GameState::*;
        let cases: &[(&str, &[(GameState, usize)])] = &[
            (
                "mlb-scoreboard-20220917.json",
                &[(Final, 3), (Live, 3), (Scheduled, 11)],
            ),
            ("mlb-scoreboard-20250902.json", &[(Final, 13), (Live, 1)]),
            (
                "mlb-scoreboard-20250927.json",
                &[(Final, 1), (Live, 3), (Delayed, 1), (Scheduled, 10)],
            ),
            ("mlb-scoreboard-20250928.json", &[(Scheduled, 15)]),
            ("nba-scoreboard-20240129.json", &[(Final, 12)]),
            ("nba-scoreboard-20251002.json", &[(Scheduled, 2)]),
            (
                "nba-scoreboard-20260224.json",
                &[(Live, 1), (Scheduled, 10)],
            ),
            ("nba-scoreboard-20260218-empty.json", &[]),
        ];
        for (file, expected) in cases {
            let games = parse_scoreboard(&fixture(file)).unwrap_or_else(|e| panic!("{file}: {e}"));
            let expected: HashMap<GameState, usize> = expected.iter().copied().collect();
            assert_eq!(counts(&games), expected, "{file}");
            for g in &games {
                assert!(
                    !g.home.abbreviation.is_empty() && !g.away.abbreviation.is_empty(),
                    "{file}: {g:?}"
                );
                assert!(!g.external_id.is_empty());
            }
        }
    }

    #[test]
    fn final_games_carry_scores_and_the_winner_flag() {
        let games = parse_scoreboard(&fixture("nba-scoreboard-20240129.json")).unwrap();
        for g in &games {
            assert_eq!(g.state, GameState::Final);
            let (h, a) = (g.home.score.unwrap(), g.away.score.unwrap());
            assert_ne!(h, a);
            assert_eq!(g.home.winner, Some(h > a), "{g:?}");
            assert_eq!(g.away.winner, Some(a > h), "{g:?}");
        }
        let scheduled = parse_scoreboard(&fixture("mlb-scoreboard-20250928.json")).unwrap();
        assert!(scheduled
            .iter()
            .all(|g| g.home.winner.is_none() && g.away.winner.is_none()));
    }

    #[test]
    fn minute_precision_dates_parse_as_utc() {
        let games = parse_scoreboard(&fixture("mlb-scoreboard-20220917.json")).unwrap();
        assert_eq!(games[0].starts_at.to_rfc3339(), "2022-09-17T17:10:00+00:00");
        assert_eq!(
            parse_espn_date("2024-01-30T00:00Z").unwrap().to_rfc3339(),
            "2024-01-30T00:00:00+00:00"
        );
        assert_eq!(
            parse_espn_date("2024-01-30T00:00:30Z")
                .unwrap()
                .to_rfc3339(),
            "2024-01-30T00:00:30+00:00"
        );
        assert!(parse_espn_date("yesterday").is_none());
    }

    #[test]
    fn the_rain_delay_maps_to_delayed() {
        let games = parse_scoreboard(&fixture("mlb-scoreboard-20250927.json")).unwrap();
        let delayed: Vec<_> = games
            .iter()
            .filter(|g| g.state == GameState::Delayed)
            .collect();
        assert_eq!(delayed.len(), 1);
        assert_eq!(delayed[0].short_name, "CHW @ WSH");
        assert!(
            delayed[0].status_detail.contains("Rain Delay"),
            "{}",
            delayed[0].status_detail
        );
    }

    #[test]
    fn neutral_site_games_and_non_league_opponents_parse() {
        let games = parse_scoreboard(&fixture("nba-scoreboard-20251002.json")).unwrap();
        assert!(games.iter().all(|g| g.neutral_site));
        let mel = games
            .iter()
            .find(|g| g.short_name == "MEL VS NO")
            .expect("Melbourne game");
        assert!(mel.home.abbreviation == "MEL" || mel.away.abbreviation == "MEL");
        assert_eq!(mel.season_type, Some(1), "preseason");
        assert_eq!(mel.season_year, Some(2026));
    }

    #[test]
    fn espn_status_names_map_to_game_states() {
        use GameState::*;
        assert_eq!(game_state("STATUS_POSTPONED", "post", false), Postponed);
        assert_eq!(game_state("STATUS_CANCELED", "post", false), Canceled);
        assert_eq!(game_state("STATUS_SUSPENDED", "in", false), Suspended);
        assert_eq!(game_state("STATUS_DELAYED", "pre", false), Delayed);
        assert_eq!(game_state("STATUS_HALFTIME", "in", false), Live);
        assert_eq!(game_state("STATUS_SOMETHING_NEW", "post", true), Final);
        assert_eq!(game_state("STATUS_SOMETHING_NEW", "pre", false), Scheduled);
    }

    #[test]
    fn a_malformed_body_is_an_error_not_a_panic() {
        assert!(matches!(
            parse_scoreboard(b"<html>oops</html>"),
            Err(EspnError::Malformed(_))
        ));
        assert!(matches!(
            parse_scoreboard(b"{\"events\": [{\"id\": \"1\"}]}"),
            Err(EspnError::Malformed(_))
        ));
        let truncated = &fixture("nba-scoreboard-20240129.json")[..5000];
        assert!(matches!(
            parse_scoreboard(truncated),
            Err(EspnError::Malformed(_))
        ));
        assert!(matches!(
            parse_scoreboard(br#"{"events":[{"id":"1","date":"2024-13-45T99:00Z","status":{"type":{}},"competitions":[]}]}"#),
            Err(EspnError::Malformed(_))
        ));
    }

    /// One scripted answer: status, headers, body.
    type Scripted = (u16, Vec<(&'static str, String)>, Vec<u8>);

    /// A one-connection-per-request HTTP server answering from a script, for client tests.
    async fn mock(
        responses: Vec<Scripted>,
    ) -> (String, std::sync::Arc<std::sync::atomic::AtomicUsize>) {
        use std::sync::atomic::{AtomicUsize, Ordering};
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let hits = std::sync::Arc::new(AtomicUsize::new(0));
        let counter = hits.clone();
        tokio::spawn(async move {
            for (status, headers, body) in responses {
                let (mut sock, _) = listener.accept().await.unwrap();
                let mut buf = vec![0u8; 8192];
                let _ = sock.read(&mut buf).await;
                counter.fetch_add(1, Ordering::SeqCst);
                let mut head = format!(
                    "HTTP/1.1 {status} X\r\ncontent-length: {}\r\nconnection: close\r\n",
                    body.len()
                );
                for (k, v) in headers {
                    head.push_str(&format!("{k}: {v}\r\n"));
                }
                head.push_str("\r\n");
                let _ = sock.write_all(head.as_bytes()).await;
                let _ = sock.write_all(&body).await;
            }
        });
        (format!("http://{addr}"), hits)
    }

    #[tokio::test]
    async fn the_client_honours_retry_after_then_parses_the_scoreboard() {
        let body = fixture("nba-scoreboard-20240129.json");
        let (base, hits) = mock(vec![
            (
                429,
                vec![("retry-after", "1".to_string())],
                b"slow down".to_vec(),
            ),
            (500, vec![], b"oops".to_vec()),
            (200, vec![], body),
        ])
        .await;
        let client = EspnClient::new(
            &base,
            Duration::from_secs(2),
            Duration::from_secs(5),
            "test",
        )
        .unwrap();
        let date = NaiveDate::from_ymd_opt(2024, 1, 29).unwrap();
        let started = std::time::Instant::now();
        let games = client
            .scoreboard_with_retry("basketball/nba", date, 3, Duration::from_secs(5))
            .await
            .unwrap();
        assert_eq!(games.len(), 12);
        assert_eq!(hits.load(std::sync::atomic::Ordering::SeqCst), 3);
        assert!(
            started.elapsed() >= Duration::from_secs(1),
            "Retry-After: 1 was honoured"
        );
    }

    #[tokio::test]
    async fn the_client_reports_rate_limits_statuses_and_malformed_bodies() {
        let (base, _) = mock(vec![
            (503, vec![("retry-after", "7".to_string())], Vec::new()),
            (404, vec![], Vec::new()),
            (200, vec![], b"{\"events\": 3}".to_vec()),
        ])
        .await;
        let client = EspnClient::new(
            &base,
            Duration::from_secs(2),
            Duration::from_secs(5),
            "test",
        )
        .unwrap();
        let date = NaiveDate::from_ymd_opt(2024, 1, 29).unwrap();
        assert_eq!(
            client.scoreboard("basketball/nba", date).await.unwrap_err(),
            EspnError::RateLimited {
                status: 503,
                retry_after: Some(Duration::from_secs(7))
            }
        );
        assert_eq!(
            client.scoreboard("basketball/nba", date).await.unwrap_err(),
            EspnError::Status(404)
        );
        assert!(matches!(
            client.scoreboard("basketball/nba", date).await,
            Err(EspnError::Malformed(_))
        ));
        assert_eq!(
            client.scoreboard_url("basketball/nba", date),
            format!("{base}/apis/site/v2/sports/basketball/nba/scoreboard?dates=20240129")
        );
    }
}
