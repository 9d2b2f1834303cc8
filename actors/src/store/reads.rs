//! The read API's queries, built once for both backends, and SQLite's way of running them.
//!
//! Each list or single read is one SQL text with `$n` placeholders and its [`Arg`]s
//! ([`games_query`], [`markets_query`], ...): PostgreSQL runs it through the sqlx pool; SQLite
//! runs it through [`Readers`], plain connections used on the calling thread. sqlx's SQLite
//! driver hands every statement to a worker thread and every value of every row back, which
//! cost an uncached 50-game page ~0.5 ms of CPU, mostly thread switches (BENCHMARKS.md,
//! 2026-12-02); a WAL reader never waits for the writer, so a read here is a few tens of
//! microseconds on the HTTP worker's own thread. A games page is each game's stored API form
//! (`games.api_json`, kept by triggers) copied into the answer, on both backends.

use std::path::PathBuf;
use std::sync::{Arc, Mutex, Weak};
use std::time::Duration;

use chrono::{DateTime, SecondsFormat, Utc};
use sqlx::postgres::PgConnectOptions;
use sqlx::PgPool;

use super::games::{GAME_COLUMNS, MARKET_COLUMNS};
use super::{GameFilter, GameRow, MarketFilter, MarketRow, Store, StoreError};

/// A bound value of a read query.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Arg {
    Int(i64),
    Text(String),
    Time(DateTime<Utc>),
}

/// One read: the SQL (placeholders `$1`, `$2`, ... in order) and its values.
#[derive(Debug, Default)]
pub(crate) struct Query {
    pub(crate) sql: String,
    pub(crate) args: Vec<Arg>,
}

impl Query {
    fn new(sql: impl Into<String>) -> Query {
        Query {
            sql: sql.into(),
            args: Vec::new(),
        }
    }

    /// A fixed statement and its values.
    pub(crate) fn of(sql: &str, args: Vec<Arg>) -> Query {
        Query {
            sql: sql.to_string(),
            args,
        }
    }

    /// Appends `text` followed by the next placeholder, bound to `arg`.
    fn bind(&mut self, text: &str, arg: Arg) -> &mut Self {
        self.args.push(arg);
        self.sql.push_str(text);
        self.sql.push('$');
        self.sql.push_str(&self.args.len().to_string());
        self
    }

    fn push(&mut self, text: &str) -> &mut Self {
        self.sql.push_str(text);
        self
    }
}

/// Games in (starts_at, id) order, filtered (each filter has an index: see the
/// `games_by_*` indexes).
pub(crate) fn games_query(f: &GameFilter) -> Query {
    games_query_of(GAME_COLUMNS, f)
}

fn games_query_of(columns: &str, f: &GameFilter) -> Query {
    let mut q = Query::new(format!(
        "SELECT {columns} FROM games g LEFT JOIN markets m ON m.game_id = g.id WHERE 1 = 1"
    ));
    if let Some(league) = &f.league {
        q.bind(" AND g.league = ", Arg::Text(league.clone()));
    }
    if let Some(state) = f.state {
        q.bind(" AND g.state = ", Arg::Text(state.as_str().to_string()));
    }
    if let Some(date) = f.date {
        let start = date.and_hms_opt(0, 0, 0).expect("midnight").and_utc();
        q.bind(" AND g.starts_at >= ", Arg::Time(start));
        q.bind(
            " AND g.starts_at < ",
            Arg::Time(start + chrono::Duration::days(1)),
        );
    }
    if let Some((at, id)) = f.after {
        // A row value, so both backends seek the (starts_at, id) index to the cursor; the
        // equivalent `starts_at > $a OR (starts_at = $a AND id > $b)` scanned it from the
        // start (15 ms for a page near the end of 100,000 games on SQLite).
        q.bind(" AND (g.starts_at, g.id) > (", Arg::Time(at));
        q.bind(", ", Arg::Int(id)).push(")");
    }
    q.bind(" ORDER BY g.starts_at, g.id LIMIT ", Arg::Int(f.limit));
    q
}

pub(crate) fn game_query(id: i64) -> Query {
    let mut q = Query::new(format!(
        "SELECT {GAME_COLUMNS} FROM games g LEFT JOIN markets m ON m.game_id = g.id WHERE g.id = "
    ));
    q.bind("", Arg::Int(id));
    q
}

/// Markets in id order, filtered.
pub(crate) fn markets_query(f: &MarketFilter) -> Query {
    markets_query_of(MARKET_COLUMNS, true, f)
}

/// Markets in id order, filtered; their games joined when `columns` read them (`with_games`)
/// or the league filter needs them.
fn markets_query_of(columns: &str, with_games: bool, f: &MarketFilter) -> Query {
    let join = if with_games || f.league.is_some() {
        " JOIN games g ON g.id = m.game_id"
    } else {
        ""
    };
    let mut q = Query::new(format!("SELECT {columns} FROM markets m{join} WHERE 1 = 1"));
    if let Some(league) = &f.league {
        q.bind(" AND g.league = ", Arg::Text(league.clone()));
    }
    if let Some(state) = &f.state {
        q.bind(" AND m.state = ", Arg::Text(state.clone()));
    }
    if let Some(after) = f.after {
        q.bind(" AND m.id > ", Arg::Int(after));
    }
    q.bind(" ORDER BY m.id LIMIT ", Arg::Int(f.limit));
    q
}

pub(crate) fn market_query(id: i64) -> Query {
    let mut q = Query::new(format!(
        "SELECT {MARKET_COLUMNS} FROM markets m JOIN games g ON g.id = m.game_id WHERE m.id = "
    ));
    q.bind("", Arg::Int(id));
    q
}

/// The markets of `ids` that pass the filters, in no particular order.
pub(crate) fn markets_by_ids_query(
    ids: &[i64],
    league: Option<&str>,
    state: Option<&str>,
) -> Query {
    let mut q = Query::new(format!(
        "SELECT {MARKET_COLUMNS} FROM markets m JOIN games g ON g.id = m.game_id WHERE m.id IN ("
    ));
    for (i, id) in ids.iter().enumerate() {
        q.bind(if i == 0 { "" } else { ", " }, Arg::Int(*id));
    }
    q.push(")");
    if let Some(league) = league {
        q.bind(" AND g.league = ", Arg::Text(league.to_string()));
    }
    if let Some(state) = state {
        q.bind(" AND m.state = ", Arg::Text(state.to_string()));
    }
    q
}

/// Each market's pool per (outcome, token): the sum of its positions, as the `market_pools`
/// triggers keep it (migration 17); by market, home's before away's, each outcome's in token
/// order.
pub(crate) fn market_pools_query(ids: &[i64]) -> Query {
    let mut q = Query::new(
        "SELECT market_id, outcome, token, amount FROM market_pools WHERE market_id IN (",
    );
    for (i, id) in ids.iter().enumerate() {
        q.bind(if i == 0 { "" } else { ", " }, Arg::Int(*id));
    }
    q.push(") ORDER BY market_id, outcome DESC, token");
    q
}

/// A game as the API answers it (`Game` in the HTTP layer), as stored (`api_json`, kept in step
/// with the row by triggers: migration 16); then its sort key.
/// `a_page_shaped_by_the_store_is_the_page_serde_writes` holds it equal to serde's form.
const GAME_JSON: &str = "g.api_json, g.starts_at, g.id";

/// A market as the API answers it (`Market` in the HTTP layer), as stored (`api_json`, kept in
/// step by triggers: migration 18) with each outcome's pool as `{}` (a stake writes its pool
/// without touching the stored form: migration 19); then its sort key (creation, id). A page's
/// pools are read by one more statement and spliced in ([`JsonRows::with_pools`]).
const MARKET_JSON: &str = "m.api_json, m.created_at, m.id";

/// The pools of the markets of a page (`ids`, ascending), home's before away's and each
/// outcome's in token order: by one range of the pools' key when the page's ids are dense
/// (a walk in id order), else by id.
pub(crate) fn page_pools_query(ids: &[i64]) -> Query {
    let (first, last) = (ids[0], ids[ids.len() - 1]);
    if last - first < 2 * ids.len() as i64 {
        let mut q = Query::new(
            "SELECT market_id, outcome, token, amount FROM market_pools WHERE market_id >= ",
        );
        q.bind("", Arg::Int(first));
        q.bind(" AND market_id <= ", Arg::Int(last));
        q.push(" ORDER BY market_id, outcome DESC, token");
        return q;
    }
    market_pools_query(ids)
}

/// One pool row: market, outcome, token, amount.
pub type PoolRow = (i64, String, String, i64);

/// List items already in their API form: each item's JSON, comma-separated in one buffer, and
/// each item's sort key (start time, id; for markets the time is their creation).
#[derive(Debug, Default)]
pub struct JsonRows {
    json: Vec<u8>,
    /// Where each item ends in `json`.
    ends: Vec<usize>,
    keys: Vec<(DateTime<Utc>, i64)>,
}

impl JsonRows {
    pub fn len(&self) -> usize {
        self.ends.len()
    }

    pub fn is_empty(&self) -> bool {
        self.ends.is_empty()
    }

    /// The first `n` items, comma-separated (a JSON array's inside).
    pub fn items(&self, n: usize) -> &[u8] {
        match n.min(self.len()) {
            0 => &[],
            n => &self.json[..self.ends[n - 1]],
        }
    }

    fn push(&mut self, item: &[u8], key: (DateTime<Utc>, i64)) {
        if !self.ends.is_empty() {
            self.json.push(b',');
        }
        self.json.extend_from_slice(item);
        self.ends.push(self.json.len());
        self.keys.push(key);
    }

    /// These market forms with each outcome's stored `{}` pool written from `pools` (the
    /// page's, ordered as [`page_pools_query`] reads them; pools of markets not on the page
    /// are passed over).
    fn with_pools(self, pools: &[PoolRow]) -> JsonRows {
        if pools.is_empty() {
            return self;
        }
        let mut out = JsonRows {
            json: Vec::with_capacity(self.json.len() + pools.len() * 24),
            ..JsonRows::default()
        };
        let mut pools = pools.iter().peekable();
        let mut start = 0;
        for (end, key) in self.ends.iter().zip(&self.keys) {
            let form = &self.json[start..*end];
            start = end + 1;
            while pools.next_if(|p| p.0 < key.1).is_some() {}
            if !out.ends.is_empty() {
                out.json.push(b',');
            }
            let mut mine = std::iter::from_fn(|| pools.next_if(|p| p.0 == key.1)).peekable();
            if mine.peek().is_none() {
                out.json.extend_from_slice(form);
            } else {
                splice_pools(&mut out.json, form, &mut mine);
            }
            out.ends.push(out.json.len());
            out.keys.push(*key);
        }
        out
    }

    /// The sort key of item `i`.
    pub fn key(&self, i: usize) -> (DateTime<Utc>, i64) {
        self.keys[i]
    }
}

/// Writes the market form `form` to `out` with its outcomes' `{}` pools filled from `pools`
/// (its own pool rows, home's first). Only a key can hold an unescaped `"pool"`
/// in JSON text (a string's own quotes are escaped), so the form's first `"pool"` is home's
/// and its second away's; each is followed by `:` and the stored `{}`, with or without the
/// spaces PostgreSQL's `json_build_object` writes.
fn splice_pools<'a>(
    out: &mut Vec<u8>,
    form: &[u8],
    pools: &mut std::iter::Peekable<impl Iterator<Item = &'a PoolRow>>,
) {
    let mut rest = form;
    for outcome in ["home", "away"] {
        let Some(at) = find(rest, b"\"pool\"") else {
            break;
        };
        let after_key = at + b"\"pool\"".len();
        let Some(open) = rest[after_key..]
            .iter()
            .position(|&b| b == b'{')
            .map(|i| after_key + i)
        else {
            break;
        };
        if rest.get(open + 1) != Some(&b'}') {
            break;
        }
        out.extend_from_slice(&rest[..open]);
        out.push(b'{');
        let mut first = true;
        while let Some((_, _, token, amount)) = pools.next_if(|p| p.1 == outcome) {
            if !first {
                out.push(b',');
            }
            first = false;
            serde_json::to_writer(&mut *out, token).expect("a string serializes");
            out.push(b':');
            out.push(b'"');
            out.extend_from_slice(amount.to_string().as_bytes());
            out.push(b'"');
        }
        out.push(b'}');
        rest = &rest[open + 2..];
    }
    out.extend_from_slice(rest);
}

fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack.windows(needle.len()).position(|w| w == needle)
}

impl Readers {
    /// Rows of a query whose first column is an item's JSON and the next two its sort key.
    fn json_rows(&self, q: &Query) -> Result<JsonRows, StoreError> {
        self.with(|conn| json_rows_on(conn, q))
    }

    /// [`Readers::json_rows`] of market forms, their pools spliced in, both statements on one
    /// connection.
    fn market_json_rows(&self, q: &Query) -> Result<JsonRows, StoreError> {
        self.with(|conn| {
            let forms = json_rows_on(conn, q)?;
            if forms.is_empty() {
                return Ok(forms);
            }
            let ids: Vec<i64> = forms.keys.iter().map(|k| k.1).collect();
            let pools = page_pools_query(&ids);
            let mut stmt = conn.prepare_cached(&pools.sql)?;
            let params = rusqlite::params_from_iter(pools.args.iter().map(sqlite_value));
            let pools = stmt
                .query_map(params, |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?)))?
                .collect::<rusqlite::Result<Vec<PoolRow>>>()?;
            Ok(forms.with_pools(&pools))
        })
    }
}

fn json_rows_on(conn: &rusqlite::Connection, q: &Query) -> rusqlite::Result<JsonRows> {
    let mut stmt = conn.prepare_cached(&q.sql)?;
    let params = rusqlite::params_from_iter(q.args.iter().map(sqlite_value));
    let mut rows = stmt.query(params)?;
    let mut out = JsonRows {
        json: Vec::with_capacity(8 * 1024),
        ..JsonRows::default()
    };
    while let Some(r) = rows.next()? {
        out.push(r.get_ref(0)?.as_bytes()?, (time(r, 1)?, r.get(2)?));
    }
    Ok(out)
}

impl Store {
    /// A games page in API form, as the store keeps each game (`None` on an in-memory SQLite
    /// database: the caller serializes [`Store::games`] instead).
    pub async fn games_json(&self, f: &GameFilter) -> Option<Result<JsonRows, StoreError>> {
        let q = games_query_of(GAME_JSON, f);
        match self {
            Store::Sqlite(_, shared) => Some(shared.readers.as_ref()?.json_rows(&q)),
            Store::Postgres(pool, _) => Some(pg_json_rows(pool, &q).await),
        }
    }

    /// A markets page in API form, pools included, as the store keeps each market (see
    /// [`Store::games_json`]).
    pub async fn markets_json(&self, f: &MarketFilter) -> Option<Result<JsonRows, StoreError>> {
        // The stored form carries its game's league and teams: no join unless a filter needs one.
        let q = markets_query_of(MARKET_JSON, false, f);
        let forms = match self {
            Store::Sqlite(_, shared) => return Some(shared.readers.as_ref()?.market_json_rows(&q)),
            Store::Postgres(pool, _) => pg_json_rows(pool, &q).await,
        };
        // Two statements, two snapshots: a page's pools may be a stake newer than its forms,
        // as a stake answered between two requests would be.
        Some(match forms {
            Ok(forms) if !forms.is_empty() => {
                let ids: Vec<i64> = forms.keys.iter().map(|k| k.1).collect();
                let pools = self
                    .read_all(&page_pools_query(&ids), |r| {
                        Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?))
                    })
                    .await;
                pools.map(|pools| forms.with_pools(&pools))
            }
            other => other,
        })
    }
}

/// Binds a [`Query`]'s values to a sqlx query (either backend; SQLite gets timestamps as the
/// RFC 3339 text sqlx writes, PostgreSQL as `timestamptz`).
macro_rules! bind_args {
    ($q:expr, $args:expr) => {{
        let mut q = $q;
        for arg in $args {
            q = match arg {
                $crate::store::reads::Arg::Int(v) => q.bind(*v),
                $crate::store::reads::Arg::Text(v) => q.bind(v.as_str()),
                $crate::store::reads::Arg::Time(v) => q.bind(*v),
            };
        }
        q
    }};
}

/// [`Readers::json_rows`] on PostgreSQL, through this thread's read pool.
async fn pg_json_rows(pool: &PgPool, q: &Query) -> Result<JsonRows, StoreError> {
    use sqlx::Row;
    let local = pg_reader(pool)?;
    let rows = bind_args!(sqlx::query(&q.sql), &q.args)
        .fetch_all(&local)
        .await?;
    let mut out = JsonRows {
        json: Vec::with_capacity(8 * 1024),
        ..JsonRows::default()
    };
    for r in &rows {
        out.push(
            r.try_get::<&str, _>(0)?.as_bytes(),
            (r.try_get(1)?, r.try_get(2)?),
        );
    }
    Ok(out)
}

thread_local! {
    /// This thread's read pools, one per PostgreSQL pool (known by its options' address, and
    /// only while that pool lives).
    static PG_READERS: std::cell::RefCell<Vec<(Weak<PgConnectOptions>, PgPool)>> =
        const { std::cell::RefCell::new(Vec::new()) };
}

/// Connections of each thread's PostgreSQL read pool.
const PG_READ_CONNECTIONS: u32 = 4;

/// The calling thread's read pool for `pool`'s database, opened on first use.
///
/// A PostgreSQL connection is driven by the runtime that opened it: a query from an HTTP
/// worker on a connection the main runtime opened wakes the main thread for every packet and
/// hands the rows back across threads. Each HTTP worker's reads therefore go through a small
/// pool of its own, opened on its own runtime. It follows the main pool: closed with it,
/// forgotten when it is dropped.
fn pg_reader(pool: &PgPool) -> Result<PgPool, StoreError> {
    if pool.is_closed() {
        return Err(StoreError::Unavailable("the pool is closed".into()));
    }
    let options = pool.connect_options();
    PG_READERS.with(|readers| {
        let mut readers = readers.borrow_mut();
        readers.retain(|(main, local)| {
            let alive = main.strong_count() > 0;
            if !alive {
                let local = local.clone();
                tokio::spawn(async move { local.close().await });
            }
            alive
        });
        if let Some((_, local)) = readers
            .iter()
            .find(|(main, _)| std::ptr::eq(main.as_ptr(), Arc::as_ptr(&options)))
        {
            return Ok(local.clone());
        }
        let local = sqlx::postgres::PgPoolOptions::new()
            .max_connections(PG_READ_CONNECTIONS.min(pool.options().get_max_connections()))
            .acquire_timeout(pool.options().get_acquire_timeout())
            .connect_lazy_with((*options).clone());
        readers.push((Arc::downgrade(&options), local.clone()));
        Ok(local)
    })
}

impl Store {
    /// Every row of a read query, on the fastest path this store has: SQLite's read
    /// connections (rows through `sqlite_row`), else the pool (PostgreSQL: this thread's read pool).
    pub(crate) async fn read_all<T>(
        &self,
        q: &Query,
        sqlite_row: impl Fn(&rusqlite::Row<'_>) -> rusqlite::Result<T>,
    ) -> Result<Vec<T>, StoreError>
    where
        T: Send + Unpin,
        T: for<'r> sqlx::FromRow<'r, sqlx::postgres::PgRow>,
        T: for<'r> sqlx::FromRow<'r, sqlx::sqlite::SqliteRow>,
    {
        match self {
            Store::Sqlite(_, shared) if shared.readers.is_some() => {
                shared.readers.as_ref().expect("checked").all(q, sqlite_row)
            }
            Store::Sqlite(pool, _) => Ok(bind_args!(sqlx::query_as(&q.sql), &q.args)
                .fetch_all(pool)
                .await?),
            Store::Postgres(pool, _) => {
                let local = pg_reader(pool)?;
                Ok(bind_args!(sqlx::query_as(&q.sql), &q.args)
                    .fetch_all(&local)
                    .await?)
            }
        }
    }

    /// The one row of a read query, or [`StoreError::NotFound`].
    pub(crate) async fn read_one<T>(
        &self,
        q: &Query,
        sqlite_row: impl Fn(&rusqlite::Row<'_>) -> rusqlite::Result<T>,
    ) -> Result<T, StoreError>
    where
        T: Send + Unpin,
        T: for<'r> sqlx::FromRow<'r, sqlx::postgres::PgRow>,
        T: for<'r> sqlx::FromRow<'r, sqlx::sqlite::SqliteRow>,
    {
        self.read_all(q, sqlite_row)
            .await?
            .into_iter()
            .next()
            .ok_or(StoreError::NotFound)
    }
}

/// Idle SQLite read connections of one database file, used on the caller's thread.
#[derive(Debug)]
pub(crate) struct Readers {
    path: PathBuf,
    busy_timeout: Duration,
    idle: Mutex<Vec<rusqlite::Connection>>,
}

/// Idle read connections kept; more are opened under load and closed after use.
const IDLE_READERS: usize = 8;

impl Readers {
    pub(crate) fn new(path: PathBuf, busy_timeout: Duration) -> Readers {
        Readers {
            path,
            busy_timeout,
            idle: Mutex::new(Vec::new()),
        }
    }

    fn open(&self) -> rusqlite::Result<rusqlite::Connection> {
        let flags = rusqlite::OpenFlags::SQLITE_OPEN_READ_WRITE
            | rusqlite::OpenFlags::SQLITE_OPEN_NO_MUTEX
            | rusqlite::OpenFlags::SQLITE_OPEN_URI;
        let conn = rusqlite::Connection::open_with_flags(&self.path, flags)?;
        conn.busy_timeout(self.busy_timeout)?;
        // Reads only, whatever a caller's SQL says.
        conn.pragma_update(None, "query_only", true)?;
        conn.set_prepared_statement_cache_capacity(64);
        Ok(conn)
    }

    /// A connection for writing: foreign keys on, every commit on disk (`synchronous=FULL`),
    /// as the pool's.
    pub(crate) fn open_writer(&self) -> Result<rusqlite::Connection, StoreError> {
        let open = || -> rusqlite::Result<rusqlite::Connection> {
            let conn = rusqlite::Connection::open_with_flags(
                &self.path,
                rusqlite::OpenFlags::SQLITE_OPEN_READ_WRITE
                    | rusqlite::OpenFlags::SQLITE_OPEN_NO_MUTEX,
            )?;
            conn.busy_timeout(self.busy_timeout)?;
            conn.pragma_update(None, "foreign_keys", true)?;
            conn.pragma_update(None, "synchronous", "FULL")?;
            // A stake batch's statement journals (a statement that writes several rows, or
            // fires a trigger, journals the pages it rewrites): in memory, not in a temporary
            // file written page by page.
            conn.pragma_update(None, "temp_store", "MEMORY")?;
            conn.set_prepared_statement_cache_capacity(32);
            Ok(conn)
        };
        open().map_err(read_error)
    }

    /// Runs `f` on an idle connection (opening one when none is idle).
    fn with<T>(
        &self,
        f: impl FnOnce(&rusqlite::Connection) -> rusqlite::Result<T>,
    ) -> Result<T, StoreError> {
        let idle = self.idle.lock().expect("readers lock").pop();
        let conn = match idle {
            Some(conn) => conn,
            None => self.open().map_err(read_error)?,
        };
        let result = f(&conn);
        let mut idle = self.idle.lock().expect("readers lock");
        if idle.len() < IDLE_READERS {
            idle.push(conn);
        }
        drop(idle);
        result.map_err(read_error)
    }

    /// All rows of `q`, each through `row`.
    pub(crate) fn all<T>(
        &self,
        q: &Query,
        row: impl Fn(&rusqlite::Row<'_>) -> rusqlite::Result<T>,
    ) -> Result<Vec<T>, StoreError> {
        self.with(|conn| {
            let mut stmt = conn.prepare_cached(&q.sql)?;
            let params = rusqlite::params_from_iter(q.args.iter().map(sqlite_value));
            let mut rows = stmt.query(params)?;
            let mut out = Vec::new();
            while let Some(r) = rows.next()? {
                out.push(row(r)?);
            }
            Ok(out)
        })
    }
}

fn sqlite_value(arg: &Arg) -> rusqlite::types::Value {
    use rusqlite::types::Value;
    match arg {
        Arg::Int(v) => Value::Integer(*v),
        Arg::Text(v) => Value::Text(v.clone()),
        // As sqlx writes them, so comparisons with stored values hold.
        Arg::Time(v) => Value::Text(v.to_rfc3339_opts(SecondsFormat::AutoSi, false)),
    }
}

fn read_error(e: rusqlite::Error) -> StoreError {
    sqlite_error(e, "a read failed")
}

/// A `rusqlite` error as the store's: busy or locked past the busy timeout, an unreadable
/// file, or `what` failed (all retryable by the caller: nothing was committed).
pub(crate) fn sqlite_error(e: rusqlite::Error, what: &str) -> StoreError {
    match e {
        rusqlite::Error::SqliteFailure(f, _)
            if matches!(
                f.code,
                rusqlite::ErrorCode::DatabaseBusy | rusqlite::ErrorCode::DatabaseLocked
            ) =>
        {
            StoreError::Unavailable("the database is busy".into())
        }
        rusqlite::Error::SqliteFailure(f, _)
            if matches!(
                f.code,
                rusqlite::ErrorCode::CannotOpen | rusqlite::ErrorCode::SystemIoFailure
            ) =>
        {
            StoreError::Unavailable(format!("the database file cannot be read: {e}"))
        }
        other => StoreError::Unavailable(format!("{what}: {other}")),
    }
}

/// A timestamp column as sqlx writes it (RFC 3339), or any of the text forms sqlx reads.
pub(crate) fn time(row: &rusqlite::Row<'_>, i: usize) -> rusqlite::Result<DateTime<Utc>> {
    let text: String = row.get(i)?;
    parse_time(&text).ok_or_else(|| {
        rusqlite::Error::FromSqlConversionFailure(
            i,
            rusqlite::types::Type::Text,
            format!("invalid timestamp `{text}`").into(),
        )
    })
}

fn opt_time(row: &rusqlite::Row<'_>, i: usize) -> rusqlite::Result<Option<DateTime<Utc>>> {
    match row.get_ref(i)? {
        rusqlite::types::ValueRef::Null => Ok(None),
        _ => time(row, i).map(Some),
    }
}

fn parse_time(text: &str) -> Option<DateTime<Utc>> {
    if let Ok(t) = DateTime::parse_from_rfc3339(text) {
        return Some(t.with_timezone(&Utc));
    }
    ["%F %T%.f", "%FT%T%.f"].iter().find_map(|f| {
        chrono::NaiveDateTime::parse_from_str(text, f)
            .ok()
            .map(|t| t.and_utc())
    })
}

/// A [`GameRow`] from the columns of `GAME_COLUMNS`.
pub(crate) fn game_row(r: &rusqlite::Row<'_>) -> rusqlite::Result<GameRow> {
    Ok(GameRow {
        id: r.get(0)?,
        league: r.get(1)?,
        external_id: r.get(2)?,
        name: r.get(3)?,
        short_name: r.get(4)?,
        starts_at: time(r, 5)?,
        state: r.get(6)?,
        status_detail: r.get(7)?,
        neutral_site: r.get(8)?,
        home_abbr: r.get(9)?,
        home_name: r.get(10)?,
        home_score: r.get(11)?,
        away_abbr: r.get(12)?,
        away_name: r.get(13)?,
        away_score: r.get(14)?,
        market_id: r.get(15)?,
    })
}

/// A [`MarketRow`] from the columns of `MARKET_COLUMNS`.
pub(crate) fn market_row(r: &rusqlite::Row<'_>) -> rusqlite::Result<MarketRow> {
    Ok(MarketRow {
        id: r.get(0)?,
        game_id: r.get(1)?,
        league: r.get(2)?,
        question: r.get(3)?,
        state: r.get(4)?,
        home_abbr: r.get(5)?,
        away_abbr: r.get(6)?,
        winning_outcome: r.get(7)?,
        created_at: time(r, 8)?,
        settled_at: opt_time(r, 9)?,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Pools go to their own market's outcomes, home's and away's, whatever the spacing of
    /// the stored form (PostgreSQL's `json_build_object` writes ` : `); pools of markets not on
    /// the page are passed over; a `"pool"` inside a string is not a pool.
    #[test]
    fn a_page_gets_its_own_pools_spliced_in() {
        let at = Utc::now();
        let form = |id: i64, spaced: bool| {
            let sep = if spaced { " : " } else { ":" };
            format!(
                r#"{{"id"{sep}{id},"question"{sep}"is \"pool\":{{}} a trap?","outcomes"{sep}[{{"key"{sep}"home","pool"{sep}{{}}}},{{"key"{sep}"away","pool"{sep}{{}}}}]}}"#
            )
        };
        let mut rows = JsonRows::default();
        rows.push(form(2, false).as_bytes(), (at, 2));
        rows.push(form(5, true).as_bytes(), (at, 5));
        rows.push(form(9, false).as_bytes(), (at, 9));
        let pool = |m: i64, o: &str, t: &str, a: i64| (m, o.to_string(), t.to_string(), a);
        let pools = [
            pool(1, "home", "usdc", 1),
            pool(2, "home", "sol", 5),
            pool(2, "home", "usdc", 7),
            pool(2, "away", "usdc", 9_000_000_000_000),
            pool(3, "away", "usdc", 3),
            pool(9, "away", "sol", 4),
        ];
        let spliced = rows.with_pools(&pools);
        let page: serde_json::Value =
            serde_json::from_slice(&[b"[", spliced.items(3), b"]"].concat()).unwrap();
        let outcomes = |i: usize| {
            (
                page[i]["outcomes"][0]["pool"].clone(),
                page[i]["outcomes"][1]["pool"].clone(),
            )
        };
        use serde_json::json;
        assert_eq!(
            outcomes(0),
            (
                json!({"sol": "5", "usdc": "7"}),
                json!({"usdc": "9000000000000"})
            )
        );
        assert_eq!(outcomes(1), (json!({}), json!({})));
        assert_eq!(outcomes(2), (json!({}), json!({"sol": "4"})));
        assert_eq!(page[0]["question"], r#"is "pool":{} a trap?"#);
        assert_eq!(spliced.key(2), (at, 9));
        // A dense page is read as one range of the pools' key, a sparse one by its ids.
        assert!(page_pools_query(&[2, 3, 5]).sql.contains(">="));
        assert!(page_pools_query(&[2, 500, 9000]).sql.contains("IN ("));
    }

    #[test]
    fn placeholders_are_numbered_in_order_of_their_values() {
        let q = games_query(&GameFilter {
            league: Some("nba".into()),
            after: Some((DateTime::from_timestamp(1_700_000_000, 0).unwrap(), 7)),
            limit: 51,
            ..GameFilter::default()
        });
        assert!(q.sql.contains("g.league = $1"), "{}", q.sql);
        assert!(
            q.sql.contains("(g.starts_at, g.id) > ($2, $3)"),
            "{}",
            q.sql
        );
        assert!(q.sql.ends_with("LIMIT $4"), "{}", q.sql);
        assert_eq!(q.args.len(), 4);
        assert_eq!(q.args[3], Arg::Int(51));
    }

    #[test]
    fn stored_timestamps_parse_in_every_form_sqlx_writes_or_reads() {
        let want = DateTime::parse_from_rfc3339("2024-01-30T00:30:00Z").unwrap();
        for text in [
            "2024-01-30T00:30:00+00:00",
            "2024-01-30T00:30:00Z",
            "2024-01-30 00:30:00",
            "2024-01-30T00:30:00.000",
        ] {
            assert_eq!(parse_time(text), Some(want.with_timezone(&Utc)), "{text}");
        }
        assert_eq!(parse_time("yesterday"), None);
    }
}
