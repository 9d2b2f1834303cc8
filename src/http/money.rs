//! The money API.
//!
//! - Users: `POST /api/v1/users` (registration, when enabled) and `POST /admin/users` answer
//!   201 with the user, its deposit code and its API key, shown this once: only its SHA-256
//!   digest is stored. `GET /api/v1/me` shows the balances, `GET /api/v1/me/ledger` the entries.
//! - Stakes: `POST /api/v1/markets/{id}/stakes {outcome, amount, token}` while the market is
//!   open and its game has not started; `GET /api/v1/me/stakes`.
//! - Withdrawals: `POST /api/v1/me/withdrawals {token, amount, destination}` places a hold;
//!   `GET /api/v1/me/withdrawals`. The signer (admin): `GET /admin/withdrawals?state=`, then
//!   `POST /admin/withdrawals/{id}/claim {claimer}` before sending anything on chain, then
//!   `/complete {signature}` or `/fail {reason}`. Cleanup expires only unclaimed ones.
//! - Deposits (admin): `GET /admin/deposits?unattributed=true`,
//!   `POST /admin/deposits/{id}/assign {user_id}`; `GET /admin/ledger/audit` checks every
//!   money invariant.
//!
//! Amounts are integers in base units: accepted as a JSON integer or a string of digits, sent
//! back as strings (JavaScript numbers lose precision above 2^53).

use std::future::Future;
use std::pin::Pin;

use actix_web::{dev::Payload, web, FromRequest, HttpRequest, HttpResponse};
use chrono::{DateTime, Utc};
use rand::Rng;
use serde::{Deserialize, Serialize};
use serde_json::Value;
use sha2::{Digest, Sha256};
use tipoff_actors::solana::{is_pubkey, is_signature, Token};
use tipoff_actors::store::{
    user_account, Deposit, LedgerEntry, Position, QuarantinedDeposit, Stake, User, Withdrawal,
    WithdrawalOutcome, QUARANTINE_STATES, WITHDRAWAL_STATES,
};
use tipoff_actors::StoreError;

use super::auth::{bearer, Admin};
use super::body::{parsed, Deferred, OptionalJson};
use super::read::{id_cursor, limit, not_found, page};
use super::schema;
use super::{error::ApiError, AppState};
use schemars::JsonSchema;

/// The Solana system program: never a withdrawal destination.
const SYSTEM_PROGRAM: &str = "11111111111111111111111111111111";

/// Deposit codes: 8 characters without look-alikes (no 0/O, 1/I/L).
const CODE_ALPHABET: &[u8] = b"ABCDEFGHJKMNPQRSTUVWXYZ23456789";

fn digest_hex(key: &str) -> String {
    hex::encode(Sha256::digest(key.as_bytes()))
}

/// A signed-in user (`Authorization: Bearer <api key>`).
pub struct Caller(pub User);

/// The users of the API keys presented in the last second, by the key's digest, so a client
/// sending many requests (a market maker placing stakes) costs one lookup a second instead of
/// one a request. Nothing in tipoff changes a key or its user once issued; a key an operator
/// revokes in the database stops working within [`Callers::TTL`]. An unknown key is never
/// kept: each try is looked up.
#[derive(Debug, Default)]
pub struct Callers {
    known: std::sync::Mutex<std::collections::HashMap<String, (User, std::time::Instant)>>,
}

impl Callers {
    pub const TTL: std::time::Duration = std::time::Duration::from_secs(1);
    /// Keys kept at most; past it the oldest second's are dropped all at once.
    const MAX: usize = 65_536;

    fn get(&self, digest: &str) -> Option<User> {
        let known = self.known.lock().expect("callers");
        known
            .get(digest)
            .filter(|(_, at)| at.elapsed() < Self::TTL)
            .map(|(user, _)| user.clone())
    }

    fn put(&self, digest: String, user: User) {
        let mut known = self.known.lock().expect("callers");
        if known.len() >= Self::MAX {
            known.retain(|_, (_, at)| at.elapsed() < Self::TTL);
            if known.len() >= Self::MAX {
                known.clear();
            }
        }
        known.insert(digest, (user, std::time::Instant::now()));
    }
}

impl FromRequest for Caller {
    type Error = ApiError;
    type Future = Pin<Box<dyn Future<Output = Result<Self, ApiError>>>>;

    fn from_request(req: &HttpRequest, _: &mut Payload) -> Self::Future {
        let state = req.app_data::<web::Data<AppState>>().cloned();
        let key = bearer(req).map(str::to_string);
        Box::pin(async move {
            let state =
                state.ok_or_else(|| ApiError::Internal("application state missing".into()))?;
            let key = key.ok_or_else(|| {
                ApiError::Unauthorized(
                    "missing API key: send Authorization: Bearer <api key>".into(),
                )
            })?;
            let digest = digest_hex(&key);
            if let Some(user) = state.callers.get(&digest) {
                return Ok(Caller(user));
            }
            match state.store.user_by_key_hash(&digest).await {
                Ok(user) => {
                    state.callers.put(digest, user.clone());
                    Ok(Caller(user))
                }
                Err(StoreError::NotFound) => Err(ApiError::Unauthorized("invalid API key".into())),
                Err(e) => Err(e.into()),
            }
        })
    }
}

/// A positive whole number of base units that fits the ledger (at most 2^63 − 1), from a JSON
/// integer or a string of digits.
pub fn amount(field: &str, value: &Value) -> Result<i64, ApiError> {
    let bad = |why: &str| {
        ApiError::BadRequest(format!(
            "`{field}` {why}: send a positive whole number of base units (a JSON integer or a string of digits), not {value}"
        ))
    };
    let text = match value {
        Value::String(s) => s.trim().to_string(),
        Value::Number(n) => n.to_string(),
        _ => return Err(bad("is not a number")),
    };
    if text.starts_with('-') {
        return Err(bad("is negative"));
    }
    if text.is_empty() || !text.bytes().all(|b| b.is_ascii_digit()) {
        return Err(bad("is not a whole number"));
    }
    match text.parse::<i64>() {
        Ok(0) => Err(bad("is zero")),
        Ok(n) => Ok(n),
        Err(_) => Err(bad("is too large (at most 9223372036854775807)")),
    }
}

fn token(state: &AppState, name: &str) -> Result<Token, ApiError> {
    let name = name.trim().to_ascii_lowercase();
    let tokens = state.tokens();
    tokens
        .iter()
        .find(|t| t.name == name)
        .cloned()
        .ok_or_else(|| {
            let known: Vec<&str> = tokens.iter().map(|t| t.name.as_str()).collect();
            ApiError::BadRequest(if known.is_empty() {
                format!("unknown token `{name}`: no tokens are configured (TIPOFF_TOKENS)")
            } else {
                format!("unknown token `{name}` (configured: {})", known.join(", "))
            })
        })
}

#[derive(Debug, Default, Deserialize, JsonSchema)]
pub struct NewUser {
    #[serde(default)]
    #[schemars(schema_with = "schema::name_field")]
    name: Option<String>,
}

/// A user just created, with its API key (shown this once).
#[derive(Serialize, JsonSchema)]
pub struct NewUserView {
    id: i64,
    name: String,
    /// Put it in a deposit's memo to credit the deposit to this user.
    deposit_code: String,
    /// `Authorization: Bearer <api_key>`; stored as a digest, never shown again.
    api_key: String,
    created_at: DateTime<Utc>,
    note: &'static str,
}

/// The caller and a balance for every configured token.
#[derive(Serialize, JsonSchema)]
pub struct MeView {
    id: i64,
    name: String,
    deposit_code: String,
    created_at: DateTime<Utc>,
    balances: Vec<BalanceView>,
}

#[derive(Serialize, JsonSchema)]
pub struct BalanceView {
    token: String,
    #[schemars(schema_with = "schema::signed_units_field")]
    amount: String,
    /// The token's decimals (null for a token no longer configured).
    decimals: Option<u8>,
}

async fn create_user(
    state: &AppState,
    body: OptionalJson<NewUser>,
) -> Result<HttpResponse, ApiError> {
    let name = body.0.and_then(|b| b.name).unwrap_or_default();
    let name = name.trim();
    if name.chars().count() > 100 {
        return Err(ApiError::BadRequest(
            "`name` is longer than 100 characters".into(),
        ));
    }
    for _ in 0..3 {
        let (key, code) = {
            let mut rng = rand::thread_rng();
            let key = hex::encode(rng.gen::<[u8; 32]>());
            let code: String = (0..8)
                .map(|_| CODE_ALPHABET[rng.gen_range(0..CODE_ALPHABET.len())] as char)
                .collect();
            (format!("tpk_{key}"), code)
        };
        match state
            .store
            .create_user(name, &digest_hex(&key), &code, Utc::now())
            .await
        {
            Ok(user) => {
                tracing::info!(user = user.id, "user registered");
                return Ok(HttpResponse::Created().json(NewUserView {
                    id: user.id,
                    name: user.name,
                    deposit_code: user.deposit_code,
                    api_key: key,
                    created_at: user.created_at,
                    note: "the API key is shown only now; it is stored as a digest",
                }));
            }
            Err(StoreError::Conflict(_)) => continue,
            Err(e) => return Err(e.into()),
        }
    }
    Err(ApiError::Unavailable(
        "could not allocate a unique deposit code; try again".into(),
    ))
}

/// `POST /api/v1/users {name?}`
pub async fn register(
    state: web::Data<AppState>,
    body: OptionalJson<NewUser>,
) -> Result<HttpResponse, ApiError> {
    if !state.registration {
        return Err(ApiError::Forbidden(
            "registration is disabled (TIPOFF_REGISTRATION=false); an admin can create users with POST /admin/users".into(),
        ));
    }
    create_user(&state, body).await
}

/// `POST /admin/users {name?}`
pub async fn admin_create_user(
    _: Admin,
    state: web::Data<AppState>,
    body: Result<OptionalJson<NewUser>, ApiError>,
) -> Result<HttpResponse, ApiError> {
    create_user(&state, body?).await
}

/// `GET /api/v1/me`: the user, its deposit code and a balance for every configured token.
pub async fn me(
    Caller(user): Caller,
    state: web::Data<AppState>,
) -> Result<HttpResponse, ApiError> {
    let stored = state.store.balances(&user_account(user.id)).await?;
    let tokens = state.tokens();
    let mut balances: Vec<BalanceView> = tokens
        .iter()
        .map(|t| BalanceView {
            token: t.name.clone(),
            amount: stored
                .iter()
                .find(|b| b.token == t.name)
                .map_or(0, |b| b.amount)
                .to_string(),
            decimals: Some(t.decimals),
        })
        .collect();
    for b in stored
        .iter()
        .filter(|b| !tokens.iter().any(|t| t.name == b.token))
    {
        balances.push(BalanceView {
            token: b.token.clone(),
            amount: b.amount.to_string(),
            decimals: None,
        });
    }
    Ok(HttpResponse::Ok().json(MeView {
        id: user.id,
        name: user.name,
        deposit_code: user.deposit_code,
        created_at: user.created_at,
        balances,
    }))
}

#[derive(Debug, Deserialize)]
pub struct PageQuery {
    limit: Option<String>,
    cursor: Option<String>,
    unattributed: Option<String>,
}

/// A ledger entry as the API answers it.
#[derive(Serialize, JsonSchema)]
pub struct EntryView {
    id: i64,
    transfer_id: String,
    token: String,
    /// Signed base units (a debit is negative), as a string.
    #[schemars(schema_with = "schema::signed_units_field")]
    amount: String,
    kind: String,
    reference: String,
    created_at: DateTime<Utc>,
}

fn entry(e: &LedgerEntry) -> EntryView {
    EntryView {
        id: e.id,
        transfer_id: e.transfer_id.clone(),
        token: e.token.clone(),
        amount: e.amount.to_string(),
        kind: e.kind.clone(),
        reference: e.reference.clone(),
        created_at: e.created_at,
    }
}

/// A stake as the API answers it.
#[derive(Serialize, JsonSchema)]
pub struct StakeView {
    id: i64,
    market_id: i64,
    #[schemars(schema_with = "schema::outcome_field")]
    outcome: String,
    token: String,
    #[schemars(schema_with = "schema::units_field")]
    amount: String,
    /// Its share of its position's payout, once settled.
    #[schemars(schema_with = "schema::optional_units_field")]
    payout: Option<String>,
    position_id: Option<i64>,
    created_at: DateTime<Utc>,
    settled_at: Option<DateTime<Utc>>,
}

fn stake_json(s: &Stake) -> StakeView {
    StakeView {
        id: s.id,
        market_id: s.market_id,
        outcome: s.outcome.clone(),
        token: s.token.clone(),
        amount: s.amount.to_string(),
        payout: s.payout.map(|p| p.to_string()),
        position_id: s.position_id,
        created_at: s.created_at,
        settled_at: s.settled_at,
    }
}

/// A position (one user's stakes on one outcome in one token, added up).
#[derive(Serialize, JsonSchema)]
pub struct PositionView {
    id: i64,
    market_id: i64,
    #[schemars(schema_with = "schema::outcome_field")]
    outcome: String,
    token: String,
    #[schemars(schema_with = "schema::units_field")]
    amount: String,
    /// How many stakes it adds up.
    stakes: i64,
    #[schemars(schema_with = "schema::optional_units_field")]
    payout: Option<String>,
    created_at: DateTime<Utc>,
    updated_at: DateTime<Utc>,
    settled_at: Option<DateTime<Utc>>,
}

fn position_json(p: &Position) -> PositionView {
    PositionView {
        id: p.id,
        market_id: p.market_id,
        outcome: p.outcome.clone(),
        token: p.token.clone(),
        amount: p.amount.to_string(),
        stakes: p.stakes,
        payout: p.payout.map(|v| v.to_string()),
        created_at: p.created_at,
        updated_at: p.updated_at,
        settled_at: p.settled_at,
    }
}

/// A withdrawal as the API answers it; an admin's view adds its age and its claim's age.
#[derive(Serialize, JsonSchema)]
pub struct WithdrawalView {
    id: i64,
    user_id: i64,
    token: String,
    #[schemars(schema_with = "schema::units_field")]
    amount: String,
    destination: String,
    #[schemars(schema_with = "schema::withdrawal_state_field")]
    state: String,
    signature: Option<String>,
    reason: Option<String>,
    claimed_by: Option<String>,
    claimed_at: Option<DateTime<Utc>>,
    created_at: DateTime<Utc>,
    updated_at: DateTime<Utc>,
    /// Seconds since it was requested (admin view).
    #[serde(skip_serializing_if = "Option::is_none")]
    age_secs: Option<f64>,
    /// Seconds since it was claimed, while processing (admin view; null otherwise).
    #[serde(skip_serializing_if = "Option::is_none")]
    claim_age_secs: Option<Option<f64>>,
}

fn withdrawal_json(w: &Withdrawal) -> WithdrawalView {
    WithdrawalView {
        id: w.id,
        user_id: w.user_id,
        token: w.token.clone(),
        amount: w.amount.to_string(),
        destination: w.destination.clone(),
        state: w.state.clone(),
        signature: w.signature.clone(),
        reason: w.reason.clone(),
        claimed_by: w.claimed_by.clone(),
        claimed_at: w.claimed_at,
        created_at: w.created_at,
        updated_at: w.updated_at,
        age_secs: None,
        claim_age_secs: None,
    }
}

/// An admin's view of a withdrawal: with its age and, once claimed, the claim's age.
fn admin_withdrawal_json(w: &Withdrawal) -> WithdrawalView {
    let now = Utc::now();
    let secs = |t: chrono::DateTime<Utc>| (now - t).num_milliseconds().max(0) as f64 / 1000.0;
    WithdrawalView {
        age_secs: Some(secs(w.created_at)),
        claim_age_secs: Some(w.claimed_at.filter(|_| w.state == "processing").map(secs)),
        ..withdrawal_json(w)
    }
}

/// A deposit as the API answers it.
#[derive(Serialize, JsonSchema)]
pub struct DepositView {
    id: i64,
    token: String,
    signature: String,
    slot: i64,
    #[schemars(schema_with = "schema::units_field")]
    amount: String,
    /// Whom it was credited to; null while unattributed.
    user_id: Option<i64>,
    memo: Option<String>,
    state: String,
    created_at: DateTime<Utc>,
    assigned_at: Option<DateTime<Utc>>,
}

fn deposit_json(d: &Deposit) -> DepositView {
    DepositView {
        id: d.id,
        token: d.token.clone(),
        signature: d.signature.clone(),
        slot: d.slot,
        amount: d.amount.to_string(),
        user_id: d.user_id,
        memo: d.memo.clone(),
        state: d.state.clone(),
        created_at: d.created_at,
        assigned_at: d.assigned_at,
    }
}

impl PageQuery {
    /// The page size and the id the page starts before.
    fn bounds(&self) -> Result<(i64, Option<i64>), ApiError> {
        Ok((
            limit(self.limit.as_deref())?,
            id_cursor(self.cursor.as_deref())?,
        ))
    }
}

/// Answers a newest-first, id-keyed page.
fn id_page<T, V: Serialize>(
    rows: Vec<T>,
    limit: i64,
    id: impl Fn(&T) -> i64,
    json: impl Fn(&T) -> V,
) -> HttpResponse {
    let (rows, next) = page(rows, limit, |r| id(r).to_string());
    let items: Vec<V> = rows.iter().map(json).collect();
    HttpResponse::Ok().json(schema::Page { items, next })
}

/// `GET /api/v1/me/ledger?limit=&cursor=` (newest first)
pub async fn ledger(
    Caller(user): Caller,
    state: web::Data<AppState>,
    q: web::Query<PageQuery>,
) -> Result<HttpResponse, ApiError> {
    let (limit, before) = q.bounds()?;
    let rows = state
        .store
        .ledger(&user_account(user.id), before, limit + 1)
        .await?;
    Ok(id_page(rows, limit, |e| e.id, entry))
}

/// `GET /api/v1/me/stakes?limit=&cursor=` (newest first)
pub async fn stakes(
    Caller(user): Caller,
    state: web::Data<AppState>,
    q: web::Query<PageQuery>,
) -> Result<HttpResponse, ApiError> {
    let (limit, before) = q.bounds()?;
    let rows = state.store.stakes_of(user.id, before, limit + 1).await?;
    Ok(id_page(rows, limit, |s| s.id, stake_json))
}

/// `GET /api/v1/me/positions?limit=&cursor=` (newest first)
pub async fn positions(
    Caller(user): Caller,
    state: web::Data<AppState>,
    q: web::Query<PageQuery>,
) -> Result<HttpResponse, ApiError> {
    let (limit, before) = q.bounds()?;
    let rows = state.store.positions_of(user.id, before, limit + 1).await?;
    Ok(id_page(rows, limit, |p| p.id, position_json))
}

#[derive(Debug, Deserialize, JsonSchema)]
pub struct NewStake {
    #[schemars(schema_with = "schema::outcome_field")]
    outcome: String,
    #[schemars(schema_with = "schema::token_field")]
    token: String,
    #[schemars(schema_with = "schema::amount_field")]
    amount: Value,
}

/// `POST /api/v1/markets/{id}/stakes {outcome: home|away, amount, token}`
pub async fn stake(
    Caller(user): Caller,
    state: web::Data<AppState>,
    id: web::Path<i64>,
    body: Deferred<NewStake>,
) -> Result<HttpResponse, ApiError> {
    let body = parsed(body)?;
    let market_id = id.into_inner();
    let outcome = body.outcome.trim().to_ascii_lowercase();
    if outcome != "home" && outcome != "away" {
        return Err(ApiError::BadRequest(format!(
            "unknown outcome `{}`: use home or away",
            body.outcome
        )));
    }
    let token = token(&state, &body.token)?;
    let amount = amount("amount", &body.amount)?;
    let minimum = state.min_stake(&token.name);
    if amount < minimum {
        return Err(ApiError::BadRequest(format!(
            "`amount` {amount} is below the minimum stake of {minimum} base units of {} (TIPOFF_MIN_STAKE)",
            token.name
        )));
    }
    let request = tipoff_actors::store::StakeRequest {
        user_id: user.id,
        market_id,
        outcome,
        token: token.name.clone(),
        amount,
    };
    let stake = state
        .stakes
        .place(&state.store, request)
        .await
        .map_err(not_found("market", market_id))?;
    Ok(HttpResponse::Created().json(stake_json(&stake)))
}

#[derive(Debug, Deserialize, JsonSchema)]
pub struct NewWithdrawal {
    #[schemars(schema_with = "schema::token_field")]
    token: String,
    #[schemars(schema_with = "schema::amount_field")]
    amount: Value,
    #[schemars(schema_with = "schema::pubkey_field")]
    destination: String,
}

/// `POST /api/v1/me/withdrawals {token, amount, destination}`
pub async fn withdraw(
    Caller(user): Caller,
    state: web::Data<AppState>,
    body: Deferred<NewWithdrawal>,
) -> Result<HttpResponse, ApiError> {
    let body = parsed(body)?;
    let token = token(&state, &body.token)?;
    let amount = amount("amount", &body.amount)?;
    let destination = body.destination.trim();
    if !is_pubkey(destination) {
        return Err(ApiError::BadRequest(format!(
            "`destination` must be a base58 Solana public key (32 bytes), not `{}`",
            destination.chars().take(64).collect::<String>()
        )));
    }
    if destination == SYSTEM_PROGRAM {
        return Err(ApiError::BadRequest(
            "`destination` is the system program: tokens sent there are lost".into(),
        ));
    }
    if let Some(t) = state.tokens().into_iter().find(|t| t.mint == destination) {
        return Err(ApiError::BadRequest(format!(
            "`destination` is the mint of token `{}`, not a wallet",
            t.name
        )));
    }
    if let Some(t) = state
        .tokens()
        .into_iter()
        .find(|t| t.treasury == destination)
    {
        return Err(ApiError::BadRequest(format!(
            "`destination` is the treasury of token `{}`: a withdrawal there would come back as a deposit",
            t.name
        )));
    }
    let (minimum, max_pending) = state.withdrawal_rules();
    let minimum = minimum.of(&token.name);
    if amount < minimum {
        return Err(ApiError::BadRequest(format!(
            "`amount` {amount} is below the minimum withdrawal of {minimum} base units of {} (TIPOFF_MIN_WITHDRAWAL)",
            token.name
        )));
    }
    let w = state
        .store
        .request_withdrawal(
            user.id,
            &token.name,
            amount,
            destination,
            max_pending,
            Utc::now(),
        )
        .await?;
    tracing::info!(withdrawal = w.id, user = user.id, token = %w.token, amount = w.amount, "withdrawal requested");
    Ok(HttpResponse::Created().json(withdrawal_json(&w)))
}

/// `GET /api/v1/me/withdrawals?limit=&cursor=` (newest first)
pub async fn withdrawals(
    Caller(user): Caller,
    state: web::Data<AppState>,
    q: web::Query<PageQuery>,
) -> Result<HttpResponse, ApiError> {
    let (limit, before) = q.bounds()?;
    let rows = state
        .store
        .withdrawals_of(user.id, before, limit + 1)
        .await?;
    Ok(id_page(rows, limit, |w| w.id, withdrawal_json))
}

#[derive(Debug, Deserialize)]
pub struct WithdrawalQuery {
    state: Option<String>,
    limit: Option<String>,
    cursor: Option<String>,
}

/// `GET /admin/withdrawals?state=&limit=&cursor=` (oldest first: the signer's queue)
pub async fn admin_withdrawals(
    _: Admin,
    state: web::Data<AppState>,
    q: web::Query<WithdrawalQuery>,
) -> Result<HttpResponse, ApiError> {
    let limit = limit(q.limit.as_deref())?;
    let after = id_cursor(q.cursor.as_deref())?;
    let wanted = match q.state.as_deref() {
        None | Some("") => None,
        Some(s) if WITHDRAWAL_STATES.contains(&s) => Some(s),
        Some(other) => {
            return Err(ApiError::BadRequest(format!(
                "state must be one of {}, not `{other}`",
                WITHDRAWAL_STATES.join(", ")
            )))
        }
    };
    let rows = state.store.withdrawals(wanted, after, limit + 1).await?;
    Ok(id_page(rows, limit, |w| w.id, admin_withdrawal_json))
}

/// A treasury signature a watcher could not read.
#[derive(Serialize, JsonSchema)]
pub struct QuarantineView {
    id: i64,
    token: String,
    signature: String,
    slot: i64,
    memo: Option<String>,
    attempts: i64,
    last_error: String,
    #[schemars(schema_with = "schema::quarantine_state_field")]
    state: String,
    first_seen_at: DateTime<Utc>,
    updated_at: DateTime<Utc>,
    /// How a resolved row ended: `credited`, or why it was no deposit.
    resolution: Option<String>,
}

fn quarantine_json(q: &QuarantinedDeposit) -> QuarantineView {
    QuarantineView {
        id: q.id,
        token: q.token.clone(),
        signature: q.signature.clone(),
        slot: q.slot,
        memo: q.memo.clone(),
        attempts: q.attempts,
        last_error: q.last_error.clone(),
        state: q.state.clone(),
        first_seen_at: q.first_seen_at,
        updated_at: q.updated_at,
        resolution: q.resolution.clone(),
    }
}

/// `GET /admin/deposits/quarantine?state=&limit=&cursor=` (oldest first)
pub async fn quarantine(
    _: Admin,
    state: web::Data<AppState>,
    q: web::Query<WithdrawalQuery>,
) -> Result<HttpResponse, ApiError> {
    let limit = limit(q.limit.as_deref())?;
    let after = id_cursor(q.cursor.as_deref())?;
    let wanted = match q.state.as_deref() {
        None | Some("") => None,
        Some(s) if QUARANTINE_STATES.contains(&s) => Some(s),
        Some(other) => {
            return Err(ApiError::BadRequest(format!(
                "state must be one of {}, not `{}`",
                QUARANTINE_STATES.join(", "),
                other.chars().take(64).collect::<String>()
            )))
        }
    };
    let rows = state.store.quarantine(wanted, after, limit + 1).await?;
    Ok(id_page(rows, limit, |r| r.id, quarantine_json))
}

/// `POST /admin/deposits/quarantine/{id}/retry`
pub async fn retry_quarantined(
    _: Admin,
    state: web::Data<AppState>,
    id: web::Path<i64>,
) -> Result<HttpResponse, ApiError> {
    let id = id.into_inner();
    let row = state
        .store
        .retry_quarantined(id, Utc::now())
        .await
        .map_err(not_found("quarantined deposit", id))?;
    tracing::info!(id, token = %row.token, signature = %row.signature, "quarantined deposit queued for a retry");
    Ok(HttpResponse::Ok().json(quarantine_json(&row)))
}

#[derive(Debug, Default, Deserialize, JsonSchema)]
pub struct FinishWithdrawal {
    /// The transaction that paid it (complete).
    #[serde(default)]
    #[schemars(schema_with = "schema::signature_field")]
    signature: Option<String>,
    /// Why it failed (fail).
    #[serde(default)]
    reason: Option<String>,
    /// Who claims it (claim; default `admin`).
    #[serde(default)]
    #[schemars(schema_with = "schema::name_field")]
    claimer: Option<String>,
}

/// `POST /admin/withdrawals/{id}/claim {claimer?}`, `/complete {signature}` and `/fail {reason?}`
pub async fn finish_withdrawal(
    _: Admin,
    state: web::Data<AppState>,
    path: web::Path<(i64, String)>,
    body: Result<OptionalJson<FinishWithdrawal>, ApiError>,
) -> Result<HttpResponse, ApiError> {
    let (id, action) = path.into_inner();
    let body = body?.0.unwrap_or_default();
    if action == "claim" {
        let claimer = body
            .claimer
            .as_deref()
            .map(str::trim)
            .filter(|c| !c.is_empty())
            .unwrap_or("admin");
        if claimer.chars().count() > 100 {
            return Err(ApiError::BadRequest(
                "`claimer` must be at most 100 characters".into(),
            ));
        }
        let w = state
            .store
            .claim_withdrawal(id, claimer, Utc::now())
            .await
            .map_err(not_found("withdrawal", id))?;
        tracing::info!(withdrawal = id, claimer, "withdrawal claimed");
        return Ok(HttpResponse::Ok().json(admin_withdrawal_json(&w)));
    }
    let outcome = match action.as_str() {
        "complete" => {
            let signature = body.signature.as_deref().map(str::trim).unwrap_or_default();
            if !is_signature(signature) {
                // A withdrawal that does not exist is a 404 whatever the body says.
                let found = state
                    .store
                    .withdrawals(None, Some(id.saturating_sub(1)), 1)
                    .await?;
                if found.first().map(|w| w.id) != Some(id) {
                    return Err(ApiError::NotFound(format!("no withdrawal {id}")));
                }
                return Err(ApiError::BadRequest(format!(
                    "`signature` must be the base58 transaction signature (64 bytes) that paid the withdrawal, not `{signature}`"
                )));
            }
            WithdrawalOutcome::Completed { signature }
        }
        "fail" => WithdrawalOutcome::Failed {
            reason: body
                .reason
                .as_deref()
                .map(str::trim)
                .filter(|r| !r.is_empty())
                .unwrap_or("failed by an admin"),
        },
        other => {
            return Err(ApiError::NotFound(format!(
                "unknown action `{other}`: use claim, complete or fail"
            )))
        }
    };
    let w = state
        .store
        .finish_withdrawal(id, outcome, Utc::now())
        .await
        .map_err(not_found("withdrawal", id))?;
    tracing::info!(withdrawal = id, state = %w.state, "withdrawal finished by an admin");
    Ok(HttpResponse::Ok().json(withdrawal_json(&w)))
}

/// `GET /admin/deposits?unattributed=true&limit=&cursor=` (newest first)
pub async fn deposits(
    _: Admin,
    state: web::Data<AppState>,
    q: web::Query<PageQuery>,
) -> Result<HttpResponse, ApiError> {
    let (limit, before) = q.bounds()?;
    let unattributed = match q.unattributed.as_deref() {
        None | Some("false") => false,
        Some("true") => true,
        Some(other) => {
            return Err(ApiError::BadRequest(format!(
                "unattributed must be true or false, not `{other}`"
            )))
        }
    };
    let rows = state
        .store
        .deposits(unattributed, before, limit + 1)
        .await?;
    Ok(id_page(rows, limit, |d| d.id, deposit_json))
}

#[derive(Debug, Deserialize, JsonSchema)]
pub struct Assign {
    #[schemars(schema_with = "schema::user_id_field")]
    user_id: i64,
}

/// `POST /admin/deposits/{id}/assign {user_id}`
pub async fn assign_deposit(
    _: Admin,
    state: web::Data<AppState>,
    id: web::Path<i64>,
    body: Deferred<Assign>,
) -> Result<HttpResponse, ApiError> {
    let body = parsed(body)?;
    let id = id.into_inner();
    let d = state
        .store
        .assign_deposit(id, body.user_id, Utc::now())
        .await
        .map_err(not_found("deposit", id))?;
    tracing::info!(
        deposit = id,
        user = body.user_id,
        "deposit assigned by an admin"
    );
    Ok(HttpResponse::Ok().json(deposit_json(&d)))
}

/// `GET /admin/ledger/audit`: where each token's money is, and any broken invariant (200 when
/// all hold, 500 with the list otherwise).
pub async fn audit(_: Admin, state: web::Data<AppState>) -> Result<HttpResponse, ApiError> {
    let audit = state.store.audit().await?;
    let mut res = if audit.problems.is_empty() {
        HttpResponse::Ok()
    } else {
        tracing::error!(problems = ?audit.problems, "ledger audit found broken invariants");
        HttpResponse::InternalServerError()
    };
    Ok(res.json(AuditView {
        ok: audit.problems.is_empty(),
        tokens: audit.tokens.iter().map(TotalsView::from).collect(),
        problems: audit.problems,
    }))
}

/// The ledger audit: each token's totals and the invariants that do not hold.
#[derive(Serialize, JsonSchema)]
pub struct AuditView {
    ok: bool,
    tokens: Vec<TotalsView>,
    problems: Vec<String>,
}

/// One token's totals, base units: `deposits = users + holds + escrow + house + unattributed + withdrawn`.
#[derive(Serialize, JsonSchema)]
pub struct TotalsView {
    token: String,
    deposits: i64,
    users: i64,
    holds: i64,
    escrow: i64,
    house: i64,
    unattributed: i64,
    withdrawn: i64,
}

impl From<&tipoff_actors::store::TokenTotals> for TotalsView {
    fn from(t: &tipoff_actors::store::TokenTotals) -> Self {
        TotalsView {
            token: t.token.clone(),
            deposits: t.deposits,
            users: t.users,
            holds: t.holds,
            escrow: t.escrow,
            house: t.house,
            unattributed: t.unattributed,
            withdrawn: t.withdrawn,
        }
    }
}
