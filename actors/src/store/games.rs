//! Games and markets: the idempotent upsert of scoreboard games, each game's market and its
//! transitions (lock at start, settle or void exactly once), and the read queries of the API.

use chrono::{DateTime, NaiveDate, Utc};
use serde::Serialize;

use super::money::DEFAULT_FEE_BPS;
use super::{reads, Store, StoreError};
use crate::domain::{GameState, ScoreboardGame};

/// What one upsert did to the game's market.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum MarketTransition {
    Unchanged,
    Locked,
    /// Settled now, with the winning outcome (`home` / `away`).
    Settled(&'static str),
    Voided,
    /// The game changed after its market was settled or voided; logged, never re-settled.
    IgnoredAfterSettlement,
}

/// The result of [`Store::upsert_game`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Upserted {
    pub game_id: i64,
    pub market_id: i64,
    pub created: bool,
    /// An existing game whose fields changed.
    pub updated: bool,
    pub transition: MarketTransition,
}

/// A game row joined with its market id.
#[derive(Debug, Clone, Serialize, sqlx::FromRow)]
pub struct GameRow {
    pub id: i64,
    pub league: String,
    pub external_id: String,
    pub name: String,
    pub short_name: String,
    pub starts_at: DateTime<Utc>,
    pub state: String,
    pub status_detail: String,
    pub neutral_site: bool,
    pub home_abbr: String,
    pub home_name: String,
    pub home_score: Option<i64>,
    pub away_abbr: String,
    pub away_name: String,
    pub away_score: Option<i64>,
    pub market_id: Option<i64>,
}

/// A market row joined with what its API form needs from the game.
#[derive(Debug, Clone, Serialize, sqlx::FromRow)]
pub struct MarketRow {
    pub id: i64,
    pub game_id: i64,
    pub league: String,
    pub question: String,
    pub state: String,
    pub home_abbr: String,
    pub away_abbr: String,
    pub winning_outcome: Option<String>,
    pub created_at: DateTime<Utc>,
    pub settled_at: Option<DateTime<Utc>>,
}

#[derive(Debug, Clone, Default)]
pub struct GameFilter {
    pub league: Option<String>,
    pub state: Option<GameState>,
    /// Games starting on this UTC date.
    pub date: Option<NaiveDate>,
    /// Keyset cursor: strictly after this (starts_at, id).
    pub after: Option<(DateTime<Utc>, i64)>,
    pub limit: i64,
}

#[derive(Debug, Clone, Default)]
pub struct MarketFilter {
    pub league: Option<String>,
    pub state: Option<String>,
    /// Keyset cursor: ids strictly greater.
    pub after: Option<i64>,
    pub limit: i64,
}

/// A stored game's changeable fields, to tell whether an upsert changes anything.
#[derive(sqlx::FromRow, PartialEq)]
pub(super) struct Existing {
    pub(super) id: i64,
    pub(super) name: String,
    pub(super) short_name: String,
    pub(super) starts_at: DateTime<Utc>,
    pub(super) state: String,
    pub(super) status_detail: String,
    pub(super) neutral_site: bool,
    pub(super) home_score: Option<i64>,
    pub(super) away_score: Option<i64>,
    pub(super) board_date: Option<NaiveDate>,
}

/// Live and imminent games of one league (see [`Store::league_activity`]).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Activity {
    /// Games live or delayed.
    pub live: usize,
    /// Scheduled games inside the "starting soon" window.
    pub starting_soon: usize,
    /// Scoreboard dates holding those games, ascending.
    pub boards: Vec<NaiveDate>,
}

/// The winning side of a final game: ESPN's `winner` flag, else the higher score; `None` for
/// a tie or no result (the market is voided).
pub fn winner(game: &ScoreboardGame) -> Option<&'static str> {
    match (game.home.winner, game.away.winner) {
        (Some(true), _) => return Some("home"),
        (_, Some(true)) => return Some("away"),
        _ => {}
    }
    match (game.home.score, game.away.score) {
        (Some(h), Some(a)) if h > a => Some("home"),
        (Some(h), Some(a)) if a > h => Some("away"),
        _ => None,
    }
}

/// "Who wins BOS @ LAL?"
pub fn question(game: &ScoreboardGame) -> String {
    let matchup = if game.short_name.is_empty() {
        format!("{} @ {}", game.away.abbreviation, game.home.abbreviation)
    } else {
        game.short_name.clone()
    };
    format!("Who wins {matchup}?")
}

pub(super) const GAME_COLUMNS: &str = "g.id, g.league, g.external_id, g.name, g.short_name, g.starts_at, g.state, g.status_detail, g.neutral_site, g.home_abbr, g.home_name, g.home_score, g.away_abbr, g.away_name, g.away_score, m.id AS market_id";
pub(super) const MARKET_COLUMNS: &str = "m.id, m.game_id, g.league, m.question, m.state, g.home_abbr, g.away_abbr, m.winning_outcome, m.created_at, m.settled_at";

/// Voids the market unless it is already closed (expands inside each backend's branch). Its
/// refunds follow in a transaction of their own ([`Store::pay_market`]).
macro_rules! void_market {
    ($tx:ident, $market_id:expr, $now:expr, $finished:expr, $market_state:expr) => {
        if $finished {
            if $market_state == "void" {
                MarketTransition::Unchanged
            } else {
                MarketTransition::IgnoredAfterSettlement
            }
        } else {
            let n = sqlx::query("UPDATE markets SET state = 'void', settled_at = $1 WHERE id = $2 AND state IN ('open', 'locked')")
                .bind($now)
                .bind($market_id)
                .execute(&mut *$tx)
                .await?
                .rows_affected();
            if n == 1 {
                MarketTransition::Voided
            } else {
                MarketTransition::Unchanged
            }
        }
    };
}

/// One game's upsert inside the open transaction `$tx`: insert or update the game by (league,
/// ESPN event id), create its market when new, and move the market along; a market settled or
/// voided now is paid out right after the board commits ([`Store::pay_market`]). A new or
/// changed game's search document is pushed onto `$documents` (`Vec<(market id, document)>`)
/// for the board's one [`index_markets!`]. Evaluates to an [`Upserted`]; `?` propagates to the
/// enclosing function. Expands inside each backend's branch.
macro_rules! upsert_in_tx {
    ($tx:ident, $documents:ident, $league:expr, $board:expr, $game:expr, $now:expr) => {{
        let (league, board, game, now): (&str, Option<NaiveDate>, &ScoreboardGame, DateTime<Utc>) =
            ($league, $board, $game, $now);
        let state = game.state.as_str();
        let inserted: Option<i64> = sqlx::query_scalar(
            "INSERT INTO games (league, external_id, name, short_name, starts_at, state, status_detail, neutral_site, \
             home_abbr, home_name, home_score, away_abbr, away_name, away_score, updated_at, board_date) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, $16) \
             ON CONFLICT (league, external_id) DO NOTHING RETURNING id",
        )
        .bind(league).bind(&game.external_id).bind(&game.name).bind(&game.short_name).bind(game.starts_at)
        .bind(state).bind(&game.status_detail).bind(game.neutral_site)
        .bind(&game.home.abbreviation).bind(&game.home.name).bind(game.home.score)
        .bind(&game.away.abbreviation).bind(&game.away.name).bind(game.away.score).bind(now).bind(board)
        .fetch_optional(&mut *$tx).await?;
        let (game_id, created, updated) = match inserted {
            Some(id) => (id, true, false),
            None => {
                let old: Existing = sqlx::query_as(
                    "SELECT id, name, short_name, starts_at, state, status_detail, neutral_site, home_score, away_score, board_date \
                     FROM games WHERE league = $1 AND external_id = $2",
                )
                .bind(league).bind(&game.external_id)
                .fetch_one(&mut *$tx).await?;
                let new = Existing {
                    id: old.id,
                    name: game.name.clone(),
                    short_name: game.short_name.clone(),
                    starts_at: game.starts_at,
                    state: state.to_string(),
                    status_detail: game.status_detail.clone(),
                    neutral_site: game.neutral_site,
                    home_score: game.home.score,
                    away_score: game.away.score,
                    board_date: board.or(old.board_date),
                };
                let changed = new != old;
                if changed {
                    sqlx::query(
                        "UPDATE games SET name = $1, short_name = $2, starts_at = $3, state = $4, status_detail = $5, \
                         neutral_site = $6, home_score = $7, away_score = $8, updated_at = $9, board_date = $10 WHERE id = $11",
                    )
                    .bind(&new.name).bind(&new.short_name).bind(new.starts_at).bind(&new.state).bind(&new.status_detail)
                    .bind(new.neutral_site).bind(new.home_score).bind(new.away_score).bind(now).bind(new.board_date).bind(old.id)
                    .execute(&mut *$tx).await?;
                }
                (old.id, false, changed)
            }
        };
        let new_market: Option<i64> = sqlx::query_scalar("INSERT INTO markets (game_id, question, created_at) VALUES ($1, $2, $3) ON CONFLICT (game_id) DO NOTHING RETURNING id")
            .bind(game_id).bind(question(game)).bind(now)
            .fetch_optional(&mut *$tx).await?;
        if let Some(market_id) = new_market {
            emit!($tx, "market.created", Some(league), serde_json::json!({
                "market_id": market_id, "game_id": game_id, "league": league, "question": question(game),
                "starts_at": game.starts_at, "home": game.home.abbreviation, "away": game.away.abbreviation,
            }), now);
        }
        let (market_id, market_state, market_winner, market_question): (i64, String, Option<String>, String) =
            sqlx::query_as("SELECT id, state, winning_outcome, question FROM markets WHERE game_id = $1")
                .bind(game_id)
                .fetch_one(&mut *$tx).await?;
        if created || updated || new_market.is_some() {
            $documents.push((market_id, $crate::store::search::search_document(
                &market_question, league, &game.away.name, &game.away.abbreviation, &game.home.name,
                &game.home.abbreviation, &game.name, &game.short_name, game.starts_at,
            )));
        }
        let finished = matches!(market_state.as_str(), "settled" | "void");
        let transition = match game.state {
            GameState::Final => match winner(game) {
                Some(side) => {
                    let n = sqlx::query(
                        "UPDATE markets SET state = 'settled', winning_outcome = $1, settled_at = $2 \
                         WHERE id = $3 AND state IN ('open', 'locked')",
                    )
                    .bind(side).bind(now).bind(market_id)
                    .execute(&mut *$tx).await?.rows_affected();
                    if n == 1 {
                        MarketTransition::Settled(side)
                    } else if market_winner.as_deref() != Some(side) {
                        MarketTransition::IgnoredAfterSettlement
                    } else {
                        MarketTransition::Unchanged
                    }
                }
                None => void_market!($tx, market_id, now, finished, market_state),
            },
            GameState::Postponed | GameState::Canceled | GameState::Suspended => {
                void_market!($tx, market_id, now, finished, market_state)
            }
            GameState::Live | GameState::Delayed | GameState::Scheduled => {
                if finished {
                    MarketTransition::IgnoredAfterSettlement
                } else if game.state != GameState::Scheduled || game.starts_at <= now {
                    let n = sqlx::query("UPDATE markets SET state = 'locked' WHERE id = $1 AND state = 'open'")
                        .bind(market_id)
                        .execute(&mut *$tx).await?.rows_affected();
                    if n == 1 { MarketTransition::Locked } else { MarketTransition::Unchanged }
                } else {
                    MarketTransition::Unchanged
                }
            }
        };
        if transition == MarketTransition::IgnoredAfterSettlement && (created || updated) {
            tracing::warn!(league, external_id = %game.external_id, market_id, game_state = state, market_state = %market_state, "game changed after its market was closed; not re-settled");
        }
        let transition = if transition == MarketTransition::IgnoredAfterSettlement && !updated {
            MarketTransition::Unchanged
        } else {
            transition
        };
        Upserted { game_id, market_id, created, updated, transition }
    }};
}

impl Store {
    /// Inserts or updates a game by (league, ESPN event id), creates its market when new, and
    /// moves the market along: locked once the game has started, settled when final, voided
    /// when postponed, canceled or suspended. Settlement is a compare-and-set, so a market is
    /// settled at most once however often this runs.
    pub async fn upsert_game(
        &self,
        league: &str,
        game: &ScoreboardGame,
        now: DateTime<Utc>,
    ) -> Result<Upserted, StoreError> {
        let mut done = self
            .upsert_games(
                league,
                None,
                std::slice::from_ref(game),
                now,
                DEFAULT_FEE_BPS,
            )
            .await?;
        Ok(done.remove(0))
    }

    /// [`upsert_game`](Self::upsert_game) for a whole scoreboard, in one transaction, with the
    /// settlement fee `fee_bps`. `board` is the ESPN scoreboard date the games were read from.
    #[tracing::instrument(skip_all, fields(league = %league, games = games.len()))]
    pub async fn upsert_games(
        &self,
        league: &str,
        board: Option<NaiveDate>,
        games: &[ScoreboardGame],
        now: DateTime<Utc>,
        fee_bps: u32,
    ) -> Result<Vec<Upserted>, StoreError> {
        let done = {
            let _writer = self.writer().await?;
            retrying!(on_pool!(self, pool => {
                let mut tx = pool.begin().await?;
                let mut done = Vec::with_capacity(games.len());
                let mut documents = Vec::new();
                for game in games {
                    done.push(upsert_in_tx!(tx, documents, league, board, game, now));
                }
                index_markets!(tx, &documents, now);
                crate::store::lease::Fenced::announce_writes(&mut *tx).await?;
                commit!(self, tx);
                Ok(done)
            }))?
        };
        Store::wrote();
        self.pay_closed_markets(league, fee_bps, now).await?;
        Ok(done)
    }

    /// Pays out each closed market of `league` not yet paid — those a board just closed, and
    /// any a crash left closed but unpaid — each in its own transaction, so no payout can hold
    /// a board's transaction. A market whose payout fails is logged and tried by the next pass;
    /// losing the lease or the database stops here.
    pub(crate) async fn pay_closed_markets(
        &self,
        league: &str,
        fee_bps: u32,
        now: DateTime<Utc>,
    ) -> Result<(), StoreError> {
        for market_id in self.unpaid_markets(league, 1000).await? {
            match self.pay_market(market_id, fee_bps, now).await {
                Ok(_) => {}
                Err(e @ (StoreError::Fenced(_) | StoreError::Unavailable(_))) => return Err(e),
                Err(e) => {
                    tracing::error!(market_id, error = %e, "paying out a closed market failed; the next pass of its league tries again")
                }
            }
        }
        Ok(())
    }

    /// The state of a league's games that sets the score loop's pace: games live (or delayed)
    /// now, games due to start between `soon_from` and `soon_to` that ESPN has not started yet,
    /// and the scoreboard dates holding any of them.
    pub async fn league_activity(
        &self,
        league: &str,
        soon_from: DateTime<Utc>,
        soon_to: DateTime<Utc>,
    ) -> Result<Activity, StoreError> {
        let sql = "SELECT state, board_date FROM games WHERE league = $1 AND \
                   (state IN ('live', 'delayed') OR (state = 'scheduled' AND starts_at >= $2 AND starts_at <= $3))";
        let rows: Vec<(String, Option<NaiveDate>)> = on_pool!(self, pool => {
            sqlx::query_as(sql).bind(league).bind(soon_from).bind(soon_to).fetch_all(pool).await?
        });
        let mut activity = Activity::default();
        for (state, board) in rows {
            if state == "scheduled" {
                activity.starting_soon += 1;
            } else {
                activity.live += 1;
            }
            if let Some(board) = board {
                if !activity.boards.contains(&board) {
                    activity.boards.push(board);
                }
            }
        }
        activity.boards.sort();
        Ok(activity)
    }

    pub async fn game(&self, id: i64) -> Result<GameRow, StoreError> {
        let q = reads::game_query(id);
        self.read_one(&q, reads::game_row).await
    }

    /// Games in (starts_at, id) order.
    pub async fn games(&self, f: &GameFilter) -> Result<Vec<GameRow>, StoreError> {
        let q = reads::games_query(f);
        self.read_all(&q, reads::game_row).await
    }

    pub async fn market(&self, id: i64) -> Result<MarketRow, StoreError> {
        let q = reads::market_query(id);
        self.read_one(&q, reads::market_row).await
    }

    /// The markets of `ids` that pass the filters, in no particular order.
    pub async fn markets_by_ids(
        &self,
        ids: &[i64],
        league: Option<&str>,
        state: Option<&str>,
    ) -> Result<Vec<MarketRow>, StoreError> {
        if ids.is_empty() {
            return Ok(Vec::new());
        }
        let q = reads::markets_by_ids_query(ids, league, state);
        self.read_all(&q, reads::market_row).await
    }

    /// Markets in id order.
    pub async fn markets(&self, f: &MarketFilter) -> Result<Vec<MarketRow>, StoreError> {
        let q = reads::markets_query(f);
        self.read_all(&q, reads::market_row).await
    }
}
