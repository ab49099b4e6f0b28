//! A small ESMTP client specialised for load generation: EHLO, optional
//! STARTTLS, and pipelined MAIL/RCPT/DATA transactions on a reused
//! connection.

use std::time::{Duration, Instant};

use rustls::pki_types::ServerName;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio_rustls::TlsConnector;

pub use crate::reply::Reply;
use crate::reply::{parse_reply_line, truncate};

/// Replies longer than this are a protocol violation; bounding the buffer
/// keeps a misbehaving server from exhausting memory.
const MAX_REPLY_BYTES: usize = 64 * 1024;

#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    #[error("i/o: {0}")]
    Io(#[from] std::io::Error),
    #[error("timed out waiting for {0}")]
    Timeout(&'static str),
    #[error("connection closed by server")]
    Closed,
    #[error("malformed reply: {0}")]
    Malformed(String),
    #[error("server refused {stage}: {reply}")]
    Refused { stage: &'static str, reply: Reply },
    #[error("STARTTLS requested but not advertised by the server")]
    NoStartTls,
    #[error("invalid TLS server name {0:?}")]
    ServerName(String),
}

impl ClientError {
    /// True for failures that happen when a reused connection was closed by
    /// the server while idle: nothing of the transaction was acknowledged,
    /// so retrying on a fresh connection cannot duplicate a message.
    pub fn is_stale_connection(&self) -> bool {
        match self {
            ClientError::Closed => true,
            ClientError::Io(e) => matches!(
                e.kind(),
                std::io::ErrorKind::BrokenPipe
                    | std::io::ErrorKind::ConnectionReset
                    | std::io::ErrorKind::ConnectionAborted
                    | std::io::ErrorKind::UnexpectedEof
            ),
            _ => false,
        }
    }
}

/// Outcome of one transaction that reached a final answer from the server.
#[derive(Debug)]
pub enum TxOutcome {
    /// Final 2xx after the body.
    Accepted { reply: Reply, latency: Duration },
    /// A non-2xx at some stage. `final_reply` is set when the body was
    /// still sent (some recipients accepted) and the server answered it,
    /// since a 250 there still carries ids that were spooled.
    Refused {
        stage: &'static str,
        reply: Reply,
        final_reply: Option<Reply>,
    },
}

pub trait AsyncStream: AsyncRead + AsyncWrite + Unpin + Send {}
impl<T: AsyncRead + AsyncWrite + Unpin + Send> AsyncStream for T {}

pub struct SmtpClient {
    stream: Box<dyn AsyncStream>,
    rbuf: Vec<u8>,
    timeout: Duration,
    pipelining: bool,
    /// Messages completed on this connection; >0 means it has been reused.
    pub transactions: u64,
    /// Replies read during the current transaction; 0 after a failure
    /// means the server never answered any part of it.
    pub replies_in_tx: usize,
}

pub struct ConnectOptions<'a> {
    pub addr: std::net::SocketAddr,
    pub helo: &'a str,
    pub tls: Option<(&'a TlsConnector, &'a str)>,
    pub timeout: Duration,
}

impl SmtpClient {
    /// Opens a session: greeting, EHLO, and STARTTLS + EHLO when `tls` is set.
    pub async fn connect(opts: ConnectOptions<'_>) -> Result<Self, ClientError> {
        let tcp = tokio::time::timeout(opts.timeout, TcpStream::connect(opts.addr))
            .await
            .map_err(|_| ClientError::Timeout("connect"))??;
        tcp.set_nodelay(true)?;
        let mut client = SmtpClient {
            stream: Box::new(tcp),
            rbuf: Vec::with_capacity(1024),
            timeout: opts.timeout,
            pipelining: false,
            transactions: 0,
            replies_in_tx: 0,
        };
        client.expect("greeting", 220).await?;
        let caps = client.ehlo(opts.helo).await?;
        if let Some((connector, server_name)) = opts.tls {
            if !caps.iter().any(|c| c.eq_ignore_ascii_case("STARTTLS")) {
                return Err(ClientError::NoStartTls);
            }
            client.write_all(b"STARTTLS\r\n").await?;
            client.expect("STARTTLS", 220).await?;
            if !client.rbuf.is_empty() {
                // Bytes sent before the handshake would be injected into
                // the TLS session (CVE-2011-0411 class); refuse them.
                return Err(ClientError::Malformed(
                    "data after STARTTLS reply".to_owned(),
                ));
            }
            let name = ServerName::try_from(server_name.to_owned())
                .map_err(|_| ClientError::ServerName(server_name.to_owned()))?;
            // A disconnected duplex is a cheap placeholder while the TCP stream
            // is moved into the TLS handshake.
            let plain = std::mem::replace(&mut client.stream, Box::new(tokio::io::duplex(1).0));
            let tls = tokio::time::timeout(opts.timeout, connector.connect(name, plain))
                .await
                .map_err(|_| ClientError::Timeout("TLS handshake"))??;
            client.stream = Box::new(tls);
            client.ehlo(opts.helo).await?;
        }
        Ok(client)
    }

    async fn ehlo(&mut self, helo: &str) -> Result<Vec<String>, ClientError> {
        self.write_all(format!("EHLO {helo}\r\n").as_bytes())
            .await?;
        let reply = self.expect("EHLO", 250).await?;
        let caps: Vec<String> = reply
            .lines
            .iter()
            .skip(1)
            .filter_map(|l| l.split_ascii_whitespace().next())
            .map(str::to_ascii_uppercase)
            .collect();
        self.pipelining = caps.iter().any(|c| c == "PIPELINING");
        Ok(caps)
    }

    /// Runs one transaction. `body` must already be dot-stuffed and end
    /// with `\r\n.\r\n`. Returns `Err` only for connection-level failures;
    /// refusals are reported in `TxOutcome::Refused` and leave the session
    /// reset and reusable.
    pub async fn send_message(
        &mut self,
        from: &str,
        rcpts: &[String],
        body: &[&[u8]],
    ) -> Result<TxOutcome, ClientError> {
        let started = Instant::now();
        self.replies_in_tx = 0;
        let mut commands = Vec::with_capacity(64 + rcpts.len() * 48);
        commands.extend_from_slice(format!("MAIL FROM:<{from}>\r\n").as_bytes());
        let mut stages: Vec<&'static str> = vec!["MAIL FROM"];
        for rcpt in rcpts {
            commands.extend_from_slice(format!("RCPT TO:<{rcpt}>\r\n").as_bytes());
            stages.push("RCPT TO");
        }
        commands.extend_from_slice(b"DATA\r\n");
        stages.push("DATA");

        let mut first_refusal: Option<(&'static str, Reply)> = None;
        let mut data_ok = false;
        if self.pipelining {
            self.write_all(&commands).await?;
            for (i, stage) in stages.iter().enumerate() {
                let reply = self.read_reply(stage).await?;
                let is_data = i + 1 == stages.len();
                let ok = if is_data {
                    reply.code == 354
                } else {
                    reply.is_positive()
                };
                if is_data {
                    data_ok = ok;
                }
                if !ok && first_refusal.is_none() {
                    first_refusal = Some((stage, reply));
                }
            }
        } else {
            // Without PIPELINING each command waits for its reply, and the
            // first refusal ends the transaction.
            let mut start = 0;
            for (i, stage) in stages.iter().enumerate() {
                let end = memchr_crlf(&commands, start);
                self.write_all(&commands[start..end]).await?;
                start = end;
                let reply = self.read_reply(stage).await?;
                let is_data = i + 1 == stages.len();
                let ok = if is_data {
                    reply.code == 354
                } else {
                    reply.is_positive()
                };
                if !ok {
                    first_refusal = Some((stage, reply));
                    break;
                }
                data_ok = is_data;
            }
        }

        if !data_ok {
            let Some((stage, reply)) = first_refusal else {
                return Err(ClientError::Malformed("DATA not answered".to_owned()));
            };
            // The server may still hold a half-open transaction (MAIL
            // accepted); clear it so the connection can be reused.
            self.write_all(b"RSET\r\n").await?;
            self.read_reply("RSET").await?;
            return Ok(TxOutcome::Refused {
                stage,
                reply,
                final_reply: None,
            });
        }

        for chunk in body {
            self.write_raw(chunk).await?;
        }
        self.stream.flush().await?;
        let final_reply = self.read_reply("end of DATA").await?;
        self.transactions += 1;
        if let Some((stage, reply)) = first_refusal {
            return Ok(TxOutcome::Refused {
                stage,
                reply,
                final_reply: Some(final_reply),
            });
        }
        if final_reply.code / 100 != 2 {
            return Ok(TxOutcome::Refused {
                stage: "end of DATA",
                reply: final_reply,
                final_reply: None,
            });
        }
        Ok(TxOutcome::Accepted {
            reply: final_reply,
            latency: started.elapsed(),
        })
    }

    /// Best-effort polite close; failures are irrelevant at this point.
    pub async fn quit(mut self) {
        if self.write_all(b"QUIT\r\n").await.is_ok() {
            let _ = self.read_reply("QUIT").await;
        }
        let _ = self.stream.shutdown().await;
    }

    async fn expect(&mut self, stage: &'static str, code: u16) -> Result<Reply, ClientError> {
        let reply = self.read_reply(stage).await?;
        if reply.code != code {
            return Err(ClientError::Refused { stage, reply });
        }
        Ok(reply)
    }

    async fn write_raw(&mut self, data: &[u8]) -> Result<(), ClientError> {
        tokio::time::timeout(self.timeout, self.stream.write_all(data))
            .await
            .map_err(|_| ClientError::Timeout("write"))??;
        Ok(())
    }

    async fn write_all(&mut self, data: &[u8]) -> Result<(), ClientError> {
        self.write_raw(data).await?;
        tokio::time::timeout(self.timeout, self.stream.flush())
            .await
            .map_err(|_| ClientError::Timeout("flush"))??;
        Ok(())
    }

    /// Reads one complete reply, tolerating any split of lines across reads.
    pub async fn read_reply(&mut self, stage: &'static str) -> Result<Reply, ClientError> {
        let mut lines = Vec::new();
        let mut code = None;
        loop {
            let line = self.read_line(stage).await?;
            let (c, last, text) = parse_reply_line(&line)?;
            if *code.get_or_insert(c) != c {
                return Err(ClientError::Malformed(format!(
                    "reply code changed mid-reply: {}",
                    truncate(&line)
                )));
            }
            lines.push(text.to_owned());
            if last {
                self.replies_in_tx += 1;
                return Ok(Reply { code: c, lines });
            }
        }
    }

    async fn read_line(&mut self, stage: &'static str) -> Result<String, ClientError> {
        let mut scanned = 0;
        loop {
            if let Some(pos) = self.rbuf[scanned..].iter().position(|&b| b == b'\n') {
                let end = scanned + pos;
                let mut line: Vec<u8> = self.rbuf.drain(..=end).collect();
                line.pop();
                if line.last() == Some(&b'\r') {
                    line.pop();
                }
                return String::from_utf8(line)
                    .map_err(|_| ClientError::Malformed("non-UTF-8 reply".to_owned()));
            }
            scanned = self.rbuf.len();
            if self.rbuf.len() > MAX_REPLY_BYTES {
                return Err(ClientError::Malformed("reply line too long".to_owned()));
            }
            let mut chunk = [0u8; 4096];
            let n = tokio::time::timeout(self.timeout, self.stream.read(&mut chunk))
                .await
                .map_err(|_| ClientError::Timeout(stage))??;
            if n == 0 {
                return Err(ClientError::Closed);
            }
            self.rbuf.extend_from_slice(&chunk[..n]);
        }
    }
}

/// End (exclusive) of the CRLF-terminated command starting at `start`.
fn memchr_crlf(buf: &[u8], start: usize) -> usize {
    buf[start..]
        .windows(2)
        .position(|w| w == b"\r\n")
        .map_or(buf.len(), |p| start + p + 2)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn crlf_splitting_walks_pipelined_commands() {
        let buf = b"MAIL FROM:<a@b>\r\nRCPT TO:<c@d>\r\nDATA\r\n";
        let first = memchr_crlf(buf, 0);
        assert_eq!(&buf[..first], b"MAIL FROM:<a@b>\r\n");
        let second = memchr_crlf(buf, first);
        assert_eq!(&buf[first..second], b"RCPT TO:<c@d>\r\n");
        assert_eq!(memchr_crlf(buf, second), buf.len());
    }
}
