//! The SMTP client Hermod delivers with: one connection to one remote host.
//!
//! The delivery driver picks the host, applies the egress configuration and
//! maps outcomes to log records; this crate speaks the protocol:
//!
//! ```no_run
//! # async fn demo(addr: std::net::SocketAddr) -> Result<(), hermod_smtp_client::ClientError> {
//! use hermod_smtp_client::{connect, ClientConfig, Needs};
//! let config = ClientConfig::new("mta.example.net");
//! let mut client = connect(addr, "mx.example.com", &config).await?;
//! let data = b"Subject: hi\r\n\r\nhello\r\n";
//! let rcpts = ["you@example.com"];
//! let needs = Needs::detect("me@example.net", &rcpts, data);
//! let result = client.send_message("me@example.net", &rcpts, data, needs).await?;
//! println!("{}", result.recipient_response(0));
//! client.quit().await?;
//! # Ok(()) }
//! ```
//!
//! Server verdicts (refused recipients, a refused message) are values in a
//! [`TransactionResult`]; a [`ClientError`] means the connection failed and
//! names the step and the peer. Every read and write is bounded in time
//! and size (see [`MAX_LINE_LEN`] and its neighbours), so a misbehaving peer cannot hang or exhaust a
//! delivery worker.

mod body;
mod capabilities;
mod client;
mod config;
mod error;
mod response;
mod stream;
mod tls;
mod transaction;
mod wire;
mod x509;

pub use capabilities::Capabilities;
pub use client::{connect, Client};
pub use config::{AuthPlain, ClientConfig, Secret, Timeouts, TlsMode};
pub use error::{ClientError, ErrorKind, Peer, Step};
pub use response::{EnhancedStatusCode, Response};
pub use tls::{insecure_client_config, TlsInfo, TlsTrust};
pub use transaction::{Needs, Stage, TransactionResult};
pub use wire::{MAX_LINE_LEN, MAX_REPLY_BYTES, MAX_REPLY_LINES};

/// Certificate types for [`TlsTrust`], re-exported so callers need no
/// direct rustls dependency.
pub use rustls::pki_types::CertificateDer;
