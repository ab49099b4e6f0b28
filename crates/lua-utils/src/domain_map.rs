//! `kumo.domain_map.new([{MAP}])`: a map from domain names to values where
//! a key `*.example.com` matches every name below `example.com` (not
//! `example.com` itself), and an exact key wins over a wildcard. Read and
//! write it like a table: `map['a.example.com']`, `map['*.x.org'] = 1`.
//!
//! Beyond KumoMTA: names are compared without regard to ASCII case and
//! without a trailing dot, as DNS compares them; assigning `nil` removes a
//! key; and a wildcard still answers for a name whose parent exists only
//! as part of a longer key (with `*.example.com` and `a.b.example.com`
//! set, KumoMTA finds nothing for `b.example.com`, Hermod the wildcard).
//!
//! Values are copied in when set and copied out on every read, as in
//! KumoMTA: changing a table read from the map does not change the map.
//! `pairs(map)` iterates over the keys (lower-cased) and copies of the values.

use std::collections::HashMap;
use std::sync::Once;

use hermod_policy::errors::located;
use hermod_policy::portable::Portable;
use mlua::{Lua, MetaMethod, UserData, UserDataMethods, Value};

#[derive(Clone, Default)]
struct Node {
    value: Option<Portable>,
    children: HashMap<String, Node>,
}

/// The domain map object.
#[derive(Clone, Default)]
pub struct DomainMap {
    top: HashMap<String, Node>,
}

/// The labels of `name` from the top-level domain down, lower-cased.
fn labels(name: &str) -> impl Iterator<Item = String> + '_ {
    name.strip_suffix('.')
        .unwrap_or(name)
        .rsplit('.')
        .map(|l| l.to_ascii_lowercase())
}

impl DomainMap {
    pub fn insert(&mut self, key: &str, value: Option<Portable>) {
        let mut nodes = &mut self.top;
        let mut labels = labels(key).peekable();
        while let Some(label) = labels.next() {
            let node = nodes.entry(label).or_default();
            if labels.peek().is_none() {
                node.value = value;
                return;
            }
            nodes = &mut node.children;
        }
    }

    /// The exact entry for `name`, else the wildcard closest to it.
    pub fn get(&self, name: &str) -> Option<&Portable> {
        let mut nodes = &self.top;
        let mut wildcard = None;
        let mut labels = labels(name).peekable();
        while let Some(label) = labels.next() {
            // A `*` here covers this label and everything below it.
            if let Some(w) = nodes.get("*").and_then(|n| n.value.as_ref()) {
                wildcard = Some(w);
            }
            let Some(node) = nodes.get(&label) else {
                return wildcard;
            };
            if labels.peek().is_none() {
                return node.value.as_ref().or(wildcard);
            }
            nodes = &node.children;
        }
        wildcard
    }
}

impl DomainMap {
    /// Every key with its value, keys as inserted (lower-cased).
    pub fn entries(&self) -> Vec<(String, &Portable)> {
        fn walk<'a>(
            nodes: &'a HashMap<String, Node>,
            suffix: &str,
            out: &mut Vec<(String, &'a Portable)>,
        ) {
            for (label, node) in nodes {
                let name = if suffix.is_empty() {
                    label.clone()
                } else {
                    format!("{label}.{suffix}")
                };
                if let Some(v) = &node.value {
                    out.push((name.clone(), v));
                }
                walk(&node.children, &name, out);
            }
        }
        let mut out = Vec::new();
        walk(&self.top, "", &mut out);
        out
    }
}

impl UserData for DomainMap {
    fn add_methods<M: UserDataMethods<Self>>(methods: &mut M) {
        // `pairs(map)` walks a copy of the entries, as KumoMTA's helpers do
        // when they check a loaded configuration.
        methods.add_meta_method(MetaMethod::Pairs, |lua, this, ()| {
            let copy = lua.create_table()?;
            for (k, v) in this.entries() {
                copy.raw_set(k, v.restore(lua)?)?;
            }
            let next: mlua::Function = lua.globals().get("next")?;
            Ok((next, copy, Value::Nil))
        });
        methods.add_meta_method(MetaMethod::Index, |lua, this, key: Value| match key {
            Value::String(s) => match this.get(&s.to_str()?) {
                Some(v) => v.restore(lua),
                None => Ok(Value::Nil),
            },
            _ => Ok(Value::Nil),
        });
        methods.add_meta_method_mut(
            MetaMethod::NewIndex,
            |lua, this, (key, value): (Value, Value)| {
                let key = crate::str_arg(lua, "domain_map", "key", &key)?;
                let value = stored(lua, "domain_map", &key, &value)?;
                this.insert(&key, value);
                Ok(())
            },
        );
    }
}

/// `value` as the map keeps it: `None` for nil, an error naming the key
/// for values that cannot be copied (functions, coroutines, other objects).
pub(crate) fn stored(
    lua: &Lua,
    what: &str,
    key: &str,
    value: &Value,
) -> mlua::Result<Option<Portable>> {
    if value.is_nil() {
        return Ok(None);
    }
    Portable::capture(lua, value).map(Some).ok_or_else(|| {
        located(
            lua,
            format!(
                "{what}: the value for {key:?} cannot be stored: a {} (only plain data: \
                 strings, numbers, booleans and tables of them)",
                value.type_name()
            ),
        )
    })
}

pub fn register(lua: &Lua) -> mlua::Result<()> {
    static PORTABLE: Once = Once::new();
    // A map built in `init` and kept in a global reaches every context.
    PORTABLE.call_once(hermod_policy::portable::register_handle::<DomainMap>);

    let m = crate::module(lua, "domain_map")?;
    m.set(
        "new",
        lua.create_function(|lua, init: Value| {
            const WHAT: &str = "kumo.domain_map.new";
            let mut map = DomainMap::default();
            match init {
                Value::Nil => {}
                Value::Table(t) => {
                    for pair in t.pairs::<Value, Value>() {
                        let (k, v) = pair?;
                        let key = crate::str_arg(lua, WHAT, "a key", &k)?;
                        let value = stored(lua, WHAT, &key, &v)?;
                        map.insert(&key, value);
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

    fn map(keys: &[&str]) -> DomainMap {
        let mut m = DomainMap::default();
        for (i, k) in keys.iter().enumerate() {
            m.insert(k, Some(Portable::Int(i as i64)));
        }
        m
    }

    fn get(m: &DomainMap, name: &str) -> Option<i64> {
        match m.get(name) {
            Some(Portable::Int(i)) => Some(*i),
            _ => None,
        }
    }

    #[test]
    fn a_wildcard_matches_names_below_it_but_not_its_parent() {
        let m = map(&["*.example.com", "explicit.example.com"]);
        assert_eq!(get(&m, "example.com"), None);
        assert_eq!(get(&m, "foo.example.com"), Some(0));
        assert_eq!(get(&m, "a.b.example.com"), Some(0));
        assert_eq!(get(&m, "explicit.example.com"), Some(1));
        assert_eq!(get(&m, "x.explicit.example.com"), Some(0));
        assert_eq!(get(&m, "example.org"), None);
    }

    #[test]
    fn names_compare_without_case_or_trailing_dot() {
        let m = map(&["Example.COM"]);
        assert_eq!(get(&m, "example.com."), Some(0));
    }

    #[test]
    fn a_wildcard_answers_for_an_intermediate_name() {
        let m = map(&["*.example.com", "a.b.example.com"]);
        assert_eq!(get(&m, "b.example.com"), Some(0));
        assert_eq!(get(&m, "a.b.example.com"), Some(1));
    }

    #[test]
    fn the_closest_wildcard_wins() {
        let m = map(&["*.com", "*.example.com"]);
        assert_eq!(get(&m, "x.example.com"), Some(1));
        assert_eq!(get(&m, "example.com"), Some(0));
    }
}
