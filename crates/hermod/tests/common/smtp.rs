//! A minimal SMTP client for the end-to-end tests: plain ESMTP, one
//! transaction at a time, dot-stuffing, and the ids from `250 OK ids=<id>`.

use std::net::SocketAddr;
use std::time::Duration;

use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::net::TcpStream;

/// Per-reply bound: a stuck server fails the test instead of hanging it.
const REPLY_TIMEOUT: Duration = Duration::from_secs(30);

/// One accepted message: the id Hermod returned and the exact bytes the
/// server must have received (the content before dot-stuffing, CRLF lines).
#[derive(Clone, Debug)]
pub struct Sent {
    pub id: String,
    pub data: Vec<u8>,
}

/// A reply: code and the text of every line joined by `\n`.
#[derive(Debug)]
pub struct Reply {
    pub code: u16,
    pub text: String,
}

pub struct Client {
    reader: BufReader<tokio::net::tcp::OwnedReadHalf>,
    writer: tokio::net::tcp::OwnedWriteHalf,
}

impl Client {
    /// Connect, read the greeting and say EHLO.
    pub async fn connect(addr: SocketAddr) -> Client {
        let stream = TcpStream::connect(addr)
            .await
            .unwrap_or_else(|e| panic!("connecting to {addr}: {e}"));
        let (r, w) = stream.into_split();
        let mut c = Client {
            reader: BufReader::new(r),
            writer: w,
        };
        c.expect(220, "greeting").await;
        c.command("EHLO e2e.test", 250).await;
        c
    }

    pub async fn read_reply(&mut self) -> Reply {
        let mut text = Vec::new();
        loop {
            let mut line = String::new();
            let n = tokio::time::timeout(REPLY_TIMEOUT, self.reader.read_line(&mut line))
                .await
                .expect("no SMTP reply within 30s")
                .expect("reading an SMTP reply");
            assert!(
                n > 0,
                "server closed the connection; replies so far: {text:?}"
            );
            let line = line.trim_end();
            assert!(line.len() >= 3, "malformed SMTP reply line {line:?}");
            let code: u16 = line[..3]
                .parse()
                .unwrap_or_else(|_| panic!("malformed SMTP reply line {line:?}"));
            text.push(line.get(4..).unwrap_or("").to_string());
            if line.as_bytes().get(3) != Some(&b'-') {
                return Reply {
                    code,
                    text: text.join("\n"),
                };
            }
        }
    }

    async fn expect(&mut self, code: u16, what: &str) -> Reply {
        let r = self.read_reply().await;
        assert_eq!(r.code, code, "{what}: unexpected reply {r:?}");
        r
    }

    /// Send one command line and require `code`.
    pub async fn command(&mut self, line: &str, code: u16) -> Reply {
        let r = self.reply_to(line).await;
        assert_eq!(r.code, code, "{line}: unexpected reply {r:?}");
        r
    }

    /// Send one command line and return its reply, whatever the code.
    pub async fn reply_to(&mut self, line: &str) -> Reply {
        self.writer
            .write_all(format!("{line}\r\n").as_bytes())
            .await
            .expect("writing an SMTP command");
        self.read_reply().await
    }

    /// One transaction; `data` is the unstuffed content (CRLF lines, ending
    /// with CRLF). Returns the final reply to DATA, whatever its code.
    pub async fn transaction(&mut self, from: &str, to: &str, data: &[u8]) -> Reply {
        self.command(&format!("MAIL FROM:<{from}>"), 250).await;
        self.command(&format!("RCPT TO:<{to}>"), 250).await;
        self.command("DATA", 354).await;
        let mut wire = dot_stuff(data);
        wire.extend_from_slice(b".\r\n");
        self.writer
            .write_all(&wire)
            .await
            .expect("writing message data");
        self.read_reply().await
    }

    /// A transaction that must be accepted with exactly one id.
    pub async fn send(&mut self, from: &str, to: &str, data: &[u8]) -> String {
        let r = self.transaction(from, to, data).await;
        assert_eq!(r.code, 250, "DATA refused: {r:?}");
        let ids = ids_of(&r.text);
        assert_eq!(ids.len(), 1, "expected one id in {r:?}");
        ids.into_iter().next().unwrap_or_default()
    }

    pub async fn quit(mut self) {
        let _ = self.writer.write_all(b"QUIT\r\n").await;
        let _ = tokio::time::timeout(Duration::from_secs(5), self.read_reply()).await;
    }
}

/// The ids of a `250 OK ids=<a> <b>` reply text.
pub fn ids_of(text: &str) -> Vec<String> {
    text.split_once("ids=")
        .map(|(_, ids)| ids.split_whitespace().map(str::to_string).collect())
        .unwrap_or_default()
}

/// RFC 5321 §4.5.2 transparency: a line starting with `.` gets one more.
pub fn dot_stuff(data: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(data.len() + 16);
    let mut at_line_start = true;
    for &b in data {
        if at_line_start && b == b'.' {
            out.push(b'.');
        }
        out.push(b);
        at_line_start = b == b'\n';
    }
    out
}

/// Message `i` of a test: headers and a body that carry `marker`, a line that
/// needs dot-stuffing, a `..` line and non-ASCII bytes.
pub fn test_message(marker: &str, recipient: &str, i: usize) -> Vec<u8> {
    format!(
        "From: <sender@e2e.test>\r\n\
         To: <{recipient}>\r\n\
         Subject: e2e {marker} #{i}\r\n\
         Message-ID: <{marker}.{i}@e2e.test>\r\n\
         \r\n\
         body of {marker} #{i}\r\n\
         .a line that starts with a dot\r\n\
         ..and one with two\r\n\
         caf\u{e9} \u{2713}\r\n"
    )
    .into_bytes()
}

/// Send `count` [`test_message`]s to `recipient` over `connections` parallel
/// connections; every one must be accepted. Returns them in sending order
/// per connection (connection by connection).
pub async fn send_messages(
    addr: SocketAddr,
    recipient: &str,
    marker: &str,
    count: usize,
    connections: usize,
) -> Vec<Sent> {
    let connections = connections.clamp(1, count.max(1));
    let mut tasks = Vec::new();
    for c in 0..connections {
        let recipient = recipient.to_string();
        let marker = marker.to_string();
        tasks.push(tokio::spawn(async move {
            let mut client = Client::connect(addr).await;
            let mut sent = Vec::new();
            for i in (c..count).step_by(connections) {
                let data = test_message(&marker, &recipient, i);
                let id = client.send("sender@e2e.test", &recipient, &data).await;
                sent.push(Sent { id, data });
            }
            client.quit().await;
            sent
        }));
    }
    let mut all = Vec::with_capacity(count);
    for t in tasks {
        all.extend(t.await.expect("an SMTP sender task panicked"));
    }
    all
}
