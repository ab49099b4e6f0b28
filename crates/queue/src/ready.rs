//! Ready queues: messages due now for one destination, drained by up to
//! `connection_limit` concurrent delivery sessions.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Weak};
use std::time::{Duration, Instant, SystemTime};

use hermod_message::Message;
use hermod_policy::{EgressPathConfig, ProtocolConfig};
use parking_lot::{Mutex, RwLock};
use tokio::sync::Notify;

use crate::held::Queued;
use crate::resolve::ScheduledQueue;
use crate::route::SmtpTarget;
use crate::throttle::{self, Throttle};

/// The egress-path limits every protocol obeys (KumoMTA defaults until
/// `get_egress_path_config` answers).
#[derive(Debug, Clone, Copy)]
pub struct ReadyLimits {
    pub connection_limit: usize,
    pub max_deliveries_per_connection: usize,
    pub idle_timeout: Duration,
    /// Beyond this many queued messages, a message waits as its spool id
    /// alone (crates/queue/src/held.rs) and is read back when a session takes it.
    pub max_ready: usize,
}

impl Default for ReadyLimits {
    fn default() -> Self {
        Self {
            connection_limit: 32,
            max_deliveries_per_connection: 1024,
            idle_timeout: Duration::from_secs(5),
            max_ready: 1024,
        }
    }
}

/// What `get_egress_path_config(routing_domain, egress_source, site_name)` is asked with.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EgressPathKey {
    pub routing_domain: String,
    pub source: String,
    pub site: String,
}

/// A message in memory with the scheduled queue it came from: what a
/// delivery session works on.
pub struct Entry {
    pub message: Message,
    pub queue: Arc<ScheduledQueue>,
}

pub struct ReadyQueue {
    pub name: String,
    /// The arguments of `get_egress_path_config` for this queue.
    pub path: EgressPathKey,
    /// The egress pool its messages came through (log records name it).
    pub pool: String,
    limits: RwLock<ReadyLimits>,
    /// The answer of `get_egress_path_config` and when it came; `None` until
    /// the first answer, and no session starts before it.
    egress: RwLock<Option<(Arc<EgressPathConfig>, Instant)>>,
    /// A `get_egress_path_config` call for this queue is under way.
    configuring: AtomicBool,
    /// SMTP queues: the hosts to connect to and the source to connect from.
    smtp_target: RwLock<Option<Arc<SmtpTarget>>>,
    /// `max_message_rate` and `max_connection_rate`, shared by the sessions.
    throttles: RwLock<Throttles>,
    protocol: RwLock<ProtocolConfig>,
    /// The scheduled queue whose name supplies the constructor's arguments.
    /// Weak, so that it does not keep an idle scheduled queue from being reaped.
    representative: RwLock<Weak<ScheduledQueue>>,
    entries: Mutex<Entries>,
    notify: Notify,
    pub(crate) sessions: AtomicUsize,
    closed: AtomicBool,
    /// Reaped: removed from the manager's map, so it takes no more messages.
    /// Changed and checked only under the `entries` lock.
    retired: AtomicBool,
    health: Mutex<Health>,
    /// One session probes a paused destination; the others end.
    probing: AtomicBool,
    /// An operator's suspension (crates/queue/src/admin.rs): why and since
    /// when. No session runs while it is set.
    admin_hold: RwLock<Option<(String, SystemTime)>>,
    /// `ready_full{service}`: messages that arrived beyond `max_ready`.
    ready_full: hermod_metrics::Counter,
}

#[derive(Default)]
struct Throttles {
    message: Option<Arc<Throttle>>,
    connection: Option<Arc<Throttle>>,
}

struct Entries {
    queue: VecDeque<Queued>,
    /// When a message last arrived: an idle queue is reaped after a while.
    last_push: Instant,
}

/// Consecutive delivery failures that look like an unreachable destination.
#[derive(Default)]
struct Health {
    failures: u32,
    /// Failures in a row since the last success or bulk delay.
    since_delay: u32,
    paused_until: Option<Instant>,
    /// When the current pause began (ready-q-states reports it).
    paused_since: Option<SystemTime>,
    reason: String,
}

/// After this many consecutive failed attempts the queue pauses, so an
/// outage does not burn every queued message's attempts and retry schedule.
const PAUSE_AFTER_FAILURES: u32 = 3;
const MAX_PAUSE: Duration = Duration::from_secs(30);

/// Whether a ready queue is delivering, for operators.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ReadyQueueState {
    Active,
    Paused {
        reason: String,
    },
    /// Suspended by an operator.
    Suspended {
        reason: String,
    },
}

impl ReadyQueue {
    pub fn new(name: String, path: EgressPathKey, pool: String, protocol: ProtocolConfig) -> Self {
        let ready_full = hermod_metrics::ready_full(&crate::resolve::metrics_service(&name));
        Self {
            name,
            path,
            pool,
            limits: RwLock::new(ReadyLimits::default()),
            egress: RwLock::new(None),
            configuring: AtomicBool::new(false),
            smtp_target: RwLock::new(None),
            throttles: RwLock::new(Throttles::default()),
            protocol: RwLock::new(protocol),
            representative: RwLock::new(Weak::new()),
            entries: Mutex::new(Entries {
                queue: VecDeque::new(),
                last_push: Instant::now(),
            }),
            retired: AtomicBool::new(false),
            notify: Notify::new(),
            sessions: AtomicUsize::new(0),
            closed: AtomicBool::new(false),
            health: Mutex::new(Health::default()),
            probing: AtomicBool::new(false),
            admin_hold: RwLock::new(None),
            ready_full,
        }
    }

    /// Set or clear an operator's suspension; waiting sessions wake to see it.
    pub(crate) fn set_admin_hold(&self, hold: Option<(String, SystemTime)>) {
        *self.admin_hold.write() = hold;
        self.notify.notify_waiters();
    }

    pub(crate) fn is_admin_held(&self) -> bool {
        self.admin_hold.read().is_some()
    }

    /// Take out the waiting messages `pred` selects (an operator's bounce or
    /// suspension), keeping the others in order.
    pub(crate) fn take_matching(&self, pred: impl Fn(&Queued) -> bool) -> Vec<Queued> {
        let mut g = self.entries.lock();
        let (take, keep): (VecDeque<Queued>, VecDeque<Queued>) =
            std::mem::take(&mut g.queue).into_iter().partition(&pred);
        g.queue = keep;
        take.into_iter().collect()
    }

    /// Count the waiting messages `pred` selects, copying up to `limit` of
    /// them into `out`; see [`crate::held::sample`].
    pub(crate) fn sample(
        &self,
        pred: impl Fn(&Queued) -> bool,
        limit: usize,
        out: &mut Vec<crate::held::Sampled>,
    ) -> usize {
        crate::held::sample(self.entries.lock().queue.iter(), pred, limit, out)
    }

    /// The names of the scheduled queues whose messages wait here.
    pub(crate) fn scheduled_names(&self) -> std::collections::BTreeSet<String> {
        let g = self.entries.lock();
        g.queue.iter().map(|q| q.queue.name.clone()).collect()
    }

    /// What ready-q-states reports: an operator's suspension, a pause.
    pub(crate) fn conditions(&self) -> Vec<hermod_message::admin::QueueCondition> {
        let mut out = Vec::new();
        if let Some((reason, since)) = self.admin_hold.read().clone() {
            out.push(crate::admin::condition("suspended", reason, since));
        }
        let h = self.health.lock();
        if let (Some(_), Some(since)) = (h.paused_until, h.paused_since) {
            out.push(crate::admin::condition("paused", h.reason.clone(), since));
        }
        out
    }

    pub fn limits(&self) -> ReadyLimits {
        *self.limits.read()
    }

    pub fn set_limits(&self, limits: ReadyLimits) {
        *self.limits.write() = limits;
    }

    /// Apply an answer of `get_egress_path_config`; `idle_timeout` overrides
    /// its idle timeout (tests).
    pub(crate) fn configure(&self, cfg: EgressPathConfig, idle_timeout: Option<Duration>) {
        self.set_limits(ReadyLimits {
            connection_limit: usize::try_from(cfg.connection_limit.limit).unwrap_or(usize::MAX),
            max_deliveries_per_connection: cfg.max_deliveries_per_connection.max(1),
            idle_timeout: idle_timeout.unwrap_or(cfg.idle_timeout),
            max_ready: cfg.max_ready,
        });
        {
            let mut t = self.throttles.write();
            t.message = throttle::refreshed(t.message.take(), cfg.max_message_rate);
            t.connection = throttle::refreshed(t.connection.take(), cfg.max_connection_rate);
        }
        *self.egress.write() = Some((Arc::new(cfg), Instant::now()));
    }

    /// The `max_message_rate` every session's messages share, if any.
    pub(crate) fn message_throttle(&self) -> Option<Arc<Throttle>> {
        self.throttles.read().message.clone()
    }

    /// The `max_connection_rate` every session's connections share, if any.
    pub(crate) fn connection_throttle(&self) -> Option<Arc<Throttle>> {
        self.throttles.read().connection.clone()
    }

    /// The egress path config, once `get_egress_path_config` has answered.
    pub fn egress_path(&self) -> Option<Arc<EgressPathConfig>> {
        self.egress.read().as_ref().map(|(c, _)| c.clone())
    }

    pub(crate) fn set_smtp_target(&self, target: Arc<SmtpTarget>) {
        *self.smtp_target.write() = Some(target);
    }

    pub(crate) fn smtp_target(&self) -> Option<Arc<SmtpTarget>> {
        self.smtp_target.read().clone()
    }

    pub(crate) fn is_configured(&self) -> bool {
        self.egress.read().is_some()
    }

    /// Whether the config is missing or older than its `refresh_interval`,
    /// and no call to get it is under way; if so, the caller now makes it.
    pub(crate) fn begin_configuring(&self) -> bool {
        let due = match &*self.egress.read() {
            None => true,
            Some((cfg, at)) => at.elapsed() >= cfg.refresh_interval,
        };
        due && self
            .configuring
            .compare_exchange(false, true, Ordering::SeqCst, Ordering::SeqCst)
            .is_ok()
    }

    pub(crate) fn end_configuring(&self) {
        self.configuring.store(false, Ordering::SeqCst);
    }

    pub fn protocol(&self) -> ProtocolConfig {
        self.protocol.read().clone()
    }

    pub fn set_protocol(&self, p: ProtocolConfig) {
        *self.protocol.write() = p;
    }

    pub fn representative(&self) -> Option<Arc<ScheduledQueue>> {
        self.representative.read().upgrade()
    }

    pub fn len(&self) -> usize {
        self.entries.lock().queue.len()
    }

    /// Queue a message; `Err` gives it back when this queue has been reaped,
    /// and the caller must find the queue that replaced it.
    pub fn push(&self, entry: Queued) -> Result<(), Queued> {
        if self.representative.read().strong_count() == 0 {
            *self.representative.write() = Arc::downgrade(&entry.queue);
        }
        let mut g = self.entries.lock();
        if self.retired.load(Ordering::SeqCst) {
            return Err(entry);
        }
        let entry = if g.queue.len() >= self.limits.read().max_ready {
            self.ready_full.inc();
            entry.park()
        } else {
            entry
        };
        g.queue.push_back(entry);
        g.last_push = Instant::now();
        drop(g);
        self.notify.notify_one();
        Ok(())
    }

    /// Retire the queue if it is empty, has no session and has had no
    /// message for `idle`. A retired queue refuses [`push`](Self::push).
    pub(crate) fn retire_if_idle(&self, idle: Duration) -> bool {
        let g = self.entries.lock();
        if self.retired.load(Ordering::SeqCst) {
            return true;
        }
        if !g.queue.is_empty()
            || self.sessions.load(Ordering::SeqCst) > 0
            || g.last_push.elapsed() < idle
        {
            return false;
        }
        self.retired.store(true, Ordering::SeqCst);
        drop(g);
        true
    }

    pub(crate) fn is_retired(&self) -> bool {
        self.retired.load(Ordering::SeqCst)
    }

    /// Put messages back at the front, in order (a session ended before sending them).
    pub fn push_front<T: Into<Queued>>(&self, entries: Vec<T>) {
        if entries.is_empty() {
            return;
        }
        let mut g = self.entries.lock();
        for e in entries.into_iter().rev() {
            g.queue.push_front(e.into());
        }
        drop(g);
        self.notify.notify_one();
    }

    /// How many sessions the queue should have for its current depth:
    /// grows quickly with depth, never above `connection_limit`.
    /// A delivery attempt failed in a way that suggests the destination is
    /// down (connection or broker error, not a policy reject).
    ///
    /// Returns how many failures in a row there have been since the last
    /// success or the last [`ReadyQueue::delay_all`].
    pub fn record_failure(&self, reason: &str) -> u32 {
        let mut h = self.health.lock();
        h.failures = h.failures.saturating_add(1);
        h.since_delay = h.since_delay.saturating_add(1);
        let since_delay = h.since_delay;
        if h.failures >= PAUSE_AFTER_FAILURES {
            let k = (h.failures - PAUSE_AFTER_FAILURES).min(5);
            let pause = Duration::from_secs(1 << k).min(MAX_PAUSE);
            if h.paused_until.is_none() {
                h.paused_since = Some(SystemTime::now());
                tracing::warn!(queue = %self.name, %reason, ?pause,
                    "ready queue paused: destination looks unreachable; queued messages wait without using attempts");
            }
            h.paused_until = Some(Instant::now() + pause);
            h.reason = reason.to_string();
        }
        drop(h);
        self.probing.store(false, Ordering::SeqCst);
        since_delay
    }

    /// `consecutive_connection_failures_before_delay` was reached: take every
    /// queued message out, for the caller to retry on its own schedule, and
    /// count failures afresh.
    pub(crate) fn delay_all(&self) -> Vec<Queued> {
        self.health.lock().since_delay = 0;
        self.drain_all()
    }

    /// A delivery attempt reached the destination (delivered or rejected by
    /// it). True when this ended a pause: the caller should start sessions
    /// again, or the backlog would drain through the one probing session.
    pub fn record_success(&self) -> bool {
        let mut h = self.health.lock();
        let resumed = h.paused_until.take().is_some();
        h.paused_since = None;
        if resumed {
            tracing::info!(queue = %self.name, "ready queue resumed: destination reachable again");
        }
        h.failures = 0;
        h.since_delay = 0;
        drop(h);
        if self.probing.swap(false, Ordering::SeqCst) {
            self.notify.notify_waiters();
        }
        resumed
    }

    /// A probing session ended without a verdict on the destination (its
    /// attempt said nothing of it, or it had nothing to send): the next
    /// session may probe.
    pub(crate) fn release_probe(&self) {
        if self.probing.swap(false, Ordering::SeqCst) {
            self.notify.notify_one();
        }
    }

    pub(crate) fn is_closed(&self) -> bool {
        self.closed.load(Ordering::SeqCst)
    }

    fn paused_until(&self) -> Option<Instant> {
        self.health.lock().paused_until
    }

    pub fn state(&self) -> ReadyQueueState {
        if let Some((reason, _)) = self.admin_hold.read().clone() {
            return ReadyQueueState::Suspended { reason };
        }
        let h = self.health.lock();
        match h.paused_until {
            Some(_) => ReadyQueueState::Paused {
                reason: h.reason.clone(),
            },
            None => ReadyQueueState::Active,
        }
    }

    pub fn wanted_sessions(&self) -> usize {
        if self.paused_until().is_some() {
            return 1;
        }
        // A batching session takes up to `batch_size` messages per call, so
        // the pool is sized by batches waiting, not by messages: sized by
        // messages, a burst of log-hook records started a session (and a Lua
        // context) for every few of them, and each sent smaller batches.
        let per_call = match &*self.protocol.read() {
            ProtocolConfig::CustomLua(c) => c.batch_size.max(1),
            _ => 1,
        };
        let n = self.len().div_ceil(per_call) as f64;
        let connection_limit = self.limits.read().connection_limit;
        let limit = connection_limit as f64;
        let curve = (limit * (1.0 - (-0.023 * n).exp())).ceil();
        (n.min(curve) as usize).min(connection_limit)
    }

    pub fn close(&self) {
        self.closed.store(true, Ordering::SeqCst);
        self.notify.notify_waiters();
    }

    /// Everything still queued (shutdown persists what was never spooled).
    pub fn drain_all(&self) -> Vec<Queued> {
        self.entries.lock().queue.drain(..).collect()
    }

    fn take(&self, max: usize) -> Vec<Queued> {
        let mut g = self.entries.lock();
        let n = max.min(g.queue.len());
        g.queue.drain(..n).collect()
    }

    /// Wait for the next batch: up to `batch_size` entries; when fewer than
    /// `min_batch` are ready, wait until `max_latency` (bounded by the idle
    /// timeout) for more. Empty when idle for `idle_timeout` or closed.
    #[cfg(test)]
    pub async fn next_batch(
        &self,
        batch_size: usize,
        min_batch: usize,
        max_latency: Duration,
    ) -> Vec<Queued> {
        let mut probe = false;
        self.next_batch_probing(batch_size, min_batch, max_latency, &mut probe)
            .await
    }

    /// [`ReadyQueue::next_batch`] for a session: `probe` becomes true when the
    /// session is the one probing a paused destination; it must then call
    /// [`ReadyQueue::release_probe`] when it ends, whatever the outcome.
    pub(crate) async fn next_batch_probing(
        &self,
        batch_size: usize,
        min_batch: usize,
        max_latency: Duration,
        probe: &mut bool,
    ) -> Vec<Queued> {
        if self.is_admin_held() {
            return Vec::new();
        }
        if let Some(until) = self.paused_until() {
            // Only one session probes a paused destination; it waits out the pause.
            if !*probe
                && self
                    .probing
                    .compare_exchange(false, true, Ordering::SeqCst, Ordering::SeqCst)
                    .is_err()
            {
                return Vec::new();
            }
            *probe = true;
            loop {
                if self.closed.load(Ordering::SeqCst) || self.is_admin_held() {
                    self.probing.store(false, Ordering::SeqCst);
                    return Vec::new();
                }
                let until = self.paused_until().map(|u| u.max(until));
                match until {
                    Some(u) if u > Instant::now() => {
                        let _ = tokio::time::timeout_at(u.into(), self.notify.notified()).await;
                    }
                    _ => break,
                }
            }
        }
        let idle_deadline = Instant::now() + self.limits.read().idle_timeout;
        let mut batch: Vec<Queued> = Vec::new();
        let mut latency_deadline: Option<Instant> = None;
        loop {
            if self.closed.load(Ordering::SeqCst) || self.is_admin_held() {
                if !batch.is_empty() {
                    self.push_front(batch);
                }
                return Vec::new();
            }
            let notified = self.notify.notified();
            batch.extend(self.take(batch_size - batch.len()));
            if batch.len() >= batch_size || (!batch.is_empty() && batch.len() >= min_batch) {
                return batch;
            }
            let now = Instant::now();
            if !batch.is_empty() {
                let d = *latency_deadline.get_or_insert(now + max_latency);
                if now >= d || now >= idle_deadline {
                    return batch;
                }
            } else if now >= idle_deadline {
                return batch;
            }
            let wake = match latency_deadline {
                Some(d) if !batch.is_empty() => d.min(idle_deadline),
                _ => idle_deadline,
            };
            let _ = tokio::time::timeout_at(wake.into(), notified).await;
            // Another waiting session may have a use for a wake-up we consumed.
            if self.len() > 0 {
                self.notify.notify_one();
            }
        }
    }
}

#[cfg(test)]
#[path = "ready_tests.rs"]
mod tests;
