use std::sync::Arc;
use std::time::SystemTime;

use bytes::Bytes;
use parking_lot::Mutex;
use serde_json::value::RawValue;
use serde_json::{Map, Value};

use crate::headers::{self, HeaderError};
use crate::queue_name::{QueueNameComponents, QueueNameError};
use crate::{EnvelopeAddress, SpoolId};

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
    meta_dirty: bool,
    data_dirty: bool,
    /// Some version of the message is in the spool (read from it, or stored).
    persisted: bool,
    /// A meta value still in JSON text form. Log-hook messages carry their
    /// whole record as meta `log_record`; most are never read, so the text
    /// (usually the message data itself) is parsed only when a reader asks.
    lazy: Option<LazyMeta>,
}

struct LazyMeta {
    key: &'static str,
    json: Bytes,
}

impl Inner {
    /// Parse the lazy value into `meta`, for readers of the whole map.
    fn materialize(&mut self) {
        let Some(lazy) = self.lazy.take() else {
            return;
        };
        // Only Hermod sets lazy values, from JSON it serialised itself.
        let value = serde_json::from_slice(&lazy.json).unwrap_or(Value::Null);
        self.meta.insert(lazy.key.to_string(), value);
    }

    fn materialize_key(&mut self, key: &str) {
        if self.lazy.as_ref().is_some_and(|l| l.key == key) {
            self.materialize();
        }
    }
}

/// A message. Cheap to clone: clones share one state, which is what lets a
/// Lua handler edit the message that Rust later spools.
#[derive(Clone)]
pub struct Message {
    id: SpoolId,
    inner: Arc<Mutex<Inner>>,
}

/// What is stored in the meta spool, matching KumoMTA's on-disk meta JSON.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
pub struct SpoolRecord {
    pub sender: EnvelopeAddress,
    #[serde(with = "one_or_many")]
    pub recipient: Vec<EnvelopeAddress>,
    #[serde(default)]
    pub meta: Map<String, Value>,
    #[serde(default)]
    pub schedule: Option<Value>,
}

/// [`SpoolRecord`]'s serialised form, borrowing from the message.
#[derive(serde::Serialize)]
struct SpoolRecordRef<'a> {
    sender: &'a EnvelopeAddress,
    recipient: OneOrManyRef<'a>,
    meta: MetaRef<'a>,
    schedule: Option<Value>,
}

/// The meta map plus a lazy value written as its JSON text.
struct MetaRef<'a> {
    meta: &'a Map<String, Value>,
    lazy: Option<(&'static str, &'a RawValue)>,
}

impl serde::Serialize for MetaRef<'_> {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        use serde::ser::SerializeMap;
        let mut map = s.serialize_map(Some(self.meta.len() + usize::from(self.lazy.is_some())))?;
        for (k, v) in self.meta {
            map.serialize_entry(k, v)?;
        }
        if let Some((k, v)) = self.lazy {
            map.serialize_entry(k, v)?;
        }
        map.end()
    }
}

struct OneOrManyRef<'a>(&'a [EnvelopeAddress]);

impl serde::Serialize for OneOrManyRef<'_> {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        one_or_many::serialize(self.0, s)
    }
}

impl Inner {
    /// Hermod's persisted attempt count and due time; `None` before the first retry.
    fn schedule(&self) -> Option<Value> {
        if self.num_attempts == 0 && self.due.is_none() {
            return None;
        }
        let due = self
            .due
            .and_then(|d| d.duration_since(std::time::UNIX_EPOCH).ok())
            .map(|d| d.as_secs());
        Some(serde_json::json!({ "attempts": self.num_attempts, "due": due }))
    }
}

mod one_or_many {
    use super::EnvelopeAddress;
    use serde::{Deserialize, Deserializer, Serialize, Serializer};

    pub fn serialize<S: Serializer>(v: &[EnvelopeAddress], s: S) -> Result<S::Ok, S::Error> {
        match v {
            [one] => one.serialize(s),
            many => many.serialize(s),
        }
    }

    #[derive(Deserialize)]
    #[serde(untagged)]
    enum OneOrMany {
        One(EnvelopeAddress),
        Many(Vec<EnvelopeAddress>),
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<EnvelopeAddress>, D::Error> {
        Ok(match OneOrMany::deserialize(d)? {
            OneOrMany::One(a) => vec![a],
            OneOrMany::Many(v) => v,
        })
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
                meta_dirty: true,
                data_dirty: true,
                persisted: false,
                lazy: None,
            })),
        }
    }

    /// Rebuild a message from its spool record; `data` may be left unloaded.
    pub fn from_spool(id: SpoolId, record: SpoolRecord, data: Option<Bytes>) -> Self {
        // Hermod persists the attempt count and due time (KumoMTA does not),
        // so a message waiting for a retry keeps its schedule across restarts.
        let sched = record.schedule.as_ref();
        let num_attempts = sched
            .and_then(|s| s.get("attempts"))
            .and_then(|v| v.as_u64())
            .unwrap_or(0) as u32;
        let due = sched
            .and_then(|s| s.get("due"))
            .and_then(|v| v.as_u64())
            .map(|secs| std::time::UNIX_EPOCH + std::time::Duration::from_secs(secs));
        Self {
            id,
            inner: Arc::new(Mutex::new(Inner {
                sender: record.sender,
                recipients: record.recipient,
                meta: record.meta,
                data,
                num_attempts,
                due,
                meta_dirty: false,
                data_dirty: false,
                persisted: true,
                lazy: None,
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
        let key = key.into();
        if g.lazy.as_ref().is_some_and(|l| l.key == key) {
            g.lazy = None;
        }
        g.meta.insert(key, value);
        g.meta_dirty = true;
    }

    /// Set meta `key` to the JSON value `json` without parsing it: it is
    /// parsed on first read and written to the spool as it is. The caller
    /// guarantees `json` is one valid JSON value.
    pub fn set_meta_json_lazy(&self, key: &'static str, json: Bytes) {
        let mut g = self.inner.lock();
        if g.lazy.as_ref().is_some_and(|l| l.key != key) {
            g.materialize();
        }
        g.meta.shift_remove(key);
        g.lazy = Some(LazyMeta { key, json });
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

    /// Drop the in-memory bytes while the message waits; they remain in the spool.
    pub fn unload_data(&self) {
        let mut g = self.inner.lock();
        if !g.data_dirty {
            g.data = None;
        }
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

    pub fn is_meta_dirty(&self) -> bool {
        self.inner.lock().meta_dirty
    }

    pub fn is_data_dirty(&self) -> bool {
        self.inner.lock().data_dirty
    }

    /// Called by the spool once the current state is durably stored.
    pub fn mark_clean(&self) {
        let mut g = self.inner.lock();
        g.meta_dirty = false;
        g.data_dirty = false;
        g.persisted = true;
    }

    /// False for a message that was never stored (a log-hook message with
    /// `deferred_spool`): it has no spool entry to remove.
    pub fn is_persisted(&self) -> bool {
        self.inner.lock().persisted
    }

    pub fn queue_name(&self) -> Result<String, MessageError> {
        let g = self.inner.lock();
        let domain = g.recipients.first().map(|r| r.domain().to_string());
        Ok(QueueNameComponents::compute(&g.meta, domain.as_deref())?)
    }

    /// The spool record as a value; the spool itself uses `spool_record_json`.
    #[cfg(test)]
    fn spool_record(&self) -> SpoolRecord {
        let mut g = self.inner.lock();
        g.materialize();
        SpoolRecord {
            sender: g.sender.clone(),
            recipient: g.recipients.clone(),
            meta: g.meta.clone(),
            schedule: g.schedule(),
        }
    }

    /// Record that the schedule changed so the next spool store writes meta.
    pub fn mark_meta_dirty(&self) {
        self.inner.lock().meta_dirty = true;
    }

    /// The spool record as JSON, serialised from the message in place: a
    /// log-hook message's meta holds the whole record, and copying that tree
    /// only to serialise it cost as much as the serialisation itself.
    pub fn spool_record_json(&self) -> Vec<u8> {
        let mut g = self.inner.lock();
        let text = g.lazy.as_ref().map(|l| (l.key, l.json.clone()));
        // Checked, not parsed into a tree (far cheaper); a value that fails
        // the check is materialised (as null) rather than spooled as is.
        let lazy = text
            .as_ref()
            .and_then(|(key, json)| Some((*key, serde_json::from_slice::<&RawValue>(json).ok()?)));
        if lazy.is_none() {
            g.materialize();
        }
        let record = SpoolRecordRef {
            sender: &g.sender,
            recipient: OneOrManyRef(&g.recipients),
            meta: MetaRef {
                meta: &g.meta,
                lazy,
            },
            schedule: g.schedule(),
        };
        // Serialising plain strings and a JSON map cannot fail.
        serde_json::to_vec(&record).unwrap_or_default()
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
mod tests {
    use super::*;
    use serde_json::json;

    fn msg() -> Message {
        Message::new(
            SpoolId::new(),
            EnvelopeAddress::parse("a@example.com").unwrap(),
            vec![EnvelopeAddress::parse("b@Nats").unwrap()],
            Map::new(),
            &b"Subject: x\r\n\r\nbody"[..],
        )
    }

    #[test]
    fn clones_share_state() {
        let m = msg();
        let m2 = m.clone();
        m2.set_meta("queue", json!("q"));
        assert_eq!(m.get_meta("queue"), Some(json!("q")));
        assert_eq!(m.queue_name().unwrap(), "q");
    }

    #[test]
    fn spool_record_round_trips_and_uses_a_string_for_one_recipient() {
        let m = msg();
        m.set_meta("x_a", json!([1, 2]));
        let bytes = m.spool_record_json();
        let v: Value = serde_json::from_slice(&bytes).unwrap();
        assert_eq!(v["recipient"], json!("b@Nats"));
        let rec = Message::parse_spool_record(&bytes).unwrap();
        let back = Message::from_spool(m.id(), rec, None);
        assert_eq!(back.queue_name().unwrap(), "nats");
        assert_eq!(back.get_meta("x_a"), Some(json!([1, 2])));
        assert!(matches!(back.data(), Err(MessageError::DataNotLoaded)));
    }

    #[test]
    fn retry_schedule_survives_a_spool_round_trip() {
        let m = msg();
        m.set_num_attempts(3);
        let due = std::time::UNIX_EPOCH + std::time::Duration::from_secs(2_000_000_000);
        m.set_due(Some(due));
        let rec = Message::parse_spool_record(&m.spool_record_json()).unwrap();
        let back = Message::from_spool(m.id(), rec, None);
        assert_eq!(back.num_attempts(), 3);
        assert_eq!(back.due(), Some(due));
    }

    #[test]
    fn spool_json_written_in_place_equals_the_spool_record_serialised() {
        let m = msg();
        m.set_recipients(vec![
            EnvelopeAddress::parse("c@x.example").unwrap(),
            EnvelopeAddress::parse("d@y.example").unwrap(),
        ]);
        m.set_meta(
            "log_record",
            json!({"type": "Delivery", "recipient": ["c", "d"]}),
        );
        m.set_num_attempts(2);
        assert_eq!(
            m.spool_record_json(),
            serde_json::to_vec(&m.spool_record()).unwrap()
        );
        let v: Value = serde_json::from_slice(&m.spool_record_json()).unwrap();
        assert_eq!(v["recipient"], json!(["c@x.example", "d@y.example"]));
        assert_eq!(v["schedule"]["attempts"], 2);
    }

    #[test]
    fn lazy_json_meta_reads_back_parsed_and_is_spooled_as_an_object() {
        let m = msg();
        m.set_meta("x", json!(1));
        m.set_meta_json_lazy(
            "log_record",
            Bytes::from_static(br#"{"type":"Delivery","n":[1,2]}"#),
        );
        let spooled: Value = serde_json::from_slice(&m.spool_record_json()).unwrap();
        assert_eq!(
            spooled["meta"]["log_record"],
            json!({"type": "Delivery", "n": [1, 2]})
        );
        assert_eq!(spooled["meta"]["x"], json!(1));
        assert_eq!(m.meta().len(), 2, "the whole map includes the lazy value");
        assert_eq!(m.get_meta("log_record").unwrap()["n"], json!([1, 2]));
        assert_eq!(
            m.spool_record_json(),
            serde_json::to_vec(&m.spool_record()).unwrap(),
            "spooled the same before and after it was parsed"
        );
    }

    #[test]
    fn set_meta_replaces_a_lazy_value_and_a_bad_one_is_spooled_as_null() {
        let m = msg();
        m.set_meta_json_lazy("log_record", Bytes::from_static(b"{\"a\":1}"));
        m.set_meta("log_record", json!("replaced"));
        assert_eq!(m.get_meta("log_record"), Some(json!("replaced")));
        let bad = msg();
        bad.set_meta_json_lazy("log_record", Bytes::from_static(b"{not json"));
        let spooled: Value = serde_json::from_slice(&bad.spool_record_json()).unwrap();
        assert_eq!(spooled["meta"]["log_record"], Value::Null);
    }

    #[test]
    fn corrupt_spool_records_are_reported() {
        assert!(matches!(
            Message::parse_spool_record(b"{nope"),
            Err(MessageError::Corrupt(_))
        ));
    }

    #[test]
    fn unload_keeps_dirty_data() {
        let m = msg();
        m.unload_data();
        assert!(
            m.is_data_loaded(),
            "dirty data must not be dropped before it is spooled"
        );
        m.mark_clean();
        m.unload_data();
        assert!(!m.is_data_loaded());
    }
}
