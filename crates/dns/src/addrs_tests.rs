use std::sync::Arc;
use std::time::Duration;

use super::*;
use crate::test_support::{dns, zones_resolver, Silent, Switchable};

const SITE: &str = r#"
$ORIGIN example.com.
@      300 MX 10 mx1.example.com.
@      300 MX 10 mx2.example.com.
@      300 MX 20 backup.example.com.
@      300 MX 30 gone.example.com.
mx1    300 A    192.0.2.1
mx1    120 AAAA 2001:db8::1
mx2    300 A    192.0.2.2
backup 300 A    192.0.2.3
text   300 TXT  "part one, " "part two"
text   300 TXT  "second record"
"#;

fn ip(s: &str) -> IpAddr {
    s.parse().unwrap()
}

#[tokio::test]
async fn a_and_aaaa_addresses_are_returned_ipv4_first() {
    let addrs = dns(&[SITE])
        .resolve_addrs("MX1.example.com", None)
        .await
        .unwrap();
    assert_eq!(&addrs[..], &[ip("192.0.2.1"), ip("2001:db8::1")]);
}

#[tokio::test]
async fn a_name_without_addresses_is_no_records_and_a_missing_name_nxdomain() {
    let dns = dns(&[SITE]);
    let e = dns.resolve_addrs("example.com", None).await.unwrap_err();
    assert_eq!(
        e.to_string(),
        "DNS A/AAAA lookup for example.com: no A/AAAA records"
    );
    let e = dns
        .resolve_addrs("gone.example.com", None)
        .await
        .unwrap_err();
    assert!(
        matches!(
            e,
            DnsError::NxDomain {
                rtype: "A/AAAA",
                ..
            }
        ),
        "{e}"
    );
}

#[tokio::test]
async fn address_literals_need_no_lookup() {
    let dns = Dns::new(Some(Arc::new(Silent)));
    for (literal, want) in [
        ("192.0.2.9", "192.0.2.9"),
        ("[192.0.2.9]", "192.0.2.9"),
        ("[IPv6:2001:db8::9]", "2001:db8::9"),
        ("2001:db8::9", "2001:db8::9"),
    ] {
        let addrs = dns.resolve_addrs(literal, None).await.unwrap();
        assert_eq!(&addrs[..], &[ip(want)], "{literal}");
    }
}

#[tokio::test(start_paused = true)]
async fn addresses_are_cached_for_the_shorter_of_the_a_and_aaaa_ttls() {
    let zone = |last: u8| {
        format!("$ORIGIN h.test.\n@ 300 A 192.0.2.{last}\n@ 100 AAAA 2001:db8::{last}\n")
    };
    let zones = Switchable::new(&[&zone(1)]);
    let dns = Dns::new(Some(zones.clone()));
    dns.resolve_addrs("h.test", None).await.unwrap();
    zones.switch(&[&zone(2)]);
    tokio::time::advance(Duration::from_secs(99)).await;
    let cached = dns.resolve_addrs("h.test", None).await.unwrap();
    assert_eq!(cached[0], ip("192.0.2.1"));
    tokio::time::advance(Duration::from_secs(2)).await;
    let fresh = dns.resolve_addrs("h.test", None).await.unwrap();
    assert_eq!(&fresh[..], &[ip("192.0.2.2"), ip("2001:db8::2")]);
}

#[tokio::test]
async fn a_server_failure_is_not_cached() {
    let failing = zones_resolver(&[]).with_servfail("flaky.test").unwrap();
    let dns = Dns::new(Some(Arc::new(failing)));
    let e = dns.resolve_addrs("flaky.test", None).await.unwrap_err();
    assert!(e.is_temporary(), "{e}");
    assert_eq!(dns.addr_cache.len(), 0);
}

#[tokio::test]
async fn mx_addresses_come_most_preferred_first_and_skip_hosts_without_address() {
    let dns = dns(&[SITE]);
    let mx = dns.resolve_mx("example.com", None).await.unwrap();
    let addrs = dns.mx_addresses(&mx).await.unwrap();
    let mut first_level: Vec<IpAddr> = addrs[..3].iter().map(|a| a.addr).collect();
    first_level.sort();
    assert_eq!(
        first_level,
        [ip("192.0.2.1"), ip("192.0.2.2"), ip("2001:db8::1")],
        "preference 10 first, in any order"
    );
    assert!(addrs[..3].iter().all(|a| a.preference == 10));
    assert_eq!(
        addrs[3],
        ResolvedAddress {
            name: "backup.example.com.".into(),
            addr: ip("192.0.2.3"),
            preference: 20
        }
    );
    assert_eq!(addrs.len(), 4, "gone.example.com has no address");
}

#[tokio::test]
async fn no_address_for_any_mx_host_is_an_error_listing_each_host() {
    let dns = dns(&["$ORIGIN dead.test.\n@ 300 MX 10 a.dead.test.\n@ 300 MX 20 b.dead.test.\n"]);
    let mx = dns.resolve_mx("dead.test", None).await.unwrap();
    let e = dns.mx_addresses(&mx).await.unwrap_err();
    assert_eq!(
        e.to_string(),
        "no address found for any MX host of dead.test: \
         DNS A/AAAA lookup for a.dead.test: the domain does not exist (NXDOMAIN); \
         DNS A/AAAA lookup for b.dead.test: the domain does not exist (NXDOMAIN)"
    );
}

#[tokio::test]
async fn a_null_mx_has_no_addresses_to_try() {
    let dns = dns(&["$ORIGIN nomail.test.\n@ 300 MX 0 .\n"]);
    let mx = dns.resolve_mx("nomail.test", None).await.unwrap();
    let e = dns.mx_addresses(&mx).await.unwrap_err();
    assert_eq!(
        e.to_string(),
        "nomail.test accepts no mail: it publishes a null MX (RFC 7505)"
    );
}

#[tokio::test]
async fn a_domain_without_mx_is_reached_at_its_own_addresses() {
    let dns = dns(&["$ORIGIN plain.test.\n@ 300 A 192.0.2.40\n"]);
    let mx = dns.resolve_mx("plain.test", None).await.unwrap();
    let addrs = dns.mx_addresses(&mx).await.unwrap();
    assert_eq!(addrs.len(), 1);
    assert_eq!(addrs[0].name, "plain.test.");
    assert_eq!(addrs[0].addr, ip("192.0.2.40"));
}

#[tokio::test]
async fn a_domain_literal_is_reached_at_its_address() {
    let dns = Dns::new(Some(Arc::new(Silent)));
    let mx = dns.resolve_mx("[IPv6:2001:db8::5]", None).await.unwrap();
    let addrs = dns.mx_addresses(&mx).await.unwrap();
    assert_eq!(addrs[0].addr, ip("2001:db8::5"));
}

#[tokio::test]
async fn txt_records_are_joined_per_record_and_nxdomain_is_an_error() {
    let name = format!("txt-test-{}", std::process::id());
    crate::global::define_resolver(&name, Arc::new(zones_resolver(&[SITE])));
    let txt = lookup_txt_via("text.example.com", Some(&name))
        .await
        .unwrap();
    assert_eq!(txt, ["part one, part two", "second record"]);
    let none = lookup_txt_via("mx1.example.com", Some(&name))
        .await
        .unwrap();
    assert!(none.is_empty(), "NODATA is an empty list");
    let e = lookup_txt_via("gone.example.com", Some(&name))
        .await
        .unwrap_err();
    assert!(matches!(e, DnsError::NxDomain { rtype: "TXT", .. }), "{e}");
    let e = lookup_txt_via("x.test", Some("no-such-resolver"))
        .await
        .unwrap_err();
    assert_eq!(e, DnsError::UnknownResolver("no-such-resolver".into()));
}
