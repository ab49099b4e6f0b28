//! Delivery: one driver (`driver.rs`) runs every session of every ready queue, and each
//! delivery protocol implements the small [`Dispatcher`] trait it calls: `connect`, `deliver`
//! a batch, `close`. The driver owns what all protocols share: taking batches from the ready
//! queue, loading message bytes, `max_deliveries_per_connection`, destination health (pause and
//! probe) and turning each message's [`Outcome`] into its log record, retry or removal.

mod custom_lua;
mod driver;
mod maildir;
mod smtp;

use std::sync::{Arc, Weak};
use std::time::Duration;

use hermod_logging::{PeerAddress, Response};
use hermod_message::Protocol;
use hermod_policy::{Engine, ProtocolConfig};
use hermod_spool::Spool;

use crate::manager::Inner;
use crate::outcome::{Recorder, TlsDetails};
use crate::ready::{Entry, ReadyQueue};

/// The handles a session needs: no more than these, so a protocol cannot
/// reach into the queue manager's maps.
#[derive(Clone)]
pub(crate) struct Handles {
    pub recorder: Recorder,
    pub spool: Spool,
    pub engine: Arc<Engine>,
    pub starter: Starter,
}

/// Starts sessions for a ready queue whose paused destination answered again,
/// so its backlog does not drain through the single probing session.
#[derive(Clone)]
pub(crate) struct Starter(pub(crate) Weak<Inner>);

impl Starter {
    fn resume(&self, rq: &Arc<ReadyQueue>) {
        if let Some(inner) = self.0.upgrade() {
            crate::manager::QueueManager(inner).maybe_start_sessions(rq);
        }
    }
}

/// How many messages a protocol takes from its ready queue at once.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Batching {
    pub size: usize,
    /// Below this many, wait up to `max_latency` for more.
    pub min: usize,
    pub max_latency: Duration,
}

/// What became of one message in an attempt.
#[derive(Clone, Debug)]
pub(crate) enum Outcome {
    Delivered(Response),
    /// Retry on the queue's schedule. `at_peer`: the destination answered, so
    /// the record names the connection's peer; otherwise it names none.
    Transient {
        response: Response,
        at_peer: bool,
    },
    Bounced(Response),
    /// Never tried: back to the front of the ready queue unchanged.
    Untried,
}

/// What an attempt says about the destination, for pausing and probing.
#[derive(Clone, Debug)]
pub(crate) enum Health {
    /// The destination answered (delivered or refused).
    Reached,
    /// It could not be reached or failed as a whole (broker down, disk error).
    Failed(String),
    /// Nothing learnt (a fault of the message or of this side).
    Unknown,
}

/// The result of `connect` (when it fails) or of `deliver`.
#[derive(Debug)]
pub(crate) struct Attempt {
    pub outcomes: Outcomes,
    pub health: Health,
    /// The connection is unusable: close it and end the session.
    pub end_session: bool,
}

#[derive(Debug)]
pub(crate) enum Outcomes {
    /// The same outcome for every message of the batch.
    All(Outcome),
    /// One outcome per message, in batch order.
    Each(Vec<Outcome>),
}

impl Attempt {
    /// Every message failed before anything reached the destination.
    pub(crate) fn all_transient(code: u16, content: String, health: Health) -> Self {
        Attempt {
            outcomes: Outcomes::All(Outcome::Transient {
                response: Response::new(code, None, &content),
                at_peer: false,
            }),
            health,
            end_session: true,
        }
    }
}

/// One delivery protocol. A value lives for one session (one "connection").
pub(crate) trait Dispatcher: Send {
    /// The `delivery_protocol` of its log records.
    fn protocol(&self) -> Protocol;
    /// How to take batches from the ready queue.
    fn batching(&self) -> Batching;
    /// How many messages one `deliver` call takes; the driver splits batches.
    fn per_call(&self) -> usize {
        usize::MAX
    }
    /// The peer of the open connection, for log records.
    fn peer(&self) -> Option<PeerAddress> {
        None
    }
    /// The TLS of the open connection, for log records.
    fn tls(&self) -> Option<TlsDetails> {
        None
    }
    /// Open the connection for the session's first batch. On failure the
    /// attempt says what becomes of that batch, and the session ends.
    fn connect(
        &mut self,
        rq: &ReadyQueue,
        first: &[Entry],
    ) -> impl std::future::Future<Output = Result<(), Attempt>> + Send;
    /// Deliver up to `per_call` messages over the open connection.
    fn deliver(&mut self, batch: &[Entry]) -> impl std::future::Future<Output = Attempt> + Send;
    /// End the session: called once however it ends, after `connect` failed too.
    fn close(&mut self) -> impl std::future::Future<Output = ()> + Send;
}

/// The `delivery_protocol` of a queue config's records.
pub(crate) fn protocol_of(p: &ProtocolConfig) -> Protocol {
    match p {
        ProtocolConfig::CustomLua(_) => Protocol::Lua,
        ProtocolConfig::Maildir(_) => Protocol::Maildir,
        ProtocolConfig::Smtp | ProtocolConfig::SmtpWith(_) => Protocol::Esmtp,
    }
}

/// Run one session of `rq` with the protocol its queue config names.
pub(crate) async fn run_session(h: &Handles, rq: &Arc<ReadyQueue>) {
    match rq.protocol() {
        ProtocolConfig::CustomLua(cfg) => {
            driver::run(h, rq, custom_lua::CustomLua::new(h.engine.clone(), cfg)).await
        }
        ProtocolConfig::Maildir(cfg) => driver::run(h, rq, maildir::Maildir::new(cfg)).await,
        ProtocolConfig::Smtp | ProtocolConfig::SmtpWith(_) => {
            driver::run(h, rq, smtp::Smtp::new(h.engine.clone(), rq)).await
        }
    }
}
