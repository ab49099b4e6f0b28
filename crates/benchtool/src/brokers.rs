//! One client per broker, speaking to the objects the example policies publish to.

use std::collections::HashSet;
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Context, Result};
use futures::{stream, StreamExt, TryStreamExt};
use lapin::options::{
    BasicPublishOptions, ConfirmSelectOptions, QueueDeclareOptions, QueuePurgeOptions,
};
use lapin::types::FieldTable;
use lapin::{BasicProperties, Channel, Connection, ConnectionProperties};
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::producer::{FutureProducer, FutureRecord};
use rdkafka::ClientConfig;

/// Where the example objects live (defaults are those of `scripts/services`).
#[derive(clap::Args)]
pub struct Targets {
    #[arg(long, default_value = "127.0.0.1:4222", global = true)]
    nats: String,
    #[arg(long, default_value = "HERMOD_EXAMPLES", global = true)]
    stream: String,
    #[arg(long, default_value = "subject", global = true)]
    subject: String,
    #[arg(long, default_value = "amqp://127.0.0.1:5672/%2f", global = true)]
    amqp: String,
    #[arg(long, default_value = "logging", global = true)]
    queue: String,
    #[arg(long, default_value = "127.0.0.1:9092", global = true)]
    kafka: String,
    #[arg(long, default_value = "my.topic", global = true)]
    topic: String,
}

pub enum Broker {
    Nats {
        js: async_nats::jetstream::Context,
        stream: String,
        subject: String,
    },
    Amqp {
        // Kept so the channel's connection stays open.
        _conn: Connection,
        channel: Channel,
        queue: String,
    },
    Kafka {
        bootstrap: String,
        topic: String,
        consumer: BaseConsumer,
    },
}

const KAFKA_TIMEOUT: Duration = Duration::from_secs(10);

impl Broker {
    pub async fn nats(t: &Targets) -> Result<Self> {
        let client = async_nats::connect(&t.nats)
            .await
            .with_context(|| format!("connect to NATS at {}", t.nats))?;
        Ok(Broker::Nats {
            js: async_nats::jetstream::new(client),
            stream: t.stream.clone(),
            subject: t.subject.clone(),
        })
    }

    pub async fn amqp(t: &Targets) -> Result<Self> {
        let conn = Connection::connect(&t.amqp, ConnectionProperties::default())
            .await
            .with_context(|| format!("connect to AMQP at {}", t.amqp))?;
        let channel = conn.create_channel().await?;
        channel
            .confirm_select(ConfirmSelectOptions::default())
            .await?;
        Ok(Broker::Amqp {
            _conn: conn,
            channel,
            queue: t.queue.clone(),
        })
    }

    pub fn kafka(t: &Targets) -> Result<Self> {
        let consumer: BaseConsumer = ClientConfig::new()
            .set("bootstrap.servers", &t.kafka)
            .set("group.id", "hermod-benchtool")
            .create()
            .context("create Kafka consumer")?;
        Ok(Broker::Kafka {
            bootstrap: t.kafka.clone(),
            topic: t.topic.clone(),
            consumer,
        })
    }

    /// A number that grows by one per message the broker accepted: the JetStream stream's last
    /// sequence (message counts shrink when the bounded stream discards old messages), the
    /// queue depth, or the sum of the topic's end offsets.
    pub async fn count(&self) -> Result<u64> {
        match self {
            Broker::Nats { js, stream, .. } => {
                let s = js
                    .get_stream(stream)
                    .await
                    .with_context(|| format!("JetStream stream {stream}"))?;
                Ok(s.get_info().await?.state.last_sequence)
            }
            Broker::Amqp { channel, queue, .. } => {
                let opts = QueueDeclareOptions {
                    passive: true,
                    ..Default::default()
                };
                let q = channel
                    .queue_declare(queue.as_str().into(), opts, FieldTable::default())
                    .await
                    .with_context(|| format!("passive declare of queue {queue}"))?;
                Ok(u64::from(q.message_count()))
            }
            Broker::Kafka {
                topic, consumer, ..
            } => {
                let md = consumer
                    .fetch_metadata(Some(topic), KAFKA_TIMEOUT)
                    .with_context(|| format!("metadata of topic {topic}"))?;
                let t = md
                    .topics()
                    .first()
                    .ok_or_else(|| anyhow!("topic {topic} not in metadata"))?;
                let mut sum = 0u64;
                for p in t.partitions() {
                    let (_, high) = consumer.fetch_watermarks(topic, p.id(), KAFKA_TIMEOUT)?;
                    sum += u64::try_from(high).unwrap_or(0);
                }
                Ok(sum)
            }
        }
    }

    /// Create the stream (file storage, no limits) if it does not exist yet: the backlog
    /// scenario's private nats-server starts empty.
    pub async fn create_stream(&self) -> Result<()> {
        let Broker::Nats {
            js,
            stream,
            subject,
        } = self
        else {
            bail!("create-stream is only supported for nats");
        };
        js.get_or_create_stream(async_nats::jetstream::stream::Config {
            name: stream.clone(),
            subjects: vec![subject.clone()],
            ..Default::default()
        })
        .await
        .with_context(|| format!("create JetStream stream {stream}"))?;
        Ok(())
    }

    /// How many of `ids` are the `Nats-Msg-Id` of a message stored after sequence `after`,
    /// polling until all are found or `timeout` passes. Unlike a count, this cannot be fooled
    /// by other publishers sharing the stream.
    pub async fn find_ids(
        &self,
        ids: &HashSet<String>,
        after: u64,
        timeout: Duration,
    ) -> Result<usize> {
        let Broker::Nats { js, stream, .. } = self else {
            bail!("verify-ids is only supported for nats");
        };
        let s = js
            .get_stream(stream)
            .await
            .with_context(|| format!("JetStream stream {stream}"))?;
        let deadline = Instant::now() + timeout;
        let mut next = after.saturating_add(1);
        let mut found: HashSet<String> = HashSet::new();
        loop {
            let last = s.get_info().await?.state.last_sequence;
            while next <= last {
                // Sequences removed by the stream's limits are simply absent.
                if let Ok(m) = s.get_raw_message(next).await {
                    if let Some(id) = m.headers.get("Nats-Msg-Id") {
                        if ids.contains(id.as_str()) {
                            found.insert(id.as_str().to_string());
                        }
                    }
                }
                next += 1;
            }
            if found.len() >= ids.len() || Instant::now() >= deadline {
                return Ok(found.len());
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }

    /// Drop the messages of the AMQP queue or the JetStream stream; counts are deltas, so
    /// nothing else notices (a stream keeps its sequence numbers). The topic is not purged.
    pub async fn purge(&self) -> Result<u64> {
        match self {
            Broker::Nats { js, stream, .. } => {
                let s = js
                    .get_stream(stream)
                    .await
                    .with_context(|| format!("JetStream stream {stream}"))?;
                let r = s
                    .purge()
                    .await
                    .with_context(|| format!("purge of stream {stream}"))?;
                Ok(r.purged)
            }
            Broker::Amqp { channel, queue, .. } => Ok(u64::from(
                channel
                    .queue_purge(queue.as_str().into(), QueuePurgeOptions::default())
                    .await
                    .with_context(|| format!("purge of queue {queue}"))?,
            )),
            _ => bail!("purge is only supported for amqp and nats"),
        }
    }

    /// Publish `n` copies of `payload`, each awaited for its broker acknowledgement, with up
    /// to `window` in flight: the best this client can do against this broker.
    pub async fn publish_pipelined(&self, n: u64, payload: &[u8], window: usize) -> Result<()> {
        match self {
            Broker::Nats { js, subject, .. } => {
                let body = bytes::Bytes::copy_from_slice(payload);
                stream::iter(0..n)
                    .map(|_| {
                        let (js, subject, body) = (js.clone(), subject.clone(), body.clone());
                        async move {
                            let ack = js.publish(subject, body).await?;
                            ack.await?;
                            anyhow::Ok(())
                        }
                    })
                    .buffer_unordered(window)
                    .try_collect::<()>()
                    .await
            }
            Broker::Amqp { channel, queue, .. } => {
                stream::iter(0..n)
                    .map(|_| async move {
                        let confirm = channel
                            .basic_publish(
                                "".into(),
                                queue.as_str().into(),
                                BasicPublishOptions::default(),
                                payload,
                                BasicProperties::default(),
                            )
                            .await?;
                        let c = confirm.await?;
                        if !c.is_ack() {
                            return Err(anyhow!("broker did not ack: {c:?}"));
                        }
                        anyhow::Ok(())
                    })
                    .buffer_unordered(window)
                    .try_collect::<()>()
                    .await
            }
            Broker::Kafka {
                bootstrap, topic, ..
            } => {
                let producer: FutureProducer = ClientConfig::new()
                    .set("bootstrap.servers", bootstrap)
                    .create()
                    .context("create Kafka producer")?;
                stream::iter(0..n)
                    .map(|_| {
                        let producer = &producer;
                        async move {
                            producer
                                .send(
                                    FutureRecord::<(), [u8]>::to(topic).payload(payload),
                                    Duration::from_secs(60),
                                )
                                .await
                                .map_err(|(e, _)| anyhow!("kafka send: {e}"))?;
                            anyhow::Ok(())
                        }
                    })
                    .buffer_unordered(window)
                    .try_collect::<()>()
                    .await
            }
        }
    }
}
