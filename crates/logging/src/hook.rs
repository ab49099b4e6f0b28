//! The logger's side of log hooks: each record a hook selects becomes a new message, handed
//! through `HookSink` to the queue crate. The fast path is driven from
//! `crates/queue/src/hooks/mod.rs`, whose header describes it end to end.

use std::sync::Arc;

use bytes::Bytes;
use hermod_message::{EnvelopeAddress, JsonLine, Message, Protocol, SpoolId, LOG_RECORD_KEY};
use serde_json::Value;
use tokio::sync::{Semaphore, TryAcquireError};

use crate::config::{ConfigError, LogHookConfig};
use crate::record::LogRecord;
use crate::template::RecordTemplates;

/// One unit of a hook's `back_pressure` allowance. The sink drops it once
/// the message is queued or refused, which is what frees the slot.
pub type HookPermit = tokio::sync::OwnedSemaphorePermit;

/// Receives hook messages. Implemented by the queue crate: it runs
/// `should_enqueue_log_record(msg, hook_name)`, then spools and queues.
///
/// `submit` must not wait: the logger calls it for every record, and a
/// record should cost a channel push here, not a task of its own.
///
/// With `deferred_spool` the message is queued without a spool write; it is
/// stored only if it has to wait (a retry) or the server shuts down first.
pub trait HookSink: Send + Sync + 'static {
    fn submit(&self, hook_name: &str, deferred_spool: bool, msg: Message, permit: HookPermit);
}

/// One configured hook as the logger holds it: its `back_pressure` slots and its `per_record`
/// templates. For each record the hook selects, `Logger::log` takes a [`LogHook::permit`],
/// then calls [`LogHook::offer`] with the record's one JSON line.
pub(crate) struct LogHook {
    name: String,
    deferred_spool: bool,
    templates: RecordTemplates,
    back_pressure: u32,
    permits: Arc<Semaphore>,
    /// `log_hook_backlog_count{logger}`: records that waited for a slot.
    backlog: hermod_metrics::Counter,
}

impl LogHook {
    pub(crate) fn new(cfg: &LogHookConfig) -> Result<Self, ConfigError> {
        // Semaphore permits are u32-bounded; larger values behave as unbounded anyway.
        let bp = u32::try_from(cfg.back_pressure)
            .unwrap_or(u32::MAX)
            .min(Semaphore::MAX_PERMITS as u32);
        Ok(Self {
            name: cfg.name.clone(),
            deferred_spool: cfg.deferred_spool,
            templates: RecordTemplates::compile("kumo.configure_log_hook", &cfg.per_record)?,
            back_pressure: bp,
            permits: Arc::new(Semaphore::new(bp as usize)),
            backlog: hermod_metrics::log_hook_backlog_count(&cfg.name),
        })
    }

    pub(crate) fn name(&self) -> &str {
        &self.name
    }

    /// One of the hook's slots, waiting (and counting the wait) while all are taken. `None`
    /// once the hook is closed.
    pub(crate) async fn permit(&self) -> Option<HookPermit> {
        match self.permits.clone().try_acquire_owned() {
            Ok(p) => Some(p),
            Err(TryAcquireError::NoPermits) => {
                self.backlog.inc();
                self.permits.clone().acquire_owned().await.ok()
            }
            Err(TryAcquireError::Closed) => None,
        }
    }

    /// Build the hook message for `record` (of `msg`) from its `line` and hand it to `sink`
    /// with its slot. Failures are reported here; the record is then dropped.
    pub(crate) fn offer(
        &self,
        sink: &dyn HookSink,
        record: &LogRecord,
        line: JsonLine,
        msg: &Message,
        permit: HookPermit,
    ) {
        let text = match self.templates.render(record) {
            Some(Ok(text)) => Some(text),
            Some(Err(e)) => {
                tracing::error!(hook = %self.name, id = %record.id, error = %e,
                    "log template failed; the hook message carries the JSON record instead");
                None
            }
            None => None,
        };
        match build_hook_message(record, line, text, msg.sender(), msg.recipients()) {
            Ok(m) => sink.submit(&self.name, self.deferred_spool, m, permit),
            Err(e) => tracing::error!(hook = %self.name, error = %e, "log hook record dropped"),
        }
    }

    /// Wait until every slot is free again: each submitted message is queued or refused.
    pub(crate) async fn drain(&self) {
        if let Ok(all) = self.permits.acquire_many(self.back_pressure).await {
            drop(all);
        }
    }

    /// Records submitted and not yet queued or refused.
    pub(crate) fn in_flight(&self) -> usize {
        (self.back_pressure as usize).saturating_sub(self.permits.available_permits())
    }
}

#[derive(Debug, thiserror::Error)]
pub enum HookMessageError {
    #[error("log record for message {0} has no recipient")]
    NoRecipient(String),
    #[error("cannot serialise log record for message {id}: {source}")]
    Serialize {
        id: String,
        #[source]
        source: serde_json::Error,
    },
}

/// The record as the JSON line a hook message carries (and, without its
/// newline, as meta `log_record`). Local logs selecting the same fields
/// write this same line instead of serialising the record again.
pub fn hook_line(record: &LogRecord) -> Result<JsonLine, HookMessageError> {
    record
        .to_json_line()
        .map_err(|source| HookMessageError::Serialize {
            id: record.id.clone(),
            source,
        })
}

/// Build the hook message for `record` (ARCHITECTURE.md, log hooks) from its
/// `line` (see [`hook_line`]). `text` is the rendered `per_record`
/// template, if the hook has one for this type; otherwise the data is the
/// JSON line.
pub fn build_hook_message(
    record: &LogRecord,
    line: JsonLine,
    text: Option<String>,
    sender: EnvelopeAddress,
    recipients: Vec<EnvelopeAddress>,
) -> Result<Message, HookMessageError> {
    if recipients.is_empty() {
        return Err(HookMessageError::NoRecipient(record.id.clone()));
    }
    let data = match text {
        Some(t) => Bytes::from(t),
        None => line.line().clone(),
    };
    let mut meta = record.meta.clone();
    meta.insert(
        "reception_protocol".into(),
        Value::String(Protocol::LogRecord.as_str().into()),
    );
    let msg = Message::new(SpoolId::new(), sender, recipients, meta, data);
    // Without its newline the line is also meta `log_record`, parsed only
    // if something reads it.
    msg.set_meta_json_line(LOG_RECORD_KEY, &line);
    Ok(msg)
}
