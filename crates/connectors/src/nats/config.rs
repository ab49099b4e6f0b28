//! `kumo.nats.connect{...}` parameters and their translation into
//! async-nats connect options.

use std::path::PathBuf;
use std::time::Duration;

use async_nats::ConnectOptions;
use hermod_policy::KeySource;
use serde::Deserialize;

use super::NatsError;

/// Strict connection parameters. `sender_capacity` is accepted as an alias of
/// `client_capacity` because KumoMTA's docs use that name.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NatsConfig {
    pub servers: Vec<String>,
    #[serde(default)]
    pub name: Option<String>,
    #[serde(default)]
    pub auth: Option<NatsAuth>,
    #[serde(default)]
    pub no_echo: bool,
    #[serde(default)]
    pub max_reconnects: Option<usize>,
    #[serde(default, deserialize_with = "hermod_policy::duration::deserialize_opt")]
    pub connection_timeout: Option<Duration>,
    #[serde(default)]
    pub tls_required: bool,
    #[serde(default)]
    pub tls_first: bool,
    #[serde(default)]
    pub certificate: Option<PathBuf>,
    #[serde(default)]
    pub client_cert: Option<PathBuf>,
    #[serde(default)]
    pub client_key: Option<PathBuf>,
    #[serde(default, deserialize_with = "hermod_policy::duration::deserialize_opt")]
    pub ping_interval: Option<Duration>,
    #[serde(default, alias = "sender_capacity")]
    pub client_capacity: Option<usize>,
    #[serde(default)]
    pub inbox_prefix: Option<String>,
    #[serde(default, deserialize_with = "hermod_policy::duration::deserialize_opt")]
    pub request_timeout: Option<Duration>,
    #[serde(default)]
    pub retry_on_initial_connect: bool,
    #[serde(default)]
    pub ignore_discovered_servers: bool,
    #[serde(default)]
    pub retain_servers_order: bool,
}

/// Authentication. Every secret is a KeySource (a file path string or
/// `{ key_data = '...' }`):
/// - `username` + `password` (both or neither),
/// - `token`,
/// - `nkey`: the NKey seed (`SU...`),
/// - `credentials`: the contents of a `.creds` file (JWT + seed),
/// - `credentials_file`: path of a `.creds` file (same as `credentials = '/path'`).
///
/// At most one of token / nkey / credentials may be combined with the
/// username/password pair, mirroring what the NATS server accepts.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NatsAuth {
    #[serde(default)]
    pub username: Option<KeySource>,
    #[serde(default)]
    pub password: Option<KeySource>,
    #[serde(default)]
    pub token: Option<KeySource>,
    #[serde(default)]
    pub nkey: Option<KeySource>,
    #[serde(default)]
    pub credentials: Option<KeySource>,
    #[serde(default)]
    pub credentials_file: Option<String>,
}

impl NatsConfig {
    /// Checks that need no I/O, so `hermod check` can report them.
    pub fn validate(&self) -> Result<(), NatsError> {
        if self.servers.is_empty() {
            return Err(NatsError::NoServers);
        }
        for server in &self.servers {
            server
                .parse::<async_nats::ServerAddr>()
                .map_err(|error| NatsError::InvalidServer {
                    server: server.clone(),
                    error,
                })?;
        }
        if self.client_cert.is_some() != self.client_key.is_some() {
            return Err(NatsError::UnpairedClientCertificate);
        }
        if self.client_capacity == Some(0) {
            return Err(NatsError::ZeroClientCapacity);
        }
        if let Some(auth) = &self.auth {
            if auth.username.is_some() != auth.password.is_some() {
                return Err(NatsError::UnpairedUsernamePassword);
            }
            let exclusive = [
                auth.token.is_some(),
                auth.nkey.is_some(),
                auth.credentials.is_some() || auth.credentials_file.is_some(),
            ];
            if exclusive.iter().filter(|b| **b).count() > 1 {
                return Err(NatsError::ConflictingAuth);
            }
            if auth.credentials.is_some() && auth.credentials_file.is_some() {
                return Err(NatsError::CredentialsTwice);
            }
        }
        Ok(())
    }

    /// Build the connect options, reading secrets from their key sources.
    pub async fn to_options(&self) -> Result<ConnectOptions, NatsError> {
        let mut opts = ConnectOptions::new();
        if let Some(auth) = &self.auth {
            if let Some(path) = &auth.credentials_file {
                opts = opts.credentials_file(path).await.map_err(|error| {
                    NatsError::CredentialsFile {
                        path: path.clone(),
                        error,
                    }
                })?;
            }
            if let Some(creds) = &auth.credentials {
                let text = creds.resolve().await?;
                opts = opts
                    .credentials(&text)
                    .map_err(NatsError::InvalidCredentials)?;
            }
            if let Some(nkey) = &auth.nkey {
                opts = opts.nkey(nkey.resolve().await?);
            }
            if let Some(token) = &auth.token {
                opts = opts.token(token.resolve().await?);
            }
            if let (Some(user), Some(pass)) = (&auth.username, &auth.password) {
                opts = opts.user_and_password(user.resolve().await?, pass.resolve().await?);
            }
        }
        if let Some(name) = &self.name {
            opts = opts.name(name);
        }
        if self.no_echo {
            opts = opts.no_echo();
        }
        if let Some(n) = self.max_reconnects {
            opts = opts.max_reconnects(n);
        }
        if let Some(t) = self.connection_timeout {
            opts = opts.connection_timeout(t);
        }
        if self.tls_required {
            opts = opts.require_tls(true);
        }
        if self.tls_first {
            opts = opts.tls_first();
        }
        if let Some(ca) = &self.certificate {
            opts = opts.add_root_certificates(ca.clone());
        }
        if let (Some(cert), Some(key)) = (&self.client_cert, &self.client_key) {
            opts = opts.add_client_certificate(cert.clone(), key.clone());
        }
        if let Some(p) = self.ping_interval {
            opts = opts.ping_interval(p);
        }
        if let Some(c) = self.client_capacity {
            opts = opts.client_capacity(c);
        }
        if let Some(prefix) = &self.inbox_prefix {
            opts = opts.custom_inbox_prefix(prefix);
        }
        if self.request_timeout.is_some() {
            opts = opts.request_timeout(self.request_timeout);
        }
        if self.retry_on_initial_connect {
            opts = opts.retry_on_initial_connect();
        }
        if self.ignore_discovered_servers {
            opts = opts.ignore_discovered_servers();
        }
        if self.retain_servers_order {
            opts = opts.retain_servers_order();
        }
        Ok(opts)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use mlua::Lua;

    fn decode(src: &str) -> Result<NatsConfig, String> {
        let lua = Lua::new();
        let v = lua
            .load(src)
            .eval::<mlua::Value>()
            .map_err(|e| e.to_string())?;
        let site = hermod_policy::errors::CallSite::default();
        hermod_policy::config::from_lua_strict_at::<NatsConfig>(&lua, &site, v, "kumo.nats.connect")
            .map_err(|e| e.to_string())
    }

    #[test]
    fn ping_interval_accepts_the_struct_form_and_duration_strings() {
        let a = decode(
            "return { servers = {'a:4222'}, ping_interval = { secs = 3, nanos = 500000000 } }",
        )
        .unwrap();
        assert_eq!(a.ping_interval, Some(Duration::from_millis(3500)));
        let b = decode("return { servers = {'a:4222'}, ping_interval = '1m' }").unwrap();
        assert_eq!(b.ping_interval, Some(Duration::from_secs(60)));
    }

    #[test]
    fn sender_capacity_is_an_alias_of_client_capacity() {
        let c = decode("return { servers = {'a:4222'}, sender_capacity = 64 }").unwrap();
        assert_eq!(c.client_capacity, Some(64));
    }

    #[test]
    fn key_sources_take_paths_and_inline_data_and_reject_vault() {
        let c = decode("return { servers = {'a'}, auth = { nkey = { key_data = 'SUAX' }, username = '/u', password = '/p' } }")
            .unwrap();
        let auth = c.auth.unwrap();
        assert_eq!(
            auth.nkey,
            Some(KeySource::Data {
                key_data: "SUAX".into()
            })
        );
        assert_eq!(auth.username, Some(KeySource::Path("/u".into())));
        let e = decode("return { servers = {'a'}, auth = { token = { vault_path = 'x' } } }")
            .unwrap_err();
        assert!(e.contains("vault"), "{e}");
    }

    #[test]
    fn validate_rejects_half_pairs_conflicting_auth_and_bad_servers() {
        let half =
            decode("return { servers = {'a:4222'}, auth = { username = { key_data = 'u' } } }")
                .unwrap();
        assert_eq!(
            half.validate().unwrap_err().to_string(),
            "auth: `username` and `password` must be given together"
        );
        let both = decode("return { servers = {'a:4222'}, auth = { token = { key_data = 't' }, nkey = { key_data = 'n' } } }")
            .unwrap();
        assert!(matches!(both.validate(), Err(NatsError::ConflictingAuth)));
        let cert = decode("return { servers = {'a:4222'}, client_cert = '/c.pem' }").unwrap();
        assert_eq!(
            cert.validate().unwrap_err().to_string(),
            "`client_cert` and `client_key` must be given together"
        );
        let none = decode("return { servers = {} }").unwrap();
        assert_eq!(
            none.validate().unwrap_err().to_string(),
            "`servers` must list at least one server"
        );
        let bad = decode("return { servers = {'nats://a:notaport'} }").unwrap();
        let e = bad.validate().unwrap_err().to_string();
        assert!(
            e.starts_with("invalid server address 'nats://a:notaport': "),
            "{e}"
        );
    }

    #[test]
    fn debug_output_never_shows_inline_secrets() {
        let c = decode("return { servers = {'a'}, auth = { password = { key_data = 'hunter2' }, username = { key_data = 'u' } } }")
            .unwrap();
        assert!(!format!("{c:?}").contains("hunter2"));
    }

    #[tokio::test]
    async fn unreadable_or_invalid_secrets_name_the_file_but_never_inline_data() {
        let c =
            decode("return { servers = {'a'}, auth = { token = '/nonexistent/hermod/token' } }")
                .unwrap();
        let e = c.to_options().await.unwrap_err();
        assert!(matches!(e, NatsError::Secret(_)), "{e}");
        let e = e.to_string();
        assert!(
            e.starts_with("cannot read key file '/nonexistent/hermod/token': "),
            "{e}"
        );
        let c =
            decode("return { servers = {'a'}, auth = { credentials = { key_data = 'hunter2' } } }")
                .unwrap();
        let e = c.to_options().await.unwrap_err().to_string();
        assert!(e.starts_with("invalid NATS credentials: "), "{e}");
        assert!(!e.contains("hunter2"), "{e}");
    }
}
