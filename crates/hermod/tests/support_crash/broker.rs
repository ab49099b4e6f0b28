//! The brokers the reliability suite breaks: each one a private process
//! (own port, own store, own process group) so that killing it never
//! disturbs the shared brokers or another test. [`Broker`] is the one
//! interface the scenarios use; the per-broker details live in `nats.rs`,
//! `amqp.rs` and `kafka.rs`.

use std::collections::HashMap;
use std::ffi::OsString;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use super::amqp::RabbitNode;
use super::kafka::Tansu;
use super::nats::NatsServer;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    Nats,
    Amqp,
    Kafka,
}

impl Kind {
    pub fn parse(s: &str) -> Option<Kind> {
        match s {
            "nats" => Some(Kind::Nats),
            "amqp" => Some(Kind::Amqp),
            "kafka" => Some(Kind::Kafka),
            _ => None,
        }
    }

    /// The recipient domain the seed routes to the broker.
    pub fn domain(self) -> &'static str {
        match self {
            Kind::Nats => "nats",
            Kind::Amqp => "amqp",
            Kind::Kafka => "kafka",
        }
    }
}

pub enum Broker {
    Nats(NatsServer),
    Amqp(RabbitNode),
    Kafka(Tansu),
}

impl Broker {
    /// Start a private broker below `dir` and create its destination.
    pub async fn start(kind: Kind, dir: &Path) -> Broker {
        let started = Instant::now();
        let broker = match kind {
            Kind::Nats => Broker::Nats(NatsServer::start(dir).await),
            Kind::Amqp => Broker::Amqp(RabbitNode::start(dir).await),
            Kind::Kafka => Broker::Kafka(Tansu::start(dir).await),
        };
        eprintln!(
            "private {} broker ready (destination created) after {:.1?}",
            kind.domain(),
            started.elapsed()
        );
        broker
    }

    pub fn kind(&self) -> Kind {
        match self {
            Broker::Nats(_) => Kind::Nats,
            Broker::Amqp(_) => Kind::Amqp,
            Broker::Kafka(_) => Kind::Kafka,
        }
    }

    fn daemon(&mut self) -> &mut Daemon {
        match self {
            Broker::Nats(b) => &mut b.daemon,
            Broker::Amqp(b) => &mut b.daemon,
            Broker::Kafka(b) => &mut b.daemon,
        }
    }

    /// Only JetStream drops a re-published id (its duplicate window);
    /// RabbitMQ and Kafka store every publish.
    pub fn deduplicates(&self) -> bool {
        matches!(self, Broker::Nats(_))
    }

    /// SIGKILL the whole broker process group: a crash, not a shutdown.
    pub fn kill9(&mut self) {
        self.daemon().kill9();
    }

    /// Start again on the same port and store; returns once it listens.
    pub fn restart(&mut self) {
        self.daemon().start();
    }

    /// The seed policy for this broker, pointed at this private broker, with
    /// its spools below `spool` and its logs below `dir`.
    pub fn policy(&self, dir: &Path, spool: &Path, smtp: SocketAddr, http: SocketAddr) -> String {
        let (file, subs) = match self {
            Broker::Nats(b) => ("a1-nats-legacy.lua", b.seed_substitutions()),
            Broker::Amqp(b) => ("b1-amqp-legacy.lua", b.seed_substitutions()),
            Broker::Kafka(b) => ("c1-kafka-legacy.lua", b.seed_substitutions()),
        };
        seed_policy(dir, spool, smtp, http, file, &subs)
    }

    /// How many messages the broker holds right now: the position the
    /// next publish will get in [`Contents`].
    pub async fn stored(&self) -> Result<u64, String> {
        match self {
            Broker::Nats(b) => b.stored().await,
            Broker::Amqp(b) => b.stored().await,
            Broker::Kafka(b) => b.stored().await,
        }
    }

    /// Read every message stored since the last call into `contents`.
    pub async fn refresh(&self, contents: &mut Contents) -> Result<(), String> {
        match self {
            Broker::Nats(b) => b.refresh(contents).await,
            Broker::Amqp(b) => b.refresh(contents).await,
            Broker::Kafka(b) => b.refresh(contents).await,
        }
    }
}

/// Seed `file` from `examples/` unchanged except for `subs` (broker address
/// and destination) and `retry_interval = '1s'`, so a test does not wait
/// the default minutes for a retry. Every substitution must match exactly
/// once: if the seed changes, the suite fails instead of silently testing
/// something else. The prelude is P0 with private ports and directory.
pub fn seed_policy(
    dir: &Path,
    spool: &Path,
    smtp: SocketAddr,
    http: SocketAddr,
    file: &str,
    subs: &[(&str, String)],
) -> String {
    let retry = (
        "kumo.make_queue_config { protocol",
        "kumo.make_queue_config { retry_interval = '1s', protocol".to_string(),
    );
    let mut scenario = crate::common::seed_section(file);
    for (from, to) in subs.iter().chain(std::iter::once(&retry)) {
        assert_eq!(
            scenario.matches(from).count(),
            1,
            "examples/{file}: expected {from:?} exactly once"
        );
        scenario = scenario.replace(from, to);
    }
    format!("{}{scenario}", prelude(dir, spool, smtp, http))
}

/// P0 with private ports and directory: spools below `spool`, local logs
/// below `dir`, the SMTP and HTTP listeners on `smtp` and `http`.
pub fn prelude(dir: &Path, spool: &Path, smtp: SocketAddr, http: SocketAddr) -> String {
    let (dir, spool) = (dir.display(), spool.display());
    format!(
        r#"kumo = require 'kumo'
local DIR = '{dir}'
kumo.on('pre_init', function()
  kumo.define_spool {{ name = 'data', path = '{spool}/data' }}
  kumo.define_spool {{ name = 'meta', path = '{spool}/meta' }}
  kumo.configure_local_logs {{ log_dir = DIR .. '/logs', max_segment_duration = '1s' }}
  kumo.start_esmtp_listener {{ listen = '{smtp}' }}
  kumo.start_http_listener {{ listen = '{http}' }}
end)
"#
    )
}

/// Everything read back from a broker so far, keyed by the Hermod id found
/// in the payload's `Received: ... id <id>` header.
#[derive(Default)]
pub struct Contents {
    /// For each id, the positions (0-based, in broker order) of its copies.
    pub positions: HashMap<String, Vec<u64>>,
    /// Messages whose id property (`Nats-Msg-Id`, AMQP `message_id`, Kafka
    /// header `hermod-message-id`) differs from the payload's id or is
    /// missing: those would defeat deduplication by id.
    pub id_mismatches: Vec<String>,
    /// Messages with no parsable Received id.
    pub unparsable: usize,
    /// Position of the next message to read.
    pub next: u64,
}

impl Contents {
    /// Record the message at `self.next` and advance.
    pub fn record(&mut self, payload: &[u8], id_property: Option<String>) {
        let pos = self.next;
        self.next += 1;
        let Some(id) = received_id(payload) else {
            self.unparsable += 1;
            return;
        };
        if id_property.as_deref() != Some(id.as_str()) {
            self.id_mismatches.push(format!(
                "position {pos}: payload id {id}, property {id_property:?}"
            ));
        }
        self.positions.entry(id).or_default().push(pos);
    }

    pub fn copies(&self) -> HashMap<String, usize> {
        self.positions
            .iter()
            .map(|(id, p)| (id.clone(), p.len()))
            .collect()
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

/// A broker process in its own process group, so a SIGKILL reaches its
/// helpers too (RabbitMQ's start script, beam, erl_child_setup). Output is
/// appended to one log across restarts.
pub struct Daemon {
    pub name: &'static str,
    pub program: PathBuf,
    pub args: Vec<OsString>,
    pub env: Vec<(String, OsString)>,
    pub addr: SocketAddr,
    pub log: PathBuf,
    pub startup: Duration,
    child: Option<Child>,
}

impl Daemon {
    pub fn new(name: &'static str, program: PathBuf, addr: SocketAddr, log: PathBuf) -> Daemon {
        Daemon {
            name,
            program,
            args: Vec::new(),
            env: Vec::new(),
            addr,
            log,
            startup: super::STARTUP,
            child: None,
        }
    }

    pub fn arg(mut self, a: impl Into<OsString>) -> Daemon {
        self.args.push(a.into());
        self
    }

    /// Spawn and wait until it accepts TCP connections on `addr`.
    pub fn start(&mut self) {
        use std::os::unix::process::CommandExt;
        assert!(self.child.is_none(), "{} is already running", self.name);
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.log)
            .expect("opening a broker log");
        let started = Instant::now();
        let child = Command::new(&self.program)
            .args(&self.args)
            .envs(self.env.iter().map(|(k, v)| (k, v)))
            .process_group(0)
            .stdin(Stdio::null())
            .stdout(log.try_clone().expect("cloning a log handle"))
            .stderr(log)
            .spawn()
            .unwrap_or_else(|e| panic!("spawning {} ({}): {e}", self.name, self.program.display()));
        // Held before the wait, so a start-up that panics still ends in Drop's kill.
        let child = self.child.insert(child);
        super::wait_listening(child, self.addr, self.name, &self.log, self.startup);
        eprintln!(
            "{} listening on {} after {:.1?}",
            self.name,
            self.addr,
            started.elapsed()
        );
    }

    /// The process group's leader (the spawned program), while running.
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(|c| c.id())
    }

    pub fn kill9(&mut self) {
        let mut child = self
            .child
            .take()
            .unwrap_or_else(|| panic!("{} is not running", self.name));
        let group = child.id() as libc::pid_t;
        // SAFETY: kill(2) with a negative pid signals the process group the
        // child leads (process_group(0) above); it touches no memory.
        unsafe { libc::kill(-group, libc::SIGKILL) };
        let _ = child.wait();
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        if self.child.is_some() {
            self.kill9();
        }
    }
}

/// Retry `attempt` until it succeeds or `within` passes: brokers accept
/// connections a moment before they can create queues and topics.
pub async fn retry<T, F, Fut>(what: &str, within: Duration, mut attempt: F) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<T, String>>,
{
    let deadline = Instant::now() + within;
    loop {
        match attempt().await {
            Ok(v) => return v,
            Err(e) if Instant::now() < deadline => {
                eprintln!("{what}: not yet ({e}); retrying");
                tokio::time::sleep(Duration::from_millis(250)).await;
            }
            Err(e) => panic!("{what}: {e}"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::{received_id, Contents};

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

    #[test]
    fn contents_flag_a_missing_or_different_id_property() {
        let id = "0123456789abcdef0123456789abcdef";
        let p = format!("Received: x\r\n  id {id}\r\n\r\nbody\r\n");
        let mut c = Contents::default();
        c.record(p.as_bytes(), Some(id.into()));
        c.record(p.as_bytes(), None);
        c.record(b"no header\r\n\r\n", Some(id.into()));
        assert_eq!(c.positions[id], vec![0, 1]);
        assert_eq!(c.id_mismatches.len(), 1);
        assert_eq!((c.unparsable, c.next), (1, 3));
    }
}
