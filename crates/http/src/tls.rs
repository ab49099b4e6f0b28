//! The rustls server configuration: the configured key pair, or a
//! self-signed certificate for `hostname` generated at start.

use std::sync::Arc;

use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};

use crate::config::HttpListenerConfig;
use crate::HttpError;

pub fn server_config(cfg: &HttpListenerConfig) -> Result<Arc<rustls::ServerConfig>, HttpError> {
    // Another crate may already have installed the provider; that is fine.
    let _ = rustls::crypto::ring::default_provider().install_default();
    let tls = HttpError::Tls;
    let (certs, key) = match (&cfg.tls_certificate, &cfg.tls_private_key) {
        (Some(cert), Some(key)) => {
            let cert_pem = cert
                .load()
                .map_err(|e| tls(format!("reading tls_certificate {}: {e}", cert.describe())))?;
            let key_pem = key
                .load()
                .map_err(|e| tls(format!("reading tls_private_key {}: {e}", key.describe())))?;
            let certs = rustls_pemfile::certs(&mut cert_pem.as_slice())
                .collect::<Result<Vec<_>, _>>()
                .map_err(|e| tls(format!("parsing tls_certificate {}: {e}", cert.describe())))?;
            if certs.is_empty() {
                return Err(tls(format!(
                    "tls_certificate {} holds no certificate",
                    cert.describe()
                )));
            }
            let key = rustls_pemfile::private_key(&mut key_pem.as_slice())
                .map_err(|e| tls(format!("parsing tls_private_key {}: {e}", key.describe())))?
                .ok_or_else(|| {
                    tls(format!(
                        "tls_private_key {} holds no private key",
                        key.describe()
                    ))
                })?;
            (certs, key)
        }
        _ => self_signed(&cfg.hostname)?,
    };
    let mut config = rustls::ServerConfig::builder()
        .with_no_client_auth()
        .with_single_cert(certs, key)
        .map_err(|e| tls(format!("certificate/key mismatch: {e}")))?;
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(Arc::new(config))
}

fn self_signed(
    hostname: &str,
) -> Result<(Vec<CertificateDer<'static>>, PrivateKeyDer<'static>), HttpError> {
    let ck = rcgen::generate_simple_self_signed(vec![hostname.to_string()]).map_err(|e| {
        HttpError::Tls(format!(
            "generating a self-signed certificate for {hostname}: {e}"
        ))
    })?;
    let key = PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(ck.signing_key.serialize_der()));
    Ok((vec![ck.cert.der().clone()], key))
}
