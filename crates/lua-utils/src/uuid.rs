//! `kumo.uuid`: `new_v1`, `new_v4`, `new_v6`, `new_v7`, `parse`, and the
//! `Uuid` object (`tostring` gives the hyphenated form; fields `bytes`,
//! `hyphenated`, `simple`, `braced`, `urn`).
//!
//! Versions 1 and 6 embed a node id. KumoMTA takes it from a network
//! interface's MAC address; Hermod uses a random node id per process with
//! the multicast bit set, as RFC 9562 section 6.10 allows, which needs no
//! interface lookup and reveals no hardware address in ids that may leave
//! the host.

use std::sync::{Once, OnceLock};
use std::time::{SystemTime, UNIX_EPOCH};

use ::uuid::timestamp::context::ContextV1;
use ::uuid::{Builder, Timestamp};
use hermod_policy::errors::located;
use mlua::{Lua, MetaMethod, UserData, UserDataFields, UserDataMethods, Value};

/// The `Uuid` object handed to policies.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct LuaUuid(pub ::uuid::Uuid);

impl UserData for LuaUuid {
    fn add_fields<F: UserDataFields<Self>>(fields: &mut F) {
        fields.add_field_method_get("bytes", |lua, this| lua.create_string(this.0.as_bytes()));
        fields.add_field_method_get("hyphenated", |_, this| Ok(this.0.hyphenated().to_string()));
        fields.add_field_method_get("simple", |_, this| Ok(this.0.simple().to_string()));
        fields.add_field_method_get("braced", |_, this| Ok(this.0.braced().to_string()));
        fields.add_field_method_get("urn", |_, this| Ok(this.0.urn().to_string()));
    }

    fn add_methods<M: UserDataMethods<Self>>(methods: &mut M) {
        methods.add_meta_method(MetaMethod::ToString, |_, this, ()| {
            Ok(this.0.hyphenated().to_string())
        });
        methods.add_meta_method(MetaMethod::Eq, |_, this, other: mlua::AnyUserData| {
            Ok(other.borrow::<LuaUuid>().is_ok_and(|o| *o == *this))
        });
    }
}

/// Versions 6 and 7 are built from their parts rather than with the
/// `uuid` crate's `v6`/`v7` features: enabling a feature would rebuild
/// every crate of the workspace that uses `uuid`, for two small functions.
fn new_v6() -> ::uuid::Uuid {
    static CONTEXT: OnceLock<ContextV1> = OnceLock::new();
    let context = CONTEXT.get_or_init(|| ContextV1::new(::uuid::Uuid::new_v4().as_u128() as u16));
    let (ticks, counter) = Timestamp::now(context).to_gregorian();
    Builder::from_sorted_gregorian_timestamp(ticks, counter, node_id()).into_uuid()
}

fn new_v7() -> ::uuid::Uuid {
    // A clock before 1970 is a broken host; 0 keeps the id valid.
    let millis = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64);
    let random = ::uuid::Uuid::new_v4().into_bytes();
    let mut tail = [0u8; 10];
    tail.copy_from_slice(&random[..10]);
    Builder::from_unix_timestamp_millis(millis, &tail).into_uuid()
}

fn node_id() -> &'static [u8; 6] {
    static NODE: OnceLock<[u8; 6]> = OnceLock::new();
    NODE.get_or_init(|| {
        let mut node = *::uuid::Uuid::new_v4().as_bytes();
        node[0] |= 0x01;
        [node[0], node[1], node[2], node[3], node[4], node[5]]
    })
}

pub fn register(lua: &Lua) -> mlua::Result<()> {
    static PORTABLE: Once = Once::new();
    // A Uuid assigned to a global in `init` is copied into every context.
    PORTABLE.call_once(hermod_policy::portable::register_handle::<LuaUuid>);

    let m = crate::module(lua, "uuid")?;
    m.set(
        "new_v1",
        lua.create_function(|_, ()| Ok(LuaUuid(::uuid::Uuid::now_v1(node_id()))))?,
    )?;
    m.set(
        "new_v4",
        lua.create_function(|_, ()| Ok(LuaUuid(::uuid::Uuid::new_v4())))?,
    )?;
    m.set(
        "new_v6",
        lua.create_function(|_, ()| Ok(LuaUuid(new_v6())))?,
    )?;
    m.set(
        "new_v7",
        lua.create_function(|_, ()| Ok(LuaUuid(new_v7())))?,
    )?;
    m.set(
        "parse",
        lua.create_function(|lua, text: Value| {
            const WHAT: &str = "kumo.uuid.parse";
            let text = crate::str_arg(lua, WHAT, "uuid", &text)?;
            ::uuid::Uuid::parse_str(&text)
                .map(LuaUuid)
                .map_err(|e| located(lua, format!("{WHAT}: invalid UUID {text:?}: {e}")))
        })?,
    )?;
    Ok(())
}
