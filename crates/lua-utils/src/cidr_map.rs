//! `kumo.cidr.make_map([{MAP}])`: a map from CIDR blocks (`'10.0.0.0/24'`)
//! and single addresses to values. Indexing it with an address gives the
//! value of the most specific block that contains it, or nil; read and
//! write it like a table. As KumoMTA documents, an address may also be
//! written as a domain literal or with a port (`'[127.0.0.1]'`,
//! `'127.0.0.1:25'`, `'[::1]:25'`), so `map[msg:get_meta 'received_from']`
//! works, and a key that is no address at all finds nothing.
//!
//! Blocks are parsed by [`hermod_policy::Cidr`], which refuses a block
//! with host bits set (`'10.0.0.1/24'`) and says what was probably meant.
//! Values are copied in and out, as with `kumo.domain_map`.

use std::net::{IpAddr, SocketAddr};
use std::sync::Once;

use hermod_policy::errors::located;
use hermod_policy::portable::Portable;
use hermod_policy::Cidr;
use mlua::{Lua, MetaMethod, UserData, UserDataMethods, Value};

/// The CIDR map object. Lookups scan every block: maps of source networks
/// are small, and a scan needs no index to keep in step with assignments.
#[derive(Clone, Default)]
pub struct CidrMap {
    entries: Vec<(Cidr, Portable)>,
}

impl CidrMap {
    pub fn insert(&mut self, block: Cidr, value: Option<Portable>) {
        self.entries.retain(|(c, _)| *c != block);
        if let Some(v) = value {
            self.entries.push((block, v));
        }
    }

    /// The value of the longest-prefix block containing `ip`.
    pub fn get(&self, ip: IpAddr) -> Option<&Portable> {
        self.entries
            .iter()
            .filter(|(c, _)| c.contains(ip))
            .max_by_key(|(c, _)| c.prefix())
            .map(|(_, v)| v)
    }
}

/// An address as policies hold one: plain, with a port, or as a domain
/// literal (`[10.0.0.1]`, `[IPv6:::1]`, `[::1]:25`).
pub fn parse_addr(text: &str) -> Option<IpAddr> {
    let text = text.trim();
    if let Ok(ip) = text.parse::<IpAddr>() {
        return Some(ip);
    }
    if let Ok(sa) = text.parse::<SocketAddr>() {
        return Some(sa.ip());
    }
    let inner = text.strip_prefix('[')?.split(']').next()?;
    let inner = match inner.get(..5) {
        Some(tag) if tag.eq_ignore_ascii_case("IPv6:") => &inner[5..],
        _ => inner,
    };
    inner.parse().ok()
}

/// A map key: a CIDR block, or an address in any form [`parse_addr`] takes.
fn parse_key(text: &str) -> Result<Cidr, String> {
    match Cidr::parse(text) {
        Ok(c) => Ok(c),
        Err(e) => match parse_addr(text) {
            Some(ip) => Cidr::parse(&ip.to_string()).map_err(|e| e.to_string()),
            None => Err(e.to_string()),
        },
    }
}

fn set(lua: &Lua, what: &str, map: &mut CidrMap, key: &Value, value: &Value) -> mlua::Result<()> {
    let key = crate::str_arg(lua, what, "key", key)?;
    let block = parse_key(&key).map_err(|e| located(lua, format!("{what}: {e}")))?;
    let value = crate::domain_map::stored(lua, what, &key, value)?;
    map.insert(block, value);
    Ok(())
}

impl UserData for CidrMap {
    fn add_methods<M: UserDataMethods<Self>>(methods: &mut M) {
        methods.add_meta_method(MetaMethod::Index, |lua, this, key: Value| {
            let ip = match &key {
                Value::String(s) => parse_addr(&s.to_string_lossy()),
                _ => None,
            };
            match ip.and_then(|ip| this.get(ip)) {
                Some(v) => v.restore(lua),
                None => Ok(Value::Nil),
            }
        });
        methods.add_meta_method_mut(
            MetaMethod::NewIndex,
            |lua, this, (key, value): (Value, Value)| set(lua, "cidr_map", this, &key, &value),
        );
    }
}

pub fn register(lua: &Lua) -> mlua::Result<()> {
    static PORTABLE: Once = Once::new();
    PORTABLE.call_once(hermod_policy::portable::register_handle::<CidrMap>);

    let m = crate::module(lua, "cidr")?;
    m.set(
        "make_map",
        lua.create_function(|lua, init: Value| {
            const WHAT: &str = "kumo.cidr.make_map";
            let mut map = CidrMap::default();
            match init {
                Value::Nil => {}
                Value::Table(t) => {
                    for pair in t.pairs::<Value, Value>() {
                        let (k, v) = pair?;
                        set(lua, WHAT, &mut map, &k, &v)?;
                    }
                }
                other => {
                    return Err(located(
                        lua,
                        format!(
                            "{WHAT}: expected a table or nothing, got {}",
                            other.type_name()
                        ),
                    ))
                }
            }
            Ok(map)
        })?,
    )?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn addresses_are_read_plain_with_a_port_or_as_domain_literals() {
        let v4: IpAddr = "127.0.0.1".parse().unwrap();
        let v6: IpAddr = "::1".parse().unwrap();
        for text in ["127.0.0.1", "127.0.0.1:25", "[127.0.0.1]", " 127.0.0.1 "] {
            assert_eq!(parse_addr(text), Some(v4), "{text}");
        }
        for text in ["::1", "[::1]:25", "[::1]", "[IPv6:::1]", "[ipv6:::1]"] {
            assert_eq!(parse_addr(text), Some(v6), "{text}");
        }
        assert_eq!(parse_addr("not.set"), None);
        assert_eq!(parse_addr("[nope]"), None);
    }

    #[test]
    fn the_most_specific_block_wins() {
        let mut m = CidrMap::default();
        for (k, v) in [("10.0.0.0/8", 1), ("10.1.0.0/16", 2), ("10.1.2.3", 3)] {
            m.insert(Cidr::parse(k).unwrap(), Some(Portable::Int(v)));
        }
        let get = |ip: &str| match m.get(ip.parse().unwrap()) {
            Some(Portable::Int(i)) => Some(*i),
            _ => None,
        };
        assert_eq!(get("10.9.9.9"), Some(1));
        assert_eq!(get("10.1.9.9"), Some(2));
        assert_eq!(get("10.1.2.3"), Some(3));
        assert_eq!(get("11.0.0.1"), None);
    }
}
