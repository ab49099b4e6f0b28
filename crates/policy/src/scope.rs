//! Which message a broker publish belongs to. A custom_lua session sets the
//! scope around each `send`/`send_batch`, so broker modules can attach the
//! Hermod message id as their default deduplication key without the policy
//! passing it explicitly.

use std::collections::HashMap;
use std::hash::{Hash, Hasher};

use mlua::Lua;

#[derive(Default, Clone)]
pub struct DeliveryScope {
    by_payload: HashMap<u64, String>,
}

fn hash(payload: &[u8]) -> u64 {
    let mut h = std::collections::hash_map::DefaultHasher::new();
    payload.hash(&mut h);
    h.finish()
}

/// Enter a scope for these `(message id, message data)` pairs.
pub fn enter<'a>(lua: &Lua, messages: impl IntoIterator<Item = (String, &'a [u8])>) {
    let mut scope = DeliveryScope::default();
    for (id, data) in messages {
        scope.by_payload.insert(hash(data), id);
    }
    lua.set_app_data(scope);
}

pub fn leave(lua: &Lua) {
    lua.remove_app_data::<DeliveryScope>();
}

/// The Hermod message id a publish of `payload` belongs to: the message in
/// scope whose data is exactly `payload`. A publish of anything else gets no
/// default id: reusing one id for two different payloads would make a
/// deduplicating broker drop the second one.
pub fn message_id_for(lua: &Lua, payload: &[u8]) -> Option<String> {
    let scope = lua.app_data_ref::<DeliveryScope>()?;
    scope.by_payload.get(&hash(payload)).cloned()
}
