//! Messages waiting for a retry. One ordered map and one task hold every
//! delayed message (no task or timer per message); message bytes are not
//! kept while waiting.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Instant;

use hermod_message::Message;
use parking_lot::Mutex;
use tokio::sync::Notify;

use crate::resolve::ScheduledQueue;

pub struct Waiting {
    pub message: Message,
    pub queue: Arc<ScheduledQueue>,
}

#[derive(Default)]
pub struct Timer {
    due: Mutex<BTreeMap<(Instant, u64), Waiting>>,
    seq: AtomicU64,
    notify: Notify,
}

impl Timer {
    pub fn insert(&self, at: Instant, w: Waiting) {
        w.message.unload_data();
        let key = (at, self.seq.fetch_add(1, Ordering::Relaxed));
        let mut g = self.due.lock();
        let earliest = g.keys().next().map(|k| k.0);
        g.insert(key, w);
        drop(g);
        if earliest.is_none_or(|e| at < e) {
            self.notify.notify_one();
        }
    }

    /// Count of waiting messages per scheduled queue name (for metrics).
    pub fn counts(&self) -> std::collections::HashMap<String, usize> {
        let mut m = std::collections::HashMap::new();
        for w in self.due.lock().values() {
            *m.entry(w.queue.name.clone()).or_insert(0) += 1;
        }
        m
    }

    fn pop_due(&self, now: Instant) -> (Vec<Waiting>, Option<Instant>) {
        let mut g = self.due.lock();
        let mut out = Vec::new();
        while let Some(entry) = g.first_entry() {
            if entry.key().0 > now {
                break;
            }
            out.push(entry.remove());
        }
        (out, g.keys().next().map(|k| k.0))
    }

    /// Hand each message to `ready` when it becomes due, until `stop` fires.
    pub async fn run(
        self: Arc<Self>,
        ready: impl Fn(Waiting),
        stop: tokio_util::sync::CancellationToken,
    ) {
        loop {
            let notified = self.notify.notified();
            let (due, next) = self.pop_due(Instant::now());
            for w in due {
                ready(w);
            }
            let sleep = async {
                match next {
                    Some(at) => tokio::time::sleep_until(at.into()).await,
                    None => std::future::pending::<()>().await,
                }
            };
            tokio::select! {
                _ = sleep => {}
                _ = notified => {}
                _ = stop.cancelled() => return,
            }
        }
    }
}
