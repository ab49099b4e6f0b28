//! What the admin API shows of queued mail: one message (inspect-message),
//! a scheduled queue with a sample of its messages (inspect-sched-q) and a
//! ready queue (inspect-ready-q). Sampling copies handles under each
//! queue's lock and reads the messages back from the spool afterwards, so
//! an inspection never holds up delivery for a spool read.

use std::collections::BTreeSet;
use std::sync::atomic::Ordering;
use std::time::{Duration, SystemTime};

use hermod_message::admin::{AdminError, MessageInfo, ReadyQueueInfo, Sample, ScheduledQueueInfo};
use hermod_message::{Message, SpoolId};
use hermod_policy::{ProtocolConfig, QueueConfig};
use hermod_spool::{Spool, SpoolError};
use serde_json::{json, Value};

use crate::held::{Queued, Sampled};
use crate::manager::QueueManager;
use crate::ready::ReadyQueue;

fn secs(d: Duration) -> String {
    humantime::format_duration(d).to_string()
}

/// The `get_queue_config` answer in force, with KumoMTA's key names.
fn queue_config_json(cfg: &QueueConfig) -> Value {
    let protocol = match &cfg.protocol {
        ProtocolConfig::Smtp | ProtocolConfig::SmtpWith(_) => json!("smtp"),
        ProtocolConfig::Maildir(m) => json!({ "maildir_path": m.maildir_path }),
        ProtocolConfig::CustomLua(c) => json!({ "custom_lua": { "constructor": c.constructor } }),
    };
    json!({
        "retry_interval": secs(cfg.retry_interval),
        "max_retry_interval": cfg.max_retry_interval.map(secs),
        "max_age": secs(cfg.max_age),
        "egress_pool": cfg.egress_pool,
        "max_message_rate": cfg.max_message_rate,
        "reap_interval": secs(cfg.reap_interval),
        "refresh_interval": secs(cfg.refresh_interval),
        "protocol": protocol,
    })
}

/// The egress path limits a ready queue applies (KumoMTA's key names);
/// `null` before `get_egress_path_config` first answered.
fn path_config_json(rq: &ReadyQueue) -> Value {
    let Some(cfg) = rq.egress_path() else {
        return Value::Null;
    };
    let limits = rq.limits();
    let rate = |t: &Option<hermod_policy::ThrottleSpec>| {
        t.as_ref()
            .map(|t| format!("{}/{}", t.limit, humantime::format_duration(t.period)))
    };
    json!({
        "connection_limit": limits.connection_limit,
        "max_deliveries_per_connection": limits.max_deliveries_per_connection,
        "max_ready": limits.max_ready,
        "idle_timeout": secs(limits.idle_timeout),
        "max_message_rate": rate(&cfg.max_message_rate),
        "max_connection_rate": rate(&cfg.max_connection_rate),
        "refresh_interval": secs(cfg.refresh_interval),
    })
}

/// What an operator sees of `m`; `data` when the body was asked for.
fn info_of(m: &Message, data: Option<Vec<u8>>) -> MessageInfo {
    MessageInfo {
        id: m.id(),
        sender: m.sender().to_string(),
        recipients: m.recipients().iter().map(|r| r.to_string()).collect(),
        meta: m.meta(),
        data,
        due: m.due(),
        num_attempts: m.num_attempts(),
        scheduling: m.scheduling(),
    }
}

fn spool_error(id: SpoolId, e: SpoolError) -> AdminError {
    match e {
        SpoolError::NotFound(_) => AdminError::NotFound(id),
        e => AdminError::Spool {
            id,
            reason: e.to_string(),
        },
    }
}

/// One message as the spool holds it.
async fn load_one(spool: &Spool, id: SpoolId, want_body: bool) -> Result<MessageInfo, AdminError> {
    let loaded = spool.load_messages(vec![id], want_body).await;
    let m = match loaded.into_iter().next() {
        Some(Ok(m)) => m,
        Some(Err(e)) => return Err(spool_error(id, e)),
        None => return Err(spool_error(id, SpoolError::Io("no result".into()))),
    };
    let data = match want_body {
        true => Some(m.data().map_err(|e| AdminError::Spool {
            id,
            reason: e.to_string(),
        })?),
        false => None,
    };
    Ok(info_of(&m, data.map(|d| d.to_vec())))
}

/// The sampled messages as operators see them. Parked ones are read back
/// from the spool in one call; one that has left it meanwhile (delivered)
/// is left out.
async fn infos(spool: &Spool, sample: Vec<Sampled>, want_body: bool) -> Vec<MessageInfo> {
    let parked: Vec<SpoolId> = sample
        .iter()
        .filter_map(|h| match h {
            Sampled::Parked(id) => Some(*id),
            Sampled::Loaded(_) => None,
        })
        .collect();
    let mut from_spool = spool.load_messages(parked, want_body).await.into_iter();
    let mut out = Vec::with_capacity(sample.len());
    for h in sample {
        match h {
            Sampled::Parked(_) => {
                if let Some(Ok(m)) = from_spool.next() {
                    let data = want_body.then(|| m.data().ok().map(|d| d.to_vec()));
                    out.push(info_of(&m, data.flatten()));
                }
            }
            Sampled::Loaded(m) => {
                let data = match (want_body, m.is_data_loaded()) {
                    (false, _) => None,
                    (true, true) => m.data().ok().map(|d| d.to_vec()),
                    (true, false) => spool.load_data(m.id()).await.ok().map(|d| d.to_vec()),
                };
                out.push(info_of(&m, data));
            }
        }
    }
    out
}

impl QueueManager {
    pub(crate) async fn inspect_message(
        &self,
        id: SpoolId,
        want_body: bool,
    ) -> Result<MessageInfo, AdminError> {
        load_one(&self.0.spool, id, want_body).await
    }

    /// inspect-sched-q. Hermod hands a due message straight to its ready
    /// queue, so a scheduled queue's messages are those waiting anywhere:
    /// for a retry, a suspension, a route, or a session.
    pub(crate) async fn inspect_scheduled_queue(
        &self,
        name: String,
        sample: Sample,
    ) -> Result<ScheduledQueueInfo, AdminError> {
        let sq = self
            .scheduled_queue(&name)
            .ok_or_else(|| AdminError::NoSuchQueue {
                kind: "scheduled",
                name: name.clone(),
            })?;
        let limit = sample.limit.unwrap_or(usize::MAX);
        let mine = |q: &Queued| q.queue.name == name;
        let mut picked = Vec::new();
        let mut waiting = self.0.timer.sample(mine, limit, &mut picked);
        waiting += self.0.admin.sample_held(mine, limit, &mut picked);
        waiting += crate::held::sample(sq.smtp.lock().parked.iter(), mine, limit, &mut picked);
        let queues: Vec<_> = self.0.ready.lock().values().cloned().collect();
        for rq in queues {
            waiting += rq.sample(mine, limit, &mut picked);
        }
        let messages = infos(&self.0.spool, picked, sample.want_body).await;
        let last_used = SystemTime::now()
            .checked_sub(sq.idle())
            .unwrap_or_else(SystemTime::now);
        Ok(ScheduledQueueInfo {
            config: queue_config_json(&sq.config()),
            name,
            waiting,
            messages,
            last_used,
        })
    }

    /// inspect-ready-q: the queue's identity, state and limits, the
    /// scheduled queues that feed it when asked, and a sample of its messages
    /// when a limit is given.
    pub(crate) async fn inspect_ready_queue(
        &self,
        name: String,
        include_scheduled: bool,
        sample: Option<Sample>,
    ) -> Result<ReadyQueueInfo, AdminError> {
        let rq =
            self.0
                .ready
                .lock()
                .get(&name)
                .cloned()
                .ok_or_else(|| AdminError::NoSuchQueue {
                    kind: "ready",
                    name: name.clone(),
                })?;
        let scheduled_queues = include_scheduled.then(|| {
            let mut names: BTreeSet<String> = rq.scheduled_names();
            names.extend(rq.representative().map(|sq| sq.name.clone()));
            names.into_iter().collect()
        });
        let messages = match sample {
            None => None,
            Some(s) => {
                let mut picked = Vec::new();
                rq.sample(|_| true, s.limit.unwrap_or(usize::MAX), &mut picked);
                Some(infos(&self.0.spool, picked, s.want_body).await)
            }
        };
        let protocol = name.rsplit_once('@').map_or("", |x| x.1).to_string();
        Ok(ReadyQueueInfo {
            egress_source: rq.path.source.clone(),
            egress_pool: rq.pool.clone(),
            protocol,
            queued: rq.len(),
            sessions: rq.sessions.load(Ordering::SeqCst),
            conditions: rq.conditions(),
            suspension: self.0.admin.ready_suspension(&name),
            path_config: path_config_json(&rq),
            connection_limit: rq.is_configured().then(|| rq.limits().connection_limit),
            scheduled_queues,
            messages,
            name,
        })
    }
}
