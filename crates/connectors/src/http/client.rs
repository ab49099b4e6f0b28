//! The HTTP client handle.

use std::sync::Arc;
use std::time::Duration;

use mlua::{UserData, UserDataMethods};
use parking_lot::RwLock;
use serde::Deserialize;

use super::request::HttpRequest;
use super::HttpClientError;
use crate::common::CLIENT_CLOSED;

/// `kumo.http.build_client` options; keys are not strictly checked, as in KumoMTA.
#[derive(Debug, Default, Deserialize)]
pub struct HttpClientConfig {
    #[serde(default)]
    pub user_agent: Option<String>,
    #[serde(default)]
    pub connection_verbose: bool,
    #[serde(default, deserialize_with = "hermod_policy::duration::deserialize_opt")]
    pub pool_idle_timeout: Option<Duration>,
    #[serde(default, deserialize_with = "hermod_policy::duration::deserialize_opt")]
    pub timeout: Option<Duration>,
    #[serde(default)]
    pub accept_invalid_certs: bool,
}

const DEFAULT_TIMEOUT: Duration = Duration::from_secs(60);

/// A pooled HTTP client. Clones share the connection pool and the closed state.
#[derive(Clone)]
pub struct HttpClient {
    inner: Arc<RwLock<Option<reqwest::Client>>>,
}

impl HttpClient {
    pub fn build(config: &HttpClientConfig) -> Result<Self, HttpClientError> {
        crate::common::ensure_crypto_provider();
        let mut b = reqwest::Client::builder()
            .connection_verbose(config.connection_verbose)
            .timeout(config.timeout.unwrap_or(DEFAULT_TIMEOUT))
            .danger_accept_invalid_certs(config.accept_invalid_certs);
        if let Some(ua) = &config.user_agent {
            b = b.user_agent(ua.as_str());
        }
        if let Some(idle) = config.pool_idle_timeout {
            b = b.pool_idle_timeout(idle);
        }
        let client = b.build().map_err(HttpClientError::Build)?;
        Ok(Self {
            inner: Arc::new(RwLock::new(Some(client))),
        })
    }

    fn client(&self) -> Result<reqwest::Client, &'static str> {
        self.inner.read().clone().ok_or(CLIENT_CLOSED)
    }
}

impl UserData for HttpClient {
    fn add_methods<M: UserDataMethods<Self>>(methods: &mut M) {
        for (name, method) in [
            ("get", reqwest::Method::GET),
            ("post", reqwest::Method::POST),
            ("put", reqwest::Method::PUT),
        ] {
            methods.add_method(name, move |lua, this, url: String| {
                let fail = |e: String| {
                    hermod_policy::errors::located(lua, format!("http {name} '{url}': {e}"))
                };
                let client = this.client().map_err(|e| fail(e.to_string()))?;
                let parsed =
                    reqwest::Url::parse(&url).map_err(|e| fail(format!("invalid URL: {e}")))?;
                Ok(HttpRequest::new(
                    client.request(method.clone(), parsed),
                    url.clone(),
                ))
            });
        }
        methods.add_method("close", |_lua, this, ()| {
            this.inner.write().take();
            Ok(())
        });
    }
}
