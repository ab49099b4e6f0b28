//! A configured signer: parameters plus a parsed key, and the signing of one message.

use hermod_message::SignMessage;
use hermod_policy::errors::located;
use mail_auth::common::crypto::HashAlgorithm;
use mail_auth::common::headers::HeaderWriter;
use mail_auth::dkim::{Canonicalization, DkimSigner};
use mlua::Lua;

use crate::key::SharedKey;
use crate::params::{AtpsHash, Canon, SignerParams};

/// Why a message could not be signed.
#[derive(Debug, thiserror::Error)]
pub enum SignError {
    #[error("signing failed: {0}")]
    Sign(#[from] mail_auth::Error),
    /// mail-auth wrote a header this code does not recognise; a bug, not bad input.
    #[error("the signature header has an unexpected form")]
    HeaderForm,
}

pub struct Signer {
    params: SignerParams,
    key: SharedKey,
}

impl Signer {
    /// `params` must have passed [`SignerParams::validate`].
    pub fn new(params: SignerParams, key: SharedKey) -> Self {
        Self { params, key }
    }

    /// The `DKIM-Signature` field value for `message`, folded, without the name and the final
    /// CRLF: what `prepend_header("DKIM-Signature", value)` writes back byte for byte, which
    /// "simple" header canonicalization requires.
    pub fn sign(&self, message: &[u8]) -> Result<String, SignError> {
        let p = &self.params;
        let headers = if p.over_sign {
            over_signed(&p.headers, message)
        } else {
            p.headers.clone()
        };
        // mail-auth's builder is cheap (a template of strings); building it per message lets
        // the header list follow the message when over-signing.
        let mut signer = DkimSigner::from_key(self.key.clone())
            .domain(p.domain.clone())
            .selector(p.selector.clone())
            .headers(headers)
            .header_canonicalization(canon(p.header_canonicalization))
            .body_canonicalization(canon(p.body_canonicalization))
            .body_length(p.body_length)
            .reporting(p.reporting);
        if let Some(atps) = &p.atps {
            signer = signer.atps(atps.clone());
        }
        if let Some(h) = p.atpsh {
            signer = signer.atpsh(match h {
                AtpsHash::Sha1 => HashAlgorithm::Sha1,
                AtpsHash::Sha256 => HashAlgorithm::Sha256,
            });
        }
        if let Some(auid) = &p.agent_user_identifier {
            signer = signer.agent_user_identifier(auid.clone());
        }
        if let Some(secs) = p.expiration {
            signer = signer.expiration(secs);
        }
        let header = signer.sign(message)?.to_header();
        header
            .strip_prefix("DKIM-Signature: ")
            .and_then(|v| v.strip_suffix("\r\n"))
            .map(str::to_string)
            .ok_or(SignError::HeaderForm)
    }
}

impl SignMessage for Signer {
    fn dkim_signature(&self, lua: &Lua, message: &[u8]) -> mlua::Result<String> {
        self.sign(message)
            .map_err(|e| located(lua, format!("dkim_sign: {e}")))
    }

    fn describe(&self) -> String {
        format!(
            "DkimSigner({} d={} s={})",
            self.key.algorithm_name(),
            self.params.domain,
            self.params.selector
        )
    }
}

fn canon(c: Canon) -> Canonicalization {
    match c {
        Canon::Relaxed => Canonicalization::Relaxed,
        Canon::Simple => Canonicalization::Simple,
    }
}

/// The header list for over-signing: each listed name that the message has is listed twice.
///
/// mail-auth signs every instance of a listed header and then, for each entry of the list it
/// found no instance for, appends the name once more (that signs "no further instance"). So a
/// name listed twice comes out as its N instances plus one: KumoMTA's N+1. A name the message
/// lacks stays listed once, which already forbids adding it. Repeated names are listed once,
/// since every instance is signed anyway.
fn over_signed(listed: &[String], message: &[u8]) -> Vec<String> {
    let present = header_names(message);
    let mut out: Vec<String> = Vec::with_capacity(listed.len() * 2);
    for name in listed {
        if out.iter().any(|o| o.eq_ignore_ascii_case(name)) {
            continue;
        }
        out.push(name.clone());
        if present
            .iter()
            .any(|p| p.eq_ignore_ascii_case(name.as_bytes()))
        {
            out.push(name.clone());
        }
    }
    out
}

/// The names of the header fields of `message`, up to the blank line that ends them.
fn header_names(message: &[u8]) -> Vec<&[u8]> {
    let mut names = Vec::new();
    for line in message.split(|&b| b == b'\n') {
        let line = line.strip_suffix(b"\r").unwrap_or(line);
        match line.first() {
            None => break,
            // A continuation line of the field before.
            Some(b' ' | b'\t') => continue,
            Some(_) => {
                if let Some(colon) = line.iter().position(|&b| b == b':') {
                    names.push(line[..colon].trim_ascii_end());
                }
            }
        }
    }
    names
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn over_signing_lists_present_headers_twice_and_absent_ones_once() {
        let msg = b"From: a@example.com\r\nTo: b@example.com\r\n\tcontinued\r\nSubject : x\r\n\r\nTo: not a header\r\n";
        let listed = ["From", "to", "Subject", "Cc", "from"].map(String::from);
        assert_eq!(
            over_signed(&listed, msg),
            ["From", "From", "to", "to", "Subject", "Subject", "Cc"]
        );
    }

    #[test]
    fn header_names_stop_at_the_blank_line() {
        let names = header_names(b"A: 1\nB:2\n folded\n\nC: 3\n");
        assert_eq!(names, [&b"A"[..], &b"B"[..]]);
    }
}
