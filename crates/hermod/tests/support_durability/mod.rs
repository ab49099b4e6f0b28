//! Support for end-to-end tests that run the real `hermod` binary: a
//! server guard (spawn, SIGTERM, kill -9, restart on the same directory),
//! a small SMTP client over TCP, and a reader for local log segments.
#![allow(dead_code)]

use std::collections::HashSet;
use std::io::Read;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};
use tokio::net::TcpStream;

/// Upper bound for any single wait (start-up, a reply, a shutdown).
pub const STEP: Duration = Duration::from_secs(30);

pub fn hermod_bin() -> &'static str {
    env!("CARGO_BIN_EXE_hermod")
}

// Ports and names come from `common`, which every test binary including
// this module also includes: one allocator per process, so two support
// modules cannot hand the same port to two servers.
pub use crate::common::{free_port, unique};

/// P0 with the listen addresses and spool path taken from the environment
/// the guard sets, so parallel tests never share a port or a directory.
pub const PRELUDE: &str = r#"
kumo = require 'kumo'
local DIR = os.getenv 'ACCEPT_DIR'
local SPOOL = os.getenv 'SPOOL_DIR' or (DIR .. '/spool')
kumo.on('pre_init', function()
  kumo.define_spool { name = 'data', path = SPOOL .. '/data' }
  kumo.define_spool { name = 'meta', path = SPOOL .. '/meta' }
  kumo.configure_local_logs { log_dir = DIR .. '/logs', max_segment_duration = '1s' }
  kumo.start_esmtp_listener { listen = os.getenv 'SMTP_LISTEN' }
  kumo.start_http_listener { listen = os.getenv 'HTTP_LISTEN' }
end)
"#;

/// A running `hermod serve`; killed (SIGKILL) on drop if still alive.
pub struct Server {
    child: Option<Child>,
    /// ACCEPT_DIR of the policy: spool, logs, maildir live below it.
    pub dir: PathBuf,
    pub smtp: SocketAddr,
    pub http: SocketAddr,
    stderr: PathBuf,
}

impl Server {
    /// Write `policy` (PRELUDE is not added) to `<dir>/policy.lua` and start
    /// `hermod serve` on fresh ports; returns once both listeners answer.
    pub fn start(dir: &Path, policy: &str, env: &[(&str, &str)]) -> Server {
        std::fs::create_dir_all(dir).expect("creating the test dir");
        let policy_path = dir.join("policy.lua");
        std::fs::write(&policy_path, policy).expect("writing the policy");
        let smtp: SocketAddr = format!("127.0.0.1:{}", free_port()).parse().unwrap();
        let http: SocketAddr = format!("127.0.0.1:{}", free_port()).parse().unwrap();
        let stderr = dir.join(format!("hermod-{}.stderr", unique("run")));
        let err_file = std::fs::File::create(&stderr).expect("creating the stderr file");
        let mut cmd = Command::new(hermod_bin());
        cmd.arg("serve")
            .arg("--policy")
            .arg(&policy_path)
            .arg("--data-dir")
            .arg(dir.join("data"))
            .env("ACCEPT_DIR", dir)
            .env("SMTP_LISTEN", smtp.to_string())
            .env("HTTP_LISTEN", http.to_string())
            .env("HERMOD_LOG", "info")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(err_file);
        for (k, v) in env {
            cmd.env(k, v);
        }
        let child = cmd.spawn().expect("spawning hermod");
        let mut server = Server {
            child: Some(child),
            dir: dir.to_path_buf(),
            smtp,
            http,
            stderr,
        };
        server.wait_listening();
        server
    }

    fn wait_listening(&mut self) {
        let deadline = Instant::now() + STEP;
        for addr in [self.smtp, self.http] {
            loop {
                if std::net::TcpStream::connect_timeout(&addr, Duration::from_millis(200)).is_ok() {
                    break;
                }
                if let Some(status) = self.child_mut().try_wait().expect("polling hermod") {
                    panic!(
                        "hermod exited during start-up ({status}); stderr:\n{}",
                        self.stderr_text()
                    );
                }
                assert!(
                    Instant::now() < deadline,
                    "hermod did not listen on {addr} within {STEP:?}; stderr:\n{}",
                    self.stderr_text()
                );
                std::thread::sleep(Duration::from_millis(50));
            }
        }
    }

    fn child_mut(&mut self) -> &mut Child {
        self.child.as_mut().expect("server already stopped")
    }

    pub fn pid(&self) -> u32 {
        self.child.as_ref().expect("server already stopped").id()
    }

    pub fn stderr_text(&self) -> String {
        std::fs::read_to_string(&self.stderr).unwrap_or_default()
    }

    pub fn logs_dir(&self) -> PathBuf {
        self.dir.join("logs")
    }

    pub fn base_url(&self) -> String {
        format!("http://{}", self.http)
    }

    /// SIGTERM, then wait (bounded) for a clean exit.
    pub fn sigterm(&mut self) -> ExitStatus {
        let status = Command::new("kill")
            .arg("-TERM")
            .arg(self.pid().to_string())
            .status()
            .expect("running kill");
        assert!(status.success(), "kill -TERM failed");
        self.wait_exit()
    }

    /// SIGKILL: no chance to flush anything.
    pub fn kill9(&mut self) {
        let mut child = self.child.take().expect("server already stopped");
        child.kill().expect("SIGKILL hermod");
        child.wait().expect("reaping hermod");
    }

    fn wait_exit(&mut self) -> ExitStatus {
        let deadline = Instant::now() + STEP;
        loop {
            if let Some(status) = self.child_mut().try_wait().expect("polling hermod") {
                self.child = None;
                return status;
            }
            if Instant::now() >= deadline {
                let text = self.stderr_text();
                self.kill9();
                panic!("hermod did not exit within {STEP:?} of SIGTERM; stderr:\n{text}");
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// One SMTP reply: code and the text of every line joined by '\n'.
#[derive(Debug, Clone)]
pub struct Reply {
    pub code: u16,
    pub text: String,
}

impl Reply {
    /// Spool ids named in a `250 OK ids=...` reply to DATA.
    pub fn ids(&self) -> Vec<String> {
        self.text
            .split_once("ids=")
            .map(|(_, ids)| ids.split_whitespace().map(str::to_string).collect())
            .unwrap_or_default()
    }
}

/// A minimal SMTP client; every read is bounded by `STEP`.
pub struct Smtp {
    reader: BufReader<OwnedReadHalf>,
    writer: OwnedWriteHalf,
}

impl Smtp {
    /// Connect and read the banner (which must be 220).
    pub async fn connect(addr: SocketAddr) -> Smtp {
        let (s, banner) = Smtp::try_connect(addr)
            .await
            .expect("connect to the SMTP listener");
        assert_eq!(banner.code, 220, "banner: {banner:?}");
        s
    }

    /// Connect and return the client with its banner, whatever its code.
    pub async fn try_connect(addr: SocketAddr) -> std::io::Result<(Smtp, Reply)> {
        let stream = tokio::time::timeout(STEP, TcpStream::connect(addr))
            .await
            .map_err(|_| {
                std::io::Error::new(std::io::ErrorKind::TimedOut, "connect timed out")
            })??;
        let (r, w) = stream.into_split();
        let mut s = Smtp {
            reader: BufReader::new(r),
            writer: w,
        };
        let banner = s.try_read_reply().await?;
        Ok((s, banner))
    }

    pub async fn read_reply(&mut self) -> Reply {
        self.try_read_reply().await.expect("reading an SMTP reply")
    }

    /// A reply, or an error if the peer closed, timed out or sent garbage.
    pub async fn try_read_reply(&mut self) -> std::io::Result<Reply> {
        use std::io::{Error, ErrorKind};
        let mut text = Vec::new();
        loop {
            let mut line = String::new();
            let n = tokio::time::timeout(STEP, self.reader.read_line(&mut line))
                .await
                .map_err(|_| Error::new(ErrorKind::TimedOut, "SMTP reply timed out"))??;
            if n == 0 {
                return Err(Error::new(ErrorKind::UnexpectedEof, "connection closed"));
            }
            let line = line.trim_end();
            let code: u16 = line
                .get(..3)
                .and_then(|c| c.parse().ok())
                .ok_or_else(|| Error::new(ErrorKind::InvalidData, format!("bad line {line:?}")))?;
            text.push(line.get(4..).unwrap_or("").to_string());
            if line.as_bytes().get(3) != Some(&b'-') {
                return Ok(Reply {
                    code,
                    text: text.join("\n"),
                });
            }
        }
    }

    pub async fn cmd(&mut self, line: &str) -> Reply {
        self.try_cmd(line).await.expect("SMTP command")
    }

    pub async fn try_cmd(&mut self, line: &str) -> std::io::Result<Reply> {
        self.writer
            .write_all(format!("{line}\r\n").as_bytes())
            .await?;
        self.try_read_reply().await
    }

    pub async fn ehlo(&mut self) {
        let r = self.cmd("EHLO client.test").await;
        assert_eq!(r.code, 250, "EHLO: {r:?}");
    }

    /// MAIL, RCPT(s), DATA, body; returns the reply to the final dot.
    /// Panics on an unexpected reply before the body is sent.
    pub async fn send(&mut self, from: &str, rcpts: &[&str], body: &str) -> Reply {
        self.try_send(from, rcpts, body)
            .await
            .expect("SMTP transaction")
    }

    /// Like `send`, but any reply other than the expected 250/354 before
    /// the body is returned as is (the transaction stops there).
    pub async fn try_send(
        &mut self,
        from: &str,
        rcpts: &[&str],
        body: &str,
    ) -> std::io::Result<Reply> {
        let r = self.try_cmd(&format!("MAIL FROM:<{from}>")).await?;
        if r.code != 250 {
            return Ok(r);
        }
        for rcpt in rcpts {
            let r = self.try_cmd(&format!("RCPT TO:<{rcpt}>")).await?;
            if r.code != 250 {
                return Ok(r);
            }
        }
        let r = self.try_cmd("DATA").await?;
        if r.code != 354 {
            return Ok(r);
        }
        let mut data = String::new();
        for line in body.lines() {
            if line.starts_with('.') {
                data.push('.');
            }
            data.push_str(line);
            data.push_str("\r\n");
        }
        data.push_str(".\r\n");
        self.writer.write_all(data.as_bytes()).await?;
        self.try_read_reply().await
    }

    pub async fn quit(mut self) {
        let _ = self.try_cmd("QUIT").await;
    }
}

pub fn message_body(tag: &str) -> String {
    format!(
        "From: <sender@example.com>\r\nTo: <rcpt@example.com>\r\nSubject: {tag}\r\n\r\nbody of {tag}\r\n"
    )
}

/// Inject `n` messages over one connection, each must get 250 with one id.
pub async fn inject(addr: SocketAddr, rcpt: &str, n: usize, tag: &str) -> Vec<String> {
    let mut c = Smtp::connect(addr).await;
    c.ehlo().await;
    let mut ids = Vec::with_capacity(n);
    for i in 0..n {
        let r = c
            .send(
                "sender@example.com",
                &[rcpt],
                &message_body(&format!("{tag}-{i}")),
            )
            .await;
        assert_eq!(r.code, 250, "message {i}: {r:?}");
        let got = r.ids();
        assert_eq!(got.len(), 1, "one id per message: {r:?}");
        ids.extend(got);
    }
    c.quit().await;
    ids
}

/// Every complete JSON record in the zstd segments of `dir`, oldest
/// segment first. A segment still being written (an unfinished zstd
/// stream) yields the lines decoded so far.
pub fn read_records(dir: &Path) -> Vec<Value> {
    let mut names: Vec<PathBuf> = match std::fs::read_dir(dir) {
        Ok(rd) => rd.filter_map(|e| e.ok()).map(|e| e.path()).collect(),
        Err(_) => return Vec::new(),
    };
    names.sort();
    let mut out = Vec::new();
    for path in names {
        let Ok(file) = std::fs::File::open(&path) else {
            continue;
        };
        let Ok(mut dec) = zstd::stream::read::Decoder::new(file) else {
            continue;
        };
        let mut bytes = Vec::new();
        let mut buf = [0u8; 64 * 1024];
        loop {
            match dec.read(&mut buf) {
                Ok(0) | Err(_) => break,
                Ok(n) => bytes.extend_from_slice(&buf[..n]),
            }
        }
        let complete = match bytes.iter().rposition(|b| *b == b'\n') {
            Some(p) => &bytes[..=p],
            None => continue,
        };
        for line in complete.split(|b| *b == b'\n').filter(|l| !l.is_empty()) {
            let v: Value = serde_json::from_slice(line).unwrap_or_else(|e| {
                panic!(
                    "unparsable log line in {}: {e}: {}",
                    path.display(),
                    String::from_utf8_lossy(line)
                )
            });
            out.push(v);
        }
    }
    out
}

pub fn rtype(r: &Value) -> &str {
    r["type"].as_str().unwrap_or("")
}

pub fn rid(r: &Value) -> &str {
    r["id"].as_str().unwrap_or("")
}

/// Ids of records of type `ty`.
pub fn ids_of(records: &[Value], ty: &str) -> HashSet<String> {
    records
        .iter()
        .filter(|r| rtype(r) == ty)
        .map(|r| rid(r).to_string())
        .collect()
}

/// Poll the local logs until `done(records)` holds; panics with `what` and
/// the server's stderr after `limit`.
pub async fn wait_logs(
    server: &Server,
    limit: Duration,
    what: &str,
    done: impl Fn(&[Value]) -> bool,
) -> Vec<Value> {
    let deadline = Instant::now() + limit;
    loop {
        let recs = read_records(&server.logs_dir());
        if done(&recs) {
            return recs;
        }
        if Instant::now() >= deadline {
            panic!(
                "{what}: not reached within {limit:?}; {} records; stderr tail:\n{}",
                recs.len(),
                tail(&server.stderr_text(), 40)
            );
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

pub fn tail(text: &str, lines: usize) -> String {
    let all: Vec<&str> = text.lines().collect();
    all[all.len().saturating_sub(lines)..].join("\n")
}

/// Files delivered into `<maildir>/new` (recursively, any domain subdir).
pub fn maildir_files(root: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let mut stack = vec![root.to_path_buf()];
    while let Some(d) = stack.pop() {
        let Ok(rd) = std::fs::read_dir(&d) else {
            continue;
        };
        for e in rd.filter_map(|e| e.ok()) {
            let p = e.path();
            if p.is_dir() {
                stack.push(p);
            } else if p.parent().and_then(|x| x.file_name()) == Some("new".as_ref()) {
                out.push(p);
            }
        }
    }
    out
}
