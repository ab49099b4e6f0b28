//! Delivery sessions: one "connection" of a ready queue. The custom_lua
//! session calls the constructor, then `send`/`send_batch`, then `close`, as KumoMTA's
//! custom_lua protocol does, plus the legacy-constructor mode README.md describes
//! ("Legacy constructors").

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use hermod_logging::PeerAddress;
use hermod_message::lua::TrackedMessage;
use hermod_message::Protocol;
use hermod_policy::mlua::{Function, Table, Value};
use hermod_policy::queue_config::CustomLuaConfig;
use hermod_policy::{scope, CallError, Context, LegacyMode, ProtocolConfig};

use crate::manager::QueueManager;
use crate::outcome::{self, AttemptInfo};
use crate::ready::{Entry, ReadyQueue};

pub async fn run(qm: &QueueManager, rq: &Arc<ReadyQueue>) {
    match rq.protocol() {
        ProtocolConfig::CustomLua(cfg) => lua_session(qm, rq, cfg).await,
        ProtocolConfig::Maildir(cfg) => crate::maildir::session(qm, rq, cfg).await,
        ProtocolConfig::Smtp | ProtocolConfig::SmtpWith(_) => smtp_unavailable(qm, rq).await,
    }
}

/// Make sure every entry's bytes are in memory; entries whose data cannot
/// be read are failed transiently (they stay in the spool).
pub(crate) async fn load_data(
    qm: &QueueManager,
    batch: Vec<Entry>,
    info: &AttemptInfo,
) -> Vec<Entry> {
    let mut ok = Vec::with_capacity(batch.len());
    for e in batch {
        if e.message.is_data_loaded() {
            ok.push(e);
            continue;
        }
        match qm.spool().load_data(e.message.id()).await {
            Ok(d) => {
                e.message.load_data(d);
                ok.push(e);
            }
            Err(err) => {
                tracing::error!(id = %e.message.id(), error = %err, "cannot read message data from the spool");
                let text = format!("spool data unavailable: {err}");
                outcome::transient(qm, e.message, e.queue, info, 400, text, None).await;
            }
        }
    }
    ok
}

/// The default SMTP client protocol is not built yet: fail transiently with
/// a clear reason so mail waits in the spool instead of being lost.
async fn smtp_unavailable(qm: &QueueManager, rq: &Arc<ReadyQueue>) {
    let info = AttemptInfo::for_queue(
        rq,
        None,
        Protocol::Esmtp,
        format!("smtp_client:{}", rq.name),
    );
    loop {
        let batch = rq.next_batch(64, 1, std::time::Duration::ZERO).await;
        if batch.is_empty() {
            return;
        }
        for e in batch {
            let text = "Hermod has no SMTP client yet: configure a custom_lua or maildir_path protocol for this queue".to_string();
            outcome::transient(qm, e.message, e.queue, &info, 451, text, None).await;
        }
    }
}

/// The result of calling the constructor.
enum Connection {
    /// A connection object: deliver through `send`/`send_batch`.
    Object(Table),
    /// Legacy form: the constructor used `message` and was the send of the
    /// first message; its outcome is attached.
    Legacy(Result<Value, CallError>),
    /// Returned something that is not a table without touching `message`.
    Invalid(String),
    /// Raised before using `message`, or no such event.
    Failed(String),
}

fn args_for(rq: &ReadyQueue, first: &Entry) -> (String, Option<String>, Option<String>) {
    let sq = rq.representative().unwrap_or_else(|| first.queue.clone());
    let c = &sq.components;
    (c.domain.clone(), c.tenant.clone(), c.campaign.clone())
}

/// Call the constructor with `message` bound to `entry` (legacy auto mode).
async fn call_constructor(
    ctx: &Context,
    cfg: &CustomLuaConfig,
    args: (String, Option<String>, Option<String>),
    entry: &Entry,
) -> Connection {
    let lua = ctx.lua();
    let touched = Arc::new(AtomicBool::new(false));
    let globals = lua.globals();
    let policy_has_message = !matches!(globals.get::<Value>("message"), Ok(Value::Nil));
    let bind = ctx.engine().legacy_mode() == LegacyMode::Auto && !policy_has_message;
    if bind {
        let tracked = TrackedMessage {
            message: entry.message.clone(),
            touched: touched.clone(),
        };
        if let Err(e) = globals.set("message", tracked) {
            return Connection::Failed(e.to_string());
        }
        let data = entry.message.data().unwrap_or_default();
        scope::enter(lua, [(entry.message.id().to_string(), data)]);
    }
    let r = ctx.call::<Value>(&cfg.constructor, args).await;
    if bind {
        let _ = globals.set("message", Value::Nil);
        scope::leave(lua);
    }
    let used = touched.load(Ordering::SeqCst);
    match r {
        Ok(None) => Connection::Failed(format!(
            "no handler is registered for the constructor event '{}'",
            cfg.constructor
        )),
        Ok(Some(Value::Table(t))) => Connection::Object(t),
        Ok(Some(v)) if used => Connection::Legacy(Ok(v)),
        Ok(Some(v)) => Connection::Invalid(format!(
            "constructor returned a {} instead of a connection table",
            v.type_name()
        )),
        Err(e) if used => Connection::Legacy(Err(e)),
        Err(CallError::Reject(r)) => Connection::Failed(format!("{} {}", r.code, r.message)),
        Err(e) => Connection::Failed(e.to_string()),
    }
}

fn with_article(noun: &str) -> String {
    let vowel = noun.starts_with(['a', 'e', 'i', 'o', 'u']);
    format!("{} {noun}", if vowel { "an" } else { "a" })
}

fn value_text(v: &Value) -> Option<String> {
    match v {
        Value::String(s) => Some(s.to_string_lossy()),
        Value::Integer(i) => Some(i.to_string()),
        Value::Number(n) => Some(n.to_string()),
        _ => None,
    }
}

/// Feed an attempt's outcome into the ready queue's health: a broker or
/// connection error counts toward a pause; a delivery or a reject from the
/// destination shows it is reachable.
fn note_health(qm: &QueueManager, rq: &Arc<ReadyQueue>, r: &Result<String, CallError>) {
    match r {
        Ok(_) | Err(CallError::Reject(_)) => {
            if rq.record_success() {
                qm.maybe_start_sessions(rq);
            }
        }
        Err(e) => rq.record_failure(&e.to_string()),
    }
}

/// Map one attempt's outcome onto a message (ARCHITECTURE.md step 8).
async fn dispose(qm: &QueueManager, e: Entry, info: &AttemptInfo, r: &Result<String, CallError>) {
    match r {
        Ok(text) => outcome::delivered(qm, e.message, &e.queue, info, text.clone()).await,
        Err(CallError::Reject(rej)) if (400..500).contains(&rej.code) => {
            outcome::transient(
                qm,
                e.message,
                e.queue,
                info,
                rej.code,
                rej.message.clone(),
                info.peer.clone(),
            )
            .await
        }
        Err(CallError::Reject(rej)) => {
            outcome::bounced(qm, e.message, &e.queue, info, rej.code, rej.message.clone()).await
        }
        Err(other) => {
            let text = format!("KumoMTA internal: error in deliver_message: {other}");
            outcome::transient(qm, e.message, e.queue, info, 400, text, None).await
        }
    }
}

async fn fail_connect(
    qm: &QueueManager,
    rq: &ReadyQueue,
    batch: Vec<Entry>,
    info: &AttemptInfo,
    why: &str,
) {
    tracing::warn!(queue = %info.site, error = %why, "custom_lua constructor failed");
    rq.record_failure(why);
    for e in batch {
        let text = format!("KumoMTA internal: failed to connect to any candidate hosts: {why}");
        outcome::transient(qm, e.message, e.queue, info, 400, text, None).await;
    }
}

/// Send a batch through the connection object.
async fn send(
    ctx: &Context,
    conn: &Table,
    batch: &[Entry],
    use_batch: bool,
) -> Result<String, CallError> {
    let lua = ctx.lua();
    let method = if use_batch { "send_batch" } else { "send" };
    let f: Function = match conn.get::<Value>(method) {
        Ok(Value::Function(f)) => f,
        _ => {
            return Err(CallError::Lua(format!(
                "sender:{method} method failed: the connection object has no {method} method"
            )))
        }
    };
    scope::enter(
        lua,
        batch.iter().map(|e| {
            (
                e.message.id().to_string(),
                e.message.data().unwrap_or_default(),
            )
        }),
    );
    let r = if use_batch {
        match lua.create_sequence_from(batch.iter().map(|e| e.message.clone())) {
            Ok(arr) => ctx.call_function(&f, (conn.clone(), arr)).await,
            Err(e) => Err(CallError::Lua(e.to_string())),
        }
    } else {
        ctx.call_function(&f, (conn.clone(), batch[0].message.clone()))
            .await
    };
    scope::leave(lua);
    match r {
        Ok(vals) => {
            let first = vals.into_iter().next().unwrap_or(Value::Nil);
            value_text(&first).ok_or_else(|| {
                CallError::Lua(format!(
                    "sender:{method} method failed: it returned {} instead of a string such as '250 ok'",
                    if first.is_nil() { "nothing".to_string() } else { with_article(first.type_name()) }
                ))
            })
        }
        Err(CallError::Lua(t)) => Err(CallError::Lua(format!(
            "sender:{method} method failed: {t}"
        ))),
        Err(e) => Err(e),
    }
}

async fn close(ctx: &Context, conn: &Table) {
    if let Ok(Value::Function(f)) = conn.get::<Value>("close") {
        if let Err(e) = ctx.call_function(&f, conn.clone()).await {
            tracing::warn!(error = %e, "custom_lua close failed");
        }
    }
}

async fn lua_session(qm: &QueueManager, rq: &Arc<ReadyQueue>, cfg: CustomLuaConfig) {
    let service = format!("lua:{}", rq.name);
    let peer = PeerAddress {
        name: format!("Lua via {}", cfg.constructor),
        addr: "0.0.0.0".into(),
        is_secure: false,
    };
    let info = AttemptInfo::for_queue(rq, Some(peer), Protocol::Lua, service.clone());
    let batch_size = cfg.batch_size.max(1);
    let use_batch = cfg.batch_size > 1;
    let min_batch = cfg.min_batch_size.clamp(1, batch_size);
    let batch = rq
        .next_batch(batch_size, min_batch, cfg.max_batch_latency)
        .await;
    let batch = load_data(qm, batch, &info).await;
    if batch.is_empty() {
        return;
    }
    let ctx = match qm.engine().context().await {
        Ok(c) => c,
        Err(e) => return fail_connect(qm, rq, batch, &info, &e.to_string()).await,
    };
    let args = args_for(rq, &batch[0]);
    let conn = call_constructor(&ctx, &cfg, args.clone(), &batch[0]).await;
    match conn {
        Connection::Failed(why) => fail_connect(qm, rq, batch, &info, &why).await,
        Connection::Invalid(why) => {
            let err = Err(CallError::Lua(format!("invalid connection object: {why}")));
            for e in batch {
                dispose(qm, e, &info, &err).await;
            }
        }
        Connection::Legacy(first) => {
            legacy_session(qm, rq, &ctx, &cfg, args, batch, first, &info).await
        }
        Connection::Object(conn) => {
            object_session(
                qm, rq, &ctx, &conn, batch, use_batch, min_batch, &cfg, &info,
            )
            .await
        }
    }
    // A session owns its context for its lifetime; KumoMTA drops it afterwards.
    ctx.discard();
}

#[allow(clippy::too_many_arguments)]
async fn object_session(
    qm: &QueueManager,
    rq: &Arc<ReadyQueue>,
    ctx: &Context,
    conn: &Table,
    mut batch: Vec<Entry>,
    use_batch: bool,
    min_batch: usize,
    cfg: &CustomLuaConfig,
    info: &AttemptInfo,
) {
    let mut delivered = 0usize;
    loop {
        // Without send_batch every message is its own call.
        let chunks: Vec<Vec<Entry>> = if use_batch {
            vec![batch]
        } else {
            batch.into_iter().map(|e| vec![e]).collect()
        };
        let mut rest = chunks.into_iter();
        while let Some(chunk) = rest.next() {
            let r = send(ctx, conn, &chunk, use_batch).await;
            note_health(qm, rq, &r);
            delivered += chunk.len();
            let end = match &r {
                Err(CallError::Reject(rej)) => rej.code == 421,
                Err(_) => true,
                Ok(_) => false,
            };
            match &r {
                Ok(text) => {
                    let done = chunk.into_iter().map(|e| (e.message, e.queue));
                    outcome::delivered_all(qm, done, info, text).await;
                }
                Err(_) => {
                    for e in chunk {
                        dispose(qm, e, info, &r).await;
                    }
                }
            }
            if end {
                close(ctx, conn).await;
                // Untried messages go back unchanged; another session takes them.
                rq.push_front(rest.flatten().collect());
                return;
            }
        }
        if delivered >= rq.limits.max_deliveries_per_connection {
            break;
        }
        batch = rq
            .next_batch(cfg.batch_size.max(1), min_batch, cfg.max_batch_latency)
            .await;
        batch = load_data(qm, batch, info).await;
        if batch.is_empty() {
            break;
        }
    }
    close(ctx, conn).await;
}

/// Legacy form: each message is delivered by calling the constructor with
/// `message` bound to it; `batch_size` is ignored and `close` never called.
#[allow(clippy::too_many_arguments)]
async fn legacy_session(
    qm: &QueueManager,
    rq: &Arc<ReadyQueue>,
    ctx: &Context,
    cfg: &CustomLuaConfig,
    args: (String, Option<String>, Option<String>),
    batch: Vec<Entry>,
    first: Result<Value, CallError>,
    info: &AttemptInfo,
) {
    let mut pending = batch.into_iter();
    let Some(head) = pending.next() else { return };
    let first = first.map(|v| value_text(&v).unwrap_or_else(|| "OK".into()));
    note_health(qm, rq, &first);
    dispose(qm, head, info, &first).await;
    let mut delivered = 1usize;
    // Built element by element: collecting a partly consumed vec::IntoIter
    // into a VecDeque read past its buffer here (seen under valgrind).
    let mut queue = std::collections::VecDeque::new();
    for e in pending {
        queue.push_back(e);
    }
    loop {
        while let Some(e) = queue.pop_front() {
            let r = match call_constructor(ctx, cfg, args.clone(), &e).await {
                Connection::Legacy(r) => r.map(|v| value_text(&v).unwrap_or_else(|| "OK".into())),
                Connection::Object(_) => Err(CallError::Lua(
                    "constructor returned a connection object after delivering in the legacy form"
                        .into(),
                )),
                Connection::Invalid(w) | Connection::Failed(w) => Err(CallError::Lua(w)),
            };
            note_health(qm, rq, &r);
            dispose(qm, e, info, &r).await;
            if rq.state() != crate::ready::ReadyQueueState::Active {
                // Paused: hand the rest back untouched; the prober resumes them.
                rq.push_front(queue.drain(..).collect());
                return;
            }
            delivered += 1;
        }
        if delivered >= rq.limits.max_deliveries_per_connection {
            return;
        }
        let next = rq
            .next_batch(cfg.batch_size.max(1), 1, cfg.max_batch_latency)
            .await;
        let next = load_data(qm, next, info).await;
        if next.is_empty() {
            return;
        }
        queue.extend(next);
    }
}
