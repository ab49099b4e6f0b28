//! A full file system: stores fail with an error (no panic), and the spool
//! works again once space is freed. Needs permission to mount a tmpfs (root): without it
//! the tests fail, saying so.

mod common;

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use common::{bounded, message};
use hermod_spool::{Spool, SpoolDefinition, SpoolError, SpoolName, SpoolOptions};

/// Unmounts on drop, after the spool using it has been dropped.
struct Tmpfs {
    path: PathBuf,
}

impl Tmpfs {
    fn mount(path: &Path, size: &str) -> Result<Self, String> {
        let out = Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={size}"), "tmpfs"])
            .arg(path)
            .output()
            .map_err(|e| format!("cannot run mount: {e}"))?;
        if !out.status.success() {
            return Err(String::from_utf8_lossy(&out.stderr).trim().to_string());
        }
        Ok(Self {
            path: path.to_path_buf(),
        })
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg(&self.path).status();
    }
}

/// Write zeros until the file system refuses more.
fn fill(path: &Path) {
    let mut f = std::fs::File::create(path).expect("create filler");
    let chunk = vec![0u8; 64 * 1024];
    loop {
        if f.write_all(&chunk).is_err() {
            break;
        }
    }
    // Small writes take the last partial blocks too.
    while f.write_all(&[0u8; 512]).is_ok() {}
    let _ = f.sync_all();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn full_disk_fails_stores_with_an_error_and_recovers_after_space_is_freed() {
    full_disk_round_trip(true).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn full_disk_with_split_data_and_meta_paths_leaves_nothing_half_written() {
    full_disk_round_trip(false).await;
}

async fn full_disk_round_trip(shared: bool) {
    let dir = tempfile::tempdir().expect("tempdir");
    // Mounting needs root (CI runs as root); elsewhere the test fails and says why, rather
    // than passing without having run.
    let _mount = Tmpfs::mount(dir.path(), "8m").unwrap_or_else(|reason| {
        panic!("this test needs to mount a tmpfs (run as root): {reason}")
    });
    let (data_dir, meta_dir) = if shared {
        (dir.path().join("spool"), dir.path().join("spool"))
    } else {
        (dir.path().join("data"), dir.path().join("meta"))
    };
    // A small memtable keeps RocksDB's own flushes within the tiny file
    // system once space is back.
    let mut defs = vec![
        SpoolDefinition::new(SpoolName::Data, &data_dir),
        SpoolDefinition::new(SpoolName::Meta, &meta_dir),
    ];
    for d in &mut defs {
        d.rocks_params
            .insert("write_buffer_size".into(), "1048576".into());
    }
    let spool = Spool::open(&defs, SpoolOptions::default()).expect("open on tmpfs");
    bounded(spool.store(&message(0, 1000)))
        .await
        .expect("store before the disk fills");

    let filler = dir.path().join("filler");
    fill(&filler);
    let err = spool
        .check_free_space()
        .expect_err("full disk is below the minimum");
    assert!(matches!(err, SpoolError::Full(_)), "{err:?}");

    // RocksDB preallocates its WAL, so the first writes after the disk
    // fills may still land; keep writing until the file system says no.
    let mut refused = None;
    for i in 0..64 {
        let m = message(100 + i, 256 * 1024);
        match bounded(spool.store(&m)).await {
            Ok(()) => continue,
            Err(e) => {
                refused = Some((m, e));
                break;
            }
        }
    }
    let (big, err) = refused.expect("a store on a full disk must fail");
    assert!(
        matches!(err, SpoolError::Full(_)),
        "ENOSPC must be reported as Full: {err:?}"
    );
    assert!(
        big.is_data_dirty(),
        "a failed store must not mark the message clean"
    );

    std::fs::remove_file(&filler).expect("free space");
    // RocksDB resumes from a no-space error in the background; allow it time.
    let deadline = Instant::now() + Duration::from_secs(60);
    let stored_id = loop {
        let m = message(2, 64 * 1024);
        match bounded(spool.store(&m)).await {
            Ok(()) => break m.id(),
            Err(e) if Instant::now() < deadline => {
                tracing::debug!(error = %e, "spool not writable yet");
                tokio::time::sleep(Duration::from_millis(250)).await;
            }
            Err(e) => panic!("spool did not recover after space was freed: {e}"),
        }
    };
    bounded(spool.store(&big))
        .await
        .expect("the refused message can be stored now");
    spool.shutdown().await;
    drop(spool);

    let spool = Spool::open(&defs, SpoolOptions::default()).expect("reopen");
    let ids: Vec<_> = spool
        .enumerate()
        .expect("enumerate")
        .map(|m| m.id())
        .collect();
    assert!(
        ids.contains(&stored_id) && ids.contains(&big.id()),
        "{ids:?}"
    );
    let data = bounded(spool.load_data(big.id())).await.expect("data");
    assert_eq!(data, big.data().expect("data"));
    spool.shutdown().await;
}
