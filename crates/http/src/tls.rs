//! The rustls server configuration: the configured key pair, or a
//! self-signed certificate for `hostname` generated at start.

use std::sync::Arc;

use crate::config::HttpListenerConfig;
use crate::HttpError;

pub fn server_config(cfg: &HttpListenerConfig) -> Result<Arc<rustls::ServerConfig>, HttpError> {
    hermod_tls::server_config(
        cfg.tls_certificate.as_ref(),
        cfg.tls_private_key.as_ref(),
        &cfg.hostname,
        &[b"http/1.1"],
    )
    .map_err(|e| HttpError::Tls(e.to_string()))
}
