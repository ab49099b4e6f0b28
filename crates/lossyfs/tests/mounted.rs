//! lossyfs through a real mount: ordinary file calls (write, fsync, rename,
//! unlink, directory fsync), then a power cut and a remount. Needs
//! /dev/fuse and root (or fusermount3); without them the test fails, saying
//! so, rather than passing without having run.

use std::fs::{File, OpenOptions};
use std::io::{Read, Write};
use std::path::Path;

fn sync_dir(dir: &Path) {
    File::open(dir).unwrap().sync_all().unwrap();
}

fn read(path: &Path) -> Option<String> {
    let mut s = String::new();
    File::open(path).ok()?.read_to_string(&mut s).ok()?;
    Some(s)
}

#[test]
fn a_power_cut_keeps_exactly_what_was_fsynced_through_a_real_mount() {
    let tmp = tempfile::tempdir().unwrap();
    let (store, mnt) = (tmp.path().join("store"), tmp.path().join("mnt"));
    std::fs::create_dir_all(&mnt).unwrap();
    let fs = lossyfs::mount(&store, &mnt).unwrap_or_else(|e| panic!("{e}"));

    let db = mnt.join("db");
    std::fs::create_dir(&db).unwrap();
    sync_dir(&mnt);
    // A log with one synced and one unsynced record.
    let mut log = File::create(db.join("000001.log")).unwrap();
    log.write_all(b"synced;").unwrap();
    log.sync_data().unwrap();
    log.write_all(b"unsynced;").unwrap();
    // CURRENT written through a temporary file, fsynced, renamed.
    let mut tmp_current = File::create(db.join("CURRENT.tmp")).unwrap();
    tmp_current.write_all(b"MANIFEST-1\n").unwrap();
    tmp_current.sync_all().unwrap();
    sync_dir(&db);
    std::fs::rename(db.join("CURRENT.tmp"), db.join("CURRENT")).unwrap();
    // A file created and synced, in a directory that was not synced after.
    let mut orphan = File::create(db.join("orphan")).unwrap();
    orphan.write_all(b"x").unwrap();
    orphan.sync_all().unwrap();
    assert_eq!(
        read(&db.join("000001.log")).as_deref(),
        Some("synced;unsynced;")
    );

    fs.cut_power();
    // After the cut nothing gets through, not even reads.
    assert!(OpenOptions::new()
        .read(true)
        .open(db.join("CURRENT"))
        .is_err());
    drop((log, tmp_current, orphan));
    let fs = fs.restart().unwrap();

    assert_eq!(read(&db.join("000001.log")).as_deref(), Some("synced;"));
    assert_eq!(read(&db.join("CURRENT")), None, "the rename was not synced");
    assert_eq!(
        read(&db.join("CURRENT.tmp")).as_deref(),
        Some("MANIFEST-1\n")
    );
    assert_eq!(read(&db.join("orphan")), None);

    // The same rename, synced this time, survives.
    std::fs::rename(db.join("CURRENT.tmp"), db.join("CURRENT")).unwrap();
    sync_dir(&db);
    std::fs::remove_file(db.join("000001.log")).unwrap();
    fs.cut_power();
    let fs = fs.restart().unwrap();
    assert_eq!(read(&db.join("CURRENT")).as_deref(), Some("MANIFEST-1\n"));
    assert_eq!(read(&db.join("CURRENT.tmp")), None);
    assert_eq!(
        read(&db.join("000001.log")).as_deref(),
        Some("synced;"),
        "the unlink was not synced"
    );
    assert!(fs.refused().is_empty(), "refused: {:?}", fs.refused());
}
