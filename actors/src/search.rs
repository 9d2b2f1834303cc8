//! The `search` service: the in-memory vector index the hybrid market search ranks with.
//!
//! Every replica runs one (it is not a singleton: each answers its own searches). It loads the
//! configured model's vectors from the database when it starts, takes the vectors the local
//! `backfill` commits as they commit ([`SearchHub::add`]), and reads newer rows from the
//! database every refresh interval, so vectors another replica's `backfill` wrote appear too.
//!
//! Vectors are kept L2-normalised and quantised to `i8` (one scale per vector): 100,000
//! markets at 384 dimensions take about 40 MB, and a query is one pass of integer dot products
//! over them. The index is an `Arc` snapshot: a query runs on the blocking pool over the
//! snapshot it was given (never on the actor's thread), an update copies it only when a query
//! still holds the old one.
//!
//! Messages: [`Nearest`] (the HTTP handlers, through the [`SearchHub`]), [`AddVectors`] (the
//! `backfill` service, through the hub), [`Control`] (ping / stop / wake: refresh now).
//! Timers: one refresh every interval. Stops: at once, or when the load or refresh in flight ends.

use std::cmp::Ordering as CmpOrdering;
use std::collections::{BinaryHeap, HashMap};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, RwLock};
use std::time::Duration;

use actix::prelude::*;
use chrono::{DateTime, Utc};

use crate::db::humantime;
use crate::service::{Control, ServiceCtx, TickGate};
use crate::store::{Store, StoreError};

/// How far before the newest vector seen a refresh reads again: a backfill stamps each batch
/// as it commits it, one batch after the other, so this only has to cover the clocks of
/// replicas that led before (rows already held are skipped, not copied again).
const REFRESH_OVERLAP: chrono::Duration = chrono::Duration::seconds(5);
/// Rows per database page while loading.
const LOAD_PAGE: i64 = 5000;

/// One vector set of one dimension.
#[derive(Debug, Clone, Default)]
struct Slab {
    dim: usize,
    ids: Vec<i64>,
    leagues: Vec<u16>,
    scales: Vec<f32>,
    data: Vec<i8>,
    position: HashMap<i64, usize>,
}

impl Slab {
    fn remove(&mut self, id: i64) {
        let Some(at) = self.position.remove(&id) else {
            return;
        };
        let last = self.ids.len() - 1;
        if at != last {
            let moved = self.ids[last];
            self.ids.swap(at, last);
            self.leagues.swap(at, last);
            self.scales.swap(at, last);
            let (head, tail) = self.data.split_at_mut(last * self.dim);
            head[at * self.dim..(at + 1) * self.dim].copy_from_slice(&tail[..self.dim]);
            self.position.insert(moved, at);
        }
        self.ids.pop();
        self.leagues.pop();
        self.scales.pop();
        self.data.truncate(last * self.dim);
    }

    fn put(&mut self, id: i64, league: u16, scale: f32, q: &[i8]) {
        match self.position.get(&id) {
            Some(&at) => {
                self.leagues[at] = league;
                self.scales[at] = scale;
                self.data[at * self.dim..(at + 1) * self.dim].copy_from_slice(q);
            }
            None => {
                self.position.insert(id, self.ids.len());
                self.ids.push(id);
                self.leagues.push(league);
                self.scales.push(scale);
                self.data.extend_from_slice(q);
            }
        }
    }
}

/// L2-normalises `v` and quantises it to `i8`; answers the scale that maps back.
fn quantise(v: &[f32]) -> Option<(f32, Vec<i8>)> {
    let norm = v.iter().map(|x| x * x).sum::<f32>().sqrt();
    if !norm.is_finite() || norm == 0.0 {
        return None;
    }
    let max = v.iter().fold(0f32, |m, x| m.max(x.abs())) / norm;
    let scale = max / 127.0;
    let q = v
        .iter()
        .map(|x| ((x / norm) / scale).round().clamp(-127.0, 127.0) as i8)
        .collect();
    Some((scale, q))
}

/// The `i8` dot product, written so the compiler vectorises it (16 lanes of widening
/// multiply-adds).
#[inline(always)]
fn dot(a: &[i8], b: &[i8]) -> i32 {
    let mut acc = [0i32; 16];
    let (ac, at) = a.split_at(a.len() / 16 * 16);
    let (bc, bt) = b.split_at(ac.len());
    for (x, y) in ac.chunks_exact(16).zip(bc.chunks_exact(16)) {
        for j in 0..16 {
            acc[j] += i32::from(x[j]) * i32::from(y[j]);
        }
    }
    let tail: i32 = at
        .iter()
        .zip(bt)
        .map(|(&x, &y)| i32::from(x) * i32::from(y))
        .sum();
    acc.iter().sum::<i32>() + tail
}

/// One pass over a slab: the best `k` rows (of `league`, when given) for `q`.
#[inline(always)]
fn scan(slab: &Slab, q: &[i8], qscale: f32, league: Option<u16>, k: usize) -> BinaryHeap<Hit> {
    let mut heap: BinaryHeap<Hit> = BinaryHeap::with_capacity(k + 1);
    for (i, row) in slab.data.chunks_exact(slab.dim).enumerate() {
        if league.is_some_and(|c| slab.leagues[i] != c) {
            continue;
        }
        let score = dot(row, q) as f32 * qscale * slab.scales[i];
        if heap.len() < k {
            heap.push(Hit(score, slab.ids[i]));
        } else if heap.peek().is_some_and(|worst| score > worst.0) {
            heap.pop();
            heap.push(Hit(score, slab.ids[i]));
        }
    }
    heap
}

/// [`scan`] compiled for AVX2 (four times the lanes of the x86-64 baseline).
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2")]
unsafe fn scan_avx2(
    slab: &Slab,
    q: &[i8],
    qscale: f32,
    league: Option<u16>,
    k: usize,
) -> BinaryHeap<Hit> {
    scan(slab, q, qscale, league, k)
}

fn scan_best(slab: &Slab, q: &[i8], qscale: f32, league: Option<u16>, k: usize) -> BinaryHeap<Hit> {
    #[cfg(target_arch = "x86_64")]
    if std::arch::is_x86_feature_detected!("avx2") {
        // SAFETY: the CPU was just found to support AVX2.
        return unsafe { scan_avx2(slab, q, qscale, league, k) };
    }
    scan(slab, q, qscale, league, k)
}

/// A candidate with its similarity, ordered for a min-heap of the best `k`.
#[derive(Debug, Clone, Copy, PartialEq)]
struct Hit(f32, i64);

impl Eq for Hit {}

impl PartialOrd for Hit {
    fn partial_cmp(&self, other: &Self) -> Option<CmpOrdering> {
        Some(self.cmp(other))
    }
}

impl Ord for Hit {
    fn cmp(&self, other: &Self) -> CmpOrdering {
        // Reversed: the heap's top is the worst kept hit.
        other
            .0
            .total_cmp(&self.0)
            .then_with(|| self.1.cmp(&other.1))
    }
}

/// The vectors of one model, by dimension.
#[derive(Debug, Clone, Default)]
pub struct VectorIndex {
    slabs: Vec<Slab>,
    leagues: Vec<String>,
}

impl VectorIndex {
    fn league_code(&mut self, league: &str) -> u16 {
        match self.leagues.iter().position(|l| l == league) {
            Some(i) => i as u16,
            None => {
                self.leagues.push(league.to_string());
                (self.leagues.len() - 1) as u16
            }
        }
    }

    /// Adds or replaces the vector of `market_id` (a vector that cannot be normalised is left out).
    pub fn upsert(&mut self, market_id: i64, league: &str, vector: &[f32]) {
        let Some((scale, q)) = quantise(vector) else {
            return;
        };
        let code = self.league_code(league);
        for slab in self.slabs.iter_mut().filter(|s| s.dim != q.len()) {
            slab.remove(market_id);
        }
        let slab = match self.slabs.iter().position(|s| s.dim == q.len()) {
            Some(i) => &mut self.slabs[i],
            None => {
                self.slabs.push(Slab {
                    dim: q.len(),
                    ..Slab::default()
                });
                self.slabs.last_mut().expect("just pushed")
            }
        };
        slab.put(market_id, code, scale, &q);
    }

    /// Vectors held, over every dimension.
    pub fn len(&self) -> usize {
        self.slabs.iter().map(|s| s.ids.len()).sum()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The dimensions held, with their vector counts.
    pub fn dimensions(&self) -> Vec<(usize, usize)> {
        self.slabs.iter().map(|s| (s.dim, s.ids.len())).collect()
    }

    /// The `k` markets most similar (cosine) to `query`, best first, among those of `league`
    /// when given; only vectors of the query's dimension take part.
    pub fn nearest(&self, query: &[f32], league: Option<&str>, k: usize) -> Vec<(i64, f32)> {
        let Some((qscale, q)) = quantise(query) else {
            return Vec::new();
        };
        let Some(slab) = self.slabs.iter().find(|s| s.dim == q.len()) else {
            return Vec::new();
        };
        let code = match league {
            Some(l) => match self.leagues.iter().position(|x| x == l) {
                Some(i) => Some(i as u16),
                None => return Vec::new(),
            },
            None => None,
        };
        let heap = scan_best(slab, &q, qscale, code, k);
        let mut hits: Vec<(i64, f32)> = heap.into_iter().map(|h| (h.1, h.0)).collect();
        hits.sort_by(|a, b| b.1.total_cmp(&a.1).then(a.0.cmp(&b.0)));
        hits
    }
}

/// The search figures `/metrics` and `/debug/status` show.
#[derive(Debug, Default)]
pub struct SearchStats {
    /// Markets whose vector is missing or stale, as the last backfill pass counted.
    pub backlog: AtomicU64,
    /// Vectors the local backfill committed since the process started.
    pub embedded_total: AtomicU64,
    /// Failed calls to the embeddings API (backfill and query embeddings).
    pub upstream_errors_total: AtomicU64,
    /// Vectors per second of the last backfill pass that embedded any (as f64 bits).
    rate_bits: AtomicU64,
    /// Vectors the local index holds.
    pub index_vectors: AtomicU64,
}

impl SearchStats {
    pub fn rate(&self) -> f64 {
        f64::from_bits(self.rate_bits.load(Ordering::Relaxed))
    }

    pub fn set_rate(&self, per_second: f64) {
        self.rate_bits
            .store(per_second.to_bits(), Ordering::Relaxed);
    }
}

/// What the `search` and `backfill` services and the HTTP handlers share: the running index
/// actor's address (none while it is down or loading) and the figures.
#[derive(Debug, Default)]
pub struct SearchHub {
    index: RwLock<Option<Addr<SearchIndex>>>,
    pub stats: SearchStats,
}

impl SearchHub {
    pub fn new() -> Arc<Self> {
        Arc::new(SearchHub::default())
    }

    fn set(&self, addr: Option<Addr<SearchIndex>>) {
        *self.index.write().unwrap_or_else(|e| e.into_inner()) = addr;
    }

    /// The index actor, once it has loaded.
    pub fn index(&self) -> Option<Addr<SearchIndex>> {
        self.index
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
            .filter(|a| a.connected())
    }

    /// Hands freshly committed vectors to the local index (dropped when it is not running: it
    /// reads them from the database when it starts).
    pub fn add(&self, vectors: Vec<NewIndexVector>) {
        if let Some(index) = self.index() {
            index.do_send(AddVectors(vectors));
        }
    }

    /// The `k` nearest markets to `query`, or `None` when the index is not running or does not
    /// answer within `within`.
    pub async fn nearest(
        &self,
        query: Vec<f32>,
        league: Option<String>,
        k: usize,
        within: Duration,
    ) -> Option<Vec<(i64, f32)>> {
        let index = self.index()?;
        match tokio::time::timeout(within, index.send(Nearest { query, league, k })).await {
            Ok(Ok(hits)) => Some(hits),
            _ => None,
        }
    }
}

/// The nearest markets to a query vector.
#[derive(Debug, Message)]
#[rtype(result = "Vec<(i64, f32)>")]
pub struct Nearest {
    pub query: Vec<f32>,
    pub league: Option<String>,
    pub k: usize,
}

/// Vectors the local backfill just committed: (market id, league, vector, `embedded_at`).
#[derive(Debug, Message)]
#[rtype(result = "()")]
pub struct AddVectors(pub Vec<NewIndexVector>);

/// One vector for the index: (market id, league, vector, when it was embedded).
pub type NewIndexVector = (i64, String, Vec<f32>, DateTime<Utc>);

/// Vectors handed over by the local backfill are applied together at most this often, so a
/// fast backfill does not copy the index once per batch while searches hold it.
const APPLY_EVERY: Duration = Duration::from_millis(250);

/// Hybrid search's settings (the vector index runs only with `embeddings_url`).
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize, schemars::JsonSchema)]
#[serde(default)]
pub struct SearchSettings {
    /// The embeddings model whose vectors the index holds.
    #[serde(rename = "embeddings_model")]
    pub model: String,
    /// How often each replica's vector index reads vectors other replicas wrote.
    #[serde(rename = "search_refresh_interval", with = "crate::settings::NonZero")]
    pub refresh_interval: Duration,
    /// Longest a search waits for its query's embedding (and the vector index) before it
    /// answers with keyword ranking alone.
    #[serde(rename = "search_embed_timeout", with = "crate::settings::NonZero")]
    pub embed_timeout: Duration,
}

impl Default for SearchSettings {
    fn default() -> Self {
        SearchSettings {
            model: crate::embeddings::EmbeddingsConfig::default().model,
            refresh_interval: Duration::from_secs(10),
            embed_timeout: Duration::from_millis(300),
        }
    }
}

impl crate::settings::Section for SearchSettings {}

pub struct SearchIndex {
    store: Store,
    hub: Arc<SearchHub>,
    settings: SearchSettings,
    svc: ServiceCtx,
    gate: TickGate,
    index: Arc<VectorIndex>,
    loaded: bool,
    /// The newest `embedded_at` read from the database.
    newest: Option<DateTime<Utc>>,
    /// The `embedded_at` of each vector held: a refresh that reads a row again skips it.
    versions: HashMap<i64, DateTime<Utc>>,
    /// Vectors from the local backfill, not applied yet.
    pending: Vec<NewIndexVector>,
}

impl SearchIndex {
    pub fn new(
        store: Store,
        hub: Arc<SearchHub>,
        settings: SearchSettings,
        svc: ServiceCtx,
    ) -> Self {
        SearchIndex {
            store,
            hub,
            settings,
            svc,
            gate: TickGate::default(),
            index: Arc::new(VectorIndex::default()),
            loaded: false,
            newest: None,
            versions: HashMap::new(),
            pending: Vec::new(),
        }
    }

    fn apply_pending(&mut self) {
        let pending = std::mem::take(&mut self.pending);
        let fresh: Vec<_> = pending
            .into_iter()
            .filter(|v| self.versions.get(&v.0) != Some(&v.3))
            .collect();
        if fresh.is_empty() {
            return;
        }
        let index = Arc::make_mut(&mut self.index);
        for (id, league, vector, at) in &fresh {
            index.upsert(*id, league, vector);
            self.versions.insert(*id, *at);
            self.newest = self.newest.max(Some(*at));
        }
        self.hub
            .stats
            .index_vectors
            .store(self.index.len() as u64, Ordering::Relaxed);
    }

    /// Reads every vector (`since` is `None`: the first load), page by page; or, for a
    /// refresh, the ids and times of the vectors embedded since `since`, then only the
    /// vectors of those this index does not hold in that version.
    async fn read(
        store: Store,
        model: String,
        since: Option<DateTime<Utc>>,
        held: HashMap<i64, DateTime<Utc>>,
    ) -> Result<Vec<crate::store::StoredVector>, StoreError> {
        let mut out = Vec::new();
        if since.is_some() {
            let changed: Vec<i64> = store
                .vector_versions_since(&model, since)
                .await?
                .into_iter()
                .filter(|(id, at)| held.get(id) != Some(at))
                .map(|(id, _)| id)
                .collect();
            for ids in changed.chunks(1000) {
                out.extend(store.vectors_of(&model, ids).await?);
            }
            return Ok(out);
        }
        let mut after = 0;
        loop {
            let page = store.vectors_after(&model, after, LOAD_PAGE).await?;
            let n = page.len();
            if let Some(last) = page.last() {
                after = last.market_id;
            }
            out.extend(page);
            if (n as i64) < LOAD_PAGE {
                return Ok(out);
            }
        }
    }

    /// The first load (everything), then refreshes (what is newer than the last seen, with an
    /// overlap).
    fn refresh(&mut self, ctx: &mut Context<Self>) {
        if !self.gate.ready() || !self.svc.may_work() {
            return;
        }
        self.gate.begin(&self.svc);
        let since = if self.loaded {
            self.newest.map(|t| t - REFRESH_OVERLAP)
        } else {
            None
        };
        let (store, model) = (self.store.clone(), self.settings.model.clone());
        let held = if since.is_some() {
            self.versions.clone()
        } else {
            HashMap::new()
        };
        ctx.spawn(
            Self::read(store, model, since, held)
                .into_actor(self)
                .map(|res, act, ctx| {
                    let stop = act.gate.end();
                    match res {
                        Ok(rows) => {
                            let fresh: Vec<_> = rows
                                .into_iter()
                                .filter(|r| act.versions.get(&r.market_id) != Some(&r.embedded_at))
                                .collect();
                            if !fresh.is_empty() {
                                let index = Arc::make_mut(&mut act.index);
                                for row in &fresh {
                                    index.upsert(row.market_id, &row.league, &row.components());
                                    act.versions.insert(row.market_id, row.embedded_at);
                                    act.newest = act.newest.max(Some(row.embedded_at));
                                }
                            }
                            let index = &act.index;
                            if !act.loaded {
                                act.loaded = true;
                                act.hub.set(Some(ctx.address()));
                                tracing::info!(vectors = index.len(), dimensions = ?index.dimensions(), "search index loaded");
                            }
                            act.hub
                                .stats
                                .index_vectors
                                .store(act.index.len() as u64, Ordering::Relaxed);
                            act.svc.tick_ok();
                        }
                        Err(e) => act.svc.tick_err(&e),
                    }
                    let every = act.settings.refresh_interval;
                    let dims: Vec<String> = act
                        .index
                        .dimensions()
                        .iter()
                        .map(|(d, n)| format!("{n} × {d}"))
                        .collect();
                    act.svc.schedule(
                        every,
                        format!(
                            "vectors: {}; refresh: {}",
                            if dims.is_empty() {
                                "none yet".to_string()
                            } else {
                                dims.join(", ")
                            },
                            humantime(every)
                        ),
                    );
                    if stop {
                        ctx.stop();
                    }
                }),
        );
    }
}

impl Actor for SearchIndex {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Self::Context) {
        self.refresh(ctx);
        ctx.run_interval(self.settings.refresh_interval, |act, ctx| act.refresh(ctx));
    }

    fn stopped(&mut self, _: &mut Self::Context) {
        self.hub.set(None);
    }
}

impl Handler<Control> for SearchIndex {
    type Result = ();

    fn handle(&mut self, msg: Control, ctx: &mut Self::Context) {
        if self.gate.control(msg, ctx) {
            self.refresh(ctx);
        }
    }
}

impl Handler<Nearest> for SearchIndex {
    type Result = ResponseFuture<Vec<(i64, f32)>>;

    fn handle(&mut self, msg: Nearest, _: &mut Self::Context) -> Self::Result {
        let index = self.index.clone();
        Box::pin(async move {
            tokio::task::spawn_blocking(move || {
                index.nearest(&msg.query, msg.league.as_deref(), msg.k)
            })
            .await
            .unwrap_or_default()
        })
    }
}

impl Handler<AddVectors> for SearchIndex {
    type Result = ();

    fn handle(&mut self, msg: AddVectors, ctx: &mut Self::Context) {
        let first = self.pending.is_empty();
        self.pending.extend(msg.0);
        if first {
            ctx.run_later(APPLY_EVERY, |act, _| act.apply_pending());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn v(xs: &[f32]) -> Vec<f32> {
        xs.to_vec()
    }

    #[test]
    fn nearest_ranks_by_cosine_and_filters_by_league() {
        let mut idx = VectorIndex::default();
        idx.upsert(1, "nba", &v(&[1.0, 0.0, 0.0]));
        idx.upsert(2, "nba", &v(&[0.7, 0.7, 0.0]));
        idx.upsert(3, "mlb", &v(&[0.9, 0.1, 0.0]));
        idx.upsert(4, "nba", &v(&[0.0, 0.0, 1.0]));
        let hits = idx.nearest(&[1.0, 0.05, 0.0], None, 3);
        let ids: Vec<i64> = hits.iter().map(|h| h.0).collect();
        assert_eq!(ids, vec![1, 3, 2]);
        assert!(hits[0].1 > 0.98 && hits[0].1 <= 1.01, "{hits:?}");
        let nba: Vec<i64> = idx
            .nearest(&[1.0, 0.05, 0.0], Some("nba"), 10)
            .iter()
            .map(|h| h.0)
            .collect();
        assert_eq!(nba, vec![1, 2, 4]);
        assert!(idx.nearest(&[1.0, 0.0, 0.0], Some("nhl"), 3).is_empty());
    }

    #[test]
    fn a_replaced_vector_moves_and_other_dimensions_are_kept_apart() {
        let mut idx = VectorIndex::default();
        idx.upsert(1, "nba", &v(&[1.0, 0.0]));
        idx.upsert(2, "nba", &v(&[0.0, 1.0]));
        idx.upsert(3, "nba", &v(&[0.5, 0.5]));
        idx.upsert(1, "nba", &v(&[0.0, 0.0, 1.0]));
        assert_eq!(idx.dimensions(), vec![(2, 2), (3, 1)]);
        assert_eq!(idx.nearest(&[1.0, 0.0], None, 5)[0].0, 3);
        assert_eq!(
            idx.nearest(&[0.0, 0.1, 1.0], None, 5),
            vec![(1, idx.nearest(&[0.0, 0.1, 1.0], None, 5)[0].1)]
        );
        idx.upsert(2, "nba", &v(&[0.9, 0.1]));
        assert_eq!(idx.nearest(&[1.0, 0.0], None, 1)[0].0, 2);
        assert_eq!(idx.len(), 3);
    }
}
