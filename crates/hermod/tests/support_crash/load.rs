//! Continuous SMTP load that survives the server being killed: each
//! connection sends one transaction after another, reconnects whenever the
//! connection breaks, and records an id only when it read the complete
//! `250 OK ids=<id>` reply — exactly the messages Hermod promised to keep.

use std::collections::HashSet;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};
use tokio::net::TcpStream;
use tokio::task::JoinHandle;

/// A server that stops answering must not hang the test.
const REPLY_TIMEOUT: Duration = Duration::from_secs(10);

#[derive(Default)]
struct Shared {
    stop: AtomicBool,
    accepted: Mutex<Vec<String>>,
    /// Transactions answered with anything but 250 (e.g. 421 while
    /// shutting down, 451 on a spool error).
    refused: AtomicU64,
    /// Connections that broke or could not be opened (the kills).
    broken: AtomicU64,
}

pub struct Load {
    shared: Arc<Shared>,
    tasks: Vec<JoinHandle<()>>,
}

#[derive(Debug)]
pub struct LoadReport {
    pub accepted: HashSet<String>,
    /// 250s received, counting an id twice if it was ever returned twice.
    pub replies_250: usize,
    pub refused: u64,
    pub broken: u64,
}

impl Load {
    /// `connections` clients sending to `rcpt`; with `pause`, each client
    /// waits that long between transactions (a paced load).
    pub fn start(
        addr: SocketAddr,
        connections: usize,
        rcpt: &str,
        pause: Option<Duration>,
    ) -> Load {
        let shared = Arc::new(Shared::default());
        let tasks = (0..connections)
            .map(|n| {
                let shared = shared.clone();
                let rcpt = rcpt.to_string();
                tokio::spawn(async move { client_loop(addr, n, rcpt, pause, shared).await })
            })
            .collect();
        Load { shared, tasks }
    }

    /// The ids acknowledged so far.
    pub fn accepted_now(&self) -> HashSet<String> {
        self.shared
            .accepted
            .lock()
            .unwrap()
            .iter()
            .cloned()
            .collect()
    }

    /// Ids acknowledged so far.
    pub fn accepted_count(&self) -> usize {
        self.shared.accepted.lock().unwrap().len()
    }

    /// Ids acknowledged so far, in the order their 250s arrived.
    pub fn accepted_ids(&self) -> Vec<String> {
        self.shared.accepted.lock().unwrap().clone()
    }

    /// Stop every client (each finishes or abandons its transaction) and
    /// return what was acknowledged.
    pub async fn stop(self) -> LoadReport {
        self.shared.stop.store(true, Ordering::SeqCst);
        for task in self.tasks {
            // A client blocked on a dead server gives up after REPLY_TIMEOUT.
            let _ = tokio::time::timeout(REPLY_TIMEOUT * 2, task).await;
        }
        let list = self.shared.accepted.lock().unwrap().clone();
        LoadReport {
            replies_250: list.len(),
            accepted: list.into_iter().collect(),
            refused: self.shared.refused.load(Ordering::SeqCst),
            broken: self.shared.broken.load(Ordering::SeqCst),
        }
    }
}

async fn client_loop(
    addr: SocketAddr,
    n: usize,
    rcpt: String,
    pause: Option<Duration>,
    shared: Arc<Shared>,
) {
    let mut seq = 0u64;
    while !shared.stop.load(Ordering::SeqCst) {
        let mut conn = match Conn::open(addr).await {
            Ok(c) => c,
            Err(_) => {
                shared.broken.fetch_add(1, Ordering::SeqCst);
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
        };
        while !shared.stop.load(Ordering::SeqCst) {
            seq += 1;
            match conn.send(&rcpt, n, seq).await {
                Ok(Outcome::Accepted(ids)) => shared.accepted.lock().unwrap().extend(ids),
                Ok(Outcome::Refused) => {
                    shared.refused.fetch_add(1, Ordering::SeqCst);
                    break;
                }
                Err(_) => {
                    shared.broken.fetch_add(1, Ordering::SeqCst);
                    break;
                }
            }
            if let Some(p) = pause {
                tokio::time::sleep(p).await;
            }
        }
    }
}

enum Outcome {
    Accepted(Vec<String>),
    Refused,
}

struct Conn {
    reader: BufReader<OwnedReadHalf>,
    writer: OwnedWriteHalf,
}

type Io<T> = Result<T, String>;

impl Conn {
    async fn open(addr: SocketAddr) -> Io<Conn> {
        let stream = tokio::time::timeout(REPLY_TIMEOUT, TcpStream::connect(addr))
            .await
            .map_err(|_| "connect timed out".to_string())?
            .map_err(|e| e.to_string())?;
        let (r, w) = stream.into_split();
        let mut c = Conn {
            reader: BufReader::new(r),
            writer: w,
        };
        c.expect(220).await?;
        c.write("EHLO crash.test\r\n").await?;
        c.expect(250).await?;
        Ok(c)
    }

    async fn write(&mut self, s: &str) -> Io<()> {
        self.writer
            .write_all(s.as_bytes())
            .await
            .map_err(|e| e.to_string())
    }

    /// Read one (possibly multi-line) reply: its code and last line.
    async fn reply(&mut self) -> Io<(u16, String)> {
        loop {
            let mut line = String::new();
            let n = tokio::time::timeout(REPLY_TIMEOUT, self.reader.read_line(&mut line))
                .await
                .map_err(|_| "reply timed out".to_string())?
                .map_err(|e| e.to_string())?;
            if n == 0 || !line.ends_with('\n') {
                return Err("connection closed".into());
            }
            let line = line.trim_end();
            let code = line
                .get(..3)
                .and_then(|c| c.parse().ok())
                .ok_or_else(|| format!("malformed reply {line:?}"))?;
            if line.as_bytes().get(3) != Some(&b'-') {
                return Ok((code, line.to_string()));
            }
        }
    }

    async fn expect(&mut self, want: u16) -> Io<String> {
        let (code, text) = self.reply().await?;
        if code == want {
            Ok(text)
        } else {
            Err(format!("expected {want}, got {text:?}"))
        }
    }

    async fn send(&mut self, rcpt: &str, n: usize, seq: u64) -> Io<Outcome> {
        // Pipelining the envelope keeps the load high with few round trips.
        self.write(&format!(
            "MAIL FROM:<load{n}@crash.test>\r\nRCPT TO:<{rcpt}>\r\nDATA\r\n"
        ))
        .await?;
        for want in [250, 250, 354] {
            let (code, text) = self.reply().await?;
            if code != want {
                if code == 250 || code == 354 {
                    return Err(format!("out of step: {text:?}"));
                }
                return Ok(Outcome::Refused);
            }
        }
        self.write(&format!(
            "From: <load{n}@crash.test>\r\nTo: <{rcpt}>\r\nSubject: crash {n}/{seq}\r\n\
             Message-ID: <{n}.{seq}@crash.test>\r\n\r\nconnection {n} message {seq}\r\n.\r\n"
        ))
        .await?;
        let (code, text) = self.reply().await?;
        if code != 250 {
            return Ok(Outcome::Refused);
        }
        let ids = text
            .split_once("ids=")
            .map(|(_, ids)| {
                ids.split(',')
                    .map(|s| s.trim().to_string())
                    .collect::<Vec<_>>()
            })
            .filter(|ids| !ids.is_empty() && ids.iter().all(|id| id.len() == 32))
            .ok_or_else(|| format!("250 without ids: {text:?}"))?;
        Ok(Outcome::Accepted(ids))
    }
}
