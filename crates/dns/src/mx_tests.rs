use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use super::*;
use crate::global::{DEFAULT_MX_NEGATIVE_CACHE_TTL, DEFAULT_MX_TIMEOUT};
use crate::test_support::{dns, zones_resolver, Silent, Switchable};

const GMAIL: &str = r#"
$ORIGIN gmail.com.
@ 3600 MX 30 alt3.gmail-smtp-in.l.google.com.
@ 3600 MX 5 gmail-smtp-in.l.google.com.
@ 3600 MX 10 alt1.gmail-smtp-in.l.google.com.
@ 3600 MX 40 alt4.gmail-smtp-in.l.google.com.
@ 3600 MX 20 alt2.gmail-smtp-in.l.google.com.
"#;

fn strings(list: &[&str]) -> Vec<String> {
    list.iter().map(|s| s.to_string()).collect()
}

#[tokio::test]
async fn mx_hosts_come_in_preference_order_and_sorted_within_a_preference() {
    let dns = dns(&["$ORIGIN example.com.
@ 300 MX 20 b.example.com.
@ 300 MX 10 z.example.com.
@ 300 MX 10 A.example.com.
@ 300 MX 30 c.example.com.
"]);
    let mx = dns.resolve_mx("Example.COM", None).await.unwrap();
    assert_eq!(
        mx.hosts,
        strings(&[
            "a.example.com.",
            "z.example.com.",
            "b.example.com.",
            "c.example.com."
        ])
    );
    assert_eq!(
        mx.by_pref,
        BTreeMap::from([
            (10, strings(&["a.example.com.", "z.example.com."])),
            (20, strings(&["b.example.com."])),
            (30, strings(&["c.example.com."])),
        ])
    );
    assert_eq!(mx.domain_name, "example.com.");
    assert!(mx.is_mx && !mx.is_domain_literal && !mx.is_secure && !mx.is_null_mx());
}

#[tokio::test]
async fn a_gmail_style_mx_set_gives_kumomtas_site_name() {
    let mx = dns(&[GMAIL]).resolve_mx("gmail.com", None).await.unwrap();
    assert_eq!(
        mx.site_name,
        "(alt1|alt2|alt3|alt4)?.gmail-smtp-in.l.google.com"
    );
    assert_eq!(mx.hosts[0], "gmail-smtp-in.l.google.com.");
    assert_eq!(
        mx.by_pref.keys().copied().collect::<Vec<_>>(),
        [5, 10, 20, 30, 40]
    );
}

#[tokio::test]
async fn domains_sharing_mx_hosts_resolve_to_the_same_site() {
    let shared = |origin: &str| {
        format!(
            "$ORIGIN {origin}\n@ 300 MX 1 aspmx.l.google.com.\n\
             @ 300 MX 5 alt1.aspmx.l.google.com.\n@ 300 MX 5 alt2.aspmx.l.google.com.\n"
        )
    };
    let (a, b) = (shared("one.test."), shared("two.test."));
    let other = "$ORIGIN three.test.\n@ 300 MX 0 three-test.mail.protection.outlook.com.\n";
    let dns = dns(&[&a, &b, other]);
    let one = dns.resolve_mx("one.test", None).await.unwrap();
    let two = dns.resolve_mx("two.test", None).await.unwrap();
    let three = dns.resolve_mx("three.test", None).await.unwrap();
    assert_eq!(one.site_name, "(alt1|alt2)?.aspmx.l.google.com");
    assert_eq!(one.site_name, two.site_name);
    assert_ne!(one.site_name, three.site_name);
    assert_eq!(three.site_name, "three-test.mail.protection.outlook.com");
}

#[tokio::test]
async fn a_null_mx_is_reported_with_an_empty_site_name() {
    let mx = dns(&["$ORIGIN nomail.test.\n@ 3600 MX 0 .\n"])
        .resolve_mx("nomail.test", None)
        .await
        .unwrap();
    assert!(mx.is_null_mx());
    assert_eq!(mx.hosts, strings(&["."]));
    assert_eq!(mx.site_name, "");
    assert!(mx.is_mx);
}

#[tokio::test]
async fn a_domain_without_mx_records_is_its_own_single_host() {
    let mx = dns(&["$ORIGIN example.com.\nwww 300 A 192.0.2.1\n"])
        .resolve_mx("www.example.com", None)
        .await
        .unwrap();
    assert!(!mx.is_mx);
    assert_eq!(mx.hosts, strings(&["www.example.com."]));
    assert_eq!(
        mx.by_pref,
        BTreeMap::from([(1, strings(&["www.example.com."]))])
    );
    assert_eq!(mx.site_name, "www.example.com");
}

#[tokio::test]
async fn nxdomain_is_an_error_not_a_fallback_to_the_domain() {
    let e = dns(&["$ORIGIN example.com.\nwww 300 A 192.0.2.1\n"])
        .resolve_mx("nobody.example.com", None)
        .await
        .unwrap_err();
    assert_eq!(
        e,
        DnsError::NxDomain {
            name: "nobody.example.com".into(),
            rtype: "MX"
        }
    );
}

#[tokio::test]
async fn a_servfail_is_a_server_failure_naming_the_domain() {
    let resolver = zones_resolver(&[]).with_servfail("broken.test").unwrap();
    let dns = Dns::new(Some(Arc::new(resolver)));
    let e = dns.resolve_mx("broken.test", None).await.unwrap_err();
    assert!(e.is_temporary());
    assert_eq!(
        e.to_string(),
        "DNS MX lookup for broken.test failed: server failure (SERVFAIL)"
    );
}

#[tokio::test]
async fn domain_literals_resolve_to_themselves_without_dns() {
    // A silent resolver: any query would hang the test.
    let dns = Dns::new(Some(Arc::new(Silent)));
    let v4 = dns.resolve_mx("[192.0.2.7]", None).await.unwrap();
    assert_eq!(v4.domain_name, "[192.0.2.7]");
    assert_eq!(v4.hosts, strings(&["192.0.2.7"]));
    assert_eq!(v4.site_name, "192.0.2.7");
    assert_eq!(v4.by_pref, BTreeMap::from([(1, strings(&["192.0.2.7"]))]));
    assert!(v4.is_domain_literal && !v4.is_mx && v4.expires().is_none());
    let v6 = dns.resolve_mx("[IPv6:2001:DB8::1]", None).await.unwrap();
    assert_eq!(v6.hosts, strings(&["2001:db8::1"]));
    let untagged = dns.resolve_mx("[::1]", None).await.unwrap();
    assert_eq!(untagged.site_name, "::1");
}

#[tokio::test]
async fn malformed_domain_literals_are_invalid_names() {
    let dns = Dns::new(Some(Arc::new(Silent)));
    for bad in ["[192.0.2.7", "[mail.example.com]", "[IPv6:192.0.2.1]"] {
        let e = dns.resolve_mx(bad, None).await.unwrap_err();
        assert!(matches!(e, DnsError::InvalidName { .. }), "{bad}: {e}");
    }
}

#[tokio::test(start_paused = true)]
async fn an_mx_answer_is_cached_for_its_ttl_then_looked_up_again() {
    let zone = |host: &str| format!("$ORIGIN ttl.test.\n@ 60 MX 10 {host}.ttl.test.\n");
    let dns_zones = Switchable::new(&[&zone("old")]);
    let dns = Dns::new(Some(dns_zones.clone()));
    let first = dns.resolve_mx("ttl.test", None).await.unwrap();
    assert_eq!(first.hosts, strings(&["old.ttl.test."]));

    dns_zones.switch(&[&zone("new")]);
    tokio::time::advance(Duration::from_secs(59)).await;
    let cached = dns.resolve_mx("ttl.test", None).await.unwrap();
    assert_eq!(cached.hosts, strings(&["old.ttl.test."]), "within the TTL");
    assert!(!cached.has_expired());
    assert_eq!(dns_zones.queries(), 1);

    tokio::time::advance(Duration::from_secs(2)).await;
    assert!(cached.has_expired());
    let fresh = dns.resolve_mx("ttl.test", None).await.unwrap();
    assert_eq!(fresh.hosts, strings(&["new.ttl.test."]), "after the TTL");
    assert_eq!(dns_zones.queries(), 2);
}

#[tokio::test(start_paused = true)]
async fn a_zero_ttl_mx_answer_is_still_cached_for_ten_seconds() {
    let zones = Switchable::new(&["$ORIGIN zero.test.\n@ 0 MX 10 mx.zero.test.\n"]);
    let dns = Dns::new(Some(zones.clone()));
    dns.resolve_mx("zero.test", None).await.unwrap();
    tokio::time::advance(Duration::from_secs(9)).await;
    dns.resolve_mx("zero.test", None).await.unwrap();
    assert_eq!(zones.queries(), 1);
    tokio::time::advance(Duration::from_secs(2)).await;
    dns.resolve_mx("zero.test", None).await.unwrap();
    assert_eq!(zones.queries(), 2);
}

#[tokio::test(start_paused = true)]
async fn a_failed_resolution_is_remembered_for_the_negative_cache_ttl() {
    let zones = Switchable::new(&[]);
    let dns = Dns::new(Some(zones.clone()));
    dns.set_mx_negative_ttl(Duration::from_secs(30));
    let e = dns.resolve_mx("late.test", None).await.unwrap_err();
    assert!(matches!(e, DnsError::NxDomain { .. }));

    zones.switch(&["$ORIGIN late.test.\n@ 300 MX 10 mx.late.test.\n"]);
    tokio::time::advance(Duration::from_secs(29)).await;
    let still = dns.resolve_mx("late.test", None).await.unwrap_err();
    assert_eq!(still, e, "the failure is served from the negative cache");

    tokio::time::advance(Duration::from_secs(2)).await;
    let mx = dns.resolve_mx("late.test", None).await.unwrap();
    assert_eq!(mx.hosts, strings(&["mx.late.test."]));
}

#[tokio::test(start_paused = true)]
async fn the_mx_timeout_bounds_a_lookup_that_never_answers() {
    let dns = Dns::new(Some(Arc::new(Silent)));
    dns.set_mx_timeout(Duration::from_secs(2));
    let started = Instant::now();
    let e = dns.resolve_mx("slow.test", None).await.unwrap_err();
    assert_eq!(started.elapsed(), Duration::from_secs(2));
    assert_eq!(e.to_string(), "DNS MX lookup for slow.test timed out");
    assert!(e.is_temporary());
}

#[tokio::test]
async fn the_defaults_are_kumomtas_five_seconds_and_five_minutes() {
    let dns = Dns::new(Some(Arc::new(Silent)));
    assert_eq!(dns.mx_timeout(), DEFAULT_MX_TIMEOUT);
    assert_eq!(DEFAULT_MX_TIMEOUT, Duration::from_secs(5));
    assert_eq!(dns.mx_negative_ttl(), DEFAULT_MX_NEGATIVE_CACHE_TTL);
    assert_eq!(DEFAULT_MX_NEGATIVE_CACHE_TTL, Duration::from_secs(300));
}

#[tokio::test]
async fn an_explicit_resolver_bypasses_the_cache() {
    let zones = Switchable::new(&["$ORIGIN via.test.\n@ 300 MX 10 mx.via.test.\n"]);
    let dns = Dns::new(Some(Arc::new(Silent)));
    for _ in 0..2 {
        let mx = dns
            .resolve_mx("via.test", Some(zones.clone()))
            .await
            .unwrap();
        assert_eq!(mx.hosts, strings(&["mx.via.test."]));
    }
    assert_eq!(zones.queries(), 2);
    assert_eq!(dns.mx_cache.len(), 0);
}

#[tokio::test]
async fn replacing_the_resolver_forgets_cached_answers() {
    let dns = dns(&["$ORIGIN swap.test.\n@ 300 MX 10 old.swap.test.\n"]);
    dns.resolve_mx("swap.test", None).await.unwrap();
    dns.set_resolver(Arc::new(zones_resolver(&[
        "$ORIGIN swap.test.\n@ 300 MX 10 new.swap.test.\n",
    ])));
    let mx = dns.resolve_mx("swap.test", None).await.unwrap();
    assert_eq!(mx.hosts, strings(&["new.swap.test."]));
}
