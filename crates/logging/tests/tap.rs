//! The live record tap (crates/logging/src/tap.rs): viewers get each record
//! as its JSON line, a viewer that falls behind loses the oldest records
//! instead of holding up the logger, and records no logger takes still
//! reach a viewer.

mod common;

use common::*;
use hermod_logging::{LocalLogConfig, Logger, RecordType, TAP_CAPACITY};
use tokio::sync::broadcast::error::RecvError;

#[tokio::test]
async fn a_viewer_receives_each_record_as_its_json_line_with_meta_left_out() {
    let dir = tempfile::tempdir().unwrap();
    let mut cfg = LocalLogConfig::new(dir.path());
    cfg.meta = vec!["x_*".into()];
    let log = Logger::new(uuid::Uuid::new_v4(), vec![cfg], vec![], None).unwrap();
    let mut viewer = log.record_tap().subscribe();
    let msg = message("ESMTP");
    log.log(event(RecordType::Delivery, msg.clone())).await;
    let line = viewer.recv().await.expect("the record reaches the viewer");
    assert!(line.ends_with(b"\n"));
    let v: serde_json::Value = serde_json::from_slice(&line).expect("a JSON line");
    assert_eq!(v["type"], "Delivery");
    assert_eq!(v["id"], msg.id().to_string());
    assert_eq!(v["recipient"], "ops@nats");
    assert_eq!(
        v["meta"],
        serde_json::json!({}),
        "the tap shows no meta, whatever the local logs select"
    );
    log.shutdown().await;
}

#[tokio::test]
async fn a_viewer_that_falls_behind_loses_the_oldest_records_and_the_logger_never_waits() {
    let log = Logger::new(uuid::Uuid::new_v4(), vec![], vec![], None).unwrap();
    let mut slow = log.record_tap().subscribe();
    let extra = 10;
    let all = tokio::time::timeout(std::time::Duration::from_secs(30), async {
        for _ in 0..TAP_CAPACITY + extra {
            log.log(event(RecordType::Reception, message("ESMTP")))
                .await;
        }
    })
    .await;
    assert!(all.is_ok(), "logging waited for a viewer that never read");
    match slow.recv().await {
        Err(RecvError::Lagged(n)) => assert_eq!(n as usize, extra),
        other => panic!("expected the oldest records to be lost, got {other:?}"),
    }
    let next = slow.recv().await.expect("the newest records are kept");
    assert!(next.starts_with(br#"{"type":"Reception""#));
}
