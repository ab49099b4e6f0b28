//! MX resolution: which hosts accept mail for a domain, in which order, and
//! the site name that groups domains served by the same hosts.
//!
//! Semantics are KumoMTA's: a domain literal resolves to itself; MX records
//! are grouped by preference (lowest first, hosts sorted within a
//! preference); a domain without MX records (NODATA) is its own single host;
//! NXDOMAIN, timeouts and server failures are errors. Results are cached for
//! the records' TTL, failures for the negative-cache TTL.

use std::collections::BTreeMap;
use std::net::{IpAddr, Ipv6Addr};
use std::sync::Arc;
use std::time::Duration;

use hickory_resolver::proto::rr::{Name, RData, RecordType};
use tokio::time::Instant;

use crate::error::DnsError;
use crate::global::{global, Dns, MxResult};
use crate::resolver::{display_name, fully_qualify, Resolver};
use crate::site_name::site_name;

/// How long an MX answer whose TTL already ran out is kept anyway, as KumoMTA
/// does, so that a zero TTL does not mean one query per message.
const MIN_MX_CACHE: Duration = Duration::from_secs(10);

/// The outcome of resolving a domain's MX records.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MailExchanger {
    /// The resolved name, fully qualified (`example.com.`); a domain literal
    /// as it was given (`[192.0.2.1]`).
    pub domain_name: String,
    /// Every host in preference order (fully qualified names, or the address
    /// of a domain literal).
    pub hosts: Vec<String>,
    /// Hosts by MX preference, lowest (most preferred) first.
    pub by_pref: BTreeMap<u16, Vec<String>>,
    /// Derived from `hosts`; domains with the same MX hosts share it.
    pub site_name: String,
    /// The domain was an address literal such as `[192.0.2.1]`.
    pub is_domain_literal: bool,
    /// False when the domain had no MX records and is its own host.
    pub is_mx: bool,
    /// True only for DNSSEC-validated answers.
    pub is_secure: bool,
    expires: Option<Instant>,
}

impl MailExchanger {
    /// RFC 7505 null MX: the domain accepts no mail. Like KumoMTA, a `.`
    /// anywhere in the set counts (RFC 7505 forbids mixing it with real hosts).
    pub fn is_null_mx(&self) -> bool {
        self.hosts.iter().any(|h| h == ".")
    }

    /// When the answer stops being valid (its TTL); `None` for a domain
    /// literal, which never expires.
    pub fn expires(&self) -> Option<Instant> {
        self.expires
    }

    pub fn has_expired(&self) -> bool {
        self.expires.is_some_and(|e| e <= Instant::now())
    }

    fn literal(domain: &str, addr: IpAddr) -> Self {
        let host = addr.to_string();
        MailExchanger {
            domain_name: domain.to_string(),
            hosts: vec![host.clone()],
            by_pref: BTreeMap::from([(1, vec![host.clone()])]),
            site_name: host,
            is_domain_literal: true,
            is_mx: false,
            is_secure: false,
            expires: None,
        }
    }

    fn from_by_pref(
        name: &Name,
        by_pref: BTreeMap<u16, Vec<String>>,
        is_mx: bool,
        is_secure: bool,
        ttl: Duration,
    ) -> Self {
        let hosts: Vec<String> = by_pref.values().flatten().cloned().collect();
        MailExchanger {
            domain_name: name.to_ascii(),
            site_name: site_name(&hosts),
            hosts,
            by_pref,
            is_domain_literal: false,
            is_mx,
            is_secure,
            expires: Some(Instant::now() + ttl),
        }
    }
}

/// Resolve the MX hosts of `domain` through the resolver in use, cached.
pub async fn resolve_mx(domain: &str) -> Result<Arc<MailExchanger>, DnsError> {
    global().resolve_mx(domain, None).await
}

/// [`resolve_mx`] through the resolver `define_resolver` called `resolver`.
/// Like KumoMTA, a named resolver bypasses the cache.
pub async fn resolve_mx_via(
    domain: &str,
    resolver: Option<&str>,
) -> Result<Arc<MailExchanger>, DnsError> {
    let dns = global();
    match resolver {
        None => dns.resolve_mx(domain, None).await,
        Some(name) => dns.resolve_mx(domain, Some(dns.named(name)?)).await,
    }
}

/// What a routing domain names: an address literal or a DNS name.
pub(crate) enum Target {
    Literal(IpAddr),
    Domain(Name),
}

/// `[192.0.2.1]`, `[IPv6:2001:db8::1]` (and, as KumoMTA accepts, the untagged
/// `[2001:db8::1]`) are literals; anything else must be a DNS name.
pub(crate) fn classify(domain: &str) -> Result<Target, DnsError> {
    let Some(inner) = domain.strip_prefix('[') else {
        return fully_qualify(domain).map(Target::Domain);
    };
    let invalid = |reason: String| DnsError::InvalidName {
        name: domain.to_string(),
        reason,
    };
    let inner = inner
        .strip_suffix(']')
        .ok_or_else(|| invalid("an address literal must end with ']'".to_string()))?;
    let tagged_v6 = inner
        .get(..5)
        .filter(|tag| tag.eq_ignore_ascii_case("ipv6:"))
        .map(|_| &inner[5..]);
    let addr = match tagged_v6 {
        Some(v6) => v6.parse::<Ipv6Addr>().map(IpAddr::V6),
        None => inner.parse::<IpAddr>(),
    };
    addr.map(Target::Literal)
        .map_err(|e| invalid(format!("not an IP address literal: {e}")))
}

impl Dns {
    /// `via` names an explicit resolver, which bypasses the cache.
    pub(crate) async fn resolve_mx(
        &self,
        domain: &str,
        via: Option<Arc<dyn Resolver>>,
    ) -> MxResult {
        let name = match classify(domain)? {
            Target::Literal(addr) => return Ok(Arc::new(MailExchanger::literal(domain, addr))),
            Target::Domain(name) => name,
        };
        if let Some(resolver) = via {
            return self.lookup_mx(resolver.as_ref(), &name).await;
        }
        if let Some((cached, _)) = self.mx_cache.get(&name) {
            tracing::trace!(%name, "MX cache hit");
            return cached;
        }
        let result = self.lookup_mx(self.resolver().as_ref(), &name).await;
        let now = Instant::now();
        let expires = match &result {
            Ok(mx) => mx
                .expires
                .filter(|e| *e > now)
                .unwrap_or(now + MIN_MX_CACHE),
            Err(_) => now + self.mx_negative_ttl(),
        };
        self.mx_cache.insert(name, result.clone(), expires);
        result
    }

    async fn lookup_mx(&self, resolver: &dyn Resolver, name: &Name) -> MxResult {
        let started = Instant::now();
        let timeout = self.mx_timeout();
        let answer =
            match tokio::time::timeout(timeout, resolver.lookup(name, RecordType::MX)).await {
                Ok(answer) => answer,
                Err(_) => Err(DnsError::Timeout {
                    name: display_name(name),
                    rtype: "MX",
                }),
            };
        let answer = answer.inspect_err(|e| {
            tracing::debug!(%name, elapsed = ?started.elapsed(), "MX resolution failed: {e}");
        })?;

        let mut by_pref: BTreeMap<u16, Vec<String>> = BTreeMap::new();
        for record in &answer.records {
            if let RData::MX(mx) = record {
                by_pref
                    .entry(mx.preference)
                    .or_default()
                    .push(mx.exchange.to_lowercase().to_ascii());
            }
        }

        if by_pref.is_empty() {
            if answer.nxdomain {
                return Err(DnsError::NxDomain {
                    name: display_name(name),
                    rtype: "MX",
                });
            }
            // RFC 5321 5.1: without MX records the domain itself is the host.
            let implicit = BTreeMap::from([(1, vec![name.to_ascii()])]);
            let mx = MailExchanger::from_by_pref(name, implicit, false, answer.secure, answer.ttl);
            return Ok(Arc::new(mx));
        }

        for hosts in by_pref.values_mut() {
            hosts.sort();
        }
        let mx = MailExchanger::from_by_pref(name, by_pref, true, answer.secure, answer.ttl);
        tracing::debug!(%name, site = %mx.site_name, hosts = ?mx.hosts, "MX resolved");
        Ok(Arc::new(mx))
    }
}

#[cfg(test)]
#[path = "mx_tests.rs"]
mod tests;
