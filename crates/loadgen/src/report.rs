//! Latency histograms, per-second samples and the end-of-run summary.

use std::collections::BTreeMap;
use std::io::Write;
use std::path::Path;
use std::time::Duration;

use hdrhistogram::Histogram;
use serde::Serialize;

/// Distinct failure reasons kept verbatim; the rest are lumped together so
/// a server that puts unique ids in its refusals cannot grow the map.
const MAX_FAILURE_REASONS: usize = 32;

/// Latencies are recorded in microseconds up to one hour.
fn new_histogram() -> Histogram<u64> {
    Histogram::new_with_bounds(1, 3_600_000_000, 3).expect("constant histogram bounds are valid")
}

/// Counters and histograms shared by all workers behind one mutex; each
/// update is a handful of arithmetic operations, so contention is small
/// next to the network round trips being measured.
pub struct Recorder {
    total: Histogram<u64>,
    window: Histogram<u64>,
    pub ok: u64,
    pub failed: u64,
    pub partial: u64,
    window_ok: u64,
    window_failed: u64,
    failures: BTreeMap<String, u64>,
}

impl Default for Recorder {
    fn default() -> Self {
        Recorder {
            total: new_histogram(),
            window: new_histogram(),
            ok: 0,
            failed: 0,
            partial: 0,
            window_ok: 0,
            window_failed: 0,
            failures: BTreeMap::new(),
        }
    }
}

impl Recorder {
    pub fn record_ok(&mut self, latency: Duration) {
        let micros = u64::try_from(latency.as_micros()).unwrap_or(u64::MAX);
        self.total.saturating_record(micros.max(1));
        self.window.saturating_record(micros.max(1));
        self.ok += 1;
        self.window_ok += 1;
    }

    /// Counts a `250 PARTIAL` reply; the caller also records it as a failure.
    pub fn note_partial(&mut self) {
        self.partial += 1;
    }

    pub fn record_failure(&mut self, reason: String) {
        self.failed += 1;
        self.window_failed += 1;
        let key =
            if self.failures.contains_key(&reason) || self.failures.len() < MAX_FAILURE_REASONS {
                reason
            } else {
                "other".to_owned()
            };
        *self.failures.entry(key).or_insert(0) += 1;
    }

    /// Closes the current one-second window and starts the next.
    pub fn take_sample(&mut self, second: u64) -> Sample {
        let sample = Sample {
            second,
            ok: self.window_ok,
            failed: self.window_failed,
            p50_ms: quantile_ms(&self.window, 0.50),
            p99_ms: quantile_ms(&self.window, 0.99),
        };
        self.window.reset();
        self.window_ok = 0;
        self.window_failed = 0;
        sample
    }

    pub fn summary(&self, meta: RunMeta, elapsed: Duration, samples: Vec<Sample>) -> Summary {
        let secs = elapsed.as_secs_f64();
        let rate = if secs > 0.0 {
            self.ok as f64 / secs
        } else {
            0.0
        };
        Summary {
            meta,
            messages_ok: self.ok,
            messages_failed: self.failed,
            messages_partial: self.partial,
            elapsed_secs: secs,
            msgs_per_sec: rate,
            latency_ms: Latency {
                p50: quantile_ms(&self.total, 0.50),
                p90: quantile_ms(&self.total, 0.90),
                p99: quantile_ms(&self.total, 0.99),
                max: if self.total.is_empty() {
                    0.0
                } else {
                    self.total.max() as f64 / 1000.0
                },
                mean: self.total.mean() / 1000.0,
            },
            failures: self.failures.clone(),
            samples,
        }
    }
}

fn quantile_ms(h: &Histogram<u64>, q: f64) -> f64 {
    if h.is_empty() {
        return 0.0;
    }
    h.value_at_quantile(q) as f64 / 1000.0
}

#[derive(Debug, Clone, Serialize)]
pub struct Sample {
    pub second: u64,
    pub ok: u64,
    pub failed: u64,
    pub p50_ms: f64,
    pub p99_ms: f64,
}

/// Describes the run so a stored summary can be compared with others.
#[derive(Debug, Clone, Serialize)]
pub struct RunMeta {
    pub target: String,
    pub connections: usize,
    pub body_bytes: usize,
    pub recipients_per_message: usize,
    pub starttls: bool,
    pub rate_limit: Option<f64>,
    pub cores: usize,
}

#[derive(Debug, Clone, Serialize)]
pub struct Latency {
    pub p50: f64,
    pub p90: f64,
    pub p99: f64,
    pub max: f64,
    pub mean: f64,
}

#[derive(Debug, Clone, Serialize)]
pub struct Summary {
    #[serde(flatten)]
    pub meta: RunMeta,
    pub messages_ok: u64,
    pub messages_failed: u64,
    pub messages_partial: u64,
    pub elapsed_secs: f64,
    pub msgs_per_sec: f64,
    pub latency_ms: Latency,
    pub failures: BTreeMap<String, u64>,
    #[serde(skip)]
    pub samples: Vec<Sample>,
}

impl Summary {
    pub fn print(&self, out: &mut impl Write) -> std::io::Result<()> {
        let m = &self.meta;
        writeln!(
            out,
            "target {}  connections {}  body {} B  rcpts/msg {}  starttls {}  cores {}",
            m.target, m.connections, m.body_bytes, m.recipients_per_message, m.starttls, m.cores
        )?;
        writeln!(
            out,
            "messages ok {}  failed {}  partial {}  in {:.2}s  => {:.1} msgs/s",
            self.messages_ok,
            self.messages_failed,
            self.messages_partial,
            self.elapsed_secs,
            self.msgs_per_sec
        )?;
        let l = &self.latency_ms;
        writeln!(
            out,
            "latency ms  p50 {:.3}  p90 {:.3}  p99 {:.3}  max {:.3}  mean {:.3}",
            l.p50, l.p90, l.p99, l.max, l.mean
        )?;
        if !self.failures.is_empty() {
            writeln!(out, "failures by reason:")?;
            for (reason, count) in &self.failures {
                writeln!(out, "  {count:>8}  {reason}")?;
            }
        }
        Ok(())
    }

    pub fn write_json(&self, path: &Path) -> anyhow::Result<()> {
        let text = serde_json::to_string_pretty(self)?;
        std::fs::write(path, text + "\n")
            .map_err(|e| anyhow::anyhow!("writing {}: {e}", path.display()))
    }

    pub fn write_csv(&self, path: &Path) -> anyhow::Result<()> {
        let mut text = String::from("second,ok,failed,p50_ms,p99_ms\n");
        for s in &self.samples {
            text.push_str(&format!(
                "{},{},{},{:.3},{:.3}\n",
                s.second, s.ok, s.failed, s.p50_ms, s.p99_ms
            ));
        }
        std::fs::write(path, text).map_err(|e| anyhow::anyhow!("writing {}: {e}", path.display()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn meta() -> RunMeta {
        RunMeta {
            target: "127.0.0.1:25".into(),
            connections: 1,
            body_bytes: 10,
            recipients_per_message: 1,
            starttls: false,
            rate_limit: None,
            cores: 2,
        }
    }

    #[test]
    fn samples_cover_only_their_own_window() {
        let mut r = Recorder::default();
        r.record_ok(Duration::from_millis(2));
        r.record_failure("RCPT TO 550".into());
        let first = r.take_sample(1);
        assert_eq!((first.ok, first.failed), (1, 1));
        assert!((first.p50_ms - 2.0).abs() < 0.01);
        let second = r.take_sample(2);
        assert_eq!((second.ok, second.failed, second.p50_ms), (0, 0, 0.0));
        assert_eq!((r.ok, r.failed), (1, 1));
    }

    #[test]
    fn summary_percentiles_come_from_all_transactions() {
        let mut r = Recorder::default();
        for ms in 1..=100 {
            r.record_ok(Duration::from_millis(ms));
        }
        let s = r.summary(meta(), Duration::from_secs(2), Vec::new());
        assert_eq!(s.messages_ok, 100);
        assert!((s.msgs_per_sec - 50.0).abs() < 1e-9);
        assert!(
            (s.latency_ms.p50 - 50.0).abs() < 0.1,
            "{}",
            s.latency_ms.p50
        );
        assert!(
            (s.latency_ms.p99 - 99.0).abs() < 0.1,
            "{}",
            s.latency_ms.p99
        );
        assert!((s.latency_ms.max - 100.0).abs() < 0.1);
    }

    #[test]
    fn failure_reasons_are_bounded() {
        let mut r = Recorder::default();
        for i in 0..100 {
            r.record_failure(format!("reason {i}"));
        }
        assert_eq!(r.failures.len(), MAX_FAILURE_REASONS + 1);
        assert_eq!(r.failures["other"], 100 - MAX_FAILURE_REASONS as u64);
        assert_eq!(r.failed, 100);
    }
}
