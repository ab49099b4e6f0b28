//! `kumo.amqp.build_client(uri)`: the client handle, `client:publish{...}`
//! and the Confirm object it returns.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use hermod_policy::errors::CallSite;
use lapin::options::BasicPublishOptions;
use lapin::types::ShortString;
use lapin::{Confirmation, PublisherConfirm};
use mlua::{Lua, Table, UserData, UserDataMethods, Value};
use parking_lot::Mutex;
use serde::Deserialize;

use super::pool::{self, Slot};
use super::props::Properties;
use super::AmqpError;
use crate::common::{LuaBytes, CLIENT_CLOSED};

/// How long `confirm:wait()` waits for the broker before failing; a broker
/// that never confirms must not hang a delivery forever.
pub const CONFIRM_TIMEOUT: Duration = Duration::from_secs(60);

/// A handle on a pooled AMQP connection. Clones share the pool slot and the
/// closed flag; closing releases the handle, not the shared connection.
#[derive(Clone)]
pub struct AmqpClient {
    slot: Option<Arc<Slot>>,
    closed: Arc<AtomicBool>,
}

impl AmqpClient {
    /// Connect (or reuse the pooled connection for `uri`).
    pub async fn build(uri: &str) -> Result<Self, AmqpError> {
        let slot = pool::slot(uri, None);
        slot.channel().await?;
        Ok(Self {
            slot: Some(slot),
            closed: Arc::new(AtomicBool::new(false)),
        })
    }

    /// A handle that fails on use: built under `hermod check`.
    pub fn validating() -> Self {
        Self {
            slot: None,
            closed: Arc::new(AtomicBool::new(false)),
        }
    }

    fn slot(&self) -> Result<Arc<Slot>, &'static str> {
        if self.closed.load(Ordering::Acquire) {
            return Err(CLIENT_CLOSED);
        }
        self.slot
            .clone()
            .ok_or("client is not connected: the policy is being validated (hermod check)")
    }
}

#[derive(Default, Deserialize)]
struct PublishOptions {
    #[serde(default)]
    mandatory: bool,
    #[serde(default)]
    immediate: bool,
}

/// `client:publish` keys are not strictly checked at the top level (as in
/// KumoMTA); `properties` is strict so a misspelt property is not dropped.
#[derive(Deserialize)]
struct PublishParams {
    routing_key: String,
    payload: LuaBytes,
    #[serde(default)]
    exchange: String,
    #[serde(default)]
    options: PublishOptions,
    #[serde(default)]
    properties: Properties,
}

/// The broker's answer to one publish; `wait()` may be called once.
pub struct Confirm {
    pending: Mutex<Option<PublisherConfirm>>,
    /// When the publish began: `broker_publish_latency` runs to the confirm.
    started: std::time::Instant,
}

pub(crate) fn confirmation_table(lua: &Lua, c: Confirmation) -> mlua::Result<Table> {
    let t = lua.create_table()?;
    let status = match &c {
        Confirmation::Ack(_) => "Ack",
        Confirmation::Nack(_) => "Nack",
        Confirmation::NotRequested => "NotRequested",
    };
    t.set("status", status)?;
    if let Some(returned) = c.take_message() {
        t.set("reply_code", returned.reply_code)?;
        t.set("reply_text", returned.reply_text.as_str())?;
    }
    Ok(t)
}

/// Await a publisher confirm, bounded by `limit`.
pub(crate) async fn await_confirm(
    confirm: PublisherConfirm,
    limit: Duration,
) -> Result<Confirmation, AmqpError> {
    tokio::time::timeout(limit, confirm)
        .await
        .map_err(|_| AmqpError::ConfirmTimeout(limit))?
        .map_err(AmqpError::Confirmation)
}

/// Short strings over 255 bytes make lapin panic, so check them first.
pub(crate) fn short(field: &'static str, s: &str) -> Result<ShortString, AmqpError> {
    ShortString::try_new(s).map_err(|error| AmqpError::TooLong { field, error })
}

impl UserData for Confirm {
    fn add_methods<M: UserDataMethods<Self>>(methods: &mut M) {
        methods.add_async_method("wait", |lua, this, ()| async move {
            let site = CallSite::capture(&lua);
            let pending = this.pending.lock().take();
            let started = this.started;
            drop(this);
            let confirm = pending.ok_or_else(|| site.error("confirmation already taken"))?;
            let c = await_confirm(confirm, CONFIRM_TIMEOUT)
                .await
                .map_err(|e| site.error(format!("amqp publish: {e}")))?;
            hermod_metrics::broker_publish_latency(hermod_metrics::BROKER_AMQP)
                .observe_duration(started.elapsed());
            confirmation_table(&lua, c)
        });
    }
}

impl UserData for AmqpClient {
    fn add_methods<M: UserDataMethods<Self>>(methods: &mut M) {
        methods.add_async_method("publish", |lua, this, params: Value| async move {
            let site = CallSite::capture(&lua);
            let slot = this
                .slot()
                .map_err(|e| site.error(format!("amqp publish: {e}")))?;
            drop(this);
            let mut params: PublishParams = hermod_policy::config::from_lua_strict_at(
                &lua,
                &site,
                params,
                "amqp client:publish",
            )?;
            let target = format!(
                "exchange '{}' routing key '{}'",
                params.exchange, params.routing_key
            );
            let fail =
                |why: AmqpError| site.error(format!("amqp publish to {target} failed: {why}"));
            params
                .properties
                .default_message_id(&lua, &params.payload.0);
            let properties = params.properties.to_basic().map_err(&fail)?;
            let exchange = short("exchange", &params.exchange).map_err(&fail)?;
            let routing_key = short("routing_key", &params.routing_key).map_err(&fail)?;
            let started = std::time::Instant::now();
            let channel = slot.channel().await.map_err(&fail)?;
            let options = BasicPublishOptions {
                mandatory: params.options.mandatory,
                immediate: params.options.immediate,
            };
            let confirm = channel
                .basic_publish(
                    exchange,
                    routing_key,
                    options,
                    &params.payload.0,
                    properties,
                )
                .await
                .map_err(|e| fail(AmqpError::Publish(e)))?;
            Ok(Confirm {
                pending: Mutex::new(Some(confirm)),
                started,
            })
        });

        methods.add_method("close", |lua, this, ()| {
            if this.closed.swap(true, Ordering::AcqRel) {
                return Err(hermod_policy::errors::located(
                    lua,
                    format!("amqp close: {CLIENT_CLOSED}"),
                ));
            }
            Ok(())
        });
    }
}
