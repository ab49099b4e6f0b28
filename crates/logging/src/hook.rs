//! Log hooks: each record becomes a new message that the queue crate
//! (through `HookSink`) offers to `should_enqueue_log_record`.

use bytes::Bytes;
use hermod_message::{EnvelopeAddress, JsonLine, Message, Protocol, SpoolId, LOG_RECORD_KEY};
use serde_json::Value;

use crate::record::LogRecord;

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
