//! The test resolver: answers from zone-file text held in memory, so that
//! policies and tests resolve MX, A, AAAA and TXT records without a network.
//!
//! Semantics follow an authoritative server: a name outside every zone, or
//! inside a zone but with no records at or below it, is NXDOMAIN; a name that
//! exists without records of the asked type is NODATA. CNAMEs are followed.
//! Negative answers carry the zone's SOA negative TTL (RFC 2308), or
//! [`DEFAULT_NEGATIVE_TTL`] for a zone without SOA.

use std::collections::{HashMap, HashSet};
use std::time::Duration;

use futures::future::BoxFuture;
use hickory_resolver::proto::rr::{Name, RData, RecordSet, RecordType};
use hickory_resolver::proto::serialize::txt::Parser;

use crate::error::DnsError;
use crate::resolver::{display_name, fully_qualify, Answer, Resolver};

/// The negative TTL of a zone that has no SOA record.
pub const DEFAULT_NEGATIVE_TTL: Duration = Duration::from_secs(60);

/// How many CNAMEs one lookup follows before it calls the chain a loop.
const MAX_CNAME_CHAIN: usize = 8;

#[derive(Debug, Default, Clone)]
struct Zone {
    secure: bool,
    negative_ttl: Option<Duration>,
}

/// A [`Resolver`] serving zone-file text from memory.
#[derive(Debug, Default, Clone)]
pub struct TestResolver {
    /// Zone origins (lowercase, fully qualified).
    zones: HashMap<Name, Zone>,
    records: HashMap<(Name, RecordType), RecordSet>,
    /// Every owner name, to tell an empty non-terminal (NODATA) from a name
    /// that does not exist (NXDOMAIN).
    owners: HashSet<Name>,
    servfail: HashSet<Name>,
}

impl TestResolver {
    pub fn new() -> Self {
        Self::default()
    }

    /// Add a zone (`$ORIGIN`, records; the syntax of RFC 1035 master files)
    /// whose answers are not DNSSEC-validated.
    pub fn with_zone(self, text: &str) -> Result<Self, DnsError> {
        self.add_zone(text, false)
    }

    /// Add a zone whose answers are reported as DNSSEC-validated.
    pub fn with_secure_zone(self, text: &str) -> Result<Self, DnsError> {
        self.add_zone(text, true)
    }

    /// Make every lookup of `name` fail as a SERVFAIL would.
    pub fn with_servfail(mut self, name: &str) -> Result<Self, DnsError> {
        self.servfail.insert(fully_qualify(name)?);
        Ok(self)
    }

    /// A resolver serving `zones` (insecure), the common test set-up.
    pub fn from_zones<S: AsRef<str>>(zones: &[S]) -> Result<Self, DnsError> {
        zones
            .iter()
            .try_fold(Self::new(), |r, z| r.with_zone(z.as_ref()))
    }

    fn add_zone(mut self, text: &str, secure: bool) -> Result<Self, DnsError> {
        let (origin, sets) = Parser::new(text, None, None)
            .parse()
            .map_err(|e| DnsError::Config(format!("cannot parse zone text: {e}")))?;
        let origin = normalise(&origin);
        let mut negative_ttl = None;
        for (key, set) in sets {
            let owner = normalise(&Name::from(key.name()));
            if key.record_type == RecordType::SOA {
                negative_ttl = soa_negative_ttl(&set);
            }
            self.owners.insert(owner.clone());
            self.records
                .entry((owner, key.record_type))
                .and_modify(|existing| {
                    for record in set.records_without_rrsigs() {
                        existing.insert(record.clone(), 0);
                    }
                })
                .or_insert(set);
        }
        let zone = self.zones.entry(origin).or_default();
        zone.secure |= secure;
        zone.negative_ttl = negative_ttl.or(zone.negative_ttl);
        Ok(self)
    }

    fn answer(&self, name: &Name, rtype: RecordType, chain: usize) -> Result<Answer, DnsError> {
        if self.servfail.contains(name) {
            return Err(DnsError::ServerFailure {
                name: display_name(name),
                rtype: rtype.into(),
                detail: "server failure (SERVFAIL)".to_string(),
            });
        }
        let Some(zone) = self.enclosing_zone(name) else {
            return Ok(negative(true, false, DEFAULT_NEGATIVE_TTL));
        };
        let negative_ttl = zone.negative_ttl.unwrap_or(DEFAULT_NEGATIVE_TTL);

        if let Some(set) = self.records.get(&(name.clone(), rtype)) {
            return Ok(Answer {
                records: rdata(set),
                nxdomain: false,
                secure: zone.secure,
                ttl: Duration::from_secs(set.ttl().into()),
            });
        }
        if rtype != RecordType::CNAME {
            if let Some(target) = self.cname_target(name) {
                if chain >= MAX_CNAME_CHAIN {
                    return Err(DnsError::ServerFailure {
                        name: display_name(name),
                        rtype: rtype.into(),
                        detail: "CNAME chain too long".to_string(),
                    });
                }
                let alias_ttl = self
                    .records
                    .get(&(name.clone(), RecordType::CNAME))
                    .map_or(Duration::ZERO, |s| Duration::from_secs(s.ttl().into()));
                let mut answer = self.answer(&target, rtype, chain + 1)?;
                answer.ttl = answer.ttl.min(alias_ttl);
                answer.secure &= zone.secure;
                return Ok(answer);
            }
        }
        let exists = self.owners.iter().any(|owner| name.zone_of(owner));
        Ok(negative(!exists, zone.secure, negative_ttl))
    }

    fn enclosing_zone(&self, name: &Name) -> Option<&Zone> {
        let mut candidate = name.clone();
        loop {
            if let Some(zone) = self.zones.get(&candidate) {
                return Some(zone);
            }
            if candidate.is_root() {
                return None;
            }
            candidate = candidate.base_name();
        }
    }

    fn cname_target(&self, name: &Name) -> Option<Name> {
        let set = self.records.get(&(name.clone(), RecordType::CNAME))?;
        set.records_without_rrsigs().find_map(|r| match &r.data {
            RData::CNAME(target) => Some(normalise(&target.0)),
            _ => None,
        })
    }
}

impl Resolver for TestResolver {
    fn lookup<'a>(
        &'a self,
        name: &'a Name,
        rtype: RecordType,
    ) -> BoxFuture<'a, Result<Answer, DnsError>> {
        Box::pin(async move { self.answer(&normalise(name), rtype, 0) })
    }
}

fn negative(nxdomain: bool, secure: bool, ttl: Duration) -> Answer {
    Answer {
        records: Vec::new(),
        nxdomain,
        secure,
        ttl,
    }
}

fn rdata(set: &RecordSet) -> Vec<RData> {
    set.records_without_rrsigs()
        .map(|r| r.data.clone())
        .collect()
}

/// RFC 2308: a negative answer lives for the smaller of the SOA record's TTL
/// and its MINIMUM field.
fn soa_negative_ttl(set: &RecordSet) -> Option<Duration> {
    set.records_without_rrsigs().find_map(|r| match &r.data {
        RData::SOA(soa) => Some(Duration::from_secs(r.ttl.min(soa.minimum).into())),
        _ => None,
    })
}

/// Keys are compared lowercase and fully qualified (hickory's `Name`
/// equality also depends on the trailing dot).
fn normalise(name: &Name) -> Name {
    let mut name = name.to_lowercase();
    name.set_fqdn(true);
    name
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::Ipv4Addr;

    const ZONE: &str = r#"
$ORIGIN example.com.
@           3600 IN SOA ns.example.com. admin.example.com. 1 7200 900 1209600 120
@            600 IN MX  10 mx1.example.com.
mx1          300 IN A   192.0.2.1
mx1          300 IN AAAA 2001:db8::1
www          900 IN CNAME mx1.example.com.
a.b.deep     300 IN TXT "deep"
@            300 IN TXT "v=spf1 -all"
"#;

    async fn ask(r: &TestResolver, name: &str, rtype: RecordType) -> Result<Answer, DnsError> {
        r.lookup(&fully_qualify(name).unwrap(), rtype).await
    }

    #[tokio::test]
    async fn records_come_back_with_their_ttl() {
        let r = TestResolver::from_zones(&[ZONE]).unwrap();
        let a = ask(&r, "MX1.example.com", RecordType::A).await.unwrap();
        assert_eq!(
            a.records,
            vec![RData::A(Ipv4Addr::new(192, 0, 2, 1).into())]
        );
        assert_eq!(a.ttl, Duration::from_secs(300));
        assert!(!a.nxdomain && !a.secure);
    }

    #[tokio::test]
    async fn a_name_outside_every_zone_is_nxdomain() {
        let r = TestResolver::from_zones(&[ZONE]).unwrap();
        let a = ask(&r, "example.org", RecordType::MX).await.unwrap();
        assert!(a.nxdomain && a.records.is_empty());
    }

    #[tokio::test]
    async fn a_missing_name_inside_a_zone_is_nxdomain_with_the_soa_negative_ttl() {
        let r = TestResolver::from_zones(&[ZONE]).unwrap();
        let a = ask(&r, "nobody.example.com", RecordType::MX).await.unwrap();
        assert!(a.nxdomain);
        assert_eq!(a.ttl, Duration::from_secs(120));
    }

    #[tokio::test]
    async fn an_existing_name_without_the_type_is_nodata() {
        let r = TestResolver::from_zones(&[ZONE]).unwrap();
        let a = ask(&r, "mx1.example.com", RecordType::MX).await.unwrap();
        assert!(!a.nxdomain && a.records.is_empty());
    }

    #[tokio::test]
    async fn an_empty_non_terminal_is_nodata_not_nxdomain() {
        let r = TestResolver::from_zones(&[ZONE]).unwrap();
        let a = ask(&r, "b.deep.example.com", RecordType::TXT)
            .await
            .unwrap();
        assert!(!a.nxdomain && a.records.is_empty());
    }

    #[tokio::test]
    async fn a_cname_is_followed_and_the_shorter_ttl_wins() {
        let r = TestResolver::from_zones(&[ZONE]).unwrap();
        let a = ask(&r, "www.example.com", RecordType::AAAA).await.unwrap();
        assert_eq!(a.records.len(), 1);
        assert_eq!(a.ttl, Duration::from_secs(300));
    }

    #[tokio::test]
    async fn a_cname_loop_is_a_server_failure() {
        let r = TestResolver::from_zones(&["$ORIGIN loop.test.\na 60 CNAME b\nb 60 CNAME a\n"])
            .unwrap();
        let e = ask(&r, "a.loop.test", RecordType::A).await.unwrap_err();
        assert!(matches!(e, DnsError::ServerFailure { .. }), "{e}");
    }

    #[tokio::test]
    async fn a_zone_without_soa_uses_the_default_negative_ttl() {
        let r = TestResolver::from_zones(&["$ORIGIN plain.test.\n@ 30 A 192.0.2.9\n"]).unwrap();
        let a = ask(&r, "x.plain.test", RecordType::A).await.unwrap();
        assert!(a.nxdomain);
        assert_eq!(a.ttl, DEFAULT_NEGATIVE_TTL);
    }

    #[tokio::test]
    async fn secure_zones_and_servfail_names_are_simulated() {
        let r = TestResolver::new()
            .with_secure_zone("$ORIGIN signed.test.\n@ 30 MX 10 mx.signed.test.\n")
            .unwrap()
            .with_servfail("broken.test")
            .unwrap();
        assert!(ask(&r, "signed.test", RecordType::MX).await.unwrap().secure);
        let e = ask(&r, "broken.test", RecordType::MX).await.unwrap_err();
        assert_eq!(
            e.to_string(),
            "DNS MX lookup for broken.test failed: server failure (SERVFAIL)"
        );
    }

    #[tokio::test]
    async fn two_zone_texts_for_one_origin_are_merged() {
        let r = TestResolver::from_zones(&[
            "$ORIGIN m.test.\n@ 30 A 192.0.2.1\n",
            "$ORIGIN m.test.\n@ 30 A 192.0.2.2\n",
        ])
        .unwrap();
        assert_eq!(
            ask(&r, "m.test", RecordType::A)
                .await
                .unwrap()
                .records
                .len(),
            2
        );
    }

    #[test]
    fn unparsable_zone_text_is_a_configuration_error() {
        let e =
            TestResolver::from_zones(&["$ORIGIN x.test.\n@ 30 MX notanumber mx.\n"]).unwrap_err();
        assert!(
            e.to_string()
                .starts_with("invalid resolver configuration: cannot parse zone text"),
            "{e}"
        );
    }
}
