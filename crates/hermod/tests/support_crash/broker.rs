//! A private nats-server with JetStream (its own port and store directory,
//! so killing it never disturbs another test), and a reader that counts
//! which Hermod ids a stream holds.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use async_nats::jetstream::{self, stream};

use super::{free_port, wait_listening, STARTUP};

const NATS_SERVER: &str = "/usr/sbin/nats-server";

pub struct NatsServer {
    child: Option<Child>,
    pub port: u16,
    store: PathBuf,
    log: PathBuf,
}

impl NatsServer {
    /// Start on a free port with its JetStream store below `dir`.
    pub fn start(dir: &Path) -> NatsServer {
        let store = dir.join("jetstream");
        std::fs::create_dir_all(&store).expect("creating the JetStream store dir");
        let mut server = NatsServer {
            child: None,
            port: free_port(),
            store,
            log: dir.join("nats-server.log"),
        };
        server.restart();
        server
    }

    pub fn addr(&self) -> SocketAddr {
        format!("127.0.0.1:{}", self.port).parse().unwrap()
    }

    pub fn url(&self) -> String {
        format!("nats://127.0.0.1:{}", self.port)
    }

    /// (Re)start on the same port and store directory.
    pub fn restart(&mut self) {
        assert!(self.child.is_none(), "nats-server is already running");
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.log)
            .expect("opening the nats-server log");
        let mut child = Command::new(NATS_SERVER)
            .args([
                "-a",
                "127.0.0.1",
                "-p",
                &self.port.to_string(),
                "-js",
                "-sd",
            ])
            .arg(&self.store)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("spawning nats-server");
        wait_listening(&mut child, self.addr(), "nats-server", &self.log);
        self.child = Some(child);
    }

    /// SIGKILL: the broker vanishes mid-conversation, as in a crash.
    pub fn kill9(&mut self) {
        let mut child = self.child.take().expect("nats-server is not running");
        child.kill().expect("SIGKILL nats-server");
        child.wait().expect("reaping nats-server");
    }
}

impl Drop for NatsServer {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// Create a file-backed stream capturing `subject` with a 2 minute
/// duplicate window: a re-publish of the same Nats-Msg-Id inside it is
/// acknowledged but not stored, which is what makes at-least-once delivery
/// from Hermod exactly-once in the stream.
pub async fn create_stream(server: &NatsServer, name: &str, subject: &str) {
    let deadline = Instant::now() + STARTUP;
    loop {
        let attempt = async {
            let client = async_nats::connect(server.url()).await?;
            let js = jetstream::new(client);
            js.create_stream(stream::Config {
                name: name.to_string(),
                subjects: vec![subject.to_string()],
                duplicate_window: Duration::from_secs(120),
                storage: stream::StorageType::File,
                ..Default::default()
            })
            .await?;
            Ok::<(), async_nats::Error>(())
        };
        match attempt.await {
            Ok(()) => return,
            // JetStream needs a moment after the port opens.
            Err(e) if Instant::now() < deadline => {
                eprintln!("stream not created yet ({e}); retrying");
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
            Err(e) => panic!("creating stream {name}: {e}"),
        }
    }
}

/// Everything read from the stream so far, keyed by the Hermod id found in
/// the payload's `Received: ... id <id>` header.
#[derive(Default)]
pub struct StreamContents {
    pub copies: HashMap<String, usize>,
    /// Messages whose Nats-Msg-Id header differs from the payload's id
    /// (or is missing): those would defeat deduplication.
    pub msg_id_mismatches: Vec<String>,
    /// Messages with no parsable Received id.
    pub unparsable: usize,
    next_seq: u64,
}

impl StreamContents {
    /// Read every message stored since the last call.
    pub async fn refresh(&mut self, url: &str, stream_name: &str) -> Result<(), async_nats::Error> {
        let client = async_nats::connect(url).await?;
        let js = jetstream::new(client);
        let mut stream = js.get_stream(stream_name).await?;
        let last = stream.info().await?.state.last_sequence;
        let first = self.next_seq.max(1);
        for seq in first..=last {
            let msg = stream.get_raw_message(seq).await?;
            let header = msg
                .headers
                .get(async_nats::header::NATS_MESSAGE_ID)
                .map(|v| v.as_str().to_string());
            match received_id(&msg.payload) {
                Some(id) => {
                    if header.as_deref() != Some(id.as_str()) {
                        self.msg_id_mismatches.push(format!(
                            "seq {seq}: payload id {id}, Nats-Msg-Id {header:?}"
                        ));
                    }
                    *self.copies.entry(id).or_default() += 1;
                }
                None => self.unparsable += 1,
            }
            self.next_seq = seq + 1;
        }
        Ok(())
    }
}

/// The id in Hermod's own `Received:` header (`\r\n  id <32 hex>\r\n`).
pub fn received_id(payload: &[u8]) -> Option<String> {
    let text = std::str::from_utf8(payload).ok()?;
    let head = text.split("\r\n\r\n").next()?;
    head.lines()
        .map(str::trim)
        .find_map(|l| l.strip_prefix("id "))
        .map(|id| id.trim_end_matches(';').to_string())
        .filter(|id| id.len() == 32 && id.bytes().all(|b| b.is_ascii_hexdigit()))
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
    pub async fn start(server: &NatsServer, subject: &str) -> PublishWatch {
        use futures::StreamExt;
        let client = async_nats::connect(server.url())
            .await
            .expect("connecting the publish watcher");
        let mut sub = client
            .subscribe(subject.to_string())
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

#[cfg(test)]
mod tests {
    use super::received_id;

    #[test]
    fn received_id_is_read_from_hermods_trace_header() {
        let p = b"Received: from x (127.0.0.1)\r\n  by h (Hermod 0.1)\r\n  with ESMTP\r\n  id 0123456789abcdef0123456789abcdef\r\n  for <u@nats>;\r\n  date\r\nSubject: s\r\n\r\nid 1\r\n";
        assert_eq!(
            received_id(p).as_deref(),
            Some("0123456789abcdef0123456789abcdef")
        );
        assert_eq!(
            received_id(b"Subject: s\r\n\r\nid 0123456789abcdef0123456789abcdef\r\n"),
            None
        );
    }
}
