//! Start-up enumeration of the meta spool. Entries that cannot be trusted
//! are moved aside (never silently dropped) and data without meta — left by
//! a crash between a commit's two writes — is deleted.

use std::collections::VecDeque;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use hermod_message::{IdError, Message, MessageError, SpoolId, SpoolRecord, SpoolRecordError};
use rocksdb::{WriteBatch, WriteOptions};

use crate::db::{cf, Dbs, DATA_CF, META_CF};
use crate::dirs::{create_dir_durably, sync_dir};
use crate::error::SpoolError;

/// The valid messages found in the spool. Their data stays in the data
/// spool, except for records that carry it themselves (`data_is_log_record`).
///
/// Only their ids are kept after the pass that checks them: the messages are
/// read again, a chunk at a time, as the caller takes them, so starting with a
/// million queued messages never holds them all in memory at once.
pub struct Enumeration {
    dbs: Arc<Dbs>,
    ids: std::vec::IntoIter<SpoolId>,
    chunk: VecDeque<Message>,
    total: usize,
    corrupt: Vec<SpoolError>,
    corrupt_moved: usize,
    corrupt_left: usize,
    orphans_removed: usize,
}

/// Messages read back per spool call while enumerating.
const CHUNK: usize = 1024;

impl Enumeration {
    /// How many valid messages were found.
    pub fn len(&self) -> usize {
        self.total
    }

    pub fn is_empty(&self) -> bool {
        self.total == 0
    }

    /// Every corrupt entry found (`SpoolError::Corrupt`, with id and reason),
    /// whether or not it could be moved aside.
    pub fn corrupt(&self) -> &[SpoolError] {
        &self.corrupt
    }

    /// Corrupt entries moved to `<meta path>/corrupt/`.
    pub fn corrupt_moved(&self) -> usize {
        self.corrupt_moved
    }

    /// Corrupt entries that could not be moved aside (left in place, retried
    /// at the next start-up; never returned as valid).
    pub fn corrupt_left(&self) -> usize {
        self.corrupt_left
    }

    /// Data entries without meta that were deleted.
    pub fn orphans_removed(&self) -> usize {
        self.orphans_removed
    }
}

impl Iterator for Enumeration {
    type Item = Message;
    fn next(&mut self) -> Option<Self::Item> {
        loop {
            if let Some(m) = self.chunk.pop_front() {
                return Some(m);
            }
            let ids: Vec<SpoolId> = self.ids.by_ref().take(CHUNK).collect();
            if ids.is_empty() {
                return None;
            }
            for (r, id) in crate::load::messages(&self.dbs, &ids, false)
                .into_iter()
                .zip(&ids)
            {
                match r {
                    Ok(m) => self.chunk.push_back(m),
                    // Checked moments ago; only a fault reading it again lands here,
                    // and the message stays in the spool for the next start.
                    Err(e) => tracing::error!(%id, error = %e,
                        "a spooled message could not be read back while enumerating; it is queued at the next start"),
                }
            }
        }
    }
    fn size_hint(&self) -> (usize, Option<usize>) {
        (self.chunk.len(), Some(self.chunk.len() + self.ids.len()))
    }
}

/// Why an entry cannot be trusted; its text is the reason logged and
/// carried by `SpoolError::Corrupt`.
#[derive(Debug, thiserror::Error)]
enum CorruptReason {
    #[error("bad key: {0}")]
    Key(#[source] IdError),
    #[error("unreadable meta: {0}")]
    Meta(#[source] MessageError),
    #[error(transparent)]
    EmbeddedData(#[from] SpoolRecordError),
    #[error("message data is missing")]
    NoData,
}

struct CorruptEntry {
    key: Vec<u8>,
    meta: Vec<u8>,
    has_data: bool,
    reason: CorruptReason,
}

pub(crate) fn enumerate(dbs: Arc<Dbs>) -> Result<Enumeration, SpoolError> {
    // Excludes the writer: mid-commit data would otherwise look orphaned.
    let guard = dbs.commit_lock.lock();
    let data_cf = cf(&dbs.data, DATA_CF)?;
    let meta_cf = cf(&dbs.meta, META_CF)?;

    let mut valid = Vec::new();
    let mut corrupt = Vec::new();
    let mut orphans: Vec<Vec<u8>> = Vec::new();
    {
        // Both families are ordered by the raw id, so one merge pass pairs
        // meta with data without a point lookup per message.
        let mut meta_it = dbs.meta.raw_iterator_cf(meta_cf);
        let mut data_it = dbs.data.raw_iterator_cf(data_cf);
        meta_it.seek_to_first();
        data_it.seek_to_first();
        while let (Some(mk), Some(mv)) = (meta_it.key(), meta_it.value()) {
            while let Some(dk) = data_it.key() {
                if dk >= mk {
                    break;
                }
                orphans.push(dk.to_vec());
                data_it.next();
            }
            let has_data = data_it.key() == Some(mk);
            if has_data {
                data_it.next();
            }
            match classify(mk, mv, has_data) {
                Ok(entry) => valid.push(entry),
                Err(reason) => corrupt.push(CorruptEntry {
                    key: mk.to_vec(),
                    meta: mv.to_vec(),
                    has_data,
                    reason,
                }),
            }
            meta_it.next();
        }
        while let Some(dk) = data_it.key() {
            orphans.push(dk.to_vec());
            data_it.next();
        }
        meta_it
            .status()
            .map_err(|e| SpoolError::from_rocks("enumerate meta spool", e))?;
        data_it
            .status()
            .map_err(|e| SpoolError::from_rocks("enumerate data spool", e))?;
    }

    let (corrupt_moved, corrupt_left) = move_aside(&dbs, &corrupt);
    let corrupt_errors = corrupt
        .iter()
        .map(|e| SpoolError::Corrupt {
            id: hex(&e.key),
            reason: e.reason.to_string(),
        })
        .collect();
    let orphans_removed = remove_orphans(&dbs, &orphans)?;
    tracing::info!(
        messages = valid.len(),
        corrupt_moved,
        corrupt_left,
        orphans_removed,
        "spool enumerated"
    );
    let total = valid.len();
    drop(guard);
    Ok(Enumeration {
        dbs,
        ids: valid.into_iter(),
        chunk: VecDeque::new(),
        total,
        corrupt: corrupt_errors,
        corrupt_moved,
        corrupt_left,
        orphans_removed,
    })
}

/// Check one entry; a valid one is kept as its id (see [`Enumeration`]).
fn classify(key: &[u8], meta: &[u8], has_data: bool) -> Result<SpoolId, CorruptReason> {
    let id = SpoolId::from_slice(key).map_err(CorruptReason::Key)?;
    let record = Message::parse_spool_record(meta).map_err(CorruptReason::Meta)?;
    if record.data_is_log_record {
        // The record is the data (a log-hook message; crates/queue/src/hooks/mod.rs);
        // a data-spool entry beside it would be an older version, which the
        // next store or the removal deletes.
        SpoolRecord::embedded_data(meta)?;
        return Ok(id);
    }
    if !has_data {
        return Err(CorruptReason::NoData);
    }
    Ok(id)
}

pub(crate) fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn write_synced(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    let mut f = std::fs::File::create(path)?;
    f.write_all(bytes)?;
    f.sync_all()
}

/// Copy one entry's meta (and data, if any) to files, fsynced, before the
/// caller deletes it from the spool. Returns the meta file's path.
fn save_entry(dbs: &Dbs, dir: &Path, e: &CorruptEntry) -> Result<PathBuf, SpoolError> {
    let name = hex(&e.key);
    let meta_path = dir.join(format!("{name}.meta"));
    write_synced(&meta_path, &e.meta)
        .map_err(|err| SpoolError::from_io(&format!("write {}", meta_path.display()), err))?;
    if e.has_data {
        let data_cf = cf(&dbs.data, DATA_CF)?;
        let data = dbs
            .data
            .get_pinned_cf(data_cf, &e.key)
            .map_err(|err| SpoolError::from_rocks("read corrupt entry data", err))?;
        if let Some(data) = data {
            let data_path = dir.join(format!("{name}.data"));
            write_synced(&data_path, &data).map_err(|err| {
                SpoolError::from_io(&format!("write {}", data_path.display()), err)
            })?;
        }
    }
    Ok(meta_path)
}

/// Returns (moved, left in place).
fn move_aside(dbs: &Dbs, corrupt: &[CorruptEntry]) -> (usize, usize) {
    if corrupt.is_empty() {
        return (0, 0);
    }
    let dir = dbs.corrupt_dir();
    if let Err(e) = create_dir_durably(&dir) {
        tracing::error!(dir = %dir.display(), error = %e, count = corrupt.len(),
            "cannot create the directory for corrupt spool entries; leaving them in place");
        return (0, corrupt.len());
    }
    let mut saved = Vec::new();
    for e in corrupt {
        let id = hex(&e.key);
        match save_entry(dbs, &dir, e) {
            Ok(path) => {
                tracing::error!(id = %id, reason = %e.reason, moved_to = %path.display(),
                    "corrupt spool entry moved aside");
                saved.push(e);
            }
            Err(err) => tracing::error!(id = %id, reason = %e.reason, error = %err,
                "corrupt spool entry could not be moved aside; leaving it in place"),
        }
    }
    if saved.is_empty() {
        return (0, corrupt.len());
    }
    if let Err(e) = sync_dir(&dir) {
        tracing::error!(dir = %dir.display(), error = %e, "cannot sync the corrupt-entry directory; leaving entries in place");
        return (0, corrupt.len());
    }
    match delete_saved(dbs, &saved) {
        Ok(()) => (saved.len(), corrupt.len() - saved.len()),
        Err(e) => {
            tracing::error!(error = %e, "deleting moved-aside spool entries failed; they will be found again at the next start-up");
            (0, corrupt.len())
        }
    }
}

fn delete_saved(dbs: &Dbs, saved: &[&CorruptEntry]) -> Result<(), SpoolError> {
    let data_cf = cf(&dbs.data, DATA_CF)?;
    let meta_cf = cf(&dbs.meta, META_CF)?;
    let mut opts = WriteOptions::default();
    opts.set_sync(true);
    // Meta first, then data, as for any removal.
    let mut meta_batch = WriteBatch::default();
    for e in saved {
        meta_batch.delete_cf(meta_cf, &e.key);
    }
    dbs.meta
        .write_opt(meta_batch, &opts)
        .map_err(|e| SpoolError::from_rocks("delete corrupt meta", e))?;
    let mut data_batch = WriteBatch::default();
    for e in saved.iter().filter(|e| e.has_data) {
        data_batch.delete_cf(data_cf, &e.key);
    }
    if !data_batch.is_empty() {
        dbs.data
            .write_opt(data_batch, &opts)
            .map_err(|e| SpoolError::from_rocks("delete corrupt data", e))?;
    }
    Ok(())
}

fn remove_orphans(dbs: &Dbs, orphans: &[Vec<u8>]) -> Result<usize, SpoolError> {
    if orphans.is_empty() {
        return Ok(0);
    }
    let data_cf = cf(&dbs.data, DATA_CF)?;
    let mut batch = WriteBatch::default();
    for k in orphans {
        tracing::debug!(id = %hex(k), "deleting spool data without meta");
        batch.delete_cf(data_cf, k);
    }
    let mut opts = WriteOptions::default();
    opts.set_sync(true);
    dbs.data
        .write_opt(batch, &opts)
        .map_err(|e| SpoolError::from_rocks("delete orphaned data", e))?;
    tracing::warn!(
        count = orphans.len(),
        "deleted spool data without meta (interrupted writes)"
    );
    Ok(orphans.len())
}
