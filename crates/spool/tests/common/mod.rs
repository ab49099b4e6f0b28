#![allow(dead_code)]

use std::future::Future;
use std::path::Path;
use std::time::Duration;

use hermod_message::{EnvelopeAddress, Message, SpoolId};
use serde_json::{json, Map};

pub fn addr(s: &str) -> EnvelopeAddress {
    EnvelopeAddress::parse(s).expect("test address")
}

pub fn message(i: usize, size: usize) -> Message {
    let mut meta = Map::new();
    meta.insert("n".into(), json!(i));
    meta.insert("queue".into(), json!(format!("q{}", i % 7)));
    let mut body = format!("Subject: message {i}\r\n\r\n").into_bytes();
    while body.len() < size {
        body.extend_from_slice(format!("line {i} {}\r\n", body.len()).as_bytes());
    }
    Message::new(
        SpoolId::new(),
        addr("sender@example.com"),
        vec![addr(&format!("rcpt{i}@example.net"))],
        meta,
        body,
    )
}

/// Every async test runs under this bound so a hung writer fails the test.
pub async fn bounded<T>(f: impl Future<Output = T>) -> T {
    tokio::time::timeout(Duration::from_secs(120), f)
        .await
        .expect("test exceeded its time bound")
}

/// Open the meta family directly, as a crash or a bad disk would leave it.
pub fn raw_db(spool_path: &Path) -> rocksdb::DB {
    let mut opts = rocksdb::Options::default();
    opts.create_missing_column_families(true);
    rocksdb::DB::open_cf(&opts, spool_path.join("db"), ["default", "data", "meta"])
        .expect("open spool db directly")
}
