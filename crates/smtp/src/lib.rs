//! hermod-smtp: `kumo.start_esmtp_listener` and the ESMTP server that hands
//! received messages to a [`hermod_message::Acceptor`].
//!
//! Layout: `listener` accepts connections and enforces `max_connections`;
//! `session` runs the SMTP state machine over a `connection` (buffered
//! line/DATA reader and reply writer); `command` parses command lines;
//! `data` turns a DATA body into messages; `tls` handles STARTTLS.

mod command;
pub mod config;
mod connection;
mod data;
mod listener;
mod meta;
mod session;
mod tls;
mod trace;

pub use config::{
    register, BatchHandling, EsmtpListenerConfig, InvalidLineEndings, KeySource, TraceHeaders,
};
pub use listener::{start_listener, ListenerHandle};
pub use meta::ConnMeta;

#[derive(Debug, thiserror::Error)]
pub enum SmtpError {
    #[error("kumo.start_esmtp_listener: {0}")]
    Config(String),
    #[error("kumo.start_esmtp_listener: cannot listen on {addr}: {source}")]
    Bind {
        addr: String,
        #[source]
        source: std::io::Error,
    },
    #[error("kumo.start_esmtp_listener: TLS: {0}")]
    Tls(String),
    #[error("kumo.start_esmtp_listener: policy: {0}")]
    Policy(String),
}
