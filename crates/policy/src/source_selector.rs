//! Picking an egress source from a pool: smooth weighted round robin. Deterministic (tests and
//! operators can predict it) and interleaved: weights 3 and 1 give `a a b a`, not `a a a b`,
//! so a lightly weighted source (an address being warmed up) is used evenly over time rather
//! than in bursts.
//!
//! Each pick adds every entry's weight to its running credit, takes the entry with the most
//! credit (the first one on a tie) and charges it the sum of all weights.

use crate::egress_source::EgressPool;

/// Round-robin state for one pool; keep one per scheduled queue (as KumoMTA does) and rebuild
/// it when [`SourceSelector::is_for`] says the pool changed.
#[derive(Debug, Clone)]
pub struct SourceSelector {
    pool: String,
    /// Entries with a weight above 0, in the pool's order: (source name, weight).
    entries: Vec<(String, u32)>,
    /// Running credit per entry.
    credit: Vec<i64>,
    total: i64,
}

impl SourceSelector {
    pub fn new(pool: &EgressPool) -> Self {
        let entries: Vec<(String, u32)> = pool
            .entries
            .iter()
            .filter(|e| e.weight > 0)
            .map(|e| (e.name.clone(), e.weight))
            .collect();
        let total = entries.iter().map(|(_, w)| i64::from(*w)).sum();
        SourceSelector {
            pool: pool.name.clone(),
            credit: vec![0; entries.len()],
            entries,
            total,
        }
    }

    /// Whether this state was built for exactly `pool`'s name and weighted entries.
    pub fn is_for(&self, pool: &EgressPool) -> bool {
        self.pool == pool.name
            && self.entries.iter().map(|(n, w)| (n.as_str(), *w)).eq(pool
                .entries
                .iter()
                .filter(|e| e.weight > 0)
                .map(|e| (e.name.as_str(), e.weight)))
    }

    /// The next source name; `None` when the pool has no entry with a weight above 0.
    pub fn next_source(&mut self) -> Option<&str> {
        let mut best: Option<usize> = None;
        for (i, (_, w)) in self.entries.iter().enumerate() {
            self.credit[i] += i64::from(*w);
            if best.is_none_or(|b| self.credit[i] > self.credit[b]) {
                best = Some(i);
            }
        }
        let pick = best?;
        self.credit[pick] -= self.total;
        Some(self.entries[pick].0.as_str())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::egress_source::EgressPoolEntry;

    fn pool(entries: &[(&str, u32)]) -> EgressPool {
        EgressPool {
            name: "p".into(),
            entries: entries
                .iter()
                .map(|(n, w)| EgressPoolEntry {
                    name: n.to_string(),
                    weight: *w,
                })
                .collect(),
            ttl: std::time::Duration::from_secs(60),
        }
    }

    fn picks(sel: &mut SourceSelector, n: usize) -> Vec<String> {
        (0..n)
            .map(|_| sel.next_source().unwrap().to_string())
            .collect()
    }

    #[test]
    fn weights_3_and_1_over_8_picks_give_6_and_2_interleaved() {
        let mut sel = SourceSelector::new(&pool(&[("a", 3), ("b", 1)]));
        assert_eq!(picks(&mut sel, 8), ["a", "a", "b", "a", "a", "a", "b", "a"]);
    }

    #[test]
    fn equal_weights_are_plain_round_robin() {
        let mut sel = SourceSelector::new(&pool(&[("a", 1), ("b", 1), ("c", 1)]));
        assert_eq!(picks(&mut sel, 6), ["a", "b", "c", "a", "b", "c"]);
    }

    #[test]
    fn each_source_gets_its_weighted_share_of_every_cycle() {
        let mut sel = SourceSelector::new(&pool(&[("a", 5), ("b", 2), ("c", 1)]));
        let got = picks(&mut sel, 800);
        for (name, want) in [("a", 500), ("b", 200), ("c", 100)] {
            assert_eq!(got.iter().filter(|n| *n == name).count(), want, "{name}");
        }
        // Never more than two picks of "a" in a row with these weights: it is interleaved.
        assert!(!got.windows(3).any(|w| w.iter().all(|n| n == "a")));
    }

    #[test]
    fn weight_zero_entries_are_never_picked_and_an_empty_pool_gives_none() {
        let mut sel = SourceSelector::new(&pool(&[("off", 0), ("on", 2)]));
        assert_eq!(picks(&mut sel, 3), ["on", "on", "on"]);
        let mut sel = SourceSelector::new(&pool(&[("off", 0)]));
        assert_eq!(sel.next_source(), None);
        let mut sel = SourceSelector::new(&pool(&[]));
        assert_eq!(sel.next_source(), None);
    }

    #[test]
    fn is_for_notices_a_changed_weight_or_name() {
        let p = pool(&[("a", 3), ("b", 1), ("z", 0)]);
        let sel = SourceSelector::new(&p);
        assert!(sel.is_for(&p));
        assert!(sel.is_for(&pool(&[("a", 3), ("b", 1)])));
        assert!(!sel.is_for(&pool(&[("a", 2), ("b", 1)])));
        assert!(!sel.is_for(&pool(&[("a", 3), ("c", 1)])));
    }
}
