//! TLS client configuration for STARTTLS.

use std::sync::Arc;

use tokio_rustls::TlsConnector;

/// A TLS connector that accepts any server certificate: the load generator
/// only ever targets local test servers with throwaway self-signed
/// certificates. Handshake signatures are still verified, so the TLS cost
/// measured is the real one.
pub fn insecure_tls_connector() -> Result<TlsConnector, rustls::Error> {
    let config = hermod_smtp_client::insecure_client_config()?;
    Ok(TlsConnector::from(Arc::new(config)))
}
