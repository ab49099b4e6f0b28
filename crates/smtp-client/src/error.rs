//! Typed errors: every failure names the step of the conversation it happened
//! in and the peer, so the delivery driver can log it and decide between
//! retrying now on another host, retrying later, or bouncing.

use std::fmt;
use std::net::SocketAddr;
use std::time::Duration;

use crate::response::Response;

/// The step of the SMTP conversation an error happened in.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Step {
    Connect,
    Banner,
    Ehlo,
    StartTls,
    Auth,
    MailFrom,
    RcptTo,
    Data,
    DataDot,
    Rset,
    Quit,
}

impl Step {
    pub fn as_str(self) -> &'static str {
        match self {
            Step::Connect => "connect",
            Step::Banner => "banner",
            Step::Ehlo => "EHLO",
            Step::StartTls => "STARTTLS",
            Step::Auth => "AUTH",
            Step::MailFrom => "MAIL FROM",
            Step::RcptTo => "RCPT TO",
            Step::Data => "DATA",
            Step::DataDot => "end of data",
            Step::Rset => "RSET",
            Step::Quit => "QUIT",
        }
    }
}

impl fmt::Display for Step {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Who the client was talking to: the name it was asked to reach (an MX
/// host name, used for TLS verification) and the address it connected to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Peer {
    pub host: String,
    pub addr: SocketAddr,
}

impl fmt::Display for Peer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} [{}]", self.host, self.addr)
    }
}

/// What went wrong.
#[derive(Debug, thiserror::Error)]
pub enum ErrorKind {
    #[error("timed out after {0:?}")]
    Timeout(Duration),
    #[error("I/O error: {0}")]
    Io(#[from] std::io::Error),
    #[error("connection closed by the peer")]
    Closed,
    /// A reply line that is not `ddd`, `ddd text` or `ddd-text`, or a
    /// multi-line reply whose lines disagree on the code.
    #[error("malformed reply: {0:?}")]
    Malformed(String),
    #[error("reply line longer than {0} octets")]
    LineTooLong(usize),
    #[error("reply of more than {0} lines")]
    TooManyLines(usize),
    #[error("reply larger than {0} octets")]
    ReplyTooLarge(usize),
    /// The peer refused a command the connection cannot go on without
    /// (banner, EHLO, STARTTLS, AUTH, RSET).
    #[error("refused: {0}")]
    Rejected(Response),
    /// A 421 reply: the server is closing the connection. The driver treats
    /// it as "try another host / later", never as a verdict on the message.
    #[error("service closing: {0}")]
    ServiceClosing(Response),
    #[error("TLS handshake failed: {0}")]
    TlsHandshake(String),
    #[error("TLS is required but the server does not offer STARTTLS")]
    StartTlsNotOffered,
    #[error("TLS set-up failed: {0}")]
    TlsConfig(String),
    #[error("{0:?} is not a valid name for TLS verification")]
    InvalidServerName(String),
    /// AUTH is configured but the connection is not encrypted (or its
    /// certificate was not verified) and the configuration does not allow
    /// sending credentials that way.
    #[error("refusing to send credentials: {0}")]
    AuthNotAllowed(&'static str),
    #[error("invalid configuration: {0}")]
    InvalidConfig(String),
    /// An earlier error left the connection in an unknown state.
    #[error("the connection is no longer usable after an earlier error")]
    Unusable,
}

/// An error of one step with one peer.
#[derive(Debug, thiserror::Error)]
#[error("{peer}: {step}: {kind}")]
pub struct ClientError {
    pub peer: Peer,
    pub step: Step,
    #[source]
    pub kind: ErrorKind,
}

impl ClientError {
    pub fn new(peer: &Peer, step: Step, kind: ErrorKind) -> Self {
        Self {
            peer: peer.clone(),
            step,
            kind,
        }
    }

    /// The server's reply when the error is a refusal or a 421.
    pub fn response(&self) -> Option<&Response> {
        match &self.kind {
            ErrorKind::Rejected(r) | ErrorKind::ServiceClosing(r) => Some(r),
            _ => None,
        }
    }

    pub fn is_timeout(&self) -> bool {
        matches!(self.kind, ErrorKind::Timeout(_))
    }

    pub fn is_service_closing(&self) -> bool {
        matches!(self.kind, ErrorKind::ServiceClosing(_))
    }
}
