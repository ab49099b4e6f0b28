//! `kumo.regex_set_map.new({ [PATTERN] = VALUE, ... })`: an immutable map
//! from regular expressions to values. Indexing it with a text,
//! `map['550 5.1.1 no such user']`, searches the text with every pattern in
//! one pass and gives the value of a pattern that matches (nil if none).
//!
//! When several patterns match, KumoMTA returns whichever came first in
//! Lua's table order, which is arbitrary; Hermod orders the patterns by
//! their text, so the answer is the same on every run and every context.
//! A pattern that does not compile is named in the error.

use std::sync::Once;

use hermod_policy::errors::located;
use hermod_policy::portable::Portable;
use mlua::{Lua, MetaMethod, UserData, UserDataMethods, Value};
use regex::RegexSet;

/// The regex set map object.
#[derive(Clone)]
pub struct RegexSetMap {
    set: RegexSet,
    values: Vec<Portable>,
}

impl RegexSetMap {
    /// Compile `rules` (pattern, value); the error names the first
    /// pattern that does not compile.
    pub fn new(mut rules: Vec<(String, Portable)>) -> Result<Self, String> {
        rules.sort_by(|a, b| a.0.cmp(&b.0));
        // Compiling one by one first finds the pattern to blame; the set's
        // own error does not say which of its patterns failed.
        for (pattern, _) in &rules {
            regex::Regex::new(pattern).map_err(|e| format!("invalid pattern {pattern:?}: {e}"))?;
        }
        let set = RegexSet::new(rules.iter().map(|(p, _)| p))
            .map_err(|e| format!("cannot compile the patterns together: {e}"))?;
        Ok(RegexSetMap {
            set,
            values: rules.into_iter().map(|(_, v)| v).collect(),
        })
    }

    /// The value of the first pattern (in pattern order) that matches.
    pub fn lookup(&self, text: &str) -> Option<&Portable> {
        let index = self.set.matches(text).into_iter().next()?;
        self.values.get(index)
    }
}

impl UserData for RegexSetMap {
    fn add_methods<M: UserDataMethods<Self>>(methods: &mut M) {
        methods.add_meta_method(MetaMethod::Index, |lua, this, key: Value| match key {
            Value::String(s) => match this.lookup(&s.to_string_lossy()) {
                Some(v) => v.restore(lua),
                None => Ok(Value::Nil),
            },
            _ => Ok(Value::Nil),
        });
        methods.add_meta_method(MetaMethod::NewIndex, |lua, _, _: mlua::MultiValue| {
            Err::<(), _>(located(
                lua,
                "regex_set_map: the map cannot be changed after it is built; \
                 pass every pattern to kumo.regex_set_map.new",
            ))
        });
    }
}

pub fn register(lua: &Lua) -> mlua::Result<()> {
    static PORTABLE: Once = Once::new();
    PORTABLE.call_once(hermod_policy::portable::register_handle::<RegexSetMap>);

    let m = crate::module(lua, "regex_set_map")?;
    m.set(
        "new",
        lua.create_function(|lua, init: Value| {
            const WHAT: &str = "kumo.regex_set_map.new";
            let mut rules = Vec::new();
            match init {
                Value::Nil => {}
                Value::Table(t) => {
                    for pair in t.pairs::<Value, Value>() {
                        let (k, v) = pair?;
                        let pattern = crate::str_arg(lua, WHAT, "a pattern", &k)?;
                        if let Some(value) = crate::domain_map::stored(lua, WHAT, &pattern, &v)? {
                            rules.push((pattern, value));
                        }
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
            RegexSetMap::new(rules).map_err(|e| located(lua, format!("{WHAT}: {e}")))
        })?,
    )?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rules(pairs: &[(&str, i64)]) -> Vec<(String, Portable)> {
        pairs
            .iter()
            .map(|(p, v)| (p.to_string(), Portable::Int(*v)))
            .collect()
    }

    #[test]
    fn of_several_matching_patterns_the_first_by_text_wins() {
        let m = RegexSetMap::new(rules(&[("z", 1), ("b", 2), ("a", 3)])).unwrap();
        assert!(matches!(m.lookup("zba"), Some(Portable::Int(3))));
        assert!(matches!(m.lookup("zb"), Some(Portable::Int(2))));
        assert!(m.lookup("q").is_none());
    }

    #[test]
    fn a_bad_pattern_is_named() {
        let Err(e) = RegexSetMap::new(rules(&[("ok", 1), ("bad(", 2)])) else {
            panic!("bad( compiled");
        };
        assert!(e.contains("invalid pattern \"bad(\""), "{e}");
    }
}
