//! A small lock-free histogram. prometheus-client's histogram does not
//! expose its count and sum, which `/metrics.json` needs, so we keep our own.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

/// Upper bounds in seconds; Lua event handlers range from microseconds
/// (a table lookup) to seconds (a broker round trip).
pub(crate) const LATENCY_BUCKETS: &[f64] = &[
    0.000_1, 0.000_25, 0.000_5, 0.001, 0.002_5, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5,
    5.0, 10.0,
];

/// KumoMTA's buckets for `deliver_message_latency_rollup`.
pub(crate) const DELIVER_BUCKETS: &[f64] = &[
    0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
];

struct Inner {
    bounds: &'static [f64],
    /// Non-cumulative counts; one extra slot for `+Inf`.
    counts: Box<[AtomicU64]>,
    count: AtomicU64,
    /// f64 bits, updated with a CAS loop.
    sum: AtomicU64,
}

/// A histogram handle; clones share the same data.
#[derive(Clone)]
pub struct Histogram(Arc<Inner>);

impl std::fmt::Debug for Histogram {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Histogram")
            .field("count", &self.count())
            .field("sum", &self.sum())
            .finish()
    }
}

/// A point-in-time copy of a histogram, with cumulative bucket counts.
#[derive(Debug, Clone, PartialEq)]
pub struct HistogramSnapshot {
    pub count: u64,
    pub sum: f64,
    /// `(upper_bound, cumulative_count)`; the last bound is `+Inf`.
    pub buckets: Vec<(f64, u64)>,
}

impl Histogram {
    pub(crate) fn new(bounds: &'static [f64]) -> Self {
        let counts = (0..=bounds.len()).map(|_| AtomicU64::new(0)).collect();
        Self(Arc::new(Inner {
            bounds,
            counts,
            count: AtomicU64::new(0),
            sum: AtomicU64::new(0f64.to_bits()),
        }))
    }

    /// Record one observation, in seconds.
    pub fn observe(&self, seconds: f64) {
        let inner = &*self.0;
        let slot = inner
            .bounds
            .iter()
            .position(|b| seconds <= *b)
            .unwrap_or(inner.bounds.len());
        if let Some(c) = inner.counts.get(slot) {
            c.fetch_add(1, Ordering::Relaxed);
        }
        inner.count.fetch_add(1, Ordering::Relaxed);
        let mut cur = inner.sum.load(Ordering::Relaxed);
        loop {
            let next = (f64::from_bits(cur) + seconds).to_bits();
            match inner
                .sum
                .compare_exchange_weak(cur, next, Ordering::Relaxed, Ordering::Relaxed)
            {
                Ok(_) => break,
                Err(actual) => cur = actual,
            }
        }
    }

    pub fn observe_duration(&self, d: Duration) {
        self.observe(d.as_secs_f64());
    }

    pub fn count(&self) -> u64 {
        self.0.count.load(Ordering::Relaxed)
    }

    pub fn sum(&self) -> f64 {
        f64::from_bits(self.0.sum.load(Ordering::Relaxed))
    }

    pub fn snapshot(&self) -> HistogramSnapshot {
        let inner = &*self.0;
        let mut cumulative = 0;
        let buckets = inner
            .bounds
            .iter()
            .copied()
            .chain(std::iter::once(f64::INFINITY))
            .zip(inner.counts.iter())
            .map(|(bound, c)| {
                cumulative += c.load(Ordering::Relaxed);
                (bound, cumulative)
            })
            .collect();
        HistogramSnapshot {
            count: self.count(),
            sum: self.sum(),
            buckets,
        }
    }

    /// Non-cumulative per-bucket counts, as prometheus-client's encoder wants
    /// them; it spells the `+Inf` bound as `f64::MAX`.
    pub(crate) fn raw_buckets(&self) -> Vec<(f64, u64)> {
        let inner = &*self.0;
        inner
            .bounds
            .iter()
            .copied()
            .chain(std::iter::once(f64::MAX))
            .zip(inner.counts.iter())
            .map(|(bound, c)| (bound, c.load(Ordering::Relaxed)))
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn observations_land_in_the_first_bucket_that_covers_them() {
        let h = Histogram::new(&[0.1, 1.0]);
        h.observe(0.05);
        h.observe(0.5);
        h.observe(0.5);
        h.observe(7.0);
        let s = h.snapshot();
        assert_eq!(s.count, 4);
        assert!((s.sum - 8.05).abs() < 1e-9);
        assert_eq!(s.buckets, vec![(0.1, 1), (1.0, 3), (f64::INFINITY, 4)]);
        assert_eq!(h.raw_buckets(), vec![(0.1, 1), (1.0, 2), (f64::MAX, 1)]);
    }
}
