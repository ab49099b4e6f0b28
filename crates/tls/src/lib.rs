//! TLS material for listeners: where a policy says the certificate and key
//! live ([`KeySource`]), loading them (or generating a self-signed pair for
//! the listener's hostname), and the rustls server configuration built
//! from them with the ring provider.

use std::fmt;
use std::sync::Arc;

use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};
use serde::Deserialize;

/// Key material as a policy gives it: a file path, or the PEM text inline
/// (`{key_data = "..."}`).
#[derive(Clone, PartialEq, Eq, Deserialize)]
#[serde(
    untagged,
    expecting = "a file path string or a table {key_data = \"<PEM text>\"}"
)]
pub enum KeySource {
    Path(String),
    Data { key_data: String },
}

// Inline key material is a secret; config structs holding it derive Debug
// and may end up in logs.
impl fmt::Debug for KeySource {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            KeySource::Path(p) => f.debug_tuple("Path").field(p).finish(),
            KeySource::Data { .. } => f.write_str("Data { key_data: <redacted> }"),
        }
    }
}

impl KeySource {
    pub fn load(&self) -> std::io::Result<Vec<u8>> {
        match self {
            KeySource::Path(p) => std::fs::read(p),
            KeySource::Data { key_data } => Ok(key_data.as_bytes().to_vec()),
        }
    }

    /// How to name the source in errors without revealing inline key material.
    pub fn describe(&self) -> String {
        match self {
            KeySource::Path(p) => p.clone(),
            KeySource::Data { .. } => "<inline key_data>".into(),
        }
    }
}

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
    src.load().map_err(|error| TlsError::Read {
        key,
        source_name: src.describe(),
        error,
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
            source_name: cert.describe(),
            error,
        })?;
    if certs.is_empty() {
        return Err(TlsError::NoCertificate(cert.describe()));
    }
    let private = rustls_pemfile::private_key(&mut key_pem.as_slice())
        .map_err(|error| TlsError::Parse {
            key: PRIVATE_KEY,
            source_name: key.describe(),
            error,
        })?
        .ok_or_else(|| TlsError::NoPrivateKey(key.describe()))?;
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
