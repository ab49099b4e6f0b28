//! The Lua policy engine: context pool, `kumo.on` event registry, the core
//! `kumo` functions, init-global propagation, and the helpers every Lua
//! module crate uses (strict config decoding, durations, located errors,
//! key sources).

pub mod cidr;
pub mod config;
pub mod diagnostic_log;
pub mod duration;
pub mod egress_path;
pub mod egress_source;
mod engine;
pub mod errors;
mod events;
mod extras;
pub mod keysource;
mod kumo;
pub mod listener_domain;
mod log_hook_route;
pub mod memoize;
pub mod metrics_hook;
pub mod mx_list;
mod pool;
pub mod portable;
pub mod queue_config;
pub mod scope;
pub mod source_selector;
pub mod startup;
pub mod throttle;

pub use cidr::{Cidr, CidrSet};
pub use egress_path::{EgressPathConfig, ReconnectStrategy, Tls};
pub use egress_source::{EgressPool, EgressPoolEntry, EgressSource};
pub use engine::{Context, Engine, EngineOptions, LegacyMode, PreparedEvent, Registrar};
pub use errors::{CallError, PolicyError, Reject};
pub use hermod_message::lua::{json_to_lua, lua_to_json};
pub use keysource::{KeySource, KeySourceError, Secret, SecretError};
pub use listener_domain::{ListenerDomain, ReportDisposition};
pub use log_hook_route::LogHookPlan;
pub use mlua;
pub use mx_list::MxListEntry;
pub use queue_config::{ProtocolConfig, QueueConfig, SmtpProtocolConfig};
pub use source_selector::SourceSelector;
pub use throttle::{LimitSpec, ThrottleSpec};

/// The `kumo` module table of a context (`package.loaded.kumo`).
pub fn kumo_table(lua: &mlua::Lua) -> mlua::Result<mlua::Table> {
    let loaded: mlua::Table = lua.globals().get::<mlua::Table>("package")?.get("loaded")?;
    loaded.get("kumo")
}

/// Get or create the sub-table `kumo.<name>` (e.g. `kumo.nats`).
pub fn kumo_subtable(lua: &mlua::Lua, name: &str) -> mlua::Result<mlua::Table> {
    let kumo = kumo_table(lua)?;
    match kumo.get::<Option<mlua::Table>>(name)? {
        Some(t) => Ok(t),
        None => {
            let t = lua.create_table()?;
            kumo.set(name, t.clone())?;
            Ok(t)
        }
    }
}
