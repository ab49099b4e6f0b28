//! The log record: one serde struct shared by every producer (local logs,
//! log hooks) and by `logs tail`, so the JSON shape is defined exactly once.

use std::fmt;
use std::str::FromStr;

use chrono::{DateTime, SecondsFormat, Utc};
use serde::{Deserialize, Deserializer, Serialize, Serializer};
use serde_json::{Map, Value};

/// What happened to the message. `Any` is only a `per_record` config key.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub enum RecordType {
    Reception,
    Delivery,
    TransientFailure,
    Bounce,
    Expiration,
    AdminBounce,
    Rejection,
    Delayed,
    #[serde(rename = "OOB")]
    Oob,
    Feedback,
    AdminRebind,
    DeferredInjectionRebind,
    XferOut,
    XferIn,
    Any,
}

impl RecordType {
    pub const ALL: [RecordType; 15] = [
        RecordType::Reception,
        RecordType::Delivery,
        RecordType::TransientFailure,
        RecordType::Bounce,
        RecordType::Expiration,
        RecordType::AdminBounce,
        RecordType::Rejection,
        RecordType::Delayed,
        RecordType::Oob,
        RecordType::Feedback,
        RecordType::AdminRebind,
        RecordType::DeferredInjectionRebind,
        RecordType::XferOut,
        RecordType::XferIn,
        RecordType::Any,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            RecordType::Reception => "Reception",
            RecordType::Delivery => "Delivery",
            RecordType::TransientFailure => "TransientFailure",
            RecordType::Bounce => "Bounce",
            RecordType::Expiration => "Expiration",
            RecordType::AdminBounce => "AdminBounce",
            RecordType::Rejection => "Rejection",
            RecordType::Delayed => "Delayed",
            RecordType::Oob => "OOB",
            RecordType::Feedback => "Feedback",
            RecordType::AdminRebind => "AdminRebind",
            RecordType::DeferredInjectionRebind => "DeferredInjectionRebind",
            RecordType::XferOut => "XferOut",
            RecordType::XferIn => "XferIn",
            RecordType::Any => "Any",
        }
    }
}

impl fmt::Display for RecordType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown record type {0:?}")]
pub struct UnknownRecordType(pub String);

impl FromStr for RecordType {
    type Err = UnknownRecordType;
    /// Case-insensitive, so `--type bounce` works on the command line.
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        RecordType::ALL
            .into_iter()
            .find(|t| t.as_str().eq_ignore_ascii_case(s))
            .ok_or_else(|| UnknownRecordType(s.to_string()))
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct EnhancedCode {
    pub class: u8,
    pub subject: u16,
    pub detail: u16,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Response {
    pub code: u16,
    pub enhanced_code: Option<EnhancedCode>,
    /// Normalised on output too, so a producer that fills the field directly
    /// still cannot break the one-record-per-line file format.
    #[serde(serialize_with = "serialize_content")]
    pub content: String,
    pub command: Option<String>,
}

impl Response {
    pub fn new(code: u16, enhanced_code: Option<EnhancedCode>, content: &str) -> Self {
        Self {
            code,
            enhanced_code,
            content: normalize_content(content),
            command: None,
        }
    }
}

/// Every CR, LF or CRLF becomes a single space.
pub fn normalize_content(s: &str) -> String {
    if !s.contains(['\r', '\n']) {
        return s.to_string();
    }
    let mut out = String::with_capacity(s.len());
    let mut chars = s.chars().peekable();
    while let Some(c) = chars.next() {
        match c {
            '\r' => {
                if chars.peek() == Some(&'\n') {
                    chars.next();
                }
                out.push(' ');
            }
            '\n' => out.push(' '),
            c => out.push(c),
        }
    }
    out
}

fn serialize_content<S: Serializer>(v: &str, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_str(&normalize_content(v))
}

fn is_false(b: &bool) -> bool {
    !*b
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PeerAddress {
    pub name: String,
    pub addr: String,
    #[serde(default, skip_serializing_if = "is_false")]
    pub is_secure: bool,
}

/// One log record; field order is the emitted key order (KumoMTA's record layout).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LogRecord {
    #[serde(rename = "type")]
    pub kind: RecordType,
    pub id: String,
    pub sender: String,
    #[serde(with = "one_or_many")]
    pub recipient: Vec<String>,
    pub queue: String,
    pub site: String,
    pub size: u64,
    pub response: Response,
    pub peer_address: Option<PeerAddress>,
    pub timestamp: i64,
    #[serde(with = "rfc3339")]
    pub event_time: DateTime<Utc>,
    pub created: i64,
    #[serde(with = "rfc3339")]
    pub created_time: DateTime<Utc>,
    pub num_attempts: u32,
    pub bounce_classification: String,
    pub egress_pool: Option<String>,
    pub egress_source: Option<String>,
    #[serde(default)]
    pub source_address: Option<Value>,
    #[serde(default)]
    pub feedback_report: Option<Value>,
    #[serde(default)]
    pub meta: Map<String, Value>,
    #[serde(default)]
    pub headers: Map<String, Value>,
    pub delivery_protocol: Option<String>,
    pub reception_protocol: Option<String>,
    pub nodeid: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tls_cipher: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tls_protocol_version: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tls_peer_subject_name: Option<Vec<String>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub provider_name: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub session_id: Option<String>,
}

mod one_or_many {
    use super::*;

    pub fn serialize<S: Serializer>(v: &[String], s: S) -> Result<S::Ok, S::Error> {
        match v {
            [one] => s.serialize_str(one),
            many => many.serialize(s),
        }
    }

    #[derive(Deserialize)]
    #[serde(untagged)]
    enum OneOrMany {
        One(String),
        Many(Vec<String>),
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<String>, D::Error> {
        Ok(match OneOrMany::deserialize(d)? {
            OneOrMany::One(a) => vec![a],
            OneOrMany::Many(v) => v,
        })
    }
}

mod rfc3339 {
    use super::*;

    pub fn serialize<S: Serializer>(v: &DateTime<Utc>, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&v.to_rfc3339_opts(SecondsFormat::Nanos, true))
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<DateTime<Utc>, D::Error> {
        let s = String::deserialize(d)?;
        DateTime::parse_from_rfc3339(&s)
            .map(|t| t.with_timezone(&Utc))
            .map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use serde_json::json;

    pub(crate) fn sample() -> LogRecord {
        let t = DateTime::parse_from_rfc3339("2026-01-01T00:00:00.123456789Z")
            .unwrap()
            .with_timezone(&Utc);
        LogRecord {
            kind: RecordType::Delivery,
            id: "6f0c1e2a8b4b11f0a1b2001122334455".into(),
            sender: "app@example.com".into(),
            recipient: vec!["ops@nats".into()],
            queue: "nats".into(),
            site: "unspecified->nats@lua:make.nats".into(),
            size: 412,
            response: Response::new(200, None, "250 ok"),
            peer_address: Some(PeerAddress {
                name: "Lua via make.nats".into(),
                addr: "0.0.0.0".into(),
                is_secure: false,
            }),
            timestamp: t.timestamp(),
            event_time: t,
            created: t.timestamp(),
            created_time: t,
            num_attempts: 0,
            bounce_classification: "Uncategorized".into(),
            egress_pool: Some("unspecified".into()),
            egress_source: Some("unspecified".into()),
            source_address: None,
            feedback_report: None,
            meta: Map::new(),
            headers: Map::new(),
            delivery_protocol: Some("Lua".into()),
            reception_protocol: Some("ESMTP".into()),
            nodeid: "557f3ad4-2c8c-11ee-976e-782d7e12e173".into(),
            tls_cipher: None,
            tls_protocol_version: None,
            tls_peer_subject_name: None,
            provider_name: None,
            session_id: None,
        }
    }

    fn keys(r: &LogRecord) -> Vec<String> {
        let v: Value = serde_json::from_slice(&serde_json::to_vec(r).unwrap()).unwrap();
        v.as_object().unwrap().keys().cloned().collect()
    }

    #[test]
    fn record_emits_every_spec_key_in_order_and_omits_absent_optional_fields() {
        let expected = [
            "type",
            "id",
            "sender",
            "recipient",
            "queue",
            "site",
            "size",
            "response",
            "peer_address",
            "timestamp",
            "event_time",
            "created",
            "created_time",
            "num_attempts",
            "bounce_classification",
            "egress_pool",
            "egress_source",
            "source_address",
            "feedback_report",
            "meta",
            "headers",
            "delivery_protocol",
            "reception_protocol",
            "nodeid",
        ];
        assert_eq!(keys(&sample()), expected);
    }

    #[test]
    fn tls_provider_and_session_fields_follow_nodeid_when_present() {
        let mut r = sample();
        r.tls_cipher = Some("TLS_AES_256_GCM_SHA384".into());
        r.tls_protocol_version = Some("TLSv1.3".into());
        r.tls_peer_subject_name = Some(vec!["CN=x".into()]);
        r.provider_name = Some("p".into());
        r.session_id = Some("9bcd689e-23d9-41b7-a015-63a1382f8b57".into());
        let k = keys(&r);
        let tail: Vec<&str> = k[k.len() - 6..].iter().map(|s| s.as_str()).collect();
        assert_eq!(
            tail,
            [
                "nodeid",
                "tls_cipher",
                "tls_protocol_version",
                "tls_peer_subject_name",
                "provider_name",
                "session_id"
            ]
        );
    }

    #[test]
    fn record_values_match_the_spec_examples() {
        let v = serde_json::to_value(sample()).unwrap();
        assert_eq!(v["type"], json!("Delivery"));
        assert_eq!(v["recipient"], json!("ops@nats"));
        assert_eq!(v["event_time"], json!("2026-01-01T00:00:00.123456789Z"));
        assert_eq!(v["timestamp"], json!(1767225600));
        assert_eq!(
            v["response"],
            json!({"code":200,"enhanced_code":null,"content":"250 ok","command":null})
        );
        assert_eq!(
            v["peer_address"],
            json!({"name":"Lua via make.nats","addr":"0.0.0.0"})
        );
    }

    #[test]
    fn several_recipients_are_an_array_and_secure_peers_say_so() {
        let mut r = sample();
        r.recipient = vec!["a@x".into(), "b@y".into()];
        r.peer_address.as_mut().unwrap().is_secure = true;
        let v = serde_json::to_value(&r).unwrap();
        assert_eq!(v["recipient"], json!(["a@x", "b@y"]));
        assert_eq!(v["peer_address"]["is_secure"], json!(true));
    }

    #[test]
    fn records_round_trip_through_json() {
        let mut r = sample();
        r.session_id = Some("s".into());
        r.response.enhanced_code = Some(EnhancedCode {
            class: 5,
            subject: 4,
            detail: 7,
        });
        let line = r.to_json_line().unwrap().line().to_vec();
        assert_eq!(line.last(), Some(&b'\n'));
        let back: LogRecord = serde_json::from_slice(&line).unwrap();
        assert_eq!(back, r);
    }

    #[test]
    fn response_content_replaces_each_line_break_with_one_space() {
        assert_eq!(
            Response::new(451, None, "a\r\nb\nc\rd\r\n\r\ne").content,
            "a b c d  e"
        );
        let raw = Response {
            code: 500,
            enhanced_code: None,
            content: "x\r\ny".into(),
            command: None,
        };
        assert_eq!(serde_json::to_value(&raw).unwrap()["content"], json!("x y"));
    }

    #[test]
    fn record_types_parse_case_insensitively_and_oob_keeps_its_spelling() {
        assert_eq!("bounce".parse::<RecordType>().unwrap(), RecordType::Bounce);
        assert_eq!(serde_json::to_value(RecordType::Oob).unwrap(), json!("OOB"));
        assert!("Nope".parse::<RecordType>().is_err());
    }
}
