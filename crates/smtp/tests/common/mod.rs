//! Test harness: a real listener on 127.0.0.1:0, a recording acceptor, an
//! engine loaded from a policy file in a tempdir, and a line-based client.

#![allow(dead_code)]

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use hermod_message::accept::{AcceptFuture, DoneFuture};
use hermod_message::{AcceptError, Accepted, Acceptor, Message, ReceptionInfo, RejectionInfo};
use hermod_policy::{Engine, EngineOptions};
use hermod_smtp::{start_listener, EsmtpListenerConfig, ListenerHandle};
use parking_lot::Mutex;
use rustls::pki_types::ServerName;
use tokio::io::{AsyncBufReadExt, AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, BufReader};
use tokio::net::TcpStream;
use tokio_rustls::client::TlsStream;
use tokio_util::sync::CancellationToken;

pub const STEP: Duration = Duration::from_secs(10);

/// How the test acceptor answers.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum Mode {
    Queue,
    SpoolFails,
    Unavailable,
    /// Every second message fails.
    Partial,
}

pub struct TestAcceptor {
    pub received: Mutex<Vec<(Message, ReceptionInfo)>>,
    pub rejections: Mutex<Vec<RejectionInfo>>,
    pub accepting: AtomicBool,
    pub mode: Mutex<Mode>,
}

impl TestAcceptor {
    pub fn new() -> Arc<Self> {
        Arc::new(Self {
            received: Mutex::new(Vec::new()),
            rejections: Mutex::new(Vec::new()),
            accepting: AtomicBool::new(true),
            mode: Mutex::new(Mode::Queue),
        })
    }

    pub fn messages(&self) -> Vec<Message> {
        self.received
            .lock()
            .iter()
            .map(|(m, _)| m.clone())
            .collect()
    }

    pub fn data(&self, i: usize) -> String {
        let msgs = self.messages();
        String::from_utf8_lossy(&msgs[i].data().unwrap()).into_owned()
    }
}

impl Acceptor for TestAcceptor {
    fn accept(&self, messages: Vec<Message>, info: ReceptionInfo) -> AcceptFuture<'_> {
        let mode = *self.mode.lock();
        Box::pin(async move {
            let mut out = Vec::new();
            for (i, m) in messages.into_iter().enumerate() {
                let r = match mode {
                    Mode::Queue => Ok(Accepted::Queued(m.id())),
                    Mode::SpoolFails => Err(AcceptError::Spool("disk full".into())),
                    Mode::Unavailable => Err(AcceptError::Unavailable("shutting down".into())),
                    Mode::Partial if i % 2 == 1 => Err(AcceptError::Spool("disk full".into())),
                    Mode::Partial => Ok(Accepted::Queued(m.id())),
                };
                if r.is_ok() {
                    self.received.lock().push((m, info.clone()));
                }
                out.push(r);
            }
            out
        })
    }

    fn is_accepting(&self) -> bool {
        self.accepting.load(Ordering::SeqCst)
    }

    fn rejected(&self, rejection: RejectionInfo) -> DoneFuture<'_> {
        self.rejections.lock().push(rejection);
        Box::pin(async {})
    }
}

pub const POLICY: &str = r#"
local kumo = require 'kumo'
kumo.on('smtp_server_ehlo', function(domain, conn_meta, extensions)
  if domain == 'short.example' then return {'PIPELINING', 'X-SHORT'} end
end)
kumo.on('smtp_server_mail_from', function(sender, conn_meta)
  if sender.domain == 'blocked.example' then kumo.reject(550, '5.7.1 sender blocked') end
  conn_meta:set_meta('x_sender_seen', sender.email)
end)
kumo.on('smtp_server_rcpt_to', function(rcpt, conn_meta)
  if rcpt.user == 'bye' then kumo.reject(421, '4.7.0 go away') end
end)
kumo.on('smtp_server_message_received', function(msg, conn_meta)
  local subject = msg:get_first_named_header_value('Subject')
  if subject == 'lua-error' then error('deliberate failure') end
  if subject == 'reject' then kumo.reject(550, 'no') end
  msg:set_meta('x_checked', conn_meta:get_meta('ehlo_domain'))
end)
"#;

pub struct Server {
    pub addr: SocketAddr,
    pub acceptor: Arc<TestAcceptor>,
    pub shutdown: CancellationToken,
    pub handle: Option<ListenerHandle>,
    _dir: tempfile::TempDir,
}

impl Drop for Server {
    fn drop(&mut self) {
        self.shutdown.cancel();
    }
}

pub fn config() -> EsmtpListenerConfig {
    EsmtpListenerConfig {
        listen: "127.0.0.1:0".into(),
        hostname: "mx.test".into(),
        client_timeout: Duration::from_secs(10),
        ..Default::default()
    }
}

pub async fn engine_with(policy: &str) -> (Arc<Engine>, tempfile::TempDir) {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("policy.lua");
    std::fs::write(&path, policy).unwrap();
    let (engine, _collected) = Engine::start(EngineOptions::new(&path)).await.unwrap();
    (engine, dir)
}

pub async fn start_with(cfg: EsmtpListenerConfig, policy: &str) -> Server {
    let (engine, dir) = engine_with(policy).await;
    let acceptor = TestAcceptor::new();
    let shutdown = CancellationToken::new();
    let handle = start_listener(cfg, engine, acceptor.clone(), shutdown.clone())
        .await
        .unwrap();
    Server {
        addr: handle.local_addr(),
        acceptor,
        shutdown,
        handle: Some(handle),
        _dir: dir,
    }
}

pub async fn start(cfg: EsmtpListenerConfig) -> Server {
    start_with(cfg, POLICY).await
}

pub struct Client<S> {
    pub io: BufReader<S>,
}

impl Client<TcpStream> {
    pub async fn connect(addr: SocketAddr) -> Self {
        let s = tokio::time::timeout(STEP, TcpStream::connect(addr))
            .await
            .unwrap()
            .unwrap();
        Client {
            io: BufReader::new(s),
        }
    }

    /// Connect and consume the banner.
    pub async fn greeted(addr: SocketAddr) -> Self {
        let mut c = Self::connect(addr).await;
        c.expect(220).await;
        c
    }
}

impl<S: AsyncRead + AsyncWrite + Unpin> Client<S> {
    pub fn new(s: S) -> Self {
        Client {
            io: BufReader::new(s),
        }
    }

    pub async fn send(&mut self, text: &str) {
        self.send_bytes(text.as_bytes()).await;
    }

    pub async fn send_bytes(&mut self, b: &[u8]) {
        let w = self.io.get_mut();
        w.write_all(b).await.unwrap();
        w.flush().await.unwrap();
    }

    /// One (possibly multi-line) reply: the code and the text of each line.
    pub async fn reply(&mut self) -> (u16, Vec<String>) {
        let mut lines = Vec::new();
        loop {
            let mut line = String::new();
            let n = tokio::time::timeout(STEP, self.io.read_line(&mut line))
                .await
                .expect("reply timed out")
                .expect("read failed");
            assert!(
                n > 0,
                "connection closed while waiting for a reply; got {lines:?}"
            );
            assert!(line.ends_with("\r\n"), "reply line without CRLF: {line:?}");
            let code: u16 = line[..3]
                .parse()
                .unwrap_or_else(|_| panic!("bad reply {line:?}"));
            let last = line.as_bytes()[3] == b' ';
            lines.push(line[4..].trim_end().to_string());
            if last {
                return (code, lines);
            }
        }
    }

    /// Expect a reply code; returns the full text of the last line.
    pub async fn expect(&mut self, code: u16) -> String {
        let (got, lines) = self.reply().await;
        assert_eq!(got, code, "expected {code}, got {got} {lines:?}");
        lines.last().cloned().unwrap_or_default()
    }

    pub async fn cmd(&mut self, text: &str, code: u16) -> String {
        self.send(&format!("{text}\r\n")).await;
        self.expect(code).await
    }

    /// True when the server closed the connection without sending more.
    pub async fn closed(&mut self) -> bool {
        let mut buf = Vec::new();
        match tokio::time::timeout(STEP, self.io.read_to_end(&mut buf)).await {
            Ok(Ok(_)) => {
                assert!(
                    buf.is_empty(),
                    "unexpected data: {:?}",
                    String::from_utf8_lossy(&buf)
                );
                true
            }
            Ok(Err(_)) => buf.is_empty(),
            Err(_) => false,
        }
    }

    /// A whole transaction; returns the final reply text.
    pub async fn transaction(&mut self, from: &str, to: &[&str], body: &str) -> (u16, String) {
        self.cmd(&format!("MAIL FROM:<{from}>"), 250).await;
        for r in to {
            self.cmd(&format!("RCPT TO:<{r}>"), 250).await;
        }
        self.cmd("DATA", 354).await;
        self.send(body).await;
        self.send(".\r\n").await;
        let (code, lines) = self.reply().await;
        (code, lines.join("\n"))
    }
}

/// The test trusts whatever certificate the listener presents.
pub fn connector() -> tokio_rustls::TlsConnector {
    let config = hermod_smtp_client::insecure_client_config().expect("TLS client config");
    tokio_rustls::TlsConnector::from(Arc::new(config))
}

impl Client<TcpStream> {
    /// EHLO, STARTTLS and the handshake; the TLS client has not sent EHLO.
    pub async fn starttls(mut self) -> Client<TlsStream<TcpStream>> {
        self.cmd("EHLO c", 250).await;
        self.cmd("STARTTLS", 220).await;
        let tcp = self.io.into_inner();
        let name = ServerName::try_from("mx.test").unwrap();
        Client::new(connector().connect(name, tcp).await.unwrap())
    }
}
