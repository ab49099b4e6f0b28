//! The Kafka producer handle: `producer:send`, `send_batch` and `close`.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use hermod_policy::errors::CallSite;
use mlua::{Lua, LuaSerdeExt, Table, UserData, UserDataMethods, Value};
use parking_lot::RwLock;
use rdkafka::error::RDKafkaErrorCode;
use rdkafka::message::{Header, OwnedHeaders};
use rdkafka::producer::FutureRecord;
use serde::Deserialize;

use super::pool::SharedProducer;
use super::KafkaError;
use crate::common::{LuaBytes, CLIENT_CLOSED};

/// Header carrying the Hermod message id, for consumer-side de-duplication.
pub const MESSAGE_ID_HEADER: &str = "hermod-message-id";

const DEFAULT_TIMEOUT: Duration = Duration::from_secs(60);

enum State {
    Open(Arc<SharedProducer>),
    Validating,
    Closed,
}

/// A handle on a shared librdkafka producer. Clones share the closed flag;
/// closing drops the handle's reference, not the shared producer.
#[derive(Clone)]
pub struct KafkaProducer {
    state: Arc<RwLock<State>>,
    props: Arc<BTreeMap<String, String>>,
}

/// One record. Keys are not strictly checked, as in KumoMTA.
#[derive(Deserialize)]
struct Record {
    topic: String,
    #[serde(default)]
    payload: Option<LuaBytes>,
    #[serde(default)]
    key: Option<LuaBytes>,
    #[serde(default)]
    partition: Option<i32>,
    #[serde(default)]
    headers: BTreeMap<String, LuaBytes>,
    #[serde(default, deserialize_with = "hermod_policy::duration::deserialize_opt")]
    timeout: Option<Duration>,
}

impl KafkaProducer {
    pub(crate) fn open(producer: Arc<SharedProducer>, props: BTreeMap<String, String>) -> Self {
        Self {
            state: Arc::new(RwLock::new(State::Open(producer))),
            props: Arc::new(props),
        }
    }

    pub(crate) fn validating(props: BTreeMap<String, String>) -> Self {
        Self {
            state: Arc::new(RwLock::new(State::Validating)),
            props: Arc::new(props),
        }
    }

    fn producer(&self) -> Result<Arc<SharedProducer>, &'static str> {
        match &*self.state.read() {
            State::Open(p) => Ok(p.clone()),
            State::Validating => {
                Err("producer is not connected: the policy is being validated (hermod check)")
            }
            State::Closed => Err(CLIENT_CLOSED),
        }
    }

    /// True when both handles use the same underlying librdkafka producer.
    pub fn shares_producer_with(&self, other: &KafkaProducer) -> bool {
        match (&*self.state.read(), &*other.state.read()) {
            (State::Open(a), State::Open(b)) => Arc::ptr_eq(a, b),
            _ => false,
        }
    }
}

fn headers_for(lua: &Lua, record: &Record) -> OwnedHeaders {
    let mut headers = OwnedHeaders::new_with_capacity(record.headers.len() + 1);
    let mut has_id = false;
    for (k, v) in &record.headers {
        has_id |= k.eq_ignore_ascii_case(MESSAGE_ID_HEADER);
        headers = headers.insert(Header {
            key: k,
            value: Some(v.0.as_slice()),
        });
    }
    if !has_id {
        let payload = record
            .payload
            .as_ref()
            .map(|p| p.0.as_slice())
            .unwrap_or_default();
        if let Some(id) = hermod_policy::scope::message_id_for(lua, payload) {
            headers = headers.insert(Header {
                key: MESSAGE_ID_HEADER,
                value: Some(id.as_bytes()),
            });
        }
    }
    headers
}

/// Send one record and wait for its delivery report. A record that timed
/// out also carries the last broker error, which says why.
async fn send_one(
    lua: &Lua,
    shared: &SharedProducer,
    record: &Record,
) -> Result<(i32, i64), KafkaError> {
    let result = deliver(lua, shared, record).await;
    match &result {
        Ok(_) => shared.broker_errors.delivered(),
        Err(e) if timed_out(e) => {
            if let Some(broker) = shared.broker_errors.last() {
                return result.map_err(|e| KafkaError::TimedOutAfterBrokerError {
                    source: Box::new(e),
                    broker,
                });
            }
        }
        Err(_) => {}
    }
    result
}

fn timed_out(e: &KafkaError) -> bool {
    match e {
        KafkaError::NoDeliveryReport(_) => true,
        KafkaError::Delivery(e) => {
            e.rdkafka_error_code() == Some(RDKafkaErrorCode::MessageTimedOut)
        }
        _ => false,
    }
}

async fn deliver(
    lua: &Lua,
    shared: &SharedProducer,
    record: &Record,
) -> Result<(i32, i64), KafkaError> {
    let producer = &shared.producer;
    let headers = headers_for(lua, record);
    let timeout = record.timeout.unwrap_or(DEFAULT_TIMEOUT);
    let mut fr: FutureRecord<'_, [u8], [u8]> = FutureRecord::to(&record.topic).headers(headers);
    if let Some(p) = &record.payload {
        fr = fr.payload(p.0.as_slice());
    }
    if let Some(k) = &record.key {
        fr = fr.key(k.0.as_slice());
    }
    if let Some(part) = record.partition {
        fr = fr.partition(part);
    }
    // librdkafka retries enqueueing for `timeout`; the outer bound makes the
    // whole call fail after it too, even if delivery is still being retried.
    let started = std::time::Instant::now();
    let delivery = tokio::time::timeout(timeout, producer.send(fr, timeout))
        .await
        .map_err(|_| KafkaError::NoDeliveryReport(timeout))?
        .map_err(|(e, _msg)| KafkaError::Delivery(e))?;
    hermod_metrics::broker_publish_latency(hermod_metrics::BROKER_KAFKA)
        .observe_duration(started.elapsed());
    Ok((delivery.partition, delivery.offset))
}

fn records_from(lua: &Lua, site: &CallSite, value: Value) -> mlua::Result<Vec<Record>> {
    let Value::Table(t) = value else {
        return Err(site.error("kafka send_batch: expected an array of records"));
    };
    let mut out = Vec::new();
    for (i, v) in t.sequence_values::<Value>().enumerate() {
        let rec: Record = hermod_policy::config::from_lua_strict_at(
            lua,
            site,
            v?,
            &format!("kafka send_batch record {}", i + 1),
        )?;
        out.push(rec);
    }
    Ok(out)
}

impl UserData for KafkaProducer {
    fn add_methods<M: UserDataMethods<Self>>(methods: &mut M) {
        methods.add_async_method("send", |lua, this, params: Value| async move {
            let site = CallSite::capture(&lua);
            let producer = this
                .producer()
                .map_err(|e| site.error(format!("kafka send: {e}")))?;
            super::pool::mark_used(&this.props);
            drop(this);
            let record: Record = hermod_policy::config::from_lua_strict_at(
                &lua,
                &site,
                params,
                "kafka producer:send",
            )?;
            let (partition, offset) = send_one(&lua, &producer, &record).await.map_err(|e| {
                site.error(format!(
                    "kafka send to topic '{}' failed: {e}",
                    record.topic
                ))
            })?;
            Ok((partition, offset))
        });

        methods.add_async_method("send_batch", |lua, this, params: Value| async move {
            let site = CallSite::capture(&lua);
            let producer = this
                .producer()
                .map_err(|e| site.error(format!("kafka send_batch: {e}")))?;
            super::pool::mark_used(&this.props);
            drop(this);
            let records = records_from(&lua, &site, params)?;
            let results =
                futures::future::join_all(records.iter().map(|r| send_one(&lua, &producer, r)))
                    .await;
            let failed: Table = lua.create_table()?;
            let errors: Table = lua.create_table()?;
            for (i, (res, rec)) in results.into_iter().zip(&records).enumerate() {
                if let Err(e) = res {
                    tracing::debug!(topic = %rec.topic, error = %e, "kafka batch record failed");
                    failed.push(i + 1)?;
                    errors.push(format!("kafka send to topic '{}' failed: {e}", rec.topic))?;
                }
            }
            failed.set_metatable(Some(lua.array_metatable()));
            errors.set_metatable(Some(lua.array_metatable()));
            Ok((failed, errors))
        });

        methods.add_method("close", |_lua, this, ()| {
            *this.state.write() = State::Closed;
            Ok(())
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rdkafka::message::Headers;

    #[test]
    fn policy_header_named_like_the_id_header_suppresses_the_default() {
        let lua = Lua::new();
        hermod_policy::scope::enter(&lua, [("ID1".to_string(), bytes::Bytes::from_static(b"x"))]);
        let mut headers = BTreeMap::new();
        headers.insert("Hermod-Message-Id".to_string(), LuaBytes(b"mine".to_vec()));
        let rec = Record {
            topic: "t".into(),
            payload: Some(LuaBytes(b"x".to_vec())),
            key: None,
            partition: None,
            headers,
            timeout: None,
        };
        let h = headers_for(&lua, &rec);
        assert_eq!(h.count(), 1);
        let rec2 = Record {
            headers: BTreeMap::new(),
            ..rec
        };
        let h2 = headers_for(&lua, &rec2);
        assert_eq!(h2.count(), 1);
        assert_eq!(h2.get(0).key, MESSAGE_ID_HEADER);
        assert_eq!(h2.get(0).value, Some(b"ID1".as_slice()));
    }
}
