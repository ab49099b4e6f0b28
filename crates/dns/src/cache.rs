//! A bounded map whose entries expire at a deadline (a record's TTL, or the
//! negative-cache TTL for failures).
//!
//! Deadlines are `tokio::time::Instant`s so that tests can step a paused clock
//! instead of sleeping through TTLs.

use std::collections::HashMap;
use std::hash::Hash;

use parking_lot::Mutex;
use tokio::time::Instant;

pub(crate) struct TtlCache<K, V> {
    entries: Mutex<HashMap<K, (V, Instant)>>,
    capacity: usize,
}

impl<K: Eq + Hash + Clone, V: Clone> TtlCache<K, V> {
    pub(crate) fn new(capacity: usize) -> Self {
        TtlCache {
            entries: Mutex::new(HashMap::new()),
            capacity: capacity.max(1),
        }
    }

    /// The live entry for `key` and its deadline; an expired entry is removed
    /// and reported as missing.
    pub(crate) fn get(&self, key: &K) -> Option<(V, Instant)> {
        let now = Instant::now();
        let mut entries = self.entries.lock();
        match entries.get(key) {
            Some((value, expires)) if *expires > now => Some((value.clone(), *expires)),
            Some(_) => {
                entries.remove(key);
                None
            }
            None => None,
        }
    }

    pub(crate) fn insert(&self, key: K, value: V, expires: Instant) {
        let mut entries = self.entries.lock();
        if entries.len() >= self.capacity && !entries.contains_key(&key) {
            make_room(&mut entries, self.capacity);
        }
        entries.insert(key, (value, expires));
    }

    pub(crate) fn clear(&self) {
        self.entries.lock().clear();
    }

    #[cfg(test)]
    pub(crate) fn len(&self) -> usize {
        self.entries.lock().len()
    }
}

/// Drop the expired entries; if that frees nothing, drop the half that
/// expires soonest. Halving (rather than one entry per insert) keeps a full
/// cache's inserts cheap on average while thousands of distinct domains stream
/// through.
fn make_room<K: Eq + Hash + Clone, V>(entries: &mut HashMap<K, (V, Instant)>, capacity: usize) {
    let now = Instant::now();
    entries.retain(|_, (_, expires)| *expires > now);
    if entries.len() < capacity {
        return;
    }
    let mut deadlines: Vec<Instant> = entries.values().map(|(_, e)| *e).collect();
    let middle = deadlines.len() / 2;
    let (_, cutoff, _) = deadlines.select_nth_unstable(middle);
    let cutoff = *cutoff;
    entries.retain(|_, (_, expires)| *expires > cutoff);
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[tokio::test(start_paused = true)]
    async fn an_entry_is_served_until_its_deadline_and_not_after() {
        let cache = TtlCache::new(8);
        let expires = Instant::now() + Duration::from_secs(30);
        cache.insert("a", 1, expires);
        tokio::time::advance(Duration::from_secs(29)).await;
        assert_eq!(cache.get(&"a"), Some((1, expires)));
        tokio::time::advance(Duration::from_secs(1)).await;
        assert_eq!(cache.get(&"a"), None);
        assert_eq!(cache.len(), 0, "the expired entry is removed on lookup");
    }

    #[tokio::test(start_paused = true)]
    async fn a_full_cache_drops_expired_entries_first() {
        let cache = TtlCache::new(3);
        let now = Instant::now();
        cache.insert("old1", 1, now + Duration::from_secs(1));
        cache.insert("old2", 2, now + Duration::from_secs(1));
        cache.insert("live", 3, now + Duration::from_secs(100));
        tokio::time::advance(Duration::from_secs(2)).await;
        cache.insert("new", 4, Instant::now() + Duration::from_secs(100));
        assert_eq!(cache.len(), 2);
        assert!(cache.get(&"live").is_some());
        assert!(cache.get(&"new").is_some());
    }

    #[tokio::test(start_paused = true)]
    async fn a_full_cache_of_live_entries_drops_those_expiring_soonest() {
        let cache = TtlCache::new(4);
        let now = Instant::now();
        for (i, key) in ["a", "b", "c", "d"].into_iter().enumerate() {
            cache.insert(key, i, now + Duration::from_secs(10 * (i as u64 + 1)));
        }
        cache.insert("e", 9, now + Duration::from_secs(500));
        assert!(cache.len() <= 4);
        assert!(cache.get(&"a").is_none(), "the soonest deadline goes first");
        assert!(cache.get(&"d").is_some());
        assert!(cache.get(&"e").is_some());
    }

    #[tokio::test]
    async fn replacing_a_key_in_a_full_cache_evicts_nothing() {
        let cache = TtlCache::new(2);
        let later = Instant::now() + Duration::from_secs(60);
        cache.insert("a", 1, later);
        cache.insert("b", 2, later);
        cache.insert("a", 3, later);
        assert_eq!(cache.get(&"a").map(|(v, _)| v), Some(3));
        assert_eq!(cache.get(&"b").map(|(v, _)| v), Some(2));
    }
}
