//! STARTTLS: the rustls server configuration (configured key pair or a
//! self-signed certificate generated at start) and the plain/TLS stream.

use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;
use tokio_rustls::server::TlsStream;

use crate::config::EsmtpListenerConfig;
use crate::SmtpError;

pub fn server_config(cfg: &EsmtpListenerConfig) -> Result<Arc<rustls::ServerConfig>, SmtpError> {
    // Another crate may already have installed the provider; that is fine.
    let _ = rustls::crypto::ring::default_provider().install_default();
    let (certs, key) = match (&cfg.tls_certificate, &cfg.tls_private_key) {
        (Some(cert), Some(key)) => {
            let tls = |e: String| SmtpError::Tls(e);
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
    let config = rustls::ServerConfig::builder()
        .with_no_client_auth()
        .with_single_cert(certs, key)
        .map_err(|e| SmtpError::Tls(format!("certificate/key mismatch: {e}")))?;
    Ok(Arc::new(config))
}

fn self_signed(
    hostname: &str,
) -> Result<(Vec<CertificateDer<'static>>, PrivateKeyDer<'static>), SmtpError> {
    let ck = rcgen::generate_simple_self_signed(vec![hostname.to_string()]).map_err(|e| {
        SmtpError::Tls(format!(
            "generating a self-signed certificate for {hostname}: {e}"
        ))
    })?;
    let key = PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(ck.signing_key.serialize_der()));
    Ok((vec![ck.cert.der().clone()], key))
}

/// The session's transport before and after STARTTLS.
pub enum Stream {
    Plain(TcpStream),
    Tls(Box<TlsStream<TcpStream>>),
}

impl Stream {
    /// `(protocol version, cipher suite)` once TLS is active.
    pub fn tls_info(&self) -> Option<(String, String)> {
        match self {
            Stream::Plain(_) => None,
            Stream::Tls(s) => {
                let (_, conn) = s.get_ref();
                let version = conn
                    .protocol_version()
                    .map(|v| format!("{v:?}"))
                    .unwrap_or_default();
                let cipher = conn
                    .negotiated_cipher_suite()
                    .map(|c| format!("{:?}", c.suite()))
                    .unwrap_or_default();
                Some((version, cipher))
            }
        }
    }
}

impl AsyncRead for Stream {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Stream::Plain(s) => Pin::new(s).poll_read(cx, buf),
            Stream::Tls(s) => Pin::new(s.as_mut()).poll_read(cx, buf),
        }
    }
}

impl AsyncWrite for Stream {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            Stream::Plain(s) => Pin::new(s).poll_write(cx, buf),
            Stream::Tls(s) => Pin::new(s.as_mut()).poll_write(cx, buf),
        }
    }
    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Stream::Plain(s) => Pin::new(s).poll_flush(cx),
            Stream::Tls(s) => Pin::new(s.as_mut()).poll_flush(cx),
        }
    }
    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Stream::Plain(s) => Pin::new(s).poll_shutdown(cx),
            Stream::Tls(s) => Pin::new(s.as_mut()).poll_shutdown(cx),
        }
    }
}
