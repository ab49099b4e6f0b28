//! A private nats-server with JetStream and a stream that captures a unique
//! subject with a 2-minute duplicate window, plus a core subscriber that
//! shows how often Hermod re-published an id.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use async_nats::jetstream::{self, stream};

use super::broker::{received_id, retry, Contents, Daemon};
use super::{free_port, unique, STARTUP};

const NATS_SERVER: &str = "/usr/sbin/nats-server";

pub struct NatsServer {
    pub daemon: Daemon,
    pub stream: String,
    pub subject: String,
}

impl NatsServer {
    /// Start on a free port with its JetStream store below `dir`, and
    /// create the stream.
    pub async fn start(dir: &Path) -> NatsServer {
        let store = dir.join("jetstream");
        std::fs::create_dir_all(&store).expect("creating the JetStream store dir");
        let port = free_port();
        let addr = format!("127.0.0.1:{port}")
            .parse()
            .expect("loopback address");
        let mut daemon = Daemon::new(
            "nats-server",
            PathBuf::from(NATS_SERVER),
            addr,
            dir.join("nats-server.log"),
        )
        .arg("-a")
        .arg("127.0.0.1")
        .arg("-p")
        .arg(port.to_string())
        .arg("-js")
        .arg("-sd")
        .arg(store);
        daemon.start();
        let server = NatsServer {
            daemon,
            stream: unique("CRASH"),
            subject: unique("crash").replace('_', "."),
        };
        // A re-publish of the same Nats-Msg-Id inside the window is acked
        // but not stored: that makes Hermod's at-least-once delivery
        // exactly-once in the stream.
        let s = &server;
        retry(
            "creating the JetStream stream",
            STARTUP,
            move || async move {
                let js = jetstream::new(s.client().await?);
                js.create_stream(stream::Config {
                    name: s.stream.clone(),
                    subjects: vec![s.subject.clone()],
                    duplicate_window: Duration::from_secs(120),
                    storage: stream::StorageType::File,
                    ..Default::default()
                })
                .await
                .map(|_| ())
                .map_err(|e| e.to_string())
            },
        )
        .await;
        server
    }

    pub fn url(&self) -> String {
        format!("nats://{}", self.daemon.addr)
    }

    async fn client(&self) -> Result<async_nats::Client, String> {
        async_nats::connect(self.url())
            .await
            .map_err(|e| e.to_string())
    }

    pub fn seed_substitutions(&self) -> Vec<(&'static str, String)> {
        vec![
            ("'127.0.0.1:4222'", format!("'{}'", self.daemon.addr)),
            (
                "subject = 'subject'",
                format!("subject = '{}'", self.subject),
            ),
        ]
    }

    async fn get_stream(&self) -> Result<jetstream::stream::Stream, String> {
        jetstream::new(self.client().await?)
            .get_stream(&self.stream)
            .await
            .map_err(|e| e.to_string())
    }

    pub async fn stored(&self) -> Result<u64, String> {
        let mut stream = self.get_stream().await?;
        let info = stream.info().await.map_err(|e| e.to_string())?;
        Ok(info.state.last_sequence)
    }

    /// Read by sequence number; position = sequence - 1.
    pub async fn refresh(&self, contents: &mut Contents) -> Result<(), String> {
        let last = self.stored().await?;
        let stream = self.get_stream().await?;
        for seq in contents.next + 1..=last {
            let msg = stream
                .get_raw_message(seq)
                .await
                .map_err(|e| e.to_string())?;
            let id = msg
                .headers
                .get(async_nats::header::NATS_MESSAGE_ID)
                .map(|v| v.as_str().to_string());
            contents.record(&msg.payload, id);
        }
        Ok(())
    }
}

/// A plain (non-JetStream) subscriber on the stream's subject. It sees every
/// publish, including the re-publishes the duplicate window drops, so it
/// shows whether the kills really made Hermod publish an id twice — that is,
/// whether "zero duplicated" was earned by deduplication rather than luck.
/// Diagnostic only: a core subscriber may miss messages (slow consumer).
pub struct PublishWatch {
    seen: std::sync::Arc<std::sync::Mutex<HashMap<String, usize>>>,
    task: tokio::task::JoinHandle<()>,
}

impl PublishWatch {
    pub async fn start(server: &NatsServer) -> PublishWatch {
        use futures::StreamExt;
        let client = server
            .client()
            .await
            .expect("connecting the publish watcher");
        let mut sub = client
            .subscribe(server.subject.clone())
            .await
            .expect("subscribing the publish watcher");
        // The subscription is registered once a round trip has completed.
        client.flush().await.expect("flushing the publish watcher");
        let seen = std::sync::Arc::new(std::sync::Mutex::new(HashMap::new()));
        let sink = seen.clone();
        let task = tokio::spawn(async move {
            let _client = client;
            while let Some(msg) = sub.next().await {
                if let Some(id) = received_id(&msg.payload) {
                    *sink.lock().unwrap().entry(id).or_insert(0usize) += 1;
                }
            }
        });
        PublishWatch { seen, task }
    }

    /// (publishes seen, ids published more than once).
    pub fn counts(&self) -> (usize, usize) {
        let seen = self.seen.lock().unwrap();
        (
            seen.values().sum(),
            seen.values().filter(|n| **n > 1).count(),
        )
    }
}

impl Drop for PublishWatch {
    fn drop(&mut self) {
        self.task.abort();
    }
}
