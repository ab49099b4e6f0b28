//! hermod-smtp: `kumo.start_esmtp_listener` and the ESMTP server that hands
//! received messages to a [`hermod_message::Acceptor`].
//!
//! Layout: `listener` accepts connections and enforces `max_connections`;
//! `session` runs the SMTP state machine over a `connection` (buffered
//! line/DATA reader and reply writer); `command` parses command lines;
//! `data` turns a DATA body into messages; `tls` handles STARTTLS; `auth`
//! handles AUTH PLAIN.

mod auth;
mod command;
pub mod config;
mod connection;
mod data;
mod listener;
mod meta;
mod relay;
mod session;
mod tls;
mod trace;

pub use config::{
    register, BatchHandling, ConfigError, EsmtpListenerConfig, InvalidLineEndings, KeySource,
    TraceHeaders,
};
pub use listener::{start_listener, ListenerHandle};
pub use meta::ConnMeta;

#[derive(Debug, thiserror::Error)]
pub enum SmtpError {
    #[error("kumo.start_esmtp_listener: {0}")]
    Config(#[from] ConfigError),
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

/// Entry points for the cargo-fuzz targets in `fuzz/`; not a stable API.
#[doc(hidden)]
pub mod fuzzing {
    use std::pin::Pin;
    use std::task::{Context, Poll};
    use std::time::Duration;

    use tokio::io::{AsyncRead, ReadBuf};

    pub use crate::command::{parse as parse_command, Command, ParseError, SyntaxError};
    pub use crate::connection::{DataOutcome, Line, ReadError};

    /// Client input delivered at most `chunk` bytes per read, so that the
    /// fuzzer controls where read boundaries fall.
    struct Chunked<'a> {
        input: &'a [u8],
        chunk: usize,
    }

    impl AsyncRead for Chunked<'_> {
        fn poll_read(
            mut self: Pin<&mut Self>,
            _cx: &mut Context<'_>,
            buf: &mut ReadBuf<'_>,
        ) -> Poll<std::io::Result<()>> {
            let n = self.chunk.max(1).min(self.input.len()).min(buf.remaining());
            let (now, rest) = self.input.split_at(n);
            buf.put_slice(now);
            self.input = rest;
            Poll::Ready(Ok(()))
        }
    }

    /// Run `Connection::read_data` over `input`, then `read_line` on what
    /// follows the terminator. Needs a Tokio runtime with the time driver.
    pub async fn read_data_then_line(
        input: &[u8],
        chunk: usize,
        line_limit: usize,
        max_size: usize,
        endings: crate::InvalidLineEndings,
    ) -> (
        Result<DataOutcome, ReadError>,
        Option<Result<Line, ReadError>>,
    ) {
        let stream = tokio::io::join(Chunked { input, chunk }, tokio::io::sink());
        let mut conn =
            crate::connection::Connection::new(stream, line_limit, Duration::from_secs(5));
        let data = conn.read_data(max_size, endings).await;
        let line = match data {
            Ok(_) => Some(conn.read_line().await),
            Err(_) => None,
        };
        (data, line)
    }
}
