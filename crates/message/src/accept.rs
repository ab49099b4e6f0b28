//! The hand-off from a listener (SMTP, HTTP) to the spool and queues.
//! Listeners depend on this trait, not on the queue crate, so each can be
//! tested with a simple acceptor.

use std::future::Future;
use std::pin::Pin;

use crate::{Message, SpoolId};

/// Who handed the message over, for the Reception log record.
#[derive(Debug, Clone, Default)]
pub struct ReceptionInfo {
    /// `"ESMTP"` or `"HTTP"`.
    pub protocol: String,
    /// EHLO name (SMTP) or `""` (HTTP).
    pub peer_name: String,
    /// Client IP address, without port.
    pub peer_addr: String,
    /// SMTP session UUID; `None` for HTTP.
    pub session_id: Option<String>,
    pub tls_cipher: Option<String>,
    pub tls_protocol_version: Option<String>,
}

#[derive(Debug, Clone, thiserror::Error)]
pub enum AcceptError {
    /// The spool write failed (disk full, I/O error): SMTP 451 4.3.0, HTTP 503.
    #[error("spool write failed: {0}")]
    Spool(String),
    /// Not accepting yet or any more (spool not started, shutting down).
    #[error("not accepting messages: {0}")]
    Unavailable(String),
    /// This message cannot be queued (e.g. its queue name cannot be computed).
    #[error("{0}")]
    Message(String),
}

/// Outcome for one message handed to [`Acceptor::accept`].
#[derive(Debug, Clone)]
pub enum Accepted {
    /// Durably spooled (fsynced) and queued.
    Queued(SpoolId),
    /// Queue `null`: accepted and discarded, never spooled.
    Discarded(SpoolId),
}

impl Accepted {
    pub fn id(&self) -> SpoolId {
        match self {
            Accepted::Queued(id) | Accepted::Discarded(id) => *id,
        }
    }
}

pub type AcceptFuture<'a> =
    Pin<Box<dyn Future<Output = Vec<Result<Accepted, AcceptError>>> + Send + 'a>>;

/// Spool, log and queue a batch of freshly received messages.
/// Returns one result per message, in order. Must only resolve `Queued`
/// once the spool write is fsynced.
pub trait Acceptor: Send + Sync + 'static {
    fn accept(&self, messages: Vec<Message>, info: ReceptionInfo) -> AcceptFuture<'_>;
    /// False until spool enumeration has begun, and again during shutdown.
    fn is_accepting(&self) -> bool {
        true
    }
}
