//! `kumo.start_http_listener`: the HTTP listener with the injection API v1
//! (`POST /api/inject/v1`), liveness and metrics endpoints, and KumoMTA's
//! admin API (`/api/admin/...`: suspend, bounce, ready-q-states, inspect-message),
//! and the live web dashboard at `/`.

mod admin;
mod admin_api;
mod auth;
mod config;
mod dashboard;
mod inject;
mod server;
mod tls;
mod trace;

pub use auth::{AuthInfo, AuthKind};
pub use config::{register, ConfigError, HttpListenerConfig, KeySource, TrustedHost};
pub use inject::{
    BuildError, InjectError, InjectRequest, RequestError, TemplateError, MAX_RECIPIENTS,
};
pub use server::{
    start_listener, start_listener_with_admin, start_listener_with_dashboard, HttpHandle,
};

#[derive(Debug, thiserror::Error)]
pub enum HttpError {
    #[error("kumo.start_http_listener: {0}")]
    Config(#[from] ConfigError),
    #[error("cannot listen on {addr}: {source}")]
    Bind {
        addr: String,
        #[source]
        source: std::io::Error,
    },
    #[error("kumo.start_http_listener TLS: {0}")]
    Tls(String),
}

/// Entry points for the cargo-fuzz targets in `fuzz/`; not a stable API.
#[doc(hidden)]
pub mod fuzzing {
    /// Decode an injection request and render every recipient's message
    /// without a policy engine, spool or network.
    pub fn render_inject(
        body: &[u8],
    ) -> Result<Vec<Result<Vec<u8>, crate::InjectError>>, crate::InjectError> {
        crate::inject::render_without_policy(body)
    }
}
