//! The live tap: every record the logger takes, as its JSON line (without
//! meta or headers), for viewers such as the HTTP dashboard's event stream
//! (`crates/http/src/dashboard/`). Sending never waits: a viewer that falls
//! more than [`TAP_CAPACITY`] records behind loses the oldest ones, and
//! while nobody watches a record costs one counter read.

use bytes::Bytes;
use tokio::sync::broadcast;

use crate::record::LogRecord;

/// Records a viewer may fall behind by before it starts losing them.
pub const TAP_CAPACITY: usize = 1024;

/// Where viewers subscribe: `tap.subscribe()` gives a receiver of JSON
/// lines (each ending in `\n`); `RecvError::Lagged(n)` says `n` were lost.
pub type RecordTap = broadcast::Sender<Bytes>;

pub(crate) struct Tap {
    tx: RecordTap,
}

impl Tap {
    pub fn new() -> Self {
        Self {
            tx: broadcast::channel(TAP_CAPACITY).0,
        }
    }

    /// Whether anyone is watching, so building a record for the tap alone
    /// is worth it.
    pub fn wanted(&self) -> bool {
        self.tx.receiver_count() > 0
    }

    /// Hand `record` to the viewers, if there are any.
    pub fn offer(&self, record: &LogRecord) {
        if !self.wanted() {
            return;
        }
        match record.to_json_line() {
            // An error means the last viewer left meanwhile.
            Ok(line) => drop(self.tx.send(line.line().clone())),
            Err(e) => {
                tracing::debug!(id = %record.id, error = %e, "record not shown to live viewers")
            }
        }
    }

    pub fn sender(&self) -> RecordTap {
        self.tx.clone()
    }
}
