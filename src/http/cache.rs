//! A small cache of serialized public list answers (`/api/v1/games`, `/api/v1/markets`), keyed
//! by route and query string.
//!
//! An entry is served only while the store's write generation is the one it was computed under
//! (any committed write of games or markets in this process invalidates every entry) and for
//! at most the TTL, which bounds how long a write by another replica on the same PostgreSQL
//! stays unseen. A TTL of zero turns the cache off. The map is cleared when it reaches its
//! size bound, so odd query strings cannot grow it without limit.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use actix_web::web::Bytes;
use tipoff_actors::Store;

const MAX_ENTRIES: usize = 1024;

struct Entry {
    generation: u64,
    at: Instant,
    body: Bytes,
}

pub struct ReadCache {
    ttl: Duration,
    entries: Mutex<HashMap<String, Entry>>,
}

impl ReadCache {
    pub fn new(ttl: Duration) -> Self {
        ReadCache {
            ttl,
            entries: Mutex::new(HashMap::new()),
        }
    }

    /// The cached answer for `key`, if still current.
    pub fn get(&self, key: &str) -> Option<Bytes> {
        if self.ttl.is_zero() {
            return None;
        }
        let generation = Store::write_generation();
        let entries = self.entries.lock().unwrap_or_else(|e| e.into_inner());
        entries
            .get(key)
            .filter(|e| e.generation == generation && e.at.elapsed() < self.ttl)
            .map(|e| e.body.clone())
    }

    /// Keeps `body`, computed from data read under `generation` (taken before the query).
    pub fn put(&self, key: String, generation: u64, body: Bytes) {
        if self.ttl.is_zero() {
            return;
        }
        let mut entries = self.entries.lock().unwrap_or_else(|e| e.into_inner());
        if entries.len() >= MAX_ENTRIES {
            entries.clear();
        }
        entries.insert(
            key,
            Entry {
                generation,
                at: Instant::now(),
                body,
            },
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_entry_computed_before_a_write_is_not_served_after_it() {
        let cache = ReadCache::new(Duration::from_secs(60));
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
    }

    #[test]
    fn a_zero_ttl_turns_the_cache_off() {
        let cache = ReadCache::new(Duration::ZERO);
        cache.put(
            "k".into(),
            Store::write_generation(),
            Bytes::from_static(b"x"),
        );
        assert_eq!(cache.get("k"), None);
    }
}
