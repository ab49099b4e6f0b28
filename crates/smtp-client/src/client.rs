//! One SMTP connection: connect, banner, EHLO, STARTTLS per the TLS mode,
//! AUTH PLAIN, and the commands around transactions (RSET, QUIT). The
//! transaction itself is in `transaction.rs`.

use std::net::SocketAddr;

use base64::Engine as _;
use tokio::net::{TcpSocket, TcpStream};

use crate::capabilities::Capabilities;
use crate::config::{AuthPlain, ClientConfig, TlsMode};
use crate::error::{ClientError, ErrorKind, Peer, Step};
use crate::response::Response;
use crate::stream::Stream;
use crate::tls::{self, HandshakeFailure, TlsInfo};
use crate::wire::{Deadline, Wire};

/// A connected, greeted (and, per the configuration, encrypted and
/// authenticated) SMTP client for one host.
pub struct Client {
    pub(crate) wire: Wire,
    pub(crate) config: ClientConfig,
    banner: Response,
    pub(crate) capabilities: Capabilities,
    tls: Option<TlsInfo>,
    tls_failure: Option<String>,
    /// Whether the next transaction starts with RSET: not before the first
    /// one (some servers count RSET as a junk command and drop clients
    /// that send it up front), after a failed one always, otherwise when
    /// `enable_rset` says so.
    pub(crate) rset_before_next: bool,
}

impl std::fmt::Debug for Client {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Client")
            .field("peer", &self.wire.peer)
            .field("open", &self.wire.is_open())
            .field("tls", &self.tls)
            .finish_non_exhaustive()
    }
}

/// Connects to `addr`, reads the banner, says EHLO, applies the TLS mode
/// and authenticates when configured. `host_name` is the name the
/// certificate must match (the MX host name) and appears in errors.
pub async fn connect(
    addr: SocketAddr,
    host_name: &str,
    config: &ClientConfig,
) -> Result<Client, ClientError> {
    let peer = Peer {
        host: host_name.to_string(),
        addr,
    };
    check_ehlo_domain(&config.ehlo_domain)
        .map_err(|kind| ClientError::new(&peer, Step::Connect, kind))?;
    let tcp = tcp_connect(addr, config)
        .await
        .map_err(|kind| ClientError::new(&peer, Step::Connect, kind))?;
    tracing::debug!(%peer, "connected");
    let mut wire = Wire::new(Stream::Plain(tcp), peer);

    let banner = Deadline::after(config.timeouts.banner);
    let banner = wire.read_reply(Step::Banner, banner, None).await?;
    if !banner.is_success() {
        return Err(wire.fail(Step::Banner, ErrorKind::Rejected(banner)));
    }

    let mut client = Client {
        wire,
        config: config.clone(),
        banner,
        capabilities: Capabilities::default(),
        tls: None,
        tls_failure: None,
        rset_before_next: false,
    };
    client.ehlo().await?;
    client.apply_tls_mode().await?;
    if let Some(auth) = config.auth.clone() {
        client.auth_plain(&auth).await?;
    }
    Ok(client)
}

/// The EHLO argument goes on a command line as is, so it must not be able
/// to end the line early or be empty.
fn check_ehlo_domain(domain: &str) -> Result<(), ErrorKind> {
    if domain.is_empty()
        || domain
            .bytes()
            .any(|b| b.is_ascii_whitespace() || b.is_ascii_control())
    {
        return Err(ErrorKind::InvalidConfig(format!(
            "EHLO domain {domain:?} is empty or holds spaces or control characters"
        )));
    }
    Ok(())
}

async fn tcp_connect(addr: SocketAddr, config: &ClientConfig) -> Result<TcpStream, ErrorKind> {
    let socket = if addr.is_ipv4() {
        TcpSocket::new_v4()?
    } else {
        TcpSocket::new_v6()?
    };
    if let Some(source) = config.source_address {
        socket.bind(SocketAddr::new(source, 0))?;
    }
    let limit = config.timeouts.connect;
    let tcp = match tokio::time::timeout(limit, socket.connect(addr)).await {
        Ok(result) => result?,
        Err(_) => return Err(ErrorKind::Timeout(limit)),
    };
    // Commands are written whole (pipelined groups in one write), so
    // Nagle's delay would only add latency to each round trip.
    tcp.set_nodelay(true)?;
    Ok(tcp)
}

impl Client {
    pub fn peer(&self) -> &Peer {
        &self.wire.peer
    }

    pub fn banner(&self) -> &Response {
        &self.banner
    }

    /// The extensions of the last EHLO (after STARTTLS, the encrypted one).
    pub fn capabilities(&self) -> &Capabilities {
        &self.capabilities
    }

    pub fn is_tls(&self) -> bool {
        self.tls.is_some()
    }

    pub fn tls_info(&self) -> Option<&TlsInfo> {
        self.tls.as_ref()
    }

    /// Why the TLS handshake failed when `OpportunisticInsecure` went on in
    /// plain text (the driver may remember the site as having broken TLS).
    pub fn tls_failure(&self) -> Option<&str> {
        self.tls_failure.as_deref()
    }

    /// False once an error has left the connection unusable.
    pub fn is_usable(&self) -> bool {
        self.wire.is_open()
    }

    /// Sends one command line and reads its reply within the step's time.
    /// `shown` is how the command appears in the reply and in logs (AUTH
    /// hides its credentials).
    pub(crate) async fn command(
        &mut self,
        step: Step,
        line: &str,
        shown: &str,
    ) -> Result<Response, ClientError> {
        let deadline = Deadline::after(self.step_timeout(step));
        tracing::trace!(peer = %self.wire.peer, command = shown, "send");
        self.wire
            .write(step, deadline, format!("{line}\r\n").as_bytes())
            .await?;
        self.wire
            .read_reply(step, deadline, Some(shown.to_string()))
            .await
    }

    pub(crate) fn step_timeout(&self, step: Step) -> std::time::Duration {
        let t = &self.config.timeouts;
        match step {
            Step::Connect => t.connect,
            Step::Banner => t.banner,
            Step::Ehlo => t.ehlo,
            Step::StartTls => t.starttls,
            Step::Auth => t.auth,
            Step::MailFrom => t.mail_from,
            Step::RcptTo => t.rcpt_to,
            Step::Data => t.data,
            Step::DataDot => t.data_dot,
            Step::Rset => t.rset,
            Step::Quit => t.quit,
        }
    }

    /// EHLO, or HELO when EHLO is refused with 5xx and the fallback is on.
    async fn ehlo(&mut self) -> Result<(), ClientError> {
        let line = format!("EHLO {}", self.config.ehlo_domain);
        let reply = self.command(Step::Ehlo, &line, &line).await?;
        if reply.code == 250 {
            self.capabilities = Capabilities::from_ehlo(&reply);
            return Ok(());
        }
        if reply.is_permanent() && self.config.helo_fallback {
            let line = format!("HELO {}", self.config.ehlo_domain);
            let helo = self.command(Step::Ehlo, &line, &line).await?;
            if helo.code == 250 {
                self.capabilities = Capabilities::helo_only();
                return Ok(());
            }
            return Err(self.wire.fail(Step::Ehlo, ErrorKind::Rejected(helo)));
        }
        Err(self.wire.fail(Step::Ehlo, ErrorKind::Rejected(reply)))
    }

    async fn apply_tls_mode(&mut self) -> Result<(), ClientError> {
        let mode = self.config.tls;
        if mode == TlsMode::Disabled {
            return Ok(());
        }
        if !self.capabilities.starttls() {
            if mode.is_required() {
                return Err(self
                    .wire
                    .fail(Step::StartTls, ErrorKind::StartTlsNotOffered));
            }
            return Ok(());
        }
        // Before anything is sent, so a bad name or trust store fails
        // cleanly instead of after the server switched to TLS.
        let verify = mode.verifies_certificate();
        let name = tls::server_name(&self.wire.peer.host)
            .map_err(|kind| self.wire.fail(Step::StartTls, kind))?;
        let config = self
            .config
            .tls_trust
            .client_config(verify)
            .map_err(|e| self.wire.fail(Step::StartTls, ErrorKind::TlsConfig(e)))?;

        let reply = self.command(Step::StartTls, "STARTTLS", "STARTTLS").await?;
        if reply.code != 220 {
            return Err(self.wire.fail(Step::StartTls, ErrorKind::Rejected(reply)));
        }
        if self.wire.has_unread_input() {
            return Err(self.wire.fail(
                Step::StartTls,
                ErrorKind::TlsHandshake("the server sent data after its 220 to STARTTLS".into()),
            ));
        }
        let tcp = match self.wire.take_stream() {
            Some(Stream::Plain(tcp)) => tcp,
            // Already TLS (cannot happen: STARTTLS runs once) or dropped.
            Some(other) => {
                self.wire.put_stream(other);
                return Err(self.wire.fail(Step::StartTls, ErrorKind::Unusable));
            }
            None => return Err(self.wire.error(Step::StartTls, ErrorKind::Unusable)),
        };
        let limit = self.config.timeouts.starttls;
        match tls::handshake(tcp, config, name, limit).await {
            Ok(stream) => {
                let info = tls::info(&stream, verify);
                tracing::debug!(peer = %self.wire.peer, ?info, "TLS established");
                self.tls = Some(info);
                self.wire.put_stream(Stream::Tls(Box::new(stream)));
            }
            Err(HandshakeFailure::TimedOut(limit)) => {
                return Err(self.wire.error(Step::StartTls, ErrorKind::Timeout(limit)));
            }
            Err(HandshakeFailure::Failed(reason, tcp)) => {
                match (mode, tcp) {
                    (TlsMode::OpportunisticInsecure, Some(tcp)) => {
                        // The insecure opportunistic mode prefers delivery in
                        // plain text to no delivery; the EHLO below shows
                        // whether the server agrees to go on.
                        tracing::info!(peer = %self.wire.peer, %reason,
                            "TLS handshake failed; continuing without TLS");
                        self.tls_failure = Some(reason);
                        self.wire.put_stream(Stream::Plain(tcp));
                    }
                    _ => {
                        return Err(self
                            .wire
                            .error(Step::StartTls, ErrorKind::TlsHandshake(reason)));
                    }
                }
            }
        }
        // RFC 3207 §4.2: forget what was learnt before TLS and ask again.
        self.capabilities = Capabilities::default();
        let ehlo = self.ehlo().await;
        match (ehlo, &self.tls_failure) {
            // After a failed handshake, the failed EHLO is only the symptom.
            (Err(e), Some(reason)) => Err(self.wire.error(
                Step::StartTls,
                ErrorKind::TlsHandshake(format!(
                    "{reason}; going on in plain text failed too: {}",
                    e.kind
                )),
            )),
            (ehlo, _) => ehlo,
        }
    }

    async fn auth_plain(&mut self, auth: &AuthPlain) -> Result<(), ClientError> {
        match &self.tls {
            None if !auth.allow_without_tls => {
                return Err(self.wire.fail(
                    Step::Auth,
                    ErrorKind::AuthNotAllowed("the connection is not encrypted"),
                ));
            }
            Some(info) if !info.verified && !auth.allow_unverified_tls => {
                return Err(self.wire.fail(
                    Step::Auth,
                    ErrorKind::AuthNotAllowed("the server's certificate was not verified"),
                ));
            }
            _ => {}
        }
        // RFC 4616: [authzid] NUL authcid NUL passwd, as the initial
        // response (RFC 4954) so it takes one round trip.
        let mut token = Vec::with_capacity(auth.username.len() + 32);
        token.push(0);
        token.extend_from_slice(auth.username.as_bytes());
        token.push(0);
        token.extend_from_slice(auth.password.expose().as_bytes());
        let line = format!(
            "AUTH PLAIN {}",
            base64::engine::general_purpose::STANDARD.encode(&token)
        );
        let reply = self.command(Step::Auth, &line, "AUTH PLAIN").await?;
        if reply.code != 235 {
            return Err(self.wire.fail(Step::Auth, ErrorKind::Rejected(reply)));
        }
        tracing::debug!(peer = %self.wire.peer, username = %auth.username, "authenticated");
        Ok(())
    }

    /// Aborts any transaction in progress. A refusal leaves the connection
    /// in an unknown state, so it is an error that ends the connection.
    pub async fn rset(&mut self) -> Result<Response, ClientError> {
        let reply = self.command(Step::Rset, "RSET", "RSET").await?;
        if !reply.is_success() {
            return Err(self.wire.fail(Step::Rset, ErrorKind::Rejected(reply)));
        }
        self.rset_before_next = false;
        Ok(reply)
    }

    /// Says QUIT, reads the reply and closes the connection.
    pub async fn quit(mut self) -> Result<Response, ClientError> {
        let reply = self.command(Step::Quit, "QUIT", "QUIT").await;
        self.wire.close(self.config.timeouts.quit).await;
        reply
    }
}
