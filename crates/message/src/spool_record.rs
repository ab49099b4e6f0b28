//! The meta spool's record: KumoMTA's on-disk meta JSON, plus what Hermod
//! adds (the retry schedule, and data kept inside the record itself).

use bytes::{BufMut, Bytes, BytesMut};
use serde_json::value::RawValue;
use serde_json::{Map, Value};

use crate::json_line::write_json_str;
use crate::scheduling::StoredSchedule;
use crate::EnvelopeAddress;

/// Why a spool record could not be read.
#[derive(Debug, thiserror::Error)]
pub enum SpoolRecordError {
    #[error("data_is_log_record is set but meta log_record is unreadable: {0}")]
    UnreadableLogRecord(#[source] serde_json::Error),
}

/// The meta key whose text a log-hook message's data repeats.
pub const LOG_RECORD_KEY: &str = "log_record";

/// What is stored in the meta spool, matching KumoMTA's on-disk meta JSON.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
pub struct SpoolRecord {
    pub sender: EnvelopeAddress,
    #[serde(with = "one_or_many")]
    pub recipient: Vec<EnvelopeAddress>,
    #[serde(default)]
    pub meta: Map<String, Value>,
    /// Attempts, due time and `msg:set_scheduling`'s fields
    /// (crates/message/src/scheduling.rs).
    #[serde(default)]
    pub schedule: Option<StoredSchedule>,
    /// The message data is meta `log_record`'s JSON text plus a newline, so
    /// it is not stored a second time in the data spool. Log-hook messages
    /// are all like this, and writing each record twice was a measured
    /// share of what a hook costs (the fast path is driven from
    /// crates/queue/src/hooks/mod.rs).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub data_is_log_record: bool,
}

impl SpoolRecord {
    /// The data of a record with `data_is_log_record`, cut from the record's
    /// own text (`meta_json`): byte for byte what was spooled, which
    /// re-serialising the parsed value would not guarantee.
    pub fn embedded_data(meta_json: &[u8]) -> Result<Bytes, SpoolRecordError> {
        #[derive(serde::Deserialize)]
        struct Outer<'a> {
            #[serde(borrow)]
            meta: Inner<'a>,
        }
        #[derive(serde::Deserialize)]
        struct Inner<'a> {
            #[serde(borrow)]
            log_record: &'a RawValue,
        }
        let outer: Outer =
            serde_json::from_slice(meta_json).map_err(SpoolRecordError::UnreadableLogRecord)?;
        let text = outer.meta.log_record.get().as_bytes();
        let mut data = BytesMut::with_capacity(text.len() + 1);
        data.put_slice(text);
        data.put_u8(b'\n');
        Ok(data.freeze())
    }
}

/// What [`write_record`] writes, borrowed from the message.
pub(crate) struct RecordParts<'a> {
    pub sender: &'a EnvelopeAddress,
    pub recipients: &'a [EnvelopeAddress],
    pub meta: &'a Map<String, Value>,
    /// A meta value kept as JSON text, written as it is: the caller knows
    /// it is one valid JSON value.
    pub lazy: Option<(&'a str, &'a [u8])>,
    pub schedule: Option<StoredSchedule>,
    pub data_is_log_record: bool,
}

/// Append the record as JSON in [`SpoolRecord`]'s shape and field order.
/// Written field by field because serde_json copies a value's text
/// verbatim only after parsing it again.
pub(crate) fn write_record(out: &mut Vec<u8>, r: &RecordParts) -> serde_json::Result<()> {
    out.extend_from_slice(b"{\"sender\":");
    write_json_str(out, r.sender.email())?;
    out.extend_from_slice(b",\"recipient\":");
    match r.recipients {
        [one] => write_json_str(out, one.email())?,
        many => {
            out.push(b'[');
            for (i, a) in many.iter().enumerate() {
                if i > 0 {
                    out.push(b',');
                }
                write_json_str(out, a.email())?;
            }
            out.push(b']');
        }
    }
    out.extend_from_slice(b",\"meta\":{");
    let mut first = true;
    for (k, v) in r.meta {
        if !first {
            out.push(b',');
        }
        first = false;
        write_json_str(out, k)?;
        out.push(b':');
        match v {
            Value::String(s) => write_json_str(out, s)?,
            other => serde_json::to_writer(&mut *out, other)?,
        }
    }
    if let Some((k, text)) = r.lazy {
        if !first {
            out.push(b',');
        }
        write_json_str(out, k)?;
        out.push(b':');
        out.extend_from_slice(text);
    }
    out.extend_from_slice(b"},\"schedule\":");
    serde_json::to_writer(&mut *out, &r.schedule)?;
    if r.data_is_log_record {
        out.extend_from_slice(b",\"data_is_log_record\":true");
    }
    out.push(b'}');
    Ok(())
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::message::tests::msg;
    use crate::{Message, MessageError, SpoolId};
    use serde_json::json;

    /// A message built the way log hooks build theirs: the data is the
    /// record's JSON line, and meta `log_record` the same bytes without the
    /// newline.
    fn hook_message() -> Message {
        let line = Bytes::from_static(b"{\"type\":\"Delivery\",\"id\":\"abc\",\"n\":1.50}\n");
        let m = Message::new(
            SpoolId::new(),
            EnvelopeAddress::parse("a@example.com").unwrap(),
            vec![EnvelopeAddress::parse("log@events.log_hook").unwrap()],
            Map::new(),
            line.clone(),
        );
        m.set_meta_json_lazy(LOG_RECORD_KEY, line.slice(..line.len() - 1));
        m
    }

    /// What a restart would make of the stored meta record.
    fn restored(m: &Message, meta: &[u8]) -> Message {
        let rec = Message::parse_spool_record(meta).unwrap();
        let data = rec
            .data_is_log_record
            .then(|| SpoolRecord::embedded_data(meta).unwrap());
        Message::from_spool(m.id(), rec, data)
    }

    #[test]
    fn a_log_hook_message_is_stored_once_as_meta_and_restored_byte_for_byte() {
        let m = hook_message();
        let w = m.spool_write().unwrap().expect("a new message is written");
        assert!(w.data.is_none(), "the data spool gets no copy");
        assert!(w.data_in_meta);
        let meta = w.meta.expect("meta is written");
        m.mark_stored(true);
        assert!(m.spool_write().unwrap().is_none(), "clean after storing");
        assert!(
            !m.is_data_spooled(),
            "removal need not touch the data spool"
        );

        let back = restored(&m, &meta);
        assert!(!back.is_data_spooled());
        // `1.50` would come back as `1.5` from a parsed value: the bytes are cut, not re-serialised.
        assert_eq!(back.data().unwrap(), m.data().unwrap());
        assert_eq!(back.get_meta(LOG_RECORD_KEY).unwrap()["id"], json!("abc"));
        back.unload_data();
        assert!(
            back.is_data_loaded(),
            "bytes the data spool does not hold are never dropped"
        );
    }

    #[test]
    fn a_restored_message_whose_data_or_record_changes_moves_its_data_to_the_data_spool() {
        let m = hook_message();
        let meta = m.spool_write().unwrap().unwrap().meta.unwrap();

        let edited = restored(&m, &meta);
        edited.set_meta(LOG_RECORD_KEY, json!("replaced"));
        let w = edited.spool_write().unwrap().unwrap();
        assert_eq!(
            w.data,
            Some(m.data().unwrap()),
            "the data must now be stored"
        );
        assert!(!w.data_in_meta);
        edited.mark_stored(w.data_in_meta);
        assert!(edited.is_data_spooled(), "its removal must delete the data");
        let rec = Message::parse_spool_record(&w.meta.unwrap()).unwrap();
        assert!(!rec.data_is_log_record);
        assert_eq!(rec.meta[LOG_RECORD_KEY], json!("replaced"));

        let rewritten = restored(&m, &meta);
        rewritten.set_data(&b"other\n"[..]);
        let w = rewritten.spool_write().unwrap().unwrap();
        assert_eq!(w.data.as_deref(), Some(&b"other\n"[..]));
        assert!(!w.data_in_meta);
        assert!(w.meta.is_some(), "the flag must be cleared");
    }

    #[test]
    fn a_record_read_before_storing_is_stored_with_its_data_as_usual() {
        let m = hook_message();
        assert_eq!(
            m.get_meta(LOG_RECORD_KEY).unwrap()["type"],
            json!("Delivery")
        );
        let w = m.spool_write().unwrap().unwrap();
        assert_eq!(w.data, Some(m.data().unwrap()));
        assert!(!w.data_in_meta);
    }

    #[test]
    fn a_flagged_record_without_a_readable_log_record_is_an_error() {
        let meta = br#"{"sender":"a@x","recipient":"b@y","meta":{},"data_is_log_record":true}"#;
        assert!(
            Message::parse_spool_record(meta)
                .unwrap()
                .data_is_log_record
        );
        assert!(SpoolRecord::embedded_data(meta).is_err());
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
        m.set_meta("plain", json!("text"));
        m.set_meta("needs \"escaping\"", json!("tab\tquote\"back\\slash\u{1}"));
        m.set_meta("number", json!(1.5));
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
}
