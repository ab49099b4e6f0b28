//! Process-wide metrics. Every crate updates the families defined here
//! through small typed helpers; the HTTP listener serves them as Prometheus
//! text (`/metrics`) and as JSON (`/metrics.json`, the form `kcli` reads).
//!
//! Names follow KumoMTA (`total_messages_received`, not `..._total`), so
//! dashboards written for it keep working: our own families are exported by
//! a collector that writes counter samples without the OpenMetrics `_total`
//! suffix, and the text is served as Prometheus text format 0.0.4.

mod encode;
mod family;
mod histogram;

use std::sync::OnceLock;

use parking_lot::Mutex;
use prometheus_client::registry::Registry;

pub use histogram::{Histogram, HistogramSnapshot};
pub use prometheus_client::metrics::counter::Counter;
pub use prometheus_client::metrics::gauge::Gauge;

use family::Labelled;

/// Content type to serve [`encode_text`] with.
pub const TEXT_CONTENT_TYPE: &str = "text/plain; version=0.0.4; charset=utf-8";

/// `service` label value of messages received over SMTP.
pub const SERVICE_ESMTP_LISTENER: &str = "esmtp_listener";
/// `service` label value of messages received over the HTTP injection API.
pub const SERVICE_HTTP_LISTENER: &str = "http_listener";

/// `broker` label values of `broker_publish_latency`.
pub const BROKER_NATS: &str = "nats";
pub const BROKER_AMQP: &str = "amqp";
pub const BROKER_KAFKA: &str = "kafka";

pub(crate) struct Metrics {
    received: Labelled<Counter>,
    delivered: Labelled<Counter>,
    transfail: Labelled<Counter>,
    fail: Labelled<Counter>,
    scheduled_count: Labelled<Gauge>,
    ready_count: Labelled<Gauge>,
    connection_count: Labelled<Gauge>,
    ready_queue_paused: Labelled<Gauge>,
    ready_full: Labelled<Counter>,
    delayed_due_to_message_rate_throttle: Labelled<Counter>,
    deliver_message_latency_rollup: Labelled<Histogram>,
    log_hook_backlog_count: Labelled<Counter>,
    broker_publish_latency: Labelled<Histogram>,
    lua_event_latency: Labelled<Histogram>,
    user_lua_latency: Labelled<Histogram>,
    lua_count: Gauge,
    lua_spare_count: Gauge,
    lua_load_count: Counter,
    log_queue_depth: Gauge,
    spool_group_commits: Counter,
    spool_messages_written: Counter,
    spool_fsync_latency: Histogram,
    message_count: Gauge,
}

fn new_latency() -> Histogram {
    Histogram::new(histogram::LATENCY_BUCKETS)
}

impl Metrics {
    fn new() -> Self {
        Self {
            received: Labelled::new(
                "total_messages_received",
                "total number of messages received by a listener",
                "service",
                Counter::default,
            ),
            delivered: Labelled::new(
                "total_messages_delivered",
                "total number of messages delivered by a service",
                "service",
                Counter::default,
            ),
            transfail: Labelled::new(
                "total_messages_transfail",
                "total number of transient delivery failures of a service",
                "service",
                Counter::default,
            ),
            fail: Labelled::new(
                "total_messages_fail",
                "total number of permanent delivery failures of a service",
                "service",
                Counter::default,
            ),
            scheduled_count: Labelled::new(
                "scheduled_count",
                "number of messages in a scheduled queue",
                "queue",
                Gauge::default,
            ),
            ready_count: Labelled::new(
                "ready_count",
                "number of messages in a ready queue",
                "service",
                Gauge::default,
            ),
            connection_count: Labelled::new(
                "connection_count",
                "number of active connections of a service",
                "service",
                Gauge::default,
            ),
            ready_queue_paused: Labelled::new(
                "ready_queue_paused",
                "1 while a ready queue is paused because its destination looks unreachable",
                "service",
                Gauge::default,
            ),
            ready_full: Labelled::new(
                "ready_full",
                "number of times a message did not fit in its ready queue's max_ready \
                 and waited there as its spool id",
                "service",
                Counter::default,
            ),
            delayed_due_to_message_rate_throttle: Labelled::new(
                "delayed_due_to_message_rate_throttle",
                "number of times a message was delayed due to max_message_rate",
                "queue",
                Counter::default,
            ),
            deliver_message_latency_rollup: Labelled::new(
                "deliver_message_latency_rollup",
                "how many seconds a deliver_message call takes for a given protocol",
                "service",
                || Histogram::new(histogram::DELIVER_BUCKETS),
            ),
            log_hook_backlog_count: Labelled::new(
                "log_hook_backlog_count",
                "how many times processing of a log event hit the back_pressure in a hook",
                "logger",
                Counter::default,
            ),
            broker_publish_latency: Labelled::new(
                "broker_publish_latency",
                "seconds from a publish to the broker's acknowledgement, per broker kind",
                "broker",
                new_latency,
            ),
            lua_event_latency: Labelled::new(
                "lua_event_latency",
                "time taken to run a lua event handler, in seconds",
                "event",
                new_latency,
            ),
            user_lua_latency: Labelled::new(
                "user_lua_latency",
                "how long something user-defined took to run in your lua policy",
                "label",
                new_latency,
            ),
            lua_count: Gauge::default(),
            lua_spare_count: Gauge::default(),
            lua_load_count: Counter::default(),
            log_queue_depth: Gauge::default(),
            spool_group_commits: Counter::default(),
            spool_messages_written: Counter::default(),
            spool_fsync_latency: new_latency(),
            message_count: Gauge::default(),
        }
    }
}

/// A metric whose value is owned by another component and read at scrape
/// time (e.g. the policy engine's pool), so that crate need not depend on
/// this one.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Source {
    LuaCount,
    LuaSpareCount,
    LuaLoadCount,
    LogQueueDepth,
    /// Synced WAL writes of the spool (`spool_group_commits`).
    SpoolWalSyncs,
    SpoolMessagesWritten,
    /// Messages held by the process (`message_count`).
    MessageCount,
}

type SourceFn = Box<dyn Fn() -> u64 + Send + Sync>;

struct Global {
    metrics: &'static Metrics,
    registry: Mutex<Registry>,
    sources: Mutex<Vec<(Source, SourceFn)>>,
}

fn global() -> &'static Global {
    static GLOBAL: OnceLock<Global> = OnceLock::new();
    GLOBAL.get_or_init(|| {
        let metrics: &'static Metrics = Box::leak(Box::new(Metrics::new()));
        let mut registry = Registry::default();
        registry.register_collector(Box::new(encode::HermodCollector(metrics)));
        Global {
            metrics,
            registry: Mutex::new(registry),
            sources: Mutex::new(Vec::new()),
        }
    })
}

fn m() -> &'static Metrics {
    global().metrics
}

/// Register extra metrics in the process-wide registry (they appear in
/// `/metrics`, not in `/metrics.json`).
pub fn with_registry<R>(f: impl FnOnce(&mut Registry) -> R) -> R {
    f(&mut global().registry.lock())
}

/// `total_messages_received{service}`; `service` is [`SERVICE_ESMTP_LISTENER`]
/// or [`SERVICE_HTTP_LISTENER`].
pub fn received(service: &str) -> Counter {
    m().received.get(service)
}

/// `total_messages_delivered{service="<proto>:<ready queue>"}`.
pub fn delivered(service: &str) -> Counter {
    m().delivered.get(service)
}

/// `total_messages_transfail{service}`.
pub fn transfail(service: &str) -> Counter {
    m().transfail.get(service)
}

/// `total_messages_fail{service}`.
pub fn failed(service: &str) -> Counter {
    m().fail.get(service)
}

/// `scheduled_count{queue}`.
pub fn scheduled_count(queue: &str) -> Gauge {
    m().scheduled_count.get(queue)
}

/// `ready_count{service}`.
pub fn ready_count(service: &str) -> Gauge {
    m().ready_count.get(service)
}

/// `connection_count{service}`.
pub fn connection_count(service: &str) -> Gauge {
    m().connection_count.get(service)
}

/// `ready_queue_paused{service}`.
pub fn ready_queue_paused(service: &str) -> Gauge {
    m().ready_queue_paused.get(service)
}

/// `lua_event_latency{event}`.
pub fn lua_event_latency(event: &str) -> Histogram {
    m().lua_event_latency.get(event)
}

/// `user_lua_latency{label}`: the timers of `kumo.time.start_timer`.
pub fn user_lua_latency(label: &str) -> Histogram {
    m().user_lua_latency.get(label)
}

/// `ready_full{service}`: a message arrived beyond the ready queue's
/// `max_ready`. KumoMTA sends such a message back to its scheduled queue;
/// Hermod keeps it in the ready queue as its spool id (crates/queue/src/held.rs).
pub fn ready_full(service: &str) -> Counter {
    m().ready_full.get(service)
}

/// `delayed_due_to_message_rate_throttle{queue}`: a message had to wait for
/// its egress path's `max_message_rate`; `queue` is its scheduled queue.
pub fn delayed_due_to_message_rate_throttle(queue: &str) -> Counter {
    m().delayed_due_to_message_rate_throttle.get(queue)
}

/// `deliver_message_latency_rollup{service}`: one delivery call of a
/// protocol (`smtp_client`, `lua`, `maildir`), in seconds.
pub fn deliver_message_latency_rollup(protocol: &str) -> Histogram {
    m().deliver_message_latency_rollup.get(protocol)
}

/// `log_hook_backlog_count{logger}`: a record waited for a free slot of the
/// hook's `back_pressure`.
pub fn log_hook_backlog_count(logger: &str) -> Counter {
    m().log_hook_backlog_count.get(logger)
}

/// `broker_publish_latency{broker}`: from a publish to the broker's
/// acknowledgement ([`BROKER_NATS`], [`BROKER_AMQP`], [`BROKER_KAFKA`]).
pub fn broker_publish_latency(broker: &str) -> Histogram {
    m().broker_publish_latency.get(broker)
}

/// Stop exporting a reaped scheduled queue.
pub fn remove_scheduled_queue(queue: &str) {
    m().scheduled_count.remove(queue);
}

/// Stop exporting the gauges of a reaped ready queue; its delivery counters
/// stay, since they are totals over the life of the process.
pub fn remove_ready_queue(service: &str) {
    m().ready_count.remove(service);
    m().connection_count.remove(service);
    m().ready_queue_paused.remove(service);
}

/// `lua_count`: Lua contexts currently alive.
pub fn lua_count() -> Gauge {
    m().lua_count.clone()
}

/// `lua_spare_count`: idle contexts in the pool.
pub fn lua_spare_count() -> Gauge {
    m().lua_spare_count.clone()
}

/// `lua_load_count`: contexts created (policy file executed).
pub fn lua_load_count() -> Counter {
    m().lua_load_count.clone()
}

/// `log_queue_depth`: log records waiting to be written.
pub fn log_queue_depth() -> Gauge {
    m().log_queue_depth.clone()
}

/// `spool_group_commits`: WAL syncs performed by the spool writer.
pub fn spool_group_commits() -> Counter {
    m().spool_group_commits.clone()
}

/// `spool_messages_written`: messages written to the spool.
pub fn spool_messages_written() -> Counter {
    m().spool_messages_written.clone()
}

/// `spool_fsync_latency`: one synced spool write (the fsync that a group
/// commit's messages share), in seconds.
pub fn spool_fsync_latency() -> Histogram {
    m().spool_fsync_latency.clone()
}

/// Read `which` from `f` at every scrape, replacing any earlier source for it.
/// Example: `set_source(Source::LuaLoadCount, hermod_policy::metrics_hook::lua_load_count)`.
pub fn set_source(which: Source, f: impl Fn() -> u64 + Send + Sync + 'static) {
    let mut g = global().sources.lock();
    g.retain(|(s, _)| *s != which);
    g.push((which, Box::new(f)));
}

fn sync_sources() {
    let m = m();
    for (which, f) in global().sources.lock().iter() {
        let v = f();
        let signed = i64::try_from(v).unwrap_or(i64::MAX);
        match which {
            Source::LuaCount => {
                m.lua_count.set(signed);
            }
            Source::LuaSpareCount => {
                m.lua_spare_count.set(signed);
            }
            Source::LogQueueDepth => {
                m.log_queue_depth.set(signed);
            }
            Source::LuaLoadCount => m
                .lua_load_count
                .inner()
                .store(v, std::sync::atomic::Ordering::Relaxed),
            Source::SpoolWalSyncs => m
                .spool_group_commits
                .inner()
                .store(v, std::sync::atomic::Ordering::Relaxed),
            Source::MessageCount => {
                m.message_count.set(signed);
            }
            Source::SpoolMessagesWritten => m
                .spool_messages_written
                .inner()
                .store(v, std::sync::atomic::Ordering::Relaxed),
        }
    }
}

/// All metrics of the registry in Prometheus text format
/// (serve with [`TEXT_CONTENT_TYPE`]).
pub fn encode_text() -> String {
    sync_sources();
    let mut out = String::with_capacity(4096);
    let registry = global().registry.lock();
    if let Err(e) = prometheus_client::encoding::text::encode(&mut out, &registry) {
        // Writing to a String cannot fail; only a buggy custom metric could.
        out.push_str(&format!("# encoding error: {e}\n"));
    }
    out
}

/// Our families as `{name: {help, type, value}}`; labelled values are
/// nested as `{label: {label_value: number}}`.
pub fn encode_json() -> serde_json::Value {
    sync_sources();
    encode::json(m())
}
