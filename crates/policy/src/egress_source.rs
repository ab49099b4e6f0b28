//! `kumo.make_egress_source{...}` and `kumo.make_egress_pool{...}`: where outbound connections
//! come from (a local address, an EHLO name) and the weighted groups of sources a queue sends
//! through (`egress_pool` in `make_queue_config`). Strict keys, returned to Lua as userdata;
//! the delivery code gets them from `get_egress_source(name)` and `get_egress_pool(name)`,
//! except for the name `unspecified`, which is never asked for: it is [`EgressSource::default`]
//! and [`EgressPool::default`], as in KumoMTA.

use std::net::IpAddr;
use std::time::Duration;

use mlua::{Lua, UserData, Value};
use serde::de::{self, Deserializer};
use serde::Deserialize;

use crate::config::{from_lua_strict, refuse_not_supported};

/// The name of the source and of the pool used when a policy names none.
pub const UNSPECIFIED: &str = "unspecified";

fn default_ttl() -> Duration {
    Duration::from_secs(60)
}

/// One origin of outbound connections.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EgressSource {
    /// Used in logs, ready queue names and pool entries.
    pub name: String,
    /// The local address to bind before connecting; unset: the kernel chooses.
    #[serde(default, deserialize_with = "deserialize_ip_opt")]
    pub source_address: Option<IpAddr>,
    /// EHLO name, unless the egress path sets its own.
    #[serde(default)]
    pub ehlo_domain: Option<String>,
    /// Destination port for every connection from this source; wins over `mx_list` ports and
    /// the egress path's `smtp_port` (for networks that map ports to addresses).
    #[serde(default)]
    pub remote_port: Option<u16>,
    /// How long the delivery code may cache this definition (60 s).
    #[serde(
        default = "default_ttl",
        deserialize_with = "crate::duration::deserialize"
    )]
    pub ttl: Duration,
}

impl Default for EgressSource {
    /// The `unspecified` source: kernel-chosen address, default EHLO name and port.
    fn default() -> Self {
        EgressSource {
            name: UNSPECIFIED.into(),
            source_address: None,
            ehlo_domain: None,
            remote_port: None,
            ttl: default_ttl(),
        }
    }
}

impl UserData for EgressSource {}

/// Keys KumoMTA's `make_egress_source` takes that Hermod does not implement yet (proxies and
/// automatic suspension).
pub const SOURCE_NOT_SUPPORTED: &[&str] = &[
    "ha_proxy_server",
    "ha_proxy_source_address",
    "socks5_proxy_server",
    "socks5_proxy_source_address",
    "socks5_proxy_username",
    "socks5_proxy_password",
    "suspend_when_proxy_unhealthy",
    "suspend_when_unplumbed",
];

/// An IP address written as a string; serde's own error does not say which text it refused.
fn deserialize_ip_opt<'de, D: Deserializer<'de>>(d: D) -> Result<Option<IpAddr>, D::Error> {
    let s = String::deserialize(d)?;
    s.trim().parse().map(Some).map_err(|_| {
        de::Error::custom(format!(
            "source_address {s:?} is not an IP address (a host name is not accepted here)"
        ))
    })
}

/// One source of a pool, with its share of the traffic.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EgressPoolEntry {
    /// A source name, resolved through `get_egress_source`.
    pub name: String,
    /// Relative share (1); 0 leaves the source out.
    #[serde(default = "one")]
    pub weight: u32,
}

fn one() -> u32 {
    1
}

/// A weighted group of sources; see [`crate::SourceSelector`] for how one is picked.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EgressPool {
    pub name: String,
    #[serde(default, deserialize_with = "deserialize_entries")]
    pub entries: Vec<EgressPoolEntry>,
    /// How long the delivery code may cache this definition (60 s).
    #[serde(
        default = "default_ttl",
        deserialize_with = "crate::duration::deserialize"
    )]
    pub ttl: Duration,
}

/// A list of entry tables; an empty Lua table `{}` arrives as an empty map, so that is an
/// empty list too.
fn deserialize_entries<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<EgressPoolEntry>, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum Form {
        List(Vec<serde_json::Value>),
        Empty(std::collections::BTreeMap<String, ()>),
    }
    let list = match Form::deserialize(d) {
        Ok(Form::List(v)) => v,
        Ok(Form::Empty(m)) if m.is_empty() => Vec::new(),
        _ => {
            return Err(de::Error::custom(
                "entries: expected a list of { name = '...', weight = N } tables",
            ))
        }
    };
    // Decode entry by entry so that an error says which one is wrong.
    list.into_iter()
        .enumerate()
        .map(|(i, v)| {
            serde_json::from_value(v)
                .map_err(|e| de::Error::custom(format!("entries[{}]: {e}", i + 1)))
        })
        .collect()
}

impl Default for EgressPool {
    /// The `unspecified` pool: the `unspecified` source alone.
    fn default() -> Self {
        EgressPool {
            name: UNSPECIFIED.into(),
            entries: vec![EgressPoolEntry {
                name: UNSPECIFIED.into(),
                weight: 1,
            }],
            ttl: default_ttl(),
        }
    }
}

impl UserData for EgressPool {}

pub(crate) fn make_egress_source(lua: &Lua, params: Value) -> mlua::Result<EgressSource> {
    refuse_not_supported(lua, &params, "make_egress_source", SOURCE_NOT_SUPPORTED)?;
    from_lua_strict(lua, params, "make_egress_source")
}

pub(crate) fn make_egress_pool(lua: &Lua, params: Value) -> mlua::Result<EgressPool> {
    from_lua_strict(lua, params, "make_egress_pool")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn eval(lua: &Lua, src: &str) -> Value {
        lua.load(src).eval().unwrap()
    }

    fn source(src: &str) -> Result<EgressSource, String> {
        let lua = Lua::new();
        let v = eval(&lua, src);
        make_egress_source(&lua, v).map_err(|e| e.to_string())
    }

    fn pool(src: &str) -> Result<EgressPool, String> {
        let lua = Lua::new();
        let v = eval(&lua, src);
        make_egress_pool(&lua, v).map_err(|e| e.to_string())
    }

    #[test]
    fn a_source_takes_every_key_and_defaults_the_rest() {
        let s = source(
            "return { name = 'ip-1', source_address = '10.0.0.1', ehlo_domain = 'mta1.example', \
             remote_port = 2525, ttl = '5 mins' }",
        )
        .unwrap();
        assert_eq!(s.name, "ip-1");
        assert_eq!(s.source_address, Some("10.0.0.1".parse().unwrap()));
        assert_eq!(s.ehlo_domain.as_deref(), Some("mta1.example"));
        assert_eq!(s.remote_port, Some(2525));
        assert_eq!(s.ttl, Duration::from_secs(300));
        let s = source("return { name = 'v6', source_address = '2001:db8::1' }").unwrap();
        assert_eq!(s.source_address, Some("2001:db8::1".parse().unwrap()));
        assert_eq!((s.ehlo_domain, s.remote_port), (None, None));
        assert_eq!(s.ttl, Duration::from_secs(60));
    }

    #[test]
    fn a_source_needs_a_name_and_an_ip_source_address() {
        let e = source("return { source_address = '10.0.0.1' }").unwrap_err();
        assert!(
            e.contains("make_egress_source: ") && e.contains("missing field `name`"),
            "{e}"
        );
        let e = source("return { name = 'x', source_address = 'mta.example' }").unwrap_err();
        assert!(
            e.contains("source_address \"mta.example\" is not an IP address"),
            "{e}"
        );
        let e = source("return { name = 'x', remote_port = 70000 }").unwrap_err();
        assert!(e.contains("make_egress_source:"), "{e}");
        let e = source("return { name = 'x', source_adress = '10.0.0.1' }").unwrap_err();
        assert!(e.contains("unknown field `source_adress`"), "{e}");
    }

    #[test]
    fn proxy_and_suspension_keys_are_refused_as_not_supported() {
        let e = source("return { name = 'x', socks5_proxy_server = '10.0.0.9:1080' }").unwrap_err();
        assert!(
            e.contains(
                "make_egress_source: key 'socks5_proxy_server' is not supported by Hermod yet"
            ),
            "{e}"
        );
        let e = source(
            "return { name = 'x', ha_proxy_server = 'h:1', ha_proxy_source_address = '10.0.0.1' }",
        )
        .unwrap_err();
        assert!(
            e.contains("keys 'ha_proxy_server', 'ha_proxy_source_address' are not supported"),
            "{e}"
        );
    }

    #[test]
    fn the_unspecified_source_and_pool_are_the_defaults() {
        let s = EgressSource::default();
        assert_eq!(s.name, "unspecified");
        assert_eq!((s.source_address, s.remote_port), (None, None));
        let p = EgressPool::default();
        assert_eq!(p.name, "unspecified");
        assert_eq!(
            p.entries,
            [EgressPoolEntry {
                name: "unspecified".into(),
                weight: 1
            }]
        );
    }

    #[test]
    fn a_pool_defaults_weights_to_one_and_ttl_to_a_minute() {
        let p = pool(
            "return { name = 'Medium', entries = { { name = 'ip-2', weight = 2 }, { name = 'ip-3' } } }",
        )
        .unwrap();
        assert_eq!(p.name, "Medium");
        let got: Vec<(&str, u32)> = p
            .entries
            .iter()
            .map(|e| (e.name.as_str(), e.weight))
            .collect();
        assert_eq!(got, [("ip-2", 2), ("ip-3", 1)]);
        assert_eq!(p.ttl, Duration::from_secs(60));
        let p = pool("return { name = 'empty', entries = {}, ttl = 30 }").unwrap();
        assert!(p.entries.is_empty());
        assert_eq!(p.ttl, Duration::from_secs(30));
    }

    #[test]
    fn a_bad_pool_entry_is_named_by_position() {
        let e =
            pool("return { name = 'p', entries = { { name = 'a' }, { name = 'b', wieght = 2 } } }")
                .unwrap_err();
        assert!(
            e.contains("make_egress_pool: ") && e.contains("entries[2]: unknown field `wieght`"),
            "{e}"
        );
        let e = pool("return { name = 'p', entries = { { weight = 2 } } }").unwrap_err();
        assert!(e.contains("entries[1]: missing field `name`"), "{e}");
        let e =
            pool("return { name = 'p', entries = { { name = 'a', weight = -1 } } }").unwrap_err();
        assert!(e.contains("entries[1]"), "{e}");
        let e = pool("return { entries = {} }").unwrap_err();
        assert!(e.contains("missing field `name`"), "{e}");
        let e = pool("return { name = 'p', sources = {} }").unwrap_err();
        assert!(e.contains("unknown field `sources`"), "{e}");
    }
}
