//! `kumo.start_esmtp_listener{...}`: the listener's parameters (strict keys)
//! and the Lua registration that records them for the binary to start.

use std::net::{AddrParseError, IpAddr, SocketAddr};
use std::time::Duration;

use ipnet::IpNet;
use mlua::{Lua, Value};
use serde::{Deserialize, Deserializer};

use hermod_policy::config::from_lua_strict;
use hermod_policy::errors::located;

const WHAT: &str = "kumo.start_esmtp_listener";

/// Key material (path or inline PEM); shared with the HTTP listener.
pub use hermod_policy::KeySource;

/// Why a listener configuration is refused; the caller adds
/// `kumo.start_esmtp_listener` and the policy's `file:line`.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("listen address {listen:?} is invalid: {source}")]
    ListenAddr {
        listen: String,
        #[source]
        source: AddrParseError,
    },
    #[error("tls_certificate and tls_private_key must be given together")]
    UnpairedTls,
    #[error("{0} must be positive")]
    Zero(&'static str),
    #[error("relay_hosts: {0:?} is not an IP address or CIDR block")]
    RelayHost(String),
    #[error("relay_hosts: {host:?} has host bits set; did you mean {network}?")]
    RelayHostBits { host: String, network: IpNet },
}

/// What to do with a bare CR or LF in message content.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
pub enum InvalidLineEndings {
    #[default]
    Deny,
    Allow,
    Fix,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
pub enum BatchHandling {
    #[default]
    BifurcateAlways,
    BatchByDomain,
}

fn yes() -> bool {
    true
}
fn default_ref_header() -> String {
    "X-KumoRef".into()
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TraceHeaders {
    #[serde(default = "yes")]
    pub received_header: bool,
    #[serde(default = "yes")]
    pub supplemental_header: bool,
    #[serde(default = "default_ref_header")]
    pub header_name: String,
    #[serde(default, deserialize_with = "names_list")]
    pub include_meta_names: Vec<String>,
}

impl Default for TraceHeaders {
    fn default() -> Self {
        Self {
            received_header: true,
            supplemental_header: true,
            header_name: default_ref_header(),
            include_meta_names: Vec::new(),
        }
    }
}

/// An empty Lua table decodes as a map, not a sequence; accept both.
fn names_list<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<String>, D::Error> {
    let v = serde_json::Value::deserialize(d)?;
    match v {
        serde_json::Value::Array(a) => a
            .into_iter()
            .map(|x| match x {
                serde_json::Value::String(s) => Ok(s),
                other => Err(serde::de::Error::custom(format!(
                    "expected a string, got {other}"
                ))),
            })
            .collect(),
        serde_json::Value::Object(o) if o.is_empty() => Ok(Vec::new()),
        other => Err(serde::de::Error::custom(format!(
            "expected a list of strings, got {other}"
        ))),
    }
}

/// Relay hosts: IP addresses or CIDR blocks whose host bits are zero.
fn relay_list<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<IpNet>, D::Error> {
    let raw = names_list(d)?;
    raw.iter()
        .map(|s| parse_cidr(s).map_err(serde::de::Error::custom))
        .collect()
}

pub(crate) fn parse_cidr(s: &str) -> Result<IpNet, ConfigError> {
    if let Ok(ip) = s.parse::<IpAddr>() {
        return Ok(IpNet::from(ip));
    }
    let net: IpNet = s
        .parse()
        .map_err(|_| ConfigError::RelayHost(s.to_string()))?;
    if net.trunc() != net {
        return Err(ConfigError::RelayHostBits {
            host: s.to_string(),
            network: net.trunc(),
        });
    }
    Ok(net)
}

fn default_listen() -> String {
    "127.0.0.1:2025".into()
}
fn default_hostname() -> String {
    hostname::get()
        .ok()
        .and_then(|h| h.into_string().ok())
        .unwrap_or_else(|| "localhost".into())
}
fn default_banner() -> String {
    "Hermod".into()
}
fn default_relay_hosts() -> Vec<IpNet> {
    vec![
        IpNet::from(IpAddr::from([127, 0, 0, 1])),
        IpNet::from(IpAddr::from(std::net::Ipv6Addr::LOCALHOST)),
    ]
}
fn default_max_message_size() -> usize {
    20 * 1024 * 1024
}
fn default_max_recipients() -> usize {
    1024
}
fn default_max_messages() -> usize {
    10_000
}
fn default_client_timeout() -> Duration {
    Duration::from_secs(60)
}
fn default_max_connections() -> usize {
    32_768
}
fn default_line_limit() -> usize {
    998
}
fn default_data_timeout() -> Duration {
    Duration::from_secs(300)
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EsmtpListenerConfig {
    #[serde(default = "default_listen")]
    pub listen: String,
    #[serde(default = "default_hostname")]
    pub hostname: String,
    #[serde(default = "default_banner")]
    pub banner: String,
    #[serde(default = "default_relay_hosts", deserialize_with = "relay_list")]
    pub relay_hosts: Vec<IpNet>,
    #[serde(default = "default_max_message_size")]
    pub max_message_size: usize,
    #[serde(default = "default_max_recipients")]
    pub max_recipients_per_message: usize,
    #[serde(default = "default_max_messages")]
    pub max_messages_per_connection: usize,
    #[serde(
        default = "default_client_timeout",
        deserialize_with = "hermod_policy::duration::deserialize"
    )]
    pub client_timeout: Duration,
    #[serde(default = "default_max_connections")]
    pub max_connections: usize,
    #[serde(default)]
    pub tls_certificate: Option<KeySource>,
    #[serde(default)]
    pub tls_private_key: Option<KeySource>,
    /// Accepted for compatibility; client certificates are not requested yet.
    #[serde(default)]
    pub tls_required_client_ca: Option<KeySource>,
    #[serde(default = "default_line_limit")]
    pub line_length_hard_limit: usize,
    #[serde(default)]
    pub invalid_line_endings: InvalidLineEndings,
    #[serde(default)]
    pub deferred_spool: bool,
    #[serde(default)]
    pub trace_headers: TraceHeaders,
    #[serde(
        default = "default_data_timeout",
        deserialize_with = "hermod_policy::duration::deserialize"
    )]
    pub data_processing_timeout: Duration,
    #[serde(default)]
    pub batch_handling: BatchHandling,
}

impl Default for EsmtpListenerConfig {
    fn default() -> Self {
        Self {
            listen: default_listen(),
            hostname: default_hostname(),
            banner: default_banner(),
            relay_hosts: default_relay_hosts(),
            max_message_size: default_max_message_size(),
            max_recipients_per_message: default_max_recipients(),
            max_messages_per_connection: default_max_messages(),
            client_timeout: default_client_timeout(),
            max_connections: default_max_connections(),
            tls_certificate: None,
            tls_private_key: None,
            tls_required_client_ca: None,
            line_length_hard_limit: default_line_limit(),
            invalid_line_endings: InvalidLineEndings::Deny,
            deferred_spool: false,
            trace_headers: TraceHeaders::default(),
            data_processing_timeout: default_data_timeout(),
            batch_handling: BatchHandling::BifurcateAlways,
        }
    }
}

impl EsmtpListenerConfig {
    pub fn listen_addr(&self) -> Result<SocketAddr, ConfigError> {
        self.listen
            .parse()
            .map_err(|source| ConfigError::ListenAddr {
                listen: self.listen.clone(),
                source,
            })
    }

    /// Checks that need no I/O besides reading configured key files.
    pub fn validate(&self) -> Result<(), ConfigError> {
        self.listen_addr()?;
        if self.tls_certificate.is_some() != self.tls_private_key.is_some() {
            return Err(ConfigError::UnpairedTls);
        }
        if self.line_length_hard_limit == 0 {
            return Err(ConfigError::Zero("line_length_hard_limit"));
        }
        if self.max_connections == 0 {
            return Err(ConfigError::Zero("max_connections"));
        }
        Ok(())
    }

    pub fn relay_allowed(&self, ip: IpAddr) -> bool {
        let ip = canonical_ip(ip);
        self.relay_hosts.iter().any(|n| n.contains(&ip))
    }
}

/// IPv4-mapped IPv6 peers (dual-stack sockets) match IPv4 relay entries.
pub(crate) fn canonical_ip(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map(IpAddr::V4).unwrap_or(ip),
        v4 => v4,
    }
}

/// Parse and validate the parameter table as the policy wrote it.
pub fn parse_params(lua: &Lua, params: Value) -> mlua::Result<EsmtpListenerConfig> {
    let params = match params {
        Value::Nil => Value::Table(lua.create_table()?),
        v => v,
    };
    let cfg: EsmtpListenerConfig = from_lua_strict(lua, params, WHAT)?;
    cfg.validate()
        .map_err(|e| located(lua, format!("{WHAT}: {e}")))?;
    // Load configured key material now, so `hermod check` and start-up name
    // the policy line of an unreadable or mismatched certificate.
    if cfg.tls_certificate.is_some() {
        crate::tls::server_config(&cfg).map_err(|e| located(lua, e))?;
    }
    if cfg.tls_required_client_ca.is_some() {
        tracing::warn!("{WHAT}: tls_required_client_ca is not supported yet; client certificates are not requested");
    }
    Ok(cfg)
}

/// Adds `kumo.start_esmtp_listener` to the `kumo` table.
pub fn register(lua: &Lua) -> mlua::Result<()> {
    let kumo = hermod_policy::kumo_table(lua)?;
    let f = lua.create_function(|lua, params: Value| {
        let cfg = parse_params(lua, params)?;
        hermod_policy::startup::push(lua, WHAT, cfg)
    })?;
    kumo.set("start_esmtp_listener", f)?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(src: &str) -> mlua::Result<EsmtpListenerConfig> {
        let lua = Lua::new();
        let v: Value = lua.load(src).eval()?;
        parse_params(&lua, v)
    }

    #[test]
    fn empty_table_gives_the_documented_defaults() {
        let c = parse("return {}").unwrap();
        assert_eq!(c.listen, "127.0.0.1:2025");
        assert_eq!(c.banner, "Hermod");
        assert_eq!(c.max_message_size, 20 * 1024 * 1024);
        assert_eq!(c.max_recipients_per_message, 1024);
        assert_eq!(c.max_messages_per_connection, 10_000);
        assert_eq!(c.client_timeout, Duration::from_secs(60));
        assert_eq!(c.line_length_hard_limit, 998);
        assert_eq!(c.invalid_line_endings, InvalidLineEndings::Deny);
        assert!(c.trace_headers.received_header && c.trace_headers.supplemental_header);
        assert_eq!(c.trace_headers.header_name, "X-KumoRef");
        assert!(c.relay_allowed("127.0.0.1".parse().unwrap()));
        assert!(c.relay_allowed("::1".parse().unwrap()));
        assert!(!c.relay_allowed("127.0.0.2".parse().unwrap()));
    }

    #[test]
    fn unknown_keys_are_rejected_by_name() {
        let e = parse("return { listen = '127.0.0.1:0', max_mesage_size = 5 }").unwrap_err();
        assert!(e.to_string().contains("max_mesage_size"), "{e}");
    }

    #[test]
    fn bad_listen_address_is_reported() {
        let e = parse("return { listen = 'nowhere' }").unwrap_err();
        assert!(e.to_string().contains("nowhere"), "{e}");
    }

    #[test]
    fn cidr_with_host_bits_is_rejected_and_valid_cidrs_match() {
        let e = parse("return { relay_hosts = {'10.0.0.1/8'} }").unwrap_err();
        assert!(e.to_string().contains("host bits"), "{e}");
        let c = parse("return { relay_hosts = {'10.0.0.0/8', '192.0.2.7'} }").unwrap();
        assert!(c.relay_allowed("10.1.2.3".parse().unwrap()));
        assert!(c.relay_allowed("192.0.2.7".parse().unwrap()));
        assert!(c.relay_allowed("::ffff:10.9.9.9".parse().unwrap()));
        assert!(!c.relay_allowed("127.0.0.1".parse().unwrap()));
    }

    #[test]
    fn key_sources_are_a_path_or_inline_key_data() {
        let p: KeySource = serde_json::from_str(r#""/x/cert.pem""#).unwrap();
        assert!(matches!(p, KeySource::Path(ref p) if p == "/x/cert.pem"));
        let d: KeySource = serde_json::from_str(r#"{"key_data": "PEM"}"#).unwrap();
        assert_eq!(d.load().unwrap(), b"PEM");
        assert_eq!(d.describe(), "<inline key_data>");
    }

    #[test]
    fn unreadable_certificate_is_reported_at_call_time() {
        let e = parse("return { tls_certificate = '/nonexistent/cert.pem', tls_private_key = '/nonexistent/key.pem' }")
            .unwrap_err();
        assert!(e.to_string().contains("/nonexistent/cert.pem"), "{e}");
    }

    #[test]
    fn durations_line_endings_and_trace_headers_decode() {
        let c = parse(
            "return { client_timeout = '5s', invalid_line_endings = 'Fix', \
             trace_headers = { supplemental_header = false, include_meta_names = {'x_a'} } }",
        )
        .unwrap();
        assert_eq!(c.client_timeout, Duration::from_secs(5));
        assert_eq!(c.invalid_line_endings, InvalidLineEndings::Fix);
        assert!(!c.trace_headers.supplemental_header);
        assert_eq!(c.trace_headers.include_meta_names, vec!["x_a".to_string()]);
    }
}
