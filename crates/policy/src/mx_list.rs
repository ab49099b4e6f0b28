//! `protocol = { smtp = { mx_list = {...} } }`: the hosts a queue delivers to instead of the
//! domain's MX records, tried in the order written. Entries as KumoMTA takes them:
//!
//! - `'mx.example.com'` or `'mx.example.com:2525'`: a name to resolve (A/AAAA);
//! - `'[10.0.0.1]'`, `'[10.0.0.1]:2525'`, `'[IPv6:2001:db8::1]'`: an address literal;
//!   a bare address (`'10.0.0.1'`, `'10.0.0.1:2525'`, `'::1'`) is a literal too;
//! - `{ name = 'mx.example.com', addr = '10.0.0.1' }` (or `addr = '10.0.0.1:2525'`,
//!   `'[::1]:2525'`): an address already resolved, with the name it stands for.
//!
//! A port written here wins over the egress path's `smtp_port`; a source's `remote_port` wins
//! over both.

use std::fmt;
use std::net::{IpAddr, SocketAddr};

use serde::de::{self, Deserializer};
use serde::Deserialize;

/// One `mx_list` entry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum MxListEntry {
    /// A host name to resolve to its A/AAAA addresses.
    Host { name: String, port: Option<u16> },
    /// An address given literally; no DNS lookup. `written` is the entry as the policy wrote
    /// it (trimmed), which is its [`MxListEntry::label`].
    Literal {
        addr: IpAddr,
        port: Option<u16>,
        written: String,
    },
    /// A name and the address it was resolved to by the policy.
    Resolved {
        name: String,
        addr: IpAddr,
        port: Option<u16>,
        /// The policy vouches that the address came from a DNSSEC-validated lookup.
        is_secure: bool,
    },
}

impl MxListEntry {
    /// Parse the string form of an entry.
    pub fn parse(input: &str) -> Result<Self, String> {
        let bad = |why: &str| format!("mx_list entry {input:?}: {why}");
        let s = input.trim();
        if s.is_empty() {
            return Err(bad("empty"));
        }
        if let Some(inner) = s.strip_prefix('[') {
            let (literal, after) = inner
                .split_once(']')
                .ok_or_else(|| bad("an address literal needs a closing ']'"))?;
            let port = match after {
                "" => None,
                p => Some(
                    p.strip_prefix(':')
                        .and_then(|p| p.parse::<u16>().ok())
                        .ok_or_else(|| bad("expected ':port' after ']'"))?,
                ),
            };
            let ip = match literal.get(..5) {
                Some(tag) if tag.eq_ignore_ascii_case("ipv6:") => &literal[5..],
                _ => literal,
            };
            let addr = ip
                .parse::<IpAddr>()
                .map_err(|_| bad(&format!("{literal:?} is not an IP address")))?;
            return Ok(MxListEntry::Literal {
                addr,
                port,
                written: s.to_string(),
            });
        }
        if let Ok(addr) = s.parse::<IpAddr>() {
            return Ok(MxListEntry::Literal {
                addr,
                port: None,
                written: s.to_string(),
            });
        }
        if let Ok(sa) = s.parse::<SocketAddr>() {
            return Ok(MxListEntry::Literal {
                addr: sa.ip(),
                port: Some(sa.port()),
                written: s.to_string(),
            });
        }
        let (name, port) = match s.rsplit_once(':') {
            Some((name, p)) => {
                let port = p
                    .parse::<u16>()
                    .map_err(|_| bad(&format!("{p:?} is not a port number")))?;
                (name, Some(port))
            }
            None => (s, None),
        };
        check_host_name(name).map_err(|why| bad(&why))?;
        Ok(MxListEntry::Host {
            name: name.to_string(),
            port,
        })
    }

    /// The port the entry names, if any.
    pub fn port(&self) -> Option<u16> {
        match self {
            MxListEntry::Host { port, .. }
            | MxListEntry::Literal { port, .. }
            | MxListEntry::Resolved { port, .. } => *port,
        }
    }

    /// How the entry appears in a site name built from an `mx_list`, as in KumoMTA: a string
    /// entry as written, or the address (with its port) of a resolved entry.
    pub fn label(&self) -> String {
        self.to_string()
    }
}

impl fmt::Display for MxListEntry {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            MxListEntry::Host { name, port: None } => f.write_str(name),
            MxListEntry::Host {
                name,
                port: Some(p),
            } => write!(f, "{name}:{p}"),
            MxListEntry::Literal { written, .. } => f.write_str(written),
            MxListEntry::Resolved {
                addr, port: None, ..
            } => write!(f, "{addr}"),
            MxListEntry::Resolved {
                addr,
                port: Some(p),
                ..
            } => write!(f, "{}", SocketAddr::new(*addr, *p)),
        }
    }
}

/// Letters, digits, `-` and `_` in dot-separated labels (a trailing dot allowed), so that a
/// typo such as `'mx.example.com;25'` fails when the policy loads, not at the first delivery.
fn check_host_name(name: &str) -> Result<(), String> {
    let trimmed = name.strip_suffix('.').unwrap_or(name);
    if trimmed.is_empty() || trimmed.len() > 253 {
        return Err("not a host name".into());
    }
    for label in trimmed.split('.') {
        if label.is_empty() || label.len() > 63 {
            return Err(format!("{name:?} is not a host name (empty or long label)"));
        }
        if let Some(c) = label
            .chars()
            .find(|c| !(c.is_ascii_alphanumeric() || *c == '-' || *c == '_'))
        {
            return Err(format!(
                "{name:?} is not a host name ({c:?} is not allowed)"
            ));
        }
    }
    Ok(())
}

/// The table form `{ name = ..., addr = ... }`.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ResolvedForm {
    name: String,
    addr: String,
    #[serde(default)]
    is_secure: bool,
}

impl ResolvedForm {
    fn into_entry(self) -> Result<MxListEntry, String> {
        let (addr, port) = if let Ok(ip) = self.addr.trim().parse::<IpAddr>() {
            (ip, None)
        } else if let Ok(sa) = self.addr.trim().parse::<SocketAddr>() {
            (sa.ip(), Some(sa.port()))
        } else {
            return Err(format!(
                "mx_list entry {{ name = {:?}, addr = {:?} }}: addr must be an IP address, \
                 optionally with a port ('10.0.0.1', '10.0.0.1:2525', '[::1]:2525')",
                self.name, self.addr
            ));
        };
        Ok(MxListEntry::Resolved {
            name: self.name,
            addr,
            port,
            is_secure: self.is_secure,
        })
    }
}

impl<'de> Deserialize<'de> for MxListEntry {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let v = serde_json::Value::deserialize(d)?;
        match v {
            serde_json::Value::String(s) => MxListEntry::parse(&s).map_err(de::Error::custom),
            v @ serde_json::Value::Object(_) => serde_json::from_value::<ResolvedForm>(v)
                .map_err(|e| de::Error::custom(format!("mx_list entry: {e}")))?
                .into_entry()
                .map_err(de::Error::custom),
            other => Err(de::Error::custom(format!(
                "mx_list entry {other}: expected a host string or {{ name = ..., addr = ... }}"
            ))),
        }
    }
}

/// For `mx_list`: a list of entries; an empty Lua table `{}` arrives as an empty map, so that
/// is an empty list too.
pub(crate) fn deserialize_list<'de, D: Deserializer<'de>>(
    d: D,
) -> Result<Vec<MxListEntry>, D::Error> {
    match serde_json::Value::deserialize(d)? {
        serde_json::Value::Array(items) => items
            .into_iter()
            .map(|v| MxListEntry::deserialize(v).map_err(de::Error::custom))
            .collect(),
        serde_json::Value::Object(m) if m.is_empty() => Ok(Vec::new()),
        _ => Err(de::Error::custom(
            "mx_list: expected a list such as { 'mx.example.com', '[10.0.0.1]:2525' }",
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn host(name: &str, port: Option<u16>) -> MxListEntry {
        MxListEntry::Host {
            name: name.into(),
            port,
        }
    }

    #[test]
    fn host_names_parse_with_an_optional_port() {
        for (text, want) in [
            ("smart.host.local", host("smart.host.local", None)),
            (
                "smart.host.local:2025",
                host("smart.host.local", Some(2025)),
            ),
            ("localhost", host("localhost", None)),
            ("mx.example.com.", host("mx.example.com.", None)),
        ] {
            let got = MxListEntry::parse(text).unwrap();
            assert_eq!(got, want, "{text}");
            assert_eq!(got.label(), text);
        }
    }

    #[test]
    fn address_literals_parse_bracketed_or_bare_and_keep_their_spelling_as_label() {
        for (text, addr, port) in [
            ("[10.0.0.1]", "10.0.0.1", None),
            ("[10.0.0.1]:2525", "10.0.0.1", Some(2525)),
            ("[IPv6:2001:db8::1]", "2001:db8::1", None),
            ("[ipv6:::1]:25", "::1", Some(25)),
            ("[::1]", "::1", None),
            ("10.0.0.1", "10.0.0.1", None),
            ("10.0.0.1:2525", "10.0.0.1", Some(2525)),
            ("::1", "::1", None),
        ] {
            let got = MxListEntry::parse(text).unwrap();
            assert_eq!(
                got,
                MxListEntry::Literal {
                    addr: addr.parse().unwrap(),
                    port,
                    written: text.into()
                },
                "{text}"
            );
            assert_eq!(got.port(), port);
            assert_eq!(got.label(), text);
        }
    }

    #[test]
    fn malformed_strings_are_refused_with_the_entry_named() {
        for (text, why) in [
            ("", "empty"),
            ("[10.0.0.1", "closing ']'"),
            ("[10.0.0.1]25", "':port'"),
            ("[10.0.0.1]:99999", "':port'"),
            ("[mx.example.com]", "is not an IP address"),
            ("mx.example.com:smtp", "\"smtp\" is not a port number"),
            ("mx.example.com;25", "';' is not allowed"),
            ("mx..example.com", "empty or long label"),
            ("mx example.com", "' ' is not allowed"),
        ] {
            let e = MxListEntry::parse(text).unwrap_err();
            assert!(e.starts_with(&format!("mx_list entry {text:?}: ")), "{e}");
            assert!(e.contains(why), "{text}: {e}");
        }
    }
}
