//! `conn_meta`: the per-session metadata object SMTP events receive.

use std::sync::Arc;

use mlua::{UserData, UserDataMethods, Value as LuaValue};
use parking_lot::Mutex;
use serde_json::{Map, Value};

use hermod_policy::{json_to_lua, lua_to_json};

/// Shared so that every event call and the session itself see one map.
#[derive(Clone, Default, Debug)]
pub struct ConnMeta(Arc<Mutex<Map<String, Value>>>);

impl ConnMeta {
    pub fn set(&self, key: &str, value: impl Into<Value>) {
        self.0.lock().insert(key.to_string(), value.into());
    }

    pub fn get(&self, key: &str) -> Option<Value> {
        self.0.lock().get(key).cloned()
    }

    pub fn snapshot(&self) -> Map<String, Value> {
        self.0.lock().clone()
    }
}

impl UserData for ConnMeta {
    fn add_methods<M: UserDataMethods<Self>>(methods: &mut M) {
        methods.add_method("get_meta", |lua, this, key: String| match this.get(&key) {
            Some(v) => json_to_lua(lua, &v),
            None => Ok(LuaValue::Nil),
        });
        methods.add_method("set_meta", |lua, this, (key, value): (String, LuaValue)| {
            let json = lua_to_json(lua, value)?;
            this.set(&key, json);
            Ok(())
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lua_reads_and_writes_the_shared_map() {
        let lua = mlua::Lua::new();
        let meta = ConnMeta::default();
        meta.set("hostname", "mx.example");
        lua.globals().set("conn_meta", meta.clone()).unwrap();
        lua.load(
            "assert(conn_meta:get_meta('hostname') == 'mx.example')
             assert(conn_meta:get_meta('absent') == nil)
             conn_meta:set_meta('x_tag', {a = 1})",
        )
        .exec()
        .unwrap();
        assert_eq!(meta.get("x_tag"), Some(serde_json::json!({"a": 1})));
    }
}
