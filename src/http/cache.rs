//! A small cache of serialized public list answers (`/api/v1/games`, `/api/v1/markets`), keyed
//! by route and the parsed, normalised parameters (so `?league=NBA&limit=050` and
//! `?limit=50&league=nba` are one entry, and junk never reaches a key: unknown parameters are
//! a 400 before any handler runs).
//!
//! An entry is served only while the store's write generation is the one it was computed under
//! (any committed write of games or markets in this process invalidates every entry) and for
//! at most the TTL, which bounds how long a write by another replica on the same PostgreSQL
//! stays unseen. A TTL of zero turns the cache off. The cache holds at most
//! `TIPOFF_READ_CACHE_MAX_BYTES` of answers (and [`MAX_ENTRIES`] entries): past either, expired
//! entries go first, then the least recently used (a hit only stamps its entry; the order is
//! sorted when room is needed).

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use actix_web::web::Bytes;
use tipoff_actors::Store;

/// Entries kept at most, however small.
pub const MAX_ENTRIES: usize = 4096;

/// What an entry costs besides its body (key, map slots, bookkeeping), roughly.
const ENTRY_OVERHEAD: usize = 128;

struct Entry {
    generation: u64,
    at: Instant,
    body: Bytes,
    /// Its place in the use order.
    used: u64,
}

impl Entry {
    fn cost(&self, key: &str) -> usize {
        self.body.len() + key.len() + ENTRY_OVERHEAD
    }
}

#[derive(Default)]
struct Inner {
    entries: HashMap<String, Entry>,
    /// The use clock: each hit or put stamps its entry with the next tick.
    tick: u64,
    bytes: usize,
}

impl Inner {
    fn remove(&mut self, key: &str) {
        if let Some(e) = self.entries.remove(key) {
            self.bytes -= e.cost(key);
        }
    }
}

/// The cache's figures, for `/metrics`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CacheStats {
    pub entries: usize,
    pub bytes: usize,
    pub hits: u64,
    pub misses: u64,
    pub evictions: u64,
}

pub struct ReadCache {
    ttl: Duration,
    max_bytes: usize,
    inner: Mutex<Inner>,
    hits: AtomicU64,
    misses: AtomicU64,
    evictions: AtomicU64,
}

impl ReadCache {
    pub fn new(ttl: Duration, max_bytes: usize) -> Self {
        ReadCache {
            ttl,
            max_bytes,
            inner: Mutex::new(Inner::default()),
            hits: AtomicU64::new(0),
            misses: AtomicU64::new(0),
            evictions: AtomicU64::new(0),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The cached answer for `key`, if still current.
    pub fn get(&self, key: &str) -> Option<Bytes> {
        if self.ttl.is_zero() {
            return None;
        }
        let generation = Store::write_generation();
        let mut inner = self.lock();
        let found = inner.entries.get(key).map(|e| {
            (
                e.generation == generation && e.at.elapsed() < self.ttl,
                e.body.clone(),
            )
        });
        match found {
            Some((true, body)) => {
                inner.tick += 1;
                let tick = inner.tick;
                if let Some(e) = inner.entries.get_mut(key) {
                    e.used = tick;
                }
                self.hits.fetch_add(1, Ordering::Relaxed);
                Some(body)
            }
            Some((false, _)) => {
                inner.remove(key);
                self.misses.fetch_add(1, Ordering::Relaxed);
                None
            }
            None => {
                self.misses.fetch_add(1, Ordering::Relaxed);
                None
            }
        }
    }

    /// Keeps `body`, computed from data read under `generation` (taken before the query).
    pub fn put(&self, key: String, generation: u64, body: Bytes) {
        if self.ttl.is_zero() || body.len() + key.len() + ENTRY_OVERHEAD > self.max_bytes {
            return;
        }
        let mut inner = self.lock();
        inner.remove(&key);
        inner.tick += 1;
        let entry = Entry {
            generation,
            at: Instant::now(),
            body,
            used: inner.tick,
        };
        let cost = entry.cost(&key);
        if inner.bytes + cost > self.max_bytes || inner.entries.len() >= MAX_ENTRIES {
            self.evict(&mut inner, cost);
        }
        inner.bytes += cost;
        inner.entries.insert(key, entry);
    }

    /// Makes room for `cost` more bytes and one more entry: expired or outdated entries
    /// first; when that is not enough, the least recently used, down to 7/8 of the bounds so
    /// that a flood of new keys pays for one sort per eighth of the cache rather than one per
    /// put.
    fn evict(&self, inner: &mut Inner, cost: usize) {
        let generation = Store::write_generation();
        let before = inner.entries.len();
        let mut bytes = inner.bytes;
        inner.entries.retain(|k, e| {
            let keep = e.generation == generation && e.at.elapsed() < self.ttl;
            if !keep {
                bytes -= e.cost(k);
            }
            keep
        });
        inner.bytes = bytes;
        let byte_goal = (self.max_bytes / 8 * 7).saturating_sub(cost);
        let entry_goal = MAX_ENTRIES / 8 * 7;
        let fits = inner.bytes + cost <= self.max_bytes && inner.entries.len() < MAX_ENTRIES;
        if !fits {
            let mut by_use: Vec<(u64, usize, String)> = inner
                .entries
                .iter()
                .map(|(k, e)| (e.used, e.cost(k), k.clone()))
                .collect();
            by_use.sort_unstable_by_key(|(used, _, _)| *used);
            let mut left = inner.entries.len();
            let mut bytes = inner.bytes;
            let mut gone = Vec::new();
            for (_, c, key) in by_use {
                if bytes <= byte_goal && left <= entry_goal {
                    break;
                }
                bytes -= c;
                left -= 1;
                gone.push(key);
            }
            for key in gone {
                inner.remove(&key);
            }
        }
        self.evictions
            .fetch_add((before - inner.entries.len()) as u64, Ordering::Relaxed);
    }

    pub fn stats(&self) -> CacheStats {
        let inner = self.lock();
        CacheStats {
            entries: inner.entries.len(),
            bytes: inner.bytes,
            hits: self.hits.load(Ordering::Relaxed),
            misses: self.misses.load(Ordering::Relaxed),
            evictions: self.evictions.load(Ordering::Relaxed),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_entry_computed_before_a_write_is_not_served_after_it() {
        let cache = ReadCache::new(Duration::from_secs(60), 1 << 20);
        // Nothing in this test binary writes through a store, so the generation holds still.
        let before = Store::write_generation();
        cache.put("k".into(), before, Bytes::from_static(b"old"));
        assert_eq!(cache.get("k").as_deref(), Some(&b"old"[..]));
        cache.put(
            "k".into(),
            before.wrapping_sub(1),
            Bytes::from_static(b"stale"),
        );
        assert_eq!(cache.get("k"), None, "computed under an older generation");
        assert_eq!(cache.stats().entries, 0, "and dropped when found stale");
    }

    #[test]
    fn a_zero_ttl_turns_the_cache_off() {
        let cache = ReadCache::new(Duration::ZERO, 1 << 20);
        cache.put(
            "k".into(),
            Store::write_generation(),
            Bytes::from_static(b"x"),
        );
        assert_eq!(cache.get("k"), None);
    }

    #[test]
    fn the_least_recently_used_go_first_and_the_bytes_stay_bounded() {
        let body = Bytes::from(vec![b'x'; 1000]);
        let max = 20 * (1000 + ENTRY_OVERHEAD + 8);
        let cache = ReadCache::new(Duration::from_secs(60), max);
        let g = Store::write_generation();
        cache.put("hot".into(), g, body.clone());
        for i in 0..1025 {
            cache.put(format!("junk{i:04}"), g, body.clone());
            // The hot entry is read between the junk ones.
            assert!(cache.get("hot").is_some(), "hot entry evicted at junk {i}");
            let stats = cache.stats();
            assert!(stats.bytes <= max, "{} bytes over {max}", stats.bytes);
        }
        let stats = cache.stats();
        assert!(stats.entries <= 20, "{stats:?}");
        assert!(stats.evictions >= 1000, "{stats:?}");
        assert_eq!(cache.get("junk0000"), None, "an old junk entry went");
    }

    #[test]
    fn expired_entries_are_evicted_before_live_ones() {
        let body = Bytes::from(vec![b'x'; 1000]);
        let max = 3 * (1000 + ENTRY_OVERHEAD + 8);
        let cache = ReadCache::new(Duration::from_millis(100), max);
        let g = Store::write_generation();
        cache.put("old".into(), g, body.clone());
        std::thread::sleep(Duration::from_millis(150));
        cache.put("a".into(), g, body.clone());
        cache.put("b".into(), g, body.clone());
        cache.put("c".into(), g, body.clone());
        assert_eq!(cache.stats().entries, 3);
        assert!(cache.get("a").is_some() && cache.get("b").is_some() && cache.get("c").is_some());
    }
}
