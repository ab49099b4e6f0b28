//! The dispatcher: turns producer events into records for every configured
//! local logger and log hook.

use std::collections::{HashMap, HashSet};
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, OnceLock};

use chrono::{DateTime, Utc};
use hermod_message::{JsonLine, Message, Protocol, RejectionInfo};
use serde_json::{Map, Value};
use tokio::sync::{mpsc, oneshot};

use crate::config::{is_enabled, ConfigError, LocalLogConfig, LogHookConfig, PerRecordConfig};
use crate::hook::{hook_line, HookMessageError, HookSink, LogHook};
use crate::record::{LogRecord, PeerAddress, RecordType, Response};
use crate::rejection::rejection_record;
use crate::segment::{prepare_dir, spawn_writer, Command, SegmentSettings};
use crate::select::{select_headers, select_meta, Pattern};
use crate::tap::{RecordTap, Tap};
use crate::template::RecordTemplates;
use crate::LogError;
use hermod_policy::Engine;

/// What a producer (queue, SMTP, HTTP, delivery) reports.
#[derive(Debug, Clone)]
pub struct LogEvent {
    pub kind: RecordType,
    pub message: Message,
    pub queue: String,
    pub site: String,
    pub response: Response,
    pub peer_address: Option<PeerAddress>,
    pub egress_pool: Option<String>,
    pub egress_source: Option<String>,
    pub delivery_protocol: Option<Protocol>,
    pub session_id: Option<String>,
    pub tls_cipher: Option<String>,
    pub tls_protocol_version: Option<String>,
    pub tls_peer_subject_name: Option<Vec<String>>,
    pub num_attempts: u32,
    /// The parsed ARF report of a `Feedback` record; `None` otherwise.
    pub feedback_report: Option<serde_json::Value>,
    /// When it happened, when that is not now (an `OOB` record carries its
    /// report's Last-Attempt-Date, as in KumoMTA).
    pub when: Option<DateTime<Utc>>,
}

/// Which fields a logger copies and which record types it wants.
struct Selection {
    per_record: HashMap<RecordType, PerRecordConfig>,
    meta: Vec<Pattern>,
    headers: Vec<Pattern>,
    /// Loggers with the same key select the same fields, so one record
    /// (and one JSON line) serves them all.
    key: usize,
}

impl Selection {
    fn new(
        per_record: &HashMap<RecordType, PerRecordConfig>,
        meta: &[String],
        headers: &[String],
        keys: &mut Vec<(Vec<String>, Vec<String>)>,
    ) -> Self {
        let fields = (meta.to_vec(), headers.to_vec());
        let key = keys.iter().position(|k| *k == fields).unwrap_or_else(|| {
            keys.push(fields);
            keys.len() - 1
        });
        Self {
            per_record: per_record.clone(),
            meta: meta.iter().map(|s| Pattern::parse(s)).collect(),
            headers: headers.iter().map(|s| Pattern::parse(s)).collect(),
            key,
        }
    }

    fn wants(&self, kind: RecordType) -> bool {
        is_enabled(&self.per_record, kind)
    }

    fn fill(&self, r: &mut LogRecord, meta: &Map<String, Value>, msg: &Message) {
        r.meta = select_meta(meta, &self.meta);
        r.headers = select_headers(msg, &self.headers);
    }
}

/// A record for the loggers of one field selection, and its JSON line once
/// a log hook has needed it.
struct Prepared {
    key: usize,
    record: LogRecord,
    line: Option<Result<JsonLine, HookMessageError>>,
}

impl Prepared {
    fn new(
        sel: &Selection,
        mut record: LogRecord,
        meta: &Map<String, Value>,
        msg: &Message,
    ) -> Self {
        sel.fill(&mut record, meta, msg);
        Self {
            key: sel.key,
            record,
            line: None,
        }
    }

    fn line(&mut self) -> Result<JsonLine, &HookMessageError> {
        let record = &self.record;
        match self.line.get_or_insert_with(|| hook_line(record)) {
            Ok(line) => Ok(line.clone()),
            Err(e) => Err(e),
        }
    }
}

struct LocalSink {
    dir: PathBuf,
    select: Selection,
    /// `filter_event`: the policy event asked, per message, whether to log.
    filter_event: Option<String>,
    /// Record types this logger renders with a template (on its writer
    /// thread); every other type may be handed over as a ready JSON line.
    templated: Vec<RecordType>,
    tx: mpsc::Sender<Command>,
}

/// A log hook and the fields it selects.
struct HookLogger {
    select: Selection,
    hook: LogHook,
}

struct Inner {
    node_id: String,
    locals: Vec<LocalSink>,
    hooks: Vec<HookLogger>,
    sink: OnceLock<Arc<dyn HookSink>>,
    /// Runs `filter_event` handlers; set once the policy engine exists.
    engine: OnceLock<Arc<Engine>>,
    closed: AtomicBool,
    tap: Tap,
}

/// Cheap to clone; every clone feeds the same loggers.
#[derive(Clone)]
pub struct Logger {
    inner: Option<Arc<Inner>>,
}

impl Logger {
    /// Start one writer per local logger. Existing files in each `log_dir`
    /// are sealed (made read-only) first, so readers treat them as complete.
    pub fn new(
        node_id: uuid::Uuid,
        local: Vec<LocalLogConfig>,
        hooks: Vec<LogHookConfig>,
        hook_sink: Option<Arc<dyn HookSink>>,
    ) -> Result<Logger, LogError> {
        let mut names = HashSet::new();
        for h in &hooks {
            h.validate()?;
            if !names.insert(h.name.as_str()) {
                return Err(LogError::DuplicateHook(h.name.clone()));
            }
        }
        let mut keys = Vec::new();
        let mut locals = Vec::with_capacity(local.len());
        for cfg in &local {
            cfg.validate()?;
            prepare_dir(&cfg.log_dir)?;
            let templates = RecordTemplates::compile("kumo.configure_local_logs", &cfg.per_record)
                .map_err(ConfigError::from)?;
            let templated = RecordType::ALL
                .into_iter()
                .filter(|k| templates.covers(*k))
                .collect();
            let settings = SegmentSettings {
                dir: cfg.log_dir.clone(),
                level: cfg.compression_level,
                max_file_size: cfg.max_file_size,
                max_age: cfg.max_segment_duration,
                templates,
            };
            let tx = spawn_writer(settings, cfg.back_pressure)?;
            locals.push(LocalSink {
                dir: cfg.log_dir.clone(),
                select: Selection::new(&cfg.per_record, &cfg.meta, &cfg.headers, &mut keys),
                filter_event: cfg.filter_event.clone(),
                templated,
                tx,
            });
        }
        let hooks = hooks
            .iter()
            .map(|h| {
                Ok(HookLogger {
                    select: Selection::new(&h.per_record, &h.meta, &h.headers, &mut keys),
                    hook: LogHook::new(h)?,
                })
            })
            .collect::<Result<Vec<_>, LogError>>()?;
        let sink = OnceLock::new();
        if let Some(s) = hook_sink {
            let _ = sink.set(s);
        }
        Ok(Logger {
            inner: Some(Arc::new(Inner {
                node_id: node_id.hyphenated().to_string(),
                locals,
                hooks,
                sink,
                engine: OnceLock::new(),
                closed: AtomicBool::new(false),
                tap: Tap::new(),
            })),
        })
    }

    /// A logger that discards everything.
    pub fn disabled() -> Logger {
        Logger { inner: None }
    }

    /// Provide the hook sink after construction: the queue that implements
    /// it usually needs this logger first. Fails if one is already set.
    pub fn set_hook_sink(&self, sink: Arc<dyn HookSink>) -> Result<(), LogError> {
        match &self.inner {
            Some(inner) => inner
                .sink
                .set(sink)
                .map_err(|_| LogError::HookSinkAlreadySet),
            None => Ok(()),
        }
    }

    /// Give the loggers the policy engine their `filter_event`s run in.
    /// Without it, a logger with a `filter_event` logs nothing.
    pub fn set_policy_engine(&self, engine: Arc<Engine>) {
        if let Some(inner) = &self.inner {
            let _ = inner.engine.set(engine);
        }
    }

    /// Where live viewers subscribe to the records this logger takes
    /// (`crates/logging/src/tap.rs`). A disabled logger's tap never sends.
    pub fn record_tap(&self) -> RecordTap {
        match &self.inner {
            Some(inner) => inner.tap.sender(),
            None => Tap::new().sender(),
        }
    }

    /// Record one event. Waits only while a logger's queue is full.
    pub async fn log(&self, ev: LogEvent) {
        let Some(inner) = &self.inner else {
            return;
        };
        if inner.closed.load(Ordering::Acquire) {
            tracing::debug!(id = %ev.message.id(), kind = %ev.kind, "log record after shutdown dropped");
            return;
        }
        let kind = ev.kind;
        let msg = ev.message.clone();
        let reception_protocol = msg
            .get_meta("reception_protocol")
            .and_then(|v| v.as_str().map(str::to_string));
        let feeds_hooks = reception_protocol.as_deref() != Some(Protocol::LogRecord.as_str());
        let mut locals = Vec::with_capacity(inner.locals.len());
        for local in inner.locals.iter().filter(|l| l.select.wants(kind)) {
            if let Some(event) = &local.filter_event {
                if !inner.filter_allows(event, &msg).await {
                    continue;
                }
            }
            locals.push(local);
        }
        let sink = inner.sink.get();
        let mut hooks: Vec<&HookLogger> = if feeds_hooks {
            inner
                .hooks
                .iter()
                .filter(|h| h.select.wants(kind))
                .collect()
        } else {
            Vec::new()
        };
        if !hooks.is_empty() && sink.is_none() {
            tracing::warn!(id = %msg.id(), "log hooks are configured but no hook sink is set; hook records dropped");
            hooks.clear();
        }

        // One record per distinct field selection, the last built by moving
        // the base record rather than copying it: usually there is one.
        let mut selections: Vec<&Selection> = Vec::with_capacity(locals.len() + hooks.len());
        for sel in locals
            .iter()
            .map(|l| &l.select)
            .chain(hooks.iter().map(|h| &h.select))
        {
            if !selections.iter().any(|s| s.key == sel.key) {
                selections.push(sel);
            }
        }
        let Some((last, rest)) = selections.split_last() else {
            // No logger takes this record; a live viewer still may.
            if inner.tap.wanted() {
                inner
                    .tap
                    .offer(&base_record(ev, reception_protocol, &inner.node_id));
            }
            return;
        };
        let selects_meta = selections.iter().any(|s| !s.meta.is_empty());
        // Copying the whole meta map is only worth it when some logger selects from it.
        let meta = if selects_meta { msg.meta() } else { Map::new() };
        let base = base_record(ev, reception_protocol, &inner.node_id);
        inner.tap.offer(&base);
        let mut records: Vec<Prepared> = Vec::with_capacity(selections.len());
        for sel in rest {
            records.push(Prepared::new(sel, base.clone(), &meta, &msg));
        }
        records.push(Prepared::new(last, base, &meta, &msg));

        if let Some(sink) = sink {
            // Hooks first: the local loggers of their selection reuse the line. From here the
            // fast path is driven by crates/queue/src/hooks/mod.rs.
            for h in &hooks {
                let Some(p) = records.iter_mut().find(|p| p.key == h.select.key) else {
                    continue;
                };
                let Some(permit) = h.hook.permit().await else {
                    continue;
                };
                let line = match p.line() {
                    Ok(l) => l,
                    Err(e) => {
                        tracing::error!(hook = %h.hook.name(), error = %e, "log hook record dropped");
                        continue;
                    }
                };
                h.hook.offer(sink.as_ref(), &p.record, line, &msg, permit);
            }
        }

        for (i, local) in locals.iter().enumerate() {
            let key = local.select.key;
            let Some(pos) = records.iter().position(|p| p.key == key) else {
                continue;
            };
            let cmd = match &records[pos].line {
                Some(Ok(line)) if !local.templated.contains(&kind) => {
                    Command::Line(line.line().clone())
                }
                _ => {
                    // The last local logger of this selection takes the record itself.
                    let later = locals[i + 1..].iter().any(|l| l.select.key == key);
                    let record = if later {
                        records[pos].record.clone()
                    } else {
                        records.swap_remove(pos).record
                    };
                    Command::Record(Box::new(record))
                }
            };
            if local.tx.send(cmd).await.is_err() {
                tracing::warn!(dir = %local.dir.display(), id = %msg.id(), "local logger has stopped; record dropped");
            }
        }
    }

    /// Record an SMTP 4xx/5xx reply in the local logs; the caller has
    /// already applied `hermod_message::accept::is_rejection`. Log hooks never see
    /// it (there is no message to build theirs from) and `filter_event`s are
    /// not asked (they take a message), as in KumoMTA.
    pub async fn log_rejection(&self, r: &RejectionInfo) {
        let Some(inner) = &self.inner else {
            return;
        };
        if inner.closed.load(Ordering::Acquire) {
            return;
        }
        let wanting: Vec<&LocalSink> = inner
            .locals
            .iter()
            .filter(|l| l.select.wants(RecordType::Rejection))
            .collect();
        if wanting.is_empty() && !inner.tap.wanted() {
            return;
        }
        let base = rejection_record(r, &inner.node_id);
        inner.tap.offer(&base);
        for local in wanting {
            let mut rec = base.clone();
            rec.meta = select_meta(&r.meta, &local.select.meta);
            if local.tx.send(Command::Record(Box::new(rec))).await.is_err() {
                tracing::warn!(dir = %local.dir.display(), "local logger has stopped; rejection record dropped");
            }
        }
    }

    /// Stop accepting records, write out everything accepted so far, finish
    /// and seal the open segments, and wait for in-flight hook submissions.
    pub async fn shutdown(&self) {
        let Some(inner) = &self.inner else {
            return;
        };
        inner.closed.store(true, Ordering::Release);
        for local in &inner.locals {
            let (ack, done) = oneshot::channel();
            if local.tx.send(Command::Shutdown(ack)).await.is_ok() {
                let _ = done.await;
            }
        }
        for h in &inner.hooks {
            h.hook.drain().await;
        }
    }

    /// Records queued but not yet written or submitted, across all loggers.
    pub fn queue_depth(&self) -> usize {
        let Some(inner) = &self.inner else {
            return 0;
        };
        let local: usize = inner
            .locals
            .iter()
            .map(|l| l.tx.max_capacity().saturating_sub(l.tx.capacity()))
            .sum();
        let hooks: usize = inner.hooks.iter().map(|h| h.hook.in_flight()).sum();
        local + hooks
    }
}

impl Inner {
    /// Ask the `filter_event` handler whether to log this message. As in
    /// KumoMTA, no handler, an error or a false result all mean "do not log";
    /// errors are reported so a broken filter is noticed.
    async fn filter_allows(&self, event: &str, msg: &Message) -> bool {
        let Some(engine) = self.engine.get() else {
            tracing::error!(
                event,
                "filter_event is configured but no policy engine is attached; record not logged"
            );
            return false;
        };
        match engine
            .call::<hermod_policy::mlua::Value>(event, msg.clone())
            .await
        {
            Ok(Some(v)) => !matches!(
                v,
                hermod_policy::mlua::Value::Nil | hermod_policy::mlua::Value::Boolean(false)
            ),
            Ok(None) => false,
            Err(e) => {
                tracing::error!(event, id = %msg.id(), error = %e, "filter_event failed; record not logged");
                false
            }
        }
    }
}

fn base_record(ev: LogEvent, reception_protocol: Option<String>, node_id: &str) -> LogRecord {
    let now = ev.when.unwrap_or_else(Utc::now);
    let msg = &ev.message;
    let created: DateTime<Utc> = msg.created().into();
    let bounce_classification = crate::bounce::classify(ev.kind, &ev.response);
    LogRecord {
        kind: ev.kind,
        id: msg.id().to_string(),
        // Moved out of the message's copies: no Display formatting, no second copy.
        sender: msg.sender().into(),
        recipient: msg.recipients().into_iter().map(String::from).collect(),
        queue: ev.queue,
        site: ev.site,
        size: msg.data_len() as u64,
        response: ev.response,
        peer_address: ev.peer_address,
        timestamp: now.timestamp(),
        event_time: now,
        created: created.timestamp(),
        created_time: created,
        num_attempts: ev.num_attempts,
        bounce_classification,
        egress_pool: ev.egress_pool,
        egress_source: ev.egress_source,
        source_address: None,
        feedback_report: ev.feedback_report,
        meta: Map::new(),
        headers: Map::new(),
        delivery_protocol: ev.delivery_protocol.map(|p| p.as_str().to_string()),
        reception_protocol,
        nodeid: node_id.to_string(),
        tls_cipher: ev.tls_cipher,
        tls_protocol_version: ev.tls_protocol_version,
        tls_peer_subject_name: ev.tls_peer_subject_name,
        provider_name: None,
        session_id: ev.session_id,
    }
}
