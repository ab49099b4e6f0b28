//! The site name: one compact string derived from a domain's MX host list, so
//! that domains served by the same MX hosts share a ready queue (and its
//! connection limits), as KumoMTA does.
//!
//! The rule, KumoMTA's: lowercase each host, split it into labels and align
//! the lists from the right (the TLD end). At each position collect the
//! distinct labels in first-seen order; one label is written as is, several
//! as `(a|b)`, and a `?` follows when some host has no label at that position.
//! The positions are joined with dots, without the root dot. A `:port` suffix
//! stays glued to the last label. Host order matters: the same hosts in a
//! different order give a different site name.

use std::collections::VecDeque;

/// The site name for `hosts` (MX host names in preference order).
pub fn site_name<S: AsRef<str>>(hosts: &[S]) -> String {
    // Label lists reversed so index 0 is the TLD for every host.
    let mut reversed: Vec<Vec<String>> = Vec::with_capacity(hosts.len());
    for host in hosts {
        let (host, port) = split_port(host.as_ref());
        let Ok(name) = crate::resolver::fully_qualify(host) else {
            // A host that is no DNS name takes no part, as in KumoMTA.
            continue;
        };
        let mut labels: Vec<String> = name
            .iter()
            .map(|l| String::from_utf8_lossy(l).to_string())
            .collect();
        if let (Some(port), Some(last)) = (port, labels.last_mut()) {
            last.push(':');
            last.push_str(port);
        }
        labels.reverse();
        reversed.push(labels);
    }

    let depth = reversed.iter().map(Vec::len).max().unwrap_or(0);
    let mut parts = VecDeque::with_capacity(depth);
    for position in 0..depth {
        let mut distinct: Vec<&str> = Vec::new();
        let mut some_missing = false;
        for labels in &reversed {
            match labels.get(position) {
                Some(label) if !distinct.contains(&label.as_str()) => distinct.push(label),
                Some(_) => {}
                None => some_missing = true,
            }
        }
        let mut part = match distinct.as_slice() {
            [one] => one.to_string(),
            many => format!("({})", many.join("|")),
        };
        if some_missing {
            part.push('?');
        }
        parts.push_front(part);
    }
    Vec::from(parts).join(".")
}

/// `host:port` → (`host`, `port`) when the suffix is a port number; IPv6
/// addresses (more than one colon) are left whole.
fn split_port(host: &str) -> (&str, Option<&str>) {
    match host.rsplit_once(':') {
        Some((name, port)) if !name.contains(':') && port.parse::<u16>().is_ok() => {
            (name, Some(port))
        }
        _ => (host, None),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hosts_differing_in_one_label_become_an_alternation() {
        assert_eq!(
            site_name(&[
                "mta5.am0.yahoodns.net",
                "mta6.am0.yahoodns.net",
                "mta7.am0.yahoodns.net"
            ]),
            "(mta5|mta6|mta7).am0.yahoodns.net"
        );
    }

    #[test]
    fn case_and_the_root_dot_do_not_change_the_site_name() {
        assert_eq!(
            site_name(&[
                "mta5.AM0.yahoodns.net.",
                "mta6.am0.yAHOodns.net",
                "mta7.am0.yahoodns.net"
            ]),
            "(mta5|mta6|mta7).am0.yahoodns.net"
        );
    }

    #[test]
    fn a_gmail_style_set_marks_the_optional_leading_label() {
        assert_eq!(
            site_name(&[
                "gmail-smtp-in.l.google.com.",
                "alt1.gmail-smtp-in.l.google.com.",
                "alt2.gmail-smtp-in.l.google.com.",
                "alt3.gmail-smtp-in.l.google.com.",
                "alt4.gmail-smtp-in.l.google.com.",
            ]),
            "(alt1|alt2|alt3|alt4)?.gmail-smtp-in.l.google.com"
        );
    }

    #[test]
    fn domains_sharing_their_mx_hosts_share_a_site() {
        // Two Google Workspace customers publish the same MX set.
        let workspace = [
            "aspmx.l.google.com.",
            "alt1.aspmx.l.google.com.",
            "alt2.aspmx.l.google.com.",
        ];
        let customer_a = site_name(&workspace);
        let customer_b = site_name(&workspace.map(str::to_uppercase));
        assert_eq!(customer_a, "(alt1|alt2)?.aspmx.l.google.com");
        assert_eq!(customer_a, customer_b);
        // A Microsoft 365 tenant is a different site.
        assert_ne!(
            customer_a,
            site_name(&["example-com.mail.protection.outlook.com."])
        );
    }

    #[test]
    fn a_single_host_is_its_own_site_name() {
        assert_eq!(site_name(&["mx.example.com."]), "mx.example.com");
    }

    #[test]
    fn the_same_hosts_in_another_order_are_another_site() {
        assert_eq!(
            site_name(&[
                "example-com.mail.protection.outlook.com.",
                "mx-biz.mail.am0.yahoodns.net.",
                "mx-biz.mail.am0.yahoodns.net.",
            ]),
            "(example-com|mx-biz).mail.(protection|am0).(outlook|yahoodns).(com|net)"
        );
        assert_eq!(
            site_name(&[
                "mx-biz.mail.am0.yahoodns.net.",
                "mx-biz.mail.am0.yahoodns.net.",
                "example-com.mail.protection.outlook.com.",
            ]),
            "(mx-biz|example-com).mail.(am0|protection).(yahoodns|outlook).(net|com)"
        );
    }

    #[test]
    fn a_port_stays_with_the_last_label() {
        assert_eq!(
            site_name(&["mta5.am0.yahoodns.net:123", "mta6.am0.yahoodns.net:123",]),
            "(mta5|mta6).am0.yahoodns.net:123"
        );
        assert_eq!(
            site_name(&["mta5.am0.yahoodns.net:123", "mta6.am0.yahoodns.net:456",]),
            "(mta5|mta6).am0.yahoodns.(net:123|net:456)"
        );
    }

    #[test]
    fn a_null_mx_has_an_empty_site_name() {
        assert_eq!(site_name(&["."]), "");
        assert_eq!(site_name::<&str>(&[]), "");
    }
}
