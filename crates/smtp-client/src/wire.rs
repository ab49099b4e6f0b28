//! Reading replies and writing commands with bounds: every read and write
//! runs against the step's deadline, and reply lines, line counts and reply
//! sizes are capped, so a peer that never answers, never ends a line or
//! never ends a reply costs a bounded amount of time and memory.
//!
//! Any failure here leaves the stream in an unknown state, so the stream is
//! dropped and every later use reports [`ErrorKind::Unusable`].

use std::time::Duration;

use bytes::{Buf, BytesMut};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::time::Instant;

use crate::error::{ClientError, ErrorKind, Peer, Step};
use crate::response::{parse_line, ReplyBuilder, Response};
use crate::stream::Stream;

/// Longest reply line accepted, without its CRLF. RFC 5321 §4.5.3.1.5 allows
/// 512 octets, but real servers exceed it (long EHLO keyword lists,
/// verbose rejection texts), and refusing those would fail deliveries that
/// work elsewhere; 4 KiB is lenient and still bounds a peer that never
/// sends CRLF.
pub const MAX_LINE_LEN: usize = 4096;

/// Most lines in one reply. Real EHLO replies have a few dozen; a peer
/// sending continuation lines forever is cut off here.
pub const MAX_REPLY_LINES: usize = 128;

/// Most octets in one reply (all lines together), so long lines times many
/// lines cannot add up to megabytes held for one reply.
pub const MAX_REPLY_BYTES: usize = 64 * 1024;

/// How much to ask the socket for at a time.
const READ_CHUNK: usize = 4096;

/// A step's time budget: one deadline for writing the command and reading
/// the whole reply.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Deadline {
    at: Instant,
    limit: Duration,
}

impl Deadline {
    pub fn after(limit: Duration) -> Self {
        let now = Instant::now();
        // A configured "forever" (Duration::MAX) must not overflow the clock.
        let at = now
            .checked_add(limit)
            .unwrap_or_else(|| now + Duration::from_secs(100 * 365 * 86_400));
        Self { at, limit }
    }
}

pub(crate) struct Wire {
    stream: Option<Stream>,
    /// Received but not yet consumed (pipelined replies arrive together).
    buf: BytesMut,
    pub peer: Peer,
}

impl Wire {
    pub fn new(stream: Stream, peer: Peer) -> Self {
        Self {
            stream: Some(stream),
            buf: BytesMut::with_capacity(READ_CHUNK),
            peer,
        }
    }

    pub fn is_open(&self) -> bool {
        self.stream.is_some()
    }

    pub fn error(&self, step: Step, kind: ErrorKind) -> ClientError {
        ClientError::new(&self.peer, step, kind)
    }

    /// An error after which the connection must not be used again.
    pub fn fail(&mut self, step: Step, kind: ErrorKind) -> ClientError {
        if self.stream.take().is_some() {
            tracing::debug!(peer = %self.peer, %step, error = %kind, "dropping the connection");
        }
        self.error(step, kind)
    }

    /// Takes the stream for the TLS handshake; `None` when it was dropped.
    pub fn take_stream(&mut self) -> Option<Stream> {
        self.stream.take()
    }

    pub fn put_stream(&mut self, stream: Stream) {
        self.stream = Some(stream);
    }

    /// True when the peer sent more than the reply just read. After the
    /// 220 to STARTTLS that would be plain text injected ahead of the
    /// handshake, which must not be read as if it came over TLS.
    pub fn has_unread_input(&self) -> bool {
        !self.buf.is_empty()
    }

    pub async fn write(
        &mut self,
        step: Step,
        deadline: Deadline,
        bytes: &[u8],
    ) -> Result<(), ClientError> {
        let Some(stream) = self.stream.as_mut() else {
            return Err(self.error(step, ErrorKind::Unusable));
        };
        let io = async {
            stream.write_all(bytes).await?;
            stream.flush().await
        };
        match tokio::time::timeout_at(deadline.at, io).await {
            Ok(Ok(())) => Ok(()),
            Ok(Err(e)) => Err(self.fail(step, ErrorKind::Io(e))),
            Err(_) => Err(self.fail(step, ErrorKind::Timeout(deadline.limit))),
        }
    }

    /// Reads one complete reply. A 421 is returned as
    /// [`ErrorKind::ServiceClosing`] since the server closes the connection
    /// after sending it, whatever the command was.
    pub async fn read_reply(
        &mut self,
        step: Step,
        deadline: Deadline,
        command: Option<String>,
    ) -> Result<Response, ClientError> {
        let mut total = 0usize;
        let first = self.read_line(step, deadline).await?;
        total += first.len();
        let Some(parsed) = parse_line(&first) else {
            return Err(self.fail(step, ErrorKind::Malformed(excerpt(&first))));
        };
        let mut builder = ReplyBuilder::new(&parsed);
        let mut last = parsed.last;
        let mut lines = 1;
        while !last {
            if lines == MAX_REPLY_LINES {
                return Err(self.fail(step, ErrorKind::TooManyLines(MAX_REPLY_LINES)));
            }
            let line = self.read_line(step, deadline).await?;
            total += line.len();
            if total > MAX_REPLY_BYTES {
                return Err(self.fail(step, ErrorKind::ReplyTooLarge(MAX_REPLY_BYTES)));
            }
            let Some(parsed) = parse_line(&line) else {
                return Err(self.fail(step, ErrorKind::Malformed(excerpt(&line))));
            };
            if builder.push(&parsed).is_err() {
                return Err(self.fail(step, ErrorKind::Malformed(excerpt(&line))));
            }
            last = parsed.last;
            lines += 1;
        }
        let response = builder.build(command);
        tracing::trace!(peer = %self.peer, %step, reply = %response, "received");
        if response.code == 421 {
            return Err(self.fail(step, ErrorKind::ServiceClosing(response)));
        }
        Ok(response)
    }

    /// One line without its line ending. Lines end in CRLF; a bare LF is
    /// accepted too, since being strict here would only fail deliveries.
    async fn read_line(&mut self, step: Step, deadline: Deadline) -> Result<String, ClientError> {
        loop {
            if let Some(pos) = self.buf.iter().position(|&b| b == b'\n') {
                let mut end = pos;
                if end > 0 && self.buf[end - 1] == b'\r' {
                    end -= 1;
                }
                if end > MAX_LINE_LEN {
                    return Err(self.fail(step, ErrorKind::LineTooLong(MAX_LINE_LEN)));
                }
                // Reply text is meant to be ASCII; anything else is shown,
                // not fatal.
                let line = String::from_utf8_lossy(&self.buf[..end]).into_owned();
                self.buf.advance(pos + 1);
                return Ok(line);
            }
            // No line end yet: more than a full line (plus CR) buffered
            // means the peer is not sending lines.
            if self.buf.len() > MAX_LINE_LEN + 1 {
                return Err(self.fail(step, ErrorKind::LineTooLong(MAX_LINE_LEN)));
            }
            let Some(stream) = self.stream.as_mut() else {
                return Err(self.error(step, ErrorKind::Unusable));
            };
            self.buf.reserve(READ_CHUNK);
            match tokio::time::timeout_at(deadline.at, stream.read_buf(&mut self.buf)).await {
                Ok(Ok(0)) => return Err(self.fail(step, ErrorKind::Closed)),
                Ok(Ok(_)) => {}
                Ok(Err(e)) => return Err(self.fail(step, ErrorKind::Io(e))),
                Err(_) => return Err(self.fail(step, ErrorKind::Timeout(deadline.limit))),
            }
        }
    }

    /// Closes the stream, telling a TLS peer with close_notify; best effort
    /// and bounded, since the connection is being abandoned anyway.
    pub async fn close(&mut self, limit: Duration) {
        if let Some(mut stream) = self.stream.take() {
            let _ = tokio::time::timeout(limit, stream.shutdown()).await;
        }
    }
}

/// The start of a bad line, for the error message.
fn excerpt(line: &str) -> String {
    const SHOWN: usize = 80;
    match line.char_indices().nth(SHOWN) {
        Some((i, _)) => format!("{}...", &line[..i]),
        None => line.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_endless_timeout_does_not_overflow_the_clock() {
        let d = Deadline::after(Duration::MAX);
        assert!(d.at > Instant::now());
    }

    #[test]
    fn error_excerpts_cut_long_lines_at_a_character_boundary() {
        let line = "é".repeat(100);
        let shown = excerpt(&line);
        assert_eq!(shown.chars().count(), 83);
        assert!(shown.ends_with("..."));
        assert_eq!(excerpt("short"), "short");
    }
}
