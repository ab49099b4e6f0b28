//! TLS for STARTTLS: which roots are trusted, the two rustls client
//! configurations (verifying and not verifying), the handshake, and what
//! the handshake tells the delivery log.

use std::net::IpAddr;
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::CryptoProvider;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::{DigitallySignedStruct, RootCertStore, SignatureScheme};
use tokio::net::TcpStream;
use tokio_rustls::client::TlsStream;
use tokio_rustls::TlsConnector;

use crate::error::ErrorKind;

/// What a finished handshake tells the delivery log.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TlsInfo {
    /// IANA-style suite name as rustls spells it, e.g. `TLS13_AES_256_GCM_SHA384`.
    pub cipher: String,
    /// e.g. `TLSv1_3`.
    pub protocol_version: String,
    /// The server certificate's subject, `["CN=mx.example.com", ...]`.
    pub subject_name: Vec<String>,
    /// Whether the certificate was verified (false in the insecure modes).
    pub verified: bool,
}

/// The certificate authorities verified TLS trusts: the operating system's
/// store and/or extra roots (a private CA). The rustls configurations are
/// built on first use and shared by every connection using this value.
#[derive(Debug)]
pub struct TlsTrust {
    system_roots: bool,
    extra_roots: Vec<CertificateDer<'static>>,
    verified: OnceLock<Result<Arc<rustls::ClientConfig>, String>>,
    insecure: OnceLock<Result<Arc<rustls::ClientConfig>, String>>,
}

impl TlsTrust {
    fn build(system_roots: bool, extra_roots: Vec<CertificateDer<'static>>) -> Self {
        Self {
            system_roots,
            extra_roots,
            verified: OnceLock::new(),
            insecure: OnceLock::new(),
        }
    }

    /// The operating system's roots only; one shared value per process, so
    /// the store is read once.
    pub fn system() -> Arc<Self> {
        static SYSTEM: OnceLock<Arc<TlsTrust>> = OnceLock::new();
        SYSTEM
            .get_or_init(|| Arc::new(Self::build(true, Vec::new())))
            .clone()
    }

    /// The operating system's roots plus `extra` (DER certificates).
    pub fn with_extra_roots(extra: Vec<CertificateDer<'static>>) -> Arc<Self> {
        Arc::new(Self::build(true, extra))
    }

    /// Only `roots`, without the operating system's store.
    pub fn only(roots: Vec<CertificateDer<'static>>) -> Arc<Self> {
        Arc::new(Self::build(false, roots))
    }

    /// The certificates of a PEM bundle, for [`Self::with_extra_roots`].
    pub fn parse_pem(pem: &[u8]) -> Result<Vec<CertificateDer<'static>>, String> {
        let certs = CertificateDer::pem_slice_iter(pem)
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| format!("reading PEM certificates: {e}"))?;
        if certs.is_empty() {
            return Err("no certificate in the PEM data".into());
        }
        Ok(certs)
    }

    pub(crate) fn client_config(&self, verify: bool) -> Result<Arc<rustls::ClientConfig>, String> {
        if verify {
            self.verified
                .get_or_init(|| self.verifying_config().map(Arc::new))
                .clone()
        } else {
            self.insecure
                .get_or_init(|| {
                    insecure_client_config()
                        .map(Arc::new)
                        .map_err(|e| e.to_string())
                })
                .clone()
        }
    }

    fn verifying_config(&self) -> Result<rustls::ClientConfig, String> {
        let mut roots = RootCertStore::empty();
        if self.system_roots {
            let (added, ignored) = roots.add_parsable_certificates(system_roots().iter().cloned());
            tracing::debug!(added, ignored, "loaded the system's TLS roots");
        }
        for cert in &self.extra_roots {
            roots
                .add(cert.clone())
                .map_err(|e| format!("extra root certificate: {e}"))?;
        }
        if roots.is_empty() {
            return Err("no trusted root certificates".into());
        }
        rustls::ClientConfig::builder_with_provider(provider())
            .with_safe_default_protocol_versions()
            .map_err(|e| e.to_string())
            .map(|b| b.with_root_certificates(roots).with_no_client_auth())
    }
}

fn provider() -> Arc<CryptoProvider> {
    static PROVIDER: OnceLock<Arc<CryptoProvider>> = OnceLock::new();
    PROVIDER
        .get_or_init(|| Arc::new(rustls::crypto::ring::default_provider()))
        .clone()
}

/// The system store, read once per process; unreadable entries are logged
/// and skipped rather than failing every delivery.
fn system_roots() -> &'static [CertificateDer<'static>] {
    static ROOTS: OnceLock<Vec<CertificateDer<'static>>> = OnceLock::new();
    ROOTS.get_or_init(|| {
        let found = rustls_native_certs::load_native_certs();
        for error in &found.errors {
            tracing::warn!(%error, "reading the system's TLS roots");
        }
        found.certs
    })
}

/// A client configuration that accepts any server certificate: what the
/// insecure `enable_tls` modes use, and what the load generator and tests use
/// against local servers with throwaway self-signed certificates (the one
/// such verifier in the project).
pub fn insecure_client_config() -> Result<rustls::ClientConfig, rustls::Error> {
    let provider = provider();
    Ok(
        rustls::ClientConfig::builder_with_provider(provider.clone())
            .with_safe_default_protocol_versions()?
            .dangerous()
            .with_custom_certificate_verifier(Arc::new(AnyCertificate(provider)))
            .with_no_client_auth(),
    )
}

/// Accepts any certificate (the insecure modes) but still checks the
/// handshake signatures, so the encrypted channel is at least bound to the
/// key the server presented.
#[derive(Debug)]
struct AnyCertificate(Arc<CryptoProvider>);

impl ServerCertVerifier for AnyCertificate {
    fn verify_server_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.0.signature_verification_algorithms.supported_schemes()
    }
}

/// The name the certificate must match: the host name without a trailing
/// dot, or an address literal (`[192.0.2.1]` or a bare address).
pub(crate) fn server_name(host: &str) -> Result<ServerName<'static>, ErrorKind> {
    let trimmed = host.trim_end_matches('.');
    let literal = trimmed
        .strip_prefix('[')
        .and_then(|s| s.strip_suffix(']'))
        .map(|s| s.strip_prefix("IPv6:").unwrap_or(s))
        .unwrap_or(trimmed);
    if let Ok(ip) = literal.parse::<IpAddr>() {
        return Ok(ServerName::IpAddress(ip.into()));
    }
    ServerName::try_from(trimmed.to_string())
        .map_err(|_| ErrorKind::InvalidServerName(host.to_string()))
}

/// How a handshake ended when it did not succeed.
pub(crate) enum HandshakeFailure {
    /// The TCP stream is handed back when rustls could tell the handshake
    /// failed (so a caller may go on in plain text).
    Failed(String, Option<TcpStream>),
    TimedOut(Duration),
}

pub(crate) async fn handshake(
    tcp: TcpStream,
    config: Arc<rustls::ClientConfig>,
    name: ServerName<'static>,
    limit: Duration,
) -> Result<TlsStream<TcpStream>, HandshakeFailure> {
    let connect = TlsConnector::from(config)
        .connect(name, tcp)
        .into_fallible();
    match tokio::time::timeout(limit, connect).await {
        Ok(Ok(stream)) => Ok(stream),
        Ok(Err((error, tcp))) => Err(HandshakeFailure::Failed(error.to_string(), Some(tcp))),
        Err(_) => Err(HandshakeFailure::TimedOut(limit)),
    }
}

pub(crate) fn info(stream: &TlsStream<TcpStream>, verified: bool) -> TlsInfo {
    let (_, conn) = stream.get_ref();
    let cipher = conn
        .negotiated_cipher_suite()
        .map(|s| format!("{:?}", s.suite()))
        .unwrap_or_default();
    let protocol_version = conn
        .protocol_version()
        .map(|v| format!("{v:?}"))
        .unwrap_or_default();
    let subject_name = conn
        .peer_certificates()
        .and_then(|certs| certs.first())
        .map(|c| crate::x509::subject_name(c.as_ref()))
        .unwrap_or_default();
    TlsInfo {
        cipher,
        protocol_version,
        subject_name,
        verified,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn host_names_and_address_literals_become_tls_server_names() {
        let ip = |s| matches!(server_name(s), Ok(ServerName::IpAddress(_)));
        assert!(ip("192.0.2.1") && ip("[192.0.2.1]") && ip("[IPv6:2001:db8::1]"));
        match server_name("mx.example.com.") {
            Ok(ServerName::DnsName(n)) => assert_eq!(n.as_ref(), "mx.example.com"),
            other => panic!("{other:?}"),
        }
        assert!(matches!(
            server_name("not a name"),
            Err(ErrorKind::InvalidServerName(_))
        ));
    }

    #[test]
    fn pem_bundles_give_their_certificates_and_garbage_is_refused() {
        let cert = rcgen::generate_simple_self_signed(vec!["ca.test".into()]).unwrap();
        let pem = format!("{}{}", cert.cert.pem(), cert.cert.pem());
        assert_eq!(TlsTrust::parse_pem(pem.as_bytes()).unwrap().len(), 2);
        assert!(TlsTrust::parse_pem(b"no pem here").is_err());
    }

    #[test]
    fn verifying_without_any_trusted_root_is_a_configuration_error() {
        assert!(TlsTrust::only(Vec::new()).client_config(true).is_err());
        // Not verifying needs no roots.
        assert!(TlsTrust::only(Vec::new()).client_config(false).is_ok());
    }
}
