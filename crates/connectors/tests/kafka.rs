//! `kumo.kafka` against the Kafka-protocol broker on 127.0.0.1:9092
//! (`/work/shared/tools/kafka-broker start`).

mod common;

use std::time::Duration;

use mlua::{AnyUserData, Table, Value};
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::message::{Headers, Message};
use rdkafka::{ClientConfig, Offset, TopicPartitionList};

const BROKER_TOOL: &str = "/work/shared/tools/kafka-broker";

fn topic(prefix: &str) -> String {
    let name = common::unique(prefix);
    let out = std::process::Command::new(BROKER_TOOL)
        .args(["topic", &name])
        .output()
        .expect("run kafka-broker");
    assert!(
        out.status.success(),
        "topic creation failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    name
}

/// Read the record at `offset` of partition 0 on a blocking thread.
async fn read_back(topic: &str, offset: i64) -> (Vec<u8>, Vec<(String, Vec<u8>)>) {
    let topic = topic.to_string();
    tokio::task::spawn_blocking(move || {
        let consumer: BaseConsumer = ClientConfig::new()
            .set("bootstrap.servers", "127.0.0.1:9092")
            .set("group.id", common::unique("hermod_reader"))
            .set("enable.auto.commit", "false")
            .create()
            .unwrap();
        let mut tpl = TopicPartitionList::new();
        tpl.add_partition_offset(&topic, 0, Offset::Offset(offset))
            .unwrap();
        consumer.assign(&tpl).unwrap();
        let deadline = std::time::Instant::now() + Duration::from_secs(20);
        while std::time::Instant::now() < deadline {
            if let Some(Ok(m)) = consumer.poll(Duration::from_millis(500)) {
                let headers = m
                    .headers()
                    .map(|h| {
                        h.iter()
                            .map(|h| (h.key.to_string(), h.value.unwrap_or_default().to_vec()))
                            .collect()
                    })
                    .unwrap_or_default();
                return (m.payload().unwrap_or_default().to_vec(), headers);
            }
        }
        panic!("no record at offset {offset} of {topic}");
    })
    .await
    .unwrap()
}

#[tokio::test]
async fn send_returns_partition_and_offset_and_the_record_carries_the_message_id_header() {
    let topic = topic("hermod_send");
    let lua = common::lua();
    hermod_policy::scope::enter(
        &lua,
        [(
            "SPOOL-KAFKA-1".to_string(),
            bytes::Bytes::from_static(b"mail\xff"),
        )],
    );
    lua.globals().set("TOPIC", topic.as_str()).unwrap();
    let (partition, offset): (i32, i64) = common::run(
        &lua,
        r#"
        local p = kumo.kafka.build_producer{ ['bootstrap.servers'] = '127.0.0.1:9092',
            ['message.timeout.ms'] = 20000 }
        return p:send{ topic = TOPIC, payload = 'mail\xff', key = 'k', headers = { extra = 'e' }, timeout = '20s' }
        "#,
    )
    .await
    .unwrap();
    assert_eq!(partition, 0);
    assert!(offset >= 0);
    let (payload, headers) = read_back(&topic, offset).await;
    assert_eq!(payload, b"mail\xff");
    assert!(
        headers.contains(&("hermod-message-id".to_string(), b"SPOOL-KAFKA-1".to_vec())),
        "{headers:?}"
    );
    assert!(
        headers.contains(&("extra".to_string(), b"e".to_vec())),
        "{headers:?}"
    );
}

#[tokio::test]
async fn send_batch_returns_empty_arrays_when_every_record_is_delivered() {
    let topic = topic("hermod_batch");
    let lua = common::lua();
    lua.globals().set("TOPIC", topic.as_str()).unwrap();
    let (failed, errors): (Table, Table) = common::run(
        &lua,
        r#"
        local p = kumo.kafka.build_producer{ ['bootstrap.servers'] = '127.0.0.1:9092' }
        return p:send_batch{
            { topic = TOPIC, payload = 'one', timeout = '20s' },
            { topic = TOPIC, payload = 'two', timeout = '20s' },
            { topic = TOPIC, payload = 'three', timeout = '20s' },
        }
        "#,
    )
    .await
    .unwrap();
    assert_eq!(failed.raw_len(), 0);
    assert_eq!(errors.raw_len(), 0);
}

#[tokio::test]
async fn send_batch_reports_the_failing_record_by_its_index() {
    let topic = topic("hermod_batchfail");
    let lua = common::lua();
    lua.globals().set("TOPIC", topic.as_str()).unwrap();
    let (failed, errors): (Vec<i64>, Vec<String>) = common::run(
        &lua,
        r#"
        local p = kumo.kafka.build_producer{ ['bootstrap.servers'] = '127.0.0.1:9092' }
        return p:send_batch{
            { topic = TOPIC, payload = 'ok', timeout = '20s' },
            { topic = TOPIC, payload = 'bad', partition = 99, timeout = '5s' },
        }
        "#,
    )
    .await
    .unwrap();
    assert_eq!(failed, vec![2]);
    assert!(errors[0].contains(&topic), "{errors:?}");
}

#[tokio::test]
async fn producers_built_with_the_same_properties_share_one_librdkafka_producer() {
    let lua = common::lua();
    lua.globals()
        .set("ID", common::unique("hermod_share"))
        .unwrap();
    let before = hermod_connectors::kafka::producers_created();
    let (a, b, c): (AnyUserData, AnyUserData, AnyUserData) = common::run(
        &lua,
        r#"
        local props = { ['bootstrap.servers'] = '127.0.0.1:9092', ['client.id'] = ID, ['linger.ms'] = 5 }
        local a = kumo.kafka.build_producer(props)
        local b = kumo.kafka.build_producer{ ['client.id'] = ID, ['linger.ms'] = '5',
            ['bootstrap.servers'] = '127.0.0.1:9092' }
        local c = kumo.kafka.build_producer{ ['bootstrap.servers'] = '127.0.0.1:9092', ['client.id'] = ID .. 'x' }
        return a, b, c
        "#,
    )
    .await
    .unwrap();
    let a = a
        .borrow::<hermod_connectors::kafka::KafkaProducer>()
        .unwrap();
    let b = b
        .borrow::<hermod_connectors::kafka::KafkaProducer>()
        .unwrap();
    let c = c
        .borrow::<hermod_connectors::kafka::KafkaProducer>()
        .unwrap();
    assert!(a.shares_producer_with(&b));
    assert!(!a.shares_producer_with(&c));
    assert!(hermod_connectors::kafka::producers_created() >= before + 2);
}

#[tokio::test]
async fn close_then_send_raises_client_was_closed_but_other_handles_keep_working() {
    let topic = topic("hermod_close");
    let lua = common::lua();
    lua.globals().set("TOPIC", topic.as_str()).unwrap();
    lua.globals()
        .set("ID", common::unique("hermod_closeid"))
        .unwrap();
    let (err, offset): (String, i64) = common::run(
        &lua,
        r#"
        local props = { ['bootstrap.servers'] = '127.0.0.1:9092', ['client.id'] = ID }
        local a = kumo.kafka.build_producer(props)
        local b = kumo.kafka.build_producer(props)
        a:close()
        local ok, err = pcall(function() return a:send{ topic = TOPIC, payload = 'x' } end)
        local _, offset = b:send{ topic = TOPIC, payload = 'y', timeout = '20s' }
        return tostring(err), offset
        "#,
    )
    .await
    .unwrap();
    assert!(err.contains("client was closed"), "{err}");
    assert!(offset >= 0);
}

#[tokio::test]
async fn invalid_producer_property_raises_naming_it() {
    let lua = common::lua();
    let err = common::run::<Value>(
        &lua,
        "local p = kumo.kafka.build_producer{ ['no.such.setting'] = 'x' }; return p",
    )
    .await
    .unwrap_err()
    .to_string();
    assert!(err.contains("no.such.setting"), "{err}");
    assert!(err.contains("test.lua:1"), "{err}");
}
