//! Read back what Hermod published, starting at the broker's current end and
//! keeping only payloads that contain a test's marker, so tests sharing the
//! example stream/queue/topic never see each other's messages.
//!
//! Every `collect` waits until `expected` matches arrived (or `timeout`),
//! then keeps reading for [`SETTLE`] so that duplicates are seen too.

use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use async_nats::jetstream;
use lapin::options::BasicGetOptions;
use lapin::{Connection, ConnectionProperties};
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::message::{Headers, Message as _};
use rdkafka::{ClientConfig, Offset, TopicPartitionList};

/// Extra reading time after the expected count arrived, to catch duplicates.
pub const SETTLE: Duration = Duration::from_secs(2);

pub const NATS_URL: &str = "127.0.0.1:4222";
/// The stream scripts/services creates for the examples (subject `subject`).
pub const NATS_EXAMPLES_STREAM: &str = "HERMOD_EXAMPLES";
pub const AMQP_URI: &str = "amqp://guest:guest@127.0.0.1:5672/%2f";
pub const KAFKA_BOOTSTRAP: &str = "127.0.0.1:9092";

/// Consumers of the shared RabbitMQ queue `logging` must hold this lock:
/// reading it consumes other tests' messages too. Only one test binary
/// (seeds.rs) may consume `logging`.
pub static LOGGING_QUEUE_LOCK: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

/// One message as the broker holds it.
#[derive(Clone, Debug)]
pub struct BrokerMessage {
    pub payload: Vec<u8>,
    /// `Nats-Msg-Id`, AMQP `message_id`, or Kafka header `hermod-message-id`.
    pub message_id: Option<String>,
}

fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    needle.is_empty() || haystack.windows(needle.len()).any(|w| w == needle)
}

/// Shared polling loop: `poll` appends new matches; stop at `expected` + settle.
async fn collect_loop<F, Fut>(expected: usize, timeout: Duration, mut poll: F) -> Vec<BrokerMessage>
where
    F: FnMut(Vec<BrokerMessage>) -> Fut,
    Fut: std::future::Future<Output = Vec<BrokerMessage>>,
{
    let deadline = Instant::now() + timeout;
    let mut got = Vec::new();
    let mut settle_until: Option<Instant> = None;
    loop {
        got = poll(got).await;
        let now = Instant::now();
        if got.len() >= expected && settle_until.is_none() {
            settle_until = Some(now + SETTLE);
        }
        if settle_until.is_some_and(|t| now >= t) || now >= deadline {
            return got;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Reads a JetStream stream by sequence number, from its end at creation.
pub struct NatsStreamReader {
    stream: jetstream::stream::Stream,
    next: u64,
}

impl NatsStreamReader {
    pub async fn at_end(server: &str, stream: &str) -> Self {
        let client = async_nats::connect(server)
            .await
            .unwrap_or_else(|e| panic!("connecting to NATS at {server}: {e}"));
        let js = jetstream::new(client);
        let stream = js
            .get_stream(stream)
            .await
            .unwrap_or_else(|e| panic!("JetStream stream {stream}: {e}"));
        Self::at_end_of(stream).await
    }

    /// A reader of `stream` (however its client connected), from its end.
    pub async fn at_end_of(stream: jetstream::stream::Stream) -> Self {
        let last = stream
            .get_info()
            .await
            .expect("stream info")
            .state
            .last_sequence;
        Self {
            stream,
            next: last + 1,
        }
    }

    /// Payloads containing `marker` published since `at_end` (or the last collect).
    pub async fn collect(
        &mut self,
        marker: &str,
        expected: usize,
        timeout: Duration,
    ) -> Vec<BrokerMessage> {
        let stream = self.stream.clone();
        let next = std::sync::Arc::new(std::sync::atomic::AtomicU64::new(self.next));
        let n2 = next.clone();
        let got = collect_loop(expected, timeout, move |mut got| {
            let stream = stream.clone();
            let next = n2.clone();
            let marker = marker.as_bytes().to_vec();
            async move {
                let Ok(info) = stream.get_info().await else {
                    return got;
                };
                let from = next.load(std::sync::atomic::Ordering::SeqCst);
                for seq in from..=info.state.last_sequence {
                    // Sequences removed by stream limits simply do not exist.
                    if let Ok(m) = stream.get_raw_message(seq).await {
                        if contains(&m.payload, &marker) {
                            got.push(BrokerMessage {
                                payload: m.payload.to_vec(),
                                message_id: m
                                    .headers
                                    .get("Nats-Msg-Id")
                                    .map(|v| v.as_str().to_string()),
                            });
                        }
                    }
                    next.store(seq + 1, std::sync::atomic::Ordering::SeqCst);
                }
                got
            }
        })
        .await;
        self.next = next.load(std::sync::atomic::Ordering::SeqCst);
        got
    }
}

/// Consumes an AMQP queue with `basic.get` (auto-ack). Messages without the
/// marker are consumed too: hold [`LOGGING_QUEUE_LOCK`] for shared queues.
pub struct AmqpQueueReader {
    channel: lapin::Channel,
    queue: String,
    _conn: Connection,
}

impl AmqpQueueReader {
    pub async fn new(queue: &str) -> Self {
        let conn = Connection::connect(AMQP_URI, ConnectionProperties::default())
            .await
            .expect("connecting to RabbitMQ");
        let channel = conn.create_channel().await.expect("AMQP channel");
        Self {
            channel,
            queue: queue.to_string(),
            _conn: conn,
        }
    }

    pub fn channel(&self) -> &lapin::Channel {
        &self.channel
    }

    pub async fn collect(
        &self,
        marker: &str,
        expected: usize,
        timeout: Duration,
    ) -> Vec<BrokerMessage> {
        collect_loop(expected, timeout, |mut got| async move {
            while let Ok(Some(m)) = self
                .channel
                .basic_get(self.queue.as_str().into(), BasicGetOptions { no_ack: true })
                .await
            {
                if contains(&m.delivery.data, marker.as_bytes()) {
                    got.push(BrokerMessage {
                        payload: m.delivery.data.clone(),
                        message_id: m
                            .delivery
                            .properties
                            .message_id()
                            .as_ref()
                            .map(|s| s.as_str().to_string()),
                    });
                }
            }
            got
        })
        .await
    }
}

/// Reads every partition of a Kafka topic from the high watermarks noted
/// by `at_end`.
pub struct KafkaTopicReader {
    topic: String,
    start: Vec<(i32, i64)>,
}

impl KafkaTopicReader {
    pub async fn at_end(topic: &str) -> Self {
        let t = topic.to_string();
        let start = tokio::task::spawn_blocking(move || {
            let c = consumer();
            let md = c
                .fetch_metadata(Some(&t), Duration::from_secs(10))
                .expect("Kafka metadata");
            let parts: Vec<i32> = md
                .topics()
                .iter()
                .flat_map(|x| x.partitions().iter().map(|p| p.id()))
                .collect();
            assert!(!parts.is_empty(), "Kafka topic {t} has no partitions");
            parts
                .into_iter()
                .map(|p| {
                    let (_, high) = c
                        .fetch_watermarks(&t, p, Duration::from_secs(10))
                        .expect("Kafka watermarks");
                    (p, high)
                })
                .collect()
        })
        .await
        .expect("Kafka metadata task");
        Self {
            topic: topic.to_string(),
            start,
        }
    }

    pub async fn collect(
        &self,
        marker: &str,
        expected: usize,
        timeout: Duration,
    ) -> Vec<BrokerMessage> {
        let topic = self.topic.clone();
        let start = self.start.clone();
        let marker = marker.as_bytes().to_vec();
        tokio::task::spawn_blocking(move || {
            let c = consumer();
            let mut tpl = TopicPartitionList::new();
            for (p, off) in &start {
                tpl.add_partition_offset(&topic, *p, Offset::Offset(*off))
                    .expect("Kafka partition offset");
            }
            c.assign(&tpl).expect("Kafka assign");
            let deadline = Instant::now() + timeout;
            let mut settle_until: Option<Instant> = None;
            let mut got = Vec::new();
            loop {
                if let Some(Ok(m)) = c.poll(Duration::from_millis(200)) {
                    let payload = m.payload().unwrap_or_default();
                    if contains(payload, &marker) {
                        let message_id = m.headers().and_then(|h| {
                            h.iter()
                                .find(|h| h.key == "hermod-message-id")
                                .and_then(|h| h.value)
                                .map(|v| String::from_utf8_lossy(v).into_owned())
                        });
                        got.push(BrokerMessage {
                            payload: payload.to_vec(),
                            message_id,
                        });
                    }
                }
                let now = Instant::now();
                if got.len() >= expected && settle_until.is_none() {
                    settle_until = Some(now + SETTLE);
                }
                if settle_until.is_some_and(|t| now >= t) || now >= deadline {
                    return got;
                }
            }
        })
        .await
        .expect("Kafka reader task")
    }
}

fn consumer() -> BaseConsumer {
    ClientConfig::new()
        .set("bootstrap.servers", KAFKA_BOOTSTRAP)
        .set("group.id", super::unique("hermod_e2e_reader"))
        .set("enable.auto.commit", "false")
        .create()
        .expect("Kafka consumer")
}

/// A `nats-server` with JetStream owned by one test: its own port and store
/// directory, so it may be killed and restarted without touching the shared one.
pub struct PrivateNats {
    pub port: u16,
    store: tempfile::TempDir,
    /// A configuration file (`-c`) instead of command-line flags.
    config: Option<std::path::PathBuf>,
    child: Option<Child>,
}

pub const NATS_SERVER_BIN: &str = "/usr/sbin/nats-server";

impl PrivateNats {
    pub async fn start() -> Self {
        let mut n = PrivateNats {
            port: super::free_port(),
            store: tempfile::tempdir().expect("nats store dir"),
            config: None,
            child: None,
        };
        n.spawn().await;
        n
    }

    /// A server run from a configuration file: loopback, its own port and
    /// JetStream store, then `extra` (e.g. `tls {...}` and
    /// `authorization {...}` blocks).
    pub async fn start_with_config(extra: &str) -> Self {
        let port = super::free_port();
        let store = tempfile::tempdir().expect("nats store dir");
        let config = store.path().join("nats.conf");
        let text = format!(
            "host: 127.0.0.1\nport: {port}\njetstream {{ store_dir: {:?} }}\n{extra}\n",
            store.path().join("js").display().to_string()
        );
        std::fs::write(&config, text).expect("writing nats.conf");
        let mut n = PrivateNats {
            port,
            store,
            config: Some(config),
            child: None,
        };
        n.spawn().await;
        n
    }

    /// The server's own log (for a test that fails).
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.store.path().join("nats.log")).unwrap_or_default()
    }

    pub fn url(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    pub fn store(&self) -> &Path {
        self.store.path()
    }

    async fn spawn(&mut self) {
        let log = std::fs::File::options()
            .create(true)
            .append(true)
            .open(self.store.path().join("nats.log"))
            .expect("nats log file");
        let mut command = Command::new(NATS_SERVER_BIN);
        match &self.config {
            Some(config) => command.arg("-c").arg(config),
            None => command
                .args([
                    "-a",
                    "127.0.0.1",
                    "-p",
                    &self.port.to_string(),
                    "-js",
                    "-sd",
                ])
                .arg(self.store.path()),
        };
        let child = command
            .stdin(Stdio::null())
            .stdout(log.try_clone().expect("log clone"))
            .stderr(log)
            .spawn()
            .expect("spawning nats-server");
        self.child = Some(child);
        let deadline = Instant::now() + Duration::from_secs(20);
        while !super::connects(self.port).await {
            assert!(
                Instant::now() < deadline,
                "private nats-server did not start; its log:\n{}",
                self.log()
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// SIGKILL the server (its store dir stays).
    pub fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// Start again on the same port and store dir.
    pub async fn restart(&mut self) {
        self.kill();
        self.spawn().await;
    }

    /// Create a stream capturing `subject` with a 2-minute duplicate window.
    pub async fn create_stream(&self, name: &str, subject: &str) -> jetstream::stream::Stream {
        self.create_stream_as(async_nats::ConnectOptions::new(), name, subject)
            .await
    }

    /// [`create_stream`](Self::create_stream), connecting with `options`
    /// (TLS, credentials).
    pub async fn create_stream_as(
        &self,
        options: async_nats::ConnectOptions,
        name: &str,
        subject: &str,
    ) -> jetstream::stream::Stream {
        let client = options.connect(self.url()).await.unwrap_or_else(|e| {
            panic!("connecting to the private nats-server: {e}\n{}", self.log())
        });
        jetstream::new(client)
            .create_stream(jetstream::stream::Config {
                name: name.to_string(),
                subjects: vec![subject.to_string()],
                duplicate_window: Duration::from_secs(120),
                ..Default::default()
            })
            .await
            .expect("creating a JetStream stream")
    }
}

impl Drop for PrivateNats {
    fn drop(&mut self) {
        self.kill();
    }
}
