//! The log-hook fast path: from a record the logger hands over to a hook message in its
//! queue. [`HookBridge`] is its one entry point (the logger's `HookSink`); this module drives
//! every step after the record is serialised, and what other crates contribute are the
//! primitives named below, each of which points back here.
//!
//! Every record of every mail passes through here, so the path is built to cost little per
//! record (BENCHMARKS.md has the measurements). Top-down:
//!
//! 1. **One serialisation** (in the logger, before this module). `Logger::log`
//!    (`crates/logging/src/logger.rs`) serialises a record once into a `JsonLine`
//!    (`crates/message/src/json_line.rs`, written by `crates/logging/src/line.rs`); a local
//!    log selecting the same fields writes that same line. For each hook that selects the
//!    record, `LogHook::permit` (`crates/logging/src/hook.rs`) takes a back-pressure slot and
//!    `LogHook::offer` builds the hook message, whose data is the line and whose meta
//!    `log_record` is the line without its newline (parsed only if a handler reads it), and
//!    calls [`HookSink::submit`] here.
//! 2. **Rounds** (`worker`, below). `submit` only pushes into a channel. The worker drains
//!    what arrived meanwhile (up to `MAX_ROUND`), pausing `COALESCE` after a short round.
//! 3. **One decision per round** (`decide.rs`). `should_enqueue_log_record` runs for the
//!    whole round in one borrowed Lua context with the handlers looked up once
//!    (`Context::prepare`). The built-in `policy-extras.log_hooks` helper marks its router
//!    when it has no `filter`, and a marked router is applied in Rust
//!    (`crates/policy/src/log_hook_route.rs`). When every handler is one, the chain is kept as
//!    a [`LogHookPlan`] and later rounds borrow no Lua context at all; the plan names each
//!    record's queue, resolved once per round.
//! 4. **One group commit** (`spool_and_queue`, below). The wanted messages of a round are
//!    spooled in one request; with `deferred_spool` the write is skipped unless the message
//!    has to wait. `Message::spool_write` (`crates/message/src/message.rs`) stores a message
//!    whose data is still its `log_record` line once, as a meta record flagged
//!    `data_is_log_record` (`crates/message/src/spool_record.rs`): the line goes in without
//!    being parsed again, and removing the message deletes nothing in the data spool. A
//!    message whose data or record changes afterwards is stored with its data in the data
//!    spool again.
//! 5. **After a restart.** Enumeration (`crates/spool/src/enumerate.rs`, and
//!    `crates/spool/src/load.rs` for a message read back later) cuts the data back out of that
//!    record byte for byte (`SpoolRecord::embedded_data`), and the message shares one buffer
//!    between data and `log_record` again, as when it was built.

mod decide;

use std::sync::{Arc, OnceLock};

use hermod_logging::{HookPermit, HookSink};
use hermod_message::Message;
use hermod_policy::LogHookPlan;
use tokio::sync::mpsc;

use crate::held::Queued;
use crate::manager::QueueManager;
use crate::resolve::ScheduledQueue;

/// Records handed to the worker per round; more wait for the next round.
const MAX_ROUND: usize = 512;
/// Pause after a round that did not fill: a hook record waits at most this
/// long for its companions, which is nothing next to a batch's latency.
const COALESCE: std::time::Duration = std::time::Duration::from_millis(2);

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
            Some(p) => decide::by_plan(&qm, p, round).await,
            None => decide::through_lua(&qm, round, &mut plan).await,
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

/// Spool the wanted messages of a round in one group commit, then queue them.
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
