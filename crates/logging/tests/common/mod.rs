#![allow(dead_code)]

use std::fs;
use std::path::Path;
use std::time::Duration;

use hermod_logging::{tail, LogEvent, LogRecord, RecordType, Response, TailOptions};
use hermod_message::{EnvelopeAddress, Message, Protocol, SpoolId};
use serde_json::{json, Map};

pub fn message(reception_protocol: &str) -> Message {
    let mut meta = Map::new();
    meta.insert("reception_protocol".into(), json!(reception_protocol));
    meta.insert("queue".into(), json!("nats"));
    meta.insert("x_tenant".into(), json!("acme"));
    Message::new(
        SpoolId::new(),
        EnvelopeAddress::parse("app@example.com").unwrap(),
        vec![EnvelopeAddress::parse("ops@nats").unwrap()],
        meta,
        &b"Subject: hello\r\n\r\nbody\r\n"[..],
    )
}

pub fn event(kind: RecordType, message: Message) -> LogEvent {
    LogEvent {
        kind,
        message,
        queue: "nats".into(),
        site: "unspecified->nats@lua:make.nats".into(),
        response: Response::new(200, None, "250 ok"),
        peer_address: None,
        egress_pool: Some("unspecified".into()),
        egress_source: Some("unspecified".into()),
        delivery_protocol: Some(Protocol::Lua),
        session_id: None,
        tls_cipher: None,
        tls_protocol_version: None,
        tls_peer_subject_name: None,
        num_attempts: 0,
        feedback_report: None,
        when: None,
    }
}

pub fn tail_opts(dir: &Path) -> TailOptions {
    TailOptions {
        log_dir: dir.to_path_buf(),
        follow: false,
        types: Vec::new(),
        since: None,
        json: true,
    }
}

/// Records read back through `tail --json`.
pub fn read_back(opts: TailOptions) -> Vec<LogRecord> {
    let mut out = Vec::new();
    tail(opts, &mut out).unwrap();
    String::from_utf8(out)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

pub fn segments(dir: &Path) -> Vec<std::path::PathBuf> {
    let mut v: Vec<_> = fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    v.sort();
    v
}

pub fn mode(path: &Path) -> u32 {
    use std::os::unix::fs::PermissionsExt;
    fs::metadata(path).unwrap().permissions().mode()
}

/// Poll `f` until it holds, for at most `limit`.
pub async fn eventually(limit: Duration, mut f: impl FnMut() -> bool) -> bool {
    let deadline = tokio::time::Instant::now() + limit;
    while tokio::time::Instant::now() < deadline {
        if f() {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    f()
}
