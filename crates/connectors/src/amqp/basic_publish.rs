//! `kumo.amqp.basic_publish{...}`: one call that publishes and waits for the
//! broker's confirmation (KumoMTA only waits for the frames to be written).

use std::fmt;
use std::time::Duration;

use hermod_policy::errors::CallSite;
use lapin::options::BasicPublishOptions;
use mlua::{Lua, Value};
use serde::Deserialize;

use super::client::{await_confirm, short};
use super::pool::{self, TlsFiles};
use super::props::Properties;
use super::AmqpError;
use crate::common::LuaBytes;

/// Connection parameters; together they select the pooled connection.
#[derive(Debug, Deserialize, Clone)]
#[serde(deny_unknown_fields)]
pub struct ConnectionParams {
    pub host: String,
    #[serde(default = "default_port")]
    pub port: u16,
    #[serde(default = "default_guest")]
    pub username: String,
    #[serde(default = "default_password")]
    pub password: Password,
    #[serde(default)]
    pub vhost: Option<String>,
    #[serde(default)]
    pub connection_name: Option<String>,
    /// Seconds.
    #[serde(default)]
    pub heartbeat: Option<u16>,
    #[serde(default)]
    pub enable_tls: bool,
    #[serde(default)]
    pub root_ca_cert: Option<String>,
    #[serde(default)]
    pub client_cert: Option<String>,
    #[serde(default)]
    pub client_private_key: Option<String>,
    /// Accepted for compatibility; Hermod always confirms.
    #[serde(default)]
    pub confirm_select: bool,
    /// Accepted for compatibility; publishes share one pooled connection.
    #[serde(default)]
    pub pool_size: Option<usize>,
    #[serde(default, deserialize_with = "hermod_policy::duration::deserialize_opt")]
    pub connect_timeout: Option<Duration>,
    #[serde(default, deserialize_with = "hermod_policy::duration::deserialize_opt")]
    pub recycle_timeout: Option<Duration>,
    #[serde(default, deserialize_with = "hermod_policy::duration::deserialize_opt")]
    pub wait_timeout: Option<Duration>,
    #[serde(default, deserialize_with = "hermod_policy::duration::deserialize_opt")]
    pub publish_timeout: Option<Duration>,
}

fn default_port() -> u16 {
    5672
}

fn default_guest() -> String {
    "guest".to_string()
}

fn default_password() -> Password {
    Password(default_guest())
}

/// The broker password. Its Debug output is redacted: the parameter
/// structs derive Debug and may end up in logs.
#[derive(Clone, PartialEq, Eq, Deserialize)]
#[serde(transparent)]
pub struct Password(pub String);

impl fmt::Debug for Password {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("<redacted>")
    }
}

/// The strict `basic_publish` parameter table.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BasicPublishParams {
    pub routing_key: String,
    pub payload: LuaBytes,
    #[serde(default)]
    pub exchange: String,
    #[serde(default)]
    pub mandatory: bool,
    #[serde(default)]
    pub immediate: bool,
    #[serde(default)]
    pub app_id: Option<String>,
    #[serde(default)]
    pub cluster_id: Option<String>,
    #[serde(default)]
    pub content_encoding: Option<String>,
    #[serde(default)]
    pub content_type: Option<String>,
    #[serde(default)]
    pub correlation_id: Option<String>,
    #[serde(default)]
    pub delivery_mode: Option<u8>,
    #[serde(default)]
    pub expiration: Option<String>,
    #[serde(default)]
    pub headers: Option<std::collections::BTreeMap<String, super::props::HeaderValue>>,
    #[serde(default)]
    pub message_id: Option<String>,
    #[serde(default)]
    pub message_type: Option<String>,
    #[serde(default)]
    pub priority: Option<u8>,
    #[serde(default)]
    pub reply_to: Option<String>,
    #[serde(default)]
    pub timestamp: Option<u64>,
    #[serde(default)]
    pub user_id: Option<String>,
    pub connection: ConnectionParams,
}

const DEFAULT_PUBLISH_TIMEOUT: Duration = Duration::from_secs(60);

fn percent_encode(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || b"-._~".contains(&b) {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

impl ConnectionParams {
    /// The PEM files beyond the system roots, if any were given.
    pub fn tls_files(&self) -> Option<TlsFiles> {
        let client_cert_and_key = self
            .client_cert
            .clone()
            .zip(self.client_private_key.clone());
        if self.root_ca_cert.is_none() && client_cert_and_key.is_none() {
            return None;
        }
        Some(TlsFiles {
            root_ca_cert: self.root_ca_cert.clone(),
            client_cert_and_key,
        })
    }

    /// The AMQP URI these parameters describe; it is also the pool key.
    pub fn to_uri(&self) -> Result<String, AmqpError> {
        if self.client_cert.is_some() != self.client_private_key.is_some() {
            return Err(AmqpError::UnpairedClientCertificate);
        }
        if !self.enable_tls && self.tls_files().is_some() {
            return Err(AmqpError::TlsFilesWithoutTls);
        }
        let scheme = if self.enable_tls { "amqps" } else { "amqp" };
        let vhost = percent_encode(self.vhost.as_deref().unwrap_or("/"));
        let mut query = Vec::new();
        if let Some(h) = self.heartbeat {
            query.push(format!("heartbeat={h}"));
        }
        if let Some(t) = self.connect_timeout {
            query.push(format!("connection_timeout={}", t.as_millis()));
        }
        let mut uri = format!(
            "{scheme}://{}:{}@{}:{}/{vhost}",
            percent_encode(&self.username),
            percent_encode(&self.password.0),
            self.host,
            self.port
        );
        if !query.is_empty() {
            uri.push('?');
            uri.push_str(&query.join("&"));
        }
        Ok(uri)
    }
}

impl BasicPublishParams {
    fn properties(&self) -> Properties {
        Properties {
            app_id: self.app_id.clone(),
            cluster_id: self.cluster_id.clone(),
            content_encoding: self.content_encoding.clone(),
            content_type: self.content_type.clone(),
            correlation_id: self.correlation_id.clone(),
            delivery_mode: self.delivery_mode,
            expiration: self.expiration.clone(),
            headers: self.headers.clone(),
            message_id: self.message_id.clone(),
            kind: self.message_type.clone(),
            priority: self.priority,
            reply_to: self.reply_to.clone(),
            timestamp: self.timestamp,
            user_id: self.user_id.clone(),
        }
    }
}

pub(crate) async fn basic_publish(lua: Lua, params: Value) -> mlua::Result<()> {
    let site = CallSite::capture(&lua);
    let params: BasicPublishParams =
        hermod_policy::config::from_lua_strict_at(&lua, &site, params, "kumo.amqp.basic_publish")?;
    let target = format!(
        "{}:{} exchange '{}' routing key '{}'",
        params.connection.host, params.connection.port, params.exchange, params.routing_key
    );
    let fail = |why: &dyn std::fmt::Display| {
        site.error(format!("kumo.amqp.basic_publish to {target} failed: {why}"))
    };
    let uri = params.connection.to_uri().map_err(|e| fail(&e))?;
    let tls = params.connection.tls_files();
    let mut properties = params.properties();
    properties.default_message_id(&lua, &params.payload.0);
    let properties = properties.to_basic().map_err(|e| fail(&e))?;
    let exchange = short("exchange", &params.exchange).map_err(|e| fail(&e))?;
    let routing_key = short("routing_key", &params.routing_key).map_err(|e| fail(&e))?;
    if hermod_policy::startup::is_validating(&lua) {
        return Ok(());
    }
    if params.connection.enable_tls {
        crate::common::ensure_crypto_provider();
    }
    let limit = params
        .connection
        .publish_timeout
        .unwrap_or(DEFAULT_PUBLISH_TIMEOUT);
    let options = BasicPublishOptions {
        mandatory: params.mandatory,
        immediate: params.immediate,
    };
    let payload = params.payload.0;
    let work = async {
        let slot = pool::slot(&uri, tls.as_ref());
        let channel = slot.channel().await?;
        let confirm = channel
            .basic_publish(exchange, routing_key, options, &payload, properties)
            .await
            .map_err(AmqpError::Publish)?;
        await_confirm(confirm, limit).await
    };
    let started = std::time::Instant::now();
    let confirmation = tokio::time::timeout(limit, work)
        .await
        .map_err(|_| fail(&format!("timed out after {}s", limit.as_secs_f64())))?
        .map_err(|e| fail(&e))?;
    hermod_metrics::broker_publish_latency(hermod_metrics::BROKER_AMQP)
        .observe_duration(started.elapsed());
    match confirmation {
        lapin::Confirmation::Nack(_) => Err(fail(&"the broker refused the message (nack)")),
        lapin::Confirmation::Ack(Some(returned)) => Err(fail(&format!(
            "the broker returned the message as unroutable: {} {}",
            returned.reply_code, returned.reply_text
        ))),
        _ => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn params(host: &str) -> ConnectionParams {
        ConnectionParams {
            host: host.into(),
            port: default_port(),
            username: "us er".into(),
            password: Password("p@ss/word".into()),
            vhost: None,
            connection_name: None,
            heartbeat: Some(30),
            enable_tls: false,
            root_ca_cert: None,
            client_cert: None,
            client_private_key: None,
            confirm_select: false,
            pool_size: None,
            connect_timeout: Some(Duration::from_secs(5)),
            recycle_timeout: None,
            wait_timeout: None,
            publish_timeout: None,
        }
    }

    #[test]
    fn connection_params_become_a_parseable_uri_with_escaped_credentials() {
        let uri = params("127.0.0.1").to_uri().unwrap();
        assert_eq!(
            uri,
            "amqp://us%20er:p%40ss%2Fword@127.0.0.1:5672/%2F?heartbeat=30&connection_timeout=5000"
        );
        let parsed: lapin::uri::AMQPUri = uri.parse().unwrap();
        assert_eq!(parsed.authority.userinfo.password, "p@ss/word");
        assert_eq!(parsed.vhost, "/");
    }

    #[test]
    fn debug_output_never_shows_the_password() {
        let shown = format!("{:?}", params("h"));
        assert!(!shown.contains("p@ss"), "{shown}");
        assert!(shown.contains("password: <redacted>"), "{shown}");
    }

    #[test]
    fn half_a_client_certificate_pair_and_tls_files_without_tls_are_rejected() {
        let mut p = params("h");
        p.client_cert = Some("/c.pem".into());
        let e = p.to_uri().unwrap_err();
        assert!(matches!(e, AmqpError::UnpairedClientCertificate), "{e}");
        assert_eq!(
            e.to_string(),
            "`client_cert` and `client_private_key` must be given together"
        );
        p.client_private_key = Some("/k.pem".into());
        let e = p.to_uri().unwrap_err();
        assert!(matches!(e, AmqpError::TlsFilesWithoutTls), "{e}");
        p.enable_tls = true;
        assert!(p.to_uri().unwrap().starts_with("amqps://"));
        let files = p.tls_files().unwrap();
        assert_eq!(
            files.client_cert_and_key,
            Some(("/c.pem".to_string(), "/k.pem".to_string()))
        );
        assert_eq!(files.root_ca_cert, None);
    }
}
