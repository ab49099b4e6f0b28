//! Turning a key source's bytes into a signing key.
//!
//! Both constructors take RSA and Ed25519 keys alike and the key decides the algorithm, as in
//! KumoMTA (its two functions share one loader), so a KumoMTA policy runs unchanged. Accepted:
//! PEM or DER, PKCS#1 (`RSA PRIVATE KEY`, RSA only) or PKCS#8 (`PRIVATE KEY`, RSA or Ed25519).
//! Errors say what was wrong with the data and never show it.
//!
//! Signing uses ring, which the workspace already builds for rustls: its RSA is constant-time
//! and blinded, while the RustCrypto `rsa` crate behind mail-auth's own key type is not
//! (RUSTSEC-2023-0071). ring takes RSA moduli of 2048 to 4096 bits only; DKIM still meets
//! 1024-bit keys (RFC 8301 allows them), so an RSA key ring refuses falls back to mail-auth's
//! key (and the fallback enforces the 1024-bit minimum).
//! mail-auth builds and folds the signature either way.

use std::sync::Arc;

use mail_auth::common::crypto::{Algorithm, CryptoError, RsaKey, Sha256, SigningKey};
use mail_auth::common::headers::Writable;
use ring::rand::SystemRandom;
use ring::signature::{Ed25519KeyPair, RsaKeyPair, RSA_PKCS1_SHA256};
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{PrivateKeyDer, PrivatePkcs1KeyDer, PrivatePkcs8KeyDer};

/// Why key data is not a usable DKIM key; the caller names the key source.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum KeyError {
    #[error("the PEM data holds no private key block ('PRIVATE KEY' or 'RSA PRIVATE KEY')")]
    NoPemKey,
    #[error("it is an EC (SEC1) key; DKIM signs with RSA or Ed25519 keys")]
    Sec1,
    #[error("it is neither an RSA nor an Ed25519 private key (PKCS#1 or PKCS#8, PEM or DER)")]
    Unrecognized,
    #[error("the RSA key has {0} bits; DKIM needs at least 1024 (RFC 8301)")]
    RsaTooSmall(usize),
}

enum Inner {
    /// 2048 to 4096 bits.
    Rsa(RsaKeyPair),
    /// A key ring refuses (below 2048 or above 4096 bits, or a public exponent below 65537)
    /// that the `rsa` crate takes.
    RsaFallback(RsaKey<Sha256>),
    Ed25519(Ed25519KeyPair),
}

/// A parsed key shared by every signer made from it (the signer cache can hold one key under
/// several domains or selectors). mail-auth's signer owns its key, so this cheap clone of one
/// `Arc` is what it owns.
#[derive(Clone)]
pub struct SharedKey(Arc<Inner>);

impl SharedKey {
    /// `rsa-sha256` or `ed25519-sha256`.
    pub fn algorithm_name(&self) -> &'static str {
        match self.algorithm() {
            Algorithm::Ed25519Sha256 => "ed25519-sha256",
            _ => "rsa-sha256",
        }
    }

    /// The public key as DER (PKCS#1 `RSAPublicKey` for RSA, raw 32 bytes for Ed25519).
    #[cfg(test)]
    pub fn public_key(&self) -> Vec<u8> {
        use ring::signature::KeyPair;
        match &*self.0 {
            Inner::Rsa(k) => k.public_key().as_ref().to_vec(),
            Inner::RsaFallback(k) => k.public_key(),
            Inner::Ed25519(k) => k.public_key().as_ref().to_vec(),
        }
    }
}

fn crypto_error(what: &str) -> mail_auth::Error {
    mail_auth::Error::Crypto(CryptoError::Library(what.to_string()))
}

impl SigningKey for SharedKey {
    type Hasher = Sha256;

    fn sign(&self, input: impl Writable) -> mail_auth::Result<Vec<u8>> {
        match &*self.0 {
            Inner::Rsa(k) => {
                // ring hashes the data itself (PKCS#1 v1.5 with SHA-256); what is signed is
                // the canonicalized header block, a few kilobytes at most.
                let mut data = Vec::new();
                input.write(&mut data);
                let mut sig = vec![0; k.public().modulus_len()];
                k.sign(&RSA_PKCS1_SHA256, &SystemRandom::new(), &data, &mut sig)
                    .map_err(|_| crypto_error("RSA signing failed"))?;
                Ok(sig)
            }
            Inner::RsaFallback(k) => k.sign(input),
            Inner::Ed25519(k) => {
                // RFC 8463: Ed25519 signs the SHA-256 hash of the data, not the data.
                let hash = self.hash(input);
                Ok(k.sign(hash.as_ref()).as_ref().to_vec())
            }
        }
    }

    fn algorithm(&self) -> Algorithm {
        match &*self.0 {
            Inner::Ed25519(_) => Algorithm::Ed25519Sha256,
            _ => Algorithm::RsaSha256,
        }
    }
}

/// Parse `data` (a key file's content or inline `key_data`).
pub fn parse(data: &[u8]) -> Result<SharedKey, KeyError> {
    let inner = if looks_like_pem(data) {
        match PrivateKeyDer::from_pem_slice(data).map_err(|_| KeyError::NoPemKey)? {
            PrivateKeyDer::Pkcs1(der) => rsa_pkcs1(der.secret_pkcs1_der()),
            PrivateKeyDer::Pkcs8(der) => pkcs8(der.secret_pkcs8_der()),
            PrivateKeyDer::Sec1(_) => return Err(KeyError::Sec1),
            _ => None,
        }
    } else {
        pkcs8(data).or_else(|| rsa_pkcs1(data))
    }
    .ok_or(KeyError::Unrecognized)?;
    if let Inner::RsaFallback(rsa) = &inner {
        // ring enforces its own minimum; the fallback must enforce RFC 8301's. The length is
        // read from the public key's DER, since mail-auth exposes no key size.
        let bits = rsa_modulus_bits(&rsa.public_key());
        if bits < 1024 {
            return Err(KeyError::RsaTooSmall(bits));
        }
    }
    Ok(SharedKey(Arc::new(inner)))
}

fn looks_like_pem(data: &[u8]) -> bool {
    data.windows(11).any(|w| w == b"-----BEGIN ")
}

fn pkcs8(der: &[u8]) -> Option<Inner> {
    if let Ok(k) = RsaKeyPair::from_pkcs8(der) {
        return Some(Inner::Rsa(k));
    }
    // v1 (private key only) and v2 (with the public key) documents, as KumoMTA loads both.
    if let Ok(k) = Ed25519KeyPair::from_pkcs8_maybe_unchecked(der) {
        return Some(Inner::Ed25519(k));
    }
    RsaKey::<Sha256>::from_key_der(PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(der)))
        .map(Inner::RsaFallback)
        .ok()
}

fn rsa_pkcs1(der: &[u8]) -> Option<Inner> {
    if let Ok(k) = RsaKeyPair::from_der(der) {
        return Some(Inner::Rsa(k));
    }
    RsaKey::<Sha256>::from_key_der(PrivateKeyDer::Pkcs1(PrivatePkcs1KeyDer::from(der)))
        .map(Inner::RsaFallback)
        .ok()
}

/// Bits of the modulus of a DER `RSAPublicKey` (`SEQUENCE { INTEGER n, INTEGER e }`); 0 when
/// the encoding is not what is expected.
fn rsa_modulus_bits(der: &[u8]) -> usize {
    fn header(d: &[u8]) -> Option<(u8, usize, &[u8])> {
        let (&tag, rest) = d.split_first()?;
        let (&first, rest) = rest.split_first()?;
        if first < 0x80 {
            return Some((tag, first as usize, rest));
        }
        let n = (first & 0x7f) as usize;
        if n == 0 || n > 4 || rest.len() < n {
            return None;
        }
        let len = rest[..n].iter().fold(0usize, |a, &b| (a << 8) | b as usize);
        Some((tag, len, &rest[n..]))
    }
    let Some((0x30, _, seq)) = header(der) else {
        return 0;
    };
    let Some((0x02, len, rest)) = header(seq) else {
        return 0;
    };
    let Some(n) = rest.get(..len) else {
        return 0;
    };
    // An INTEGER has a leading zero byte when its top bit is set; it does not count.
    let n = match n.iter().position(|&b| b != 0) {
        Some(i) => &n[i..],
        None => return 0,
    };
    n.len() * 8 - n[0].leading_zeros() as usize
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key_file(name: &str) -> Vec<u8> {
        let path = format!("{}/tests/keys/{name}", env!("CARGO_MANIFEST_DIR"));
        std::fs::read(&path).unwrap_or_else(|e| panic!("{path}: {e}"))
    }

    #[test]
    fn rsa_and_ed25519_keys_load_in_every_documented_encoding() {
        for (file, alg) in [
            ("rsa.pem", "rsa-sha256"),
            ("rsa-pkcs8.pem", "rsa-sha256"),
            ("ed25519.pem", "ed25519-sha256"),
            ("ed25519.der", "ed25519-sha256"),
        ] {
            let key = parse(&key_file(file)).unwrap_or_else(|e| panic!("{file}: {e}"));
            assert_eq!(key.algorithm_name(), alg, "{file}");
        }
    }

    #[test]
    fn data_that_is_not_a_key_is_refused_with_the_reason() {
        assert_eq!(parse(b"not a key").err(), Some(KeyError::Unrecognized));
        assert_eq!(
            parse(b"-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n").err(),
            Some(KeyError::NoPemKey)
        );
        // A PEM block whose content is not a key.
        assert_eq!(
            parse(b"-----BEGIN PRIVATE KEY-----\nAAAA\n-----END PRIVATE KEY-----\n").err(),
            Some(KeyError::Unrecognized)
        );
    }

    #[test]
    fn a_1024_bit_key_signs_through_the_fallback_and_a_512_bit_key_is_refused() {
        let key = parse(&key_file("rsa-1024.pem")).unwrap();
        assert!(matches!(&*key.0, Inner::RsaFallback(_)));
        assert!(matches!(
            &*parse(&key_file("rsa.pem")).unwrap().0,
            Inner::Rsa(_)
        ));
        assert_eq!(
            parse(&key_file("rsa-512.pem")).err(),
            Some(KeyError::RsaTooSmall(512))
        );
    }

    #[test]
    fn the_rsa_modulus_length_is_read_from_the_public_key() {
        assert_eq!(
            rsa_modulus_bits(&parse(&key_file("rsa.pem")).unwrap().public_key()),
            2048
        );
        assert_eq!(rsa_modulus_bits(b"\x30\x03\x02\x01\x00"), 0);
        assert_eq!(rsa_modulus_bits(b""), 0);
    }
}
