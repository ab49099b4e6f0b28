//! The durability rules of `model.rs`, checked on the model itself (no
//! mount needed): what a reboot keeps after each kind of change, synced or
//! not. `tests/mounted.rs` checks the same through a real mount.

use std::ffi::OsStr;
use std::path::Path;

use crate::model::{Model, ROOT};

fn boot(store: &Path) -> Model {
    Model::boot(store).expect("booting the model")
}

/// A power loss and the boot after it.
fn reboot(m: Model) -> Model {
    let store = m.store().to_path_buf();
    drop(m);
    boot(&store)
}

fn name(s: &str) -> &OsStr {
    OsStr::new(s)
}

/// The bytes of `/a/b/...`, or None when some name is missing.
fn content(m: &mut Model, path: &str) -> Option<Vec<u8>> {
    let mut ino = ROOT;
    for part in path.split('/').filter(|p| !p.is_empty()) {
        ino = m.lookup(ino, name(part)).ok()?;
    }
    m.read(ino, 0, u32::MAX).ok()
}

fn new_file(m: &mut Model, dir: u64, file: &str, bytes: &[u8]) -> u64 {
    let ino = m.create(dir, name(file), 0o644).unwrap();
    m.write(ino, 0, bytes).unwrap();
    ino
}

#[test]
fn a_write_without_fsync_is_gone_after_a_power_loss_and_a_synced_one_stays() {
    let store = tempfile::tempdir().unwrap();
    let mut m = boot(store.path());
    let a = new_file(&mut m, ROOT, "a", b"synced");
    new_file(&mut m, ROOT, "b", b"not synced");
    m.fsync(a).unwrap();
    m.fsync(ROOT).unwrap();
    let mut m = reboot(m);
    assert_eq!(content(&mut m, "a").as_deref(), Some(&b"synced"[..]));
    // The name was synced with the directory, the bytes never were.
    assert_eq!(content(&mut m, "b").as_deref(), Some(&b""[..]));
}

#[test]
fn only_the_tail_appended_after_the_last_fsync_is_lost() {
    let store = tempfile::tempdir().unwrap();
    let mut m = boot(store.path());
    let log = new_file(&mut m, ROOT, "000004.log", b"record 1;");
    m.fsync(ROOT).unwrap();
    m.fsync(log).unwrap();
    m.write(log, 9, b"record 2;").unwrap();
    m.fsync(log).unwrap();
    m.write(log, 18, b"record 3;").unwrap();
    let mut m = reboot(m);
    assert_eq!(
        content(&mut m, "000004.log").as_deref(),
        Some(&b"record 1;record 2;"[..])
    );
}

#[test]
fn a_truncate_is_durable_only_with_the_files_fsync() {
    let store = tempfile::tempdir().unwrap();
    let mut m = boot(store.path());
    let f = new_file(&mut m, ROOT, "f", b"abcdef");
    m.fsync(f).unwrap();
    m.fsync(ROOT).unwrap();
    m.truncate(f, 2).unwrap();
    m.write(f, 2, b"XY").unwrap();
    let mut m = reboot(m);
    assert_eq!(content(&mut m, "f").as_deref(), Some(&b"abcdef"[..]));
    let f = m.lookup(ROOT, name("f")).unwrap();
    m.truncate(f, 2).unwrap();
    m.write(f, 2, b"XY").unwrap();
    m.fsync(f).unwrap();
    let mut m = reboot(m);
    assert_eq!(content(&mut m, "f").as_deref(), Some(&b"abXY"[..]));
}

#[test]
fn a_created_file_without_a_directory_fsync_is_gone_even_if_its_bytes_were_synced() {
    let store = tempfile::tempdir().unwrap();
    let mut m = boot(store.path());
    let f = new_file(&mut m, ROOT, "new", b"bytes");
    m.fsync(f).unwrap();
    let mut m = reboot(m);
    assert_eq!(content(&mut m, "new"), None);
    // Nothing names it any more: its durable copy is gone too.
    let leftovers = std::fs::read_dir(store.path().join("durable")).unwrap();
    assert_eq!(leftovers.count(), 0);
}

#[test]
fn a_rename_without_a_directory_fsync_is_reverted_and_a_synced_one_stays() {
    let store = tempfile::tempdir().unwrap();
    let mut m = boot(store.path());
    // RocksDB's CURRENT update: write a temporary file, fsync it, rename
    // it over CURRENT, fsync the directory.
    let old = new_file(&mut m, ROOT, "CURRENT", b"MANIFEST-000001\n");
    m.fsync(old).unwrap();
    let tmp = new_file(&mut m, ROOT, "000002.dbtmp", b"MANIFEST-000002\n");
    m.fsync(tmp).unwrap();
    m.fsync(ROOT).unwrap();
    m.rename(ROOT, name("000002.dbtmp"), ROOT, name("CURRENT"), false)
        .unwrap();
    let mut m = reboot(m);
    assert_eq!(
        content(&mut m, "CURRENT").as_deref(),
        Some(&b"MANIFEST-000001\n"[..])
    );
    assert!(content(&mut m, "000002.dbtmp").is_some());

    m.rename(ROOT, name("000002.dbtmp"), ROOT, name("CURRENT"), false)
        .unwrap();
    m.fsync(ROOT).unwrap();
    let mut m = reboot(m);
    assert_eq!(
        content(&mut m, "CURRENT").as_deref(),
        Some(&b"MANIFEST-000002\n"[..])
    );
    assert_eq!(content(&mut m, "000002.dbtmp"), None);
}

#[test]
fn an_unlink_without_a_directory_fsync_comes_back_with_its_synced_bytes() {
    let store = tempfile::tempdir().unwrap();
    let mut m = boot(store.path());
    let f = new_file(&mut m, ROOT, "old.log", b"kept");
    m.fsync(f).unwrap();
    m.fsync(ROOT).unwrap();
    m.write(f, 4, b" and lost").unwrap();
    m.unlink(ROOT, name("old.log")).unwrap();
    let mut m = reboot(m);
    assert_eq!(content(&mut m, "old.log").as_deref(), Some(&b"kept"[..]));
    m.unlink(ROOT, name("old.log")).unwrap();
    m.fsync(ROOT).unwrap();
    let mut m = reboot(m);
    assert_eq!(content(&mut m, "old.log"), None);
}

#[test]
fn a_new_directory_needs_its_parents_fsync_and_its_own() {
    let store = tempfile::tempdir().unwrap();
    let mut m = boot(store.path());
    let spool = m.mkdir(ROOT, name("spool"), 0o755).unwrap();
    let f = new_file(&mut m, spool, "CURRENT", b"x");
    m.fsync(f).unwrap();
    m.fsync(spool).unwrap();
    // The root never learnt of `spool` durably: all of it is gone.
    let mut m = reboot(m);
    assert!(m.lookup(ROOT, name("spool")).is_err());

    let spool = m.mkdir(ROOT, name("spool"), 0o755).unwrap();
    let f = new_file(&mut m, spool, "CURRENT", b"x");
    m.fsync(f).unwrap();
    m.fsync(ROOT).unwrap();
    // `spool` is durable now, but empty: its own listing was never synced.
    let mut m = reboot(m);
    let spool = m.lookup(ROOT, name("spool")).unwrap();
    assert!(m.lookup(spool, name("CURRENT")).is_err());

    let f = new_file(&mut m, spool, "CURRENT", b"x");
    m.fsync(f).unwrap();
    m.fsync(spool).unwrap();
    let mut m = reboot(m);
    assert_eq!(content(&mut m, "spool/CURRENT").as_deref(), Some(&b"x"[..]));
}

#[test]
fn posix_errors_for_bad_namespace_changes() {
    let store = tempfile::tempdir().unwrap();
    let mut m = boot(store.path());
    let d = m.mkdir(ROOT, name("d"), 0o755).unwrap();
    let sub = m.mkdir(d, name("sub"), 0o755).unwrap();
    new_file(&mut m, sub, "f", b"");
    let code = |r: crate::model::Res<()>| r.map_err(i32::from).err();
    assert_eq!(code(m.rmdir(d, name("sub"))), Some(libc::ENOTEMPTY));
    assert_eq!(
        code(m.rename(ROOT, name("d"), sub, name("d"), false)),
        Some(libc::EINVAL)
    );
    assert_eq!(code(m.unlink(ROOT, name("d"))), Some(libc::EISDIR));
    assert_eq!(
        m.create(sub, name("f"), 0o644).map_err(i32::from).err(),
        Some(libc::EEXIST)
    );
    new_file(&mut m, d, "g", b"");
    assert_eq!(
        code(m.rename(d, name("g"), sub, name("f"), true)),
        Some(libc::EEXIST)
    );
    assert_eq!(code(m.rename(d, name("g"), sub, name("f"), false)), None);
    assert!(m.lookup(d, name("g")).is_err());
}
