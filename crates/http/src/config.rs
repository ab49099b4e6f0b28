//! `kumo.start_http_listener{...}`: the parameters and their registration.

use std::net::{AddrParseError, IpAddr, SocketAddr};

use ipnet::IpNet;
use mlua::{Lua, Value};
use serde::Deserialize;

/// Key material (path or inline PEM); shared with the ESMTP listener.
pub use hermod_policy::KeySource;

/// Why a listener configuration is refused; the caller adds
/// `kumo.start_http_listener` (and the policy's `file:line`).
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("{0:?} is neither an IP address nor a CIDR block")]
    TrustedHost(String),
    #[error("listen {listen:?} is not an ip:port address: {source}")]
    Listen {
        listen: String,
        #[source]
        source: AddrParseError,
    },
    #[error("tls_certificate and tls_private_key must be given together")]
    UnpairedTls,
    #[error("request_body_limit must be greater than zero")]
    ZeroBodyLimit,
}

/// One trusted-hosts entry: an address or a CIDR block.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TrustedHost(pub IpNet);

impl TrustedHost {
    pub fn parse(s: &str) -> Result<Self, ConfigError> {
        let s = s.trim();
        if let Ok(net) = s.parse::<IpNet>() {
            return Ok(Self(net.trunc()));
        }
        s.parse::<IpAddr>()
            .map(|ip| Self(IpNet::from(ip)))
            .map_err(|_| ConfigError::TrustedHost(s.to_string()))
    }

    pub fn contains(&self, ip: IpAddr) -> bool {
        self.0.contains(&canonical(ip))
    }
}

/// An IPv4-mapped IPv6 peer (`::ffff:127.0.0.1`, seen on dual-stack
/// sockets) must match IPv4 entries.
pub fn canonical(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map(IpAddr::V4).unwrap_or(ip),
        v4 => v4,
    }
}

impl<'de> Deserialize<'de> for TrustedHost {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        TrustedHost::parse(&s).map_err(serde::de::Error::custom)
    }
}

fn default_listen() -> String {
    "127.0.0.1:8000".into()
}

fn default_hostname() -> String {
    hostname::get()
        .ok()
        .and_then(|h| h.into_string().ok())
        .filter(|h| !h.is_empty())
        .unwrap_or_else(|| "localhost".into())
}

fn default_body_limit() -> usize {
    2 * 1024 * 1024
}

fn default_trusted_hosts() -> Vec<TrustedHost> {
    ["127.0.0.1", "::1"]
        .iter()
        .filter_map(|s| TrustedHost::parse(s).ok())
        .collect()
}

/// Parameters of `kumo.start_http_listener`; unknown keys are an error.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HttpListenerConfig {
    #[serde(default = "default_listen")]
    pub listen: String,
    #[serde(default = "default_hostname")]
    pub hostname: String,
    #[serde(default)]
    pub use_tls: bool,
    #[serde(default)]
    pub tls_certificate: Option<KeySource>,
    #[serde(default)]
    pub tls_private_key: Option<KeySource>,
    #[serde(default = "default_body_limit")]
    pub request_body_limit: usize,
    #[serde(default = "default_trusted_hosts")]
    pub trusted_hosts: Vec<TrustedHost>,
}

impl Default for HttpListenerConfig {
    fn default() -> Self {
        Self {
            listen: default_listen(),
            hostname: default_hostname(),
            use_tls: false,
            tls_certificate: None,
            tls_private_key: None,
            request_body_limit: default_body_limit(),
            trusted_hosts: default_trusted_hosts(),
        }
    }
}

impl HttpListenerConfig {
    /// Checks that do not need the network, so `hermod check` reports them.
    pub fn validate(&self) -> Result<SocketAddr, ConfigError> {
        let addr = self
            .listen
            .parse::<SocketAddr>()
            .map_err(|source| ConfigError::Listen {
                listen: self.listen.clone(),
                source,
            })?;
        if self.tls_certificate.is_some() != self.tls_private_key.is_some() {
            return Err(ConfigError::UnpairedTls);
        }
        if self.request_body_limit == 0 {
            return Err(ConfigError::ZeroBodyLimit);
        }
        Ok(addr)
    }

    pub fn is_trusted(&self, ip: IpAddr) -> bool {
        self.trusted_hosts.iter().any(|t| t.contains(ip))
    }
}

/// Add `kumo.start_http_listener` to a context.
pub fn register(lua: &Lua) -> mlua::Result<()> {
    let kumo = hermod_policy::kumo_table(lua)?;
    let f = lua.create_function(|lua, params: Value| {
        let cfg: HttpListenerConfig =
            hermod_policy::config::from_lua_strict(lua, params, "kumo.start_http_listener")?;
        cfg.validate().map_err(|e| {
            hermod_policy::errors::located(lua, format!("kumo.start_http_listener: {e}"))
        })?;
        hermod_policy::startup::push(lua, "kumo.start_http_listener", cfg)
    })?;
    kumo.set("start_http_listener", f)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn trusted_hosts_match_addresses_cidrs_and_mapped_v4() {
        let t = TrustedHost::parse("10.0.0.0/8").unwrap();
        assert!(t.contains("10.1.2.3".parse().unwrap()));
        assert!(!t.contains("11.0.0.1".parse().unwrap()));
        let one = TrustedHost::parse("127.0.0.1").unwrap();
        assert!(one.contains("::ffff:127.0.0.1".parse().unwrap()));
        assert!(!one.contains("127.0.0.2".parse().unwrap()));
        assert!(TrustedHost::parse("localhost").is_err());
    }

    #[test]
    fn defaults_follow_the_spec() {
        let c = HttpListenerConfig::default();
        assert_eq!(c.listen, "127.0.0.1:8000");
        assert_eq!(c.request_body_limit, 2 * 1024 * 1024);
        assert!(c.is_trusted("::1".parse().unwrap()));
        assert!(!c.use_tls);
    }

    #[test]
    fn unknown_key_is_rejected() {
        let lua = Lua::new();
        let v: Value = lua
            .load("return {listen='127.0.0.1:0', lisen='x'}")
            .eval()
            .unwrap();
        let e = hermod_policy::config::from_lua_strict::<HttpListenerConfig>(
            &lua,
            v,
            "kumo.start_http_listener",
        )
        .unwrap_err()
        .to_string();
        assert!(e.contains("lisen"), "{e}");
    }

    #[test]
    fn unpaired_certificate_fails_validation() {
        let c = HttpListenerConfig {
            tls_certificate: Some(KeySource::Path("/x".into())),
            ..Default::default()
        };
        assert_eq!(
            c.validate().unwrap_err().to_string(),
            "tls_certificate and tls_private_key must be given together"
        );
    }
}
