//! Why a Kafka producer could not be built or a record was not delivered.
//! The texts are what policies see after `kumo.kafka...:` and the topic.

use std::time::Duration;

#[derive(Debug, thiserror::Error)]
pub enum KafkaError {
    #[error("producer creation task failed: {0}")]
    CreationTask(#[source] tokio::task::JoinError),
    #[error("invalid producer configuration: {0}")]
    InvalidConfiguration(#[source] rdkafka::error::KafkaError),
    #[error("no delivery report within {}", humantime::format_duration(*.0))]
    NoDeliveryReport(Duration),
    /// librdkafka's delivery report said the record was not delivered.
    #[error(transparent)]
    Delivery(rdkafka::error::KafkaError),
    /// The record timed out (either of the above) after librdkafka
    /// reported `broker`, the last client error since a delivery.
    #[error("{source}; last broker error: {broker}")]
    TimedOutAfterBrokerError {
        source: Box<KafkaError>,
        broker: String,
    },
}
