//! CIDR lists for egress paths (`prohibited_hosts`, `skip_hosts`): `'127.0.0.0/8'`, `'::1'`,
//! `'10.0.0.0/24'`. A block with host bits set (`'10.0.0.1/24'`) is refused rather than
//! rounded down, because it usually means the policy's author meant something else; the error
//! says what it would have been.

use std::fmt;
use std::net::IpAddr;

use serde::de::{Deserializer, Error as _};
use serde::Deserialize;

/// Why a CIDR block was refused; the text names the input.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CidrError {
    #[error("invalid CIDR {input:?}: not an IP address")]
    Address { input: String },
    #[error("invalid CIDR {input:?}: the prefix length must be a number from 0 to {max}")]
    Prefix { input: String, max: u8 },
    #[error("invalid CIDR {input:?}: host bits are set; did you mean {suggestion}?")]
    HostBits { input: String, suggestion: Cidr },
}

/// One block of addresses: `addr/prefix`, host bits zero.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Cidr {
    addr: IpAddr,
    prefix: u8,
}

impl Cidr {
    pub fn parse(input: &str) -> Result<Self, CidrError> {
        let s = input.trim();
        let (ip, prefix) = match s.split_once('/') {
            Some((ip, p)) => (ip, Some(p)),
            None => (s, None),
        };
        let addr: IpAddr = ip.parse().map_err(|_| CidrError::Address {
            input: input.to_string(),
        })?;
        let max = max_prefix(addr);
        let prefix = match prefix {
            None => max,
            Some(p) => {
                p.parse::<u8>()
                    .ok()
                    .filter(|p| *p <= max)
                    .ok_or_else(|| CidrError::Prefix {
                        input: input.to_string(),
                        max,
                    })?
            }
        };
        let block = Cidr {
            addr: masked(addr, prefix),
            prefix,
        };
        if block.addr != addr {
            return Err(CidrError::HostBits {
                input: input.to_string(),
                suggestion: block,
            });
        }
        Ok(block)
    }

    /// The first address of the block.
    pub fn addr(&self) -> IpAddr {
        self.addr
    }

    /// The prefix length: 32 (IPv4) or 128 (IPv6) for a single address.
    pub fn prefix(&self) -> u8 {
        self.prefix
    }

    pub fn contains(&self, ip: IpAddr) -> bool {
        // An IPv4 block never matches an IPv6 address and the reverse, as in KumoMTA.
        max_prefix(ip) == max_prefix(self.addr) && masked(ip, self.prefix) == self.addr
    }
}

impl fmt::Display for Cidr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.prefix == max_prefix(self.addr) {
            write!(f, "{}", self.addr)
        } else {
            write!(f, "{}/{}", self.addr, self.prefix)
        }
    }
}

fn max_prefix(ip: IpAddr) -> u8 {
    match ip {
        IpAddr::V4(_) => 32,
        IpAddr::V6(_) => 128,
    }
}

fn masked(ip: IpAddr, prefix: u8) -> IpAddr {
    match ip {
        IpAddr::V4(a) => {
            let mask = u32::MAX.checked_shl(32 - u32::from(prefix)).unwrap_or(0);
            IpAddr::V4((u32::from(a) & mask).into())
        }
        IpAddr::V6(a) => {
            let mask = u128::MAX.checked_shl(128 - u32::from(prefix)).unwrap_or(0);
            IpAddr::V6((u128::from(a) & mask).into())
        }
    }
}

/// A list of [`Cidr`] blocks, in the order the policy wrote them.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct CidrSet(Vec<Cidr>);

impl CidrSet {
    /// Parse every entry; the error lists each bad one.
    pub fn parse<S: AsRef<str>>(entries: &[S]) -> Result<Self, String> {
        let mut blocks = Vec::with_capacity(entries.len());
        let mut problems = Vec::new();
        for e in entries {
            match Cidr::parse(e.as_ref()) {
                Ok(c) => blocks.push(c),
                Err(err) => problems.push(err.to_string()),
            }
        }
        match problems.is_empty() {
            true => Ok(CidrSet(blocks)),
            false => Err(problems.join("; ")),
        }
    }

    /// The hosts an egress path never connects to unless the policy says otherwise: loopback
    /// and the unspecified addresses, which would make the server deliver to itself.
    pub fn default_prohibited_hosts() -> Self {
        let v4 = |a: [u8; 4], prefix| Cidr {
            addr: IpAddr::from(a),
            prefix,
        };
        let v6 = |a: u128| Cidr {
            addr: IpAddr::V6(a.into()),
            prefix: 128,
        };
        CidrSet(vec![
            v4([127, 0, 0, 0], 8),
            v6(1),
            v4([0, 0, 0, 0], 32),
            v6(0),
        ])
    }

    pub fn contains(&self, ip: IpAddr) -> bool {
        self.0.iter().any(|c| c.contains(ip))
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    pub fn blocks(&self) -> &[Cidr] {
        &self.0
    }
}

impl<'de> Deserialize<'de> for CidrSet {
    /// A list of strings. An empty Lua table `{}` arrives as an empty map, so that is an empty
    /// list too (`prohibited_hosts = {}` is how a test policy allows loopback).
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum Form {
            List(Vec<String>),
            Empty(std::collections::BTreeMap<String, ()>),
        }
        match Form::deserialize(d) {
            Ok(Form::List(v)) => CidrSet::parse(&v).map_err(D::Error::custom),
            Ok(Form::Empty(m)) if m.is_empty() => Ok(CidrSet::default()),
            _ => Err(D::Error::custom(
                "expected a list of CIDR strings such as { '10.0.0.0/8', '::1' }",
            )),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    #[test]
    fn blocks_and_single_addresses_match_what_they_cover() {
        let set = CidrSet::parse(&["10.0.0.0/8", "192.168.1.7", "2001:db8::/32"]).unwrap();
        assert!(set.contains(ip("10.255.0.1")));
        assert!(set.contains(ip("192.168.1.7")));
        assert!(!set.contains(ip("192.168.1.8")));
        assert!(set.contains(ip("2001:db8::25")));
        assert!(!set.contains(ip("2001:db9::25")));
        assert!(!set.contains(ip("11.0.0.1")));
        let all = CidrSet::parse(&["0.0.0.0/0"]).unwrap();
        assert!(all.contains(ip("8.8.8.8")));
        assert!(!all.contains(ip("::1")), "a v4 block never matches v6");
    }

    #[test]
    fn the_default_prohibited_hosts_are_loopback_and_unspecified() {
        let d = CidrSet::default_prohibited_hosts();
        let shown: Vec<String> = d.blocks().iter().map(|c| c.to_string()).collect();
        assert_eq!(shown, ["127.0.0.0/8", "::1", "0.0.0.0", "::"]);
        for yes in ["127.0.0.1", "127.9.9.9", "::1", "0.0.0.0", "::"] {
            assert!(d.contains(ip(yes)), "{yes}");
        }
        for no in ["10.0.0.1", "::2", "0.0.0.1"] {
            assert!(!d.contains(ip(no)), "{no}");
        }
    }

    #[test]
    fn bad_entries_are_refused_with_the_entry_named() {
        let e = CidrSet::parse(&["10.0.0.1/24"]).unwrap_err();
        assert_eq!(
            e,
            "invalid CIDR \"10.0.0.1/24\": host bits are set; did you mean 10.0.0.0/24?"
        );
        let e = CidrSet::parse(&["10.0.0.0/33", "localhost"]).unwrap_err();
        assert!(e.contains("\"10.0.0.0/33\": the prefix length must be a number from 0 to 32"));
        assert!(e.contains("\"localhost\": not an IP address"), "{e}");
    }
}
