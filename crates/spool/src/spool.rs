//! The public spool handle.

use std::path::Path;
use std::sync::atomic::Ordering;
use std::sync::{mpsc, Arc};
use std::thread::JoinHandle;

use bytes::Bytes;
use hermod_message::{Message, SpoolId};
use parking_lot::{Mutex, RwLock};
use tokio::sync::oneshot;

use crate::config::{SpoolDefinition, SpoolName};
use crate::db::{cf, Dbs, DATA_CF};
use crate::enumerate::Enumeration;
use crate::error::SpoolError;
use crate::writer::{self, Cmd, Counters, Op, Request};

#[derive(Debug, Clone, Copy)]
pub struct SpoolOptions {
    /// Sync the WAL on every group commit. Only the benchmark turns this
    /// off, to measure what durability costs; production always syncs.
    pub fsync: bool,
}

impl Default for SpoolOptions {
    fn default() -> Self {
        Self { fsync: true }
    }
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct SpoolStats {
    /// Groups written (each with one synced WAL write per instance when fsync is on).
    pub group_commits: u64,
    /// Synced WAL writes; `wal_syncs / messages_written` is the fsync cost per message.
    pub wal_syncs: u64,
    pub messages_written: u64,
    pub removals: u64,
    pub failed_groups: u64,
}

struct Inner {
    defs: Vec<SpoolDefinition>,
    /// `None` after shutdown, which lets RocksDB close once readers finish.
    dbs: RwLock<Option<Arc<Dbs>>>,
    tx: Mutex<Option<mpsc::Sender<Cmd>>>,
    thread: Mutex<Option<JoinHandle<()>>>,
    counters: Arc<Counters>,
}

impl Inner {
    fn stop(&self) {
        // Dropping the sender ends the writer loop after the queued groups.
        self.tx.lock().take();
        if let Some(handle) = self.thread.lock().take() {
            if handle.join().is_err() {
                tracing::error!("spool writer thread panicked");
            }
        }
        self.dbs.write().take();
    }
}

impl Drop for Inner {
    fn drop(&mut self) {
        self.stop();
    }
}

/// The message spool. Cheap to clone; all clones share one writer.
#[derive(Clone)]
pub struct Spool {
    inner: Arc<Inner>,
}

impl Spool {
    /// Open (creating directories as needed) the spools a policy defined.
    pub fn open(defs: &[SpoolDefinition], opts: SpoolOptions) -> Result<Spool, SpoolError> {
        let dbs = Arc::new(Dbs::open(defs, opts.fsync)?);
        let counters = Arc::new(Counters::default());
        let (tx, rx) = mpsc::channel();
        let thread = {
            let dbs = dbs.clone();
            let counters = counters.clone();
            std::thread::Builder::new()
                .name("spool-writer".into())
                .spawn(move || writer::run(dbs, rx, counters))
                .map_err(|e| SpoolError::from_io("start spool writer thread", e))?
        };
        Ok(Spool {
            inner: Arc::new(Inner {
                defs: defs.to_vec(),
                dbs: RwLock::new(Some(dbs)),
                tx: Mutex::new(Some(tx)),
                thread: Mutex::new(Some(thread)),
                counters,
            }),
        })
    }

    /// The default layout (`dir/data`, `dir/meta`), used when the policy
    /// defines no spool.
    pub fn open_dir(dir: &Path, opts: SpoolOptions) -> Result<Spool, SpoolError> {
        let defs = [
            SpoolDefinition::new(SpoolName::Data, dir.join("data")),
            SpoolDefinition::new(SpoolName::Meta, dir.join("meta")),
        ];
        Self::open(&defs, opts)
    }

    fn dbs(&self) -> Result<Arc<Dbs>, SpoolError> {
        self.inner.dbs.read().clone().ok_or(SpoolError::Closed)
    }

    async fn submit(&self, ops: Vec<Op>) -> Result<(), SpoolError> {
        let (reply, rx) = oneshot::channel();
        {
            let tx = self.inner.tx.lock();
            let tx = tx.as_ref().ok_or(SpoolError::Closed)?;
            tx.send(Cmd::Write(Request { ops, reply }))
                .map_err(|_| SpoolError::Closed)?;
        }
        // A dropped reply means the writer died mid-group; the outcome is
        // unknown, so report the spool as unusable rather than success.
        rx.await.map_err(|_| SpoolError::Closed)?
    }

    /// What must be written for `msg` (and whether its data then lives in
    /// meta), or `None` if it is already clean.
    fn op_for(msg: &Message) -> Result<Option<(Op, bool)>, SpoolError> {
        let write = msg.spool_write().map_err(|e| SpoolError::Message {
            id: msg.id(),
            reason: e.to_string(),
        })?;
        Ok(write.map(|w| {
            let op = Op::Put {
                id: msg.id(),
                data: w.data,
                meta: w.meta,
            };
            (op, w.data_in_meta)
        }))
    }

    /// Durably store what is dirty in `msg` (data, meta or both); returns
    /// once fsynced, then marks the message clean.
    ///
    /// Edits made to the message while the write is in flight are marked
    /// clean too; callers store a message only once its edits are done.
    pub async fn store(&self, msg: &Message) -> Result<(), SpoolError> {
        let Some((op, data_in_meta)) = Self::op_for(msg)? else {
            return Ok(());
        };
        self.submit(vec![op]).await?;
        msg.mark_stored(data_in_meta);
        Ok(())
    }

    /// Store several messages in one request (and so one group commit).
    /// Results are per message, in order.
    pub async fn store_many(&self, msgs: &[Message]) -> Vec<Result<(), SpoolError>> {
        let mut results: Vec<Result<(), SpoolError>> = Vec::with_capacity(msgs.len());
        let mut ops = Vec::new();
        let mut pending = Vec::new();
        for (i, m) in msgs.iter().enumerate() {
            match Self::op_for(m) {
                Ok(Some((op, data_in_meta))) => {
                    ops.push(op);
                    pending.push((i, data_in_meta));
                    results.push(Ok(()));
                }
                Ok(None) => results.push(Ok(())),
                Err(e) => results.push(Err(e)),
            }
        }
        if ops.is_empty() {
            return results;
        }
        let outcome = self.submit(ops).await;
        for (i, data_in_meta) in pending {
            match &outcome {
                Ok(()) => msgs[i].mark_stored(data_in_meta),
                Err(e) => results[i] = Err(e.clone()),
            }
        }
        results
    }

    /// Durably remove a message (meta first, so it is never enumerated again).
    pub async fn remove(&self, id: SpoolId) -> Result<(), SpoolError> {
        self.submit(vec![Op::Remove { id, data: true }]).await
    }

    /// Queue removals without waiting for them (delivery sessions use this so
    /// that delivered messages do not hold their session). All the messages
    /// go in one request, so a delivered batch costs the writer one wake-up.
    /// Messages never stored are skipped. A failure is logged by the writer;
    /// the messages would then be re-delivered after a restart, never lost.
    pub fn remove_detached<'a>(
        &self,
        msgs: impl IntoIterator<Item = &'a Message>,
    ) -> Result<(), SpoolError> {
        let ops: Vec<Op> = msgs
            .into_iter()
            .filter(|m| m.is_persisted())
            .map(|m| Op::Remove {
                id: m.id(),
                data: m.is_data_spooled(),
            })
            .collect();
        if ops.is_empty() {
            return Ok(());
        }
        let (reply, _ignored) = oneshot::channel();
        let tx = self.inner.tx.lock();
        let tx = tx.as_ref().ok_or(SpoolError::Closed)?;
        tx.send(Cmd::Write(Request { ops, reply }))
            .map_err(|_| SpoolError::Closed)
    }

    /// Read a message's bytes on the blocking pool.
    pub async fn load_data(&self, id: SpoolId) -> Result<Bytes, SpoolError> {
        let dbs = self.dbs()?;
        tokio::task::spawn_blocking(move || {
            let data_cf = cf(&dbs.data, DATA_CF)?;
            match dbs.data.get_pinned_cf(data_cf, id.as_bytes()) {
                Ok(Some(v)) => Ok(Bytes::copy_from_slice(&v)),
                Ok(None) => Err(SpoolError::NotFound(id)),
                Err(e) => Err(SpoolError::from_rocks("read data spool", e)),
            }
        })
        .await
        .map_err(|e| SpoolError::Io(format!("load_data task failed: {e}")))?
    }

    /// Read many messages' bytes in one blocking call, in the order of `ids`.
    pub async fn load_data_many(&self, ids: Vec<SpoolId>) -> Vec<Result<Bytes, SpoolError>> {
        if ids.is_empty() {
            return Vec::new();
        }
        let n = ids.len();
        self.blocking(n, move |dbs| crate::load::data_many(dbs, &ids))
            .await
    }

    /// Read messages that a queue held by id alone back (their records, and
    /// their bytes when `with_data`) in one blocking call, in the order of `ids`.
    pub async fn load_messages(
        &self,
        ids: Vec<SpoolId>,
        with_data: bool,
    ) -> Vec<Result<Message, SpoolError>> {
        if ids.is_empty() {
            return Vec::new();
        }
        let n = ids.len();
        self.blocking(n, move |dbs| crate::load::messages(dbs, &ids, with_data))
            .await
    }

    /// Run `f` on the blocking pool; every one of the `n` results is the
    /// error when the spool is closed or the task fails.
    async fn blocking<T: Send + 'static>(
        &self,
        n: usize,
        f: impl FnOnce(&Dbs) -> Vec<Result<T, SpoolError>> + Send + 'static,
    ) -> Vec<Result<T, SpoolError>> {
        let all = |e: SpoolError| (0..n).map(|_| Err(e.clone())).collect();
        let dbs = match self.dbs() {
            Ok(d) => d,
            Err(e) => return all(e),
        };
        match tokio::task::spawn_blocking(move || f(&dbs)).await {
            Ok(v) => v,
            Err(e) => all(SpoolError::Io(format!("spool read task failed: {e}"))),
        }
    }

    /// Enumerate the spool (meant for start-up): corrupt entries are moved
    /// aside and logged, orphaned data is deleted, and the valid entries are
    /// returned without their data. Blocks; call it from a blocking context.
    pub fn enumerate(&self) -> Result<Enumeration, SpoolError> {
        let dbs = self.dbs()?;
        crate::enumerate::enumerate(dbs)
    }

    pub fn stats(&self) -> SpoolStats {
        let c = &self.inner.counters;
        SpoolStats {
            group_commits: c.group_commits.load(Ordering::Relaxed),
            wal_syncs: c.wal_syncs.load(Ordering::Relaxed),
            messages_written: c.messages_written.load(Ordering::Relaxed),
            removals: c.removals.load(Ordering::Relaxed),
            failed_groups: c.failed_groups.load(Ordering::Relaxed),
        }
    }

    /// `Err(Full)` when any spool's file system is below its
    /// `min_free_space` or `min_free_inodes`; ingress should be refused.
    pub fn check_free_space(&self) -> Result<(), SpoolError> {
        for def in &self.inner.defs {
            crate::space::check(def)?;
        }
        Ok(())
    }

    /// The definitions this spool was opened with.
    pub fn definitions(&self) -> &[SpoolDefinition] {
        &self.inner.defs
    }

    /// Finish queued writes, stop the writer and close the databases once
    /// in-flight reads finish. Later calls fail with `Closed`.
    pub async fn shutdown(&self) {
        let inner = self.inner.clone();
        if let Err(e) = tokio::task::spawn_blocking(move || inner.stop()).await {
            tracing::error!(error = %e, "spool shutdown task failed");
        }
    }
}

impl std::fmt::Debug for Spool {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Spool")
            .field("defs", &self.inner.defs)
            .finish_non_exhaustive()
    }
}
