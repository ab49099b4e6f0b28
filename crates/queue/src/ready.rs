//! Ready queues: messages due now for one destination, drained by up to
//! `connection_limit` concurrent delivery sessions.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use hermod_message::Message;
use hermod_policy::ProtocolConfig;
use parking_lot::{Mutex, RwLock};
use tokio::sync::Notify;

use crate::resolve::ScheduledQueue;

/// Egress-path limits (KumoMTA defaults).
#[derive(Debug, Clone)]
pub struct ReadyLimits {
    pub connection_limit: usize,
    pub max_deliveries_per_connection: usize,
    pub idle_timeout: Duration,
    /// Beyond this many queued messages, message bytes are dropped from
    /// memory and re-read from the spool when a session takes them.
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

/// A message waiting in a ready queue, with the scheduled queue it came from.
pub struct Entry {
    pub message: Message,
    pub queue: Arc<ScheduledQueue>,
}

pub struct ReadyQueue {
    pub name: String,
    pub limits: ReadyLimits,
    protocol: RwLock<ProtocolConfig>,
    /// The scheduled queue whose name supplies the constructor's arguments.
    representative: RwLock<Option<Arc<ScheduledQueue>>>,
    entries: Mutex<VecDeque<Entry>>,
    notify: Notify,
    pub(crate) sessions: AtomicUsize,
    closed: AtomicBool,
}

impl ReadyQueue {
    pub fn new(name: String, protocol: ProtocolConfig) -> Self {
        Self {
            name,
            limits: ReadyLimits::default(),
            protocol: RwLock::new(protocol),
            representative: RwLock::new(None),
            entries: Mutex::new(VecDeque::new()),
            notify: Notify::new(),
            sessions: AtomicUsize::new(0),
            closed: AtomicBool::new(false),
        }
    }

    pub fn protocol(&self) -> ProtocolConfig {
        self.protocol.read().clone()
    }

    pub fn set_protocol(&self, p: ProtocolConfig) {
        *self.protocol.write() = p;
    }

    pub fn representative(&self) -> Option<Arc<ScheduledQueue>> {
        self.representative.read().clone()
    }

    pub fn len(&self) -> usize {
        self.entries.lock().len()
    }

    pub fn push(&self, entry: Entry) {
        {
            let mut rep = self.representative.write();
            if rep.is_none() {
                *rep = Some(entry.queue.clone());
            }
        }
        let mut g = self.entries.lock();
        if g.len() >= self.limits.max_ready {
            entry.message.unload_data();
        }
        g.push_back(entry);
        drop(g);
        self.notify.notify_one();
    }

    /// Put messages back at the front, in order (a session ended before sending them).
    pub fn push_front(&self, entries: Vec<Entry>) {
        let mut g = self.entries.lock();
        for e in entries.into_iter().rev() {
            g.push_front(e);
        }
        drop(g);
        self.notify.notify_one();
    }

    /// How many sessions the queue should have for its current depth:
    /// grows quickly with depth, never above `connection_limit`.
    pub fn wanted_sessions(&self) -> usize {
        let n = self.len() as f64;
        let limit = self.limits.connection_limit as f64;
        let curve = (limit * (1.0 - (-0.023 * n).exp())).ceil();
        (n.min(curve) as usize).min(self.limits.connection_limit)
    }

    pub fn close(&self) {
        self.closed.store(true, Ordering::SeqCst);
        self.notify.notify_waiters();
    }

    fn take(&self, max: usize) -> Vec<Entry> {
        let mut g = self.entries.lock();
        let n = max.min(g.len());
        g.drain(..n).collect()
    }

    /// Wait for the next batch: up to `batch_size` entries; when fewer than
    /// `min_batch` are ready, wait until `max_latency` (bounded by the idle
    /// timeout) for more. Empty when idle for `idle_timeout` or closed.
    pub async fn next_batch(
        &self,
        batch_size: usize,
        min_batch: usize,
        max_latency: Duration,
    ) -> Vec<Entry> {
        let idle_deadline = Instant::now() + self.limits.idle_timeout;
        let mut batch: Vec<Entry> = Vec::new();
        let mut latency_deadline: Option<Instant> = None;
        loop {
            if self.closed.load(Ordering::SeqCst) {
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
