//! Support for the bad-input catalogue (`tests/bad_input.rs`): a `hermod
//! serve` launched with listener parameters of the test's choosing (the
//! shared P0 prelude fixes them), a raw byte-level SMTP client, and the
//! "a fresh client still completes a transaction" check every case ends with.
#![allow(dead_code)]

pub mod raw;

use std::fs::File;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use crate::common::{free_port, read_log_records, smtp, strip_ansi};
use serde_json::Value;

const START_TIMEOUT: Duration = Duration::from_secs(30);

/// Route every SMTP message to the `null` queue: accepted (250 with an id,
/// Reception logged) without any delivery, so cases need no broker.
pub const SMTP_NULL_QUEUE: &str = r#"
kumo.on('smtp_server_message_received', function(msg)
  msg:set_meta('queue', 'null')
end)
"#;

/// The same for HTTP injections.
pub const HTTP_NULL_QUEUE: &str = r#"
kumo.on('http_message_generated', function(msg)
  msg:set_meta('queue', 'null')
end)
"#;

/// A whole policy: spools, local logs and both listeners on the given
/// ports, with extra listener parameters, followed by `scenario`.
/// `pre` is more Lua run at the end of `pre_init`.
pub fn policy(
    ports: (u16, u16),
    smtp_extra: &str,
    http_extra: &str,
    pre: &str,
    scenario: &str,
) -> String {
    let (smtp_port, http_port) = ports;
    format!(
        r#"local kumo = require 'kumo'
local DIR = os.getenv 'ACCEPT_DIR'
kumo.on('pre_init', function()
  kumo.define_spool {{ name = 'data', path = DIR .. '/spool/data' }}
  kumo.define_spool {{ name = 'meta', path = DIR .. '/spool/meta' }}
  kumo.configure_local_logs {{ log_dir = DIR .. '/logs', max_segment_duration = '1s' }}
  kumo.start_esmtp_listener {{ listen = '127.0.0.1:{smtp_port}', {smtp_extra} }}
  kumo.start_http_listener {{ listen = '127.0.0.1:{http_port}', {http_extra} }}
  {pre}
end)
{scenario}"#
    )
}

/// A running `hermod serve` in its own tempdir; SIGTERM/SIGKILL on drop.
pub struct Hermod {
    dir: tempfile::TempDir,
    pub smtp_port: u16,
    pub http_port: u16,
    child: Option<Child>,
}

impl Hermod {
    /// Default listeners; every SMTP message goes to the `null` queue.
    pub async fn null_queue() -> Hermod {
        Self::start("", "", SMTP_NULL_QUEUE).await
    }

    /// Start with extra listener parameters and a scenario; wait for SMTP.
    pub async fn start(smtp_extra: &str, http_extra: &str, scenario: &str) -> Hermod {
        Self::start_with_pre("", smtp_extra, http_extra, scenario).await
    }

    /// [`Hermod::start`] with more Lua at the end of `pre_init`.
    pub async fn start_with_pre(
        pre: &str,
        smtp_extra: &str,
        http_extra: &str,
        scenario: &str,
    ) -> Hermod {
        let dir = tempfile::Builder::new()
            .prefix("hermod-badinput")
            .tempdir()
            .expect("creating a tempdir");
        let (smtp_port, http_port) = (free_port(), free_port());
        std::fs::write(
            dir.path().join("policy.lua"),
            policy(
                (smtp_port, http_port),
                smtp_extra,
                http_extra,
                pre,
                scenario,
            ),
        )
        .expect("writing the policy");
        let mut h = Hermod {
            dir,
            smtp_port,
            http_port,
            child: None,
        };
        h.spawn().await;
        h
    }

    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    pub fn policy_path(&self) -> PathBuf {
        self.dir().join("policy.lua")
    }

    /// `policy.lua:<n>` for the first policy line containing `needle`.
    pub fn policy_line(&self, needle: &str) -> String {
        let text = std::fs::read_to_string(self.policy_path()).expect("reading the policy");
        let n = text
            .lines()
            .position(|l| l.contains(needle))
            .unwrap_or_else(|| panic!("{needle:?} is not in the policy"));
        format!("policy.lua:{}", n + 1)
    }

    pub fn smtp_addr(&self) -> SocketAddr {
        SocketAddr::from(([127, 0, 0, 1], self.smtp_port))
    }

    pub fn http_url(&self, path: &str) -> String {
        format!("http://127.0.0.1:{}{path}", self.http_port)
    }

    /// stderr so far, without colour codes.
    pub fn stderr(&self) -> String {
        strip_ansi(&std::fs::read_to_string(self.dir().join("hermod.stderr")).unwrap_or_default())
    }

    pub fn log_records(&self) -> Vec<Value> {
        read_log_records(&self.dir().join("logs"))
    }

    /// The first stderr line containing every one of `needles`, polling up to `timeout`.
    pub async fn wait_stderr_line(&self, needles: &[&str], timeout: Duration) -> String {
        let deadline = Instant::now() + timeout;
        loop {
            let err = self.stderr();
            if let Some(l) = err.lines().find(|l| needles.iter().all(|n| l.contains(n))) {
                return l.to_string();
            }
            assert!(
                Instant::now() < deadline,
                "no stderr line with {needles:?} within {timeout:?}; stderr:\n{err}"
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// The first local-log record satisfying `pred`, polling up to `timeout`.
    pub async fn wait_record(&self, timeout: Duration, pred: impl Fn(&Value) -> bool) -> Value {
        let deadline = Instant::now() + timeout;
        loop {
            let records = self.log_records();
            if let Some(r) = records.iter().find(|r| pred(r)) {
                return r.clone();
            }
            assert!(
                Instant::now() < deadline,
                "no matching log record within {timeout:?}; records: {records:#?}\nstderr:\n{}",
                self.stderr()
            );
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }

    async fn spawn(&mut self) {
        let err = File::options()
            .create(true)
            .append(true)
            .open(self.dir().join("hermod.stderr"))
            .expect("opening the stderr file");
        let out = err.try_clone().expect("cloning the stderr file");
        let child = Command::new(env!("CARGO_BIN_EXE_hermod"))
            .arg("serve")
            .arg("--policy")
            .arg(self.policy_path())
            .arg("--data-dir")
            .arg(self.dir())
            .env("ACCEPT_DIR", self.dir())
            .env("HERMOD_LOG", "info")
            .env("NO_COLOR", "1")
            // Short enough for the infinite-loop case; every other handler here is trivial.
            .env("HERMOD_HANDLER_TIME_LIMIT", "3s")
            .stdin(Stdio::null())
            .stdout(out)
            .stderr(err)
            .spawn()
            .expect("spawning hermod");
        self.child = Some(child);
        let deadline = Instant::now() + START_TIMEOUT;
        loop {
            if let Some(Ok(Some(status))) = self.child.as_mut().map(|c| c.try_wait()) {
                self.child = None;
                panic!(
                    "hermod exited during start-up ({status}); stderr:\n{}",
                    self.stderr()
                );
            }
            if tokio::net::TcpStream::connect(self.smtp_addr())
                .await
                .is_ok()
            {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "hermod did not open SMTP within {START_TIMEOUT:?}; stderr:\n{}",
                self.stderr()
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// SIGTERM and wait (SIGKILL after 15 s).
    pub async fn stop(&mut self) {
        let Some(mut child) = self.child.take() else {
            return;
        };
        crate::common::signal(child.id(), "TERM");
        let deadline = Instant::now() + Duration::from_secs(15);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = child.try_wait() {
                return;
            }
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
        let _ = child.kill();
        let _ = child.wait();
    }

    /// Start again on the same data dir, policy and ports.
    pub async fn restart(&mut self) {
        self.stop().await;
        self.spawn().await;
    }

    /// The proof that a bad input left the server healthy: a fresh client
    /// completes a whole transaction and gets `250 OK ids=<id>`.
    pub async fn assert_serves(&self) {
        assert_serves(self.smtp_addr(), &self.stderr_hint()).await;
    }

    fn stderr_hint(&self) -> String {
        let e = self.stderr();
        let start = e.len().saturating_sub(3000);
        e.get(start..).unwrap_or(&e).to_string()
    }
}

impl Drop for Hermod {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            crate::common::signal(child.id(), "TERM");
            let deadline = Instant::now() + Duration::from_secs(15);
            while Instant::now() < deadline {
                if let Ok(Some(_)) = child.try_wait() {
                    return;
                }
                std::thread::sleep(Duration::from_millis(20));
            }
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

pub async fn assert_serves(addr: SocketAddr, hint: &str) {
    let fut = async {
        let mut c = smtp::Client::connect(addr).await;
        let r = c
            .transaction(
                "healthy@ok.test",
                "rcpt@ok.test",
                b"Subject: still serving\r\n\r\nfresh client\r\n",
            )
            .await;
        c.quit().await;
        r
    };
    let r = tokio::time::timeout(Duration::from_secs(30), fut)
        .await
        .unwrap_or_else(|_| panic!("a fresh client hung; stderr tail:\n{hint}"));
    assert_eq!(
        r.code, 250,
        "fresh client refused: {r:?}; stderr tail:\n{hint}"
    );
    assert!(
        r.text.starts_with("OK ids=") && smtp::ids_of(&r.text).len() == 1,
        "fresh client: {r:?}"
    );
}

/// Run `hermod serve` on a policy that must fail to start; returns its
/// exit status and output. Bounded: SIGKILL after 20 s.
pub fn serve_expecting_exit(policy_text: &str) -> (tempfile::TempDir, ExitStatus, String) {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("policy.lua");
    std::fs::write(&path, policy_text).expect("writing the policy");
    let mut child = Command::new(env!("CARGO_BIN_EXE_hermod"))
        .arg("serve")
        .arg("--policy")
        .arg(&path)
        .arg("--data-dir")
        .arg(dir.path())
        .env("ACCEPT_DIR", dir.path())
        .env("NO_COLOR", "1")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawning hermod");
    let deadline = Instant::now() + Duration::from_secs(20);
    let status = loop {
        if let Ok(Some(s)) = child.try_wait() {
            break s;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let out = child.wait_with_output().expect("collecting output");
            panic!(
                "hermod serve kept running on a broken policy; stderr:\n{}",
                String::from_utf8_lossy(&out.stderr)
            );
        }
        std::thread::sleep(Duration::from_millis(25));
    };
    let out = child.wait_with_output().expect("collecting output");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (dir, status, strip_ansi(&text))
}

/// Raise this process's soft RLIMIT_NOFILE towards `want` (children inherit
/// it); returns the resulting soft limit.
pub fn raise_nofile(want: u64) -> u64 {
    let mut lim = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit/setrlimit only read/write the struct we pass.
    unsafe {
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) != 0 {
            return 1024;
        }
        if lim.rlim_cur < want {
            let raised = libc::rlimit {
                rlim_cur: want.min(lim.rlim_max),
                rlim_max: lim.rlim_max,
            };
            if libc::setrlimit(libc::RLIMIT_NOFILE, &raised) == 0 {
                lim.rlim_cur = raised.rlim_cur;
            }
        }
    }
    lim.rlim_cur
}
