//! The queue manager: owns scheduled queues, ready queues, the retry timer
//! and the delivery sessions; everything that moves a message between them.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use hermod_logging::Logger;
use hermod_message::Message;
use hermod_policy::{Engine, ProtocolConfig};
use hermod_spool::Spool;
use parking_lot::Mutex;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::delivery::{self, Handles, Starter};
use crate::held::{Held, Queued};
use crate::outcome::{self, Recorder};
use crate::ready::{EgressPathKey, ReadyQueue, ReadyQueueState};
use crate::resolve::{
    fetch_config, new_scheduled, ready_queue_name, QueueConfigError, ScheduledQueue,
};
use crate::schedule::Gate;
use crate::timer::Timer;

#[derive(Clone, Debug, Default)]
pub struct QueueOptions {
    /// Shorten every ready queue's idle timeout (tests).
    pub idle_timeout: Option<Duration>,
    /// Reap idle queues this often, and ready queues idle this long (tests);
    /// see [`REAP_TICK`] and [`READY_REAP_IDLE`].
    pub reap: Option<Duration>,
}

/// How often idle queues are looked for. With SMTP every recipient domain is
/// a queue, so queues that are no longer used must not live forever.
pub const REAP_TICK: Duration = Duration::from_secs(60);
/// A ready queue that has been empty, without a session and without a new
/// message this long is removed (a scheduled queue waits its `reap_interval`).
pub const READY_REAP_IDLE: Duration = Duration::from_secs(600);

pub(crate) struct Inner {
    pub engine: Arc<Engine>,
    pub spool: Spool,
    pub logger: Logger,
    pub opts: QueueOptions,
    scheduled: Mutex<HashMap<String, Arc<ScheduledQueue>>>,
    pub(crate) ready: Mutex<HashMap<String, Arc<ReadyQueue>>>,
    pub timer: Arc<Timer>,
    pub(crate) recorder: Recorder,
    pub shutdown: CancellationToken,
    pub tasks: TaskTracker,
    accepting: AtomicBool,
    /// Operators' suspensions and bounces (crates/queue/src/admin.rs).
    pub(crate) admin: crate::admin::AdminState,
}

/// One running session of a ready queue, counted until dropped.
struct SessionSlot(Arc<ReadyQueue>);

impl Drop for SessionSlot {
    fn drop(&mut self) {
        self.0.sessions.fetch_sub(1, Ordering::SeqCst);
    }
}

/// Cheap to clone; all clones drive the same queues.
#[derive(Clone)]
pub struct QueueManager(pub(crate) Arc<Inner>);

impl QueueManager {
    pub fn new(engine: Arc<Engine>, spool: Spool, logger: Logger, opts: QueueOptions) -> Self {
        let timer = Arc::new(Timer::default());
        let recorder = Recorder {
            logger: logger.clone(),
            spool: spool.clone(),
            timer: timer.clone(),
        };
        let inner = Arc::new(Inner {
            engine,
            spool,
            logger,
            opts,
            scheduled: Mutex::new(HashMap::new()),
            ready: Mutex::new(HashMap::new()),
            timer,
            recorder,
            shutdown: CancellationToken::new(),
            tasks: TaskTracker::new(),
            accepting: AtomicBool::new(false),
            admin: crate::admin::AdminState::default(),
        });
        let qm = QueueManager(inner);
        let timer = qm.0.timer.clone();
        let weak = Arc::downgrade(&qm.0);
        let stop = qm.0.shutdown.clone();
        qm.0.tasks.spawn(timer.run(
            move |w: Queued| {
                if let Some(inner) = weak.upgrade() {
                    QueueManager(inner).to_ready(w);
                }
            },
            stop,
        ));
        qm.spawn_admin_expiry();
        let weak = Arc::downgrade(&qm.0);
        let stop = qm.0.shutdown.clone();
        let tick = qm.0.opts.reap.unwrap_or(REAP_TICK);
        qm.0.tasks.spawn(async move {
            loop {
                tokio::select! {
                    _ = stop.cancelled() => return,
                    _ = tokio::time::sleep(tick) => {}
                }
                match weak.upgrade() {
                    Some(inner) => QueueManager(inner).reap(),
                    None => return,
                }
            }
        });
        qm
    }

    /// Remove queues nothing uses any more: ready queues that are empty and
    /// idle, and scheduled queues that no message refers to (a message holds
    /// its scheduled queue while it is queued, waiting or being delivered).
    fn reap(&self) {
        let ready_idle = self.0.opts.reap.unwrap_or(READY_REAP_IDLE);
        let reaped_ready = {
            let mut g = self.0.ready.lock();
            let before = g.len();
            g.retain(|_, rq| !rq.retire_if_idle(ready_idle));
            before - g.len()
        };
        let reaped_scheduled = {
            let mut g = self.0.scheduled.lock();
            let before = g.len();
            // Only the map holds it: no message can reach it but through a
            // lookup, which takes this lock.
            g.retain(|_, sq| {
                let reap_after = self.0.opts.reap.unwrap_or(sq.config().reap_interval);
                Arc::strong_count(sq) > 1 || sq.idle() < reap_after
            });
            before - g.len()
        };
        if reaped_ready + reaped_scheduled > 0 {
            tracing::debug!(
                ready = reaped_ready,
                scheduled = reaped_scheduled,
                "reaped idle queues"
            );
        }
    }

    /// The scheduled queue `name`, if it exists.
    pub(crate) fn scheduled_queue(&self, name: &str) -> Option<Arc<ScheduledQueue>> {
        self.0.scheduled.lock().get(name).cloned()
    }

    /// The names of the scheduled queues that exist.
    pub(crate) fn scheduled_names(&self) -> Vec<String> {
        let mut names: Vec<String> = self.0.scheduled.lock().keys().cloned().collect();
        names.sort();
        names
    }

    /// How many scheduled and ready queues exist (operators and tests).
    pub fn queue_counts(&self) -> (usize, usize) {
        (self.0.scheduled.lock().len(), self.0.ready.lock().len())
    }

    pub fn engine(&self) -> &Arc<Engine> {
        &self.0.engine
    }

    pub fn spool(&self) -> &Spool {
        &self.0.spool
    }

    pub fn logger(&self) -> &Logger {
        &self.0.logger
    }

    pub fn set_accepting(&self, on: bool) {
        self.0.accepting.store(on, Ordering::SeqCst);
    }

    pub fn is_accepting_now(&self) -> bool {
        self.0.accepting.load(Ordering::SeqCst) && !self.0.shutdown.is_cancelled()
    }

    /// The scheduled queue for `name`, running `get_queue_config` when it is
    /// new or due for a refresh.
    pub(crate) async fn resolve(
        &self,
        name: &str,
    ) -> Result<Arc<ScheduledQueue>, QueueConfigError> {
        self.resolve_with(name, false).await
    }

    /// [`QueueManager::resolve`]; `refresh` runs `get_queue_config` even for
    /// a queue whose config is fresh (a rebind asks the policy again).
    pub(crate) async fn resolve_with(
        &self,
        name: &str,
        refresh: bool,
    ) -> Result<Arc<ScheduledQueue>, QueueConfigError> {
        let existing = self.0.scheduled.lock().get(name).cloned();
        if let Some(sq) = &existing {
            sq.touch();
            if !refresh && !sq.needs_refresh() {
                return Ok(sq.clone());
            }
        }
        let components = hermod_message::QueueNameComponents::parse(name);
        let cfg = match fetch_config(&self.0.engine, &components).await {
            Ok(c) => c,
            Err(e) => match existing {
                // Keep delivering with the last good config rather than stalling.
                Some(sq) => {
                    tracing::error!(queue = %name, error = %e, "get_queue_config refresh failed; keeping the previous config");
                    sq.update((*sq.config()).clone());
                    return Ok(sq);
                }
                None => return Err(e),
            },
        };
        let sq = match existing {
            Some(sq) => {
                sq.update(cfg);
                sq
            }
            None => {
                let mut g = self.0.scheduled.lock();
                g.entry(name.to_string())
                    .or_insert_with(|| Arc::new(new_scheduled(name, cfg)))
                    .clone()
            }
        };
        Ok(sq)
    }

    fn ready_queue_for(&self, sq: &Arc<ScheduledQueue>) -> Arc<ReadyQueue> {
        let cfg = sq.config();
        if let Some(rq) = sq.cached_ready(&cfg) {
            return rq;
        }
        let name = ready_queue_name(&sq.components, &cfg);
        let rq = {
            let mut g = self.0.ready.lock();
            // The map never holds a retired queue: `reap` removes it under this lock.
            match g.get(&name) {
                Some(rq) => {
                    rq.set_protocol(cfg.protocol.clone());
                    rq.clone()
                }
                None => {
                    let site = sq.components.site_domain().to_string();
                    let path = EgressPathKey {
                        routing_domain: site.clone(),
                        source: "unspecified".into(),
                        site,
                    };
                    let rq = Arc::new(ReadyQueue::new(
                        name.clone(),
                        path,
                        cfg.egress_pool.clone(),
                        cfg.protocol.clone(),
                    ));
                    rq.set_admin_hold(self.0.admin.ready_hold(&name));
                    g.insert(name, rq.clone());
                    rq
                }
            }
        };
        sq.remember_ready(cfg, rq.clone());
        rq
    }

    /// Queue a message that is due now (fresh reception or retry due).
    pub(crate) fn to_ready(&self, entry: Queued) {
        // Operators' bounces and suspensions come first; see admin.rs.
        let Some(mut entry) = self.admin_gate(entry) else {
            return;
        };
        if matches!(
            entry.queue.config().protocol,
            ProtocolConfig::Smtp | ProtocolConfig::SmtpWith(_)
        ) {
            return self.to_ready_smtp(entry);
        }
        loop {
            let rq = self.ready_queue_for(&entry.queue);
            match rq.push(entry) {
                Ok(()) => return self.maybe_start_sessions(&rq),
                // Reaped since the lookup: the next lookup makes its successor.
                Err(back) => entry = back,
            }
        }
    }

    /// Queue a message for later.
    pub(crate) fn to_timer(&self, message: Message, queue: Arc<ScheduledQueue>, due: SystemTime) {
        self.0.recorder.to_timer(message, queue, due);
    }

    /// What a delivery session may use; see [`Handles`].
    fn handles(&self) -> Handles {
        Handles {
            recorder: self.0.recorder.clone(),
            spool: self.0.spool.clone(),
            engine: self.0.engine.clone(),
            starter: Starter(Arc::downgrade(&self.0)),
        }
    }

    pub(crate) fn maybe_start_sessions(&self, rq: &Arc<ReadyQueue>) {
        if self.0.shutdown.is_cancelled() {
            return;
        }
        // Also refreshes a config that is due: sessions go on with the old one meanwhile.
        self.configure(rq);
        if !rq.is_configured() || rq.is_admin_held() {
            return;
        }
        let connection_limit = rq.limits().connection_limit;
        let wanted = rq.wanted_sessions().max(usize::from(rq.len() > 0));
        loop {
            let current = rq.sessions.load(Ordering::SeqCst);
            if current >= wanted || current >= connection_limit {
                return;
            }
            if rq
                .sessions
                .compare_exchange(current, current + 1, Ordering::SeqCst, Ordering::SeqCst)
                .is_ok()
            {
                let qm = self.clone();
                let rq = rq.clone();
                let h = self.handles();
                self.0.tasks.spawn(async move {
                    // The slot is given back even if the session panics.
                    let slot = SessionSlot(rq.clone());
                    delivery::run_session(&h, &rq).await;
                    drop(slot);
                    // Messages may have arrived while this session was winding down.
                    if rq.len() > 0 {
                        qm.maybe_start_sessions(&rq);
                    }
                });
            }
        }
    }

    /// Insert a message read back from the spool at start-up.
    pub async fn insert_enumerated(&self, message: Message) {
        let name = match message.queue_name() {
            Ok(n) => n,
            Err(e) => {
                outcome::expire_unroutable(&self.0.recorder, message, &e.to_string()).await;
                return;
            }
        };
        let sq = match self.resolve(&name).await {
            Ok(sq) => sq,
            Err(e) => {
                tracing::error!(id = %message.id(), queue = %name, error = %e,
                    "cannot resolve the queue of a spooled message; it stays in the spool until restart");
                return;
            }
        };
        let now = SystemTime::now();
        let max_age = sq.config().max_age;
        // A message's own `expires` replaces max_age (crates/queue/src/retry.rs).
        if let Some(why) = crate::retry::expiry(now, message.created(), max_age, None)
            .filter(|_| message.scheduling().is_none_or(|s| s.expires.is_none()))
        {
            outcome::expire(&self.0.recorder, message, &sq, why).await;
            return;
        }
        match crate::schedule::gate(&message, now) {
            Gate::Now => self.to_ready(Queued::loaded(message, sq)),
            Gate::Later(due) => self.to_timer(message, sq, due),
            Gate::Expired(why) => outcome::expire(&self.0.recorder, message, &sq, why).await,
        }
    }

    /// Stop delivery sessions and timers; queued messages stay in the spool.
    pub async fn shutdown(&self) {
        self.0.accepting.store(false, Ordering::SeqCst);
        self.0.shutdown.cancel();
        for rq in self.0.ready.lock().values() {
            rq.close();
        }
        self.0.tasks.close();
        self.0.tasks.wait().await;
        self.persist_deferred().await;
    }

    /// Store queued messages that were never spooled (`deferred_spool` log
    /// hook messages), so a clean shutdown loses none of them.
    async fn persist_deferred(&self) {
        let queues: Vec<Arc<ReadyQueue>> = self.0.ready.lock().values().cloned().collect();
        // A message that was never stored is always held in memory.
        let unsaved: Vec<Message> = queues
            .iter()
            .flat_map(|rq| rq.drain_all())
            .chain(self.drain_admin_held())
            .filter_map(|e| match e.held {
                Held::Loaded(m) if !m.is_persisted() => Some(m),
                _ => None,
            })
            .collect();
        if unsaved.is_empty() {
            return;
        }
        let results = self.0.spool.store_many(&unsaved).await;
        let failed = results.iter().filter(|r| r.is_err()).count();
        tracing::info!(
            stored = unsaved.len() - failed,
            failed,
            "stored deferred log hook messages at shutdown"
        );
    }

    /// `(name, queued, sessions, state)` of every ready queue, for operators.
    pub fn ready_queue_states(&self) -> Vec<(String, usize, usize, ReadyQueueState)> {
        self.0
            .ready
            .lock()
            .values()
            .map(|rq| {
                (
                    rq.name.clone(),
                    rq.len(),
                    rq.sessions.load(Ordering::SeqCst),
                    rq.state(),
                )
            })
            .collect()
    }

    /// Messages waiting for a retry, per scheduled queue.
    pub fn scheduled_counts(&self) -> HashMap<String, usize> {
        self.0.timer.counts()
    }
}
