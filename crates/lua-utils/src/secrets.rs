//! `kumo.secrets.load(SOURCE)`: the bytes a KeySource holds, as a Lua
//! string. SOURCE takes the forms [`hermod_policy::KeySource`] knows: a
//! file path, or `{ key_data = '...' }`; other forms are refused with an
//! error that names them.

use hermod_policy::errors::CallSite;
use hermod_policy::KeySource;
use mlua::{Lua, Value};

pub fn register(lua: &Lua) -> mlua::Result<()> {
    let m = crate::module(lua, "secrets")?;
    m.set(
        "load",
        lua.create_async_function(|lua, source: Value| async move {
            const WHAT: &str = "kumo.secrets.load";
            let site = CallSite::capture(&lua);
            let source: KeySource =
                hermod_policy::config::from_lua_strict_at(&lua, &site, source, WHAT)?;
            // A key file is small, but it may sit on slow storage; read it
            // off the runtime's threads.
            let bytes = tokio::task::spawn_blocking(move || source.load())
                .await
                .map_err(|e| site.error(format!("{WHAT}: {e}")))?
                .map_err(|e| site.error(format!("{WHAT}: {e}")))?;
            lua.create_string(bytes)
        })?,
    )?;
    Ok(())
}
