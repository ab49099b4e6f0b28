mod common;

use std::collections::HashMap;
use std::time::Duration;

use common::*;
use hermod_logging::{LocalLogConfig, Logger, PerRecordConfig, RecordType};

fn logger(cfg: LocalLogConfig) -> Logger {
    Logger::new(uuid::Uuid::new_v4(), vec![cfg], vec![], None).unwrap()
}

#[tokio::test]
async fn records_written_are_read_back_by_tail_after_shutdown() {
    let dir = tempfile::tempdir().unwrap();
    let mut cfg = LocalLogConfig::new(dir.path());
    cfg.meta = vec!["x_*".into()];
    cfg.headers = vec!["subject".into()];
    let node = uuid::Uuid::new_v4();
    let log = Logger::new(node, vec![cfg], vec![], None).unwrap();
    let msg = message("ESMTP");
    log.log(event(RecordType::Reception, msg.clone())).await;
    log.log(event(RecordType::Delivery, msg.clone())).await;
    log.shutdown().await;

    let recs = read_back(tail_opts(dir.path()));
    assert_eq!(recs.len(), 2);
    assert_eq!(recs[0].kind, RecordType::Reception);
    assert_eq!(recs[1].kind, RecordType::Delivery);
    let r = &recs[1];
    assert_eq!(r.id, msg.id().to_string());
    assert_eq!(r.sender, "app@example.com");
    assert_eq!(r.recipient, ["ops@nats"]);
    assert_eq!(r.size, msg.data_len() as u64);
    assert_eq!(r.reception_protocol.as_deref(), Some("ESMTP"));
    assert_eq!(r.nodeid, node.hyphenated().to_string());
    assert_eq!(
        serde_json::Value::Object(r.meta.clone()),
        serde_json::json!({"x_tenant": "acme"})
    );
    assert_eq!(r.headers.get("subject"), Some(&serde_json::json!("hello")));
    let created: chrono::DateTime<chrono::Utc> = msg.created().into();
    assert_eq!(r.created, created.timestamp());
    for seg in segments(dir.path()) {
        assert_eq!(
            mode(&seg) & 0o222,
            0,
            "closed segment {seg:?} must be read-only"
        );
    }
}

#[tokio::test]
async fn tail_reads_the_unfinished_segment_that_is_still_being_written() {
    let dir = tempfile::tempdir().unwrap();
    let log = logger(LocalLogConfig::new(dir.path()));
    for _ in 0..5 {
        log.log(event(RecordType::Delivery, message("ESMTP"))).await;
    }
    let found = eventually(Duration::from_secs(5), || {
        read_back(tail_opts(dir.path())).len() == 5
    })
    .await;
    assert!(
        found,
        "records of the open segment must become visible after a flush"
    );
    let segs = segments(dir.path());
    assert_eq!(segs.len(), 1);
    assert_ne!(
        mode(&segs[0]) & 0o200,
        0,
        "the open segment is still writable"
    );
    log.shutdown().await;
    assert_eq!(read_back(tail_opts(dir.path())).len(), 5);
}

#[tokio::test]
async fn segments_rotate_at_max_file_size_and_closed_ones_are_read_only() {
    let dir = tempfile::tempdir().unwrap();
    let mut cfg = LocalLogConfig::new(dir.path());
    cfg.max_file_size = 2000;
    let log = logger(cfg);
    for _ in 0..20 {
        log.log(event(RecordType::Delivery, message("ESMTP"))).await;
    }
    // Before shutdown: every full segment is already sealed.
    assert!(
        eventually(Duration::from_secs(5), || segments(dir.path()).len() >= 3).await,
        "20 records of ~900 bytes with a 2000-byte limit need several segments"
    );
    let segs = segments(dir.path());
    for seg in &segs[..segs.len() - 1] {
        assert_eq!(
            mode(seg) & 0o222,
            0,
            "{seg:?} must be read-only once rotated"
        );
    }
    log.shutdown().await;
    assert_eq!(read_back(tail_opts(dir.path())).len(), 20);
    for name in segs
        .iter()
        .map(|p| p.file_name().unwrap().to_str().unwrap().to_string())
    {
        // %Y%m%d-%H%M%S.<9 digits>
        assert_eq!(name.len(), 25, "{name}");
        assert_eq!(&name[8..9], "-");
        assert_eq!(&name[15..16], ".");
    }
}

#[tokio::test]
async fn segments_rotate_after_max_segment_duration_without_new_writes() {
    let dir = tempfile::tempdir().unwrap();
    let mut cfg = LocalLogConfig::new(dir.path());
    cfg.max_segment_duration = Some(Duration::from_millis(300));
    let log = logger(cfg);
    log.log(event(RecordType::Delivery, message("ESMTP"))).await;
    let sealed = eventually(Duration::from_secs(5), || {
        let segs = segments(dir.path());
        segs.len() == 1 && mode(&segs[0]) & 0o222 == 0
    })
    .await;
    assert!(sealed, "the timer must close an aged segment");
    log.log(event(RecordType::Delivery, message("ESMTP"))).await;
    assert!(eventually(Duration::from_secs(5), || segments(dir.path()).len() == 2).await);
    log.shutdown().await;
    assert_eq!(read_back(tail_opts(dir.path())).len(), 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_after_ten_thousand_quick_logs_leaves_every_record_on_disk() {
    let dir = tempfile::tempdir().unwrap();
    let mut cfg = LocalLogConfig::new(dir.path());
    cfg.back_pressure = 256;
    cfg.max_file_size = 1_000_000;
    let log = logger(cfg);
    let mut tasks = Vec::new();
    for _ in 0..4 {
        let log = log.clone();
        tasks.push(tokio::spawn(async move {
            for _ in 0..2500 {
                log.log(event(RecordType::Delivery, message("ESMTP"))).await;
            }
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
    log.shutdown().await;
    assert_eq!(log.queue_depth(), 0);
    let recs = read_back(tail_opts(dir.path()));
    assert_eq!(recs.len(), 10_000);
    let ids: std::collections::HashSet<_> = recs.iter().map(|r| r.id.clone()).collect();
    assert_eq!(ids.len(), 10_000);
    for seg in segments(dir.path()) {
        assert_eq!(mode(&seg) & 0o222, 0);
    }
}

#[tokio::test]
async fn per_record_enable_false_suppresses_that_type_and_any_sets_the_default() {
    let dir = tempfile::tempdir().unwrap();
    let mut cfg = LocalLogConfig::new(dir.path());
    let off = PerRecordConfig {
        enable: false,
        ..Default::default()
    };
    cfg.per_record = HashMap::from([(RecordType::Reception, off)]);
    let log = logger(cfg);
    log.log(event(RecordType::Reception, message("ESMTP")))
        .await;
    log.log(event(RecordType::Delivery, message("ESMTP"))).await;
    log.shutdown().await;
    let kinds: Vec<_> = read_back(tail_opts(dir.path()))
        .iter()
        .map(|r| r.kind)
        .collect();
    assert_eq!(kinds, [RecordType::Delivery]);

    let dir2 = tempfile::tempdir().unwrap();
    let mut cfg = LocalLogConfig::new(dir2.path());
    cfg.per_record = HashMap::from([
        (
            RecordType::Any,
            PerRecordConfig {
                enable: false,
                ..Default::default()
            },
        ),
        (RecordType::Bounce, PerRecordConfig::default()),
    ]);
    let log = logger(cfg);
    log.log(event(RecordType::Delivery, message("ESMTP"))).await;
    log.log(event(RecordType::Bounce, message("ESMTP"))).await;
    log.shutdown().await;
    let kinds: Vec<_> = read_back(tail_opts(dir2.path()))
        .iter()
        .map(|r| r.kind)
        .collect();
    assert_eq!(kinds, [RecordType::Bounce]);
}

#[tokio::test]
async fn start_up_seals_files_left_in_the_log_dir() {
    let dir = tempfile::tempdir().unwrap();
    let stale = dir.path().join("20250101-000000.000000000");
    std::fs::write(&stale, b"").unwrap();
    assert_ne!(mode(&stale) & 0o200, 0);
    let log = logger(LocalLogConfig::new(dir.path()));
    assert_eq!(mode(&stale) & 0o222, 0);
    log.shutdown().await;
}

#[tokio::test]
async fn a_disabled_logger_accepts_events_and_writes_nothing() {
    let log = Logger::disabled();
    log.log(event(RecordType::Delivery, message("ESMTP"))).await;
    log.shutdown().await;
    assert_eq!(log.queue_depth(), 0);
}
