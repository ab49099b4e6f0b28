//! AMQP basic properties as policies write them, shared by
//! `client:publish{properties=...}` and `kumo.amqp.basic_publish{...}`.

use std::collections::BTreeMap;
use std::fmt;

use lapin::types::{AMQPValue, FieldTable, LongString, ShortString};
use lapin::BasicProperties;
use serde::de::{self, Deserializer, Visitor};
use serde::Deserialize;

use super::AmqpError;

/// One AMQP header value: strings, integers, floats and booleans.
#[derive(Clone, Debug, PartialEq)]
pub enum HeaderValue {
    Str(Vec<u8>),
    Int(i64),
    Float(f64),
    Bool(bool),
}

impl<'de> Deserialize<'de> for HeaderValue {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl Visitor<'_> for V {
            type Value = HeaderValue;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a string, number or boolean header value")
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<HeaderValue, E> {
                Ok(HeaderValue::Str(v.as_bytes().to_vec()))
            }
            fn visit_bytes<E: de::Error>(self, v: &[u8]) -> Result<HeaderValue, E> {
                Ok(HeaderValue::Str(v.to_vec()))
            }
            fn visit_i64<E: de::Error>(self, v: i64) -> Result<HeaderValue, E> {
                Ok(HeaderValue::Int(v))
            }
            fn visit_u64<E: de::Error>(self, v: u64) -> Result<HeaderValue, E> {
                i64::try_from(v).map(HeaderValue::Int).map_err(E::custom)
            }
            fn visit_f64<E: de::Error>(self, v: f64) -> Result<HeaderValue, E> {
                Ok(HeaderValue::Float(v))
            }
            fn visit_bool<E: de::Error>(self, v: bool) -> Result<HeaderValue, E> {
                Ok(HeaderValue::Bool(v))
            }
        }
        d.deserialize_any(V)
    }
}

/// AMQP basic properties. Field names follow lapin's serde form (`kind` is
/// the AMQP `type` property); `message_type` and `type` are accepted too.
#[derive(Clone, Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Properties {
    #[serde(default)]
    pub app_id: Option<String>,
    #[serde(default)]
    pub cluster_id: Option<String>,
    #[serde(default)]
    pub content_encoding: Option<String>,
    #[serde(default)]
    pub content_type: Option<String>,
    #[serde(default)]
    pub correlation_id: Option<String>,
    #[serde(default)]
    pub delivery_mode: Option<u8>,
    #[serde(default)]
    pub expiration: Option<String>,
    #[serde(default)]
    pub headers: Option<BTreeMap<String, HeaderValue>>,
    #[serde(default)]
    pub message_id: Option<String>,
    #[serde(default, alias = "message_type", alias = "type")]
    pub kind: Option<String>,
    #[serde(default)]
    pub priority: Option<u8>,
    #[serde(default)]
    pub reply_to: Option<String>,
    #[serde(default)]
    pub timestamp: Option<u64>,
    #[serde(default)]
    pub user_id: Option<String>,
}

fn short(property: &'static str, value: &str) -> Result<ShortString, AmqpError> {
    ShortString::try_new(value).map_err(|error| AmqpError::PropertyTooLong { property, error })
}

impl Properties {
    /// Convert to lapin's form. Every short string is length-checked here,
    /// because lapin panics on over-long ones.
    pub fn to_basic(&self) -> Result<BasicProperties, AmqpError> {
        let mut p = BasicProperties::default();
        let strings: [(&str, &Option<String>); 10] = [
            ("app_id", &self.app_id),
            ("cluster_id", &self.cluster_id),
            ("content_encoding", &self.content_encoding),
            ("content_type", &self.content_type),
            ("correlation_id", &self.correlation_id),
            ("expiration", &self.expiration),
            ("message_id", &self.message_id),
            ("type", &self.kind),
            ("reply_to", &self.reply_to),
            ("user_id", &self.user_id),
        ];
        for (name, value) in strings {
            let Some(value) = value else { continue };
            let v = short(name, value)?;
            p = match name {
                "app_id" => p.with_app_id(v),
                "cluster_id" => p.with_cluster_id(v),
                "content_encoding" => p.with_content_encoding(v),
                "content_type" => p.with_content_type(v),
                "correlation_id" => p.with_correlation_id(v),
                "expiration" => p.with_expiration(v),
                "message_id" => p.with_message_id(v),
                "type" => p.with_type(v),
                "reply_to" => p.with_reply_to(v),
                _ => p.with_user_id(v),
            };
        }
        if let Some(mode) = self.delivery_mode {
            if !(1..=2).contains(&mode) {
                return Err(AmqpError::DeliveryMode(mode));
            }
            p = p.with_delivery_mode(mode);
        }
        if let Some(prio) = self.priority {
            p = p.with_priority(prio);
        }
        if let Some(ts) = self.timestamp {
            p = p.with_timestamp(ts);
        }
        if let Some(headers) = &self.headers {
            let mut table = FieldTable::default();
            for (k, v) in headers {
                let value = match v {
                    HeaderValue::Str(s) => AMQPValue::LongString(LongString::from(s.clone())),
                    HeaderValue::Int(i) => AMQPValue::LongLongInt(*i),
                    HeaderValue::Float(f) => AMQPValue::Double(*f),
                    HeaderValue::Bool(b) => AMQPValue::Boolean(*b),
                };
                table.insert(short("headers", k)?, value);
            }
            p = p.with_headers(table);
        }
        Ok(p)
    }

    /// Default the AMQP `message_id` to the Hermod message id, so consumers
    /// can de-duplicate redeliveries, unless the policy chose one.
    pub fn default_message_id(&mut self, lua: &mlua::Lua, payload: &[u8]) {
        if self.message_id.is_none() {
            self.message_id = hermod_policy::scope::message_id_for(lua, payload);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_bad_delivery_mode_and_over_long_properties_are_named() {
        let p = Properties {
            delivery_mode: Some(3),
            ..Default::default()
        };
        assert_eq!(
            p.to_basic().unwrap_err().to_string(),
            "delivery_mode must be 1 (transient) or 2 (persistent), got 3"
        );
        let p = Properties {
            app_id: Some("a".repeat(256)),
            ..Default::default()
        };
        assert_eq!(
            p.to_basic().unwrap_err().to_string(),
            "property `app_id`: ShortString exceeds maximum length of 255 bytes (got 256)"
        );
    }
}
