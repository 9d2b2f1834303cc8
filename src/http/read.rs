//! The public read API: leagues, games and markets, straight from the store (reads never
//! queue behind the actors). Lists are `{"items": [...], "next": <cursor or null>}` in a stable
//! order (games by start time then id, markets by id) with opaque keyset cursors. Pools are
//! per token, integers in base units sent as strings. List answers are kept in the read cache
//! (`cache.rs`) until the next write, or at most `TIPOFF_READ_CACHE_TTL`.

use actix_web::{web, HttpResponse};
use chrono::{DateTime, NaiveDate, Utc};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use serde_json::json;
use tipoff_actors::domain::GameState;
use tipoff_actors::store::{GameFilter, GameRow, JsonRows, MarketFilter, MarketRow};
use tipoff_actors::Store;

use super::schema::Page;
use super::{error::ApiError, AppState};

const DEFAULT_LIMIT: i64 = 50;
const MAX_LIMIT: i64 = 200;
pub(super) const MARKET_STATES: &[&str] = &["open", "locked", "settled", "void"];

#[derive(Debug, Deserialize)]
pub struct ListQuery {
    league: Option<String>,
    date: Option<String>,
    state: Option<String>,
    limit: Option<String>,
    cursor: Option<String>,
}

/// `limit=` of a list: 1 to 200, default 50.
pub(super) fn limit(text: Option<&str>) -> Result<i64, ApiError> {
    match text {
        None => Ok(DEFAULT_LIMIT),
        Some(text) => match text.parse::<i64>() {
            Ok(n) if (1..=MAX_LIMIT).contains(&n) => Ok(n),
            _ => Err(ApiError::BadRequest(format!(
                "limit must be a whole number from 1 to {MAX_LIMIT}, not `{text}`"
            ))),
        },
    }
}

/// A list's `next` cursor: the sort key of the last row, as text (an id, or
/// `micros:id` for games). Clients pass it back as it is.
pub(super) fn encode_cursor(text: &str) -> String {
    text.to_string()
}

/// The sort key a `cursor=` carries; only digits, `-` and `:` can be one.
pub(super) fn decode_cursor(cursor: &str) -> Result<String, ApiError> {
    let well_formed = !cursor.is_empty()
        && cursor.len() <= 40
        && cursor
            .bytes()
            .all(|b| b.is_ascii_digit() || b == b'-' || b == b':');
    if !well_formed {
        return Err(ApiError::BadRequest(
            "invalid cursor: pass the `next` value of the previous page".into(),
        ));
    }
    Ok(cursor.to_string())
}

/// A `league=` filter: a key of the catalog (a 400 naming the known ones otherwise).
pub(super) fn league_filter(league: Option<&str>) -> Result<Option<String>, ApiError> {
    league
        .map(|l| {
            let key = l.trim().to_ascii_lowercase();
            tipoff_actors::store::catalog_league(&key)
                .map(|_| key)
                .map_err(|m| ApiError::BadRequest(super::body::bounded(&m)))
        })
        .transpose()
}

/// The row id a `cursor=` of an id-ordered list carries.
pub(super) fn id_cursor(cursor: Option<&str>) -> Result<Option<i64>, ApiError> {
    cursor
        .map(|c| {
            decode_cursor(c)?.parse::<i64>().map_err(|_| {
                ApiError::BadRequest(
                    "invalid cursor: pass the `next` value of the previous page".into(),
                )
            })
        })
        .transpose()
}

/// Trims a `limit + 1` fetch to `limit` rows and the cursor of the next page, if any.
pub(super) fn page<T>(
    mut rows: Vec<T>,
    limit: i64,
    cursor_of: impl Fn(&T) -> String,
) -> (Vec<T>, Option<String>) {
    if rows.len() as i64 > limit {
        rows.truncate(limit as usize);
        let next = rows.last().map(|r| encode_cursor(&cursor_of(r)));
        (rows, next)
    } else {
        (rows, None)
    }
}

pub(super) fn not_found(
    what: &str,
    id: i64,
) -> impl Fn(tipoff_actors::StoreError) -> ApiError + '_ {
    move |e| match e {
        tipoff_actors::StoreError::NotFound => ApiError::NotFound(format!("no {what} {id}")),
        other => other.into(),
    }
}

#[derive(Serialize, JsonSchema)]
pub(super) struct Side<'a> {
    abbreviation: &'a str,
    name: &'a str,
    score: Option<i64>,
}

/// A game as the API answers it.
#[derive(Serialize, JsonSchema)]
pub(super) struct Game<'a> {
    id: i64,
    league: &'a str,
    /// ESPN's event id.
    external_id: &'a str,
    name: &'a str,
    short_name: &'a str,
    starts_at: DateTime<Utc>,
    #[schemars(schema_with = "super::schema::game_state_field")]
    state: &'a str,
    status_detail: &'a str,
    neutral_site: bool,
    home: Side<'a>,
    away: Side<'a>,
    market_id: Option<i64>,
}

/// A market as the API answers it: two outcomes, each with its pool per token.
#[derive(Serialize, JsonSchema)]
pub struct Market {
    id: i64,
    game_id: i64,
    league: String,
    question: String,
    #[schemars(schema_with = "super::schema::market_state_field")]
    state: String,
    /// `home`, then `away`.
    outcomes: [Outcome; 2],
    /// `home` or `away` once settled.
    winning_outcome: Option<String>,
    created_at: DateTime<Utc>,
    settled_at: Option<DateTime<Utc>>,
}

#[derive(Serialize, JsonSchema)]
pub struct Outcome {
    #[schemars(schema_with = "super::schema::outcome_field")]
    key: &'static str,
    /// The team's abbreviation.
    label: String,
    /// Base units staked on it, per token (empty before the first stake).
    #[schemars(schema_with = "super::schema::pools_field")]
    pool: serde_json::Map<String, serde_json::Value>,
}

/// A league of the catalog.
#[derive(Serialize, JsonSchema)]
pub struct League {
    key: String,
    name: String,
    sport: String,
    espn_path: String,
    /// Whether its poller runs (`TIPOFF_LEAGUES`).
    enabled: bool,
}

fn game(g: &GameRow) -> Game<'_> {
    Game {
        id: g.id,
        league: &g.league,
        external_id: &g.external_id,
        name: &g.name,
        short_name: &g.short_name,
        starts_at: g.starts_at,
        state: &g.state,
        status_detail: &g.status_detail,
        neutral_site: g.neutral_site,
        home: Side {
            abbreviation: &g.home_abbr,
            name: &g.home_name,
            score: g.home_score,
        },
        away: Side {
            abbreviation: &g.away_abbr,
            name: &g.away_name,
            score: g.away_score,
        },
        market_id: g.market_id,
    }
}

fn json_body(body: web::Bytes) -> HttpResponse {
    HttpResponse::Ok()
        .content_type("application/json")
        .body(body)
}

/// A list answer from items the store shaped already (a `limit + 1` fetch): the same bytes
/// as serializing [`Page`] of them.
fn json_page(
    rows: &JsonRows,
    limit: i64,
    cursor_of: impl Fn((DateTime<Utc>, i64)) -> String,
) -> web::Bytes {
    let limit = limit as usize;
    let items = rows.items(limit);
    let mut body = Vec::with_capacity(items.len() + 64);
    body.extend_from_slice(b"{\"items\":[");
    body.extend_from_slice(items);
    body.extend_from_slice(b"],\"next\":");
    let next = (rows.len() > limit).then(|| encode_cursor(&cursor_of(rows.key(limit - 1))));
    serde_json::to_writer(&mut body, &next).expect("a string serializes");
    body.push(b'}');
    web::Bytes::from(body)
}

/// Serializes a list answer, keeps it in the read cache and answers it.
fn cached(
    state: &AppState,
    key: String,
    generation: u64,
    value: &impl Serialize,
) -> Result<HttpResponse, ApiError> {
    let body =
        web::Bytes::from(serde_json::to_vec(value).map_err(|e| ApiError::Internal(e.to_string()))?);
    state.read_cache.put(key, generation, body.clone());
    Ok(json_body(body))
}

/// Markets in API form, with each outcome's pool per token (`{"towai": "1500"}`, base units
/// as strings; empty before the first stake).
pub(super) async fn markets_json(
    store: &Store,
    rows: &[MarketRow],
) -> Result<Vec<Market>, ApiError> {
    let ids: Vec<i64> = rows.iter().map(|m| m.id).collect();
    let mut pools: std::collections::HashMap<
        (i64, String),
        serde_json::Map<String, serde_json::Value>,
    > = std::collections::HashMap::new();
    for (market_id, outcome, token, amount) in store.market_pools(&ids).await? {
        pools
            .entry((market_id, outcome))
            .or_default()
            .insert(token, json!(amount.to_string()));
    }
    let mut pool =
        |id: i64, outcome: &str| pools.remove(&(id, outcome.to_string())).unwrap_or_default();
    Ok(rows
        .iter()
        .map(|m| Market {
            id: m.id,
            game_id: m.game_id,
            league: m.league.clone(),
            question: m.question.clone(),
            state: m.state.clone(),
            outcomes: [
                Outcome {
                    key: "home",
                    label: m.home_abbr.clone(),
                    pool: pool(m.id, "home"),
                },
                Outcome {
                    key: "away",
                    label: m.away_abbr.clone(),
                    pool: pool(m.id, "away"),
                },
            ],
            winning_outcome: m.winning_outcome.clone(),
            created_at: m.created_at,
            settled_at: m.settled_at,
        })
        .collect())
}

/// `GET /api/v1/leagues`: the catalog, each with whether its poller is enabled.
pub async fn leagues(state: web::Data<AppState>) -> Result<HttpResponse, ApiError> {
    let enabled = state.leagues_enabled();
    let items: Vec<League> = state
        .store
        .leagues()
        .await?
        .into_iter()
        .map(|l| League {
            enabled: enabled.contains(&l.key),
            key: l.key,
            name: l.name,
            sport: l.sport,
            espn_path: l.espn_path,
        })
        .collect();
    Ok(HttpResponse::Ok().json(Page { items, next: None }))
}

/// `GET /api/v1/games?league=&date=YYYY-MM-DD&state=&limit=&cursor=`
pub async fn games(
    state: web::Data<AppState>,
    q: web::Query<ListQuery>,
) -> Result<HttpResponse, ApiError> {
    let limit = limit(q.limit.as_deref())?;
    let game_state = match &q.state {
        None => None,
        Some(s) => Some(GameState::parse(s).ok_or_else(|| {
            ApiError::BadRequest(format!(
                "unknown state `{s}`: use scheduled, live, final, postponed, canceled, delayed or suspended"
            ))
        })?),
    };
    let date = match &q.date {
        None => None,
        Some(d) => Some(
            NaiveDate::parse_from_str(d, "%Y-%m-%d")
                .map_err(|_| ApiError::BadRequest(format!("date must be YYYY-MM-DD, not `{d}`")))?,
        ),
    };
    let after = match &q.cursor {
        None => None,
        Some(c) => {
            let text = decode_cursor(c)?;
            let bad = || {
                ApiError::BadRequest(
                    "invalid cursor: pass the `next` value of the previous page".into(),
                )
            };
            let (micros, id) = text.split_once(':').ok_or_else(bad)?;
            let at = DateTime::from_timestamp_micros(micros.parse().map_err(|_| bad())?)
                .ok_or_else(bad)?;
            Some((at, id.parse().map_err(|_| bad())?))
        }
    };
    let filter = GameFilter {
        league: league_filter(q.league.as_deref())?,
        state: game_state,
        date,
        after,
        limit: limit + 1,
    };
    // The key is the parsed filter, so spellings of one request share an entry.
    let key = games_key(&filter);
    if let Some(body) = state.read_cache.get(&key) {
        return Ok(json_body(body));
    }
    let generation = Store::write_generation();
    if let Some(rows) = state.store.games_json(&filter).await {
        let body = json_page(&rows?, limit, |(at, id)| {
            format!("{}:{id}", at.timestamp_micros())
        });
        state.read_cache.put(key, generation, body.clone());
        return Ok(json_body(body));
    }
    let (rows, next) = page(state.store.games(&filter).await?, limit, |g| {
        format!("{}:{}", g.starts_at.timestamp_micros(), g.id)
    });
    let items: Vec<Game<'_>> = rows.iter().map(game).collect();
    cached(&state, key, generation, &Page { items, next })
}

/// The read-cache key of a games page: its parsed filter.
fn games_key(f: &GameFilter) -> String {
    use std::fmt::Write;
    let mut key = String::with_capacity(64);
    key.push_str("games|");
    key.push_str(f.league.as_deref().unwrap_or(""));
    key.push('|');
    key.push_str(f.state.map_or("", |s| s.as_str()));
    key.push('|');
    if let Some(d) = f.date {
        let _ = write!(key, "{d}");
    }
    key.push('|');
    if let Some((at, id)) = f.after {
        let _ = write!(key, "{}:{id}", at.timestamp_micros());
    }
    let _ = write!(key, "|{}", f.limit);
    key
}

/// The read-cache key of a markets page: its parsed filter.
fn markets_key(f: &MarketFilter) -> String {
    use std::fmt::Write;
    let mut key = String::with_capacity(48);
    key.push_str("markets|");
    key.push_str(f.league.as_deref().unwrap_or(""));
    key.push('|');
    key.push_str(f.state.as_deref().unwrap_or(""));
    key.push('|');
    if let Some(after) = f.after {
        let _ = write!(key, "{after}");
    }
    let _ = write!(key, "|{}", f.limit);
    key
}

/// `GET /api/v1/games/{id}`
pub async fn game_by_id(
    state: web::Data<AppState>,
    id: web::Path<i64>,
) -> Result<HttpResponse, ApiError> {
    let id = id.into_inner();
    let row = state.store.game(id).await.map_err(not_found("game", id))?;
    Ok(HttpResponse::Ok().json(game(&row)))
}

/// `GET /api/v1/markets?state=&league=&limit=&cursor=`
pub async fn markets(
    state: web::Data<AppState>,
    q: web::Query<ListQuery>,
) -> Result<HttpResponse, ApiError> {
    let limit = limit(q.limit.as_deref())?;
    if let Some(s) = &q.state {
        if !MARKET_STATES.contains(&s.as_str()) {
            return Err(ApiError::BadRequest(format!(
                "unknown state `{s}`: use open, locked, settled or void"
            )));
        }
    }
    let after = id_cursor(q.cursor.as_deref())?;
    let filter = MarketFilter {
        league: league_filter(q.league.as_deref())?,
        state: q.state.clone(),
        after,
        limit: limit + 1,
    };
    let key = markets_key(&filter);
    if let Some(body) = state.read_cache.get(&key) {
        return Ok(json_body(body));
    }
    let generation = Store::write_generation();
    if let Some(rows) = state.store.markets_json(&filter).await {
        let body = json_page(&rows?, limit, |(_, id)| id.to_string());
        state.read_cache.put(key, generation, body.clone());
        return Ok(json_body(body));
    }
    let (rows, next) = page(state.store.markets(&filter).await?, limit, |m| {
        m.id.to_string()
    });
    let items = markets_json(&state.store, &rows).await?;
    cached(&state, key, generation, &Page { items, next })
}

/// `GET /api/v1/markets/{id}`
pub async fn market_by_id(
    state: web::Data<AppState>,
    id: web::Path<i64>,
) -> Result<HttpResponse, ApiError> {
    let id = id.into_inner();
    let row = state
        .store
        .market(id)
        .await
        .map_err(not_found("market", id))?;
    let item = markets_json(&state.store, std::slice::from_ref(&row))
        .await?
        .remove(0);
    Ok(HttpResponse::Ok().json(item))
}

#[cfg(test)]
mod tests {
    use super::*;
    use tipoff_actors::domain::{ScoreboardGame, Side as TeamSide};
    use tipoff_actors::store::StoreOptions;

    fn team(abbreviation: &str, name: &str, score: Option<i64>) -> TeamSide {
        TeamSide {
            abbreviation: abbreviation.into(),
            name: name.into(),
            score,
            winner: None,
        }
    }

    /// Games whose text needs escaping, with and without scores, on a neutral site or not,
    /// starting on whole seconds, milliseconds and microseconds, one of them updated after its
    /// insert and then final (its market settled); two markets with pools in two tokens.
    async fn tricky_store(url: &str) -> Store {
        let store = Store::connect(url, &StoreOptions::default()).await.unwrap();
        store.migrate().await.unwrap();
        store.reconcile_catalog().await.unwrap();
        let names = [
            "Plain at Plain",
            "Quote \" and backslash \\ at Slash /",
            "Line\nbreak\ttab\u{1}control\u{7f}del",
            "Ünïcødé 🏀 at 東京",
        ];
        let start = DateTime::parse_from_rfc3339("2030-01-02T03:04:05Z")
            .unwrap()
            .to_utc();
        for (i, name) in names.iter().enumerate() {
            let game = ScoreboardGame {
                external_id: format!("shape{i}"),
                name: name.to_string(),
                short_name: format!("S{i} @ {name}"),
                starts_at: start
                    + chrono::Duration::microseconds([0, 1_234_567, 250_000, 3_000_000][i]),
                state: GameState::Scheduled,
                status_detail: if i % 2 == 0 {
                    String::new()
                } else {
                    "Rain Delay, Top 1st".into()
                },
                neutral_site: i % 2 == 1,
                season_year: None,
                season_type: None,
                home: team("HOM", name, (i > 1).then_some(i as i64)),
                away: team("AWY", "Away \"team\"", None),
            };
            store.upsert_game("nba", &game, start).await.unwrap();
            if i == 3 {
                let mut later = game.clone();
                later.state = GameState::Live;
                later.home.score = Some(42);
                later.status_detail = "Q4 \"0:01\"".into();
                store.upsert_game("nba", &later, start).await.unwrap();
                // Then final: its market settles (at a fractional second).
                later.state = GameState::Final;
                later.away.score = Some(40);
                later.home.winner = Some(true);
                later.away.winner = Some(false);
                let settled = start + chrono::Duration::milliseconds(1_500);
                store.upsert_game("nba", &later, settled).await.unwrap();
            }
        }
        let user = store
            .create_user("u", "digest", "CODE2345", start)
            .await
            .unwrap();
        for (market, outcome, token, amount) in [
            (1, "home", "towai", 1500),
            (1, "away", "usdc", 7),
            (1, "home", "usdc", 9_000_000_000_000_i64),
            (2, "away", "towai", 1),
        ] {
            macro_rules! insert {
                ($pool:expr) => {
                    sqlx::query("INSERT INTO positions (market_id, user_id, outcome, token, amount, stakes, created_at, updated_at) VALUES ($1, $2, $3, $4, $5, 1, $6, $6)")
                        .bind(market as i64).bind(user.id).bind(outcome).bind(token).bind(amount).bind(start)
                        .execute($pool).await.map(drop).unwrap()
                };
            }
            match &store {
                Store::Sqlite(pool, _) => insert!(pool),
                Store::Postgres(pool, _) => insert!(pool),
            };
        }
        store
    }

    /// On a SQLite file, and on PostgreSQL when `TIPOFF_TEST_POSTGRES_URL` is set (required
    /// under `CI=true`).
    #[actix_rt::test]
    async fn a_page_shaped_by_the_store_is_the_page_serde_writes() {
        let dir = tempfile::tempdir().unwrap();
        let url = format!("sqlite://{}", dir.path().join("shape.db").display());
        shaped_pages_match_serde(&tricky_store(&url).await).await;
        let Ok(base) = std::env::var("TIPOFF_TEST_POSTGRES_URL") else {
            assert_ne!(
                std::env::var("CI").as_deref(),
                Ok("true"),
                "TIPOFF_TEST_POSTGRES_URL must be set in CI"
            );
            eprintln!("SKIPPED: the PostgreSQL half needs TIPOFF_TEST_POSTGRES_URL");
            return;
        };
        let name = format!("tipoff_test_{}", uuid::Uuid::new_v4().simple());
        let url = tipoff_actors::store::postgres::create_database(&base, &name)
            .await
            .unwrap();
        shaped_pages_match_serde(&tricky_store(&url).await).await;
    }

    async fn shaped_pages_match_serde(store: &Store) {
        for limit in [1_i64, 3, 4, 10] {
            let f = GameFilter {
                limit: limit + 1,
                ..GameFilter::default()
            };
            let shaped = json_page(
                &store
                    .games_json(&f)
                    .await
                    .expect("a file database")
                    .unwrap(),
                limit,
                |(at, id)| format!("{}:{id}", at.timestamp_micros()),
            );
            let rows = store.games(&f).await.unwrap();
            let (rows, next) = page(rows, limit, |g| {
                format!("{}:{}", g.starts_at.timestamp_micros(), g.id)
            });
            let items: Vec<Game<'_>> = rows.iter().map(game).collect();
            let want = serde_json::to_value(Page { items, next }).unwrap();
            let got: serde_json::Value = serde_json::from_slice(&shaped).unwrap();
            assert_eq!(got, want, "games, limit {limit}");

            let f = MarketFilter {
                limit: limit + 1,
                ..MarketFilter::default()
            };
            let shaped = store.markets_json(&f).await.expect("a file database");
            let shaped = json_page(&shaped.unwrap(), limit, |(_, id)| id.to_string());
            let rows = store.markets(&f).await.unwrap();
            let (rows, next) = page(rows, limit, |m| m.id.to_string());
            let items = markets_json(store, &rows).await.unwrap();
            let want = serde_json::to_value(Page { items, next }).unwrap();
            let got: serde_json::Value = serde_json::from_slice(&shaped).unwrap();
            assert_eq!(got, want, "markets, limit {limit}");
        }
        // The pools really are there (a market with none answers `{}` both ways).
        let f = MarketFilter {
            limit: 5,
            ..MarketFilter::default()
        };
        let shaped = store.markets_json(&f).await.expect("a file database");
        let page: serde_json::Value =
            serde_json::from_slice(&json_page(&shaped.unwrap(), 4, |(_, id)| id.to_string()))
                .unwrap();
        assert_eq!(
            page["items"][0]["outcomes"][0]["pool"],
            serde_json::json!({"towai": "1500", "usdc": "9000000000000"})
        );
        assert_eq!(
            page["items"][3]["outcomes"][1]["pool"],
            serde_json::json!({})
        );
    }
}
