//! Operators' directives (the `hermod_message::Admin` trait the HTTP admin
//! API calls): scheduled-queue suspensions, ready-queue suspensions and
//! administrative bounces, each until cancelled or expired.
//!
//! Every message that becomes due passes [`QueueManager::admin_gate`] on its
//! way to a ready queue: a bounce in force removes it, a suspension holds it
//! here (as its spool id where it can) without using an attempt, and it
//! goes on when the suspension ends. Creating a rule also applies it to the
//! messages already queued; messages a session has already taken finish
//! their attempt, as in KumoMTA.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use hermod_message::admin::{
    Admin, BounceRule, Criteria, InspectFuture, QueueCondition, ReadyFuture, ReadyQueueStatus,
    ReadySuspension, RebindOrder, RebindProgress, Sample, ScheduledFuture, Suspension,
};
use hermod_message::SpoolId;
use parking_lot::Mutex;

use crate::held::{self, Queued};
use crate::manager::QueueManager;
use crate::outcome;
use crate::resolve::ScheduledQueue;

/// How often expired rules are looked for: a suspension ends at most this
/// much after its time.
const EXPIRY_TICK: Duration = Duration::from_secs(1);

#[derive(Default)]
pub(crate) struct AdminState {
    /// Any rule is in force: the path every message takes checks this alone
    /// while nothing is.
    active: AtomicBool,
    rules: Mutex<Rules>,
    /// Messages held by scheduled-queue suspensions.
    held: Mutex<Vec<Queued>>,
    /// Rebinds still running (crates/queue/src/rebind.rs).
    pub(crate) rebinds: Mutex<Vec<RebindProgress>>,
}

#[derive(Default)]
struct Rules {
    suspensions: Vec<Suspension>,
    /// With when each began (ready-q-states reports it).
    ready: Vec<(ReadySuspension, SystemTime)>,
    bounces: Vec<BounceRule>,
}

impl Rules {
    fn is_empty(&self) -> bool {
        self.suspensions.is_empty() && self.ready.is_empty() && self.bounces.is_empty()
    }

    fn bounce_for(&self, sq: &ScheduledQueue, now: SystemTime) -> Option<Arc<BounceOrder>> {
        self.bounces
            .iter()
            .find(|b| b.expires > now && matches(&b.criteria, sq))
            .map(|b| {
                Arc::new(BounceOrder {
                    id: b.id.clone(),
                    reason: b.reason.clone(),
                    suppress_logging: b.suppress_logging,
                })
            })
    }

    fn holds(&self, sq: &ScheduledQueue, now: SystemTime) -> bool {
        self.suspensions
            .iter()
            .any(|s| s.expires > now && matches(&s.criteria, sq))
    }
}

/// What a bounce's task needs of its rule.
struct BounceOrder {
    id: String,
    reason: String,
    suppress_logging: bool,
}

/// What expired at one look.
#[derive(Default)]
struct Expired {
    suspensions: bool,
    ready: Vec<String>,
}

fn new_id() -> String {
    uuid::Uuid::new_v4().to_string()
}

fn matches(c: &Criteria, sq: &ScheduledQueue) -> bool {
    c.matches(&sq.name, &sq.components)
}

impl AdminState {
    fn set_active(&self, rules: &Rules) {
        self.active.store(!rules.is_empty(), Ordering::SeqCst);
    }

    /// The suspension of the ready queue `name`, if one is in force.
    pub(crate) fn ready_hold(&self, name: &str) -> Option<(String, SystemTime)> {
        if !self.active.load(Ordering::SeqCst) {
            return None;
        }
        let now = SystemTime::now();
        self.rules
            .lock()
            .ready
            .iter()
            .find(|(r, _)| r.name == name && r.expires > now)
            .map(|(r, since)| (r.reason.clone(), *since))
    }

    /// The ready-queue suspension of `name` in force, as listed.
    pub(crate) fn ready_suspension(&self, name: &str) -> Option<ReadySuspension> {
        let now = SystemTime::now();
        self.rules
            .lock()
            .ready
            .iter()
            .find(|(r, _)| r.name == name && r.expires > now)
            .map(|(r, _)| r.clone())
    }

    /// Sample the messages suspensions hold; see [`held::sample`].
    pub(crate) fn sample_held(
        &self,
        pred: impl Fn(&Queued) -> bool,
        limit: usize,
        out: &mut Vec<held::Sampled>,
    ) -> usize {
        held::sample(self.held.lock().iter(), pred, limit, out)
    }

    fn remove_expired(&self, now: SystemTime) -> Expired {
        let mut rules = self.rules.lock();
        let mut out = Expired::default();
        let before = rules.suspensions.len();
        rules.suspensions.retain(|s| s.expires > now);
        out.suspensions = rules.suspensions.len() != before;
        rules.ready.retain(|(r, _)| {
            let keep = r.expires > now;
            if !keep {
                out.ready.push(r.name.clone());
            }
            keep
        });
        rules.bounces.retain(|b| b.expires > now);
        self.set_active(&rules);
        out
    }

    fn count_bounced(&self, id: &str, queue: &str, n: u64) {
        let mut rules = self.rules.lock();
        if let Some(b) = rules.bounces.iter_mut().find(|b| b.id == id) {
            *b.bounced.entry(queue.to_string()).or_default() += n;
        }
    }
}

impl QueueManager {
    /// Start the task that ends rules when they expire.
    pub(crate) fn spawn_admin_expiry(&self) {
        let weak = Arc::downgrade(&self.0);
        let stop = self.0.shutdown.clone();
        self.0.tasks.spawn(async move {
            loop {
                tokio::select! {
                    _ = stop.cancelled() => return,
                    _ = tokio::time::sleep(EXPIRY_TICK) => {}
                }
                let Some(inner) = weak.upgrade() else { return };
                let qm = QueueManager(inner);
                if qm.0.admin.active.load(Ordering::SeqCst) {
                    qm.expire_admin_rules(SystemTime::now());
                }
            }
        });
    }

    fn expire_admin_rules(&self, now: SystemTime) {
        let expired = self.0.admin.remove_expired(now);
        if expired.suspensions {
            tracing::info!("a scheduled-queue suspension expired; releasing held messages");
            self.release_held();
        }
        for name in expired.ready {
            tracing::info!(queue = %name, "a ready-queue suspension expired");
            self.resume_ready(&name);
        }
    }

    /// Apply the rules in force to a message that is due. `Some` gives it
    /// back to go on to its ready queue.
    pub(crate) fn admin_gate(&self, entry: Queued) -> Option<Queued> {
        let admin = &self.0.admin;
        if !admin.active.load(Ordering::SeqCst) {
            return Some(entry);
        }
        let now = SystemTime::now();
        let rules = admin.rules.lock();
        if let Some(order) = rules.bounce_for(&entry.queue, now) {
            drop(rules);
            self.spawn_bounce(vec![entry], order);
            return None;
        }
        if rules.holds(&entry.queue, now) {
            // Held while the rules are locked: a cancel that removes the rule
            // then takes the hold, so it cannot miss this message.
            admin.held.lock().push(entry.park());
            return None;
        }
        Some(entry)
    }

    /// Everything held by suspensions (shutdown stores what was never spooled).
    pub(crate) fn drain_admin_held(&self) -> Vec<Queued> {
        std::mem::take(&mut *self.0.admin.held.lock())
    }

    /// Give every held message another pass through the gate (a suspension
    /// ended; others may still hold some of them).
    fn release_held(&self) {
        let held = std::mem::take(&mut *self.0.admin.held.lock());
        for q in held {
            self.to_ready(q);
        }
    }

    fn resume_ready(&self, name: &str) {
        let rq = self.0.ready.lock().get(name).cloned();
        if let Some(rq) = rq {
            rq.set_admin_hold(self.0.admin.ready_hold(name));
            self.maybe_start_sessions(&rq);
        }
    }

    /// Take every waiting message that `pred` selects out of the ready
    /// queues, the timer and (when `with_held`) the suspension hold.
    pub(crate) fn take_waiting(
        &self,
        pred: impl Fn(&ScheduledQueue) -> bool,
        with_held: bool,
    ) -> Vec<Queued> {
        let queues: Vec<_> = self.0.ready.lock().values().cloned().collect();
        let mut out = Vec::new();
        for rq in queues {
            out.extend(rq.take_matching(|q| pred(&q.queue)));
        }
        if with_held {
            let mut g = self.0.admin.held.lock();
            let (take, keep) = std::mem::take(&mut *g)
                .into_iter()
                .partition(|q| pred(&q.queue));
            *g = keep;
            out.extend::<Vec<Queued>>(take);
        }
        out.extend(self.0.timer.take_matching(|q| pred(&q.queue)));
        out
    }

    /// Bounce `entries` in the background: read back in chunks, each gets
    /// its AdminBounce record (unless suppressed) and leaves the spool.
    fn spawn_bounce(&self, entries: Vec<Queued>, order: Arc<BounceOrder>) {
        if entries.is_empty() {
            return;
        }
        let qm = self.clone();
        self.0.tasks.spawn(async move {
            for chunk in held::chunks(entries) {
                let loaded = held::load_for_records(&qm.0.recorder, chunk).await;
                let mut per_queue: BTreeMap<String, u64> = BTreeMap::new();
                for e in &loaded {
                    *per_queue.entry(e.queue.name.clone()).or_default() += 1;
                }
                // Counted first, so a message that has left the spool is in
                // bounce-list's counts.
                for (queue, n) in per_queue {
                    qm.0.admin.count_bounced(&order.id, &queue, n);
                }
                outcome::admin_bounced(
                    &qm.0.recorder,
                    loaded,
                    &order.reason,
                    !order.suppress_logging,
                )
                .await;
            }
        });
    }
}

fn expires_after(duration: Duration) -> SystemTime {
    // A duration too large for the clock means "until cancelled".
    SystemTime::now()
        .checked_add(duration)
        .unwrap_or_else(|| SystemTime::now() + Duration::from_secs(100 * 365 * 86_400))
}

impl Admin for QueueManager {
    fn suspend(&self, criteria: Criteria, reason: String, duration: Duration) -> String {
        let id = new_id();
        {
            let mut rules = self.0.admin.rules.lock();
            rules.suspensions.push(Suspension {
                id: id.clone(),
                criteria: criteria.clone(),
                reason,
                expires: expires_after(duration),
            });
            self.0.admin.set_active(&rules);
        }
        // Messages already due pass the gate again, which holds them (or
        // sends them on, if the suspension was cancelled meanwhile); the
        // timer's reach the gate when they are due.
        let queues: Vec<_> = self.0.ready.lock().values().cloned().collect();
        for rq in queues {
            for q in rq.take_matching(|q| matches(&criteria, &q.queue)) {
                self.to_ready(q);
            }
        }
        id
    }

    fn suspensions(&self) -> Vec<Suspension> {
        let now = SystemTime::now();
        let rules = self.0.admin.rules.lock();
        rules
            .suspensions
            .iter()
            .filter(|s| s.expires > now)
            .cloned()
            .collect()
    }

    fn cancel_suspension(&self, id: &str) -> bool {
        let found = {
            let mut rules = self.0.admin.rules.lock();
            let before = rules.suspensions.len();
            rules.suspensions.retain(|s| s.id != id);
            self.0.admin.set_active(&rules);
            rules.suspensions.len() != before
        };
        if found {
            self.release_held();
        }
        found
    }

    fn suspend_ready(&self, name: String, reason: String, duration: Duration) -> String {
        let id = new_id();
        let since = SystemTime::now();
        {
            let mut rules = self.0.admin.rules.lock();
            rules.ready.push((
                ReadySuspension {
                    id: id.clone(),
                    name: name.clone(),
                    reason,
                    expires: expires_after(duration),
                },
                since,
            ));
            self.0.admin.set_active(&rules);
        }
        // A queue made later takes its hold when it is made (ready_queue_for).
        let rq = self.0.ready.lock().get(&name).cloned();
        if let Some(rq) = rq {
            rq.set_admin_hold(self.0.admin.ready_hold(&name));
        }
        id
    }

    fn ready_suspensions(&self) -> Vec<ReadySuspension> {
        let now = SystemTime::now();
        let rules = self.0.admin.rules.lock();
        rules
            .ready
            .iter()
            .filter(|(r, _)| r.expires > now)
            .map(|(r, _)| r.clone())
            .collect()
    }

    fn cancel_ready_suspension(&self, id: &str) -> bool {
        let name = {
            let mut rules = self.0.admin.rules.lock();
            let pos = rules.ready.iter().position(|(r, _)| r.id == id);
            let name = pos.map(|i| rules.ready.remove(i).0.name);
            self.0.admin.set_active(&rules);
            name
        };
        match name {
            Some(name) => {
                self.resume_ready(&name);
                true
            }
            None => false,
        }
    }

    fn bounce(
        &self,
        criteria: Criteria,
        reason: String,
        duration: Duration,
        suppress_logging: bool,
    ) -> (String, usize) {
        let id = new_id();
        {
            let mut rules = self.0.admin.rules.lock();
            rules.bounces.push(BounceRule {
                id: id.clone(),
                criteria: criteria.clone(),
                reason: reason.clone(),
                suppress_logging,
                expires: expires_after(duration),
                bounced: BTreeMap::new(),
            });
            self.0.admin.set_active(&rules);
        }
        let waiting = self.take_waiting(|sq| matches(&criteria, sq), true);
        let taken = waiting.len();
        let order = Arc::new(BounceOrder {
            id: id.clone(),
            reason,
            suppress_logging,
        });
        self.spawn_bounce(waiting, order);
        (id, taken)
    }

    fn bounces(&self) -> Vec<BounceRule> {
        let now = SystemTime::now();
        let rules = self.0.admin.rules.lock();
        rules
            .bounces
            .iter()
            .filter(|b| b.expires > now)
            .cloned()
            .collect()
    }

    fn cancel_bounce(&self, id: &str) -> bool {
        let mut rules = self.0.admin.rules.lock();
        let before = rules.bounces.len();
        rules.bounces.retain(|b| b.id != id);
        self.0.admin.set_active(&rules);
        rules.bounces.len() != before
    }

    fn ready_queue_states(&self) -> Vec<ReadyQueueStatus> {
        let queues: Vec<_> = self.0.ready.lock().values().cloned().collect();
        queues
            .iter()
            .map(|rq| ReadyQueueStatus {
                name: rq.name.clone(),
                queued: rq.len(),
                sessions: rq.sessions.load(Ordering::SeqCst),
                conditions: rq.conditions(),
            })
            .collect()
    }

    fn inspect(&self, id: SpoolId, want_body: bool) -> InspectFuture<'_> {
        Box::pin(self.inspect_message(id, want_body))
    }

    fn scheduled_queue_names(&self) -> Vec<String> {
        self.scheduled_names()
    }

    fn rebind(&self, order: RebindOrder) -> (String, usize) {
        self.start_rebind(order)
    }

    fn rebinds(&self) -> Vec<RebindProgress> {
        self.0.admin.rebinds.lock().clone()
    }

    fn inspect_scheduled(&self, name: String, sample: Sample) -> ScheduledFuture<'_> {
        Box::pin(self.inspect_scheduled_queue(name, sample))
    }

    fn inspect_ready(
        &self,
        name: String,
        include_scheduled: bool,
        sample: Option<Sample>,
    ) -> ReadyFuture<'_> {
        Box::pin(self.inspect_ready_queue(name, include_scheduled, sample))
    }
}

/// A ready queue's conditions for ready-q-states.
pub(crate) fn condition(name: &str, context: String, since: SystemTime) -> QueueCondition {
    QueueCondition {
        name: name.to_string(),
        context,
        since,
    }
}
