//! TLS material for listeners: loading the certificate and key from where
//! the policy says they live (a [`KeySource`], whose home is
//! `crates/policy/src/keysource.rs`), or generating a self-signed pair for
//! the listener's hostname, and the rustls server configuration built from
//! them with the ring provider.

use std::sync::Arc;

use hermod_policy::{KeySource, KeySourceError};
use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};

/// Why the listener's TLS material could not be set up. Each message names
/// the policy key (`tls_certificate` / `tls_private_key`) at fault.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    #[error("tls_certificate and tls_private_key must be given together")]
    Unpaired,
    #[error("reading {key} {source_name}: {error}")]
    Read {
        key: &'static str,
        source_name: String,
        error: std::io::Error,
    },
    #[error("parsing {key} {source_name}: {error}")]
    Parse {
        key: &'static str,
        source_name: String,
        error: std::io::Error,
    },
    #[error("tls_certificate {0} holds no certificate")]
    NoCertificate(String),
    #[error("tls_private_key {0} holds no private key")]
    NoPrivateKey(String),
    #[error("generating a self-signed certificate for {hostname}: {error}")]
    SelfSigned {
        hostname: String,
        error: rcgen::Error,
    },
    #[error("certificate/key mismatch: {0}")]
    Mismatch(rustls::Error),
}

const CERT_KEY: &str = "tls_certificate";
const PRIVATE_KEY: &str = "tls_private_key";

fn read(key: &'static str, src: &KeySource) -> Result<Vec<u8>, TlsError> {
    src.load().map_err(|e| match e {
        KeySourceError::Read { path, source } => TlsError::Read {
            key,
            source_name: path,
            error: source,
        },
    })
}

/// The certificate chain and private key from `cert` and `key`, or a
/// self-signed certificate for `hostname` when neither is given.
pub fn load_certified_key(
    cert: Option<&KeySource>,
    key: Option<&KeySource>,
    hostname: &str,
) -> Result<(Vec<CertificateDer<'static>>, PrivateKeyDer<'static>), TlsError> {
    let (cert, key) = match (cert, key) {
        (Some(cert), Some(key)) => (cert, key),
        (None, None) => return self_signed(hostname),
        _ => return Err(TlsError::Unpaired),
    };
    let cert_pem = read(CERT_KEY, cert)?;
    let key_pem = read(PRIVATE_KEY, key)?;
    let certs = rustls_pemfile::certs(&mut cert_pem.as_slice())
        .collect::<Result<Vec<_>, _>>()
        .map_err(|error| TlsError::Parse {
            key: CERT_KEY,
            source_name: cert.describe().to_string(),
            error,
        })?;
    if certs.is_empty() {
        return Err(TlsError::NoCertificate(cert.describe().to_string()));
    }
    let private = rustls_pemfile::private_key(&mut key_pem.as_slice())
        .map_err(|error| TlsError::Parse {
            key: PRIVATE_KEY,
            source_name: key.describe().to_string(),
            error,
        })?
        .ok_or_else(|| TlsError::NoPrivateKey(key.describe().to_string()))?;
    Ok((certs, private))
}

fn self_signed(
    hostname: &str,
) -> Result<(Vec<CertificateDer<'static>>, PrivateKeyDer<'static>), TlsError> {
    let ck = rcgen::generate_simple_self_signed(vec![hostname.to_string()]).map_err(|error| {
        TlsError::SelfSigned {
            hostname: hostname.to_string(),
            error,
        }
    })?;
    let key = PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(ck.signing_key.serialize_der()));
    Ok((vec![ck.cert.der().clone()], key))
}

/// A rustls server configuration (no client authentication) over
/// [`load_certified_key`]'s material, advertising `alpn` (may be empty).
pub fn server_config(
    cert: Option<&KeySource>,
    key: Option<&KeySource>,
    hostname: &str,
    alpn: &[&[u8]],
) -> Result<Arc<rustls::ServerConfig>, TlsError> {
    // Another crate may already have installed the provider; that is fine.
    let _ = rustls::crypto::ring::default_provider().install_default();
    let (certs, private) = load_certified_key(cert, key, hostname)?;
    let mut config = rustls::ServerConfig::builder()
        .with_no_client_auth()
        .with_single_cert(certs, private)
        .map_err(TlsError::Mismatch)?;
    config.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
    Ok(Arc::new(config))
}

#[cfg(test)]
mod tests;
