//! `kumo.nats`: JetStream publishing where a publish counts only once the
//! stream acknowledged it.

mod client;
mod config;
mod error;

pub use client::{NatsClient, MSG_ID_HEADER};
pub use config::{NatsAuth, NatsConfig};
pub use error::NatsError;

use hermod_policy::errors::CallSite;
use mlua::{Lua, Value};

/// Add `kumo.nats.connect` and mark the client as a propagatable handle.
pub fn register(lua: &Lua) -> mlua::Result<()> {
    hermod_policy::portable::register_handle::<NatsClient>();
    let nats = hermod_policy::kumo_subtable(lua, "nats")?;
    nats.set(
        "connect",
        lua.create_async_function(|lua, params: Value| async move {
            let site = CallSite::capture(&lua);
            let config: NatsConfig = hermod_policy::config::from_lua_strict_at(
                &lua,
                &site,
                params,
                "kumo.nats.connect",
            )?;
            config
                .validate()
                .map_err(|e| site.error(format!("kumo.nats.connect: {e}")))?;
            if hermod_policy::startup::is_validating(&lua) {
                return Ok(NatsClient::validating());
            }
            connect(&config).await.map_err(|e| {
                site.error(format!(
                    "kumo.nats.connect to {:?} failed: {e}",
                    config.servers
                ))
            })
        })?,
    )?;
    Ok(())
}

async fn connect(config: &NatsConfig) -> Result<NatsClient, NatsError> {
    crate::common::ensure_crypto_provider();
    let opts = config.to_options().await?;
    let client = opts.connect(config.servers.clone()).await?;
    tracing::info!(servers = ?config.servers, "connected to NATS");
    Ok(NatsClient::open(async_nats::jetstream::new(client)))
}
