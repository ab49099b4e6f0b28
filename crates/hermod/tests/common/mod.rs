//! Shared support for the end-to-end tests of the `hermod` binary.
//!
//! Everything here talks to real processes over real sockets: the `hermod`
//! binary built by Cargo, the loopback brokers started by `scripts/services`
//! (NATS 4222, RabbitMQ 5672, Kafka 9092), and private `nats-server`s.
//!
//! - [`free_port`], [`unique`]: hermetic names and ports.
//! - [`test_p0`], [`seed_section`]: the acceptance prelude with free ports,
//!   and the unchanged scenario text of an `examples/*.lua` file.
//! - [`Server`]: a running `hermod serve` in its own tempdir (stop, kill -9,
//!   restart on the same data dir); [`Server::log_records`] reads its local log.
//! - [`smtp`]: a minimal SMTP client returning the ids Hermod assigned.
//! - [`brokers`]: readers for a NATS stream, an AMQP queue and a Kafka topic
//!   that start at the current end and filter by a test's marker.
//! - [`payload`]: splits Hermod's trace headers off a published payload.
//! - [`nats_jwt`]: an operator, account and user for NATS's JWT authentication.
//! - [`refusal`]: a refused publish is a named retry, and no secret is logged.
//! - [`pki`]: a throwaway CA with server and client certificates (broker TLS).
//! - [`postfix`]: a private Postfix instance with STARTTLS, as a receiving MTA.
//! - [`webdriver`]: a headless Chromium driven through chromedriver.
//! - [`scrape_metrics`], [`metric`]: a server's `/metrics` and one sample of it.
#![allow(dead_code)]

pub mod brokers;
pub mod nats_jwt;
pub mod payload;
pub mod pki;
pub mod postfix;
pub mod refusal;
pub mod smtp;
pub mod webdriver;

use std::fs::File;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use serde_json::Value;

/// How long a server may take to open its SMTP port.
pub const START_TIMEOUT: Duration = Duration::from_secs(30);
/// How long a SIGTERM'd server may take before it is SIGKILLed.
pub const STOP_TIMEOUT: Duration = Duration::from_secs(15);

/// Whether something accepts connections on 127.0.0.1:`port`.
async fn connects(port: u16) -> bool {
    connects_to(std::net::Ipv4Addr::LOCALHOST, port).await
}

async fn connects_to(ip: std::net::Ipv4Addr, port: u16) -> bool {
    tokio::net::TcpStream::connect((ip, port)).await.is_ok()
}

/// A port on 127.0.0.1 that was free a moment ago (bound and released).
///
/// Taken below Linux's ephemeral range (32768 and up), from a counter per
/// test process: a port the kernel handed out for `bind(0)` could be given
/// to another test's outgoing connection before the server bound it, and
/// start-up then failed with "Address already in use".
pub fn free_port() -> u16 {
    const LOW: u32 = 20_000;
    const SPAN: u32 = 12_000;
    static NEXT: AtomicU64 = AtomicU64::new(0);
    let start = std::process::id() % SPAN;
    for _ in 0..SPAN {
        let n = NEXT.fetch_add(1, Ordering::Relaxed) as u32;
        let port = (LOW + (start + n) % SPAN) as u16;
        if std::net::TcpListener::bind(("127.0.0.1", port)).is_ok() {
            return port;
        }
    }
    panic!("no free port on 127.0.0.1 between {LOW} and {}", LOW + SPAN)
}

/// A name no other test (or earlier run) uses: `<prefix>_<pid>_<nanos>_<n>`.
pub fn unique(prefix: &str) -> String {
    static N: AtomicU64 = AtomicU64::new(0);
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or_default();
    format!(
        "{prefix}_{}_{nanos}_{}",
        std::process::id(),
        N.fetch_add(1, Ordering::Relaxed)
    )
}

/// The P0 harness prelude (examples/README.md describes it), verbatim except for
/// the two listen addresses, so parallel tests do not fight over 2025/8000.
pub fn test_p0(smtp_port: u16, http_port: u16) -> String {
    const P0: &str = r#"kumo = require 'kumo'                        -- seeds use a global `kumo`
local DIR = os.getenv 'ACCEPT_DIR' or '/tmp/kumo-accept'
kumo.on('pre_init', function()
  kumo.define_spool { name = 'data', path = DIR .. '/spool/data' }
  kumo.define_spool { name = 'meta', path = DIR .. '/spool/meta' }
  kumo.configure_local_logs { log_dir = DIR .. '/logs', max_segment_duration = '1s' }
  kumo.start_esmtp_listener { listen = '127.0.0.1:2025' }
  kumo.start_http_listener { listen = '127.0.0.1:8000' }
end)
"#;
    P0.replace("127.0.0.1:2025", &format!("127.0.0.1:{smtp_port}"))
        .replace("127.0.0.1:8000", &format!("127.0.0.1:{http_port}"))
}

/// The admin and dashboard tests' policy: every domain delivers into `<ACCEPT_DIR>/maildir/<domain>`, except
/// `broken.example`, whose maildir cannot be written and whose retries are
/// an hour apart (its messages wait in their scheduled queue). `api`/`s3cret` may use the
/// HTTP API from anywhere.
pub const ADMIN_POLICY: &str = r#"
kumo.on('get_queue_config', function(domain, tenant, campaign, routing_domain)
  local path = os.getenv('ACCEPT_DIR') .. '/maildir/{{ domain }}'
  if domain == 'broken.example' then path = '/dev/null/maildir' end
  return kumo.make_queue_config {
    retry_interval = '1h', max_retry_interval = '1h',
    protocol = { maildir_path = path },
  }
end)
kumo.on('http_server_validate_auth_basic', function(user, password)
  return user == 'api' and password == 's3cret'
end)
"#;

/// The repository's `examples/` directory.
pub fn examples_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../examples")
}

/// The scenario part of `examples/<file>`: everything after the P0 block,
/// i.e. after the first `\nend)\n` that follows `kumo.on('pre_init'`.
pub fn seed_section(example_file: &str) -> String {
    let path = examples_dir().join(example_file);
    let text = std::fs::read_to_string(&path)
        .unwrap_or_else(|e| panic!("reading {}: {e}", path.display()));
    let start = text
        .find("kumo.on('pre_init'")
        .unwrap_or_else(|| panic!("{example_file} has no P0 pre_init block"));
    let end = text[start..]
        .find("\nend)\n")
        .unwrap_or_else(|| panic!("{example_file}: P0 pre_init block is not closed"));
    text[start + end + "\nend)\n".len()..].to_string()
}

/// How to launch a [`Server`].
#[derive(Clone, Debug)]
pub struct ServerConfig {
    /// Lua appended to the P0 prelude (or the whole policy when `with_p0` is false).
    pub scenario: String,
    /// Prepend [`test_p0`] with this server's ports.
    pub with_p0: bool,
    /// Extra environment for the process (ACCEPT_DIR and HERMOD_LOG are always set).
    pub env: Vec<(String, String)>,
    /// Extra `hermod serve` arguments.
    pub args: Vec<String>,
    /// The SMTP listener's address (several loopback addresses stand for
    /// several MX hosts) and, when set, its port instead of a free one.
    pub smtp_ip: std::net::Ipv4Addr,
    pub smtp_port: Option<u16>,
    /// More `start_esmtp_listener` keys for the P0 prelude, e.g.
    /// `trace_headers = { received_header = false }`.
    pub listener_extra: String,
    /// More `define_spool` keys for both P0 spools, e.g. `min_free_space = '1%'`.
    pub spool_extra: String,
}

impl ServerConfig {
    /// `test_p0` followed by `scenario`.
    pub fn with_p0(scenario: &str) -> Self {
        Self {
            scenario: scenario.to_string(),
            with_p0: true,
            env: Vec::new(),
            args: Vec::new(),
            smtp_ip: std::net::Ipv4Addr::LOCALHOST,
            smtp_port: None,
            listener_extra: String::new(),
            spool_extra: String::new(),
        }
    }

    pub fn env(mut self, key: &str, value: &str) -> Self {
        self.env.push((key.into(), value.into()));
        self
    }
}

/// A running `hermod serve` with its own tempdir as data dir and ACCEPT_DIR.
/// Dropping it sends SIGTERM, then SIGKILL after [`STOP_TIMEOUT`].
pub struct Server {
    dir: tempfile::TempDir,
    cfg: ServerConfig,
    policy: PathBuf,
    pub smtp_port: u16,
    pub http_port: u16,
    child: Option<Child>,
}

impl Server {
    /// Start `test_p0 + scenario` on free ports and wait until SMTP answers.
    pub async fn start(scenario: &str) -> Server {
        Self::launch(ServerConfig::with_p0(scenario)).await
    }

    pub async fn launch(cfg: ServerConfig) -> Server {
        let dir = tempfile::Builder::new()
            .prefix("hermod-e2e")
            .tempdir()
            .expect("creating a tempdir");
        let smtp_port = cfg.smtp_port.unwrap_or_else(free_port);
        let http_port = free_port();
        let policy_text = if cfg.with_p0 {
            let listen = format!("listen = '{}:{smtp_port}'", cfg.smtp_ip);
            let p0 = test_p0(smtp_port, http_port).replace(
                &format!("listen = '127.0.0.1:{smtp_port}'"),
                &if cfg.listener_extra.is_empty() {
                    listen
                } else {
                    format!("{listen}, {}", cfg.listener_extra)
                },
            );
            let p0 = if cfg.spool_extra.is_empty() {
                p0
            } else {
                p0.replace(
                    "/spool/data' }",
                    &format!("/spool/data', {} }}", cfg.spool_extra),
                )
                .replace(
                    "/spool/meta' }",
                    &format!("/spool/meta', {} }}", cfg.spool_extra),
                )
            };
            format!("{p0}\n{}", cfg.scenario)
        } else {
            cfg.scenario.clone()
        };
        let policy = dir.path().join("policy.lua");
        std::fs::write(&policy, policy_text).expect("writing the policy");
        let mut server = Server {
            dir,
            cfg,
            policy,
            smtp_port,
            http_port,
            child: None,
        };
        server.spawn().await;
        server
    }

    /// The data dir, which is also ACCEPT_DIR (spool, logs, stderr live here).
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    pub fn log_dir(&self) -> PathBuf {
        self.dir().join("logs")
    }

    pub fn stderr_path(&self) -> PathBuf {
        self.dir().join("hermod.stderr")
    }

    /// Everything the process(es) wrote to stderr so far.
    pub fn stderr(&self) -> String {
        std::fs::read_to_string(self.stderr_path()).unwrap_or_default()
    }

    /// For each start so far, how many messages `hermod serve` re-queued from
    /// the spool (its "spool enumerated" line), oldest start first.
    pub fn enumerated_per_start(&self) -> Vec<usize> {
        strip_ansi(&self.stderr())
            .lines()
            .filter(|l| l.contains("spool enumerated"))
            .filter_map(|l| {
                let v = l.split("messages=").nth(1)?;
                v.split(|c: char| !c.is_ascii_digit()).next()?.parse().ok()
            })
            .collect()
    }

    /// The last few KB of stderr, for assertion messages.
    pub fn stderr_tail(&self) -> String {
        tail(&self.stderr(), 4000).to_string()
    }

    pub fn smtp_addr(&self) -> std::net::SocketAddr {
        std::net::SocketAddr::from((self.cfg.smtp_ip, self.smtp_port))
    }

    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(|c| c.id())
    }

    async fn spawn(&mut self) {
        let stderr = File::options()
            .create(true)
            .append(true)
            .open(self.stderr_path())
            .expect("opening the stderr file");
        let stdout = stderr.try_clone().expect("cloning the stderr file");
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_hermod"));
        cmd.arg("serve")
            .arg("--policy")
            .arg(&self.policy)
            .arg("--data-dir")
            .arg(self.dir.path())
            .args(&self.cfg.args)
            .env("ACCEPT_DIR", self.dir.path())
            .env("HERMOD_LOG", "info")
            .env("NO_COLOR", "1")
            .stdin(Stdio::null())
            .stdout(stdout)
            .stderr(stderr);
        for (k, v) in &self.cfg.env {
            cmd.env(k, v);
        }
        self.child = Some(cmd.spawn().expect("spawning hermod"));
        self.wait_ready().await;
    }

    async fn wait_ready(&mut self) {
        let deadline = Instant::now() + START_TIMEOUT;
        loop {
            if let Some(child) = self.child.as_mut() {
                if let Ok(Some(status)) = child.try_wait() {
                    self.child = None;
                    panic!(
                        "hermod exited during start-up ({status}); stderr:\n{}",
                        self.stderr()
                    );
                }
            }
            // The P0 prelude starts the HTTP listener after the SMTP one: a
            // start-up that fails there (its port taken, say) must show up
            // here with stderr, not as a reset in the test's first session.
            if connects_to(self.cfg.smtp_ip, self.smtp_port).await
                && (!self.cfg.with_p0 || connects(self.http_port).await)
            {
                return;
            }
            if Instant::now() > deadline {
                panic!(
                    "hermod did not open SMTP port {} (and HTTP port {} with P0) within {START_TIMEOUT:?}; stderr:\n{}",
                    self.smtp_port,
                    self.http_port,
                    self.stderr()
                );
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// SIGTERM and wait (SIGKILL after [`STOP_TIMEOUT`]). Returns the exit status.
    pub async fn stop(&mut self) -> Option<ExitStatus> {
        let mut child = self.child.take()?;
        signal(child.id(), "TERM");
        let deadline = Instant::now() + STOP_TIMEOUT;
        loop {
            match child.try_wait() {
                Ok(Some(status)) => return Some(status),
                Ok(None) if Instant::now() < deadline => {
                    tokio::time::sleep(Duration::from_millis(50)).await
                }
                _ => {
                    let _ = child.kill();
                    return child.wait().ok();
                }
            }
        }
    }

    /// SIGKILL: no graceful shutdown at all.
    pub fn kill9(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Start again (stopping first if running) on the same data dir, policy and ports.
    pub async fn restart(&mut self) {
        self.stop().await;
        self.spawn().await;
    }

    /// Every record of the local log, via `hermod logs tail --json`.
    pub fn log_records(&self) -> Vec<Value> {
        read_log_records(&self.log_dir())
    }

    /// Poll the local log until `done(records)` holds; panics after `timeout`
    /// with the record types seen and the server's stderr.
    pub async fn wait_for_records(
        &self,
        timeout: Duration,
        what: &str,
        done: impl Fn(&[Value]) -> bool,
    ) -> Vec<Value> {
        let deadline = Instant::now() + timeout;
        loop {
            let records = self.log_records();
            if done(&records) {
                return records;
            }
            if Instant::now() > deadline {
                let summary: Vec<String> = records.iter().map(summarize).collect();
                panic!(
                    "timed out after {timeout:?} waiting for {what}; {} records:\n{}\nstderr:\n{}",
                    records.len(),
                    summary.join("\n"),
                    tail(&self.stderr(), 4000)
                );
            }
            tokio::time::sleep(Duration::from_millis(250)).await;
        }
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let Some(mut child) = self.child.take() else {
            return;
        };
        signal(child.id(), "TERM");
        let deadline = Instant::now() + STOP_TIMEOUT;
        while Instant::now() < deadline {
            if let Ok(Some(_)) = child.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        let _ = child.kill();
        let _ = child.wait();
    }
}

/// Send a signal by name to one process id (the ones these helpers spawned).
pub fn signal(pid: u32, name: &str) {
    let _ = Command::new("kill")
        .arg(format!("-{name}"))
        .arg(pid.to_string())
        .status();
}

/// Lines of a local log directory, oldest first, via the binary's own
/// reader: JSON records, or the text of `per_record` templates.
pub fn read_log_lines(dir: &Path) -> Vec<String> {
    if !dir.exists() {
        return Vec::new();
    }
    let out = Command::new(env!("CARGO_BIN_EXE_hermod"))
        .args(["logs", "tail", "--json", "--dir"])
        .arg(dir)
        .output()
        .expect("running hermod logs tail");
    assert!(
        out.status.success(),
        "hermod logs tail failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter(|l| !l.trim().is_empty())
        .map(str::to_string)
        .collect()
}

/// Records of a local log directory, oldest first.
pub fn read_log_records(dir: &Path) -> Vec<Value> {
    read_log_lines(dir)
        .iter()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("bad log line {l:?}: {e}")))
        .collect()
}

/// Records of `kind` (`"Reception"`, `"Delivery"`, ...) whose id is in `ids`.
pub fn records_of<'a>(
    records: &'a [Value],
    kind: &str,
    ids: &std::collections::HashSet<String>,
) -> Vec<&'a Value> {
    records
        .iter()
        .filter(|r| r["type"] == kind && r["id"].as_str().is_some_and(|id| ids.contains(id)))
        .collect()
}

/// `type id code content` of a record, for failure messages.
pub fn summarize(r: &Value) -> String {
    format!(
        "{} {} {} {}",
        r["type"].as_str().unwrap_or("?"),
        r["id"].as_str().unwrap_or("?"),
        r["response"]["code"],
        r["response"]["content"]
    )
}

/// Remove terminal colour sequences (`ESC [ ... m`).
pub fn strip_ansi(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    let mut chars = s.chars();
    while let Some(c) = chars.next() {
        if c == '\u{1b}' {
            for c in chars.by_ref() {
                if c.is_ascii_alphabetic() {
                    break;
                }
            }
        } else {
            out.push(c);
        }
    }
    out
}

fn tail(s: &str, max: usize) -> &str {
    let mut start = s.len().saturating_sub(max);
    while !s.is_char_boundary(start) {
        start += 1;
    }
    &s[start..]
}

/// Poll `probe` until it returns `Some`, or panic with `what` after `timeout`.
pub async fn eventually<T, F, Fut>(timeout: Duration, what: &str, mut probe: F) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(v) = probe().await {
            return v;
        }
        assert!(
            Instant::now() < deadline,
            "timed out after {timeout:?} waiting for {what}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// The Prometheus text of `/metrics` on 127.0.0.1:`http_port`.
pub async fn scrape_metrics(http_port: u16) -> String {
    // reqwest is built without a default TLS provider.
    let _ = rustls::crypto::ring::default_provider().install_default();
    let resp = reqwest::get(format!("http://127.0.0.1:{http_port}/metrics"))
        .await
        .expect("GET /metrics");
    assert!(
        resp.status().is_success(),
        "GET /metrics: {}",
        resp.status()
    );
    resp.text().await.expect("metrics body")
}

/// The value of the sample line that starts with `series ` (name and labels
/// exactly as written, e.g. `ready_count{service="x"}`).
pub fn metric(text: &str, series: &str) -> Option<f64> {
    text.lines()
        .find_map(|l| l.strip_prefix(series)?.strip_prefix(' '))
        .and_then(|v| v.split_whitespace().next()?.parse().ok())
}
