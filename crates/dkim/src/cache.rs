//! A small map whose entries expire, for the signer and key caches.
//!
//! Policies usually build the signer inside `smtp_server_message_received`, once per message;
//! without a cache each message would re-read and re-parse the key. KumoMTA caches signers by
//! their parameters and keys by their source, each entry living for the signer's `ttl`; so does
//! Hermod. Entries are few (one per domain and selector in use), so a full scan to drop expired
//! ones when the map is full is cheap.

use std::collections::HashMap;
use std::hash::Hash;
use std::time::{Duration, Instant};

use parking_lot::Mutex;

/// Most entries a cache holds (KumoMTA's default capacity for both caches).
pub const CAPACITY: usize = 1024;

pub struct TtlCache<K, V> {
    map: Mutex<HashMap<K, (V, Instant)>>,
    capacity: usize,
}

impl<K: Hash + Eq + Clone, V: Clone> TtlCache<K, V> {
    pub fn new(capacity: usize) -> Self {
        Self {
            map: Mutex::new(HashMap::new()),
            capacity: capacity.max(1),
        }
    }

    /// The live entry for `key`, or the one `make` builds, kept for `ttl`. A failure is not
    /// cached: the next call tries again (a key file fixed in the meantime is picked up).
    /// `make` runs without the lock held, so two callers may both build an entry on a miss;
    /// the later one wins, which is harmless for values built from the same inputs.
    pub fn get_or_try_insert<E>(
        &self,
        key: &K,
        ttl: Duration,
        make: impl FnOnce() -> Result<V, E>,
    ) -> Result<V, E> {
        let now = Instant::now();
        if let Some((v, expires)) = self.map.lock().get(key) {
            if *expires > now {
                return Ok(v.clone());
            }
        }
        let v = make()?;
        // A ttl too large for the clock means "keep": a year is as good as forever here.
        let expires = now
            .checked_add(ttl)
            .or_else(|| now.checked_add(Duration::from_secs(365 * 86_400)))
            .unwrap_or(now);
        let mut map = self.map.lock();
        if map.len() >= self.capacity && !map.contains_key(key) {
            map.retain(|_, (_, e)| *e > now);
            if map.len() >= self.capacity {
                // Still full of live entries: drop the one closest to expiry.
                if let Some(k) = map
                    .iter()
                    .min_by_key(|(_, (_, e))| *e)
                    .map(|(k, _)| k.clone())
                {
                    map.remove(&k);
                }
            }
        }
        map.insert(key.clone(), (v.clone(), expires));
        Ok(v)
    }

    #[cfg(test)]
    pub fn len(&self) -> usize {
        self.map.lock().len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_live_entry_is_reused_and_an_expired_one_rebuilt() {
        let cache = TtlCache::new(4);
        let mut builds = 0;
        let mut get = |ttl| {
            cache
                .get_or_try_insert(&"k", ttl, || {
                    builds += 1;
                    Ok::<_, ()>(builds)
                })
                .unwrap()
        };
        assert_eq!(get(Duration::from_secs(60)), 1);
        assert_eq!(get(Duration::from_secs(60)), 1, "cached");
        let cache = TtlCache::new(4);
        let zero = Duration::ZERO;
        assert_eq!(
            cache.get_or_try_insert(&"k", zero, || Ok::<_, ()>(1)),
            Ok(1)
        );
        assert_eq!(
            cache.get_or_try_insert(&"k", zero, || Ok::<_, ()>(2)),
            Ok(2),
            "a zero ttl expires at once"
        );
    }

    #[test]
    fn failures_are_not_cached_and_capacity_is_kept() {
        let cache = TtlCache::new(2);
        let ttl = Duration::from_secs(60);
        assert_eq!(cache.get_or_try_insert(&1, ttl, || Err("bad")), Err("bad"));
        assert_eq!(
            cache.get_or_try_insert(&1, ttl, || Ok::<_, &str>(10)),
            Ok(10)
        );
        for k in 2..10 {
            cache
                .get_or_try_insert(&k, ttl, || Ok::<_, &str>(k))
                .unwrap();
        }
        assert_eq!(cache.len(), 2);
    }
}
