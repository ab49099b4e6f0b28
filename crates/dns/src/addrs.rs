//! Address and TXT lookups, and turning an MX host list into the addresses
//! delivery connects to.

use std::net::IpAddr;
use std::sync::Arc;

use hickory_resolver::proto::rr::{Name, RData, RecordType};
use rand::seq::SliceRandom;
use tokio::time::Instant;

use crate::error::DnsError;
use crate::global::{global, AddrResult, Dns};
use crate::mx::{classify, MailExchanger, Target};
use crate::resolver::{display_name, fully_qualify, txt_strings, Answer, Resolver};

/// One address to try for a domain, with the MX host it belongs to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ResolvedAddress {
    /// The MX host name (or the literal address) the address came from.
    pub name: String,
    pub addr: IpAddr,
    /// The MX preference of `name`.
    pub preference: u16,
}

/// The A and AAAA addresses of `host` (IPv4 first), cached for their TTL. An
/// address literal (`192.0.2.1`, `[192.0.2.1]`, `[IPv6:...]`) is returned as
/// is. A name without addresses is an error: [`DnsError::NxDomain`] when it
/// does not exist, [`DnsError::NoRecords`] when it has no A/AAAA records.
pub async fn resolve_addrs(host: &str) -> Result<Arc<[IpAddr]>, DnsError> {
    global().resolve_addrs(host, None).await
}

/// [`resolve_addrs`] through a named resolver (uncached), or the default.
pub async fn resolve_addrs_via(
    host: &str,
    resolver: Option<&str>,
) -> Result<Arc<[IpAddr]>, DnsError> {
    let dns = global();
    match resolver {
        None => dns.resolve_addrs(host, None).await,
        Some(name) => dns.resolve_addrs(host, Some(dns.named(name)?)).await,
    }
}

/// The TXT records of `name`, each record's strings joined. A name without TXT
/// records gives an empty list; a name that does not exist is an error.
pub async fn lookup_txt(name: &str) -> Result<Vec<String>, DnsError> {
    lookup_txt_via(name, None).await
}

/// [`lookup_txt`] through a named resolver, or the default.
pub async fn lookup_txt_via(name: &str, resolver: Option<&str>) -> Result<Vec<String>, DnsError> {
    let resolver = global().pick(resolver)?;
    let fq = fully_qualify(name)?;
    let answer = resolver.lookup(&fq, RecordType::TXT).await?;
    if answer.nxdomain {
        return Err(DnsError::NxDomain {
            name: display_name(&fq),
            rtype: "TXT",
        });
    }
    Ok(txt_strings(&answer))
}

impl MailExchanger {
    /// The addresses of every MX host, most preferred first; hosts of equal
    /// preference are shuffled together so that load spreads over them, as
    /// KumoMTA does. Hosts that fail to resolve are skipped.
    ///
    /// Errors: [`DnsError::NullMx`] for a null MX, and
    /// [`DnsError::NoAddresses`] (listing each host's failure) when no host
    /// has an address.
    pub async fn resolve_addresses(&self) -> Result<Vec<ResolvedAddress>, DnsError> {
        global().mx_addresses(self).await
    }
}

impl Dns {
    pub(crate) async fn resolve_addrs(
        &self,
        host: &str,
        via: Option<Arc<dyn Resolver>>,
    ) -> AddrResult {
        if let Ok(addr) = host.parse::<IpAddr>() {
            return Ok(Arc::from([addr]));
        }
        let name = match classify(host)? {
            Target::Literal(addr) => return Ok(Arc::from([addr])),
            Target::Domain(name) => name,
        };
        if let Some(resolver) = via {
            return lookup_addrs(resolver.as_ref(), &name).await.0;
        }
        if let Some((cached, _)) = self.addr_cache.get(&name) {
            return cached;
        }
        let (result, ttl) = lookup_addrs(self.resolver().as_ref(), &name).await;
        // Answers (addresses, NXDOMAIN, NODATA) are cached for their TTL;
        // timeouts and server failures are not, so the next message retries.
        if let Some(ttl) = ttl {
            self.addr_cache
                .insert(name, result.clone(), Instant::now() + ttl);
        }
        result
    }

    pub(crate) async fn mx_addresses(
        &self,
        mx: &MailExchanger,
    ) -> Result<Vec<ResolvedAddress>, DnsError> {
        if mx.is_null_mx() {
            return Err(DnsError::NullMx {
                domain: domain_text(&mx.domain_name),
            });
        }
        let mut found = Vec::new();
        let mut failures = Vec::new();
        for (&preference, hosts) in &mx.by_pref {
            let mut level = Vec::new();
            for host in hosts {
                match self.resolve_addrs(host, None).await {
                    Ok(addrs) => level.extend(addrs.iter().map(|&addr| ResolvedAddress {
                        name: host.clone(),
                        addr,
                        preference,
                    })),
                    Err(e) => {
                        tracing::debug!(host, "MX host has no address: {e}");
                        failures.push(e.to_string());
                    }
                }
            }
            level.shuffle(&mut rand::rng());
            found.append(&mut level);
        }
        if found.is_empty() {
            return Err(DnsError::NoAddresses {
                domain: domain_text(&mx.domain_name),
                detail: failures.join("; "),
            });
        }
        Ok(found)
    }
}

/// `example.com.` → `example.com` for messages; literals stay as given.
fn domain_text(domain: &str) -> String {
    domain.strip_suffix('.').unwrap_or(domain).to_string()
}

/// A and AAAA in parallel. Returns the result and, when it is an answer
/// rather than a failure, how long it may be cached (the shorter TTL).
async fn lookup_addrs(
    resolver: &dyn Resolver,
    name: &Name,
) -> (AddrResult, Option<std::time::Duration>) {
    let (v4, v6) = futures::join!(
        resolver.lookup(name, RecordType::A),
        resolver.lookup(name, RecordType::AAAA)
    );
    let mut addrs = Vec::new();
    let mut answers: Vec<&Answer> = Vec::new();
    let mut first_error = None;
    for result in [&v4, &v6] {
        match result {
            Ok(answer) => {
                addrs.extend(answer.records.iter().filter_map(|r| match r {
                    RData::A(a) => Some(IpAddr::V4(a.0)),
                    RData::AAAA(a) => Some(IpAddr::V6(a.0)),
                    _ => None,
                }));
                answers.push(answer);
            }
            Err(e) => {
                first_error.get_or_insert_with(|| e.clone());
            }
        }
    }
    let ttl = answers.iter().map(|a| a.ttl).min();
    if !addrs.is_empty() {
        return (Ok(Arc::from(addrs)), ttl);
    }
    if let Some(e) = first_error {
        return (Err(e), None);
    }
    let rtype = "A/AAAA";
    let name = display_name(name);
    let error = if answers.iter().any(|a| a.nxdomain) {
        DnsError::NxDomain { name, rtype }
    } else {
        DnsError::NoRecords { name, rtype }
    };
    (Err(error), ttl)
}

#[cfg(test)]
#[path = "addrs_tests.rs"]
mod tests;
