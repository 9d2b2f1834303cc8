//! The domain: what tipoff knows of a game, whatever upstream it was read from. The ESPN
//! client parses into these, the store keeps them, the HTTP API shows them.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

/// The states a game can be in.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum GameState {
    Scheduled,
    Live,
    Final,
    Postponed,
    Canceled,
    Delayed,
    Suspended,
}

impl GameState {
    /// Every state, as the API names them.
    pub const ALL: [GameState; 7] = [
        GameState::Scheduled,
        GameState::Live,
        GameState::Final,
        GameState::Postponed,
        GameState::Canceled,
        GameState::Delayed,
        GameState::Suspended,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            GameState::Scheduled => "scheduled",
            GameState::Live => "live",
            GameState::Final => "final",
            GameState::Postponed => "postponed",
            GameState::Canceled => "canceled",
            GameState::Delayed => "delayed",
            GameState::Suspended => "suspended",
        }
    }

    pub fn parse(s: &str) -> Option<GameState> {
        Some(match s {
            "scheduled" => GameState::Scheduled,
            "live" => GameState::Live,
            "final" => GameState::Final,
            "postponed" => GameState::Postponed,
            "canceled" => GameState::Canceled,
            "delayed" => GameState::Delayed,
            "suspended" => GameState::Suspended,
            _ => return None,
        })
    }
}

/// One side of a game.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Side {
    pub abbreviation: String,
    pub name: String,
    /// `None` before the game has a score to report (ESPN sends `"0"`; kept as 0).
    pub score: Option<i64>,
    /// Present only on finished games.
    pub winner: Option<bool>,
}

/// A game as read from a scoreboard (ESPN today).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ScoreboardGame {
    pub external_id: String,
    pub name: String,
    pub short_name: String,
    pub starts_at: DateTime<Utc>,
    pub state: GameState,
    /// ESPN's human status, e.g. `Rain Delay, Top 1st` or `Final`.
    pub status_detail: String,
    pub neutral_site: bool,
    pub season_year: Option<i32>,
    pub season_type: Option<i32>,
    pub home: Side,
    pub away: Side,
}
