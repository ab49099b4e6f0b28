//! The NATS client handle and `client:publish{...}`.

use std::collections::BTreeMap;
use std::str::FromStr;
use std::sync::Arc;

use async_nats::jetstream::context::PublishErrorKind;
use async_nats::{HeaderMap, HeaderName};
use hermod_policy::errors::CallSite;
use mlua::{Lua, UserData, UserDataMethods, Value};
use parking_lot::RwLock;
use serde::Deserialize;

use super::NatsError;
use crate::common::{LuaBytes, CLIENT_CLOSED};

/// How long `close()` waits to flush already-sent publishes.
const CLOSE_FLUSH_LIMIT: std::time::Duration = std::time::Duration::from_secs(5);

/// Header NATS JetStream uses for server-side de-duplication.
pub const MSG_ID_HEADER: &str = "Nats-Msg-Id";

enum State {
    Open(Box<async_nats::jetstream::Context>),
    /// Built under `hermod check`: the config was valid but no connection exists.
    Validating,
    Closed,
}

/// A JetStream client. Clones share one connection and one open/closed
/// state, which is what init-global propagation relies on.
#[derive(Clone)]
pub struct NatsClient {
    state: Arc<RwLock<State>>,
}

impl NatsClient {
    pub(crate) fn open(ctx: async_nats::jetstream::Context) -> Self {
        Self {
            state: Arc::new(RwLock::new(State::Open(Box::new(ctx)))),
        }
    }

    pub(crate) fn validating() -> Self {
        Self {
            state: Arc::new(RwLock::new(State::Validating)),
        }
    }

    fn context(&self) -> Result<async_nats::jetstream::Context, &'static str> {
        match &*self.state.read() {
            State::Open(ctx) => Ok((**ctx).clone()),
            State::Validating => {
                Err("client is not connected: the policy is being validated (hermod check)")
            }
            State::Closed => Err(CLIENT_CLOSED),
        }
    }

    /// True while the handle can still publish.
    pub fn is_open(&self) -> bool {
        matches!(&*self.state.read(), State::Open(_))
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct PublishParams {
    subject: String,
    payload: LuaBytes,
    #[serde(default)]
    headers: BTreeMap<String, String>,
    #[serde(default = "default_true")]
    await_ack: bool,
}

fn default_true() -> bool {
    true
}

fn build_headers(lua: &Lua, params: &PublishParams) -> Result<HeaderMap, NatsError> {
    let mut map = HeaderMap::new();
    let mut has_msg_id = false;
    for (name, value) in &params.headers {
        let header =
            HeaderName::from_str(name).map_err(|_| NatsError::InvalidHeaderName(name.clone()))?;
        if value.contains(['\r', '\n']) {
            return Err(NatsError::HeaderLineBreak(name.clone()));
        }
        has_msg_id |= name.eq_ignore_ascii_case(MSG_ID_HEADER);
        map.append(header, value.as_str());
    }
    if !has_msg_id {
        if let Some(id) = hermod_policy::scope::message_id_for(lua, &params.payload.0) {
            map.insert(MSG_ID_HEADER, id.as_str());
        }
    }
    Ok(map)
}

fn describe_publish_error(err: &async_nats::jetstream::context::PublishError) -> String {
    match err.kind() {
        PublishErrorKind::StreamNotFound => {
            "no responders (is there a JetStream stream for this subject?)".to_string()
        }
        PublishErrorKind::TimedOut => {
            "timed out after 5s waiting for the stream's acknowledgement".to_string()
        }
        _ => err.to_string(),
    }
}

impl UserData for NatsClient {
    fn add_methods<M: UserDataMethods<Self>>(methods: &mut M) {
        methods.add_async_method("publish", |lua, this, params: Value| async move {
            let site = CallSite::capture(&lua);
            let params: PublishParams =
                hermod_policy::config::from_lua_strict_at(&lua, &site, params, "nats client:publish")?;
            let ctx = this.context().map_err(|e| site.error(format!("nats publish: {e}")))?;
            drop(this);
            let subject = params.subject.clone();
            let fail = |why: String| site.error(format!("nats publish to subject '{subject}' failed: {why}"));
            let headers = build_headers(&lua, &params).map_err(|e| fail(e.to_string()))?;
            let payload = bytes::Bytes::from(params.payload.0);
            let started = std::time::Instant::now();
            let ack = ctx
                .publish_with_headers(subject.clone(), headers, payload)
                .await
                .map_err(|e| fail(describe_publish_error(&e)))?;
            let result = lua.create_table()?;
            if !params.await_ack {
                // The ack future is handed to async-nats' background acker on drop.
                drop(ack);
                return Ok(result);
            }
            let ack = ack.await.map_err(|e| fail(describe_publish_error(&e)))?;
            hermod_metrics::broker_publish_latency(hermod_metrics::BROKER_NATS)
                .observe_duration(started.elapsed());
            tracing::debug!(subject = %subject, stream = %ack.stream, seq = ack.sequence, "nats publish acknowledged");
            result.set("stream", ack.stream)?;
            result.set("sequence", ack.sequence)?;
            result.set("domain", ack.domain)?;
            result.set("duplicate", ack.duplicate)?;
            result.set("value", ack.value.unwrap_or_default())?;
            Ok(result)
        });

        methods.add_async_method("close", |_lua, this, ()| async move {
            let previous = std::mem::replace(&mut *this.state.write(), State::Closed);
            if let State::Open(ctx) = previous {
                // Flush what was already sent so a close right after an
                // unacknowledged publish does not lose it; bounded, because
                // a disconnected client would wait for the server forever.
                let flush = tokio::time::timeout(CLOSE_FLUSH_LIMIT, ctx.client().flush()).await;
                match flush {
                    Ok(Ok(())) => {}
                    Ok(Err(e)) => tracing::debug!(error = %e, "nats flush on close failed"),
                    Err(_) => tracing::debug!("nats flush on close timed out"),
                }
            }
            Ok(())
        });

        methods.add_meta_method("__tostring", |_lua, this, ()| {
            Ok(if this.is_open() {
                "NatsClient(open)"
            } else {
                "NatsClient(closed)"
            })
        });
    }
}
