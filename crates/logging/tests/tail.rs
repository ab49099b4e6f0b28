mod common;

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use common::*;
use hermod_logging::{
    tail, tail_reporting, tail_until, EnhancedCode, LocalLogConfig, Logger, RecordType, Response,
};

async fn write_mixed(dir: &std::path::Path) -> String {
    let log = Logger::new(
        uuid::Uuid::new_v4(),
        vec![LocalLogConfig::new(dir)],
        vec![],
        None,
    )
    .unwrap();
    let msg = message("ESMTP");
    log.log(event(RecordType::Reception, msg.clone())).await;
    let mut bounce = event(RecordType::Bounce, msg.clone());
    bounce.response = Response::new(
        500,
        Some(EnhancedCode {
            class: 5,
            subject: 0,
            detail: 0,
        }),
        "nope\r\nreally",
    );
    log.log(bounce).await;
    log.log(event(RecordType::Delivery, message("ESMTP"))).await;
    log.shutdown().await;
    msg.id().to_string()
}

#[tokio::test]
async fn tail_filters_by_type_and_finds_the_bounce() {
    let dir = tempfile::tempdir().unwrap();
    let id = write_mixed(dir.path()).await;
    let mut opts = tail_opts(dir.path());
    opts.types = vec![RecordType::Bounce];
    let recs = read_back(opts);
    assert_eq!(recs.len(), 1);
    assert_eq!(recs[0].kind, RecordType::Bounce);
    assert_eq!(recs[0].id, id);
    assert_eq!(recs[0].response.content, "nope really");
}

#[tokio::test]
async fn tail_since_excludes_older_records() {
    let dir = tempfile::tempdir().unwrap();
    write_mixed(dir.path()).await;
    let mut opts = tail_opts(dir.path());
    opts.since = Some(Duration::from_secs(3600));
    assert_eq!(read_back(opts.clone()).len(), 3);
    // Once a second has passed, a zero window leaves nothing.
    tokio::time::sleep(Duration::from_millis(1100)).await;
    opts.since = Some(Duration::ZERO);
    assert_eq!(read_back(opts).len(), 0);
}

#[tokio::test]
async fn human_output_is_one_summary_line_per_record() {
    let dir = tempfile::tempdir().unwrap();
    let id = write_mixed(dir.path()).await;
    let mut opts = tail_opts(dir.path());
    opts.json = false;
    opts.types = vec![RecordType::Bounce];
    let mut out = Vec::new();
    tail(opts, &mut out).unwrap();
    let text = String::from_utf8(out).unwrap();
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(lines.len(), 1, "{text}");
    let l = lines[0];
    for part in [
        "Bounce",
        id.as_str(),
        "app@example.com -> ops@nats",
        "queue=nats",
        "500 5.0.0 nope really",
    ] {
        assert!(l.contains(part), "{part:?} missing from {l:?}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn follow_picks_up_new_records_and_new_segments() {
    let dir = tempfile::tempdir().unwrap();
    let mut cfg = LocalLogConfig::new(dir.path());
    cfg.max_file_size = 1500;
    let log = Logger::new(uuid::Uuid::new_v4(), vec![cfg], vec![], None).unwrap();
    log.log(event(RecordType::Delivery, message("ESMTP"))).await;

    let stop = Arc::new(AtomicBool::new(false));
    let out = Arc::new(parking_lot::Mutex::new(Vec::<u8>::new()));
    let follower = {
        let (stop, out, dir) = (stop.clone(), out.clone(), dir.path().to_path_buf());
        std::thread::spawn(move || {
            let mut opts = tail_opts(&dir);
            opts.follow = true;
            let mut buf = SharedBuf(out);
            tail_until(opts, &mut buf, &|| stop.load(Ordering::Relaxed)).unwrap();
        })
    };
    for _ in 0..5 {
        log.log(event(RecordType::Delivery, message("ESMTP"))).await;
    }
    let lines = || String::from_utf8_lossy(&out.lock()).lines().count();
    let all = eventually(Duration::from_secs(10), || lines() == 6).await;
    stop.store(true, Ordering::Relaxed);
    log.shutdown().await;
    follower.join().unwrap();
    assert!(all, "follow saw {} of 6 records", lines());
    assert!(
        segments(dir.path()).len() > 1,
        "the test must span several segments"
    );
}

struct SharedBuf(Arc<parking_lot::Mutex<Vec<u8>>>);

impl std::io::Write for SharedBuf {
    fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
        self.0.lock().extend_from_slice(b);
        Ok(b.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

#[test]
fn tail_of_a_missing_directory_is_an_error_naming_it() {
    let err = tail(
        tail_opts(std::path::Path::new("/nonexistent/hermod-logs")),
        &mut Vec::new(),
    )
    .unwrap_err();
    assert!(
        err.to_string().contains("/nonexistent/hermod-logs"),
        "{err}"
    );
}

#[tokio::test]
async fn tail_reports_each_segment_of_its_first_pass_and_ends_at_the_total() {
    let dir = tempfile::tempdir().unwrap();
    write_mixed(dir.path()).await;
    // Copies of the sealed segment stand for a backlog of segments.
    let first = segments(dir.path()).remove(0);
    for i in 0..4 {
        std::fs::copy(&first, dir.path().join(format!("zz-copy-{i}"))).unwrap();
    }
    let seen = std::sync::Mutex::new(Vec::new());
    let mut out = Vec::new();
    tail_reporting(
        tail_opts(dir.path()),
        &mut out,
        &|| false,
        &|done, total| seen.lock().unwrap().push((done, total)),
    )
    .unwrap();
    assert_eq!(
        seen.into_inner().unwrap(),
        vec![(0, 5), (1, 5), (2, 5), (3, 5), (4, 5), (5, 5)]
    );
    // Every copy was read: three records each.
    assert_eq!(String::from_utf8(out).unwrap().lines().count(), 15);
}
