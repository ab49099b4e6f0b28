//! The `custom_lua` protocol: the constructor opens a "connection" (a Lua table), whose
//! `send`/`send_batch` deliver and whose `close` ends it, as KumoMTA's custom_lua protocol
//! does; plus the legacy-constructor form README.md describes ("Legacy constructors"), where
//! each constructor call with the global `message` bound is the delivery of that message.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use hermod_logging::{PeerAddress, Response};
use hermod_message::lua::TrackedMessage;
use hermod_message::Protocol;
use hermod_policy::mlua::{Function, Table, Value};
use hermod_policy::queue_config::CustomLuaConfig;
use hermod_policy::{scope, CallError, Context, Engine, LegacyMode};

use super::{Attempt, Batching, Dispatcher, Health, Outcome, Outcomes};
use crate::ready::{Entry, ReadyQueue};

type ConstructorArgs = (String, Option<String>, Option<String>);

pub(super) struct CustomLua {
    engine: Arc<Engine>,
    cfg: CustomLuaConfig,
    /// The session owns one context for its lifetime; KumoMTA drops it afterwards.
    ctx: Option<Context>,
    conn: Conn,
}

enum Conn {
    NotConnected,
    Object(Table),
    /// The first message's outcome is the constructor call `connect` made.
    Legacy {
        args: ConstructorArgs,
        first: Option<Result<Value, CallError>>,
    },
}

impl CustomLua {
    pub(super) fn new(engine: Arc<Engine>, cfg: CustomLuaConfig) -> Self {
        CustomLua {
            engine,
            cfg,
            ctx: None,
            conn: Conn::NotConnected,
        }
    }
}

impl Dispatcher for CustomLua {
    fn protocol(&self) -> Protocol {
        Protocol::Lua
    }

    fn batching(&self) -> Batching {
        let legacy = matches!(self.conn, Conn::Legacy { .. });
        Batching {
            size: self.cfg.batch_size.max(1),
            // The legacy form delivers one message per call and never waits for more.
            min: if legacy { 1 } else { self.cfg.min_batch_size },
            max_latency: self.cfg.max_batch_latency,
        }
    }

    fn per_call(&self) -> usize {
        match self.conn {
            Conn::Object(_) if self.cfg.batch_size > 1 => self.cfg.batch_size,
            // Without send_batch every message is its own call.
            _ => 1,
        }
    }

    fn peer(&self) -> Option<PeerAddress> {
        Some(PeerAddress {
            name: format!("Lua via {}", self.cfg.constructor),
            addr: "0.0.0.0".into(),
            is_secure: false,
        })
    }

    async fn connect(&mut self, rq: &ReadyQueue, first: &[Entry]) -> Result<(), Attempt> {
        let Some(head) = first.first() else {
            return Ok(());
        };
        let ctx = self
            .engine
            .context()
            .await
            .map_err(|e| connect_failed(&e.to_string()))?;
        let args = args_for(rq, head);
        let conn = call_constructor(&ctx, &self.cfg, args.clone(), head).await;
        self.ctx = Some(ctx);
        match conn {
            Connection::Failed(why) => Err(connect_failed(&why)),
            Connection::Invalid(why) => {
                let err = CallError::Lua(format!("invalid connection object: {why}"));
                Err(Attempt {
                    outcomes: Outcomes::All(internal_error(&err)),
                    health: Health::Unknown,
                    end_session: true,
                })
            }
            Connection::Legacy(r) => {
                self.conn = Conn::Legacy {
                    args,
                    first: Some(r),
                };
                Ok(())
            }
            Connection::Object(t) => {
                self.conn = Conn::Object(t);
                Ok(())
            }
        }
    }

    async fn deliver(&mut self, batch: &[Entry]) -> Attempt {
        let Some(ctx) = &self.ctx else {
            let err = CallError::Lua("custom_lua: deliver without a connection".into());
            return attempt(Err(err), true);
        };
        match &mut self.conn {
            Conn::Object(conn) => {
                let r = send(ctx, conn, batch, self.cfg.batch_size > 1).await;
                let end = match &r {
                    Err(CallError::Reject(rej)) => rej.code == 421,
                    Err(_) => true,
                    Ok(_) => false,
                };
                attempt(r, end)
            }
            Conn::Legacy { args, first } => {
                let Some(e) = batch.first() else {
                    return attempt(Ok(String::new()), false);
                };
                let r = match first.take() {
                    Some(r) => r.map(|v| value_text(&v).unwrap_or_else(|| "OK".into())),
                    None => match call_constructor(ctx, &self.cfg, args.clone(), e).await {
                        Connection::Legacy(r) => {
                            r.map(|v| value_text(&v).unwrap_or_else(|| "OK".into()))
                        }
                        Connection::Object(_) => Err(CallError::Lua(
                            "constructor returned a connection object after delivering in the legacy form"
                                .into(),
                        )),
                        Connection::Invalid(w) | Connection::Failed(w) => Err(CallError::Lua(w)),
                    },
                };
                // The legacy form goes on after a failure; the driver stops it
                // once failures pause the queue.
                attempt(r, false)
            }
            Conn::NotConnected => {
                let err = CallError::Lua("custom_lua: deliver without a connection".into());
                attempt(Err(err), true)
            }
        }
    }

    async fn close(&mut self) {
        if let (Some(ctx), Conn::Object(conn)) = (&self.ctx, &self.conn) {
            close(ctx, conn).await;
        }
        self.conn = Conn::NotConnected;
        if let Some(ctx) = self.ctx.take() {
            ctx.discard();
        }
    }
}

/// The constructor failed: every message of the batch is retried, and the
/// failure counts toward pausing the queue.
fn connect_failed(why: &str) -> Attempt {
    tracing::warn!(error = %why, "custom_lua constructor failed");
    Attempt::all_transient(
        400,
        format!("KumoMTA internal: failed to connect to any candidate hosts: {why}"),
        Health::Failed(why.to_string()),
    )
}

fn internal_error(e: &CallError) -> Outcome {
    Outcome::Transient {
        response: Response::new(
            400,
            None,
            &format!("KumoMTA internal: error in deliver_message: {e}"),
        ),
        at_peer: false,
    }
}

/// One send's result for every message it carried (ARCHITECTURE.md step 8):
/// a string is a delivery, `kumo.reject` 4xx a retry and other codes a
/// bounce, any other error a retry that also counts against the destination.
fn attempt(r: Result<String, CallError>, end_session: bool) -> Attempt {
    let (outcome, health) = match r {
        Ok(text) => (
            Outcome::Delivered(Response::new(200, None, &text)),
            Health::Reached,
        ),
        Err(CallError::Reject(rej)) if (400..500).contains(&rej.code) => (
            Outcome::Transient {
                response: Response::new(rej.code, None, &rej.message),
                at_peer: true,
            },
            Health::Reached,
        ),
        Err(CallError::Reject(rej)) => (
            Outcome::Bounced(Response::new(rej.code, None, &rej.message)),
            Health::Reached,
        ),
        Err(other) => {
            let why = other.to_string();
            (internal_error(&other), Health::Failed(why))
        }
    };
    Attempt {
        outcomes: Outcomes::All(outcome),
        health,
        end_session,
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

fn args_for(rq: &ReadyQueue, first: &Entry) -> ConstructorArgs {
    let sq = rq.representative().unwrap_or_else(|| first.queue.clone());
    let c = &sq.components;
    (c.domain.clone(), c.tenant.clone(), c.campaign.clone())
}

/// Call the constructor with `message` bound to `entry` (legacy auto mode).
async fn call_constructor(
    ctx: &Context,
    cfg: &CustomLuaConfig,
    args: ConstructorArgs,
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
