//! Shared test harness: a real listener on 127.0.0.1:0 with a recording
//! acceptor and an engine loaded from a policy file in a tempdir.

#![allow(dead_code)]

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use hermod_http::{HttpHandle, HttpListenerConfig, TrustedHost};
use hermod_message::accept::AcceptFuture;
use hermod_message::{AcceptError, Accepted, Acceptor, Message, ReceptionInfo};
use hermod_policy::{Engine, EngineOptions};
use parking_lot::Mutex;
use tokio_util::sync::CancellationToken;

#[derive(Default)]
pub struct RecordingAcceptor {
    pub received: Mutex<Vec<(Message, ReceptionInfo)>>,
    pub not_accepting: AtomicBool,
    pub spool_broken: AtomicBool,
}

impl Acceptor for RecordingAcceptor {
    fn accept(&self, messages: Vec<Message>, info: ReceptionInfo) -> AcceptFuture<'_> {
        Box::pin(async move {
            if self.spool_broken.load(Ordering::SeqCst) {
                return messages
                    .iter()
                    .map(|_| Err(AcceptError::Spool("disk full".into())))
                    .collect();
            }
            let mut out = Vec::new();
            let mut g = self.received.lock();
            for m in messages {
                out.push(Ok(Accepted::Queued(m.id())));
                g.push((m, info.clone()));
            }
            out
        })
    }

    fn is_accepting(&self) -> bool {
        !self.not_accepting.load(Ordering::SeqCst)
    }
}

pub struct Server {
    pub addr: SocketAddr,
    pub acceptor: Arc<RecordingAcceptor>,
    pub shutdown: CancellationToken,
    pub handle: Option<HttpHandle>,
    _dir: tempfile::TempDir,
}

impl Server {
    pub fn url(&self, path: &str) -> String {
        format!("http://{}{}", self.addr, path)
    }

    pub fn messages(&self) -> Vec<Message> {
        self.acceptor
            .received
            .lock()
            .iter()
            .map(|(m, _)| m.clone())
            .collect()
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        self.shutdown.cancel();
    }
}

pub const EMPTY_POLICY: &str = "local kumo = require 'kumo'\n";

pub async fn start(policy: &str, tweak: impl FnOnce(&mut HttpListenerConfig)) -> Server {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("policy.lua");
    std::fs::write(&path, policy).expect("write policy");
    let mut opts = EngineOptions::new(&path);
    opts.registrars.push(hermod_http::register);
    let (engine, _collected) = Engine::start(opts).await.expect("engine starts");
    let mut cfg = HttpListenerConfig {
        listen: "127.0.0.1:0".into(),
        hostname: "mx.test.example".into(),
        ..Default::default()
    };
    tweak(&mut cfg);
    let acceptor = Arc::new(RecordingAcceptor::default());
    let shutdown = CancellationToken::new();
    let handle = hermod_http::start_listener(cfg, engine, acceptor.clone(), shutdown.clone())
        .await
        .expect("listener starts");
    Server {
        addr: handle.local_addr(),
        acceptor,
        shutdown,
        handle: Some(handle),
        _dir: dir,
    }
}

pub fn trust_only(host: &str) -> impl FnOnce(&mut HttpListenerConfig) + '_ {
    move |c| c.trusted_hosts = vec![TrustedHost::parse(host).expect("trusted host")]
}

pub fn client() -> reqwest::Client {
    let _ = rustls::crypto::ring::default_provider().install_default();
    reqwest::Client::builder()
        .timeout(Duration::from_secs(20))
        .no_proxy()
        .build()
        .expect("client")
}

/// POST a JSON text body (sent verbatim so malformed JSON can be tested).
pub async fn inject_raw(server: &Server, body: &str) -> (u16, serde_json::Value) {
    let r = client()
        .post(server.url("/api/inject/v1"))
        .header("content-type", "application/json")
        .body(body.to_string())
        .send()
        .await
        .expect("request");
    let status = r.status().as_u16();
    let text = r.text().await.expect("body");
    let json = serde_json::from_str(&text).unwrap_or(serde_json::Value::String(text));
    (status, json)
}

pub async fn inject(server: &Server, body: serde_json::Value) -> (u16, serde_json::Value) {
    inject_raw(server, &body.to_string()).await
}
