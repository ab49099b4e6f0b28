//! Directories that must survive a power loss. POSIX keeps a new name (a
//! file's or a directory's) only once the directory holding it is fsynced.
//! RocksDB syncs its DB directory when it creates files there, but never the
//! directories above it, so the spool makes the path to its DB directory
//! durable itself. ext4 and XFS happen to commit a `mkdir` with the next
//! fsync of anything, which hides the omission; on lossyfs, which keeps only
//! what POSIX promises (`crates/hermod/tests/powerloss.rs`), every power cut
//! took the whole spool away until this was done.

use std::io;
use std::path::Path;

pub(crate) fn sync_dir(dir: &Path) -> io::Result<()> {
    std::fs::File::open(dir)?.sync_all()
}

/// `create_dir_all`, then fsync the parent of every level: failing where
/// this call created the level, best effort above (an earlier start may
/// have created those and died before syncing; a parent it may not read,
/// such as a `0711` home directory, is left alone).
pub(crate) fn create_dir_durably(dir: &Path) -> io::Result<()> {
    let missing: Vec<&Path> = dir
        .ancestors()
        .take_while(|p| !p.as_os_str().is_empty() && !p.exists())
        .collect();
    std::fs::create_dir_all(dir)?;
    for level in dir.ancestors().take_while(|p| !p.as_os_str().is_empty()) {
        let parent = match level.parent() {
            Some(p) if p.as_os_str().is_empty() => Path::new("."),
            Some(p) => p,
            None => break,
        };
        match sync_dir(parent) {
            Err(e) if missing.contains(&level) => return Err(e),
            Err(e) => tracing::debug!(dir = %parent.display(), error = %e,
                "not syncing a spool path's existing parent"),
            Ok(()) => {}
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn creates_every_missing_level_and_accepts_existing_ones() {
        let tmp = tempfile::tempdir().unwrap();
        let deep = tmp.path().join("a/b/db");
        create_dir_durably(&deep).unwrap();
        assert!(deep.is_dir());
        create_dir_durably(&deep).unwrap();
    }
}
