//! The parameter table of `kumo.dkim.rsa_sha256_signer` and `kumo.dkim.ed25519_signer`, with
//! KumoMTA's names and defaults, decoded strictly: a key not listed here is refused.

use std::time::Duration;

use hermod_policy::KeySource;
use serde::Deserialize;

/// KumoMTA's default lifetime of a cached signer (and of its loaded key).
pub const DEFAULT_TTL: Duration = Duration::from_secs(300);

/// Longest signature lifetime accepted: 100 years, in seconds.
const MAX_EXPIRATION: u64 = 100 * 365 * 86_400;

/// How header fields or the body are canonicalized (RFC 6376 section 3.4). KumoMTA spells the
/// values `"Relaxed"` and `"Simple"`; both are accepted, and so are the lower-case names the
/// `c=` tag uses, which a policy author may well write.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, Deserialize)]
pub enum Canon {
    #[default]
    #[serde(alias = "relaxed")]
    Relaxed,
    #[serde(alias = "simple")]
    Simple,
}

/// The `atpsh=` hash (RFC 6541), spelled as in KumoMTA.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Deserialize)]
pub enum AtpsHash {
    Sha1,
    Sha256,
}

/// Everything a signer is made from. It is also the signer cache's key, so two calls with the
/// same table share one signer (and one parsed key).
#[derive(Debug, Clone, PartialEq, Eq, Hash, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SignerParams {
    /// `d=`: the signing domain.
    pub domain: String,
    /// `s=`: the selector; the public key is at `<selector>._domainkey.<domain>`.
    pub selector: String,
    /// The header fields to sign; must include `From` (RFC 6376 section 5.4).
    pub headers: Vec<String>,
    /// `atps=` (RFC 6541): the author domain of an authorized third-party signature.
    #[serde(default)]
    pub atps: Option<String>,
    /// `atpsh=`: the hash of `d=` a verifier uses in the ATPS query; written with `atps` only.
    #[serde(default)]
    pub atpsh: Option<AtpsHash>,
    /// `i=`: the agent or user identifier; its domain must be `domain` or below it.
    #[serde(default)]
    pub agent_user_identifier: Option<String>,
    /// Seconds from the signing time until the signature expires (`x=`).
    #[serde(default)]
    pub expiration: Option<u64>,
    /// Whether to write the body length (`l=`).
    #[serde(default)]
    pub body_length: bool,
    /// Whether to ask verifiers for failure reports (`r=y`).
    #[serde(default)]
    pub reporting: bool,
    #[serde(default)]
    pub header_canonicalization: Canon,
    #[serde(default)]
    pub body_canonicalization: Canon,
    /// The private key: a file path or `{ key_data = '...' }`.
    pub key: KeySource,
    /// Sign each listed header once more than the message has it, so that no instance can be
    /// added later without breaking the signature.
    #[serde(default)]
    pub over_sign: bool,
    /// How long the signer (and its key) stay cached: seconds or a duration string.
    #[serde(
        default = "default_ttl",
        deserialize_with = "hermod_policy::duration::deserialize"
    )]
    pub ttl: Duration,
}

fn default_ttl() -> Duration {
    DEFAULT_TTL
}

impl SignerParams {
    /// The checks serde cannot express. Each message names the parameter; values that end up
    /// in the `DKIM-Signature` field must not be able to break its tag list.
    pub fn validate(&self) -> Result<(), String> {
        tag_value("domain", &self.domain)?;
        tag_value("selector", &self.selector)?;
        if let Some(atps) = &self.atps {
            tag_value("atps", atps)?;
        }
        if let Some(auid) = &self.agent_user_identifier {
            tag_value("agent_user_identifier", auid)?;
            let auid_domain = auid.rsplit_once('@').map_or(auid.as_str(), |(_, d)| d);
            if !is_same_or_subdomain(auid_domain, &self.domain) {
                return Err(format!(
                    "agent_user_identifier '{auid}' must be in the signing domain '{}' or below \
                     it (RFC 6376 section 3.5)",
                    self.domain
                ));
            }
        }
        if self.atpsh.is_some() && self.atps.is_none() {
            return Err("atpsh is only meaningful together with atps".to_string());
        }
        if self.headers.is_empty() {
            return Err("headers must list at least 'From'".to_string());
        }
        for h in &self.headers {
            if h.is_empty() || !h.bytes().all(|b| (33..=126).contains(&b) && b != b':') {
                return Err(format!("headers: {h:?} is not a header field name"));
            }
        }
        if !self.headers.iter().any(|h| h.eq_ignore_ascii_case("from")) {
            return Err(
                "headers must include 'From' (RFC 6376 section 5.4 requires signing it)"
                    .to_string(),
            );
        }
        match self.expiration {
            Some(0) => return Err("expiration must be at least 1 second".to_string()),
            // mail-auth adds it to the signing time; a century is more than any real use.
            Some(x) if x > MAX_EXPIRATION => {
                return Err(format!(
                    "expiration must be at most {MAX_EXPIRATION} seconds"
                ))
            }
            _ => {}
        }
        Ok(())
    }
}

/// A value written into a tag of the signature: not empty, and free of what would end the tag
/// or the field (RFC 6376's tag values exclude `;` and may not hold bare whitespace).
fn tag_value(name: &str, value: &str) -> Result<(), String> {
    if value.is_empty() {
        return Err(format!("{name} must not be empty"));
    }
    if value
        .chars()
        .any(|c| c == ';' || c.is_whitespace() || c.is_control())
    {
        return Err(format!(
            "{name} {value:?} contains a character a DKIM tag value cannot hold"
        ));
    }
    Ok(())
}

fn is_same_or_subdomain(candidate: &str, domain: &str) -> bool {
    let (c, d) = (candidate.to_ascii_lowercase(), domain.to_ascii_lowercase());
    c == d || c.ends_with(&format!(".{d}"))
}
