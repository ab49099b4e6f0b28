//! `kumo.dns`: the policy-facing functions, with KumoMTA's names, arguments
//! and result shapes. Every error names the function and the policy's
//! `file:line`.

use std::net::IpAddr;
use std::sync::Arc;
use std::time::Duration;

use hermod_policy::config::from_lua_strict;
use hermod_policy::errors::{located, CallSite};
use mlua::{Lua, Table, Value};
use serde::Deserialize;

use crate::config::{DnsResolverConfig, ResolverSpec, TestResolverConfig, SPEC_TAGS};
use crate::error::DnsError;
use crate::global::global;
use crate::mx::MailExchanger;

/// Add the `kumo.dns` functions to `lua`.
pub fn register(lua: &Lua) -> mlua::Result<()> {
    let dns = hermod_policy::kumo_subtable(lua, "dns")?;

    dns.set(
        "lookup_mx",
        lua.create_async_function(|lua, (domain, resolver): (Value, Value)| async move {
            const WHAT: &str = "kumo.dns.lookup_mx";
            let site = CallSite::capture(&lua);
            let domain = string_arg(&site, WHAT, "domain", domain)?;
            let resolver = resolver_arg(&site, WHAT, resolver)?;
            let mx = crate::mx::resolve_mx_via(&domain, resolver.as_deref())
                .await
                .map_err(|e| site.error(format!("{WHAT}: {e}")))?;
            mx_table(&lua, &mx)
        })?,
    )?;

    dns.set(
        "lookup_addr",
        lua.create_async_function(
            |lua, (name, resolver, strategy): (Value, Value, Value)| async move {
                const WHAT: &str = "kumo.dns.lookup_addr";
                let site = CallSite::capture(&lua);
                let name = string_arg(&site, WHAT, "name", name)?;
                let resolver = resolver_arg(&site, WHAT, resolver)?;
                let strategy = match strategy {
                    Value::Nil => Strategy::Ipv4AndIpv6,
                    v => Strategy::parse(&string_arg(&site, WHAT, "strategy", v)?)
                        .map_err(|e| site.error(format!("{WHAT}: {e}")))?,
                };
                let addrs = match crate::addrs::resolve_addrs_via(&name, resolver.as_deref()).await
                {
                    Ok(addrs) => addrs,
                    // The name exists but has no addresses: an empty list.
                    // KumoMTA documents an error only for names that do not
                    // exist.
                    Err(DnsError::NoRecords { .. }) => Arc::from([]),
                    Err(e) => return Err(site.error(format!("{WHAT}: {e}"))),
                };
                Ok(strategy
                    .select(&addrs)
                    .into_iter()
                    .map(|a| a.to_string())
                    .collect::<Vec<_>>())
            },
        )?,
    )?;

    dns.set(
        "lookup_txt",
        lua.create_async_function(|lua, (name, resolver): (Value, Value)| async move {
            const WHAT: &str = "kumo.dns.lookup_txt";
            let site = CallSite::capture(&lua);
            let name = string_arg(&site, WHAT, "name", name)?;
            let resolver = resolver_arg(&site, WHAT, resolver)?;
            crate::addrs::lookup_txt_via(&name, resolver.as_deref())
                .await
                .map_err(|e| site.error(format!("{WHAT}: {e}")))
        })?,
    )?;

    dns.set(
        "configure_resolver",
        lua.create_function(|lua, config: Value| {
            const WHAT: &str = "kumo.dns.configure_resolver";
            let spec = if is_tagged(&config)? {
                from_lua_strict::<ResolverSpec>(lua, config, WHAT)?
            } else {
                ResolverSpec::Hickory(from_lua_strict::<DnsResolverConfig>(lua, config, WHAT)?)
            };
            let resolver = spec
                .build()
                .map_err(|e| located(lua, format!("{WHAT}: {e}")))?;
            global().set_resolver(resolver);
            Ok(())
        })?,
    )?;

    dns.set(
        "define_resolver",
        lua.create_function(|lua, (name, config): (Value, Value)| {
            const WHAT: &str = "kumo.dns.define_resolver";
            let name: String = from_lua_strict(lua, name, WHAT)?;
            let spec: ResolverSpec = from_lua_strict(lua, config, WHAT)?;
            let resolver = spec
                .build()
                .map_err(|e| located(lua, format!("{WHAT}({name:?}): {e}")))?;
            global().define(&name, resolver);
            Ok(())
        })?,
    )?;

    dns.set(
        "configure_test_resolver",
        lua.create_function(|lua, config: Value| {
            const WHAT: &str = "kumo.dns.configure_test_resolver";
            let config: TestResolverConfig = from_lua_strict(lua, config, WHAT)?;
            let resolver = config
                .build()
                .map_err(|e| located(lua, format!("{WHAT}: {e}")))?;
            global().set_resolver(Arc::new(resolver));
            Ok(())
        })?,
    )?;

    dns.set(
        "set_mx_timeout",
        lua.create_function(|lua, value: Value| {
            let d: DurationArg = from_lua_strict(lua, value, "kumo.dns.set_mx_timeout")?;
            global().set_mx_timeout(d.0);
            Ok(())
        })?,
    )?;

    dns.set(
        "set_mx_negative_cache_ttl",
        lua.create_function(|lua, value: Value| {
            let d: DurationArg = from_lua_strict(lua, value, "kumo.dns.set_mx_negative_cache_ttl")?;
            global().set_mx_negative_ttl(d.0);
            Ok(())
        })?,
    )?;

    Ok(())
}

#[derive(Deserialize)]
struct DurationArg(#[serde(deserialize_with = "hermod_policy::duration::deserialize")] Duration);

/// `'HickorySystemConfig'` or a table keyed by one of KumoMTA's resolver
/// kinds, as opposed to a bare `{ name_servers = ... }` table.
fn is_tagged(config: &Value) -> mlua::Result<bool> {
    Ok(match config {
        Value::String(_) => true,
        Value::Table(t) => {
            let mut tagged = false;
            for tag in SPEC_TAGS {
                tagged |= t.contains_key(tag)?;
            }
            tagged
        }
        _ => false,
    })
}

fn string_arg(site: &CallSite, what: &str, param: &str, value: Value) -> mlua::Result<String> {
    match value {
        Value::String(s) => Ok(s.to_str()?.to_string()),
        other => Err(site.error(format!(
            "{what}: {param} must be a string, not {}",
            other.type_name()
        ))),
    }
}

fn resolver_arg(site: &CallSite, what: &str, value: Value) -> mlua::Result<Option<String>> {
    match value {
        Value::Nil => Ok(None),
        v => string_arg(site, what, "resolver name", v).map(Some),
    }
}

/// KumoMTA's `lookup_addr` strategies (the egress path's
/// `ip_lookup_strategy` values).
#[derive(Clone, Copy, Debug, PartialEq)]
enum Strategy {
    Ipv4Only,
    Ipv6Only,
    Ipv4AndIpv6,
    Ipv6ThenIpv4,
    Ipv4ThenIpv6,
}

impl Strategy {
    fn parse(s: &str) -> Result<Self, String> {
        Ok(match s {
            "Ipv4Only" => Strategy::Ipv4Only,
            "Ipv6Only" => Strategy::Ipv6Only,
            "Ipv4AndIpv6" => Strategy::Ipv4AndIpv6,
            "Ipv6ThenIpv4" => Strategy::Ipv6ThenIpv4,
            "Ipv4ThenIpv6" => Strategy::Ipv4ThenIpv6,
            other => {
                return Err(format!(
                    "unknown strategy {other:?}; expected Ipv4Only, Ipv6Only, Ipv4AndIpv6, \
                     Ipv6ThenIpv4 or Ipv4ThenIpv6"
                ))
            }
        })
    }

    fn select(self, addrs: &[IpAddr]) -> Vec<IpAddr> {
        let v4 = || {
            addrs
                .iter()
                .copied()
                .filter(IpAddr::is_ipv4)
                .collect::<Vec<_>>()
        };
        let v6 = || {
            addrs
                .iter()
                .copied()
                .filter(IpAddr::is_ipv6)
                .collect::<Vec<_>>()
        };
        match self {
            Strategy::Ipv4Only => v4(),
            Strategy::Ipv6Only => v6(),
            Strategy::Ipv4AndIpv6 => addrs.to_vec(),
            Strategy::Ipv6ThenIpv4 => Some(v6()).filter(|a| !a.is_empty()).unwrap_or_else(v4),
            Strategy::Ipv4ThenIpv6 => Some(v4()).filter(|a| !a.is_empty()).unwrap_or_else(v6),
        }
    }
}

/// The table `kumo.dns.lookup_mx` returns, keyed as KumoMTA's.
fn mx_table(lua: &Lua, mx: &MailExchanger) -> mlua::Result<Table> {
    let by_pref = lua.create_table()?;
    for (pref, hosts) in &mx.by_pref {
        by_pref.set(*pref, hosts.clone())?;
    }
    let t = lua.create_table()?;
    t.set("by_pref", by_pref)?;
    t.set("site_name", mx.site_name.as_str())?;
    t.set("domain_name", mx.domain_name.as_str())?;
    t.set("hosts", mx.hosts.clone())?;
    t.set("is_domain_literal", mx.is_domain_literal)?;
    t.set("is_mx", mx.is_mx)?;
    t.set("is_secure", mx.is_secure)?;
    Ok(t)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn strategies_pick_families_as_kumomta_describes() {
        let v4: IpAddr = "192.0.2.1".parse().unwrap();
        let v6: IpAddr = "2001:db8::1".parse().unwrap();
        let both = [v4, v6];
        assert_eq!(Strategy::Ipv4Only.select(&both), vec![v4]);
        assert_eq!(Strategy::Ipv6Only.select(&both), vec![v6]);
        assert_eq!(Strategy::Ipv4AndIpv6.select(&both), vec![v4, v6]);
        assert_eq!(Strategy::Ipv6ThenIpv4.select(&both), vec![v6]);
        assert_eq!(Strategy::Ipv6ThenIpv4.select(&[v4]), vec![v4]);
        assert_eq!(Strategy::Ipv4ThenIpv6.select(&[v6]), vec![v6]);
        assert!(Strategy::parse("ipv4only").is_err());
    }
}
