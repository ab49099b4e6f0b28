//! Scheduled queues: a queue name's config from `get_queue_config`, cached
//! and refreshed every `refresh_interval`, and the ready queue it feeds.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use hermod_message::QueueNameComponents;
use hermod_policy::{CallError, Engine, PolicyError, ProtocolConfig, QueueConfig, Reject};
use mlua::Value;
use parking_lot::{Mutex, RwLock};

use crate::ready::ReadyQueue;

/// The queue whose messages are accepted and discarded, never delivered
/// (KumoMTA's `null` queue).
pub const NULL_QUEUE: &str = "null";

/// Why `get_queue_config` gave no queue config.
#[derive(Debug, thiserror::Error)]
pub enum QueueConfigError {
    /// No Lua context to call it in.
    #[error("{0}")]
    Context(#[source] PolicyError),
    #[error("get_queue_config must return the value of kumo.make_queue_config{{...}}")]
    NotQueueConfig,
    #[error("get_queue_config must return the value of kumo.make_queue_config{{...}}, got a {0}")]
    WrongType(&'static str),
    #[error("get_queue_config rejected: {0}")]
    Rejected(Reject),
    #[error("get_queue_config failed: {0}")]
    Failed(#[source] CallError),
}

/// One scheduled queue (`campaign:tenant@domain!routing_domain`).
pub struct ScheduledQueue {
    pub name: String,
    pub components: QueueNameComponents,
    state: RwLock<(Arc<QueueConfig>, Instant)>,
    /// The ready queue this queue fed last and the config it was found for:
    /// until the config changes, a message needs no name formatting, map
    /// lookup or protocol copy to find it (that was measurable per message).
    ready: Mutex<Option<(Arc<QueueConfig>, Arc<ReadyQueue>)>>,
    /// SMTP queues: the route to their site and the messages waiting for it.
    pub(crate) smtp: Mutex<crate::route::RouteState>,
    /// When a message last looked this queue up (milliseconds on [`clock_ms`]):
    /// a queue that nothing uses is reaped after its `reap_interval`.
    last_used: AtomicU64,
}

/// Milliseconds since the first call: a clock cheap enough to read per message.
fn clock_ms() -> u64 {
    static START: OnceLock<Instant> = OnceLock::new();
    START.get_or_init(Instant::now).elapsed().as_millis() as u64
}

impl ScheduledQueue {
    pub fn config(&self) -> Arc<QueueConfig> {
        self.state.read().0.clone()
    }

    pub fn needs_refresh(&self) -> bool {
        let g = self.state.read();
        g.1.elapsed() >= g.0.refresh_interval
    }

    pub fn update(&self, cfg: QueueConfig) {
        *self.state.write() = (Arc::new(cfg), Instant::now());
    }

    /// The ready queue remembered for exactly this `cfg`, unless it was reaped.
    pub(crate) fn cached_ready(&self, cfg: &Arc<QueueConfig>) -> Option<Arc<ReadyQueue>> {
        let g = self.ready.lock();
        g.as_ref()
            .filter(|(c, rq)| Arc::ptr_eq(c, cfg) && !rq.is_retired())
            .map(|(_, rq)| rq.clone())
    }

    pub(crate) fn touch(&self) {
        self.last_used.store(clock_ms(), Ordering::Relaxed);
    }

    /// How long since a message last looked this queue up.
    pub(crate) fn idle(&self) -> Duration {
        let last = self.last_used.load(Ordering::Relaxed);
        Duration::from_millis(clock_ms().saturating_sub(last))
    }

    pub(crate) fn remember_ready(&self, cfg: Arc<QueueConfig>, rq: Arc<ReadyQueue>) {
        *self.ready.lock() = Some((cfg, rq));
    }
}

/// Run `get_queue_config` for a queue name.
pub async fn fetch_config(
    engine: &Arc<Engine>,
    components: &QueueNameComponents,
) -> Result<QueueConfig, QueueConfigError> {
    let args = (
        components.domain.clone(),
        components.tenant.clone(),
        components.campaign.clone(),
        components.routing_domain.clone(),
    );
    let ctx = engine.context().await.map_err(QueueConfigError::Context)?;
    let r: Result<Option<Value>, CallError> = ctx.call("get_queue_config", args).await;
    match r {
        Ok(None) | Ok(Some(Value::Nil)) => Ok(QueueConfig::default()),
        Ok(Some(Value::UserData(ud))) => ud
            .borrow::<QueueConfig>()
            .map(|c| c.clone())
            .map_err(|_| QueueConfigError::NotQueueConfig),
        Ok(Some(other)) => Err(QueueConfigError::WrongType(other.type_name())),
        Err(CallError::Reject(r)) => Err(QueueConfigError::Rejected(r)),
        Err(e) => Err(QueueConfigError::Failed(e)),
    }
}

pub fn new_scheduled(name: &str, cfg: QueueConfig) -> ScheduledQueue {
    ScheduledQueue {
        name: name.to_string(),
        components: QueueNameComponents::parse(name),
        state: RwLock::new((Arc::new(cfg), Instant::now())),
        ready: Mutex::new(None),
        smtp: Mutex::new(Default::default()),
        last_used: AtomicU64::new(clock_ms()),
    }
}

/// Ready-queue name: `<source>-><site>@<protocol label>`; this is also the
/// `site` of delivery log records.
pub fn ready_queue_name(components: &QueueNameComponents, cfg: &QueueConfig) -> String {
    let site = components.site_domain();
    let source = "unspecified";
    match &cfg.protocol {
        ProtocolConfig::CustomLua(c) => format!("{source}->{site}@lua:{}", c.constructor),
        ProtocolConfig::Maildir(_) => format!("{source}->{site}@maildir"),
        // Named by their MX site instead: see crates/queue/src/route.rs.
        ProtocolConfig::Smtp | ProtocolConfig::SmtpWith(_) => {
            format!("{source}->{site}@smtp")
        }
    }
}

/// The protocol part of a ready queue's metrics labels, with KumoMTA's
/// names: `smtp_client`, `lua`, `maildir` (the rollup service of
/// `deliver_message_latency_rollup`).
pub fn metrics_protocol(ready_queue: &str) -> &'static str {
    if ready_queue.ends_with("@smtp") {
        "smtp_client"
    } else if ready_queue.ends_with("@maildir") {
        "maildir"
    } else if ready_queue.contains("@lua:") {
        "lua"
    } else {
        "unknown"
    }
}

/// `<protocol>:<ready queue>`: the `service` label of a ready queue's
/// metrics (`ready_count`, `connection_count`, `total_messages_delivered`, ...).
pub fn metrics_service(ready_queue: &str) -> String {
    format!("{}:{ready_queue}", metrics_protocol(ready_queue))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn metrics_services_name_the_protocol_as_kumomta_does() {
        assert_eq!(
            metrics_service("unspecified->mx.example@smtp"),
            "smtp_client:unspecified->mx.example@smtp"
        );
        assert_eq!(
            metrics_service("unspecified->nats@lua:make.nats"),
            "lua:unspecified->nats@lua:make.nats"
        );
        assert_eq!(metrics_protocol("unspecified->x@maildir"), "maildir");
    }

    #[test]
    fn custom_lua_ready_queue_names_follow_the_spec() {
        let lua = mlua::Lua::new();
        let v: Value = lua
            .load("return { protocol = { custom_lua = { constructor = 'make.nats' } } }")
            .eval()
            .unwrap();
        let cfg: QueueConfig = hermod_policy::config::from_lua_strict(&lua, v, "t").unwrap();
        let c = QueueNameComponents::parse("camp:ten@nats");
        assert_eq!(
            ready_queue_name(&c, &cfg),
            "unspecified->nats@lua:make.nats"
        );
        let c = QueueNameComponents::parse("x@d!routed");
        assert_eq!(
            ready_queue_name(&c, &cfg),
            "unspecified->routed@lua:make.nats"
        );
    }
}
