//! `kumo.make_listener_domain{...}`: what the SMTP listener allows for one
//! domain, as the `get_listener_domain(domain, listener, conn_meta)` event
//! answers it: relaying to it (`relay_to`), relaying from it (`relay_from`
//! by peer address, and Hermod's `relay_from_authz` by SMTP AUTH identity),
//! and logging the OOB bounces and ARF feedback reports sent to it.
//! Strict keys; returned to Lua as userdata.

use std::time::Duration;

use mlua::{Lua, UserData, UserDataFields, Value};
use serde::{Deserialize, Deserializer};

use crate::cidr::CidrSet;
use crate::config::from_lua_strict;

/// What to do with a message that turns out to be a report (`log_oob`,
/// `log_arf`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum ReportDisposition {
    /// Do not look for a report; the message is ordinary mail.
    #[default]
    Ignore,
    /// Log the report, then drop the message without relaying it.
    LogThenDrop,
    /// Log the report and relay the message too.
    LogThenRelay,
}

impl ReportDisposition {
    pub fn should_log(self) -> bool {
        !matches!(self, Self::Ignore)
    }

    pub fn should_relay(self) -> bool {
        matches!(self, Self::LogThenRelay)
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Self::Ignore => "Ignore",
            Self::LogThenDrop => "LogThenDrop",
            Self::LogThenRelay => "LogThenRelay",
        }
    }
}

impl<'de> Deserialize<'de> for ReportDisposition {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        // Booleans are KumoMTA's older form: true = LogThenRelay, false = Ignore.
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum Raw {
            Bool(bool),
            Name(String),
        }
        let bad = || {
            serde::de::Error::custom(
                "expected true, false, 'Ignore', 'LogThenDrop' or 'LogThenRelay'",
            )
        };
        match Raw::deserialize(d).map_err(|_: D::Error| bad())? {
            Raw::Bool(true) => Ok(Self::LogThenRelay),
            Raw::Bool(false) => Ok(Self::Ignore),
            Raw::Name(n) => match n.as_str() {
                "Ignore" => Ok(Self::Ignore),
                "LogThenDrop" => Ok(Self::LogThenDrop),
                "LogThenRelay" => Ok(Self::LogThenRelay),
                other => Err(serde::de::Error::custom(format!(
                    "invalid value {other:?}: expected true, false, 'Ignore', 'LogThenDrop' or 'LogThenRelay'"
                ))),
            },
        }
    }
}

/// One domain's listener settings. Field names are the policy's keys.
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ListenerDomain {
    /// Anyone may relay to this domain (false).
    #[serde(default)]
    pub relay_to: bool,
    /// Peers in these blocks may relay anywhere with this sender domain.
    #[serde(default)]
    pub relay_from: CidrSet,
    /// Hermod's addition (KumoMTA's helper file key, made a parameter): SMTP
    /// AUTH identities (`authz_id`) that may relay anywhere with this sender
    /// domain, from any address.
    #[serde(default)]
    pub relay_from_authz: Vec<String>,
    #[serde(default)]
    pub log_oob: ReportDisposition,
    #[serde(default)]
    pub log_arf: ReportDisposition,
    /// Accepted and ignored, as in KumoMTA (deprecated there).
    #[serde(
        default,
        rename = "ttl",
        deserialize_with = "crate::duration::deserialize_opt"
    )]
    pub _ttl: Option<Duration>,
}

impl ListenerDomain {
    /// Whether mail with this domain as the sender's may be relayed by a
    /// peer at `ip` authenticated as `authz_id`.
    pub fn allows_relay_from(&self, ip: std::net::IpAddr, authz_id: Option<&str>) -> bool {
        self.relay_from.contains(ip)
            || authz_id.is_some_and(|id| self.relay_from_authz.iter().any(|a| a == id))
    }
}

impl UserData for ListenerDomain {
    fn add_fields<F: UserDataFields<Self>>(fields: &mut F) {
        // Readable, so that helpers and tests can inspect what they built.
        fields.add_field_method_get("relay_to", |_, this| Ok(this.relay_to));
        fields.add_field_method_get("log_oob", |_, this| Ok(this.log_oob.as_str()));
        fields.add_field_method_get("log_arf", |_, this| Ok(this.log_arf.as_str()));
        fields.add_field_method_get("relay_from", |_, this| {
            Ok(this
                .relay_from
                .blocks()
                .iter()
                .map(|b| b.to_string())
                .collect::<Vec<_>>())
        });
        fields.add_field_method_get("relay_from_authz", |_, this| {
            Ok(this.relay_from_authz.clone())
        });
    }
}

pub(crate) fn make_listener_domain(lua: &Lua, params: Value) -> mlua::Result<ListenerDomain> {
    let params = match params {
        Value::Nil => Value::Table(lua.create_table()?),
        v => v,
    };
    from_lua_strict(lua, params, "make_listener_domain")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn domain(src: &str) -> Result<ListenerDomain, String> {
        let lua = Lua::new();
        let v: Value = lua.load(src).eval().map_err(|e| e.to_string())?;
        make_listener_domain(&lua, v).map_err(|e| e.to_string())
    }

    #[test]
    fn an_empty_table_relays_nothing_and_logs_nothing() {
        let d = domain("return {}").unwrap();
        assert_eq!(d, ListenerDomain::default());
        assert!(!d.relay_to && d.relay_from.is_empty());
        assert_eq!(
            (d.log_oob, d.log_arf),
            (ReportDisposition::Ignore, ReportDisposition::Ignore)
        );
    }

    #[test]
    fn log_values_take_kumomtas_names_and_booleans() {
        for (v, want) in [
            ("'Ignore'", ReportDisposition::Ignore),
            ("'LogThenDrop'", ReportDisposition::LogThenDrop),
            ("'LogThenRelay'", ReportDisposition::LogThenRelay),
            ("true", ReportDisposition::LogThenRelay),
            ("false", ReportDisposition::Ignore),
        ] {
            let d = domain(&format!("return {{ log_oob = {v}, log_arf = {v} }}")).unwrap();
            assert_eq!((d.log_oob, d.log_arf), (want, want), "{v}");
        }
        let e = domain("return { log_arf = 'yes' }").unwrap_err();
        assert!(
            e.contains("make_listener_domain: ") && e.contains("'LogThenDrop'"),
            "{e}"
        );
    }

    #[test]
    fn relay_from_matches_peers_and_relay_from_authz_matches_identities() {
        let d = domain(
            "return { relay_from = { '10.0.0.0/24' }, relay_from_authz = { 'alice' }, ttl = '1 minute' }",
        )
        .unwrap();
        let inside: std::net::IpAddr = "10.0.0.7".parse().unwrap();
        let outside: std::net::IpAddr = "10.0.1.7".parse().unwrap();
        assert!(d.allows_relay_from(inside, None));
        assert!(!d.allows_relay_from(outside, None));
        assert!(d.allows_relay_from(outside, Some("alice")));
        assert!(!d.allows_relay_from(outside, Some("bob")));
    }

    #[test]
    fn unknown_keys_and_bad_cidrs_are_refused_by_name() {
        let e = domain("return { relay_too = true }").unwrap_err();
        assert!(
            e.contains("make_listener_domain: ") && e.contains("unknown field `relay_too`"),
            "{e}"
        );
        let e = domain("return { relay_from = { '10.0.0.1/24' } }").unwrap_err();
        assert!(e.contains("did you mean 10.0.0.0/24?"), "{e}");
    }
}
