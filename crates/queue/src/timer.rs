//! Messages waiting for a retry. One ordered map and one task hold every
//! delayed message (no task or timer per message); a message the spool
//! holds as it is waits as its id alone (crates/queue/src/held.rs).

use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Instant;

use parking_lot::Mutex;
use tokio::sync::Notify;

use crate::held::Queued;

#[derive(Default)]
pub struct Timer {
    due: Mutex<Due>,
    seq: AtomicU64,
    notify: Notify,
}

#[derive(Default)]
struct Due {
    by_time: BTreeMap<(Instant, u64), Queued>,
    /// Waiting messages per scheduled queue, kept as they come and go: the
    /// metrics read it every second, and counting a million entries then
    /// would hold the lock that every retry needs.
    per_queue: HashMap<String, usize>,
}

impl Due {
    fn count(&mut self, w: &Queued, up: bool) {
        let name = &w.queue.name;
        match self.per_queue.get_mut(name) {
            Some(n) if up => *n += 1,
            Some(n) if *n > 1 => *n -= 1,
            Some(_) => {
                self.per_queue.remove(name);
            }
            None if up => {
                self.per_queue.insert(name.clone(), 1);
            }
            None => {}
        }
    }
}

impl Timer {
    pub fn insert(&self, at: Instant, w: Queued) {
        let w = w.park();
        let key = (at, self.seq.fetch_add(1, Ordering::Relaxed));
        let mut g = self.due.lock();
        let earliest = g.by_time.keys().next().map(|k| k.0);
        g.count(&w, true);
        g.by_time.insert(key, w);
        drop(g);
        if earliest.is_none_or(|e| at < e) {
            self.notify.notify_one();
        }
    }

    /// Take out the waiting messages `pred` selects (an operator's bounce).
    pub(crate) fn take_matching(&self, pred: impl Fn(&Queued) -> bool) -> Vec<Queued> {
        let mut g = self.due.lock();
        let keys: Vec<(Instant, u64)> = g
            .by_time
            .iter()
            .filter(|(_, q)| pred(q))
            .map(|(k, _)| *k)
            .collect();
        let mut out = Vec::with_capacity(keys.len());
        for k in keys {
            if let Some(q) = g.by_time.remove(&k) {
                g.count(&q, false);
                out.push(q);
            }
        }
        out
    }

    /// Count the waiting messages `pred` selects, copying up to `limit` of
    /// them into `out`; see [`crate::held::sample`].
    pub(crate) fn sample(
        &self,
        pred: impl Fn(&Queued) -> bool,
        limit: usize,
        out: &mut Vec<crate::held::Sampled>,
    ) -> usize {
        crate::held::sample(self.due.lock().by_time.values(), pred, limit, out)
    }

    /// Count of waiting messages per scheduled queue name (for metrics).
    pub fn counts(&self) -> HashMap<String, usize> {
        self.due.lock().per_queue.clone()
    }

    fn pop_due(&self, now: Instant) -> (Vec<Queued>, Option<Instant>) {
        let mut g = self.due.lock();
        let mut out = Vec::new();
        while let Some(entry) = g.by_time.first_entry() {
            if entry.key().0 > now {
                break;
            }
            out.push(entry.remove());
        }
        for w in &out {
            g.count(w, false);
        }
        (out, g.by_time.keys().next().map(|k| k.0))
    }

    /// Hand each message to `ready` when it becomes due, until `stop` fires.
    pub async fn run(
        self: Arc<Self>,
        ready: impl Fn(Queued),
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::held::Held;
    use hermod_message::SpoolId;
    use hermod_policy::QueueConfig;

    fn parked(queue: &Arc<crate::resolve::ScheduledQueue>) -> Queued {
        Queued {
            held: Held::Parked(SpoolId::new(), hermod_message::Counted::new()),
            queue: queue.clone(),
        }
    }

    #[test]
    fn waiting_counts_per_queue_follow_inserts_and_due_pops() {
        let a = Arc::new(crate::resolve::new_scheduled(
            "a.example",
            QueueConfig::default(),
        ));
        let b = Arc::new(crate::resolve::new_scheduled(
            "b.example",
            QueueConfig::default(),
        ));
        let t = Timer::default();
        let now = Instant::now();
        let later = now + std::time::Duration::from_secs(3600);
        t.insert(now, parked(&a));
        t.insert(later, parked(&a));
        t.insert(now, parked(&b));
        let c = t.counts();
        assert_eq!(
            (c.get("a.example"), c.get("b.example")),
            (Some(&2), Some(&1))
        );
        let (due, next) = t.pop_due(now);
        assert_eq!(due.len(), 2);
        assert_eq!(next, Some(later));
        let c = t.counts();
        assert_eq!(c.get("a.example"), Some(&1));
        assert_eq!(
            c.get("b.example"),
            None,
            "a queue with nothing waiting is not listed"
        );
    }

    #[test]
    fn take_matching_removes_only_the_selected_queues_and_their_counts() {
        let a = Arc::new(crate::resolve::new_scheduled(
            "a.example",
            QueueConfig::default(),
        ));
        let b = Arc::new(crate::resolve::new_scheduled(
            "b.example",
            QueueConfig::default(),
        ));
        let t = Timer::default();
        let later = Instant::now() + std::time::Duration::from_secs(3600);
        t.insert(later, parked(&a));
        t.insert(later, parked(&b));
        t.insert(later, parked(&a));
        let taken = t.take_matching(|q| q.queue.name == "a.example");
        assert_eq!(taken.len(), 2);
        let c = t.counts();
        assert_eq!((c.get("a.example"), c.get("b.example")), (None, Some(&1)));
    }
}
