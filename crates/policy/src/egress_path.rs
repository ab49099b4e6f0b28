//! `kumo.make_egress_path{...}`: how mail leaves through one egress source for one
//! destination site (connection limits, rates, TLS, timeouts, hosts never to connect to).
//! Strict keys, returned to Lua as userdata; the delivery code gets it from
//! `get_egress_path_config(routing_domain, egress_source, site_name)`.
//!
//! KumoMTA documents more keys than Hermod implements. Those are refused by name
//! ([`NOT_SUPPORTED`]) instead of being accepted and ignored, so a policy never believes it
//! got, say, DANE when it did not.

use std::time::Duration;

use mlua::{Lua, UserData, Value};
use serde::Deserialize;

use crate::cidr::CidrSet;
use crate::config::{from_lua_strict, refuse_not_supported};
use crate::keysource::Secret;
use crate::throttle::{LimitSpec, ThrottleSpec};

/// When to use STARTTLS.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
pub enum Tls {
    /// Use it when the peer offers it, with a valid certificate; a failed handshake fails the
    /// attempt (it does not fall back to plain text).
    #[default]
    Opportunistic,
    /// Use it when offered, accepting any certificate (lab use).
    OpportunisticInsecure,
    /// Require it with a valid certificate.
    Required,
    /// Require it, accepting any certificate (lab use).
    RequiredInsecure,
    /// Never use it.
    Disabled,
}

impl Tls {
    /// Whether any certificate is accepted.
    pub fn allow_insecure(self) -> bool {
        matches!(self, Tls::OpportunisticInsecure | Tls::RequiredInsecure)
    }

    /// Whether a peer that does not offer STARTTLS is still used.
    pub fn is_opportunistic(self) -> bool {
        matches!(self, Tls::Opportunistic | Tls::OpportunisticInsecure)
    }
}

/// What the SMTP client does after a 421, an I/O error or a timeout.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
pub enum ReconnectStrategy {
    /// End the SMTP session; the ready queue decides whether to open another.
    TerminateSession,
    /// Connect to the same host again.
    ReconnectSameHost,
    /// Go on to the next host of the connection plan; with none left, end the SMTP session.
    #[default]
    ConnectNextHost,
}

fn default_connection_limit() -> LimitSpec {
    LimitSpec::new(32)
}
fn default_max_ready() -> usize {
    1024
}
fn default_failures_before_delay() -> usize {
    100
}
fn default_smtp_port() -> u16 {
    25
}
fn default_max_deliveries() -> usize {
    1024
}
fn default_max_recipients() -> usize {
    100
}
fn yes() -> bool {
    true
}
fn secs(n: u64) -> Duration {
    Duration::from_secs(n)
}
fn s60() -> Duration {
    secs(60)
}
fn s300() -> Duration {
    secs(300)
}
fn s5() -> Duration {
    secs(5)
}

/// The egress path settings the delivery code reads. Field names are the policy's keys.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EgressPathConfig {
    /// Most concurrent connections from this source to the site (32).
    #[serde(
        default = "default_connection_limit",
        deserialize_with = "crate::throttle::deserialize_limit"
    )]
    pub connection_limit: LimitSpec,
    /// Most messages per period for this path (none).
    #[serde(default, deserialize_with = "crate::throttle::deserialize_rate_opt")]
    pub max_message_rate: Option<ThrottleSpec>,
    /// Most new connections per period for this path (none).
    #[serde(default, deserialize_with = "crate::throttle::deserialize_rate_opt")]
    pub max_connection_rate: Option<ThrottleSpec>,
    /// Messages sent on one connection before it is closed (1024).
    #[serde(default = "default_max_deliveries")]
    pub max_deliveries_per_connection: usize,
    /// Recipients per transaction (100).
    #[serde(default = "default_max_recipients")]
    pub max_recipients_per_batch: usize,
    /// Messages the ready queue holds before refusing more (1024).
    #[serde(default = "default_max_ready")]
    pub max_ready: usize,
    /// Connection failures in a row after which the ready queue's messages are delayed
    /// (`451 4.4.1`) instead of tried on (100).
    #[serde(default = "default_failures_before_delay")]
    pub consecutive_connection_failures_before_delay: usize,

    #[serde(default)]
    pub enable_tls: Tls,
    /// Pipeline commands when the peer advertises PIPELINING (true).
    #[serde(default = "yes")]
    pub enable_pipelining: bool,
    /// Send RSET between transactions on a reused connection (true).
    #[serde(default = "yes")]
    pub enable_rset: bool,
    #[serde(default)]
    pub reconnect_strategy: ReconnectStrategy,

    /// Destination port (25). A source's `remote_port` wins, then a port in `mx_list`.
    #[serde(default = "default_smtp_port")]
    pub smtp_port: u16,
    /// EHLO name; unset: the source's `ehlo_domain`, else the host name.
    #[serde(default)]
    pub ehlo_domain: Option<String>,
    /// Destination addresses that fail the ready queue with `550 5.4.4` (loopback and the
    /// unspecified addresses).
    #[serde(default = "CidrSet::default_prohibited_hosts")]
    pub prohibited_hosts: CidrSet,
    /// Destination addresses that are left out of the connection plan (none); when every
    /// address is skipped, the messages wait with `451 4.4.4`.
    #[serde(default)]
    pub skip_hosts: CidrSet,

    /// AUTH PLAIN credentials; both unset means no AUTH.
    #[serde(default)]
    pub smtp_auth_plain_username: Option<String>,
    /// A file path string or `{ key_data = '...' }`, as KumoMTA reads it.
    #[serde(default)]
    pub smtp_auth_plain_password: Option<Secret>,
    /// Allow AUTH PLAIN on a connection without TLS (false).
    #[serde(default)]
    pub allow_smtp_auth_plain_without_tls: bool,
    /// Allow AUTH PLAIN over TLS whose certificate was not verified (false).
    #[serde(default)]
    pub allow_smtp_auth_plain_without_valid_certificate: bool,

    #[serde(default = "s60", deserialize_with = "crate::duration::deserialize")]
    pub connect_timeout: Duration,
    #[serde(default = "s60", deserialize_with = "crate::duration::deserialize")]
    pub banner_timeout: Duration,
    #[serde(default = "s300", deserialize_with = "crate::duration::deserialize")]
    pub ehlo_timeout: Duration,
    #[serde(default = "s300", deserialize_with = "crate::duration::deserialize")]
    pub mail_from_timeout: Duration,
    #[serde(default = "s300", deserialize_with = "crate::duration::deserialize")]
    pub rcpt_to_timeout: Duration,
    #[serde(default = "s300", deserialize_with = "crate::duration::deserialize")]
    pub data_timeout: Duration,
    #[serde(default = "s300", deserialize_with = "crate::duration::deserialize")]
    pub data_dot_timeout: Duration,
    #[serde(default = "s5", deserialize_with = "crate::duration::deserialize")]
    pub rset_timeout: Duration,
    /// How long an idle connection waits for another message (5 s: KumoMTA's code default,
    /// although its documentation says 60 s).
    #[serde(default = "s5", deserialize_with = "crate::duration::deserialize")]
    pub idle_timeout: Duration,
    #[serde(default = "s5", deserialize_with = "crate::duration::deserialize")]
    pub starttls_timeout: Duration,
    #[serde(default = "s60", deserialize_with = "crate::duration::deserialize")]
    pub auth_timeout: Duration,

    /// How long a ready queue keeps this config before asking the policy again (60 s).
    #[serde(default = "s60", deserialize_with = "crate::duration::deserialize")]
    pub refresh_interval: Duration,
}

impl Default for EgressPathConfig {
    fn default() -> Self {
        EgressPathConfig {
            connection_limit: default_connection_limit(),
            max_message_rate: None,
            max_connection_rate: None,
            max_deliveries_per_connection: default_max_deliveries(),
            max_recipients_per_batch: default_max_recipients(),
            max_ready: default_max_ready(),
            consecutive_connection_failures_before_delay: default_failures_before_delay(),
            enable_tls: Tls::default(),
            enable_pipelining: true,
            enable_rset: true,
            reconnect_strategy: ReconnectStrategy::default(),
            smtp_port: default_smtp_port(),
            ehlo_domain: None,
            prohibited_hosts: CidrSet::default_prohibited_hosts(),
            skip_hosts: CidrSet::default(),
            smtp_auth_plain_username: None,
            smtp_auth_plain_password: None,
            allow_smtp_auth_plain_without_tls: false,
            allow_smtp_auth_plain_without_valid_certificate: false,
            connect_timeout: s60(),
            banner_timeout: s60(),
            ehlo_timeout: s300(),
            mail_from_timeout: s300(),
            rcpt_to_timeout: s300(),
            data_timeout: s300(),
            data_dot_timeout: s300(),
            rset_timeout: s5(),
            idle_timeout: s5(),
            starttls_timeout: s5(),
            auth_timeout: s60(),
            refresh_interval: s60(),
        }
    }
}

impl UserData for EgressPathConfig {}

/// Keys KumoMTA's `make_egress_path` takes that Hermod does not implement yet.
pub const NOT_SUPPORTED: &[&str] = &[
    "additional_connection_limits",
    "additional_message_rate_throttles",
    "additional_source_selection_rates",
    "aggressive_connection_opening",
    "dispatcher_progress_watchdog_timeout",
    "dispatcher_wakeup_strategy",
    "enable_dane",
    "enable_mta_sts",
    "ignore_8bit_checks",
    "ip_lookup_strategy",
    "low_memory_reduction_policy",
    "maintainer_wakeup_strategy",
    "no_memory_reduction_policy",
    "openssl_cipher_list",
    "openssl_cipher_suites",
    "openssl_options",
    "opportunistic_tls_reconnect_on_failed_handshake",
    "provider_name",
    "readyq_pool_name",
    "refresh_strategy",
    "remember_broken_tls",
    "rustls_cipher_suites",
    "source_selection_rate",
    "system_shutdown_timeout",
    "tls_certificate",
    "tls_private_key",
    "tls_prefer_openssl",
    "try_next_host_on_transport_error",
    "use_lmtp",
];

pub(crate) fn make_egress_path(lua: &Lua, params: Value) -> mlua::Result<EgressPathConfig> {
    let params = match params {
        Value::Nil => Value::Table(lua.create_table()?),
        v => v,
    };
    refuse_not_supported(lua, &params, "make_egress_path", NOT_SUPPORTED)?;
    from_lua_strict(lua, params, "make_egress_path")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn path(src: &str) -> Result<EgressPathConfig, String> {
        let lua = Lua::new();
        let v: Value = lua.load(src).eval().map_err(|e| e.to_string())?;
        make_egress_path(&lua, v).map_err(|e| e.to_string())
    }

    #[test]
    fn an_empty_table_gives_kumomtas_defaults_for_every_key() {
        let c = path("return {}").unwrap();
        assert_eq!(c, EgressPathConfig::default());
        assert_eq!(c.connection_limit, LimitSpec::new(32));
        assert_eq!((c.max_message_rate, c.max_connection_rate), (None, None));
        assert_eq!(c.max_deliveries_per_connection, 1024);
        assert_eq!(c.max_recipients_per_batch, 100);
        assert_eq!(c.max_ready, 1024);
        assert_eq!(c.consecutive_connection_failures_before_delay, 100);
        assert_eq!(c.enable_tls, Tls::Opportunistic);
        assert!(c.enable_pipelining && c.enable_rset);
        assert_eq!(c.reconnect_strategy, ReconnectStrategy::ConnectNextHost);
        assert_eq!(c.smtp_port, 25);
        assert_eq!(c.ehlo_domain, None);
        assert_eq!(c.prohibited_hosts, CidrSet::default_prohibited_hosts());
        assert!(c.skip_hosts.is_empty());
        assert_eq!(c.smtp_auth_plain_username, None);
        assert_eq!(c.smtp_auth_plain_password, None);
        assert!(!c.allow_smtp_auth_plain_without_tls);
        assert!(!c.allow_smtp_auth_plain_without_valid_certificate);
        for (got, want) in [
            (c.connect_timeout, 60),
            (c.banner_timeout, 60),
            (c.ehlo_timeout, 300),
            (c.mail_from_timeout, 300),
            (c.rcpt_to_timeout, 300),
            (c.data_timeout, 300),
            (c.data_dot_timeout, 300),
            (c.rset_timeout, 5),
            (c.idle_timeout, 5),
            (c.starttls_timeout, 5),
            (c.auth_timeout, 60),
            (c.refresh_interval, 60),
        ] {
            assert_eq!(got, secs(want));
        }
        assert_eq!(path("return nil").unwrap(), EgressPathConfig::default());
    }

    #[test]
    fn every_supported_key_is_read() {
        let c = path(
            "return { connection_limit = 'local:10', max_message_rate = '100/s', \
             max_connection_rate = '10/min', max_deliveries_per_connection = 50, \
             max_recipients_per_batch = 20, max_ready = 80, \
             consecutive_connection_failures_before_delay = 3, enable_tls = 'Required', \
             enable_pipelining = false, enable_rset = false, \
             reconnect_strategy = 'TerminateSession', smtp_port = 2525, \
             ehlo_domain = 'mta.example', prohibited_hosts = { '10.0.0.0/8' }, \
             skip_hosts = { '192.0.2.1', '2001:db8::/32' }, smtp_auth_plain_username = 'scott', \
             smtp_auth_plain_password = { key_data = 'tiger' }, \
             allow_smtp_auth_plain_without_tls = true, \
             allow_smtp_auth_plain_without_valid_certificate = true, \
             connect_timeout = '10s', banner_timeout = 11, ehlo_timeout = '12s', \
             mail_from_timeout = '13s', rcpt_to_timeout = '14s', data_timeout = '15s', \
             data_dot_timeout = '16s', rset_timeout = '17s', idle_timeout = '2min', \
             starttls_timeout = '18s', auth_timeout = '19s', refresh_interval = '5m' }",
        )
        .unwrap();
        assert_eq!(
            c.connection_limit,
            LimitSpec {
                limit: 10,
                local: true
            }
        );
        let rate = |r: Option<ThrottleSpec>| r.map(|r| (r.limit, r.period));
        assert_eq!(rate(c.max_message_rate), Some((100, secs(1))));
        assert_eq!(rate(c.max_connection_rate), Some((10, secs(60))));
        assert_eq!(
            (
                c.max_deliveries_per_connection,
                c.max_recipients_per_batch,
                c.max_ready
            ),
            (50, 20, 80)
        );
        assert_eq!(c.consecutive_connection_failures_before_delay, 3);
        assert_eq!(c.enable_tls, Tls::Required);
        assert!(!c.enable_pipelining && !c.enable_rset);
        assert_eq!(c.reconnect_strategy, ReconnectStrategy::TerminateSession);
        assert_eq!(c.smtp_port, 2525);
        assert_eq!(c.ehlo_domain.as_deref(), Some("mta.example"));
        assert!(c.prohibited_hosts.contains("10.1.2.3".parse().unwrap()));
        assert!(!c.prohibited_hosts.contains("127.0.0.1".parse().unwrap()));
        assert!(c.skip_hosts.contains("2001:db8::1".parse().unwrap()));
        assert_eq!(c.smtp_auth_plain_username.as_deref(), Some("scott"));
        assert!(c.smtp_auth_plain_password.is_some());
        assert!(c.allow_smtp_auth_plain_without_tls);
        assert!(c.allow_smtp_auth_plain_without_valid_certificate);
        let timeouts = [
            c.connect_timeout,
            c.banner_timeout,
            c.ehlo_timeout,
            c.mail_from_timeout,
            c.rcpt_to_timeout,
            c.data_timeout,
            c.data_dot_timeout,
            c.rset_timeout,
            c.starttls_timeout,
            c.auth_timeout,
        ];
        assert_eq!(timeouts, [10, 11, 12, 13, 14, 15, 16, 17, 18, 19].map(secs));
        assert_eq!(c.idle_timeout, secs(120));
        assert_eq!(c.refresh_interval, secs(300));
    }

    #[test]
    fn every_tls_mode_and_reconnect_strategy_is_accepted_by_name() {
        for (name, want) in [
            ("Opportunistic", Tls::Opportunistic),
            ("OpportunisticInsecure", Tls::OpportunisticInsecure),
            ("Required", Tls::Required),
            ("RequiredInsecure", Tls::RequiredInsecure),
            ("Disabled", Tls::Disabled),
        ] {
            let c = path(&format!("return {{ enable_tls = '{name}' }}")).unwrap();
            assert_eq!(c.enable_tls, want);
        }
        assert!(Tls::RequiredInsecure.allow_insecure() && !Tls::Required.allow_insecure());
        assert!(Tls::Opportunistic.is_opportunistic() && !Tls::Disabled.is_opportunistic());
        for (name, want) in [
            ("ReconnectSameHost", ReconnectStrategy::ReconnectSameHost),
            ("ConnectNextHost", ReconnectStrategy::ConnectNextHost),
        ] {
            let c = path(&format!("return {{ reconnect_strategy = '{name}' }}")).unwrap();
            assert_eq!(c.reconnect_strategy, want);
        }
    }

    #[test]
    fn an_empty_prohibited_hosts_table_allows_loopback() {
        let c = path("return { prohibited_hosts = {} }").unwrap();
        assert!(c.prohibited_hosts.is_empty());
    }

    #[test]
    fn bad_values_are_refused_naming_the_value() {
        for (src, needle) in [
            ("enable_tls = 'Always'", "unknown variant `Always`"),
            ("reconnect_strategy = 'Retry'", "unknown variant `Retry`"),
            (
                "prohibited_hosts = { '10.0.0.1/24' }",
                "did you mean 10.0.0.0/24?",
            ),
            (
                "skip_hosts = { 'mx.example.com' }",
                "\"mx.example.com\": not an IP address",
            ),
            (
                "skip_hosts = '10.0.0.0/8'",
                "expected a list of CIDR strings",
            ),
            ("max_message_rate = 'fast'", "invalid rate \"fast\""),
            (
                "max_connection_rate = '10/fortnight'",
                "unknown period \"fortnight\"",
            ),
            ("connection_limit = 0", "invalid limit 0"),
            ("connection_limit = 'lots'", "invalid limit \"lots\""),
            ("idle_timeout = 'soon'", "invalid duration \"soon\""),
            ("smtp_port = 70000", "make_egress_path:"),
            (
                "smtp_auth_plain_password = { vault_path = 'x' }",
                "vault key sources are not supported",
            ),
        ] {
            let e = path(&format!("return {{ {src} }}")).unwrap_err();
            assert!(e.contains("make_egress_path: "), "{src}: {e}");
            assert!(e.contains(needle), "{src}: {e}");
        }
    }

    #[test]
    fn an_unknown_key_is_refused_by_name() {
        let e = path("return { conection_limit = 3 }").unwrap_err();
        assert!(
            e.contains("make_egress_path: ") && e.contains("unknown field `conection_limit`"),
            "{e}"
        );
    }

    #[test]
    fn each_unimplemented_kumomta_key_is_refused_as_not_supported() {
        for key in NOT_SUPPORTED {
            let e = path(&format!("return {{ {key} = true }}")).unwrap_err();
            assert!(
                e.ends_with(&format!(
                    "make_egress_path: key '{key}' is not supported by Hermod yet"
                )),
                "{e}"
            );
        }
        let e =
            path("return { use_lmtp = false, enable_dane = false, smtp_port = 25 }").unwrap_err();
        assert!(
            e.ends_with(
                "make_egress_path: keys 'enable_dane', 'use_lmtp' are not supported by Hermod yet"
            ),
            "{e}"
        );
    }

    #[test]
    fn the_password_never_shows_in_debug_output() {
        let c = path("return { smtp_auth_plain_password = { key_data = 'tiger' } }").unwrap();
        let shown = format!("{c:?}");
        assert!(!shown.contains("tiger"), "{shown}");
        let c = path("return { smtp_auth_plain_password = '/etc/tiger-file' }").unwrap();
        assert!(!format!("{c:?}").contains("tiger"));
    }
}
