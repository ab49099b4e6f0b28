//! Connection workers, the shared rate limiter, per-second sampling and
//! the progress display.

use std::fs::{File, OpenOptions};
use std::io::{BufWriter, Write};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use indicatif::{ProgressBar, ProgressStyle};
use tokio_rustls::TlsConnector;

use crate::report::{Recorder, RunMeta, Sample, Summary};
use crate::smtp_client::{ConnectOptions, SmtpClient, TxOutcome};
use crate::workload::DomainPicker;

/// Pause after a failed connect so a down server does not turn every
/// worker into a busy loop of refused connections.
const CONNECT_BACKOFF: Duration = Duration::from_millis(100);

#[derive(Debug, Clone, Copy)]
pub enum Limit {
    Messages(u64),
    Duration(Duration),
}

pub struct Config {
    pub addr: SocketAddr,
    pub connections: usize,
    pub limit: Limit,
    pub rate: Option<f64>,
    pub tls: Option<(TlsConnector, String)>,
    pub helo: String,
    pub from: String,
    pub rcpt_user: String,
    pub recipients: usize,
    pub domains: DomainPicker,
    pub body: Vec<u8>,
    pub timeout: Duration,
    pub ids_out: Option<PathBuf>,
    pub progress: bool,
}

/// Token bucket in "debt" form: a caller that finds no token still takes
/// one and sleeps until it would have been minted, which spaces requests
/// exactly 1/rate apart under contention without a refill task.
pub struct TokenBucket {
    rate: f64,
    capacity: f64,
    tokens: f64,
    last: Instant,
}

impl TokenBucket {
    pub fn new(rate: f64, now: Instant) -> Self {
        TokenBucket {
            rate,
            // A tenth of a second of burst absorbs scheduling jitter
            // without letting a stall turn into a spike.
            capacity: (rate / 10.0).max(1.0),
            tokens: 1.0,
            last: now,
        }
    }

    /// Takes one token; returns how long the caller must wait to use it.
    pub fn reserve(&mut self, now: Instant) -> Duration {
        let elapsed = now.saturating_duration_since(self.last).as_secs_f64();
        self.last = self.last.max(now);
        self.tokens = (self.tokens + elapsed * self.rate).min(self.capacity) - 1.0;
        if self.tokens >= 0.0 {
            Duration::ZERO
        } else {
            Duration::from_secs_f64(-self.tokens / self.rate)
        }
    }
}

struct Shared {
    cfg: Config,
    started: Instant,
    claimed: AtomicU64,
    deadline: Option<Instant>,
    stop: AtomicBool,
    recorder: Mutex<Recorder>,
    bucket: Option<Mutex<TokenBucket>>,
    ids: Option<Mutex<BufWriter<File>>>,
    ids_error: Mutex<Option<String>>,
    samples: Mutex<Vec<Sample>>,
}

/// A poisoned lock only means another worker panicked mid-update of plain
/// counters; the data is still usable for the report.
fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

impl Shared {
    /// Reserves the next message slot; false once the run's bound is hit.
    fn claim(&self) -> bool {
        if self.stop.load(Ordering::Relaxed) {
            return false;
        }
        match self.cfg.limit {
            Limit::Messages(n) => self.claimed.fetch_add(1, Ordering::Relaxed) < n,
            Limit::Duration(_) => self.deadline.is_some_and(|d| Instant::now() < d),
        }
    }

    async fn throttle(&self) -> bool {
        let Some(bucket) = &self.bucket else {
            return true;
        };
        let wait = lock(bucket).reserve(Instant::now());
        if let Some(deadline) = self.deadline {
            if Instant::now() + wait >= deadline {
                return false;
            }
        }
        if !wait.is_zero() {
            tokio::time::sleep(wait).await;
        }
        true
    }

    fn write_ids(&self, ids: &[String]) {
        let Some(out) = &self.ids else { return };
        let mut out = lock(out);
        for id in ids {
            if let Err(e) = writeln!(out, "{id}") {
                // Losing ids would silently weaken the reliability proof,
                // so the run stops and fails instead.
                lock(&self.ids_error).get_or_insert_with(|| e.to_string());
                self.stop.store(true, Ordering::Relaxed);
                return;
            }
        }
    }

    async fn connect(&self) -> Result<SmtpClient, crate::smtp_client::ClientError> {
        let cfg = &self.cfg;
        SmtpClient::connect(ConnectOptions {
            addr: cfg.addr,
            helo: &cfg.helo,
            tls: cfg.tls.as_ref().map(|(c, n)| (c, n.as_str())),
            timeout: cfg.timeout,
        })
        .await
    }
}

async fn worker(shared: Arc<Shared>) {
    let mut client: Option<SmtpClient> = None;
    let mut rcpts: Vec<String> = Vec::with_capacity(shared.cfg.recipients);
    let body = [shared.cfg.body.as_slice()];
    while shared.claim() {
        if !shared.throttle().await {
            break;
        }
        rcpts.clear();
        {
            let mut rng = rand::rng();
            for _ in 0..shared.cfg.recipients {
                let domain = shared.cfg.domains.pick(&mut rng);
                rcpts.push(format!("{}@{domain}", shared.cfg.rcpt_user));
            }
        }
        let mut retried = false;
        loop {
            let mut c = match client.take() {
                Some(c) => c,
                None => match shared.connect().await {
                    Ok(c) => c,
                    Err(e) => {
                        tracing::debug!(error = %e, "connect failed");
                        lock(&shared.recorder).record_failure(format!("connect: {e}"));
                        tokio::time::sleep(CONNECT_BACKOFF).await;
                        break;
                    }
                },
            };
            let reused = c.transactions > 0;
            match c.send_message(&shared.cfg.from, &rcpts, &body).await {
                Ok(TxOutcome::Accepted { reply, latency }) => {
                    shared.write_ids(&reply.ids());
                    let mut rec = lock(&shared.recorder);
                    if reply.is_partial() {
                        // Some recipients' copies were not accepted: not a
                        // success, though the accepted ids were spooled.
                        rec.note_partial();
                        rec.record_failure(format!("end of DATA: {}", reason_text(&reply)));
                    } else {
                        rec.record_ok(latency);
                    }
                    client = Some(c);
                }
                Ok(TxOutcome::Refused {
                    stage,
                    reply,
                    final_reply,
                }) => {
                    if let Some(f) = final_reply.filter(|f| f.code / 100 == 2) {
                        shared.write_ids(&f.ids());
                    }
                    lock(&shared.recorder)
                        .record_failure(format!("{stage}: {}", reason_text(&reply)));
                    client = Some(c);
                }
                Err(e) if reused && !retried && c.replies_in_tx == 0 && e.is_stale_connection() => {
                    // The server closed an idle connection before seeing
                    // this transaction; nothing was acknowledged, so one
                    // retry on a fresh connection cannot duplicate mail.
                    tracing::debug!(error = %e, "reconnecting after idle close");
                    retried = true;
                    continue;
                }
                Err(e) => {
                    tracing::debug!(error = %e, "transaction failed");
                    lock(&shared.recorder).record_failure(format!("connection: {e}"));
                }
            }
            break;
        }
    }
    if let Some(c) = client {
        c.quit().await;
    }
}

/// Failure keys group by code and the start of the text; long texts often
/// carry unique ids that would defeat grouping.
fn reason_text(reply: &crate::smtp_client::Reply) -> String {
    let text = reply.lines.first().map(String::as_str).unwrap_or("");
    let short: String = text.chars().take(60).collect();
    format!("{} {short}", reply.code)
}

/// Runs the load and returns the summary. `Err` means the run itself could
/// not be carried out or its id log is incomplete; message failures are
/// reported in the summary instead.
pub async fn run(cfg: Config, meta: RunMeta) -> anyhow::Result<Summary> {
    let ids = match &cfg.ids_out {
        Some(path) => Some(Mutex::new(BufWriter::new(
            OpenOptions::new()
                .create(true)
                .append(true)
                .open(path)
                .map_err(|e| anyhow::anyhow!("opening {}: {e}", path.display()))?,
        ))),
        None => None,
    };
    let started = Instant::now();
    let (deadline, bar_len) = match cfg.limit {
        Limit::Messages(n) => (None, n),
        Limit::Duration(d) => (Some(started + d), d.as_secs().max(1)),
    };
    let workers = match cfg.limit {
        Limit::Messages(n) => cfg
            .connections
            .min(usize::try_from(n).unwrap_or(usize::MAX)),
        Limit::Duration(_) => cfg.connections,
    };
    let bar = progress_bar(
        cfg.progress,
        bar_len,
        matches!(cfg.limit, Limit::Duration(_)),
    );
    let shared = Arc::new(Shared {
        bucket: cfg.rate.map(|r| Mutex::new(TokenBucket::new(r, started))),
        cfg,
        started,
        claimed: AtomicU64::new(0),
        deadline,
        stop: AtomicBool::new(false),
        recorder: Mutex::new(Recorder::default()),
        ids,
        ids_error: Mutex::new(None),
        samples: Mutex::new(Vec::new()),
    });

    let mut handles = Vec::with_capacity(workers);
    for _ in 0..workers {
        handles.push(tokio::spawn(worker(shared.clone())));
    }
    let sampler = tokio::spawn(sample_loop(shared.clone(), bar.clone()));
    let mut panicked = 0;
    for h in handles {
        if h.await.is_err() {
            panicked += 1;
        }
    }
    let elapsed = started.elapsed();
    sampler.abort();
    let _ = sampler.await;
    let mut samples = std::mem::take(&mut *lock(&shared.samples));
    if panicked > 0 {
        anyhow::bail!("{panicked} worker task(s) panicked");
    }
    bar.finish_and_clear();

    let mut rec = lock(&shared.recorder);
    let last_second = elapsed.as_secs() + 1;
    if samples.last().is_none_or(|s| s.second < last_second) {
        let tail = rec.take_sample(last_second);
        if tail.ok + tail.failed > 0 {
            samples.push(tail);
        }
    }
    if let Some(out) = &shared.ids {
        if let Err(e) = lock(out).flush() {
            lock(&shared.ids_error).get_or_insert_with(|| e.to_string());
        }
    }
    if let Some(e) = lock(&shared.ids_error).take() {
        anyhow::bail!("writing message ids failed: {e}");
    }
    Ok(rec.summary(meta, elapsed, samples))
}

/// Closes one-second windows into `shared.samples` until aborted. Each
/// window is taken and stored without an await in between, so abort
/// cannot lose one.
async fn sample_loop(shared: Arc<Shared>, bar: ProgressBar) {
    let mut tick = tokio::time::interval_at(
        tokio::time::Instant::from_std(shared.started) + Duration::from_secs(1),
        Duration::from_secs(1),
    );
    let mut second = 0;
    loop {
        tick.tick().await;
        second += 1;
        let (sample, ok, failed) = {
            let mut rec = lock(&shared.recorder);
            (rec.take_sample(second), rec.ok, rec.failed)
        };
        bar.set_message(format!(
            "ok {ok} failed {failed} | {} msg/s p99 {:.1}ms",
            sample.ok, sample.p99_ms
        ));
        match shared.cfg.limit {
            Limit::Messages(_) => bar.set_position(ok + failed),
            Limit::Duration(_) => bar.set_position(second),
        }
        lock(&shared.samples).push(sample);
        if let Some(out) = &shared.ids {
            // Periodic flushes keep the id log useful if the run is killed.
            let _ = lock(out).flush();
        }
    }
}

fn progress_bar(visible: bool, len: u64, timed: bool) -> ProgressBar {
    if !visible {
        return ProgressBar::hidden();
    }
    let bar = ProgressBar::new(len);
    let template = if timed {
        "{elapsed_precise} [{bar:30}] {pos}/{len}s {msg}"
    } else {
        "{elapsed_precise} [{bar:30}] {pos}/{len} {msg}"
    };
    if let Ok(style) = ProgressStyle::with_template(template) {
        bar.set_style(style.progress_chars("=> "));
    }
    bar.enable_steady_tick(Duration::from_millis(250));
    bar
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn token_bucket_spaces_requests_at_the_configured_rate() {
        let t0 = Instant::now();
        let mut b = TokenBucket::new(10.0, t0);
        let waits: Vec<u128> = (0..5).map(|_| b.reserve(t0).as_millis()).collect();
        assert_eq!(waits, [0, 100, 200, 300, 400]);
    }

    #[test]
    fn token_bucket_refills_but_caps_the_burst() {
        let t0 = Instant::now();
        let mut b = TokenBucket::new(100.0, t0);
        let later = t0 + Duration::from_secs(10);
        // Capacity is 10 tokens (0.1 s at 100/s), not 1000.
        let free = (0..20).filter(|_| b.reserve(later).is_zero()).count();
        assert_eq!(free, 10);
    }
}
