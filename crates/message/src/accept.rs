//! The hand-off from a listener (SMTP, HTTP) to the spool and queues.
//! Listeners depend on this trait, not on the queue crate, so each can be
//! tested with a simple acceptor.

use std::future::Future;
use std::pin::Pin;

use crate::{Message, Protocol, SpoolId};

/// Who handed the message over, for the Reception log record.
#[derive(Debug, Clone)]
pub struct ReceptionInfo {
    /// [`Protocol::Esmtp`] or [`Protocol::Http`].
    pub protocol: Protocol,
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

/// An SMTP 4xx/5xx reply, for the Rejection log record. No message exists
/// yet, so the envelope is whatever the session had when it replied.
#[derive(Debug, Clone)]
pub struct RejectionInfo {
    pub code: u16,
    /// Reply text as sent, starting with the enhanced code when there is one.
    pub text: String,
    /// The command line the reply answered (`"DATA"` for the message
    /// content); `None` for replies not tied to a command (the banner).
    pub command: Option<String>,
    /// MAIL FROM of the transaction; `None` before MAIL FROM was accepted.
    pub sender: Option<String>,
    /// The recipient refused by a RCPT TO reply; otherwise the recipients
    /// of the transaction so far.
    pub recipients: Vec<String>,
    /// The connection's meta (`received_from`, values set by the policy).
    pub meta: serde_json::Map<String, serde_json::Value>,
    pub peer: ReceptionInfo,
}

/// Whether a reply gets a Rejection record. `421 4.3.2` replies (shutdown,
/// load shedding, idle timeout) are about the server, not the mail.
pub fn is_rejection(code: u16, text: &str) -> bool {
    (400..600).contains(&code) && !(code == 421 && text.starts_with("4.3.2"))
}

pub type DoneFuture<'a> = Pin<Box<dyn Future<Output = ()> + Send + 'a>>;

pub type AcceptFuture<'a> =
    Pin<Box<dyn Future<Output = Vec<Result<Accepted, AcceptError>>> + Send + 'a>>;

/// A report a listener domain asked to log (`log_oob`, `log_arf`).
#[derive(Debug, Clone)]
pub enum InboundReport {
    /// An RFC 5965 feedback report: a `Feedback` record carrying this
    /// `feedback_report` is logged in place of the Reception record.
    Feedback(serde_json::Value),
    /// An RFC 3464 delivery status notification: an `OOB` record per failed
    /// recipient is logged after the Reception record.
    Oob(crate::report::Dsn),
}

/// One message received over SMTP with what its listener domain decided.
#[derive(Debug, Clone)]
pub struct Received {
    pub message: Message,
    /// Spool and queue it; `false` logs its records and drops it
    /// (`LogThenDrop`).
    pub relay: bool,
    pub report: Option<InboundReport>,
}

/// Spool, log and queue a batch of freshly received messages.
/// Returns one result per message, in order. Must only resolve `Queued`
/// once the spool write is fsynced.
pub trait Acceptor: Send + Sync + 'static {
    fn accept(&self, messages: Vec<Message>, info: ReceptionInfo) -> AcceptFuture<'_>;
    /// False until spool enumeration has begun, and again during shutdown.
    fn is_accepting(&self) -> bool {
        true
    }
    /// [`Acceptor::accept`] for SMTP receptions that may carry reports: the
    /// messages with `relay` are spooled and queued, the others only logged,
    /// and each report is logged as its record. One result per message, in
    /// order; a message that is not relayed is `Discarded`. The default
    /// ignores the reports (acceptors without logs).
    fn accept_received(&self, batch: Vec<Received>, info: ReceptionInfo) -> AcceptFuture<'_> {
        Box::pin(async move {
            let relayed: Vec<Message> = batch
                .iter()
                .filter(|r| r.relay)
                .map(|r| r.message.clone())
                .collect();
            let mut results = self.accept(relayed, info).await.into_iter();
            batch
                .iter()
                .map(|r| match r.relay {
                    true => results.next().unwrap_or_else(|| {
                        Err(AcceptError::Spool("acceptor returned no result".into()))
                    }),
                    false => Ok(Accepted::Discarded(r.message.id())),
                })
                .collect()
        })
    }
    /// Log a Rejection record. Waits only under log back-pressure.
    fn rejected(&self, _rejection: RejectionInfo) -> DoneFuture<'_> {
        Box::pin(async {})
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn load_and_shutdown_replies_are_not_rejections() {
        assert!(!is_rejection(421, "4.3.2 mx shutting down"));
        assert!(is_rejection(421, "4.3.0 technical difficulties"));
        assert!(is_rejection(550, "5.7.1 relaying denied"));
        assert!(is_rejection(452, "4.5.3 too many recipients"));
        assert!(!is_rejection(250, "OK"));
        assert!(!is_rejection(354, "go ahead"));
    }
}
