//! The production resolver: hickory's caching stub resolver on tokio, with its
//! outcomes mapped onto [`Answer`] (NXDOMAIN, NODATA) and [`DnsError`]
//! (timeouts, server failures).

use std::time::{Duration, Instant};

use futures::future::BoxFuture;
use hickory_resolver::config::{ResolverConfig, ResolverOpts};
use hickory_resolver::net::runtime::TokioRuntimeProvider;
use hickory_resolver::net::{DnsError as HickoryDnsError, NetError};
use hickory_resolver::proto::op::ResponseCode;
use hickory_resolver::proto::rr::{Name, RecordType};
use hickory_resolver::TokioResolver;

use crate::error::DnsError;
use crate::resolver::{display_name, Answer, Resolver};
use crate::zone::DEFAULT_NEGATIVE_TTL;

pub struct HickoryResolver {
    inner: TokioResolver,
}

impl HickoryResolver {
    /// A resolver configured from the system (`/etc/resolv.conf`), KumoMTA's
    /// default.
    pub fn from_system() -> Result<Self, DnsError> {
        let builder = TokioResolver::builder_tokio().map_err(|e| {
            DnsError::Config(format!(
                "cannot read the system resolver configuration: {e}"
            ))
        })?;
        let inner = builder
            .build()
            .map_err(|e| DnsError::Config(format!("cannot build the system resolver: {e}")))?;
        Ok(HickoryResolver { inner })
    }

    pub fn from_config(config: ResolverConfig, options: ResolverOpts) -> Result<Self, DnsError> {
        let inner = TokioResolver::builder_with_config(config, TokioRuntimeProvider::default())
            .with_options(options)
            .build()
            .map_err(|e| DnsError::Config(format!("cannot build the resolver: {e}")))?;
        Ok(HickoryResolver { inner })
    }
}

impl Resolver for HickoryResolver {
    fn lookup<'a>(
        &'a self,
        name: &'a Name,
        rtype: RecordType,
    ) -> BoxFuture<'a, Result<Answer, DnsError>> {
        Box::pin(async move {
            let result = self.inner.lookup(name.clone(), rtype).await;
            tracing::trace!(%name, %rtype, ok = result.is_ok(), "hickory lookup");
            match result {
                Ok(lookup) => Ok(Answer {
                    // The answer section also holds the CNAME chain; keep the
                    // records that were asked for.
                    records: lookup
                        .answers()
                        .iter()
                        .filter(|r| r.record_type() == rtype)
                        .map(|r| r.data.clone())
                        .collect(),
                    nxdomain: false,
                    secure: false,
                    ttl: lookup
                        .valid_until()
                        .saturating_duration_since(Instant::now()),
                }),
                Err(err) => map_error(name, rtype, err),
            }
        })
    }
}

/// hickory reports NXDOMAIN and NODATA as errors; they are answers here.
fn map_error(name: &Name, rtype: RecordType, err: NetError) -> Result<Answer, DnsError> {
    let server_failure = |detail: String| DnsError::ServerFailure {
        name: display_name(name),
        rtype: rtype.into(),
        detail,
    };
    match err {
        NetError::Dns(HickoryDnsError::NoRecordsFound(no_records)) => {
            let ttl = no_records
                .negative_ttl
                .map_or(DEFAULT_NEGATIVE_TTL, |s| Duration::from_secs(s.into()));
            match no_records.response_code {
                ResponseCode::NXDomain => Ok(negative(true, ttl)),
                ResponseCode::NoError => Ok(negative(false, ttl)),
                code => Err(server_failure(describe_code(code))),
            }
        }
        NetError::Dns(HickoryDnsError::ResponseCode(code)) => {
            Err(server_failure(describe_code(code)))
        }
        NetError::Timeout => Err(DnsError::Timeout {
            name: display_name(name),
            rtype: rtype.into(),
        }),
        other => Err(server_failure(other.to_string())),
    }
}

fn negative(nxdomain: bool, ttl: Duration) -> Answer {
    Answer {
        records: Vec::new(),
        nxdomain,
        secure: false,
        ttl,
    }
}

/// `server failure (SERVFAIL)`: the words for people, the mnemonic for
/// searching.
fn describe_code(code: ResponseCode) -> String {
    let mnemonic = match code {
        ResponseCode::ServFail => "SERVFAIL",
        ResponseCode::Refused => "REFUSED",
        ResponseCode::FormErr => "FORMERR",
        ResponseCode::NotImp => "NOTIMP",
        ResponseCode::NXDomain => "NXDOMAIN",
        _ => return format!("response code {}", u16::from(code)),
    };
    format!("{} ({mnemonic})", code.to_str().to_lowercase())
}

#[cfg(test)]
mod tests {
    use super::*;
    use hickory_resolver::net::NoRecords;
    use hickory_resolver::proto::op::Query;

    fn name() -> Name {
        crate::resolver::fully_qualify("example.com").unwrap()
    }

    fn no_records(code: ResponseCode, negative_ttl: Option<u32>) -> NetError {
        let mut nr = NoRecords::new(Query::query(name(), RecordType::MX), code);
        nr.negative_ttl = negative_ttl;
        NetError::Dns(HickoryDnsError::NoRecordsFound(nr))
    }

    #[test]
    fn nxdomain_and_nodata_are_answers_with_the_negative_ttl() {
        let a = map_error(
            &name(),
            RecordType::MX,
            no_records(ResponseCode::NXDomain, Some(90)),
        )
        .unwrap();
        assert!(a.nxdomain);
        assert_eq!(a.ttl, Duration::from_secs(90));
        let a = map_error(
            &name(),
            RecordType::MX,
            no_records(ResponseCode::NoError, None),
        )
        .unwrap();
        assert!(!a.nxdomain && a.records.is_empty());
        assert_eq!(a.ttl, DEFAULT_NEGATIVE_TTL);
    }

    #[test]
    fn servfail_and_timeouts_are_errors_naming_the_domain() {
        let e = map_error(
            &name(),
            RecordType::MX,
            no_records(ResponseCode::ServFail, None),
        )
        .unwrap_err();
        assert_eq!(
            e.to_string(),
            "DNS MX lookup for example.com failed: server failure (SERVFAIL)"
        );
        let e = map_error(
            &name(),
            RecordType::MX,
            NetError::Dns(HickoryDnsError::ResponseCode(ResponseCode::Refused)),
        )
        .unwrap_err();
        assert!(e.to_string().ends_with("(REFUSED)"), "{e}");
        let e = map_error(&name(), RecordType::A, NetError::Timeout).unwrap_err();
        assert_eq!(
            e,
            DnsError::Timeout {
                name: "example.com".into(),
                rtype: "A"
            }
        );
    }
}
