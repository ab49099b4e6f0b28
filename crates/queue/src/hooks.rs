//! Log-hook messages enter the queues here: `should_enqueue_log_record`
//! decides, then the message is spooled and queued like any other.
//!
//! Every record of every mail passes through here, so the path is built to cost little per
//! record (BENCHMARKS.md has the measurements). In order:
//!
//! 1. **One serialisation.** The logger (`crates/logging/src/logger.rs`) serialises a record
//!    once into a `JsonLine` (`crates/message/src/json_line.rs`; written by
//!    `crates/logging/src/line.rs`). A local log selecting the same fields writes that same
//!    line; the hook message (`crates/logging/src/hook.rs`) carries it as its data and, without
//!    the newline, as meta `log_record`, which is parsed only if a handler reads it.
//! 2. **Rounds.** [`HookSink::submit`] only pushes into a channel. The worker below drains
//!    what arrived meanwhile (up to `MAX_ROUND`), pausing `COALESCE` after a short round,
//!    and runs `should_enqueue_log_record` for the whole round in one borrowed Lua context with
//!    the handlers looked up once (`Context::prepare`).
//! 3. **Routers without Lua.** The built-in `policy-extras.log_hooks` helper marks its router
//!    when it has no `filter` (`crates/policy/src/log_hook_route.rs`): a marked
//!    router is applied in Rust. When every handler is one, the worker keeps the chain as a
//!    [`LogHookPlan`] and later rounds borrow no Lua context at all; the plan names each
//!    record's queue, resolved once per round.
//! 4. **One group commit.** The wanted messages of a round are spooled in one request. A hook
//!    message whose data is still its `log_record` line is stored once, as a meta record
//!    flagged `data_is_log_record` (`crates/message/src/spool_record.rs`): the line goes in
//!    without being parsed again and removing the message deletes nothing in the data spool.
//!    Start-up enumeration cuts the data back out of that record byte for byte; a message
//!    whose data or record changes afterwards is stored with its data in the data spool again.
//!    With `deferred_spool` the spool write is skipped unless the message has to wait.

use std::sync::{Arc, OnceLock};

use hermod_logging::{HookPermit, HookSink};
use hermod_message::{Message, MessageError};
use hermod_policy::mlua::Value;
use hermod_policy::{CallError, LogHookPlan};
use tokio::sync::mpsc;

use crate::held::Queued;
use crate::manager::QueueManager;
use crate::resolve::{QueueConfigError, ScheduledQueue, NULL_QUEUE};

/// Records handed to the worker per round; more wait for the next round.
const MAX_ROUND: usize = 512;
/// Pause after a round that did not fill: a hook record waits at most this
/// long for its companions, which is nothing next to a batch's latency.
const COALESCE: std::time::Duration = std::time::Duration::from_millis(2);

/// Why a hook message is not queued.
#[derive(Debug, thiserror::Error)]
enum RouteError {
    #[error("should_enqueue_log_record: {0}")]
    Handler(#[source] CallError),
    #[error("should_enqueue_log_record must return a boolean, got a {0}")]
    NotBoolean(&'static str),
    #[error(transparent)]
    QueueName(#[from] MessageError),
    #[error(transparent)]
    Queue(#[from] QueueConfigError),
}

struct Job {
    hook: Arc<str>,
    deferred_spool: bool,
    msg: Message,
    /// Held, not read: dropping the job frees its back-pressure slot.
    _permit: HookPermit,
}

/// The Logger needs its hook sink before the queue manager (which needs the
/// Logger) exists; the bridge is created first and connected afterwards.
#[derive(Default, Clone)]
pub struct HookBridge(Arc<OnceLock<mpsc::UnboundedSender<Job>>>);

impl HookBridge {
    /// Start the worker that feeds hook messages into `qm`'s queues. It is
    /// not tracked by the queue manager: records logged while the queues
    /// shut down must still be spooled (they are delivered after a restart).
    pub fn connect(&self, qm: QueueManager) {
        let (tx, rx) = mpsc::unbounded_channel();
        if self.0.set(tx).is_ok() {
            tokio::spawn(worker(qm, rx));
        }
    }
}

impl HookSink for HookBridge {
    fn submit(&self, hook_name: &str, deferred_spool: bool, msg: Message, permit: HookPermit) {
        let Some(tx) = self.0.get() else {
            tracing::warn!(hook = %hook_name, "log hook record dropped: queues not started yet");
            return;
        };
        // The hook's semaphore bounds the channel, so it need not be bounded itself.
        let job = Job {
            hook: Arc::from(hook_name),
            deferred_spool,
            msg,
            _permit: permit,
        };
        if tx.send(job).is_err() {
            tracing::warn!(hook = %hook_name, "log hook record dropped: hook worker has stopped");
        }
    }
}

async fn worker(qm: QueueManager, mut rx: mpsc::UnboundedReceiver<Job>) {
    let mut jobs = Vec::with_capacity(MAX_ROUND);
    // Learnt from the first round that has handlers; see `LogHookPlan`.
    let mut plan: Option<LogHookPlan> = None;
    while rx.recv_many(&mut jobs, MAX_ROUND).await > 0 {
        let round = std::mem::take(&mut jobs);
        let short = round.len() < MAX_ROUND;
        let wanted = match &plan {
            Some(p) => decide_by_plan(&qm, p, round).await,
            None => decide(&qm, round, &mut plan).await,
        };
        if !wanted.is_empty() {
            // Spooling waits for an fsync; the next round's Lua calls need not.
            let qm = qm.clone();
            tokio::spawn(async move { spool_and_queue(&qm, wanted).await });
        }
        if short {
            // Let records accumulate briefly instead of waking for each
            // one: under load the wake-ups cost more than the records.
            tokio::time::sleep(COALESCE).await;
        }
    }
}

/// Run `should_enqueue_log_record` for each job; keep the wanted ones with
/// their scheduled queue. Refused jobs release their permit here. When the
/// handlers are only the helper's routers, `plan` learns them, and later
/// rounds go through [`decide_by_plan`] without borrowing a Lua context.
async fn decide(
    qm: &QueueManager,
    jobs: Vec<Job>,
    plan: &mut Option<LogHookPlan>,
) -> Vec<(Job, Arc<ScheduledQueue>)> {
    let ctx = match qm.engine().context().await {
        Ok(c) => c,
        Err(e) => {
            tracing::error!(error = %e, records = jobs.len(), "log hook records not queued: no Lua context");
            return Vec::new();
        }
    };
    // Every record of the round calls the same event: look it up once.
    let event = match ctx.prepare("should_enqueue_log_record") {
        Ok(Some(e)) => e,
        // No handler declines every record.
        Ok(None) => return Vec::new(),
        Err(e) => {
            tracing::error!(error = %e, records = jobs.len(), "log hook records not queued: should_enqueue_log_record");
            return Vec::new();
        }
    };
    *plan = event.log_hook_plan();
    let mut wanted = Vec::with_capacity(jobs.len());
    for job in jobs {
        let answer = event
            .call_log_hook(&job.msg, &job.hook)
            .await
            .map_err(RouteError::Handler);
        keep_if_wanted(qm, answer, job, &mut wanted).await;
    }
    wanted
}

async fn decide_by_plan(
    qm: &QueueManager,
    plan: &LogHookPlan,
    jobs: Vec<Job>,
) -> Vec<(Job, Arc<ScheduledQueue>)> {
    let mut wanted = Vec::with_capacity(jobs.len());
    // Each hook's records all go to the queue its router names: resolve
    // each queue once per round, not once per record. Hooks are few.
    let mut resolved: Vec<(&str, Arc<ScheduledQueue>)> = Vec::new();
    for job in jobs {
        // A routed record's queue name is its router's queue (meta `queue`
        // is taken verbatim), so it need not be computed from meta again.
        let Some(queue) = plan.route(&job.msg, &job.hook) else {
            continue;
        };
        if queue == NULL_QUEUE {
            continue;
        }
        let sq = match resolved.iter().find(|(name, _)| *name == queue) {
            Some((_, sq)) => sq.clone(),
            None => match qm.resolve(queue).await {
                Ok(sq) => {
                    resolved.push((queue, sq.clone()));
                    sq
                }
                Err(e) => {
                    tracing::error!(hook = %job.hook, error = %e, "log hook message not queued");
                    continue;
                }
            },
        };
        wanted.push((job, sq));
    }
    wanted
}

async fn keep_if_wanted(
    qm: &QueueManager,
    answer: Result<Option<Value>, RouteError>,
    job: Job,
    wanted: &mut Vec<(Job, Arc<ScheduledQueue>)>,
) {
    match route(qm, answer, &job).await {
        Ok(Some(sq)) => wanted.push((job, sq)),
        Ok(None) => {}
        Err(e) => tracing::error!(hook = %job.hook, error = %e, "log hook message not queued"),
    }
}

/// The queue a handler's answer sends `job` to. `Ok(None)`: the handler
/// declined or the message goes to the `null` queue.
async fn route(
    qm: &QueueManager,
    answer: Result<Option<Value>, RouteError>,
    job: &Job,
) -> Result<Option<Arc<ScheduledQueue>>, RouteError> {
    let wanted = match answer? {
        None | Some(Value::Nil) => false,
        Some(Value::Boolean(b)) => b,
        Some(other) => return Err(RouteError::NotBoolean(other.type_name())),
    };
    if !wanted {
        return Ok(None);
    }
    let name = job.msg.queue_name()?;
    if name == NULL_QUEUE {
        return Ok(None);
    }
    Ok(Some(qm.resolve(&name).await?))
}

async fn spool_and_queue(qm: &QueueManager, wanted: Vec<(Job, Arc<ScheduledQueue>)>) {
    // Deferred messages skip the spool, except when the queues are shutting
    // down: nothing would deliver them before the process exits.
    let defer = qm.is_accepting_now();
    let (deferred, stored): (Vec<_>, Vec<_>) = wanted
        .into_iter()
        .partition(|(j, _)| defer && j.deferred_spool);
    let msgs: Vec<Message> = stored.iter().map(|(j, _)| j.msg.clone()).collect();
    let results = qm.spool().store_many(&msgs).await;
    for ((job, sq), result) in stored.into_iter().zip(results) {
        match result {
            Ok(()) => qm.to_ready(Queued::loaded(job.msg, sq)),
            Err(e) => tracing::error!(hook = %job.hook, id = %job.msg.id(), error = %e,
                "log hook message not queued: spool write failed"),
        }
    }
    for (job, sq) in deferred {
        qm.to_ready(Queued::loaded(job.msg, sq));
    }
}
