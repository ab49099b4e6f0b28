//! The SMTP state machine for one client: commands, replies and policy events.

use std::net::SocketAddr;
use std::sync::Arc;

use mlua::Value as LuaValue;
use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;

use hermod_message::{EnvelopeAddress, Protocol};
use hermod_policy::CallError;

use crate::command::{self, Command};
use crate::connection::{Connection, DataOutcome, Line, ReadError};
use crate::listener::Shared;
use crate::meta::ConnMeta;
use crate::tls::Stream;

/// What the main loop does after a command.
pub(crate) enum Flow {
    Continue,
    Close,
    StartTls,
}

pub(crate) struct Session {
    pub shared: Arc<Shared>,
    pub peer: SocketAddr,
    /// The address this connection was accepted on: the listener's, or for
    /// a wildcard listener (`0.0.0.0:25`) the local address the client
    /// reached, which is what KumoMTA gives `get_listener_domain`.
    pub local: SocketAddr,
    pub meta: ConnMeta,
    pub id: String,
    pub ehlo: Option<String>,
    /// `(protocol version, cipher)` after STARTTLS.
    pub tls: Option<(String, String)>,
    pub sender: Option<EnvelopeAddress>,
    pub recipients: Vec<EnvelopeAddress>,
    /// Accepted RCPT TOs over the whole session (`max_messages_per_connection`).
    pub rcpt_total: usize,
    /// The envelope of the transaction DATA just ended (moved out, not
    /// copied), for the Rejection records of its reply.
    pub ended: Option<(Option<EnvelopeAddress>, Vec<EnvelopeAddress>)>,
    /// Set by a successful AUTH; kept for the rest of the connection.
    pub auth: Option<crate::auth::Identity>,
    /// `get_listener_domain` answers for this connection.
    pub domains: crate::relay::DomainCache,
}

pub(crate) async fn run(shared: Arc<Shared>, sock: TcpStream, peer: SocketAddr) {
    let cfg = &shared.cfg;
    let meta = ConnMeta::default();
    meta.set("reception_protocol", Protocol::Esmtp.as_str());
    meta.set("received_from", peer.to_string());
    meta.set("received_via", shared.local_addr.to_string());
    meta.set("hostname", cfg.hostname.clone());
    let local = sock.local_addr().unwrap_or(shared.local_addr);
    let mut session = Session {
        shared: shared.clone(),
        peer,
        local,
        meta,
        id: uuid::Uuid::new_v4().to_string(),
        ehlo: None,
        tls: None,
        sender: None,
        recipients: Vec::new(),
        rcpt_total: 0,
        ended: None,
        auth: None,
        domains: Default::default(),
    };
    let mut conn = Connection::new(
        Stream::Plain(sock),
        cfg.line_length_hard_limit,
        cfg.client_timeout,
    );
    let conn = match session.greet(&mut conn).await {
        Flow::Continue => session.serve(conn).await,
        _ => Some(conn),
    };
    if let Some(mut conn) = conn {
        let _ = conn.flush().await;
        let (mut stream, _) = conn.into_parts();
        let _ = tokio::time::timeout(std::time::Duration::from_secs(5), stream.shutdown()).await;
    }
    tracing::debug!(session = %session.id, %peer, "esmtp session ended");
}

impl Session {
    fn host(&self) -> &str {
        &self.shared.cfg.hostname
    }

    async fn greet(&mut self, conn: &mut Connection<Stream>) -> Flow {
        if !self.shared.acceptor.is_accepting() {
            conn.reply(
                421,
                &format!("4.3.2 {} waiting for spool startup", self.host()),
            );
            return Flow::Close;
        }
        if self.shared.handlers.connection_accepted {
            let r = self
                .event::<LuaValue>("smtp_server_connection_accepted", self.meta.clone())
                .await;
            if let Err(e) = r {
                // No session without a banner: any rejection here closes it.
                self.event_failure(conn, e);
                self.report_rejections(conn, None, None).await;
                return Flow::Close;
            }
        }
        let banner = format!("{} {}", self.host(), self.shared.cfg.banner);
        conn.reply(220, &banner);
        Flow::Continue
    }

    /// The command loop. Returns the connection to close, or `None` when it
    /// is already gone (failed TLS handshake).
    async fn serve(&mut self, mut conn: Connection<Stream>) -> Option<Connection<Stream>> {
        loop {
            let line = tokio::select! {
                biased;
                _ = self.shared.shutdown.cancelled() => {
                    self.shutting_down(&mut conn);
                    return Some(conn);
                }
                r = conn.read_line() => r,
            };
            // The command line replied to, and the address a RCPT TO named.
            let mut answered = None;
            let mut named = None;
            let flow = match line {
                Err(ReadError::Timeout(_)) => {
                    conn.reply(
                        421,
                        &format!("4.3.2 {} idle too long; closing connection", self.host()),
                    );
                    Flow::Close
                }
                Err(ReadError::Closed) => return Some(conn),
                Err(ReadError::Io(e)) => {
                    tracing::debug!(session = %self.id, error = %e, "esmtp read failed");
                    return Some(conn);
                }
                Ok(Line::TooLong) => {
                    conn.reply(500, "5.2.3 line too long");
                    Flow::Continue
                }
                Ok(Line::Text(_)) if self.shared.shutdown.is_cancelled() => {
                    self.shutting_down(&mut conn);
                    Flow::Close
                }
                Ok(Line::Text(line)) => {
                    let flow = match command::parse(&line) {
                        Err(e) => {
                            let (code, text) = e.reply();
                            conn.reply(code, &text);
                            Flow::Continue
                        }
                        Ok(cmd) => {
                            if let Command::RcptTo { address } = &cmd {
                                named = Some(address.clone());
                            }
                            self.handle(&mut conn, cmd).await
                        }
                    };
                    // An AUTH line carries credentials: record only its verb.
                    answered = Some(crate::auth::redact(line));
                    flow
                }
            };
            self.report_rejections(&mut conn, answered.as_deref(), named)
                .await;
            match flow {
                Flow::Continue => {}
                Flow::Close => return Some(conn),
                Flow::StartTls => conn = self.start_tls(conn).await?,
            }
        }
    }

    /// Log a Rejection record for each 4xx/5xx reply queued since the last
    /// call. A refused RCPT TO is logged with the address it `named`; a
    /// reply to DATA with the transaction it `ended`; others with the
    /// transaction in progress.
    async fn report_rejections(
        &mut self,
        conn: &mut Connection<Stream>,
        command: Option<&[u8]>,
        named: Option<EnvelopeAddress>,
    ) {
        let ended = self.ended.take();
        let rejections = conn.take_rejections();
        if rejections.is_empty() {
            return;
        }
        let (sender, recipients) = match &ended {
            Some((sender, recipients)) => (sender.as_ref(), recipients.as_slice()),
            None => (self.sender.as_ref(), self.recipients.as_slice()),
        };
        let sender = sender.map(|s| s.to_string());
        let recipients: Vec<String> = match named {
            Some(address) => vec![address.to_string()],
            None => recipients.iter().map(|r| r.to_string()).collect(),
        };
        let peer = self.reception_info();
        let command = command.map(|line| {
            let line = line.strip_suffix(b"\n").unwrap_or(line);
            String::from_utf8_lossy(line.strip_suffix(b"\r").unwrap_or(line)).into_owned()
        });
        for (code, text) in rejections {
            let info = hermod_message::RejectionInfo {
                code,
                text,
                command: command.clone(),
                sender: sender.clone(),
                recipients: recipients.clone(),
                meta: self.meta.snapshot(),
                peer: peer.clone(),
            };
            self.shared.acceptor.rejected(info).await;
        }
    }

    /// Who this client is, for log records.
    pub(crate) fn reception_info(&self) -> hermod_message::ReceptionInfo {
        let (tls_protocol_version, tls_cipher) = match &self.tls {
            Some((v, c)) => (Some(v.clone()), Some(c.clone())),
            None => (None, None),
        };
        hermod_message::ReceptionInfo {
            protocol: Protocol::Esmtp,
            peer_name: self.ehlo.clone().unwrap_or_default(),
            peer_addr: self.peer.ip().to_string(),
            session_id: Some(self.id.clone()),
            tls_cipher,
            tls_protocol_version,
        }
    }

    pub(crate) fn shutting_down(&self, conn: &mut Connection<Stream>) {
        conn.reply(421, &format!("4.3.2 {} shutting down", self.host()));
    }

    /// DATA is over: clear the transaction, keeping its envelope readable
    /// for the Rejection record of the reply.
    pub(crate) fn end_transaction(&mut self) {
        self.ended = Some((self.sender.take(), std::mem::take(&mut self.recipients)));
    }

    pub(crate) fn reset(&mut self) {
        self.sender = None;
        self.recipients.clear();
    }

    async fn handle(&mut self, conn: &mut Connection<Stream>, cmd: Command) -> Flow {
        match cmd {
            Command::Ehlo(domain) => self.ehlo(conn, domain).await,
            Command::Helo(domain) => self.helo(conn, domain).await,
            Command::MailFrom { address, size } => self.mail_from(conn, address, size).await,
            Command::RcptTo { address } => self.rcpt_to(conn, address).await,
            Command::Data => self.data(conn).await,
            Command::Rset => {
                self.reset();
                conn.reply(250, "2.0.0 OK");
                Flow::Continue
            }
            Command::Noop => {
                conn.reply(250, "2.0.0 OK");
                Flow::Continue
            }
            Command::Quit => {
                conn.reply(221, &format!("2.0.0 {} closing connection", self.host()));
                Flow::Close
            }
            Command::StartTls => {
                if self.tls.is_some() {
                    conn.reply(501, "5.5.1 TLS is already active");
                    Flow::Continue
                } else {
                    conn.reply(220, "2.0.0 Ready to start TLS");
                    Flow::StartTls
                }
            }
            Command::Auth {
                mechanism,
                initial_response,
            } => self.auth(conn, mechanism, initial_response).await,
            Command::NotImplemented(verb) => {
                conn.reply(502, &format!("5.5.1 {verb} is not implemented"));
                Flow::Continue
            }
        }
    }

    async fn ehlo(&mut self, conn: &mut Connection<Stream>, domain: String) -> Flow {
        self.reset();
        self.meta.set("ehlo_domain", domain.clone());
        let mut extensions: Vec<String> =
            ["PIPELINING", "ENHANCEDSTATUSCODES", "8BITMIME", "SMTPUTF8"]
                .iter()
                .map(|s| s.to_string())
                .collect();
        extensions.push(format!("SIZE {}", self.shared.cfg.max_message_size));
        if self.tls.is_none() {
            extensions.push("STARTTLS".into());
        } else if self.shared.handlers.auth_plain {
            // Offered only over TLS: PLAIN sends the password in the clear.
            extensions.push("AUTH PLAIN".into());
        }
        if self.shared.handlers.ehlo {
            let args = (domain.clone(), self.meta.clone(), extensions.clone());
            match self
                .event::<Option<Vec<String>>>("smtp_server_ehlo", args)
                .await
            {
                Ok(Some(Some(replacement))) => extensions = replacement,
                Ok(_) => {}
                Err(e) => return self.event_failure(conn, e),
            }
        }
        self.ehlo = Some(domain.clone());
        let mut text = format!("{} Aloha {domain}", self.host());
        for ext in &extensions {
            text.push('\n');
            text.push_str(ext);
        }
        conn.reply(250, &text);
        Flow::Continue
    }

    async fn helo(&mut self, conn: &mut Connection<Stream>, domain: String) -> Flow {
        self.reset();
        self.meta.set("ehlo_domain", domain.clone());
        if self.shared.handlers.ehlo {
            let args = (domain.clone(), self.meta.clone());
            if let Err(e) = self.event::<LuaValue>("smtp_server_ehlo", args).await {
                return self.event_failure(conn, e);
            }
        }
        self.ehlo = Some(domain.clone());
        conn.reply(250, &format!("Hello {domain}!"));
        Flow::Continue
    }

    async fn mail_from(
        &mut self,
        conn: &mut Connection<Stream>,
        sender: EnvelopeAddress,
        size: Option<usize>,
    ) -> Flow {
        if self.ehlo.is_none() {
            conn.reply(503, "5.5.1 EHLO or HELO first");
            return Flow::Continue;
        }
        if self.sender.is_some() {
            conn.reply(503, "5.5.0 MAIL FROM already issued; use RSET first");
            return Flow::Continue;
        }
        if size.is_some_and(|s| s > self.shared.cfg.max_message_size) {
            conn.reply(
                552,
                &format!(
                    "5.3.4 message exceeds the maximum size of {} bytes",
                    self.shared.cfg.max_message_size
                ),
            );
            return Flow::Continue;
        }
        if self.shared.handlers.mail_from {
            let args = (sender.clone(), self.meta.clone());
            if let Err(e) = self.event::<LuaValue>("smtp_server_mail_from", args).await {
                return self.event_failure(conn, e);
            }
        }
        conn.reply(250, &format!("OK <{sender}>"));
        self.sender = Some(sender);
        Flow::Continue
    }

    async fn rcpt_to(&mut self, conn: &mut Connection<Stream>, rcpt: EnvelopeAddress) -> Flow {
        let cfg = &self.shared.cfg;
        if self.sender.is_none() {
            conn.reply(503, "5.5.0 MAIL FROM first");
            return Flow::Continue;
        }
        if self.recipients.len() >= cfg.max_recipients_per_message {
            conn.reply(452, "4.5.3 too many recipients");
            return Flow::Continue;
        }
        if self.rcpt_total >= cfg.max_messages_per_connection {
            if self.recipients.is_empty() {
                conn.reply(
                    421,
                    &format!(
                        "4.5.3 {} too many messages on this connection",
                        cfg.hostname
                    ),
                );
                return Flow::Close;
            }
            conn.reply(452, "4.5.3 too many messages on this connection");
            return Flow::Continue;
        }
        let sender = self
            .sender
            .clone()
            .unwrap_or_else(EnvelopeAddress::null_sender);
        match self.check_relaying(&sender, &rcpt).await {
            Ok(d) if d.accept_rcpt_to() => {}
            Ok(_) => {
                conn.reply(
                    550,
                    &format!("5.7.1 relaying not permitted for {}", self.peer.ip()),
                );
                return Flow::Continue;
            }
            Err(e) => return self.event_failure(conn, e),
        }
        if self.shared.handlers.rcpt_to {
            let args = (rcpt.clone(), self.meta.clone());
            if let Err(e) = self.event::<LuaValue>("smtp_server_rcpt_to", args).await {
                return self.event_failure(conn, e);
            }
        }
        conn.reply(250, &format!("OK <{rcpt}>"));
        self.recipients.push(rcpt);
        self.rcpt_total += 1;
        Flow::Continue
    }

    async fn data(&mut self, conn: &mut Connection<Stream>) -> Flow {
        if self.sender.is_none() {
            conn.reply(503, "5.5.0 MAIL FROM first");
            return Flow::Continue;
        }
        if self.recipients.is_empty() {
            conn.reply(503, "5.5.0 RCPT TO first");
            return Flow::Continue;
        }
        conn.reply(354, "Send the message; end with <CRLF>.<CRLF>");
        let cfg = &self.shared.cfg;
        let outcome = match conn
            .read_data(cfg.max_message_size, cfg.invalid_line_endings)
            .await
        {
            Ok(o) => o,
            Err(ReadError::Timeout(_)) => {
                conn.reply(
                    421,
                    &format!("4.3.2 {} idle too long; closing connection", cfg.hostname),
                );
                return Flow::Close;
            }
            Err(_) => return Flow::Close,
        };
        let flow = match outcome {
            DataOutcome::Message(data) => return self.process_data(conn, data).await,
            DataOutcome::TooBig => {
                let max = cfg.max_message_size;
                conn.reply(
                    552,
                    &format!("5.3.4 message exceeds the maximum size of {max} bytes"),
                );
                Flow::Continue
            }
            DataOutcome::LineTooLong => {
                conn.reply(500, "5.2.3 line too long");
                Flow::Continue
            }
            DataOutcome::BareLineEnding => {
                conn.reply(
                    552,
                    "5.6.0 message contains a bare CR or LF; use CRLF line endings",
                );
                Flow::Continue
            }
        };
        self.end_transaction();
        flow
    }

    async fn start_tls(&mut self, conn: Connection<Stream>) -> Option<Connection<Stream>> {
        let mut conn = conn;
        if let Err(e) = conn.flush().await {
            tracing::debug!(session = %self.id, error = %e, "esmtp write failed before TLS");
            return None;
        }
        // Input pipelined after STARTTLS is discarded (RFC 3207 §5, CVE-2011-0411).
        let (stream, _discarded) = conn.into_parts();
        let Stream::Plain(tcp) = stream else {
            return None;
        };
        let (line_limit, timeout) = (
            self.shared.cfg.line_length_hard_limit,
            self.shared.cfg.client_timeout,
        );
        let handshake = tokio::time::timeout(timeout, self.shared.tls.accept(tcp)).await;
        let tls = match handshake {
            Ok(Ok(tls)) => tls,
            Ok(Err(e)) => {
                tracing::debug!(session = %self.id, error = %e, "esmtp TLS handshake failed");
                return None;
            }
            Err(_) => {
                tracing::debug!(session = %self.id, "esmtp TLS handshake timed out");
                return None;
            }
        };
        let stream = Stream::Tls(Box::new(tls));
        if let Some((version, cipher)) = stream.tls_info() {
            self.meta.set("tls_protocol_version", version.clone());
            self.meta.set("tls_cipher", cipher.clone());
            self.tls = Some((version, cipher));
        }
        self.ehlo = None;
        self.reset();
        Some(Connection::new(stream, line_limit, timeout))
    }

    /// Call an SMTP event in a freshly borrowed context.
    pub(crate) async fn event<R: mlua::FromLua>(
        &self,
        event: &str,
        args: impl mlua::IntoLuaMulti + Clone,
    ) -> Result<Option<R>, CallError> {
        let ctx = self
            .shared
            .engine
            .context()
            .await
            .map_err(|e| CallError::Lua(e.to_string()))?;
        ctx.call::<R>(event, args).await
    }

    /// Turn a failed event into its reply: a `kumo.reject` is passed through
    /// (421 disconnects); anything else is a policy bug, logged with its
    /// `file:line`, and the session ends.
    pub(crate) fn event_failure(&mut self, conn: &mut Connection<Stream>, err: CallError) -> Flow {
        match err {
            CallError::Reject(r) => {
                conn.reply(r.code, &r.message);
                if r.code == 421 {
                    Flow::Close
                } else {
                    Flow::Continue
                }
            }
            other => {
                tracing::error!(session = %self.id, peer = %self.peer, error = %other, "esmtp policy event failed");
                conn.reply(
                    421,
                    &format!("4.3.0 {} technical difficulties", self.host()),
                );
                Flow::Close
            }
        }
    }
}
