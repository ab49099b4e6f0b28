//! The queue manager: owns scheduled queues, ready queues, the retry timer
//! and the delivery sessions; everything that moves a message between them.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use hermod_logging::Logger;
use hermod_message::Message;
use hermod_policy::{EgressSource, Engine, ProtocolConfig};
use hermod_spool::Spool;
use parking_lot::Mutex;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::delivery::{self, Handles, Starter};
use crate::egress;
use crate::route::{self, SmtpRoute, SmtpTarget};
use crate::outcome::{self, Recorder};
use crate::ready::{EgressPathKey, Entry, ReadyQueue, ReadyQueueState};
use crate::resolve::{
    fetch_config, new_scheduled, ready_queue_name, QueueConfigError, ScheduledQueue,
};
use crate::timer::{Timer, Waiting};

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
    ready: Mutex<HashMap<String, Arc<ReadyQueue>>>,
    pub timer: Arc<Timer>,
    recorder: Recorder,
    pub shutdown: CancellationToken,
    pub tasks: TaskTracker,
    accepting: AtomicBool,
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
        });
        let qm = QueueManager(inner);
        let timer = qm.0.timer.clone();
        let weak = Arc::downgrade(&qm.0);
        let stop = qm.0.shutdown.clone();
        qm.0.tasks.spawn(timer.run(
            move |w: Waiting| {
                if let Some(inner) = weak.upgrade() {
                    QueueManager(inner).to_ready(w.message, w.queue);
                }
            },
            stop,
        ));
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
            tracing::debug!(ready = reaped_ready, scheduled = reaped_scheduled, "reaped idle queues");
        }
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
        let existing = self.0.scheduled.lock().get(name).cloned();
        if let Some(sq) = &existing {
            sq.touch();
            if !sq.needs_refresh() {
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
                    g.insert(name, rq.clone());
                    rq
                }
            }
        };
        sq.remember_ready(cfg, rq.clone());
        rq
    }

    /// Queue a message that is due now (fresh reception or retry due).
    pub(crate) fn to_ready(&self, message: Message, queue: Arc<ScheduledQueue>) {
        let mut entry = Entry { message, queue };
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

    /// An SMTP message goes to the ready queue of its site and of the next
    /// source of its pool; without a fresh route it waits for one.
    fn to_ready_smtp(&self, mut entry: Entry) {
        loop {
            let sq = entry.queue.clone();
            let route = {
                let mut st = sq.smtp.lock();
                match &st.route {
                    Some(r) if r.is_fresh() && !st.resolving => r.clone(),
                    _ => {
                        st.parked.push(entry);
                        if !std::mem::replace(&mut st.resolving, true) {
                            drop(st);
                            self.resolve_route(sq);
                        }
                        return;
                    }
                }
            };
            let Some(source) = route.next_source() else {
                // `route::resolve` refuses a pool without sources.
                tracing::error!(queue = %sq.name, "SMTP route has no source; message waits for a new route");
                sq.smtp.lock().route = None;
                continue;
            };
            let rq = self.smtp_ready_queue(&sq, &route, source);
            match rq.push(entry) {
                Ok(()) => return self.maybe_start_sessions(&rq),
                Err(back) => entry = back,
            }
        }
    }

    fn smtp_ready_queue(
        &self,
        sq: &ScheduledQueue,
        route: &SmtpRoute,
        source: &EgressSource,
    ) -> Arc<ReadyQueue> {
        if let Some((_, rq)) = route
            .ready
            .lock()
            .iter()
            .find(|(s, rq)| *s == source.name && !rq.is_retired())
        {
            return rq.clone();
        }
        let name = format!("{}->{}@smtp", source.name, route.site);
        let target = Arc::new(SmtpTarget {
            domain: sq.components.site_domain().to_string(),
            hosts: route.hosts.clone(),
            source: source.clone(),
        });
        let rq = {
            let mut g = self.0.ready.lock();
            match g.get(&name) {
                Some(rq) => rq.clone(),
                None => {
                    let path = EgressPathKey {
                        routing_domain: sq.components.site_domain().to_string(),
                        source: source.name.clone(),
                        site: route.site.clone(),
                    };
                    let cfg = sq.config();
                    let rq = Arc::new(ReadyQueue::new(
                        name.clone(),
                        path,
                        cfg.egress_pool.clone(),
                        cfg.protocol.clone(),
                    ));
                    g.insert(name, rq.clone());
                    rq
                }
            }
        };
        // A newer route (the MX answer's TTL ran out) brings fresh addresses.
        rq.set_smtp_target(target);
        let mut cached = route.ready.lock();
        cached.retain(|(s, _)| *s != source.name);
        cached.push((source.name.clone(), rq.clone()));
        rq
    }

    /// Find the route of an SMTP queue, then move its parked messages on; when
    /// there is none, they bounce (null MX) or are retried on their schedule.
    fn resolve_route(&self, sq: Arc<ScheduledQueue>) {
        let qm = self.clone();
        self.0.tasks.spawn(async move {
            let cfg = sq.config();
            let domain = sq.components.site_domain().to_string();
            let found = route::resolve(&qm.0.engine, &domain, &cfg.protocol, &cfg.egress_pool).await;
            let (parked, found) = {
                let mut st = sq.smtp.lock();
                st.resolving = false;
                let found = found.map(|r| {
                    tracing::debug!(queue = %sq.name, site = %r.site, "SMTP route resolved");
                    st.route = Some(Arc::new(r));
                });
                (std::mem::take(&mut st.parked), found)
            };
            match found {
                Ok(()) => {
                    for e in parked {
                        qm.to_ready(e.message, e.queue);
                    }
                }
                Err(e) => {
                    tracing::warn!(queue = %sq.name, error = %e, "no SMTP route");
                    let (resp, permanent) = e.response();
                    let info = route::unrouted_info(&domain, &cfg.egress_pool);
                    let rec = &qm.0.recorder;
                    for p in parked {
                        if permanent {
                            outcome::bounced(rec, p.message, &p.queue, &info, resp.clone()).await;
                        } else {
                            outcome::transient(rec, p.message, p.queue, &info, resp.clone(), None).await;
                        }
                    }
                }
            }
        });
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

    /// Ask `get_egress_path_config` for `rq`'s config when it has none or it
    /// is due for a refresh; sessions start once the first answer is in.
    fn configure(&self, rq: &Arc<ReadyQueue>) {
        if !rq.begin_configuring() {
            return;
        }
        let qm = self.clone();
        let rq = rq.clone();
        self.0.tasks.spawn(async move {
            let p = &rq.path;
            match egress::fetch_path(&qm.0.engine, &p.routing_domain, &p.source, &p.site).await {
                Ok(cfg) => rq.configure(cfg, qm.0.opts.idle_timeout),
                Err(e) if rq.is_configured() => {
                    tracing::error!(queue = %rq.name, error = %e,
                        "get_egress_path_config refresh failed; keeping the previous config");
                    // Ask again after another refresh interval, not at once.
                    if let Some(cfg) = rq.egress_path() {
                        rq.configure((*cfg).clone(), qm.0.opts.idle_timeout);
                    }
                }
                Err(e) => {
                    rq.end_configuring();
                    qm.fail_unconfigured(&rq, &e.to_string()).await;
                    return;
                }
            }
            rq.end_configuring();
            qm.maybe_start_sessions(&rq);
        });
    }

    /// Without its egress path config a queue cannot deliver: its messages
    /// are retried on their schedule, as when any other attempt fails.
    async fn fail_unconfigured(&self, rq: &Arc<ReadyQueue>, why: &str) {
        tracing::error!(queue = %rq.name, error = %why, "ready queue has no egress path config");
        let info = outcome::AttemptInfo::for_queue(
            rq,
            None,
            delivery::protocol_of(&rq.protocol()),
            format!("config:{}", rq.name),
        );
        for e in rq.drain_all() {
            let resp = hermod_logging::Response::new(
                451,
                None,
                &format!("cannot configure the ready queue {}: {why}", rq.name),
            );
            outcome::transient(&self.0.recorder, e.message, e.queue, &info, resp, None).await;
        }
    }

    pub(crate) fn maybe_start_sessions(&self, rq: &Arc<ReadyQueue>) {
        if self.0.shutdown.is_cancelled() {
            return;
        }
        // Also refreshes a config that is due: sessions go on with the old one meanwhile.
        self.configure(rq);
        if !rq.is_configured() {
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
                    delivery::run_session(&h, &rq).await;
                    rq.sessions.fetch_sub(1, Ordering::SeqCst);
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
        let cfg = sq.config();
        let age = SystemTime::now()
            .duration_since(message.created())
            .unwrap_or_default();
        if age >= cfg.max_age {
            outcome::expire(&self.0.recorder, message, &sq, cfg.max_age, Duration::ZERO).await;
            return;
        }
        match message.due() {
            Some(due) if due > SystemTime::now() => self.to_timer(message, sq, due),
            _ => self.to_ready(message, sq),
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
        let unsaved: Vec<Message> = queues
            .iter()
            .flat_map(|rq| rq.drain_all())
            .map(|e| e.message)
            .filter(|m| !m.is_persisted())
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
