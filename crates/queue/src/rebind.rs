//! Operators' rebinds (KumoMTA's `/api/admin/rebind/v1`): the waiting
//! messages of matching scheduled queues get new meta (or go through the
//! policy's `rebind_message` event), and each goes to the queue its meta
//! now names, with `get_queue_config` asked again for it. The new meta is
//! stored in the spool before the message reaches its new queue, so a
//! restart finds it there. A message that changed queue is due at once and
//! gets an `AdminRebind` record; one that did not keeps its due time unless
//! `always_flush` is set. Messages in a session's hands finish their attempt
//! first, as in KumoMTA.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::SystemTime;

use hermod_message::admin::{RebindOrder, RebindProgress};
use hermod_message::Message;
use hermod_policy::CallError;
use serde_json::Value;

use crate::held::{self, Loaded, Queued};
use crate::manager::QueueManager;
use crate::outcome;
use crate::ready::Entry;
use crate::resolve::{ScheduledQueue, NULL_QUEUE};

/// Where a rebound message goes.
enum Target {
    Queue(Arc<ScheduledQueue>),
    /// KumoMTA's `null` queue: the message is discarded.
    Null,
}

/// Each new queue name resolved once per rebind (with a fresh
/// `get_queue_config`), not once per message.
type Resolved = HashMap<String, Arc<ScheduledQueue>>;

impl QueueManager {
    /// Take the matching waiting messages now and rebind them in the
    /// background; returns the rebind's id and how many were taken. Its
    /// progress is listed until it is done.
    pub(crate) fn start_rebind(&self, order: RebindOrder) -> (String, usize) {
        let id = uuid::Uuid::new_v4().to_string();
        let c = order.criteria.clone();
        let taken = self.take_waiting(|sq| c.matches(&sq.name, &sq.components), true);
        let n = taken.len();
        if n == 0 {
            return (id, 0);
        }
        self.0.admin.rebinds.lock().push(RebindProgress {
            id: id.clone(),
            reason: order.reason.clone(),
            matched: n,
            done: 0,
        });
        let qm = self.clone();
        let rid = id.clone();
        self.0.tasks.spawn(async move {
            let mut resolved = Resolved::new();
            for chunk in held::chunks(taken) {
                let len = chunk.len();
                if qm.0.shutdown.is_cancelled() {
                    // Back where they were: shutdown stores what the spool lacks.
                    chunk.into_iter().for_each(|q| qm.to_ready(q));
                } else {
                    qm.rebind_chunk(chunk, &order, &mut resolved).await;
                }
                if let Some(p) = qm.0.admin.rebinds.lock().iter_mut().find(|p| p.id == rid) {
                    p.done += len;
                }
            }
            qm.0.admin.rebinds.lock().retain(|p| p.id != rid);
            tracing::info!(id = %rid, messages = n, reason = %order.reason, "admin: rebind finished");
        });
        (id, n)
    }

    async fn rebind_chunk(&self, chunk: Vec<Queued>, order: &RebindOrder, resolved: &mut Resolved) {
        let rec = &self.0.recorder;
        // With their bytes: a record that keeps its data inside can only be
        // rewritten whole.
        let mut entries = Vec::with_capacity(chunk.len());
        for l in held::load(&rec.spool, chunk, true).await {
            match l {
                Loaded::Ready(e) | Loaded::NoData(e, _) => entries.push(e),
                Loaded::Lost(id, queue, e) => held::lost(rec, id, queue, e),
            }
        }
        self.apply(&entries, order).await;

        let mut placed = Vec::with_capacity(entries.len());
        for e in entries {
            let target = self.target_of(&e, resolved).await;
            let changed = match &target {
                Target::Queue(sq) => sq.name != e.queue.name,
                Target::Null => true,
            };
            if (changed || order.always_flush) && e.message.due().is_some() {
                e.message.set_due(None);
                e.message.mark_meta_dirty();
            }
            placed.push((e, target, changed));
        }

        // The spool must name the new queue before the message goes there.
        // Messages the spool never held (deferred log-hook messages) stay out.
        let stored: Vec<Message> = placed
            .iter()
            .map(|(e, _, _)| e.message.clone())
            .filter(|m| m.is_persisted())
            .collect();
        for (r, m) in rec.spool.store_many(&stored).await.iter().zip(&stored) {
            if let Err(e) = r {
                tracing::error!(id = %m.id(), error = %e,
                    "cannot store a rebound message's new meta; it goes to its new queue now, but a restart finds it in its old one");
            }
        }

        for (e, target, changed) in placed {
            let to = match &target {
                Target::Queue(sq) => sq.name.as_str(),
                Target::Null => NULL_QUEUE,
            };
            if changed && !order.suppress_logging {
                outcome::admin_rebound(rec, &e.message, &e.queue.name, to, &order.reason).await;
            }
            match target {
                Target::Null => outcome::discard(rec, &e.message),
                Target::Queue(sq) => {
                    let due = e.message.due().filter(|d| *d > SystemTime::now());
                    match due {
                        Some(at) => self.to_timer(e.message, sq, at),
                        None => self.to_ready(Queued::loaded(e.message, sq)),
                    }
                }
            }
        }
    }

    /// Set `data` as meta, or hand each message and `data` to the policy's
    /// `rebind_message` event (which the admin API has checked exists).
    async fn apply(&self, entries: &[Entry], order: &RebindOrder) {
        if !order.trigger_rebind_event {
            for e in entries {
                for (k, v) in &order.data {
                    e.message.set_meta(k.clone(), Value::String(v.clone()));
                }
            }
            return;
        }
        let ctx = match self.0.engine.context().await {
            Ok(c) => c,
            Err(e) => {
                tracing::error!(error = %e, "rebind: no policy context for rebind_message; messages keep their meta");
                return;
            }
        };
        for e in entries {
            let r: Result<Option<mlua::Value>, CallError> = ctx
                .call("rebind_message", (e.message.clone(), order.data.clone()))
                .await;
            if let Err(err) = r {
                tracing::error!(id = %e.message.id(), error = %err,
                    "rebind_message failed; the message goes to the queue its meta names now");
            }
        }
    }

    /// The queue `e`'s meta names now; its old queue when that cannot be
    /// computed or resolved (the error is logged).
    async fn target_of(&self, e: &Entry, resolved: &mut Resolved) -> Target {
        let name = match e.message.queue_name() {
            Ok(n) => n,
            Err(err) => {
                tracing::error!(id = %e.message.id(), error = %err,
                    "rebind: cannot compute the new queue name; the message stays in its queue");
                return Target::Queue(e.queue.clone());
            }
        };
        if name == NULL_QUEUE {
            return Target::Null;
        }
        if let Some(sq) = resolved.get(&name) {
            return Target::Queue(sq.clone());
        }
        match self.resolve_with(&name, true).await {
            Ok(sq) => {
                resolved.insert(name, sq.clone());
                Target::Queue(sq)
            }
            Err(err) => {
                tracing::error!(id = %e.message.id(), queue = %name, error = %err,
                    "rebind: get_queue_config failed for the new queue; the message stays in its queue");
                Target::Queue(e.queue.clone())
            }
        }
    }
}
