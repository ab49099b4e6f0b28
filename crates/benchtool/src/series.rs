//! Data preparation for `plot`: the benchmark's own Delivery records (as `hermod logs tail
//! --json` prints them) turned into per-second counts, latency percentiles and a CDF.
//! Kept apart from the drawing so that it can be tested without pixels.

use std::io::BufRead;

use anyhow::{Context, Result};
use chrono::DateTime;
use serde::Deserialize;

/// One delivered message: when it was received and when its delivery was logged, in Unix
/// seconds. A Delivery record is written only after the broker acknowledged the publish.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Delivery {
    pub created: f64,
    pub event: f64,
}

impl Delivery {
    pub fn latency_ms(&self) -> f64 {
        (self.event - self.created) * 1000.0
    }
}

/// Only the fields we need; every other field of the record is ignored.
#[derive(Deserialize)]
struct Record {
    #[serde(rename = "type")]
    kind: String,
    sender: String,
    event_time: String,
    created_time: String,
}

fn unix_seconds(rfc3339: &str) -> Option<f64> {
    let t = DateTime::parse_from_rfc3339(rfc3339).ok()?;
    Some(t.timestamp() as f64 + f64::from(t.timestamp_subsec_nanos()) / 1e9)
}

/// Delivery records of `sender` from JSON lines. Lines that are not records (a server that
/// prints something else, a truncated last line) are skipped rather than failing the run:
/// the count in the summary shows how many were usable.
pub fn read_deliveries(input: impl BufRead, sender: &str) -> Result<Vec<Delivery>> {
    let mut out = Vec::new();
    for line in input.lines() {
        let line = line.context("reading delivery records")?;
        let Ok(rec) = serde_json::from_str::<Record>(&line) else {
            continue;
        };
        if rec.kind != "Delivery" || rec.sender != sender {
            continue;
        }
        if let (Some(created), Some(event)) = (
            unix_seconds(&rec.created_time),
            unix_seconds(&rec.event_time),
        ) {
            out.push(Delivery { created, event });
        }
    }
    Ok(out)
}

/// No run lasts a day; see [`per_second`].
pub const MAX_SECONDS: usize = 86_400;

/// Counts per whole second since `origin`: element `i` counts the times in
/// `[origin + i, origin + i + 1)`. Times before `origin` are dropped (they belong to
/// nothing this run measured), and so are times more than [`MAX_SECONDS`] after it (a
/// bad clock must not make us allocate a bucket per second of a year); seconds without any
/// event are zeros, so a stall shows.
pub fn per_second(times: impl IntoIterator<Item = f64>, origin: f64) -> Vec<u64> {
    let mut buckets: Vec<u64> = Vec::new();
    for t in times {
        let offset = t - origin;
        if !offset.is_finite() || offset < 0.0 || offset >= MAX_SECONDS as f64 {
            continue;
        }
        let i = offset as usize;
        if buckets.len() <= i {
            buckets.resize(i + 1, 0);
        }
        buckets[i] += 1;
    }
    buckets
}

/// The value at quantile `q` of ascending `sorted`, picked as bench/run always did
/// (`sorted[min(n - 1, floor(q·n))]`) so that tables from before and after agree.
pub fn percentile(sorted: &[f64], q: f64) -> Option<f64> {
    if sorted.is_empty() {
        return None;
    }
    let i = ((q * sorted.len() as f64) as usize).min(sorted.len() - 1);
    Some(sorted[i])
}

/// Points `(value, fraction of values <= value)` of the empirical CDF of ascending
/// `sorted`, at most about `max_points` of them: a million deliveries would otherwise be a
/// million line segments for a curve a few hundred pixels wide. The last point is always the
/// maximum with fraction 1.
pub fn cdf_points(sorted: &[f64], max_points: usize) -> Vec<(f64, f64)> {
    let n = sorted.len();
    if n == 0 {
        return Vec::new();
    }
    let step = n.div_ceil(max_points.max(1)).max(1);
    let mut out: Vec<(f64, f64)> = (step - 1..n)
        .step_by(step)
        .map(|i| (sorted[i], (i + 1) as f64 / n as f64))
        .collect();
    if out.last().is_none_or(|p| p.1 < 1.0) {
        out.push((sorted[n - 1], 1.0));
    }
    out
}

/// Latencies in milliseconds, ascending.
pub fn sorted_latencies_ms(deliveries: &[Delivery]) -> Vec<f64> {
    let mut v: Vec<f64> = deliveries.iter().map(Delivery::latency_ms).collect();
    v.sort_by(f64::total_cmp);
    v
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn per_second_counts_each_time_in_the_second_it_falls_into() {
        let counts = per_second([100.0, 100.2, 100.999, 101.0, 103.5], 100.0);
        assert_eq!(counts, vec![3, 1, 0, 1]);
    }

    #[test]
    fn per_second_drops_times_before_the_origin_beyond_a_day_or_non_finite() {
        let far = 100.0 + MAX_SECONDS as f64;
        let counts = per_second([99.9, f64::NAN, f64::INFINITY, far, 100.5], 100.0);
        assert_eq!(counts, vec![1]);
    }

    #[test]
    fn per_second_of_nothing_is_empty() {
        assert!(per_second(std::iter::empty(), 0.0).is_empty());
    }

    #[test]
    fn percentile_matches_the_harness_rule_of_floor_q_times_n() {
        let v: Vec<f64> = (1..=10).map(f64::from).collect();
        assert_eq!(percentile(&v, 0.5), Some(6.0));
        assert_eq!(percentile(&v, 0.99), Some(10.0));
        assert_eq!(percentile(&v, 0.0), Some(1.0));
        assert_eq!(percentile(&[], 0.5), None);
    }

    #[test]
    fn cdf_of_few_values_has_one_point_per_value_ending_at_one() {
        let pts = cdf_points(&[1.0, 2.0, 3.0, 4.0], 100);
        assert_eq!(pts, vec![(1.0, 0.25), (2.0, 0.5), (3.0, 0.75), (4.0, 1.0)]);
    }

    #[test]
    fn cdf_of_many_values_is_thinned_but_still_ends_at_the_maximum() {
        let v: Vec<f64> = (0..1_000_001).map(f64::from).collect();
        let pts = cdf_points(&v, 500);
        assert!(pts.len() <= 502, "{} points", pts.len());
        assert_eq!(pts.last(), Some(&(1_000_000.0, 1.0)));
        assert!(pts.windows(2).all(|w| w[0].0 <= w[1].0 && w[0].1 < w[1].1));
    }

    #[test]
    fn cdf_of_nothing_is_empty() {
        assert!(cdf_points(&[], 10).is_empty());
    }

    #[test]
    fn only_delivery_records_of_the_sender_are_read_and_garbage_lines_are_skipped() {
        let lines = concat!(
            r#"{"type":"Reception","sender":"a@b","event_time":"2026-01-01T00:00:00Z","created_time":"2026-01-01T00:00:00Z"}"#,
            "\n",
            r#"{"type":"Delivery","sender":"a@b","event_time":"2026-01-01T00:00:01.5Z","created_time":"2026-01-01T00:00:01.25Z","size":3}"#,
            "\n",
            r#"{"type":"Delivery","sender":"other@b","event_time":"2026-01-01T00:00:02Z","created_time":"2026-01-01T00:00:01Z"}"#,
            "\nnot json\n{\"type\":\"Deliv",
        );
        let d = read_deliveries(lines.as_bytes(), "a@b").unwrap();
        assert_eq!(d.len(), 1);
        assert!((d[0].latency_ms() - 250.0).abs() < 1e-6, "{:?}", d[0]);
        assert!((d[0].created - 1_767_225_601.25).abs() < 1e-6);
    }

    #[test]
    fn latencies_are_sorted_ascending_in_milliseconds() {
        let d = [
            Delivery {
                created: 10.0,
                event: 10.5,
            },
            Delivery {
                created: 10.0,
                event: 10.1,
            },
        ];
        let v = sorted_latencies_ms(&d);
        assert!(
            (v[0] - 100.0).abs() < 1e-6 && (v[1] - 500.0).abs() < 1e-6,
            "{v:?}"
        );
    }
}
