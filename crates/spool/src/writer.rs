//! The group-commit writer: one thread drains every queued request, writes
//! one batch per RocksDB instance with a synced WAL write, then answers all
//! of them. Concurrent stores therefore share fsyncs instead of queueing
//! behind one another's.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc;
use std::sync::Arc;
use std::time::Instant;

use bytes::Bytes;
use hermod_message::SpoolId;
use rocksdb::{WriteBatch, WriteOptions};
use tokio::sync::oneshot;

use crate::db::{cf, Dbs, DATA_CF, META_CF};
use crate::error::SpoolError;

/// Stop draining once a group holds this much, bounding memory and the
/// latency of the requests that arrived first.
const MAX_GROUP_BYTES: usize = 32 << 20;
/// A batch entry's bytes besides its value: tag, column family, key and
/// the varint lengths.
const OP_OVERHEAD: usize = 32;

pub(crate) enum Op {
    Put {
        id: SpoolId,
        data: Option<Bytes>,
        meta: Option<Vec<u8>>,
    },
    Remove {
        id: SpoolId,
        /// The data spool may hold the message's bytes (see
        /// `Message::is_data_spooled`); when false only meta is deleted.
        data: bool,
    },
}

impl Op {
    fn size(&self) -> usize {
        match self {
            Op::Put { data, meta, .. } => {
                data.as_ref().map_or(0, |d| d.len()) + meta.as_ref().map_or(0, |m| m.len())
            }
            Op::Remove { .. } => 16,
        }
    }
}

pub(crate) struct Request {
    pub ops: Vec<Op>,
    pub reply: oneshot::Sender<Result<(), SpoolError>>,
}

pub(crate) enum Cmd {
    Write(Request),
}

#[derive(Default)]
pub(crate) struct Counters {
    pub group_commits: AtomicU64,
    pub wal_syncs: AtomicU64,
    pub messages_written: AtomicU64,
    pub removals: AtomicU64,
    pub failed_groups: AtomicU64,
}

/// Body of the writer thread; returns when every sender is gone.
pub(crate) fn run(dbs: Arc<Dbs>, rx: mpsc::Receiver<Cmd>, counters: Arc<Counters>) {
    while let Ok(Cmd::Write(first)) = rx.recv() {
        let mut bytes: usize = first.ops.iter().map(Op::size).sum();
        let mut group = vec![first];
        while bytes < MAX_GROUP_BYTES {
            match rx.try_recv() {
                Ok(Cmd::Write(r)) => {
                    bytes += r.ops.iter().map(Op::size).sum::<usize>();
                    group.push(r);
                }
                Err(_) => break,
            }
        }
        let result = {
            let _guard = dbs.commit_lock.lock();
            commit(&dbs, &group, &counters)
        };
        if let Err(e) = &result {
            counters.failed_groups.fetch_add(1, Ordering::Relaxed);
            tracing::error!(error = %e, requests = group.len(), "spool group commit failed");
        }
        for r in group {
            // A caller that stopped waiting is not an error for the others.
            let _ = r.reply.send(result.clone());
        }
    }
    tracing::debug!("spool writer stopped");
}

#[derive(Default)]
struct Last {
    removed: bool,
    data: bool,
}

fn write_opts(sync: bool) -> WriteOptions {
    let mut o = WriteOptions::default();
    o.set_sync(sync);
    o
}

fn commit(dbs: &Dbs, group: &[Request], counters: &Counters) -> Result<(), SpoolError> {
    let ops = || group.iter().flat_map(|r| r.ops.iter());
    // The last operation on an id decides whether its data is deleted: a
    // remove followed by a store of the same id in one group keeps the data.
    // A removal deletes data only where some may be: the remove says so, or
    // the group itself put data for that id.
    // Sized up front: growing it rehashed every id several times per group.
    let mut last: HashMap<SpoolId, Last> = HashMap::with_capacity(ops().count());
    let mut puts = 0u64;
    let mut removes = 0u64;
    // Batches sized up front: growing one copies everything written so far.
    let (mut data_bytes, mut meta_bytes) = (0usize, 0usize);
    for op in ops() {
        match op {
            Op::Put { id, data, meta } => {
                puts += 1;
                data_bytes += data.as_ref().map_or(0, |d| d.len() + OP_OVERHEAD);
                meta_bytes += meta.as_ref().map_or(0, |m| m.len() + OP_OVERHEAD);
                let e = last.entry(*id).or_default();
                e.removed = false;
                e.data |= data.is_some();
            }
            Op::Remove { id, data } => {
                removes += 1;
                meta_bytes += OP_OVERHEAD;
                let e = last.entry(*id).or_default();
                e.removed = true;
                e.data |= *data;
            }
        }
    }
    let data_cf = cf(&dbs.data, DATA_CF)?;
    let meta_cf = cf(&dbs.meta, META_CF)?;
    let fill_data_puts = |b: &mut WriteBatch| {
        for op in ops() {
            if let Op::Put {
                id, data: Some(d), ..
            } = op
            {
                b.put_cf(data_cf, id.as_bytes(), d);
            }
        }
    };
    let fill_meta_ops = |b: &mut WriteBatch| {
        for op in ops() {
            match op {
                Op::Put {
                    id, meta: Some(m), ..
                } => b.put_cf(meta_cf, id.as_bytes(), m),
                Op::Put { meta: None, .. } => {}
                Op::Remove { id, .. } => b.delete_cf(meta_cf, id.as_bytes()),
            }
        }
    };
    let fill_data_deletes = |b: &mut WriteBatch| {
        for (id, l) in &last {
            if l.removed && l.data {
                b.delete_cf(data_cf, id.as_bytes());
            }
        }
    };

    // A group of removals only is written without fsync: losing it can only
    // re-deliver (at-least-once), it survives a process crash because the
    // WAL write itself is done, and the next stored message's fsync makes it
    // durable. Stores are always fsynced before anyone is told they are safe.
    let synced = dbs.fsync && puts > 0;
    let sync = write_opts(synced);
    // Each synced write is one fsync: counted, and timed from `started`.
    let count_sync = |started: Instant| {
        if synced {
            counters.wal_syncs.fetch_add(1, Ordering::Relaxed);
            hermod_metrics::spool_fsync_latency().observe_duration(started.elapsed());
        }
    };

    if dbs.shared {
        // One batch: data, then meta, then data deletions, applied atomically.
        let mut all = WriteBatch::with_capacity_bytes(data_bytes + meta_bytes);
        fill_data_puts(&mut all);
        fill_meta_ops(&mut all);
        fill_data_deletes(&mut all);
        let started = Instant::now();
        dbs.data
            .write_opt(all, &sync)
            .map_err(|e| SpoolError::from_rocks("spool write", e))?;
        count_sync(started);
    } else {
        // Data first: meta is the commit point, so a crash in between leaves
        // only orphaned data, which start-up deletes.
        let mut data_puts = WriteBatch::with_capacity_bytes(data_bytes);
        fill_data_puts(&mut data_puts);
        let wrote_data = !data_puts.is_empty();
        if wrote_data {
            let started = Instant::now();
            dbs.data
                .write_opt(data_puts, &sync)
                .map_err(|e| SpoolError::from_rocks("data spool write", e))?;
            count_sync(started);
        }
        let mut meta_ops = WriteBatch::with_capacity_bytes(meta_bytes);
        fill_meta_ops(&mut meta_ops);
        if !meta_ops.is_empty() {
            let started = Instant::now();
            if let Err(e) = dbs.meta.write_opt(meta_ops, &sync) {
                let err = SpoolError::from_rocks("meta spool write", e);
                if wrote_data {
                    undo_data(dbs, group);
                }
                return Err(err);
            }
            count_sync(started);
        }
        let mut data_deletes = WriteBatch::default();
        fill_data_deletes(&mut data_deletes);
        if !data_deletes.is_empty() {
            // Unsynced on purpose: the meta deletion above is the durable
            // removal; data lost here is an orphan that start-up deletes.
            if let Err(e) = dbs.data.write_opt(data_deletes, &write_opts(false)) {
                tracing::warn!(error = %e, "deleting removed messages' data failed; start-up will clean up");
            }
        }
    }
    counters.group_commits.fetch_add(1, Ordering::Relaxed);
    counters.messages_written.fetch_add(puts, Ordering::Relaxed);
    counters.removals.fetch_add(removes, Ordering::Relaxed);
    Ok(())
}

/// Best effort after a failed meta write: delete data that has no meta,
/// so nothing unreferenced lingers until the next start-up.
fn undo_data(dbs: &Dbs, group: &[Request]) {
    let Ok(data_cf) = cf(&dbs.data, DATA_CF) else {
        return;
    };
    let Ok(meta_cf) = cf(&dbs.meta, META_CF) else {
        return;
    };
    let mut batch = WriteBatch::default();
    for op in group.iter().flat_map(|r| r.ops.iter()) {
        if let Op::Put {
            id, data: Some(_), ..
        } = op
        {
            // Data of a message whose earlier meta is still stored belongs
            // to that message now; deleting it would corrupt the message.
            if matches!(dbs.meta.get_pinned_cf(meta_cf, id.as_bytes()), Ok(None)) {
                batch.delete_cf(data_cf, id.as_bytes());
            }
        }
    }
    if !batch.is_empty() {
        if let Err(e) = dbs.data.write_opt(batch, &write_opts(false)) {
            tracing::warn!(error = %e, "removing data after a failed meta write failed; start-up will clean up");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::{SpoolDefinition, SpoolName};

    fn open(dir: &std::path::Path, shared: bool) -> Dbs {
        let (d, m) = if shared { ("s", "s") } else { ("d", "m") };
        let defs = [
            SpoolDefinition::new(SpoolName::Data, dir.join(d)),
            SpoolDefinition::new(SpoolName::Meta, dir.join(m)),
        ];
        Dbs::open(&defs, true).expect("open")
    }

    fn request(ops: Vec<Op>) -> Request {
        Request {
            ops,
            reply: oneshot::channel().0,
        }
    }

    fn put(id: SpoolId, data: Option<&'static [u8]>) -> Op {
        Op::Put {
            id,
            data: data.map(Bytes::from_static),
            meta: Some(b"{}".to_vec()),
        }
    }

    fn remove(id: SpoolId, data: bool) -> Op {
        Op::Remove { id, data }
    }

    fn data_deletes_in_memtable(dbs: &Dbs) -> u64 {
        let data_cf = cf(&dbs.data, DATA_CF).expect("cf");
        dbs.data
            .property_int_value_cf(data_cf, "rocksdb.num-deletes-active-mem-table")
            .expect("property")
            .expect("known property")
    }

    fn present(dbs: &Dbs, id: SpoolId) -> (bool, bool) {
        let d = dbs
            .data
            .get_pinned_cf(cf(&dbs.data, DATA_CF).expect("cf"), id.as_bytes());
        let m = dbs
            .meta
            .get_pinned_cf(cf(&dbs.meta, META_CF).expect("cf"), id.as_bytes());
        (d.expect("get").is_some(), m.expect("get").is_some())
    }

    #[test]
    fn the_last_operation_on_an_id_within_a_group_wins() {
        for shared in [false, true] {
            let dir = tempfile::tempdir().expect("tempdir");
            let dbs = open(dir.path(), shared);
            let counters = Counters::default();
            let (kept, removed) = (SpoolId::new(), SpoolId::new());
            let group = vec![
                request(vec![put(kept, Some(b"body")), put(removed, Some(b"x"))]),
                request(vec![remove(kept, true), remove(removed, true)]),
                // Re-stored after its removal, meta only: the data must survive.
                request(vec![put(kept, None)]),
            ];
            commit(&dbs, &group, &counters).expect("commit");
            assert_eq!(present(&dbs, kept), (true, true), "shared={shared}");
            assert_eq!(present(&dbs, removed), (false, false), "shared={shared}");
            assert_eq!(counters.group_commits.load(Ordering::Relaxed), 1);
            let syncs = counters.wal_syncs.load(Ordering::Relaxed);
            assert_eq!(syncs, if shared { 1 } else { 2 }, "shared={shared}");
        }
    }

    #[test]
    fn removing_a_message_without_spooled_data_writes_no_data_spool_deletion() {
        for shared in [false, true] {
            let dir = tempfile::tempdir().expect("tempdir");
            let dbs = open(dir.path(), shared);
            let counters = Counters::default();
            let (hook, plain) = (SpoolId::new(), SpoolId::new());
            let stored = vec![request(vec![put(hook, None), put(plain, Some(b"body"))])];
            commit(&dbs, &stored, &counters).expect("store");
            commit(&dbs, &[request(vec![remove(hook, false)])], &counters).expect("remove");
            assert_eq!(data_deletes_in_memtable(&dbs), 0, "shared={shared}");
            commit(&dbs, &[request(vec![remove(plain, true)])], &counters).expect("remove");
            assert_eq!(data_deletes_in_memtable(&dbs), 1, "shared={shared}");
            assert_eq!(present(&dbs, hook), (false, false), "shared={shared}");
            assert_eq!(present(&dbs, plain), (false, false), "shared={shared}");
        }
    }

    #[test]
    fn data_put_earlier_in_the_group_is_deleted_even_if_the_remove_expects_none() {
        let dir = tempfile::tempdir().expect("tempdir");
        let dbs = open(dir.path(), false);
        let id = SpoolId::new();
        let group = vec![
            request(vec![put(id, Some(b"body"))]),
            request(vec![remove(id, false)]),
        ];
        commit(&dbs, &group, &Counters::default()).expect("commit");
        assert_eq!(present(&dbs, id), (false, false));
    }
}
