//! Test peers: Postfix's smtp-sink (a real SMTP server), Hermod's own ESMTP
//! listener (STARTTLS, SIZE, SMTPUTF8, per-recipient policy) with a
//! certificate from a throw-away CA, and scripted TCP peers for behaviour
//! no real server shows on demand.

#![allow(dead_code)]

use std::future::Future;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use hermod_message::accept::{AcceptFuture, DoneFuture};
use hermod_message::{Accepted, Acceptor, Message, ReceptionInfo, RejectionInfo};
use hermod_policy::{Engine, EngineOptions, KeySource};
use hermod_smtp::{start_listener, EsmtpListenerConfig, ListenerHandle};
use hermod_smtp_client::{CertificateDer, ClientConfig, Timeouts, TlsMode, TlsTrust};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::net::{TcpListener, TcpStream};
use tokio_util::sync::CancellationToken;

pub const SMTP_SINK: &str = "/usr/sbin/smtp-sink";

/// Short enough that timeout tests are quick, long enough for a busy CI
/// machine to answer a healthy peer.
pub fn config() -> ClientConfig {
    let mut c = ClientConfig::new("client.test");
    c.timeouts = Timeouts::all(Duration::from_secs(10));
    c.tls = TlsMode::Disabled;
    c
}

// ---------------------------------------------------------------- smtp-sink

/// A running smtp-sink that dumps each transaction into its own file.
pub struct Sink {
    pub addr: SocketAddr,
    child: Child,
    dir: tempfile::TempDir,
}

impl Drop for Sink {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Sink {
    /// Starts smtp-sink with `args` (see smtp-sink(1)). Panics, failing the
    /// test, when the binary is missing: install the `postfix` package
    /// (scripts/services does).
    pub async fn start(args: &[&str]) -> Self {
        assert!(
            Path::new(SMTP_SINK).exists(),
            "{SMTP_SINK} is missing: install the Debian package postfix (./scripts/services does)"
        );
        // Pick a free port, then hand it to smtp-sink (it cannot report one).
        for _ in 0..20 {
            let dir = tempfile::tempdir().unwrap();
            // smtp-sink drops privileges to -u's user when run as root;
            // that user must be able to write the dumps.
            let mut perms = std::fs::metadata(dir.path()).unwrap().permissions();
            std::os::unix::fs::PermissionsExt::set_mode(&mut perms, 0o777);
            std::fs::set_permissions(dir.path(), perms).unwrap();
            let port = {
                let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
                l.local_addr().unwrap().port()
            };
            let addr: SocketAddr = format!("127.0.0.1:{port}").parse().unwrap();
            let template = format!("{}/msg.", dir.path().display());
            let mut cmd = Command::new(SMTP_SINK);
            if is_root() {
                cmd.args(["-u", "nobody"]);
            }
            let child = cmd
                .args(["-d", &template])
                .args(args)
                .arg(format!("127.0.0.1:{port}"))
                .arg("64")
                .stdout(Stdio::null())
                .stderr(Stdio::inherit())
                .spawn()
                .unwrap();
            let mut sink = Sink { addr, child, dir };
            if sink.wait_listening().await {
                return sink;
            }
        }
        panic!("smtp-sink did not start listening");
    }

    async fn wait_listening(&mut self) -> bool {
        let deadline = Instant::now() + Duration::from_secs(10);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.child.try_wait() {
                return false; // port taken meanwhile; try another
            }
            if TcpStream::connect(self.addr).await.is_ok() {
                return true;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        false
    }

    /// The dumped transactions, oldest first (smtp-sink(1) "DUMP FILE
    /// FORMAT": its own X- headers, then the content with LF line endings
    /// and the dots removed).
    pub async fn dumps(&self, expected: usize) -> Vec<String> {
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let mut files: Vec<PathBuf> = std::fs::read_dir(self.dir.path())
                .unwrap()
                .map(|e| e.unwrap().path())
                .collect();
            files.sort_by_key(|p| std::fs::metadata(p).unwrap().modified().unwrap());
            let texts: Vec<String> = files
                .iter()
                .map(|p| std::fs::read_to_string(p).unwrap())
                .collect();
            // A dump is complete once its trailing empty line is written.
            if texts.len() >= expected && texts.iter().all(|t| t.ends_with("\n\n")) {
                return texts;
            }
            assert!(
                Instant::now() < deadline,
                "expected {expected} dumps, have {texts:?}"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

fn is_root() -> bool {
    std::fs::read_to_string("/proc/self/status")
        .map(|s| {
            s.lines()
                .any(|l| l.starts_with("Uid:") && l.split_whitespace().nth(1) == Some("0"))
        })
        .unwrap_or(false)
}

/// The content part of a dump: what follows smtp-sink's Received header.
pub fn dump_content(dump: &str) -> &str {
    let start = dump.find("\n\tby smtp-sink").expect("Received header");
    let after = &dump[start + 1..];
    let end = after.find(";\n\t").expect("Received date line") + 3;
    let after = &after[end..];
    &after[after.find('\n').unwrap() + 1..]
}

// ------------------------------------------------------ Hermod's listener

/// Records what Hermod's listener accepted.
#[derive(Default)]
pub struct Recorder {
    pub messages: std::sync::Mutex<Vec<Message>>,
}

impl Acceptor for Recorder {
    fn accept(&self, messages: Vec<Message>, _info: ReceptionInfo) -> AcceptFuture<'_> {
        Box::pin(async move {
            let mut out = Vec::new();
            for m in messages {
                out.push(Ok(Accepted::Queued(m.id())));
                self.messages.lock().unwrap().push(m);
            }
            out
        })
    }

    fn is_accepting(&self) -> bool {
        true
    }

    fn rejected(&self, _rejection: RejectionInfo) -> DoneFuture<'_> {
        Box::pin(async {})
    }
}

/// Refuses RCPT TO for local part `refused` (550), takes everything else.
pub const POLICY: &str = r#"
local kumo = require 'kumo'
kumo.on('smtp_server_rcpt_to', function(rcpt, conn_meta)
  if rcpt.user == 'refused' then kumo.reject(550, '5.1.1 no such user') end
end)
"#;

pub struct Hermod {
    pub addr: SocketAddr,
    pub recorder: Arc<Recorder>,
    shutdown: CancellationToken,
    _handle: ListenerHandle,
    _dir: tempfile::TempDir,
}

impl Drop for Hermod {
    fn drop(&mut self) {
        self.shutdown.cancel();
    }
}

impl Hermod {
    pub fn data(&self, i: usize) -> Vec<u8> {
        self.recorder.messages.lock().unwrap()[i]
            .data()
            .unwrap()
            .to_vec()
    }
}

/// A CA and a certificate it issued for `mx.test`.
pub struct Pki {
    pub ca_der: CertificateDer<'static>,
    pub leaf_pem: String,
    pub leaf_key_pem: String,
}

pub fn pki() -> Pki {
    let ca_key = rcgen::KeyPair::generate().unwrap();
    let mut ca = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
    ca.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    ca.distinguished_name = rcgen::DistinguishedName::new();
    ca.distinguished_name
        .push(rcgen::DnType::CommonName, "Hermod Test CA");
    let ca_cert = ca.self_signed(&ca_key).unwrap();
    let issuer = rcgen::Issuer::from_params(&ca, &ca_key);
    let leaf_key = rcgen::KeyPair::generate().unwrap();
    let mut leaf = rcgen::CertificateParams::new(vec!["mx.test".to_string()]).unwrap();
    leaf.distinguished_name = rcgen::DistinguishedName::new();
    leaf.distinguished_name
        .push(rcgen::DnType::OrganizationName, "Hermod Tests");
    leaf.distinguished_name
        .push(rcgen::DnType::CommonName, "mx.test");
    let leaf_cert = leaf.signed_by(&leaf_key, &issuer).unwrap();
    Pki {
        ca_der: ca_cert.der().clone(),
        leaf_pem: leaf_cert.pem(),
        leaf_key_pem: leaf_key.serialize_pem(),
    }
}

/// A client configuration trusting only `pki`'s CA.
pub fn trusting(pki: &Pki) -> ClientConfig {
    let mut c = config();
    c.tls_trust = TlsTrust::only(vec![pki.ca_der.clone()]);
    c
}

/// Hermod's listener on 127.0.0.1:0, presenting `pki`'s certificate (or a
/// self-signed one when `None`), tuned by `tweak`.
pub async fn hermod(pki: Option<&Pki>, tweak: impl FnOnce(&mut EsmtpListenerConfig)) -> Hermod {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("policy.lua");
    std::fs::write(&path, POLICY).unwrap();
    let (engine, _) = Engine::start(EngineOptions::new(&path)).await.unwrap();
    let mut cfg = EsmtpListenerConfig {
        listen: "127.0.0.1:0".into(),
        hostname: "mx.test".into(),
        client_timeout: Duration::from_secs(10),
        ..Default::default()
    };
    if let Some(pki) = pki {
        cfg.tls_certificate = Some(KeySource::Data {
            key_data: pki.leaf_pem.clone(),
        });
        cfg.tls_private_key = Some(KeySource::Data {
            key_data: pki.leaf_key_pem.clone(),
        });
    }
    tweak(&mut cfg);
    let recorder = Arc::new(Recorder::default());
    let shutdown = CancellationToken::new();
    let handle = start_listener(cfg, engine, recorder.clone(), shutdown.clone())
        .await
        .unwrap();
    Hermod {
        addr: handle.local_addr(),
        recorder,
        shutdown,
        _handle: handle,
        _dir: dir,
    }
}

// ---------------------------------------------------------- scripted peers

/// One scripted conversation on a real socket: `script` runs against the
/// first accepted connection; its result comes back from `finish`.
pub struct Scripted<T> {
    pub addr: SocketAddr,
    task: tokio::task::JoinHandle<T>,
}

impl<T: Send + 'static> Scripted<T> {
    pub async fn start<F, Fut>(script: F) -> Self
    where
        F: FnOnce(Peer) -> Fut + Send + 'static,
        Fut: Future<Output = T> + Send,
    {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let task = tokio::spawn(async move {
            let (stream, _) = listener.accept().await.unwrap();
            script(Peer::new(stream)).await
        });
        Self { addr, task }
    }

    pub async fn finish(self) -> T {
        tokio::time::timeout(Duration::from_secs(20), self.task)
            .await
            .expect("scripted peer did not finish")
            .expect("scripted peer panicked")
    }
}

/// The server side of a scripted conversation.
pub struct Peer {
    pub io: BufReader<TcpStream>,
    /// Every command line received, without CRLF.
    pub seen: Vec<String>,
}

impl Peer {
    fn new(stream: TcpStream) -> Self {
        Self {
            io: BufReader::new(stream),
            seen: Vec::new(),
        }
    }

    pub async fn send(&mut self, text: &str) {
        let _ = self.io.get_mut().write_all(text.as_bytes()).await;
    }

    /// The next line without CRLF; `None` at end of stream.
    pub async fn line(&mut self) -> Option<String> {
        let mut buf = Vec::new();
        let n = self.io.read_until(b'\n', &mut buf).await.ok()?;
        if n == 0 {
            return None;
        }
        let line = String::from_utf8_lossy(&buf)
            .trim_end_matches(['\r', '\n'])
            .to_string();
        self.seen.push(line.clone());
        Some(line)
    }

    /// Reads the next command and asserts its start.
    pub async fn expect(&mut self, prefix: &str) -> String {
        let line = self.line().await.unwrap_or_default();
        assert!(
            line.starts_with(prefix),
            "expected {prefix:?}, got {line:?}"
        );
        line
    }

    /// Reads raw bytes up to and including CRLF.CRLF: the DATA content as
    /// it was on the wire.
    pub async fn content(&mut self) -> Vec<u8> {
        let mut raw = Vec::new();
        while !raw.ends_with(b"\r\n.\r\n") && raw != b".\r\n" {
            let n = self.io.read_until(b'\n', &mut raw).await.unwrap();
            assert!(n > 0, "closed inside DATA after {raw:?}");
        }
        raw
    }

    /// Banner and a plain EHLO reply with `extensions`.
    pub async fn greet(&mut self, extensions: &[&str]) {
        self.send("220 scripted.test ESMTP\r\n").await;
        self.expect("EHLO").await;
        let mut lines = vec!["scripted.test".to_string()];
        lines.extend(extensions.iter().map(|e| e.to_string()));
        let mut text = String::new();
        for (i, l) in lines.iter().enumerate() {
            let sep = if i + 1 == lines.len() { ' ' } else { '-' };
            text.push_str(&format!("250{sep}{l}\r\n"));
        }
        self.send(&text).await;
    }
}
