//! Broker and HTTP client modules for policies: `kumo.nats`, `kumo.amqp`,
//! `kumo.kafka` and `kumo.http`. Each publish returns only after the broker
//! acknowledged it (unless the policy explicitly opts out), and client
//! handles are cheap shared clones so init-global propagation can hand them
//! to every Lua context.

pub mod amqp;
pub mod common;
pub mod http;
pub mod kafka;
pub mod nats;

/// Register every connector module into `kumo`.
pub fn register_all(lua: &mlua::Lua) -> mlua::Result<()> {
    nats::register(lua)?;
    amqp::register(lua)?;
    kafka::register(lua)?;
    http::register(lua)?;
    Ok(())
}
