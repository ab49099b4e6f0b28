//! The errors of name resolution, typed so that delivery can pick the right
//! outcome (retry, bounce) and written so that their text reads well at the end
//! of a `451 4.4.4 ...` or `556 5.1.10 ...` log record.

/// Why a lookup produced no usable answer.
///
/// `Clone` because failed MX resolutions are cached (the negative cache) and
/// handed to every caller until they expire.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DnsError {
    /// The name cannot be a DNS name or address literal; no query was sent.
    #[error("invalid domain name {name:?}: {reason}")]
    InvalidName { name: String, reason: String },

    /// No answer within the time limit (`set_mx_timeout` for MX lookups, the
    /// resolver's own timeout otherwise).
    #[error("DNS {rtype} lookup for {name} timed out")]
    Timeout { name: String, rtype: &'static str },

    /// The server answered with a failure (SERVFAIL, REFUSED, ...) or could not
    /// be reached; `detail` says which.
    #[error("DNS {rtype} lookup for {name} failed: {detail}")]
    ServerFailure {
        name: String,
        rtype: &'static str,
        detail: String,
    },

    /// The name does not exist at all.
    #[error("DNS {rtype} lookup for {name}: the domain does not exist (NXDOMAIN)")]
    NxDomain { name: String, rtype: &'static str },

    /// The name exists but has no records of the type asked for (NODATA).
    #[error("DNS {rtype} lookup for {name}: no {rtype} records")]
    NoRecords { name: String, rtype: &'static str },

    /// The domain publishes a null MX (RFC 7505): it accepts no mail.
    #[error("{domain} accepts no mail: it publishes a null MX (RFC 7505)")]
    NullMx { domain: String },

    /// None of the domain's MX hosts has an address; `detail` lists why, host
    /// by host.
    #[error("no address found for any MX host of {domain}: {detail}")]
    NoAddresses { domain: String, detail: String },

    /// A lookup named a resolver that `define_resolver` never defined.
    #[error("resolver {0:?} is not defined (see kumo.dns.define_resolver)")]
    UnknownResolver(String),

    /// A resolver could not be built from its configuration (bad zone text,
    /// bad name server address, unsupported option, unreadable resolv.conf).
    #[error("invalid resolver configuration: {0}")]
    Config(String),
}

impl DnsError {
    /// True for failures that may go away on a later attempt (timeouts and
    /// server failures), as opposed to answers about the domain itself.
    pub fn is_temporary(&self) -> bool {
        matches!(
            self,
            DnsError::Timeout { .. } | DnsError::ServerFailure { .. }
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn error_texts_name_the_domain_and_the_cause() {
        let e = DnsError::ServerFailure {
            name: "example.com".into(),
            rtype: "MX",
            detail: "server failure (SERVFAIL)".into(),
        };
        assert_eq!(
            e.to_string(),
            "DNS MX lookup for example.com failed: server failure (SERVFAIL)"
        );
        let e = DnsError::Timeout {
            name: "example.com".into(),
            rtype: "MX",
        };
        assert_eq!(e.to_string(), "DNS MX lookup for example.com timed out");
        assert!(e.is_temporary());
        let e = DnsError::NxDomain {
            name: "nope.example".into(),
            rtype: "MX",
        };
        assert_eq!(
            e.to_string(),
            "DNS MX lookup for nope.example: the domain does not exist (NXDOMAIN)"
        );
        assert!(!e.is_temporary());
    }
}
