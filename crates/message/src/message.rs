use std::sync::Arc;
use std::time::SystemTime;

use bytes::Bytes;
use parking_lot::Mutex;
use serde_json::value::RawValue;
use serde_json::{Map, Value};

use crate::headers::{self, HeaderError};
use crate::queue_name::{QueueNameComponents, QueueNameError};
use crate::scheduling::{Scheduling, StoredSchedule};
use crate::spool_record::{write_record, RecordParts, LOG_RECORD_KEY};
use crate::{EnvelopeAddress, JsonLine, SpoolId, SpoolRecord};

#[derive(Debug, thiserror::Error)]
pub enum MessageError {
    #[error(transparent)]
    Header(#[from] HeaderError),
    #[error(transparent)]
    QueueName(#[from] QueueNameError),
    #[error("message data is not loaded")]
    DataNotLoaded,
    #[error("corrupt spool record: {0}")]
    Corrupt(String),
}

struct Inner {
    sender: EnvelopeAddress,
    recipients: Vec<EnvelopeAddress>,
    meta: Map<String, Value>,
    /// `None` while the message waits in a scheduled queue: its bytes stay in the spool.
    data: Option<Bytes>,
    num_attempts: u32,
    due: Option<SystemTime>,
    /// `msg:set_scheduling`'s window, first attempt and expiry; boxed, as
    /// few messages have one (crates/message/src/scheduling.rs).
    scheduling: Option<Box<Scheduling>>,
    meta_dirty: bool,
    data_dirty: bool,
    /// Some version of the message is in the spool (read from it, or stored).
    persisted: bool,
    /// A meta value still in JSON text form. Log-hook messages carry their
    /// whole record as meta `log_record`; most are never read, so the text
    /// (usually the message data itself) is parsed only when a reader asks.
    lazy: Option<LazyMeta>,
    /// The stored version keeps its data inside meta (`data_is_log_record`):
    /// the data spool has no copy, so the bytes must stay in memory.
    data_in_meta: bool,
    /// `meta` as JSON text while the message waits without its bytes: one
    /// buffer instead of a map of small allocations (a queued message costs
    /// about a kilobyte less). Any reader of `meta` unpacks it first.
    packed: Option<Bytes>,
    /// Some stored version put bytes in the data spool, so removing the
    /// message must delete them there too. Log-hook messages never do,
    /// and skipping their pointless data-spool deletions is measurable.
    data_spooled: bool,
    /// Counts this message in `message_count` while it lives.
    _counted: crate::Counted,
}

struct LazyMeta {
    key: &'static str,
    json: Bytes,
    /// Known to be valid JSON (serialised by Hermod, or parsed from the
    /// spool); anything else is checked before it is spooled.
    valid: bool,
}

impl Inner {
    /// `meta` as a map again, if it was packed.
    fn unpack(&mut self) {
        if let Some(packed) = self.packed.take() {
            // Hermod packed it from a map, so it parses back the same.
            self.meta = serde_json::from_slice(&packed).unwrap_or_default();
        }
    }

    /// Keep `meta` as JSON text while the message waits.
    fn pack(&mut self) {
        if self.packed.is_some() || self.meta.is_empty() {
            return;
        }
        if let Ok(text) = serde_json::to_vec(&self.meta) {
            self.packed = Some(Bytes::from(text));
            self.meta = Map::new();
        }
    }

    /// Parse the lazy value into `meta`, for readers of the whole map.
    fn materialize(&mut self) {
        self.unpack();
        let Some(lazy) = self.lazy.take() else {
            return;
        };
        // Only Hermod sets lazy values, from JSON it serialised itself.
        let value = serde_json::from_slice(&lazy.json).unwrap_or(Value::Null);
        self.meta.insert(lazy.key.to_string(), value);
    }

    fn materialize_key(&mut self, key: &str) {
        self.unpack();
        if self.lazy.as_ref().is_some_and(|l| l.key == key) {
            self.materialize();
        }
    }

    /// The data is the lazy `log_record` text plus its newline, in the same
    /// buffer (how log hooks build their messages, and how a restart
    /// restores them), so the spool can keep one copy.
    fn data_is_log_record_line(&self) -> bool {
        match (&self.data, &self.lazy) {
            (Some(d), Some(l)) => {
                l.key == LOG_RECORD_KEY
                    && d.len() == l.json.len() + 1
                    && d.as_ptr() == l.json.as_ptr()
                    && d.last() == Some(&b'\n')
            }
            _ => false,
        }
    }

    /// The spool record as JSON, serialised in place: a log-hook message's
    /// meta holds the whole record, and copying that tree only to serialise
    /// it cost as much as the serialisation itself. Returns whether the data
    /// is embedded (`data_is_log_record`), which needs a valid lazy value.
    fn record_json(&mut self) -> (Vec<u8>, bool) {
        // A lazy value not known to be valid is checked (far cheaper than
        // parsing it into a tree); one that fails is materialised (as null)
        // rather than spooled as is.
        let valid = self
            .lazy
            .as_ref()
            .is_some_and(|l| l.valid || serde_json::from_slice::<&RawValue>(&l.json).is_ok());
        if !valid {
            self.materialize();
        }
        self.unpack();
        let embed = valid && self.data_is_log_record_line();
        let lazy = self.lazy.as_ref().map(|l| (l.key, &l.json[..]));
        // Sized for the lazy text plus the envelope and small meta, so a
        // hook message's record is written without growing the buffer.
        let mut out = Vec::with_capacity(lazy.map_or(0, |(_, j)| j.len()) + 512);
        let parts = RecordParts {
            sender: &self.sender,
            recipients: &self.recipients,
            meta: &self.meta,
            lazy,
            schedule: self.schedule(),
            data_is_log_record: embed,
        };
        // Writing addresses, JSON values and known-valid text into memory
        // cannot fail.
        if write_record(&mut out, &parts).is_err() {
            out.clear();
        }
        (out, embed)
    }
}

/// What storing a message must write; see [`Message::spool_write`].
#[derive(Debug)]
pub struct SpoolWrite {
    /// New bytes for the data spool, if they changed (or must move there).
    pub data: Option<Bytes>,
    /// The new meta record, if it changed.
    pub meta: Option<Vec<u8>>,
    /// The record carries the data itself; pass to [`Message::mark_stored`].
    pub data_in_meta: bool,
}

/// A message. Cheap to clone: clones share one state, which is what lets a
/// Lua handler edit the message that Rust later spools.
#[derive(Clone)]
pub struct Message {
    id: SpoolId,
    inner: Arc<Mutex<Inner>>,
}

impl Inner {
    /// The record's `schedule`: attempts, due time and scheduling; `None`
    /// before the first retry of a message without scheduling.
    fn schedule(&self) -> Option<StoredSchedule> {
        StoredSchedule::of(self.num_attempts, self.due, self.scheduling.as_deref())
    }
}

impl Message {
    pub fn new(
        id: SpoolId,
        sender: EnvelopeAddress,
        recipients: Vec<EnvelopeAddress>,
        meta: Map<String, Value>,
        data: impl Into<Bytes>,
    ) -> Self {
        Self {
            id,
            inner: Arc::new(Mutex::new(Inner {
                sender,
                recipients,
                meta,
                data: Some(data.into()),
                num_attempts: 0,
                due: None,
                scheduling: None,
                meta_dirty: true,
                data_dirty: true,
                persisted: false,
                lazy: None,
                packed: None,
                data_in_meta: false,
                data_spooled: false,
                _counted: crate::Counted::new(),
            })),
        }
    }

    /// Rebuild a message from its spool record; `data` may be left unloaded,
    /// except for a record with `data_is_log_record`, whose data (from
    /// [`SpoolRecord::embedded_data`]) is not in the data spool.
    pub fn from_spool(id: SpoolId, record: SpoolRecord, data: Option<Bytes>) -> Self {
        // Hermod persists the attempt count and due time (KumoMTA does not),
        // so a message waiting for a retry keeps its schedule across restarts.
        let sched = record.schedule.unwrap_or_default();
        let mut meta = record.meta;
        // The value and the data share one buffer again, as when built.
        let lazy = match &data {
            Some(d) if record.data_is_log_record => {
                meta.shift_remove(LOG_RECORD_KEY);
                Some(LazyMeta {
                    key: LOG_RECORD_KEY,
                    json: d.slice(..d.len().saturating_sub(1)),
                    // The whole record was parsed to get here.
                    valid: true,
                })
            }
            _ => None,
        };
        let data_in_meta = lazy.is_some();
        Self {
            id,
            inner: Arc::new(Mutex::new(Inner {
                sender: record.sender,
                recipients: record.recipient,
                meta,
                data,
                num_attempts: sched.attempts,
                due: sched.due,
                scheduling: sched.scheduling.map(Box::new),
                meta_dirty: false,
                data_dirty: false,
                persisted: true,
                lazy,
                packed: None,
                data_in_meta,
                data_spooled: !data_in_meta,
                _counted: crate::Counted::new(),
            })),
        }
    }

    pub fn id(&self) -> SpoolId {
        self.id
    }

    pub fn created(&self) -> SystemTime {
        self.id.created()
    }

    pub fn sender(&self) -> EnvelopeAddress {
        self.inner.lock().sender.clone()
    }

    pub fn set_sender(&self, a: EnvelopeAddress) {
        let mut g = self.inner.lock();
        g.sender = a;
        g.meta_dirty = true;
    }

    pub fn recipients(&self) -> Vec<EnvelopeAddress> {
        self.inner.lock().recipients.clone()
    }

    pub fn first_recipient(&self) -> Option<EnvelopeAddress> {
        self.inner.lock().recipients.first().cloned()
    }

    pub fn set_recipients(&self, r: Vec<EnvelopeAddress>) {
        let mut g = self.inner.lock();
        g.recipients = r;
        g.meta_dirty = true;
    }

    pub fn get_meta(&self, key: &str) -> Option<Value> {
        let mut g = self.inner.lock();
        g.materialize_key(key);
        g.meta.get(key).cloned()
    }

    /// `Value::Null` stores null, which reads back as absent.
    pub fn set_meta(&self, key: impl Into<String>, value: Value) {
        let mut g = self.inner.lock();
        g.unpack();
        let key = key.into();
        if g.lazy.as_ref().is_some_and(|l| l.key == key) {
            g.lazy = None;
        }
        g.meta.insert(key, value);
        g.meta_dirty = true;
    }

    /// Set meta `key` to the JSON value `json` without parsing it: it is
    /// parsed on first read and written to the spool as it is, once checked.
    pub fn set_meta_json_lazy(&self, key: &'static str, json: Bytes) {
        self.set_lazy(key, json, false);
    }

    /// Set meta `key` to `line`'s JSON value, unparsed like
    /// [`Message::set_meta_json_lazy`] but never checked again. A message
    /// whose data is `line` itself keeps one copy of it in the spool.
    pub fn set_meta_json_line(&self, key: &'static str, line: &JsonLine) {
        self.set_lazy(key, line.json(), true);
    }

    fn set_lazy(&self, key: &'static str, json: Bytes, valid: bool) {
        let mut g = self.inner.lock();
        g.unpack();
        if g.lazy.as_ref().is_some_and(|l| l.key != key) {
            g.materialize();
        }
        g.meta.shift_remove(key);
        g.lazy = Some(LazyMeta { key, json, valid });
        g.meta_dirty = true;
    }

    pub fn meta(&self) -> Map<String, Value> {
        let mut g = self.inner.lock();
        g.materialize();
        g.meta.clone()
    }

    pub fn data(&self) -> Result<Bytes, MessageError> {
        self.inner
            .lock()
            .data
            .clone()
            .ok_or(MessageError::DataNotLoaded)
    }

    pub fn is_data_loaded(&self) -> bool {
        self.inner.lock().data.is_some()
    }

    pub fn data_len(&self) -> usize {
        self.inner
            .lock()
            .data
            .as_ref()
            .map(|d| d.len())
            .unwrap_or(0)
    }

    pub fn set_data(&self, data: impl Into<Bytes>) {
        let mut g = self.inner.lock();
        g.data = Some(data.into());
        g.data_dirty = true;
    }

    /// Load data read back from the spool without marking it dirty.
    pub fn load_data(&self, data: Bytes) {
        self.inner.lock().data = Some(data);
    }

    /// Drop the in-memory bytes while the message waits, if the data spool
    /// holds them. Bytes kept inside meta stay: they share the lazy
    /// `log_record`'s buffer, so dropping them would free nothing.
    pub fn unload_data(&self) {
        let mut g = self.inner.lock();
        if !g.data_dirty && !g.data_in_meta {
            g.data = None;
        }
        g.pack();
    }

    pub fn num_attempts(&self) -> u32 {
        self.inner.lock().num_attempts
    }

    pub fn set_num_attempts(&self, n: u32) {
        self.inner.lock().num_attempts = n;
    }

    pub fn increment_attempts(&self) -> u32 {
        let mut g = self.inner.lock();
        g.num_attempts += 1;
        g.num_attempts
    }

    pub fn due(&self) -> Option<SystemTime> {
        self.inner.lock().due
    }

    pub fn set_due(&self, due: Option<SystemTime>) {
        self.inner.lock().due = due;
    }

    pub fn scheduling(&self) -> Option<Scheduling> {
        self.inner.lock().scheduling.as_deref().copied()
    }

    /// `msg:set_scheduling`: set (or, with `None`, clear) the message's
    /// scheduling. As in KumoMTA, setting it moves the due time (now, when
    /// there is none) to the first moment the scheduling allows.
    pub fn set_scheduling(&self, scheduling: Option<Scheduling>) {
        let mut g = self.inner.lock();
        let scheduling = scheduling.filter(|s| !s.is_empty());
        if let Some(s) = &scheduling {
            g.due = Some(s.adjust(g.due.unwrap_or_else(SystemTime::now)));
        }
        g.scheduling = scheduling.map(Box::new);
        g.meta_dirty = true;
    }

    pub fn is_meta_dirty(&self) -> bool {
        self.inner.lock().meta_dirty
    }

    pub fn is_data_dirty(&self) -> bool {
        self.inner.lock().data_dirty
    }

    /// Called by the spool once `spool_write`'s result is durably stored.
    pub fn mark_stored(&self, data_in_meta: bool) {
        let mut g = self.inner.lock();
        g.meta_dirty = false;
        g.data_dirty = false;
        g.persisted = true;
        g.data_in_meta = data_in_meta;
        g.data_spooled |= !data_in_meta;
    }

    /// Mark the current state stored with its data in the data spool.
    pub fn mark_clean(&self) {
        self.mark_stored(false);
    }

    /// False for a message that was never stored (a log-hook message with
    /// `deferred_spool`): it has no spool entry to remove.
    pub fn is_persisted(&self) -> bool {
        self.inner.lock().persisted
    }

    /// The spool holds exactly this message (stored, and not edited since):
    /// a queue may keep its id alone and read it back when it is needed.
    pub fn is_spooled_as_is(&self) -> bool {
        let g = self.inner.lock();
        g.persisted && !g.meta_dirty && !g.data_dirty
    }

    /// Whether the data spool may hold bytes of this message; false for a
    /// message only ever stored with its data inside the meta record.
    pub fn is_data_spooled(&self) -> bool {
        self.inner.lock().data_spooled
    }

    pub fn queue_name(&self) -> Result<String, MessageError> {
        let mut g = self.inner.lock();
        g.unpack();
        let domain = g.recipients.first().map(|r| r.domain().to_string());
        Ok(QueueNameComponents::compute(&g.meta, domain.as_deref())?)
    }

    /// The spool record as a value; the spool itself uses `spool_write`.
    #[cfg(test)]
    pub(crate) fn spool_record(&self) -> SpoolRecord {
        let mut g = self.inner.lock();
        g.materialize();
        SpoolRecord {
            sender: g.sender.clone(),
            recipient: g.recipients.clone(),
            meta: g.meta.clone(),
            schedule: g.schedule(),
            data_is_log_record: false,
        }
    }

    /// Record that the schedule changed so the next spool store writes meta.
    pub fn mark_meta_dirty(&self) {
        self.inner.lock().meta_dirty = true;
    }

    /// What must be written to store the message, or `None` if the spool
    /// already holds its current state. A log-hook message whose data is its
    /// `log_record` line is written once, as meta alone (step 4 of the fast
    /// path in crates/queue/src/hooks/mod.rs).
    pub fn spool_write(&self) -> Result<Option<SpoolWrite>, MessageError> {
        let mut g = self.inner.lock();
        if !g.meta_dirty && !g.data_dirty {
            return Ok(None);
        }
        // A data-only change of data kept in the data spool leaves the
        // record as it is; anything touching data kept (or to be kept) in
        // the record rewrites it.
        let rewrite = g.meta_dirty || g.data_in_meta || g.data_is_log_record_line();
        let record = rewrite.then(|| g.record_json());
        let embed = record.as_ref().is_some_and(|(_, embed)| *embed);
        // The data spool must get the bytes when they changed, or when the
        // stored version kept them in meta and this one cannot.
        let data = if !embed && (g.data_dirty || g.data_in_meta) {
            Some(g.data.clone().ok_or(MessageError::DataNotLoaded)?)
        } else {
            None
        };
        Ok(Some(SpoolWrite {
            data,
            meta: record.map(|(meta, _)| meta),
            data_in_meta: embed,
        }))
    }

    /// The meta record alone (tests compare it with [`SpoolRecord`]).
    #[cfg(test)]
    pub(crate) fn spool_record_json(&self) -> Vec<u8> {
        self.inner.lock().record_json().0
    }

    pub fn parse_spool_record(bytes: &[u8]) -> Result<SpoolRecord, MessageError> {
        serde_json::from_slice(bytes).map_err(|e| MessageError::Corrupt(e.to_string()))
    }

    fn edit_data(
        &self,
        f: impl FnOnce(&[u8]) -> Result<Vec<u8>, HeaderError>,
    ) -> Result<(), MessageError> {
        let mut g = self.inner.lock();
        let data = g.data.as_ref().ok_or(MessageError::DataNotLoaded)?;
        let new = f(data)?;
        g.data = Some(new.into());
        g.data_dirty = true;
        Ok(())
    }

    pub fn get_first_named_header_value(&self, name: &str) -> Result<Option<String>, MessageError> {
        Ok(headers::get_first_named(&self.data()?, name))
    }

    pub fn get_all_named_header_values(&self, name: &str) -> Result<Vec<String>, MessageError> {
        Ok(headers::get_all_named(&self.data()?, name))
    }

    pub fn append_header(&self, name: &str, value: &str, encode: bool) -> Result<(), MessageError> {
        self.edit_data(|d| headers::append(d, name, value, encode))
    }

    pub fn prepend_header(
        &self,
        name: &str,
        value: &str,
        encode: bool,
    ) -> Result<(), MessageError> {
        self.edit_data(|d| headers::prepend(d, name, value, encode))
    }

    pub fn remove_all_named_headers(&self, name: &str) -> Result<(), MessageError> {
        self.edit_data(|d| Ok(headers::remove_all_named(d, name)))
    }
}

impl std::fmt::Debug for Message {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let g = self.inner.lock();
        f.debug_struct("Message")
            .field("id", &self.id)
            .field("sender", &g.sender)
            .field("recipients", &g.recipients)
            .finish_non_exhaustive()
    }
}

#[cfg(test)]
#[path = "message_tests.rs"]
pub(crate) mod tests;
