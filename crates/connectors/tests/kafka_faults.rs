//! Kafka fault injection with librdkafka's in-process mock cluster: broker
//! errors must surface as Lua errors naming the topic, and retriable errors
//! must be retried by librdkafka rather than failing the send.

mod common;

use mlua::Value;
use rdkafka::mocking::MockCluster;
use rdkafka::types::{RDKafkaApiKey, RDKafkaRespErr};

#[tokio::test]
async fn a_non_retriable_broker_error_raises_naming_the_topic_and_the_reason() {
    let mock = MockCluster::new(1).unwrap();
    let topic = common::unique("hermod_fault");
    mock.create_topic(&topic, 1, 1).unwrap();
    mock.topic_error(
        &topic,
        RDKafkaRespErr::RD_KAFKA_RESP_ERR_TOPIC_AUTHORIZATION_FAILED,
    )
    .unwrap();
    let lua = common::lua();
    lua.globals()
        .set("SERVERS", mock.bootstrap_servers())
        .unwrap();
    lua.globals().set("TOPIC", topic.as_str()).unwrap();
    let err = common::run::<Value>(
        &lua,
        r#"
        local p = kumo.kafka.build_producer{ ['bootstrap.servers'] = SERVERS }
        local partition, offset = p:send{ topic = TOPIC, payload = 'x', timeout = '10s' }
        return partition
        "#,
    )
    .await
    .unwrap_err()
    .to_string();
    assert!(err.contains(&format!("topic '{topic}'")), "{err}");
    assert!(err.to_lowercase().contains("authoriz"), "{err}");
    assert!(err.contains("test.lua:3"), "{err}");
}

#[tokio::test]
async fn retriable_produce_errors_are_retried_and_the_send_succeeds() {
    let mock = MockCluster::new(1).unwrap();
    let topic = common::unique("hermod_retry");
    mock.create_topic(&topic, 1, 1).unwrap();
    mock.request_errors(
        RDKafkaApiKey::Produce,
        &[
            RDKafkaRespErr::RD_KAFKA_RESP_ERR_NOT_ENOUGH_REPLICAS,
            RDKafkaRespErr::RD_KAFKA_RESP_ERR_NOT_ENOUGH_REPLICAS,
        ],
    );
    let lua = common::lua();
    lua.globals()
        .set("SERVERS", mock.bootstrap_servers())
        .unwrap();
    lua.globals().set("TOPIC", topic.as_str()).unwrap();
    let (partition, offset): (i32, i64) = common::run(
        &lua,
        r#"
        local p = kumo.kafka.build_producer{ ['bootstrap.servers'] = SERVERS, ['retry.backoff.ms'] = 10 }
        return p:send{ topic = TOPIC, payload = 'x', timeout = '10s' }
        "#,
    )
    .await
    .unwrap();
    assert_eq!((partition, offset), (0, 0));
}
