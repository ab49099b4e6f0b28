//! Buffered SMTP I/O over any byte stream: command lines with a hard length
//! limit, the DATA body (dot-unstuffing, line-ending policy, size limit) and
//! replies that are written out only when the client's input is exhausted,
//! so a pipelined batch of commands is answered with a single write.

use std::io;
use std::time::Duration;

use bytes::BytesMut;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

use crate::config::InvalidLineEndings;

const READ_CHUNK: usize = 16 * 1024;

#[derive(Debug, thiserror::Error)]
pub enum ReadError {
    #[error("no input within {0:?}")]
    Timeout(Duration),
    #[error("peer closed the connection")]
    Closed,
    #[error("i/o error: {0}")]
    Io(#[from] io::Error),
}

#[derive(Debug, PartialEq, Eq)]
pub enum Line {
    /// The line without its line ending.
    Text(BytesMut),
    /// Longer than the hard limit; the whole line has been consumed.
    TooLong,
}

#[derive(Debug, PartialEq, Eq)]
pub enum DataOutcome {
    /// Unstuffed content with line endings per the configured policy.
    Message(Vec<u8>),
    /// Larger than the size limit (`552 5.3.4`).
    TooBig,
    /// A line exceeded the hard limit (`500 5.2.3`).
    LineTooLong,
    /// A bare CR or LF under `invalid_line_endings = "Deny"` (`552 5.6.0`).
    BareLineEnding,
}

pub struct Connection<S> {
    stream: S,
    rbuf: BytesMut,
    wbuf: Vec<u8>,
    line_limit: usize,
    timeout: Duration,
    /// 4xx/5xx replies queued since the session last took them, for
    /// Rejection log records.
    rejections: Vec<(u16, String)>,
}

impl<S: AsyncRead + AsyncWrite + Unpin> Connection<S> {
    pub fn new(stream: S, line_limit: usize, timeout: Duration) -> Self {
        Self {
            stream,
            rbuf: BytesMut::with_capacity(READ_CHUNK),
            wbuf: Vec::with_capacity(512),
            line_limit,
            timeout,
            rejections: Vec::new(),
        }
    }

    /// The rejections replied since the last call.
    pub fn take_rejections(&mut self) -> Vec<(u16, String)> {
        std::mem::take(&mut self.rejections)
    }

    /// The stream and any input already read but not yet consumed.
    pub fn into_parts(self) -> (S, BytesMut) {
        (self.stream, self.rbuf)
    }

    /// Queue a reply; multi-line replies use `code-text` on all but the last line.
    pub fn reply(&mut self, code: u16, text: &str) {
        if hermod_message::accept::is_rejection(code, text) {
            self.rejections.push((code, text.to_string()));
        }
        let mut lines = text.split('\n').peekable();
        while let Some(line) = lines.next() {
            let sep = if lines.peek().is_some() { '-' } else { ' ' };
            self.wbuf.extend_from_slice(
                format!("{code}{sep}{}\r\n", line.trim_end_matches('\r')).as_bytes(),
            );
        }
    }

    /// Write pending replies. A client that stops reading is given the same
    /// grace as one that stops writing, so it cannot pin a session forever.
    pub async fn flush(&mut self) -> io::Result<()> {
        let write = async {
            if !self.wbuf.is_empty() {
                self.stream.write_all(&self.wbuf).await?;
                self.wbuf.clear();
            }
            self.stream.flush().await
        };
        match tokio::time::timeout(self.timeout, write).await {
            Ok(r) => r,
            Err(_) => Err(io::Error::new(
                io::ErrorKind::TimedOut,
                format!("client did not read replies within {:?}", self.timeout),
            )),
        }
    }

    /// Flush pending replies, then wait for more input. Replies are sent
    /// here, i.e. only once every buffered command has been answered.
    async fn fill(&mut self) -> Result<(), ReadError> {
        self.flush().await?;
        self.rbuf.reserve(READ_CHUNK);
        match tokio::time::timeout(self.timeout, self.stream.read_buf(&mut self.rbuf)).await {
            Err(_) => Err(ReadError::Timeout(self.timeout)),
            Ok(Ok(0)) => Err(ReadError::Closed),
            Ok(Ok(_)) => Ok(()),
            Ok(Err(e)) => Err(ReadError::Io(e)),
        }
    }

    /// Read one command line (LF or CRLF terminated).
    pub async fn read_line(&mut self) -> Result<Line, ReadError> {
        self.read_line_limited(self.line_limit).await
    }

    /// Read one line with its own length limit: an AUTH exchange line may be
    /// longer than a command line.
    pub async fn read_line_limited(&mut self, limit: usize) -> Result<Line, ReadError> {
        let mut too_long = false;
        loop {
            if let Some(pos) = memchr::memchr(b'\n', &self.rbuf) {
                let mut line = self.rbuf.split_to(pos + 1);
                if too_long {
                    return Ok(Line::TooLong);
                }
                line.truncate(pos);
                if line.last() == Some(&b'\r') {
                    line.truncate(pos - 1);
                }
                if line.len() > limit {
                    return Ok(Line::TooLong);
                }
                return Ok(Line::Text(line));
            }
            // No line ending yet: drop an over-long partial line so a client
            // cannot make us buffer without bound.
            if self.rbuf.len() > limit + 2 {
                too_long = true;
                self.rbuf.clear();
            }
            self.fill().await?;
        }
    }

    /// Read a DATA body up to the `CRLF.CRLF` terminator. Limit violations do
    /// not stop the read: the body is consumed to the terminator so that the
    /// session stays in step with the client.
    pub async fn read_data(
        &mut self,
        max_size: usize,
        endings: InvalidLineEndings,
    ) -> Result<DataOutcome, ReadError> {
        let mut out = Vec::with_capacity(8 * 1024);
        let mut too_big = false;
        let mut line_too_long = false;
        let mut bare = false;
        let mut in_long_line = false;
        // The terminator must follow a CRLF: treating `<LF>.<LF>` or
        // `<LF>.<CRLF>` as the end would allow SMTP smuggling.
        let mut prev_crlf = true;
        loop {
            let Some(pos) = memchr::memchr(b'\n', &self.rbuf) else {
                if self.rbuf.len() > self.line_limit + 2 {
                    in_long_line = true;
                    line_too_long = true;
                    // Keep a trailing CR: if the LF arrives in the next read,
                    // the line still ends in CRLF and the terminator after it
                    // is recognised.
                    let keep_cr = self.rbuf.last() == Some(&b'\r');
                    self.rbuf.clear();
                    if keep_cr {
                        self.rbuf.extend_from_slice(b"\r");
                    }
                }
                self.fill().await?;
                continue;
            };
            let line = self.rbuf.split_to(pos + 1);
            let ends_crlf = pos > 0 && line[pos - 1] == b'\r';
            if in_long_line {
                in_long_line = false;
                prev_crlf = ends_crlf;
                continue;
            }
            let content = &line[..if ends_crlf { pos - 1 } else { pos }];
            if prev_crlf && ends_crlf && content == b"." {
                break;
            }
            prev_crlf = ends_crlf;
            if content.len() > self.line_limit {
                line_too_long = true;
                continue;
            }
            if too_big || line_too_long || bare {
                continue;
            }
            let content = content.strip_prefix(b".").unwrap_or(content);
            let has_bare_cr = memchr::memchr(b'\r', content).is_some();
            let has_bare = has_bare_cr || !ends_crlf;
            match endings {
                InvalidLineEndings::Deny if has_bare => {
                    bare = true;
                    out = Vec::new();
                    continue;
                }
                InvalidLineEndings::Fix if has_bare_cr => {
                    for (i, part) in content.split(|b| *b == b'\r').enumerate() {
                        if i > 0 {
                            out.extend_from_slice(b"\r\n");
                        }
                        out.extend_from_slice(part);
                    }
                    out.extend_from_slice(b"\r\n");
                }
                InvalidLineEndings::Allow => {
                    out.extend_from_slice(content);
                    out.extend_from_slice(if ends_crlf { b"\r\n" } else { b"\n" });
                }
                _ => {
                    out.extend_from_slice(content);
                    out.extend_from_slice(b"\r\n");
                }
            }
            if out.len() > max_size {
                too_big = true;
                // Stop holding the oversized body; only the terminator matters now.
                out = Vec::new();
            }
        }
        Ok(if line_too_long {
            DataOutcome::LineTooLong
        } else if too_big {
            DataOutcome::TooBig
        } else if bare {
            DataOutcome::BareLineEnding
        } else {
            DataOutcome::Message(out)
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{duplex, DuplexStream};

    async fn conn_with(input: &[u8], limit: usize) -> (Connection<DuplexStream>, DuplexStream) {
        let (a, mut b) = duplex(1 << 20);
        b.write_all(input).await.unwrap();
        (Connection::new(a, limit, Duration::from_millis(200)), b)
    }

    async fn data(input: &[u8], endings: InvalidLineEndings) -> DataOutcome {
        let (mut c, _peer) = conn_with(input, 998).await;
        c.read_data(1 << 20, endings).await.unwrap()
    }

    #[tokio::test]
    async fn lines_are_split_on_crlf_and_lf() {
        let (mut c, _p) = conn_with(b"EHLO a\r\nNOOP\nQUIT\r\n", 998).await;
        assert_eq!(
            c.read_line().await.unwrap(),
            Line::Text(BytesMut::from(&b"EHLO a"[..]))
        );
        assert_eq!(
            c.read_line().await.unwrap(),
            Line::Text(BytesMut::from(&b"NOOP"[..]))
        );
        assert_eq!(
            c.read_line().await.unwrap(),
            Line::Text(BytesMut::from(&b"QUIT"[..]))
        );
        assert!(matches!(c.read_line().await, Err(ReadError::Timeout(_))));
    }

    #[tokio::test]
    async fn over_long_command_is_consumed_and_reported() {
        let mut input = vec![b'A'; 5000];
        input.extend_from_slice(b"\r\nNOOP\r\n");
        let (mut c, _p) = conn_with(&input, 998).await;
        assert_eq!(c.read_line().await.unwrap(), Line::TooLong);
        assert_eq!(
            c.read_line().await.unwrap(),
            Line::Text(BytesMut::from(&b"NOOP"[..]))
        );
    }

    #[tokio::test]
    async fn line_of_exactly_the_limit_is_accepted() {
        let mut input = vec![b'A'; 10];
        input.extend_from_slice(b"\r\n");
        let (mut c, _p) = conn_with(&input, 10).await;
        assert!(matches!(c.read_line().await.unwrap(), Line::Text(l) if l.len() == 10));
    }

    #[tokio::test]
    async fn closed_peer_is_reported() {
        let (a, b) = duplex(64);
        drop(b);
        let mut c = Connection::new(a, 998, Duration::from_secs(1));
        assert!(matches!(c.read_line().await, Err(ReadError::Closed)));
    }

    #[tokio::test]
    async fn dot_stuffing_is_undone() {
        let out = data(
            b"Subject: x\r\n\r\n..line\r\n.\r\n",
            InvalidLineEndings::Deny,
        )
        .await;
        assert_eq!(
            out,
            DataOutcome::Message(b"Subject: x\r\n\r\n.line\r\n".to_vec())
        );
    }

    #[tokio::test]
    async fn bare_lf_is_denied_allowed_or_fixed() {
        let input = b"A: b\n\r\nbody\nx\rz\r\n.\r\n";
        assert_eq!(
            data(input, InvalidLineEndings::Deny).await,
            DataOutcome::BareLineEnding
        );
        assert_eq!(
            data(input, InvalidLineEndings::Allow).await,
            DataOutcome::Message(b"A: b\n\r\nbody\nx\rz\r\n".to_vec())
        );
        assert_eq!(
            data(input, InvalidLineEndings::Fix).await,
            DataOutcome::Message(b"A: b\r\n\r\nbody\r\nx\r\nz\r\n".to_vec())
        );
    }

    #[tokio::test]
    async fn lf_dot_lf_does_not_end_the_message() {
        let input = b"a\r\n.\nb\n.\r\nc\r\n.\r\n";
        assert_eq!(
            data(input, InvalidLineEndings::Allow).await,
            DataOutcome::Message(b"a\r\n\nb\n\r\nc\r\n".to_vec())
        );
    }

    #[tokio::test]
    async fn oversize_body_is_read_to_the_terminator() {
        let mut input = Vec::new();
        for _ in 0..100 {
            input.extend_from_slice(b"0123456789012345678901234567890123456789\r\n");
        }
        input.extend_from_slice(b".\r\nNOOP\r\n");
        let (mut c, _p) = conn_with(&input, 998).await;
        assert_eq!(
            c.read_data(1000, InvalidLineEndings::Deny).await.unwrap(),
            DataOutcome::TooBig
        );
        assert_eq!(
            c.read_line().await.unwrap(),
            Line::Text(BytesMut::from(&b"NOOP"[..]))
        );
    }

    #[tokio::test]
    async fn over_long_data_line_is_reported_after_the_terminator() {
        let mut input = b"a\r\n".to_vec();
        input.extend(std::iter::repeat_n(b'x', 50_000));
        input.extend_from_slice(b"\r\nb\r\n.\r\nNOOP\r\n");
        let (mut c, _p) = conn_with(&input, 998).await;
        assert_eq!(
            c.read_data(1 << 20, InvalidLineEndings::Deny)
                .await
                .unwrap(),
            DataOutcome::LineTooLong
        );
        assert_eq!(
            c.read_line().await.unwrap(),
            Line::Text(BytesMut::from(&b"NOOP"[..]))
        );
    }

    #[tokio::test]
    async fn replies_are_buffered_until_flush() {
        let (a, mut b) = duplex(1024);
        let mut c = Connection::new(a, 998, Duration::from_secs(1));
        c.reply(250, "first\nsecond");
        c.reply(221, "bye");
        c.flush().await.unwrap();
        drop(c);
        let mut got = Vec::new();
        b.read_to_end(&mut got).await.unwrap();
        assert_eq!(got, b"250-first\r\n250 second\r\n221 bye\r\n");
    }
}
