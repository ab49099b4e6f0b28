//! How a queue holds a message while it waits. A message the spool holds as
//! it is waits as its id alone (`Held::Parked`), so a backlog of a million
//! messages costs tens of bytes each rather than a kilobyte and more; a
//! delivery session reads parked messages back, many per spool call, when
//! it takes them. Messages the spool does not hold as they are (never
//! stored, or edited since) stay in memory, without their bytes when the
//! data spool has them.

use std::sync::Arc;
use std::time::{Duration, Instant};

use hermod_message::{Counted, Message, SpoolId};
use hermod_spool::{Spool, SpoolError};

use crate::outcome::Recorder;
use crate::ready::Entry;
use crate::resolve::ScheduledQueue;

/// A waiting message as an operator's sample holds it (see [`Held::copy`]).
pub(crate) enum Sampled {
    Loaded(Message),
    Parked(SpoolId),
}

/// A waiting message, in memory or as its spool id.
pub enum Held {
    Loaded(Message),
    /// The id, and the message's place in `message_count`.
    Parked(SpoolId, Counted),
}

impl Held {
    /// Hold `message` as cheaply as it can be: its id alone when the spool
    /// has it as it is, otherwise the message without bytes the data spool has.
    pub fn park(message: Message) -> Held {
        if message.is_spooled_as_is() {
            Held::Parked(message.id(), Counted::new())
        } else {
            message.unload_data();
            Held::Loaded(message)
        }
    }

    /// Another handle on the same waiting message (an operator's sample),
    /// which does not count it in `message_count` a second time.
    pub(crate) fn copy(&self) -> Sampled {
        match self {
            Held::Loaded(m) => Sampled::Loaded(m.clone()),
            Held::Parked(id, _) => Sampled::Parked(*id),
        }
    }

    #[cfg(test)]
    pub fn id(&self) -> SpoolId {
        match self {
            Held::Loaded(m) => m.id(),
            Held::Parked(id, _) => *id,
        }
    }

    /// The message, when it is in memory.
    #[cfg(test)]
    pub fn loaded(&self) -> Option<&Message> {
        match self {
            Held::Loaded(m) => Some(m),
            Held::Parked(..) => None,
        }
    }
}

/// A waiting message with the scheduled queue it belongs to.
pub struct Queued {
    pub held: Held,
    pub queue: Arc<ScheduledQueue>,
}

impl Queued {
    /// A message in memory (just received, or back from an attempt).
    pub fn loaded(message: Message, queue: Arc<ScheduledQueue>) -> Self {
        Self {
            held: Held::Loaded(message),
            queue,
        }
    }

    /// The same message held as cheaply as it can be; see [`Held::park`].
    pub fn park(self) -> Self {
        match self.held {
            Held::Loaded(m) => Self {
                held: Held::park(m),
                queue: self.queue,
            },
            parked => Self {
                held: parked,
                queue: self.queue,
            },
        }
    }
}

/// Count the messages of `waiting` that `pred` selects and copy the first
/// of them into `out` until it holds `limit` (inspect-sched-q, inspect-ready-q).
pub(crate) fn sample<'a>(
    waiting: impl Iterator<Item = &'a Queued>,
    pred: impl Fn(&Queued) -> bool,
    limit: usize,
    out: &mut Vec<Sampled>,
) -> usize {
    let mut n = 0;
    for q in waiting.filter(|q| pred(q)) {
        n += 1;
        if out.len() < limit {
            out.push(q.held.copy());
        }
    }
    n
}

impl From<Entry> for Queued {
    fn from(e: Entry) -> Self {
        Queued::loaded(e.message, e.queue)
    }
}

/// What reading back a waiting message gave.
pub(crate) enum Loaded {
    /// In memory, bytes and all.
    Ready(Entry),
    /// The message is known but its bytes cannot be read (the attempt fails
    /// transiently and the message stays in the spool).
    NoData(Entry, SpoolError),
    /// A parked message that cannot be read back; see [`lost`].
    Lost(SpoolId, Arc<ScheduledQueue>, SpoolError),
}

/// Read back a batch for delivery: parked messages whole, in-memory ones'
/// bytes; one spool call for each kind, none when all are in memory.
pub(crate) async fn load(spool: &Spool, batch: Vec<Queued>, with_data: bool) -> Vec<Loaded> {
    let mut parked = Vec::new();
    let mut bytes = Vec::new();
    for q in &batch {
        match &q.held {
            Held::Parked(id, _) => parked.push(*id),
            Held::Loaded(m) if with_data && !m.is_data_loaded() => bytes.push(m.id()),
            Held::Loaded(_) => {}
        }
    }
    let mut parked = spool.load_messages(parked, with_data).await.into_iter();
    let mut bytes = spool.load_data_many(bytes).await.into_iter();
    let missing = || SpoolError::Io("the spool returned too few results".into());
    batch
        .into_iter()
        .map(|q| match q.held {
            Held::Parked(id, _) => match parked.next().unwrap_or_else(|| Err(missing())) {
                Ok(message) => Loaded::Ready(Entry {
                    message,
                    queue: q.queue,
                }),
                Err(e) => Loaded::Lost(id, q.queue, e),
            },
            Held::Loaded(message) => {
                let needs = with_data && !message.is_data_loaded();
                let entry = Entry {
                    message,
                    queue: q.queue,
                };
                if !needs {
                    return Loaded::Ready(entry);
                }
                match bytes.next().unwrap_or_else(|| Err(missing())) {
                    Ok(d) => {
                        entry.message.load_data(d);
                        Loaded::Ready(entry)
                    }
                    Err(e) => Loaded::NoData(entry, e),
                }
            }
        })
        .collect()
}

/// How many waiting messages are read back at once when every one of them
/// needs a record (a bulk delay, a domain without a route): bounded, so a
/// million parked messages are never all in memory together.
pub(crate) const RECORD_CHUNK: usize = 1024;

/// Read back waiting messages for their log records (no bytes needed), one
/// chunk of at most [`RECORD_CHUNK`]; the ones that cannot be read are
/// handled by [`lost`].
pub(crate) async fn load_for_records(rec: &Recorder, chunk: Vec<Queued>) -> Vec<Entry> {
    let mut out = Vec::with_capacity(chunk.len());
    for l in load(&rec.spool, chunk, false).await {
        match l {
            Loaded::Ready(e) | Loaded::NoData(e, _) => out.push(e),
            Loaded::Lost(id, queue, e) => lost(rec, id, queue, e),
        }
    }
    out
}

/// Split waiting messages into chunks of [`RECORD_CHUNK`].
pub(crate) fn chunks(all: Vec<Queued>) -> impl Iterator<Item = Vec<Queued>> {
    let mut it = all.into_iter();
    std::iter::from_fn(move || {
        let chunk: Vec<Queued> = it.by_ref().take(RECORD_CHUNK).collect();
        (!chunk.is_empty()).then_some(chunk)
    })
}

/// A parked message that could not be read back before a read error
/// clears is tried again this much later.
const REREAD_AFTER: Duration = Duration::from_secs(60);

/// A parked message could not be read back. Gone from the spool: nothing is
/// left to deliver. A record that no longer parses stays in the spool, where
/// the next start-up moves it aside and logs it. A read error (a disk
/// fault, a full disk) is tried again later. Shutting down: it stays in the
/// spool for the next start.
pub(crate) fn lost(rec: &Recorder, id: SpoolId, queue: Arc<ScheduledQueue>, e: SpoolError) {
    match e {
        SpoolError::NotFound(_) => {
            tracing::error!(%id, queue = %queue.name, "a queued message is no longer in the spool; nothing to deliver")
        }
        SpoolError::Corrupt { .. } => {
            tracing::error!(%id, queue = %queue.name, error = %e,
                "a queued message's spool record cannot be read; the next start-up moves it aside")
        }
        SpoolError::Closed => {}
        e => {
            tracing::warn!(%id, queue = %queue.name, error = %e, retry_in = ?REREAD_AFTER,
                "cannot read a queued message back from the spool; trying again later");
            rec.timer.insert(
                Instant::now() + REREAD_AFTER,
                Queued {
                    held: Held::Parked(id, Counted::new()),
                    queue,
                },
            );
        }
    }
}
