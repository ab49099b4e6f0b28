//! The resolver abstraction every lookup goes through, and how names are
//! normalised before they reach it.

use std::time::Duration;

use futures::future::BoxFuture;
use hickory_resolver::proto::rr::{Name, RData, RecordType};

use crate::error::DnsError;

/// One answer to one question (name, type). NXDOMAIN and NODATA are answers,
/// not errors: they are facts about the domain that can be cached, whereas
/// [`DnsError::Timeout`] and [`DnsError::ServerFailure`] are not.
#[derive(Debug, Clone)]
pub struct Answer {
    /// The records of the type asked for (CNAMEs already followed).
    pub records: Vec<RData>,
    /// True when the name does not exist at all.
    pub nxdomain: bool,
    /// True when the answer was DNSSEC-validated.
    pub secure: bool,
    /// How long the answer may be cached (the records' TTL, or the negative
    /// TTL for NXDOMAIN/NODATA).
    pub ttl: Duration,
}

/// A source of DNS answers: the hickory resolver in production, zone text in
/// tests. Implementations report only timeouts and server failures as errors.
pub trait Resolver: Send + Sync + 'static {
    fn lookup<'a>(
        &'a self,
        name: &'a Name,
        rtype: RecordType,
    ) -> BoxFuture<'a, Result<Answer, DnsError>>;
}

/// The default resolver when the system configuration could not be read: every
/// lookup fails with the reason, so a host without `/etc/resolv.conf` still
/// starts and says why delivery cannot resolve names.
pub(crate) struct Unavailable(pub String);

impl Resolver for Unavailable {
    fn lookup<'a>(
        &'a self,
        name: &'a Name,
        rtype: RecordType,
    ) -> BoxFuture<'a, Result<Answer, DnsError>> {
        Box::pin(async move {
            Err(DnsError::ServerFailure {
                name: display_name(name),
                rtype: rtype.into(),
                detail: self.0.clone(),
            })
        })
    }
}

/// `domain` as a lowercase, fully qualified DNS name (`Example.COM` →
/// `example.com.`), so that relative-name search rules never apply and cache
/// keys do not depend on case. Internationalised names become punycode.
pub fn fully_qualify(domain: &str) -> Result<Name, DnsError> {
    let invalid = |reason: String| DnsError::InvalidName {
        name: domain.to_string(),
        reason,
    };
    if domain.trim().is_empty() {
        return Err(invalid("empty name".to_string()));
    }
    let mut name = Name::from_str_relaxed(domain)
        .map_err(|e| invalid(e.to_string()))?
        .to_lowercase();
    name.set_fqdn(true);
    Ok(name)
}

/// A name as error texts show it: without the trailing root dot.
pub(crate) fn display_name(name: &Name) -> String {
    let text = name.to_ascii();
    match text.strip_suffix('.') {
        Some(t) if !t.is_empty() => t.to_string(),
        _ => text,
    }
}

/// The records of `answer` as text: each TXT record's character-strings
/// joined, as KumoMTA's `lookup_txt` returns them.
pub(crate) fn txt_strings(answer: &Answer) -> Vec<String> {
    answer
        .records
        .iter()
        .filter_map(|r| match r {
            RData::TXT(txt) => Some(
                txt.txt_data
                    .iter()
                    .map(|part| String::from_utf8_lossy(part))
                    .collect::<String>(),
            ),
            _ => None,
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_lowercased_and_fully_qualified() {
        let name = fully_qualify("Mail.Example.COM").unwrap();
        assert_eq!(name.to_ascii(), "mail.example.com.");
        assert_eq!(display_name(&name), "mail.example.com");
        assert_eq!(
            fully_qualify("example.com.").unwrap().to_ascii(),
            "example.com."
        );
    }

    #[test]
    fn unicode_names_become_punycode() {
        let name = fully_qualify("bücher.at").unwrap();
        assert_eq!(name.to_ascii(), "xn--bcher-kva.at.");
    }

    #[test]
    fn empty_and_malformed_names_are_refused() {
        assert!(matches!(
            fully_qualify(""),
            Err(DnsError::InvalidName { .. })
        ));
        let e = fully_qualify("a..b").unwrap_err();
        assert!(
            e.to_string().starts_with("invalid domain name \"a..b\""),
            "{e}"
        );
    }
}
