//! Strict decoding of the parameter tables policies pass to `kumo.*`.

use mlua::{Lua, LuaSerdeExt, Value};
use serde::de::DeserializeOwned;

use crate::errors::{located, CallSite};

/// Decode `value` into `T` (which should use `#[serde(deny_unknown_fields)]`),
/// naming the function and the caller's `file:line` on failure, so that a
/// typo in a policy fails loudly where it was written.
pub fn from_lua_strict<T: DeserializeOwned>(
    lua: &Lua,
    value: Value,
    what: &str,
) -> mlua::Result<T> {
    decode(lua, value, what, |msg| located(lua, msg))
}

/// [`from_lua_strict`] for async functions: errors are located at `site`, captured when the
/// function was entered, because once it awaits, the policy's frame is below mlua's async shim.
pub fn from_lua_strict_at<T: DeserializeOwned>(
    lua: &Lua,
    site: &CallSite,
    value: Value,
    what: &str,
) -> mlua::Result<T> {
    decode(lua, value, what, |msg| site.error(msg))
}

/// Refuse the keys of the parameter table `params` that are listed in `not_supported`: keys
/// KumoMTA documents for `what` but Hermod does not implement yet. Accepting and ignoring them
/// would let a policy believe it got a behaviour it did not. Every such key is named, sorted
/// (the message must not depend on Lua's table order), at the caller's `file:line`.
pub fn refuse_not_supported(
    lua: &Lua,
    params: &Value,
    what: &str,
    not_supported: &[&str],
) -> mlua::Result<()> {
    let Value::Table(t) = params else {
        return Ok(());
    };
    let mut found = Vec::new();
    for pair in t.pairs::<Value, Value>() {
        let (k, _) = pair?;
        if let Value::String(s) = k {
            let key = s.to_string_lossy();
            if not_supported.contains(&key.as_str()) {
                found.push(key);
            }
        }
    }
    found.sort();
    match found.as_slice() {
        [] => Ok(()),
        [one] => Err(located(
            lua,
            format!("{what}: key '{one}' is not supported by Hermod yet"),
        )),
        many => Err(located(
            lua,
            format!(
                "{what}: keys '{}' are not supported by Hermod yet",
                many.join("', '")
            ),
        )),
    }
}

/// The decoding both share; `locate` turns the message into an error at the right line, and
/// runs only on failure (finding the line walks the Lua stack).
fn decode<T: DeserializeOwned>(
    lua: &Lua,
    value: Value,
    what: &str,
    locate: impl FnOnce(String) -> mlua::Error,
) -> mlua::Result<T> {
    let opts = mlua::DeserializeOptions::new().deny_unsupported_types(false);
    lua.from_value_with::<T>(value, opts)
        .map_err(|e| locate(format!("{what}: {}", crate::errors::describe(&e))))
}
