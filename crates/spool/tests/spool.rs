//! The spool against real RocksDB instances in temporary directories.

mod common;

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use common::{bounded, message, raw_db};
use hermod_message::{Message, SpoolId, LOG_RECORD_KEY};
use hermod_spool::{Spool, SpoolDefinition, SpoolError, SpoolName, SpoolOptions, Threshold};
use serde_json::json;

fn shared_path_defs(dir: &std::path::Path) -> Vec<SpoolDefinition> {
    vec![
        SpoolDefinition::new(SpoolName::Data, dir.join("both")),
        SpoolDefinition::new(SpoolName::Meta, dir.join("both")),
    ]
}

async fn store_reopen_enumerate(open: impl Fn() -> Spool) {
    let spool = open();
    let mut expected: HashMap<SpoolId, Message> = HashMap::new();
    let mut tasks = tokio::task::JoinSet::new();
    // More than one of enumeration's read-back chunks (1,024 messages).
    for i in 0..2500 {
        let m = message(i, 200 + i * 7);
        expected.insert(m.id(), m.clone());
        let s = spool.clone();
        tasks.spawn(async move { s.store(&m).await });
    }
    while let Some(r) = tasks.join_next().await {
        r.expect("task").expect("store");
    }
    assert!(expected
        .values()
        .all(|m| !m.is_meta_dirty() && !m.is_data_dirty()));
    spool.shutdown().await;
    drop(spool);

    let spool = open();
    let found = spool.enumerate().expect("enumerate");
    assert_eq!(found.corrupt_moved(), 0);
    assert_eq!(found.orphans_removed(), 0);
    assert_eq!(found.len(), 2500);
    let found: Vec<_> = found.collect();
    assert_eq!(found.len(), 2500);
    let distinct: std::collections::HashSet<SpoolId> = found.iter().map(|m| m.id()).collect();
    assert_eq!(distinct.len(), 2500, "every message is enumerated once");
    for msg in found {
        let id = msg.id();
        let want = expected.get(&id).expect("enumerated id was stored");
        assert_eq!(msg.sender(), want.sender());
        assert_eq!(msg.recipients(), want.recipients());
        assert_eq!(msg.meta(), want.meta());
        let data = spool.load_data(id).await.expect("data");
        assert_eq!(data, want.data().expect("original data"));
    }
    spool.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn stored_messages_survive_reopen_with_meta_and_data_intact() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().to_path_buf();
    bounded(store_reopen_enumerate(|| {
        Spool::open_dir(&path, SpoolOptions::default()).expect("open")
    }))
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn stored_messages_survive_reopen_when_data_and_meta_share_a_path() {
    let dir = tempfile::tempdir().expect("tempdir");
    let defs = shared_path_defs(dir.path());
    bounded(store_reopen_enumerate(|| {
        Spool::open(&defs, SpoolOptions::default()).expect("open")
    }))
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_stores_share_group_commits() {
    let dir = tempfile::tempdir().expect("tempdir");
    let spool = Spool::open_dir(dir.path(), SpoolOptions::default()).expect("open");
    bounded(async {
        let mut tasks = tokio::task::JoinSet::new();
        for i in 0..200 {
            let s = spool.clone();
            tasks.spawn(async move { s.store(&message(i, 1024)).await });
        }
        while let Some(r) = tasks.join_next().await {
            r.expect("task").expect("store");
        }
    })
    .await;
    let stats = spool.stats();
    assert_eq!(stats.messages_written, 200);
    assert!(
        stats.group_commits < stats.messages_written,
        "expected shared fsyncs, got {stats:?}"
    );
    // Separate data and meta paths: at most two synced writes per group.
    assert!(stats.wal_syncs <= 2 * stats.group_commits, "{stats:?}");
    spool.shutdown().await;
}

#[tokio::test]
async fn store_many_is_one_group_commit() {
    let dir = tempfile::tempdir().expect("tempdir");
    let spool = Spool::open_dir(dir.path(), SpoolOptions::default()).expect("open");
    let msgs: Vec<Message> = (0..50).map(|i| message(i, 512)).collect();
    let results = bounded(spool.store_many(&msgs)).await;
    assert!(results.iter().all(Result::is_ok), "{results:?}");
    let stats = spool.stats();
    assert_eq!((stats.group_commits, stats.messages_written), (1, 50));
    spool.shutdown().await;
}

#[tokio::test]
async fn clean_messages_are_not_rewritten_and_meta_only_changes_keep_data() {
    let dir = tempfile::tempdir().expect("tempdir");
    let spool = Spool::open_dir(dir.path(), SpoolOptions::default()).expect("open");
    let m = message(1, 2048);
    bounded(spool.store(&m)).await.expect("store");
    bounded(spool.store(&m)).await.expect("store clean");
    assert_eq!(
        spool.stats().group_commits,
        1,
        "a clean message needs no write"
    );

    m.set_meta("queue", json!("elsewhere"));
    m.unload_data();
    assert!(!m.is_data_loaded());
    bounded(spool.store(&m)).await.expect("meta-only store");
    spool.shutdown().await;
    drop(spool);

    let spool = Spool::open_dir(dir.path(), SpoolOptions::default()).expect("reopen");
    let msgs: Vec<Message> = spool.enumerate().expect("enumerate").collect();
    assert_eq!(msgs.len(), 1);
    assert_eq!(msgs[0].get_meta("queue"), Some(json!("elsewhere")));
    assert!(!msgs[0].is_data_loaded(), "enumeration must not load data");
    let data = bounded(spool.load_data(m.id())).await.expect("data kept");
    assert!(data.starts_with(b"Subject: message 1"));
    spool.shutdown().await;
}

/// A message shaped like a log hook's: its data is its meta `log_record`
/// text plus a newline, in one buffer.
fn hook_message(i: usize) -> Message {
    let line = bytes::Bytes::from(format!("{{\"type\":\"Delivery\",\"n\":{i},\"x\":1.50}}\n"));
    let m = message(i, 10);
    m.set_data(line.clone());
    m.set_meta_json_lazy(LOG_RECORD_KEY, line.slice(..line.len() - 1));
    m
}

#[tokio::test]
async fn a_log_hook_message_is_stored_without_a_data_copy_and_restored_exactly() {
    let dir = tempfile::tempdir().expect("tempdir");
    let spool = Spool::open_dir(dir.path(), SpoolOptions::default()).expect("open");
    let hook = hook_message(1);
    let plain = message(2, 300);
    let results = bounded(spool.store_many(&[hook.clone(), plain.clone()])).await;
    assert!(results.iter().all(Result::is_ok), "{results:?}");
    let err = bounded(spool.load_data(hook.id()))
        .await
        .expect_err("the data spool holds no copy");
    assert!(matches!(err, SpoolError::NotFound(_)), "{err:?}");
    hook.unload_data();
    assert!(
        hook.is_data_loaded(),
        "bytes only the meta holds stay loaded"
    );
    spool.shutdown().await;
    drop(spool);

    let spool = Spool::open_dir(dir.path(), SpoolOptions::default()).expect("reopen");
    let found = spool.enumerate().expect("enumerate");
    assert_eq!((found.corrupt_moved(), found.orphans_removed()), (0, 0));
    let back: HashMap<SpoolId, Message> = found.map(|m| (m.id(), m)).collect();
    let restored = &back[&hook.id()];
    assert_eq!(restored.data().expect("loaded"), hook.data().unwrap());
    assert_eq!(
        restored.get_meta(LOG_RECORD_KEY),
        hook.get_meta(LOG_RECORD_KEY)
    );
    assert!(!back[&plain.id()].is_data_loaded());

    // Edited after the restart, the record no longer matches the data: the
    // data moves to the data spool, and a second restart still finds it.
    restored.set_meta(LOG_RECORD_KEY, json!("edited"));
    bounded(spool.store(restored)).await.expect("store edited");
    bounded(spool.remove(plain.id())).await.expect("remove");
    spool.shutdown().await;
    drop(spool);

    let spool = Spool::open_dir(dir.path(), SpoolOptions::default()).expect("reopen again");
    let msgs: Vec<Message> = spool.enumerate().expect("enumerate").collect();
    assert_eq!(msgs.len(), 1);
    assert_eq!(msgs[0].get_meta(LOG_RECORD_KEY), Some(json!("edited")));
    let data = bounded(spool.load_data(hook.id()))
        .await
        .expect("data stored");
    assert_eq!(data, hook.data().unwrap());
    bounded(spool.remove(hook.id())).await.expect("remove");
    assert_eq!(spool.enumerate().expect("enumerate").len(), 0);
    spool.shutdown().await;
}

#[tokio::test]
async fn removed_messages_are_gone_after_reopen() {
    let dir = tempfile::tempdir().expect("tempdir");
    let spool = Spool::open_dir(dir.path(), SpoolOptions::default()).expect("open");
    let msgs: Vec<Message> = (0..5).map(|i| message(i, 300)).collect();
    for r in bounded(spool.store_many(&msgs)).await {
        r.expect("store");
    }
    bounded(spool.remove(msgs[1].id())).await.expect("remove");
    bounded(spool.remove(msgs[3].id())).await.expect("remove");
    assert_eq!(spool.stats().removals, 2);
    spool.shutdown().await;
    drop(spool);

    let spool = Spool::open_dir(dir.path(), SpoolOptions::default()).expect("reopen");
    let found = spool.enumerate().expect("enumerate");
    assert_eq!(
        found.orphans_removed(),
        0,
        "removal must delete data as well as meta"
    );
    let mut ids: Vec<SpoolId> = found.map(|m| m.id()).collect();
    ids.sort();
    let mut want = vec![msgs[0].id(), msgs[2].id(), msgs[4].id()];
    want.sort();
    assert_eq!(ids, want);
    let err = bounded(spool.load_data(msgs[1].id()))
        .await
        .expect_err("removed");
    assert!(
        matches!(err, SpoolError::NotFound(id) if id == msgs[1].id()),
        "{err:?}"
    );
    spool.shutdown().await;
}

#[derive(Clone, Default)]
struct Captured(Arc<Mutex<Vec<u8>>>);

impl std::io::Write for Captured {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().expect("log buffer").extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

#[tokio::test]
async fn corrupt_entries_are_moved_aside_and_logged_and_orphans_removed() {
    let dir = tempfile::tempdir().expect("tempdir");
    let spool = Spool::open_dir(dir.path(), SpoolOptions::default()).expect("open");
    let good: Vec<Message> = (0..3).map(|i| message(i, 400)).collect();
    for r in bounded(spool.store_many(&good)).await {
        r.expect("store");
    }
    spool.shutdown().await;
    drop(spool);

    let garbage = SpoolId::new();
    let no_data = SpoolId::new();
    let orphan = SpoolId::new();
    {
        let meta = raw_db(&dir.path().join("meta"));
        let cf = meta.cf_handle("meta").expect("meta cf");
        meta.put_cf(cf, garbage.as_bytes(), b"{not json")
            .expect("put");
        meta.put_cf(
            cf,
            no_data.as_bytes(),
            br#"{"sender":"a@b.c","recipient":"d@e.f"}"#,
        )
        .expect("put");
        let data = raw_db(&dir.path().join("data"));
        let cf = data.cf_handle("data").expect("data cf");
        data.put_cf(cf, garbage.as_bytes(), b"garbage's body")
            .expect("put");
        data.put_cf(cf, orphan.as_bytes(), b"orphan body")
            .expect("put");
    }

    let spool = Spool::open_dir(dir.path(), SpoolOptions::default()).expect("reopen");
    let logs = Captured::default();
    let writer = logs.clone();
    let subscriber = tracing_subscriber::fmt()
        .with_writer(move || writer.clone())
        .with_ansi(false)
        .finish();
    let found =
        tracing::subscriber::with_default(subscriber, || spool.enumerate()).expect("enumerate");
    assert_eq!(found.corrupt_moved(), 2);
    assert_eq!(found.orphans_removed(), 1);
    let mut reported: Vec<String> = found
        .corrupt()
        .iter()
        .map(|e| match e {
            SpoolError::Corrupt { id, .. } => id.clone(),
            other => panic!("not a Corrupt error: {other:?}"),
        })
        .collect();
    reported.sort();
    let mut want_reported = vec![garbage.to_string(), no_data.to_string()];
    want_reported.sort();
    assert_eq!(reported, want_reported);
    let mut ids: Vec<SpoolId> = found.map(|m| m.id()).collect();
    ids.sort();
    let mut want: Vec<SpoolId> = good.iter().map(Message::id).collect();
    want.sort();
    assert_eq!(ids, want, "valid entries are still returned");

    let text = String::from_utf8(logs.0.lock().expect("logs").clone()).expect("utf8 logs");
    for (id, reason) in [(garbage, "unreadable meta"), (no_data, "data is missing")] {
        let line = text
            .lines()
            .find(|l| l.contains(&id.to_string()))
            .unwrap_or_else(|| panic!("no log line for {id}: {text}"));
        assert!(line.contains("ERROR") && line.contains(reason), "{line}");
    }

    let corrupt = dir.path().join("meta").join("corrupt");
    assert_eq!(
        std::fs::read(corrupt.join(format!("{garbage}.meta"))).expect("meta"),
        b"{not json"
    );
    assert_eq!(
        std::fs::read(corrupt.join(format!("{garbage}.data"))).expect("data kept aside"),
        b"garbage's body"
    );
    assert!(corrupt.join(format!("{no_data}.meta")).exists());

    for id in [garbage, orphan] {
        let err = bounded(spool.load_data(id))
            .await
            .expect_err("gone from spool");
        assert!(matches!(err, SpoolError::NotFound(_)), "{err:?}");
    }
    // A second pass finds nothing left to fix.
    let again = spool.enumerate().expect("enumerate again");
    assert_eq!(
        (again.corrupt_moved(), again.orphans_removed(), again.len()),
        (0, 0, 3)
    );
    spool.shutdown().await;
}

#[tokio::test]
async fn operations_after_shutdown_report_closed() {
    let dir = tempfile::tempdir().expect("tempdir");
    let spool = Spool::open_dir(dir.path(), SpoolOptions::default()).expect("open");
    spool.shutdown().await;
    let err = bounded(spool.store(&message(1, 10)))
        .await
        .expect_err("closed");
    assert!(matches!(err, SpoolError::Closed), "{err:?}");
    assert!(matches!(spool.enumerate(), Err(SpoolError::Closed)));
    // The database is closed, so the directory can be opened again at once.
    let again = Spool::open_dir(dir.path(), SpoolOptions::default()).expect("reopen");
    again.shutdown().await;
}

#[test]
fn free_space_thresholds_are_enforced() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut defs = vec![
        SpoolDefinition::new(SpoolName::Data, dir.path().join("d")),
        SpoolDefinition::new(SpoolName::Meta, dir.path().join("m")),
    ];
    defs[0].min_free_space = Threshold::Percent(0.0);
    defs[0].min_free_inodes = Threshold::Absolute(0);
    defs[1].min_free_space = Threshold::Percent(0.0);
    defs[1].min_free_inodes = Threshold::Percent(0.0);
    let spool = Spool::open(&defs, SpoolOptions::default()).expect("open");
    spool.check_free_space().expect("no minimum");
    drop(spool);

    defs[1].min_free_space = Threshold::Absolute(u64::MAX);
    let spool = Spool::open(&defs, SpoolOptions::default()).expect("open");
    let err = spool.check_free_space().expect_err("impossible minimum");
    assert!(
        matches!(&err, SpoolError::Full(m) if m.contains("min_free_space")),
        "{err:?}"
    );
}

#[test]
fn opening_requires_both_spools_and_names_the_missing_one() {
    let dir = tempfile::tempdir().expect("tempdir");
    let err = Spool::open(&[], SpoolOptions::default()).expect_err("none defined");
    assert!(
        err.to_string().contains("No spools have been defined"),
        "{err}"
    );
    let defs = [SpoolDefinition::new(SpoolName::Data, dir.path().join("d"))];
    let err = Spool::open(&defs, SpoolOptions::default()).expect_err("meta missing");
    assert!(
        err.to_string().contains("\"meta\" spool is not defined"),
        "{err}"
    );
}

#[test]
fn a_spool_directory_cannot_be_opened_twice_at_once() {
    let dir = tempfile::tempdir().expect("tempdir");
    let first = Spool::open_dir(dir.path(), SpoolOptions::default()).expect("open");
    let err = Spool::open_dir(dir.path(), SpoolOptions::default()).expect_err("locked");
    assert!(
        matches!(err, SpoolError::Io(ref m) if m.contains("lock")),
        "{err:?}"
    );
    drop(first);
    Spool::open_dir(dir.path(), SpoolOptions::default()).expect("open after the first closed");
}

#[tokio::test]
async fn detached_removals_are_applied_before_shutdown_completes_and_cost_no_fsync() {
    let dir = tempfile::tempdir().expect("tempdir");
    let spool = Spool::open_dir(dir.path(), SpoolOptions::default()).expect("open");
    let msgs: Vec<Message> = (0..4).map(|i| message(i, 300)).collect();
    for r in bounded(spool.store_many(&msgs)).await {
        r.expect("store");
    }
    let syncs_before = spool.stats().wal_syncs;
    spool
        .remove_detached([&msgs[0], &msgs[2]])
        .expect("queue removals");
    spool.shutdown().await;
    assert_eq!(
        spool.stats().wal_syncs,
        syncs_before,
        "a group of removals only is not fsynced"
    );
    drop(spool);

    let spool = Spool::open_dir(dir.path(), SpoolOptions::default()).expect("reopen");
    let mut ids: Vec<SpoolId> = spool
        .enumerate()
        .expect("enumerate")
        .map(|m| m.id())
        .collect();
    ids.sort();
    let mut want = vec![msgs[1].id(), msgs[3].id()];
    want.sort();
    assert_eq!(ids, want);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn messages_held_as_ids_are_read_back_whole_in_request_order() {
    let dir = tempfile::tempdir().expect("tempdir");
    let spool = Spool::open_dir(dir.path(), SpoolOptions::default()).expect("open");
    let msgs: Vec<Message> = (0..5).map(|i| message(i, 300 + i)).collect();
    for m in &msgs {
        m.set_meta("tag", json!({ "kept": ["while", "parked"] }));
    }
    for r in bounded(spool.store_many(&msgs)).await {
        r.expect("store");
    }
    let unknown = SpoolId::new();
    let mut ids: Vec<SpoolId> = msgs.iter().rev().map(|m| m.id()).collect();
    ids.insert(2, unknown);

    let back = bounded(spool.load_messages(ids.clone(), true)).await;
    assert_eq!(back.len(), ids.len());
    for (id, r) in ids.iter().zip(&back) {
        if *id == unknown {
            assert!(
                matches!(r, Err(SpoolError::NotFound(x)) if x == id),
                "{r:?}"
            );
            continue;
        }
        let got = r.as_ref().expect("a stored message reads back");
        let want = msgs.iter().find(|m| m.id() == *id).expect("sent");
        assert_eq!(got.id(), *id, "results come in the order asked");
        assert_eq!(got.sender(), want.sender());
        assert_eq!(got.recipients(), want.recipients());
        assert_eq!(got.meta(), want.meta());
        assert_eq!(
            got.data().expect("bytes loaded"),
            want.data().expect("original")
        );
        assert!(
            got.is_spooled_as_is(),
            "read back, it is what the spool holds"
        );
    }

    let records_only = bounded(spool.load_messages(vec![msgs[0].id()], false)).await;
    let m = records_only[0].as_ref().expect("read back");
    assert!(!m.is_data_loaded(), "without data, only the record is read");
    assert_eq!(m.meta(), msgs[0].meta());
    spool.shutdown().await;
}
