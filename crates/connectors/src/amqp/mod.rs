//! `kumo.amqp`: RabbitMQ publishing with publisher confirms enabled, over a
//! process-wide connection pool.

mod basic_publish;
mod client;
mod error;
mod pool;
mod props;

pub use basic_publish::{BasicPublishParams, ConnectionParams, Password};
pub use client::{AmqpClient, Confirm, CONFIRM_TIMEOUT};
pub use error::AmqpError;
pub use pool::{connections_opened, CONNECT_TIMEOUT, IDLE_CLOSE};
pub use props::{HeaderValue, Properties};

use hermod_policy::errors::CallSite;
use mlua::{Lua, Value};

/// Add `kumo.amqp.build_client` and `kumo.amqp.basic_publish`.
pub fn register(lua: &Lua) -> mlua::Result<()> {
    hermod_policy::portable::register_handle::<AmqpClient>();
    let amqp = hermod_policy::kumo_subtable(lua, "amqp")?;
    amqp.set(
        "build_client",
        lua.create_async_function(|lua, uri: String| async move {
            let site = CallSite::capture(&lua);
            uri.parse::<lapin::uri::AMQPUri>().map_err(|e| {
                site.error(format!(
                    "kumo.amqp.build_client: invalid URI '{}': {e}",
                    pool::redact(&uri)
                ))
            })?;
            if hermod_policy::startup::is_validating(&lua) {
                return Ok(AmqpClient::validating());
            }
            crate::common::ensure_crypto_provider();
            AmqpClient::build(&uri).await.map_err(|e| {
                site.error(format!(
                    "kumo.amqp.build_client to {} failed: {e}",
                    pool::redact(&uri)
                ))
            })
        })?,
    )?;
    amqp.set(
        "basic_publish",
        lua.create_async_function(|lua, params: Value| basic_publish::basic_publish(lua, params))?,
    )?;
    Ok(())
}
