//! `kumo.kafka`: librdkafka producers that return only after the broker's
//! delivery report, shared process-wide per distinct configuration.

mod context;
mod error;
mod pool;
mod producer;

pub use error::KafkaError;
pub use pool::{effective_properties, producers_created, IDLE_DROP};
pub use producer::{KafkaProducer, MESSAGE_ID_HEADER};

use std::collections::BTreeMap;

use hermod_policy::errors::CallSite;
use mlua::{Lua, Value};

use crate::common::Stringish;

/// Add `kumo.kafka.build_producer`.
pub fn register(lua: &Lua) -> mlua::Result<()> {
    hermod_policy::portable::register_handle::<KafkaProducer>();
    let kafka = hermod_policy::kumo_subtable(lua, "kafka")?;
    kafka.set(
        "build_producer",
        lua.create_async_function(|lua, params: Value| async move {
            let site = CallSite::capture(&lua);
            let raw: BTreeMap<String, Stringish> = hermod_policy::config::from_lua_strict_at(
                &lua,
                &site,
                params,
                "kumo.kafka.build_producer",
            )?;
            let props = effective_properties(raw.into_iter().map(|(k, v)| (k, v.0)).collect());
            if hermod_policy::startup::is_validating(&lua) {
                return Ok(KafkaProducer::validating(props));
            }
            let producer = pool::producer(&props)
                .await
                .map_err(|e| site.error(format!("kumo.kafka.build_producer: {e}")))?;
            Ok(KafkaProducer::open(producer, props))
        })?,
    )?;
    Ok(())
}
