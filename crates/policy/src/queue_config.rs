//! `kumo.make_queue_config{...}`: strict keys, returned to Lua as userdata.

use std::time::Duration;

use mlua::{Lua, UserData, Value};
use serde::Deserialize;

use crate::config::from_lua_strict;
use crate::mx_list::MxListEntry;

fn default_retry() -> Duration {
    Duration::from_secs(20 * 60)
}
fn default_max_age() -> Duration {
    Duration::from_secs(7 * 86400)
}
fn default_refresh() -> Duration {
    Duration::from_secs(60)
}
fn default_reap() -> Duration {
    Duration::from_secs(600)
}
fn default_pool() -> String {
    "unspecified".into()
}
fn one() -> usize {
    1
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CustomLuaConfig {
    pub constructor: String,
    #[serde(default = "one")]
    pub batch_size: usize,
    #[serde(default = "one")]
    pub min_batch_size: usize,
    #[serde(default, deserialize_with = "crate::duration::deserialize")]
    pub max_batch_latency: Duration,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SmtpProtocolConfig {
    /// Hosts to deliver to instead of the domain's MX records, in order.
    #[serde(default, deserialize_with = "crate::mx_list::deserialize_list")]
    pub mx_list: Vec<MxListEntry>,
    #[serde(default)]
    pub treat_mx_list_as_secure: bool,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MaildirConfig {
    pub maildir_path: String,
    #[serde(default)]
    pub dir_mode: Option<u32>,
    #[serde(default)]
    pub file_mode: Option<u32>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
struct CustomLuaWrapper {
    custom_lua: CustomLuaConfig,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
struct SmtpWrapper {
    smtp: SmtpProtocolConfig,
}

/// Which delivery protocol a queue uses; decided by the keys present.
#[derive(Debug, Clone, Default)]
pub enum ProtocolConfig {
    #[default]
    Smtp,
    SmtpWith(SmtpProtocolConfig),
    Maildir(MaildirConfig),
    CustomLua(CustomLuaConfig),
}

impl<'de> Deserialize<'de> for ProtocolConfig {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let v = serde_json::Value::deserialize(d)?;
        let keys: Vec<String> = v
            .as_object()
            .map(|o| o.keys().cloned().collect())
            .unwrap_or_default();
        let err = |variant: &str, e: serde_json::Error| {
            serde::de::Error::custom(format!("protocol {variant}: {e}"))
        };
        if keys.iter().any(|k| k == "custom_lua") {
            return serde_json::from_value::<CustomLuaWrapper>(v)
                .map(|w| ProtocolConfig::CustomLua(w.custom_lua))
                .map_err(|e| err("custom_lua", e));
        }
        if keys.iter().any(|k| k == "maildir_path") {
            return serde_json::from_value::<MaildirConfig>(v)
                .map(ProtocolConfig::Maildir)
                .map_err(|e| err("maildir", e));
        }
        if keys.iter().any(|k| k == "smtp") {
            return serde_json::from_value::<SmtpWrapper>(v)
                .map(|w| ProtocolConfig::SmtpWith(w.smtp))
                .map_err(|e| err("smtp", e));
        }
        Err(serde::de::Error::custom(format!(
            "protocol table did not match any variant (custom_lua, maildir_path, smtp); keys: {keys:?}"
        )))
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct QueueConfig {
    #[serde(
        default = "default_retry",
        deserialize_with = "crate::duration::deserialize"
    )]
    pub retry_interval: Duration,
    #[serde(default, deserialize_with = "crate::duration::deserialize_opt")]
    pub max_retry_interval: Option<Duration>,
    #[serde(
        default = "default_max_age",
        deserialize_with = "crate::duration::deserialize"
    )]
    pub max_age: Duration,
    #[serde(default)]
    pub protocol: ProtocolConfig,
    #[serde(default = "default_pool")]
    pub egress_pool: String,
    #[serde(default)]
    pub max_message_rate: Option<String>,
    #[serde(
        default = "default_reap",
        deserialize_with = "crate::duration::deserialize"
    )]
    pub reap_interval: Duration,
    #[serde(
        default = "default_refresh",
        deserialize_with = "crate::duration::deserialize"
    )]
    pub refresh_interval: Duration,
    #[serde(default)]
    pub refresh_strategy: Option<String>,
    #[serde(default)]
    pub strategy: Option<String>,
    #[serde(default, deserialize_with = "crate::duration::deserialize_opt")]
    pub timerwheel_tick_interval: Option<Duration>,
    #[serde(default)]
    pub provider_name: Option<String>,
    #[serde(default)]
    pub shrink_policy: Option<serde_json::Value>,
}

impl Default for QueueConfig {
    fn default() -> Self {
        // An empty table decodes to all defaults; a JSON round trip cannot fail.
        serde_json::from_value(serde_json::json!({})).unwrap_or(QueueConfig {
            retry_interval: default_retry(),
            max_retry_interval: None,
            max_age: default_max_age(),
            protocol: ProtocolConfig::Smtp,
            egress_pool: default_pool(),
            max_message_rate: None,
            reap_interval: default_reap(),
            refresh_interval: default_refresh(),
            refresh_strategy: None,
            strategy: None,
            timerwheel_tick_interval: None,
            provider_name: None,
            shrink_policy: None,
        })
    }
}

impl UserData for QueueConfig {}

pub(crate) fn make_queue_config(lua: &Lua, params: Value) -> mlua::Result<QueueConfig> {
    let params = match params {
        Value::Nil => Value::Table(lua.create_table()?),
        v => v,
    };
    from_lua_strict(lua, params, "make_queue_config")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_match_the_spec() {
        let c = QueueConfig::default();
        assert_eq!(c.retry_interval, Duration::from_secs(1200));
        assert_eq!(c.max_age, Duration::from_secs(7 * 86400));
        assert!(c.max_retry_interval.is_none());
        assert!(matches!(c.protocol, ProtocolConfig::Smtp));
    }

    #[test]
    fn custom_lua_protocol_parses_with_batch_defaults() {
        let lua = Lua::new();
        let v: Value = lua
            .load("return { retry_interval = '1m', protocol = { custom_lua = { constructor = 'make.nats' } } }")
            .eval()
            .unwrap();
        let c = make_queue_config(&lua, v).unwrap();
        assert_eq!(c.retry_interval, Duration::from_secs(60));
        match c.protocol {
            ProtocolConfig::CustomLua(cl) => {
                assert_eq!(cl.constructor, "make.nats");
                assert_eq!(cl.batch_size, 1);
                assert_eq!(cl.max_batch_latency, Duration::ZERO);
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn unknown_keys_are_rejected_by_name() {
        let lua = Lua::new();
        let v: Value = lua.load("return { retry_intervl = '1m' }").eval().unwrap();
        let e = make_queue_config(&lua, v).unwrap_err().to_string();
        assert!(e.contains("retry_intervl"), "{e}");
        let v: Value = lua
            .load("return { protocol = { custom_lua = { constructor = 'x', batchsize = 2 } } }")
            .eval()
            .unwrap();
        let e = make_queue_config(&lua, v).unwrap_err().to_string();
        assert!(e.contains("batchsize"), "{e}");
        let v: Value = lua
            .load("return { protocol = { carrier_pigeon = {} } }")
            .eval()
            .unwrap();
        let e = make_queue_config(&lua, v).unwrap_err().to_string();
        assert!(e.contains("did not match any variant"), "{e}");
    }

    #[test]
    fn bad_durations_are_rejected() {
        let lua = Lua::new();
        let v: Value = lua.load("return { max_age = 'forever' }").eval().unwrap();
        let e = make_queue_config(&lua, v).unwrap_err().to_string();
        assert!(e.contains("forever"), "{e}");
    }

    #[test]
    fn mx_list_entries_parse_in_every_documented_form() {
        let lua = Lua::new();
        let v: Value = lua
            .load(
                "return { protocol = { smtp = { mx_list = { 'smart.host.local:2025', '[10.0.0.1]', \
                 { name = 'mx.example.com', addr = '10.0.0.1:2025' }, \
                 { name = 'mx6', addr = '::1', is_secure = true } } } } }",
            )
            .eval()
            .unwrap();
        let ProtocolConfig::SmtpWith(smtp) = make_queue_config(&lua, v).unwrap().protocol else {
            panic!("not smtp");
        };
        let ip = |s: &str| s.parse::<std::net::IpAddr>().unwrap();
        assert_eq!(
            smtp.mx_list,
            [
                MxListEntry::Host {
                    name: "smart.host.local".into(),
                    port: Some(2025)
                },
                MxListEntry::Literal {
                    addr: ip("10.0.0.1"),
                    port: None,
                    written: "[10.0.0.1]".into()
                },
                MxListEntry::Resolved {
                    name: "mx.example.com".into(),
                    addr: ip("10.0.0.1"),
                    port: Some(2025),
                    is_secure: false
                },
                MxListEntry::Resolved {
                    name: "mx6".into(),
                    addr: ip("::1"),
                    port: None,
                    is_secure: true
                },
            ]
        );
        let v: Value = lua
            .load("return { protocol = { smtp = { mx_list = {} } } }")
            .eval()
            .unwrap();
        let ProtocolConfig::SmtpWith(smtp) = make_queue_config(&lua, v).unwrap().protocol else {
            panic!("not smtp");
        };
        assert!(smtp.mx_list.is_empty());
    }

    #[test]
    fn malformed_mx_list_entries_are_refused_with_the_entry_named() {
        let lua = Lua::new();
        for (entry, needle) in [
            (
                "'[10.0.0.1'",
                "mx_list entry \"[10.0.0.1\": an address literal needs a closing ']'",
            ),
            ("'mx:smtp'", "\"smtp\" is not a port number"),
            (
                "{ name = 'mx', addr = 'mx.example.com' }",
                "addr must be an IP address",
            ),
            ("{ name = 'mx', adr = '10.0.0.1' }", "unknown field `adr`"),
            ("42", "expected a host string"),
        ] {
            let src = format!("return {{ protocol = {{ smtp = {{ mx_list = {{ {entry} }} }} }} }}");
            let v: Value = lua.load(src).eval().unwrap();
            let e = make_queue_config(&lua, v).unwrap_err().to_string();
            assert!(
                e.contains("make_queue_config: ") && e.contains("protocol smtp: "),
                "{e}"
            );
            assert!(e.contains(needle), "{entry}: {e}");
        }
    }
}
