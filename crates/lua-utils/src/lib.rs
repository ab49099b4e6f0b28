//! General-purpose `kumo.*` policy functions with KumoMTA's names, arguments
//! and results: the ones KumoMTA's `policy-extras` helpers and its example
//! production policy use besides the MTA-specific ones.
//!
//! One module per Lua module, each with its own `register`:
//! - [`serde_toml`] for `kumo.serde.toml_*` and the `kumo.toml_*` aliases
//! - [`fs`] for `kumo.fs.read_dir`, `glob`, `uncached_glob` (and the `kumo.*`
//!   aliases), `metadata_for_path`, `symlink_metadata_for_path`, `open`
//! - [`uuid`] for `kumo.uuid`
//! - [`digest`] for `kumo.digest` (hashes, HMACs, CRC32)
//! - [`encode`] for `kumo.encode`
//! - [`regex_set_map`], [`domain_map`], [`cidr_map`] for the lookup-map
//!   types (`kumo.cidr.make_map` is the last)
//! - [`regex`] for `kumo.regex.compile` and `escape`
//! - [`time`] for `kumo.time` (`Time` and `TimeDelta` objects)
//! - [`string`] for `kumo.string`
//! - [`secrets`] for `kumo.secrets.load`
//!
//! Every error names the function and the policy's `file:line`.

use mlua::{Lua, LuaSerdeExt, Value};

pub mod cidr_map;
pub mod digest;
pub mod domain_map;
pub mod encode;
pub mod fs;
mod fs_metadata;
mod fs_open;
pub mod regex;
pub mod regex_set_map;
pub mod secrets;
pub mod serde_toml;
pub mod string;
pub mod time;
pub mod uuid;

/// Add every module of this crate to `lua` (a [`hermod_policy::Registrar`]).
pub fn register(lua: &Lua) -> mlua::Result<()> {
    serde_toml::register(lua)?;
    fs::register(lua)?;
    uuid::register(lua)?;
    digest::register(lua)?;
    encode::register(lua)?;
    regex_set_map::register(lua)?;
    cidr_map::register(lua)?;
    domain_map::register(lua)?;
    regex::register(lua)?;
    time::register(lua)?;
    string::register(lua)?;
    secrets::register(lua)?;
    Ok(())
}

/// `kumo.<name>`, also reachable as `require 'kumo.<name>'`: KumoMTA's
/// documentation introduces several modules that way (`kumo.time`,
/// `kumo.string`, `kumo.regex`).
pub(crate) fn module(lua: &Lua, name: &str) -> mlua::Result<mlua::Table> {
    let table = hermod_policy::kumo_subtable(lua, name)?;
    let loaded: mlua::Table = lua.globals().get::<mlua::Table>("package")?.get("loaded")?;
    loaded.set(format!("kumo.{name}"), table.clone())?;
    Ok(table)
}

/// The bytes of a string argument, or an error naming the function, the
/// argument and the type it got.
pub(crate) fn bytes_arg(lua: &Lua, what: &str, arg: &str, v: &Value) -> mlua::Result<Vec<u8>> {
    match v {
        Value::String(s) => Ok(s.as_bytes().to_vec()),
        other => Err(hermod_policy::errors::located(
            lua,
            format!("{what}: {arg} must be a string, got {}", other.type_name()),
        )),
    }
}

/// A UTF-8 string argument; Lua strings are bytes, so both the type and the
/// encoding are checked.
pub(crate) fn str_arg(lua: &Lua, what: &str, arg: &str, v: &Value) -> mlua::Result<String> {
    let bytes = bytes_arg(lua, what, arg, v)?;
    String::from_utf8(bytes).map_err(|_| {
        hermod_policy::errors::located(lua, format!("{what}: {arg} is not valid UTF-8"))
    })
}

/// A Lua array table (marked as an array, so an empty one still encodes as
/// `[]` in JSON) holding `items`.
pub(crate) fn array<I, T>(lua: &Lua, items: I) -> mlua::Result<mlua::Table>
where
    I: IntoIterator<Item = T>,
    T: mlua::IntoLua,
{
    let t = lua.create_sequence_from(items)?;
    t.set_metatable(Some(lua.array_metatable()));
    Ok(t)
}
