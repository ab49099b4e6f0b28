//! Shared test helpers: a Lua state with `kumo` and the connectors
//! registered, and unique names so tests never share broker state.
#![allow(dead_code)]

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use mlua::{FromLuaMulti, Lua, Table};

/// A Lua state with an empty `kumo` module and every connector registered.
pub fn lua() -> Lua {
    let lua = Lua::new();
    let loaded: Table = lua
        .globals()
        .get::<Table>("package")
        .unwrap()
        .get("loaded")
        .unwrap();
    let kumo = lua.create_table().unwrap();
    loaded.set("kumo", kumo.clone()).unwrap();
    lua.globals().set("kumo", kumo).unwrap();
    hermod_connectors::register_all(&lua).unwrap();
    lua
}

/// Run a chunk named `test.lua`, bounded in time.
pub async fn run<R: FromLuaMulti>(lua: &Lua, src: &str) -> mlua::Result<R> {
    tokio::time::timeout(
        Duration::from_secs(30),
        lua.load(src).set_name("@test.lua").call_async::<R>(()),
    )
    .await
    .expect("lua chunk did not finish within 30s")
}

/// A name no other test (or earlier run) uses.
pub fn unique(prefix: &str) -> String {
    static N: AtomicU64 = AtomicU64::new(0);
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or_default();
    format!(
        "{prefix}_{}_{nanos}_{}",
        std::process::id(),
        N.fetch_add(1, Ordering::Relaxed)
    )
}
