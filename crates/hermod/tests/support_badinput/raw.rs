//! A byte-level SMTP client: writes exactly the bytes a case needs (NUL,
//! non-UTF-8, bare LF, whole pipelined sessions) and reads replies one at
//! a time, or everything until the server closes.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::{TcpSocket, TcpStream};

/// Per-reply bound: a stuck server fails the case instead of hanging it.
pub const REPLY_TIMEOUT: Duration = Duration::from_secs(15);

pub struct Raw {
    reader: BufReader<tokio::net::tcp::OwnedReadHalf>,
    writer: tokio::net::tcp::OwnedWriteHalf,
}

/// One reply: code and every line's text joined by `\n`.
#[derive(Debug, Clone)]
pub struct Reply {
    pub code: u16,
    pub text: String,
}

impl Reply {
    /// `code` and an enhanced-code/text prefix, e.g. `(501, "5.5.2")`.
    #[track_caller]
    pub fn assert(&self, code: u16, starts: &str) {
        assert!(
            self.code == code && self.text.starts_with(starts),
            "expected {code} {starts}..., got {self:?}"
        );
    }
}

impl Raw {
    /// Connect and consume the 220 greeting.
    pub async fn connect(addr: SocketAddr) -> Raw {
        let s = TcpStream::connect(addr).await.expect("connecting");
        Self::greeted(s).await
    }

    /// Connect from a chosen loopback source address (e.g. 127.0.0.2).
    pub async fn connect_from(src: [u8; 4], addr: SocketAddr) -> Raw {
        let sock = TcpSocket::new_v4().expect("socket");
        sock.bind(SocketAddr::from((src, 0)))
            .expect("binding the source address");
        let s = sock.connect(addr).await.expect("connecting");
        Self::greeted(s).await
    }

    /// Connect without reading anything.
    pub async fn connect_silent(addr: SocketAddr) -> Raw {
        let s = TcpStream::connect(addr).await.expect("connecting");
        let (r, w) = s.into_split();
        Raw {
            reader: BufReader::new(r),
            writer: w,
        }
    }

    async fn greeted(s: TcpStream) -> Raw {
        let (r, w) = s.into_split();
        let mut raw = Raw {
            reader: BufReader::new(r),
            writer: w,
        };
        raw.reply().await.assert(220, "");
        raw
    }

    /// Connect and say EHLO.
    pub async fn ehlo(addr: SocketAddr) -> Raw {
        let mut raw = Self::connect(addr).await;
        raw.cmd("EHLO bad.test").await.assert(250, "");
        raw
    }

    pub async fn send(&mut self, bytes: &[u8]) {
        self.writer.write_all(bytes).await.expect("writing");
    }

    /// Send one line (CRLF appended) and read its reply.
    pub async fn cmd(&mut self, line: &str) -> Reply {
        self.cmd_bytes(line.as_bytes()).await
    }

    pub async fn cmd_bytes(&mut self, line: &[u8]) -> Reply {
        let mut wire = line.to_vec();
        wire.extend_from_slice(b"\r\n");
        self.send(&wire).await;
        self.reply().await
    }

    /// Read one (possibly multi-line) reply.
    pub async fn reply(&mut self) -> Reply {
        self.try_reply(REPLY_TIMEOUT)
            .await
            .unwrap_or_else(|e| panic!("no SMTP reply: {e}"))
    }

    /// A reply, or why there is none (`closed`, `timeout`, ...).
    pub async fn try_reply(&mut self, timeout: Duration) -> Result<Reply, String> {
        let mut lines = Vec::new();
        loop {
            let mut buf = Vec::new();
            let n = tokio::time::timeout(timeout, self.reader.read_until(b'\n', &mut buf))
                .await
                .map_err(|_| format!("timeout after {timeout:?}; lines so far {lines:?}"))?
                .map_err(|e| format!("read error: {e}"))?;
            if n == 0 {
                return Err(format!("closed; lines so far {lines:?}"));
            }
            let line = String::from_utf8_lossy(&buf).trim_end().to_string();
            let code: u16 = line
                .get(..3)
                .and_then(|c| c.parse().ok())
                .ok_or_else(|| format!("malformed reply line {line:?}"))?;
            lines.push(line.get(4..).unwrap_or("").to_string());
            if line.as_bytes().get(3) != Some(&b'-') {
                return Ok(Reply {
                    code,
                    text: lines.join("\n"),
                });
            }
        }
    }

    /// Every byte until the server closes; panics if it stays open past `timeout`.
    pub async fn read_to_close(&mut self, timeout: Duration) -> String {
        let mut out = Vec::new();
        let r = tokio::time::timeout(timeout, self.reader.read_to_end(&mut out)).await;
        let text = String::from_utf8_lossy(&out).to_string();
        match r {
            Ok(_) => text,
            Err(_) => panic!("server kept the connection open past {timeout:?}; got {text:?}"),
        }
    }

    /// Wait until the server closes (EOF or reset); returns how long it took.
    pub async fn wait_closed(&mut self, timeout: Duration) -> Duration {
        let start = Instant::now();
        let mut sink = Vec::new();
        match tokio::time::timeout(timeout, self.reader.read_to_end(&mut sink)).await {
            Ok(_) => start.elapsed(),
            Err(_) => panic!("server kept the connection open past {timeout:?}"),
        }
    }
}

/// The replies in a blob of server output, one `code text` string per line.
pub fn reply_lines(blob: &str) -> Vec<String> {
    blob.lines().map(|l| l.trim_end().to_string()).collect()
}
