//! `kumo.regex.compile(PATTERN)` and `kumo.regex.escape(TEXT)`. The
//! compiled object has KumoMTA's methods: `captures`, `is_match`, `find`,
//! `find_all`, `replace`, `replace_all`, `replacen` and `split`.
//!
//! The syntax is the Rust `regex` crate's. KumoMTA adds the `fancy-regex`
//! extensions (look-around, back-references); Hermod does not, and a
//! pattern using them fails to compile with an error naming it.

use std::sync::Once;

use hermod_policy::errors::located;
use mlua::{Lua, UserData, UserDataMethods, Value};

/// The compiled regex object.
#[derive(Clone)]
pub struct LuaRegex(pub regex::Regex);

fn text(lua: &Lua, what: &str, v: &Value) -> mlua::Result<String> {
    crate::str_arg(lua, what, "text", v)
}

impl UserData for LuaRegex {
    fn add_methods<M: UserDataMethods<Self>>(methods: &mut M) {
        methods.add_method("captures", |lua, this, haystack: Value| {
            let haystack = text(lua, "regex:captures", &haystack)?;
            let Some(caps) = this.0.captures(&haystack) else {
                return Ok(Value::Nil);
            };
            let t = lua.create_table()?;
            for (i, m) in caps.iter().enumerate() {
                if let Some(m) = m {
                    t.raw_set(i, m.as_str())?;
                }
            }
            for name in this.0.capture_names().flatten() {
                if let Some(m) = caps.name(name) {
                    t.raw_set(name, m.as_str())?;
                }
            }
            Ok(Value::Table(t))
        });
        methods.add_method("is_match", |lua, this, haystack: Value| {
            Ok(this.0.is_match(&text(lua, "regex:is_match", &haystack)?))
        });
        methods.add_method("find", |lua, this, haystack: Value| {
            let haystack = text(lua, "regex:find", &haystack)?;
            Ok(this.0.find(&haystack).map(|m| m.as_str().to_string()))
        });
        methods.add_method("find_all", |lua, this, haystack: Value| {
            let haystack = text(lua, "regex:find_all", &haystack)?;
            crate::array(lua, this.0.find_iter(&haystack).map(|m| m.as_str()))
        });
        methods.add_method("replace", |lua, this, (haystack, rep): (Value, Value)| {
            let haystack = text(lua, "regex:replace", &haystack)?;
            let rep = crate::str_arg(lua, "regex:replace", "replacement", &rep)?;
            Ok(this.0.replace(&haystack, rep.as_str()).into_owned())
        });
        methods.add_method(
            "replace_all",
            |lua, this, (haystack, rep): (Value, Value)| {
                let haystack = text(lua, "regex:replace_all", &haystack)?;
                let rep = crate::str_arg(lua, "regex:replace_all", "replacement", &rep)?;
                Ok(this.0.replace_all(&haystack, rep.as_str()).into_owned())
            },
        );
        methods.add_method(
            "replacen",
            |lua, this, (haystack, limit, rep): (Value, Value, Value)| {
                const WHAT: &str = "regex:replacen";
                let haystack = text(lua, WHAT, &haystack)?;
                let limit = match limit {
                    Value::Integer(i) if i >= 0 => i as usize,
                    other => {
                        return Err(located(
                            lua,
                            format!("{WHAT}: limit must be a non-negative integer, got {other:?}"),
                        ))
                    }
                };
                let rep = crate::str_arg(lua, WHAT, "replacement", &rep)?;
                Ok(this.0.replacen(&haystack, limit, rep.as_str()).into_owned())
            },
        );
        methods.add_method("split", |lua, this, haystack: Value| {
            let haystack = text(lua, "regex:split", &haystack)?;
            crate::array(lua, this.0.split(&haystack))
        });
    }
}

pub fn register(lua: &Lua) -> mlua::Result<()> {
    static PORTABLE: Once = Once::new();
    PORTABLE.call_once(hermod_policy::portable::register_handle::<LuaRegex>);

    let m = crate::module(lua, "regex")?;
    m.set(
        "compile",
        lua.create_function(|lua, pattern: Value| {
            const WHAT: &str = "kumo.regex.compile";
            let pattern = crate::str_arg(lua, WHAT, "pattern", &pattern)?;
            regex::Regex::new(&pattern)
                .map(LuaRegex)
                .map_err(|e| located(lua, format!("{WHAT}: invalid pattern {pattern:?}: {e}")))
        })?,
    )?;
    m.set(
        "escape",
        lua.create_function(|lua, v: Value| {
            Ok(regex::escape(&crate::str_arg(
                lua,
                "kumo.regex.escape",
                "pattern",
                &v,
            )?))
        })?,
    )?;
    Ok(())
}
