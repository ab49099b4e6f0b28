//! The six acceptance seeds (A1, B1, C1 legacy constructors; A2, B2, C2
//! connection objects) run unchanged behind the P0 prelude by the real
//! `hermod` binary against the shared loopback brokers: 200 messages injected
//! over SMTP come out exactly once each, byte for byte, and the local log
//! records their Reception and Delivery.
//!
//! This is the only test binary that consumes the shared RabbitMQ queue
//! `logging` (see `common::brokers::LOGGING_QUEUE_LOCK`).

mod common;

use std::collections::HashSet;
use std::time::Duration;

use common::brokers::{
    AmqpQueueReader, BrokerMessage, KafkaTopicReader, NatsStreamReader, LOGGING_QUEUE_LOCK,
    NATS_EXAMPLES_STREAM, NATS_URL,
};
use common::{records_of, seed_section, smtp, unique, Server};

const COUNT: usize = 200;
const CONNECTIONS: usize = 8;
const READ_TIMEOUT: Duration = Duration::from_secs(40);
const LOG_TIMEOUT: Duration = Duration::from_secs(15);

enum Reader {
    Nats(Box<NatsStreamReader>),
    Amqp(Box<AmqpQueueReader>),
    Kafka(KafkaTopicReader),
}

impl Reader {
    async fn for_domain(domain: &str) -> Self {
        match domain {
            "nats" => Reader::Nats(Box::new(
                NatsStreamReader::at_end(NATS_URL, NATS_EXAMPLES_STREAM).await,
            )),
            "amqp" => Reader::Amqp(Box::new(AmqpQueueReader::new("logging").await)),
            _ => Reader::Kafka(KafkaTopicReader::at_end("my.topic").await),
        }
    }

    async fn collect(&mut self, marker: &str) -> Vec<BrokerMessage> {
        match self {
            Reader::Nats(r) => r.collect(marker, COUNT, READ_TIMEOUT).await,
            Reader::Amqp(r) => r.collect(marker, COUNT, READ_TIMEOUT).await,
            Reader::Kafka(r) => r.collect(marker, COUNT, READ_TIMEOUT).await,
        }
    }
}

/// Run `examples/<file>`'s scenario and check broker side and local log.
async fn run_seed(file: &str, domain: &str, delivery_content: &str) {
    let server = Server::start(&seed_section(file)).await;
    let marker = unique(&format!("seed_{}", file.replace(['-', '.'], "_")));
    let recipient = format!("user@{domain}");
    let mut reader = Reader::for_domain(domain).await;

    let sent =
        smtp::send_messages(server.smtp_addr(), &recipient, &marker, COUNT, CONNECTIONS).await;
    assert_eq!(sent.len(), COUNT);
    let ids: HashSet<String> = sent.iter().map(|s| s.id.clone()).collect();
    assert_eq!(ids.len(), COUNT, "Hermod returned duplicate ids");

    let got = reader.collect(&marker).await;
    assert_eq!(
        got.len(),
        COUNT,
        "{file}: expected exactly {COUNT} publishes with marker {marker}; stderr tail:\n{}",
        server.stderr_tail()
    );
    let payloads: Vec<Vec<u8>> = got.iter().map(|m| m.payload.clone()).collect();
    let payload_ids = common::payload::assert_exact_payloads(&payloads, &sent, &recipient);
    for (m, id) in got.iter().zip(&payload_ids) {
        assert_eq!(
            m.message_id.as_deref(),
            Some(id.as_str()),
            "{file}: broker message id must be the Hermod id"
        );
    }

    let site = format!("unspecified->{domain}@lua:make.{domain}");
    let records = server
        .wait_for_records(LOG_TIMEOUT, "200 Delivery records", |r| {
            records_of(r, "Delivery", &ids).len() >= COUNT
        })
        .await;
    let receptions = records_of(&records, "Reception", &ids);
    let deliveries = records_of(&records, "Delivery", &ids);
    assert_eq!(receptions.len(), COUNT, "{file}: Reception records");
    assert_eq!(deliveries.len(), COUNT, "{file}: Delivery records");
    let logged: HashSet<&str> = deliveries.iter().filter_map(|r| r["id"].as_str()).collect();
    assert_eq!(logged.len(), COUNT, "{file}: one Delivery per id");
    for d in deliveries {
        assert_eq!(d["response"]["code"], 200, "{file}: {d}");
        assert_eq!(d["response"]["content"], delivery_content, "{file}: {d}");
        assert_eq!(d["delivery_protocol"], "Lua", "{file}: {d}");
        assert_eq!(d["site"], site.as_str(), "{file}: {d}");
    }
    let failures: Vec<_> = records
        .iter()
        .filter(|r| r["type"] != "Reception" && r["type"] != "Delivery")
        .filter(|r| r["id"].as_str().is_some_and(|id| ids.contains(id)))
        .map(common::summarize)
        .collect();
    assert!(
        failures.is_empty(),
        "{file}: unexpected records {failures:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a1_nats_legacy_publishes_each_message_once_exactly_and_logs_delivery_ok() {
    run_seed("a1-nats-legacy.lua", "nats", "OK").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a2_nats_connection_object_publishes_each_message_once_and_logs_250_ok() {
    run_seed("a2-nats.lua", "nats", "250 ok").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn b1_amqp_legacy_publishes_each_message_once_exactly_and_logs_delivery_ok() {
    let _only_consumer = LOGGING_QUEUE_LOCK.lock().await;
    run_seed("b1-amqp-legacy.lua", "amqp", "OK").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn b2_amqp_connection_object_publishes_each_message_once_and_logs_250_ok() {
    let _only_consumer = LOGGING_QUEUE_LOCK.lock().await;
    run_seed("b2-amqp.lua", "amqp", "250 ok").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn c1_kafka_legacy_publishes_each_message_once_exactly_and_logs_delivery_ok() {
    run_seed("c1-kafka-legacy.lua", "kafka", "OK").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn c2_kafka_connection_object_publishes_each_message_once_and_logs_250_ok() {
    run_seed("c2-kafka.lua", "kafka", "250 ok").await;
}
