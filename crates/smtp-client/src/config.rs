//! What the delivery driver configures for one connection: timeouts per
//! step, TLS mode and trust, pipelining/RSET preferences, EHLO name, source
//! address and optional AUTH PLAIN credentials.

use std::fmt;
use std::net::IpAddr;
use std::sync::Arc;
use std::time::Duration;

use crate::tls::TlsTrust;

/// How long each step may take: writing the command and reading the whole
/// reply share one deadline, so a peer that trickles bytes cannot stretch
/// a step. The defaults are those of KumoMTA's egress paths.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Timeouts {
    pub connect: Duration,
    pub banner: Duration,
    pub ehlo: Duration,
    pub mail_from: Duration,
    pub rcpt_to: Duration,
    /// The DATA command and its 354, and then writing the message content.
    pub data: Duration,
    /// The reply after the final dot (the server may scan the message).
    pub data_dot: Duration,
    pub rset: Duration,
    /// The STARTTLS command and the TLS handshake.
    pub starttls: Duration,
    pub auth: Duration,
    /// QUIT is a courtesy; it is never worth waiting long for.
    pub quit: Duration,
}

impl Default for Timeouts {
    fn default() -> Self {
        let s = Duration::from_secs;
        Self {
            connect: s(60),
            banner: s(60),
            ehlo: s(300),
            mail_from: s(300),
            rcpt_to: s(300),
            data: s(300),
            data_dot: s(300),
            rset: s(5),
            starttls: s(5),
            auth: s(60),
            quit: s(5),
        }
    }
}

impl Timeouts {
    /// Every step limited to `d` (tests, probes).
    pub fn all(d: Duration) -> Self {
        Self {
            connect: d,
            banner: d,
            ehlo: d,
            mail_from: d,
            rcpt_to: d,
            data: d,
            data_dot: d,
            rset: d,
            starttls: d,
            auth: d,
            quit: d,
        }
    }
}

/// When to use STARTTLS (the `enable_tls` egress setting). In every mode
/// that sends STARTTLS, a refusal of the command itself fails the
/// connection, and after a successful handshake EHLO is sent again.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum TlsMode {
    /// STARTTLS when the server offers it, with certificate verification.
    /// A failed handshake (including a certificate that does not verify)
    /// fails the connection: it does not fall back to plain text on the
    /// same connection. A server without STARTTLS gets plain text. (A
    /// driver that wants to retry such a host in the clear, or to skip TLS
    /// for a site it remembers as broken, connects again with `Disabled`.)
    #[default]
    Opportunistic,
    /// STARTTLS when offered, without certificate verification. If the
    /// handshake still fails, the client goes on in plain text on the same
    /// connection (EHLO again); [`crate::Client::tls_failure`] says why.
    OpportunisticInsecure,
    /// STARTTLS with a verified certificate, or the connection fails
    /// (also when the server does not offer STARTTLS).
    Required,
    /// STARTTLS without certificate verification, or the connection fails.
    RequiredInsecure,
    /// Never STARTTLS.
    Disabled,
}

impl TlsMode {
    pub fn verifies_certificate(self) -> bool {
        matches!(self, TlsMode::Opportunistic | TlsMode::Required)
    }

    pub fn is_required(self) -> bool {
        matches!(self, TlsMode::Required | TlsMode::RequiredInsecure)
    }
}

/// A password that never shows up in `Debug` output, errors or logs.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(String);

impl Secret {
    pub fn new(s: impl Into<String>) -> Self {
        Self(s.into())
    }

    /// The secret itself; only the AUTH encoder reads it.
    pub(crate) fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Secret(<redacted>)")
    }
}

/// AUTH PLAIN (RFC 4616) credentials.
#[derive(Debug, Clone)]
pub struct AuthPlain {
    pub username: String,
    pub password: Secret,
    /// Send the credentials over a plain-text connection. Off by default:
    /// anyone on the path could read them.
    pub allow_without_tls: bool,
    /// Send them over TLS whose certificate was not verified (the insecure
    /// modes, or a failed opportunistic handshake). Off by default: an
    /// active attacker could be the peer.
    pub allow_unverified_tls: bool,
}

impl AuthPlain {
    pub fn new(username: impl Into<String>, password: impl Into<String>) -> Self {
        Self {
            username: username.into(),
            password: Secret::new(password),
            allow_without_tls: false,
            allow_unverified_tls: false,
        }
    }
}

/// Everything [`crate::connect`] needs besides the address and host name.
#[derive(Debug, Clone)]
pub struct ClientConfig {
    /// The name sent with EHLO (the egress source's, else the host name).
    pub ehlo_domain: String,
    pub timeouts: Timeouts,
    pub tls: TlsMode,
    /// Trusted roots for verified TLS; shared, since building it is costly.
    pub tls_trust: Arc<TlsTrust>,
    /// Use PIPELINING when the server offers it.
    pub enable_pipelining: bool,
    /// Send RSET before each transaction after the first on a connection.
    /// (After a failed transaction RSET is sent regardless.)
    pub enable_rset: bool,
    /// Bind the socket to this local address before connecting.
    pub source_address: Option<IpAddr>,
    pub auth: Option<AuthPlain>,
    /// Say HELO when EHLO is refused with a 5xx (RFC 5321 §4.1.4 permits
    /// it). Off by default, as in KumoMTA: an EHLO refusal fails the
    /// connection.
    pub helo_fallback: bool,
    /// Send 8-bit content or a UTF-8 envelope even when the server lacks
    /// 8BITMIME or SMTPUTF8 (the `ignore_8bit_checks` egress setting),
    /// instead of failing the message permanently.
    pub ignore_8bit_checks: bool,
}

impl ClientConfig {
    pub fn new(ehlo_domain: impl Into<String>) -> Self {
        Self {
            ehlo_domain: ehlo_domain.into(),
            timeouts: Timeouts::default(),
            tls: TlsMode::default(),
            tls_trust: TlsTrust::system(),
            enable_pipelining: true,
            enable_rset: true,
            source_address: None,
            auth: None,
            helo_fallback: false,
            ignore_8bit_checks: false,
        }
    }
}
