//! A private tansu (the Kafka-protocol broker of shared/tools/kafka-broker)
//! on its own port with its own SQLite store, and a one-partition topic
//! read back from the beginning with rdkafka.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;
use std::time::{Duration, Instant};

use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::message::{Headers, Message as _};
use rdkafka::{ClientConfig, Offset, TopicPartitionList};

use super::broker::{retry, Contents, Daemon};
use super::{free_port, unique, STARTUP};

const TIMEOUT: Duration = Duration::from_secs(10);

/// The broker binary, as `shared/tools/kafka-broker path` reports it
/// (shared/ sits next to the repository). scripts/services builds it.
pub fn tansu_binary() -> PathBuf {
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../../shared/tools/kafka-broker");
    let out = Command::new(&script)
        .arg("path")
        .output()
        .unwrap_or_else(|e| panic!("running {} path: {e}", script.display()));
    let bin = PathBuf::from(String::from_utf8_lossy(&out.stdout).trim());
    assert!(
        bin.is_file(),
        "tansu is not built at {}; run scripts/services (or {} install)",
        bin.display(),
        script.display()
    );
    bin
}

pub struct Tansu {
    pub daemon: Daemon,
    pub topic: String,
}

impl Tansu {
    pub async fn start(dir: &Path) -> Tansu {
        let bin = tansu_binary();
        let port = free_port();
        let url = format!("tcp://127.0.0.1:{port}");
        let addr = format!("127.0.0.1:{port}")
            .parse()
            .expect("loopback address");
        let mut daemon = Daemon::new("tansu", bin.clone(), addr, dir.join("tansu.log"))
            .arg("broker")
            .arg("--listener-url")
            .arg(&url)
            .arg("--advertised-listener-url")
            .arg(&url)
            .arg("--storage-engine")
            .arg(format!("sqlite:///{}", dir.join("tansu.db").display()));
        daemon.start();
        let tansu = Tansu {
            daemon,
            topic: unique("crash"),
        };
        tansu_command(
            &bin,
            "creating the Kafka topic",
            &[
                "topic",
                "create",
                &tansu.topic,
                "--partitions",
                "1",
                "--broker",
                &url,
            ],
        )
        .await;
        tansu
    }

    pub fn seed_substitutions(&self) -> Vec<(&'static str, String)> {
        vec![
            ("'localhost:9092'", format!("'{}'", self.daemon.addr)),
            ("topic = 'my.topic'", format!("topic = '{}'", self.topic)),
        ]
    }

    /// Read the topic in the background every 500 ms until [`Follower::take`].
    pub fn follow(&self) -> Follower {
        let contents = Arc::new(tokio::sync::Mutex::new(Contents::default()));
        let (shared, topic) = (contents.clone(), Topic::of(self));
        let task = tokio::spawn(async move {
            loop {
                let mut c = shared.lock().await;
                if let Err(e) = topic.refresh(&mut c).await {
                    eprintln!("kafka follower: {e}");
                }
                drop(c);
                tokio::time::sleep(Duration::from_millis(500)).await;
            }
        });
        Follower { contents, task }
    }

    pub async fn stored(&self) -> Result<u64, String> {
        Topic::of(self).stored().await
    }

    pub async fn refresh(&self, contents: &mut Contents) -> Result<(), String> {
        Topic::of(self).refresh(contents).await
    }
}

/// Run `tansu <args>` (a client command against a broker that may have
/// just started listening) until it succeeds, or panic after [`STARTUP`].
pub async fn tansu_command(bin: &Path, what: &str, args: &[&str]) {
    retry(what, STARTUP, move || async move {
        let out = tokio::process::Command::new(bin)
            .args(args)
            .output()
            .await
            .map_err(|e| e.to_string())?;
        if out.status.success() {
            Ok(())
        } else {
            Err(String::from_utf8_lossy(&out.stderr).into_owned())
        }
    })
    .await
}

pub struct Follower {
    contents: Arc<tokio::sync::Mutex<Contents>>,
    task: tokio::task::JoinHandle<()>,
}

impl Follower {
    /// Stop following and return what was read.
    pub async fn take(self) -> Contents {
        self.task.abort();
        let _ = self.task.await;
        let mut c = self.contents.lock().await;
        std::mem::take(&mut *c)
    }
}

/// What reading needs, detached from the broker process so a background
/// task can own it.
struct Topic {
    addr: String,
    name: String,
}

impl Topic {
    fn of(t: &Tansu) -> Topic {
        Topic {
            addr: t.daemon.addr.to_string(),
            name: t.topic.clone(),
        }
    }

    fn consumer(&self) -> Result<BaseConsumer, String> {
        ClientConfig::new()
            .set("bootstrap.servers", &self.addr)
            .set("group.id", unique("crash_reader"))
            .set("enable.auto.commit", "false")
            .create()
            .map_err(|e| e.to_string())
    }

    /// The high watermark: the offset the next record will get.
    pub async fn stored(&self) -> Result<u64, String> {
        let c = self.consumer()?;
        let topic = self.name.clone();
        tokio::task::spawn_blocking(move || {
            let (_, high) = c
                .fetch_watermarks(&topic, 0, TIMEOUT)
                .map_err(|e| e.to_string())?;
            Ok(high.max(0) as u64)
        })
        .await
        .map_err(|e| e.to_string())?
    }

    /// Read from `contents.next` towards the high watermark (position =
    /// offset); what a slow broker did not return yet is read next time.
    pub async fn refresh(&self, contents: &mut Contents) -> Result<(), String> {
        let high = self.stored().await?;
        if contents.next >= high {
            return Ok(());
        }
        let c = self.consumer()?;
        let (topic, from) = (self.name.clone(), contents.next);
        let records = tokio::task::spawn_blocking(move || read(&c, &topic, from, high))
            .await
            .map_err(|e| e.to_string())??;
        for (offset, payload, id) in records {
            contents.next = offset;
            contents.record(&payload, id);
        }
        Ok(())
    }
}

type Record = (u64, Vec<u8>, Option<String>);

fn read(c: &BaseConsumer, topic: &str, from: u64, high: u64) -> Result<Vec<Record>, String> {
    let mut tpl = TopicPartitionList::new();
    tpl.add_partition_offset(topic, 0, Offset::Offset(from as i64))
        .map_err(|e| e.to_string())?;
    c.assign(&tpl).map_err(|e| e.to_string())?;
    let deadline = Instant::now() + TIMEOUT;
    let mut out = Vec::new();
    let mut next = from;
    while next < high && Instant::now() < deadline {
        let Some(m) = c.poll(Duration::from_millis(200)) else {
            continue;
        };
        let m = match m {
            Ok(m) => m,
            // Keep what was read; the next refresh resumes after it.
            Err(e) if out.is_empty() => return Err(e.to_string()),
            Err(e) => {
                eprintln!("kafka reader: {e} at offset {next}; continuing later");
                break;
            }
        };
        let id = m.headers().and_then(|h| {
            h.iter()
                .find(|h| h.key == "hermod-message-id")
                .and_then(|h| h.value)
                .map(|v| String::from_utf8_lossy(v).into_owned())
        });
        next = m.offset() as u64 + 1;
        out.push((
            m.offset() as u64,
            m.payload().unwrap_or_default().to_vec(),
            id,
        ));
    }
    if next < high {
        eprintln!("kafka reader: at offset {next} of {high} after {TIMEOUT:?}; continuing later");
    }
    Ok(out)
}
