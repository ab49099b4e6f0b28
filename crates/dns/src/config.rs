//! The resolver configurations policies write, in KumoMTA's shapes, decoded
//! strictly (unknown keys are errors):
//!
//! - `{ name_servers = {...}, domain =, search = {...}, options = {...} }`
//!   (`configure_resolver` only; the same as `{ Hickory = {...} }`);
//! - `{ Hickory = {...} }`, `'HickorySystemConfig'`, `{ Test = ZONES }` where
//!   ZONES is a list of zone texts (or `{ zone =, secure = }`) or
//!   `{ zones = {...}, servfail = {...} }`.
//!
//! KumoMTA's `Unbound` and `Aggregate` forms are recognised and refused.

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use serde::de::{self, Deserializer, IgnoredAny, MapAccess, SeqAccess, Visitor};
use serde::Deserialize;

use crate::error::DnsError;
use crate::hickory::HickoryResolver;
use crate::resolver::Resolver;
use crate::zone::TestResolver;

/// Name servers and options for a hickory resolver.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DnsResolverConfig {
    #[serde(default)]
    pub domain: Option<String>,
    #[serde(default)]
    pub search: Vec<String>,
    #[serde(default)]
    pub name_servers: Vec<NameServer>,
    #[serde(default)]
    pub options: ResolverOptions,
}

/// `'IP:PORT'`, or the detailed table.
#[derive(Debug, Clone, PartialEq)]
pub enum NameServer {
    Simple(String),
    Detailed(DetailedNameServer),
}

#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DetailedNameServer {
    pub socket_addr: String,
    #[serde(default)]
    pub protocol: Protocol,
    #[serde(default = "yes")]
    pub trust_negative_responses: bool,
    #[serde(default)]
    pub bind_addr: Option<String>,
}

fn yes() -> bool {
    true
}

/// `udp_then_tcp` (the default) lets a truncated UDP answer be retried over
/// TCP on the same server.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Protocol {
    Udp,
    Tcp,
    #[default]
    UdpThenTcp,
}

/// KumoMTA's resolver options; each maps onto hickory's option of that name.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ResolverOptions {
    pub ndots: Option<usize>,
    #[serde(default, deserialize_with = "hermod_policy::duration::deserialize_opt")]
    pub timeout: Option<Duration>,
    pub attempts: Option<usize>,
    pub edns0: Option<bool>,
    /// DNSSEC validation: refused when true (this build has no DNSSEC).
    pub validate: Option<bool>,
    pub ip_strategy: Option<IpStrategy>,
    pub cache_size: Option<u64>,
    pub use_hosts_file: Option<UseHostsFile>,
    #[serde(default, deserialize_with = "hermod_policy::duration::deserialize_opt")]
    pub positive_min_ttl: Option<Duration>,
    #[serde(default, deserialize_with = "hermod_policy::duration::deserialize_opt")]
    pub negative_min_ttl: Option<Duration>,
    #[serde(default, deserialize_with = "hermod_policy::duration::deserialize_opt")]
    pub positive_max_ttl: Option<Duration>,
    #[serde(default, deserialize_with = "hermod_policy::duration::deserialize_opt")]
    pub negative_max_ttl: Option<Duration>,
    pub num_concurrent_reqs: Option<usize>,
    pub preserve_intermediates: Option<bool>,
    pub try_tcp_on_error: Option<bool>,
    pub server_ordering_strategy: Option<ServerOrderingStrategy>,
    pub recursion_desired: Option<bool>,
    pub case_randomization: Option<bool>,
    /// Refused when set (this build has no DNSSEC).
    pub trust_anchor_file: Option<IgnoredAny>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
pub enum IpStrategy {
    Ipv4Only,
    Ipv6Only,
    Ipv4AndIpv6,
    Ipv6AndIpv4,
    Ipv6thenIpv4,
    Ipv4thenIpv6,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
pub enum UseHostsFile {
    Always,
    Auto,
    Never,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
pub enum ServerOrderingStrategy {
    QueryStatistics,
    RoundRobin,
    UserProvidedOrder,
}

/// Zones for the test resolver, and names that answer SERVFAIL.
#[derive(Debug, Default, Clone, PartialEq)]
pub struct TestResolverConfig {
    pub zones: Vec<ZoneSpec>,
    pub servfail: Vec<String>,
}

#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ZoneSpec {
    pub zone: String,
    #[serde(default)]
    pub secure: bool,
}

impl TestResolverConfig {
    pub fn build(&self) -> Result<TestResolver, DnsError> {
        let mut resolver = TestResolver::new();
        for zone in &self.zones {
            resolver = match zone.secure {
                true => resolver.with_secure_zone(&zone.zone)?,
                false => resolver.with_zone(&zone.zone)?,
            };
        }
        for name in &self.servfail {
            resolver = resolver.with_servfail(name)?;
        }
        Ok(resolver)
    }
}

/// A resolver definition in KumoMTA's tagged form.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub enum ResolverSpec {
    Hickory(DnsResolverConfig),
    HickorySystemConfig,
    Test(TestResolverConfig),
    Unbound(IgnoredAny),
    Aggregate(IgnoredAny),
}

/// The keys that mark `configure_resolver`'s argument as the tagged form.
pub(crate) const SPEC_TAGS: [&str; 5] = [
    "Hickory",
    "HickorySystemConfig",
    "Test",
    "Unbound",
    "Aggregate",
];

impl ResolverSpec {
    pub fn build(&self) -> Result<Arc<dyn Resolver>, DnsError> {
        match self {
            ResolverSpec::Hickory(config) => Ok(Arc::new(crate::hickory_config::build(config)?)),
            ResolverSpec::HickorySystemConfig => Ok(Arc::new(HickoryResolver::from_system()?)),
            ResolverSpec::Test(config) => Ok(Arc::new(config.build()?)),
            ResolverSpec::Unbound(_) => Err(unsupported("Unbound")),
            ResolverSpec::Aggregate(_) => Err(unsupported("Aggregate")),
        }
    }
}

fn unsupported(form: &str) -> DnsError {
    DnsError::Config(format!(
        "the {form} resolver is not supported by Hermod; use Hickory, HickorySystemConfig or Test"
    ))
}

impl<'de> Deserialize<'de> for NameServer {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = NameServer;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("'IP:PORT' or { socket_addr = 'IP:PORT', protocol =, ... }")
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<NameServer, E> {
                Ok(NameServer::Simple(v.to_string()))
            }
            fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<NameServer, A::Error> {
                DetailedNameServer::deserialize(de::value::MapAccessDeserializer::new(map))
                    .map(NameServer::Detailed)
            }
        }
        d.deserialize_any(V)
    }
}

impl<'de> Deserialize<'de> for ZoneEntry {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = ZoneEntry;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("zone text, or { zone = TEXT, secure = BOOL }")
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<ZoneEntry, E> {
                Ok(ZoneEntry(ZoneSpec {
                    zone: v.to_string(),
                    secure: false,
                }))
            }
            fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<ZoneEntry, A::Error> {
                ZoneSpec::deserialize(de::value::MapAccessDeserializer::new(map)).map(ZoneEntry)
            }
        }
        d.deserialize_any(V)
    }
}

/// One element of a zone list: plain text or `{ zone =, secure = }`.
struct ZoneEntry(ZoneSpec);

impl<'de> Deserialize<'de> for TestResolverConfig {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = TestResolverConfig;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a list of zones, or { zones = {...}, servfail = {...} }")
            }
            fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Self::Value, A::Error> {
                let mut zones = Vec::new();
                while let Some(ZoneEntry(z)) = seq.next_element()? {
                    zones.push(z);
                }
                Ok(TestResolverConfig {
                    zones,
                    servfail: Vec::new(),
                })
            }
            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
                let mut config = TestResolverConfig::default();
                while let Some(key) = map.next_key::<String>()? {
                    match key.as_str() {
                        "zones" => {
                            let entries: Vec<ZoneEntry> = map.next_value()?;
                            config.zones = entries.into_iter().map(|e| e.0).collect();
                        }
                        "servfail" => config.servfail = map.next_value()?,
                        other => {
                            return Err(de::Error::unknown_field(other, &["zones", "servfail"]))
                        }
                    }
                }
                Ok(config)
            }
        }
        d.deserialize_any(V)
    }
}

#[cfg(test)]
#[path = "config_tests.rs"]
mod tests;
