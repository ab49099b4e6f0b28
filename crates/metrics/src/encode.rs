//! Exporting [`Metrics`] as Prometheus text (through a prometheus-client
//! collector) and as the `/metrics.json` document.

use std::borrow::Cow;

use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, MetricEncoder, NoLabelSet};
use prometheus_client::metrics::MetricType;
use serde_json::{json, Map, Value};

use crate::family::Labelled;
use crate::{Counter, Gauge, Histogram, Metrics};

#[derive(Debug)]
pub(crate) struct HermodCollector(pub &'static Metrics);

impl std::fmt::Debug for Metrics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Metrics")
    }
}

/// prometheus-client writes label values verbatim; a queue name containing
/// a quote or backslash must not corrupt the exposition.
fn escape_label(v: &str) -> Cow<'_, str> {
    if !v.contains(['\\', '"', '\n']) {
        return Cow::Borrowed(v);
    }
    let mut out = String::with_capacity(v.len() + 4);
    for c in v.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            '"' => out.push_str("\\\""),
            '\n' => out.push_str("\\n"),
            c => out.push(c),
        }
    }
    Cow::Owned(out)
}

/// A sample value written without any type-specific suffix.
trait Sample: Clone {
    const TYPE: MetricType;
    fn write(&self, enc: &mut MetricEncoder) -> std::fmt::Result;
    fn json(&self) -> Value;
}

impl Sample for Counter {
    const TYPE: MetricType = MetricType::Counter;
    fn write(&self, enc: &mut MetricEncoder) -> std::fmt::Result {
        // encode_gauge: same line format, but without the `_total` suffix.
        enc.encode_gauge(&self.get())
    }
    fn json(&self) -> Value {
        json!(self.get())
    }
}

impl Sample for Gauge {
    const TYPE: MetricType = MetricType::Gauge;
    fn write(&self, enc: &mut MetricEncoder) -> std::fmt::Result {
        enc.encode_gauge(&self.get())
    }
    fn json(&self) -> Value {
        json!(self.get())
    }
}

impl Sample for Histogram {
    const TYPE: MetricType = MetricType::Histogram;
    fn write(&self, enc: &mut MetricEncoder) -> std::fmt::Result {
        enc.encode_histogram::<NoLabelSet>(self.sum(), self.count(), &self.raw_buckets(), None)
    }
    fn json(&self) -> Value {
        let s = self.snapshot();
        let buckets: Vec<Value> = s
            .buckets
            .iter()
            .map(|(le, n)| {
                let le = if le.is_finite() {
                    json!(le)
                } else {
                    json!("+Inf")
                };
                json!({"le": le, "count": n})
            })
            .collect();
        json!({"count": s.count, "sum": s.sum, "buckets": buckets})
    }
}

fn type_name(t: MetricType) -> &'static str {
    match t {
        MetricType::Counter => "counter",
        MetricType::Gauge => "gauge",
        MetricType::Histogram => "histogram",
        _ => "unknown",
    }
}

fn encode_labelled<M: Sample>(enc: &mut DescriptorEncoder, f: &Labelled<M>) -> std::fmt::Result {
    let mut me = enc.encode_descriptor(f.name, f.help, None, M::TYPE)?;
    for (value, metric) in f.snapshot() {
        let labels = [(f.label, escape_label(&value))];
        let mut fe = me.encode_family(&labels)?;
        metric.write(&mut fe)?;
    }
    Ok(())
}

fn encode_plain<M: Sample>(
    enc: &mut DescriptorEncoder,
    name: &str,
    help: &str,
    m: &M,
) -> std::fmt::Result {
    let mut me = enc.encode_descriptor(name, help, None, M::TYPE)?;
    m.write(&mut me)
}

impl Collector for HermodCollector {
    fn encode(&self, mut enc: DescriptorEncoder) -> std::fmt::Result {
        let m = self.0;
        encode_labelled(&mut enc, &m.received)?;
        encode_labelled(&mut enc, &m.delivered)?;
        encode_labelled(&mut enc, &m.transfail)?;
        encode_labelled(&mut enc, &m.fail)?;
        encode_labelled(&mut enc, &m.scheduled_count)?;
        encode_labelled(&mut enc, &m.ready_count)?;
        encode_labelled(&mut enc, &m.connection_count)?;
        encode_labelled(&mut enc, &m.ready_queue_paused)?;
        encode_labelled(&mut enc, &m.ready_full)?;
        encode_labelled(&mut enc, &m.delayed_due_to_message_rate_throttle)?;
        encode_labelled(&mut enc, &m.deliver_message_latency_rollup)?;
        encode_labelled(&mut enc, &m.log_hook_backlog_count)?;
        encode_labelled(&mut enc, &m.broker_publish_latency)?;
        encode_labelled(&mut enc, &m.lua_event_latency)?;
        encode_labelled(&mut enc, &m.user_lua_latency)?;
        for (name, help, m) in plain(m) {
            match m {
                Plain::C(c) => encode_plain(&mut enc, name, help, c)?,
                Plain::G(g) => encode_plain(&mut enc, name, help, g)?,
                Plain::H(h) => encode_plain(&mut enc, name, help, h)?,
            }
        }
        Ok(())
    }
}

enum Plain<'a> {
    C(&'a Counter),
    G(&'a Gauge),
    H(&'a Histogram),
}

fn plain(m: &Metrics) -> [(&'static str, &'static str, Plain<'_>); 8] {
    [
        (
            "message_count",
            "number of messages held: in memory, or waiting in a queue as their spool id",
            Plain::G(&m.message_count),
        ),
        (
            "lua_count",
            "number of lua contexts currently alive",
            Plain::G(&m.lua_count),
        ),
        (
            "lua_spare_count",
            "number of idle lua contexts in the pool",
            Plain::G(&m.lua_spare_count),
        ),
        (
            "lua_load_count",
            "how many times the policy was loaded into a new lua context",
            Plain::C(&m.lua_load_count),
        ),
        (
            "log_queue_depth",
            "number of log records waiting to be written",
            Plain::G(&m.log_queue_depth),
        ),
        (
            "spool_group_commits",
            "number of spool syncs, each covering one or more writes",
            Plain::C(&m.spool_group_commits),
        ),
        (
            "spool_messages_written",
            "number of messages written to the spool",
            Plain::C(&m.spool_messages_written),
        ),
        (
            "spool_fsync_latency",
            "seconds taken by one synced spool write, shared by a group commit",
            Plain::H(&m.spool_fsync_latency),
        ),
    ]
}

fn json_labelled<M: Sample>(out: &mut Map<String, Value>, f: &Labelled<M>) {
    let values: Map<String, Value> = f
        .snapshot()
        .into_iter()
        .map(|(k, v)| (k, v.json()))
        .collect();
    out.insert(
        f.name.to_string(),
        json!({"help": f.help, "type": type_name(M::TYPE), "value": {f.label: values}}),
    );
}

pub(crate) fn json(m: &Metrics) -> Value {
    let mut out = Map::new();
    json_labelled(&mut out, &m.received);
    json_labelled(&mut out, &m.delivered);
    json_labelled(&mut out, &m.transfail);
    json_labelled(&mut out, &m.fail);
    json_labelled(&mut out, &m.scheduled_count);
    json_labelled(&mut out, &m.ready_count);
    json_labelled(&mut out, &m.connection_count);
    json_labelled(&mut out, &m.ready_queue_paused);
    json_labelled(&mut out, &m.ready_full);
    json_labelled(&mut out, &m.delayed_due_to_message_rate_throttle);
    json_labelled(&mut out, &m.deliver_message_latency_rollup);
    json_labelled(&mut out, &m.log_hook_backlog_count);
    json_labelled(&mut out, &m.broker_publish_latency);
    json_labelled(&mut out, &m.lua_event_latency);
    json_labelled(&mut out, &m.user_lua_latency);
    for (name, help, p) in plain(m) {
        let (t, v) = match p {
            Plain::C(c) => (Counter::TYPE, c.json()),
            Plain::G(g) => (Gauge::TYPE, g.json()),
            Plain::H(h) => (Histogram::TYPE, h.json()),
        };
        out.insert(
            name.to_string(),
            json!({"help": help, "type": type_name(t), "value": v}),
        );
    }
    Value::Object(out)
}
