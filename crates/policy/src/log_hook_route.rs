//! `should_enqueue_log_record` with the built-in `policy-extras.log_hooks` router applied in
//! Rust: the policy's part of the log-hook fast path, driven from
//! `crates/queue/src/hooks/mod.rs` (whose header describes the whole path).
//!
//! Every log record of every mail is offered to `should_enqueue_log_record`. The helper's
//! router (crates/policy/src/extras.rs) is marked when it has no `filter`, and a marked router
//! takes effect here without a Lua call ([`Prepared::call_log_hook`]). When a chain holds only
//! marked routers, the log-hook worker keeps it as a [`LogHookPlan`] and needs no Lua context
//! at all.

use std::collections::HashMap;
use std::time::Duration;

use mlua::{Function, Lua, Value};

use hermod_message::Message;

use crate::errors::CallError;
use crate::events::{Prepared, Step};

/// What the helper's router does when it has no `filter`: decline other hooks' records, else
/// set meta `queue` and accept.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct LogHookRoute {
    pub hook: String,
    pub queue: String,
}

impl LogHookRoute {
    /// The router's answer: `None` (declined) for another hook's record,
    /// else meta `queue` is set and the record is wanted in that queue.
    pub(crate) fn apply(&self, msg: &Message, hook: &str) -> Option<&str> {
        if self.hook != hook {
            return None;
        }
        msg.set_meta("queue", serde_json::Value::String(self.queue.clone()));
        Some(&self.queue)
    }

    /// The route `f` was marked with in this context, if it is a marked router.
    pub(crate) fn marked(lua: &Lua, f: &Function) -> Option<LogHookRoute> {
        let routes = lua.app_data_ref::<LogHookRoutes>()?;
        routes.0.get(&(f.to_pointer() as usize)).cloned()
    }
}

/// The routers marked in this context, by the identity of their function.
#[derive(Default)]
struct LogHookRoutes(HashMap<usize, LogHookRoute>);

/// `mark_route(fn, hook_name, queue_name)`, handed only to the built-in
/// helper's chunk: `fn` must behave exactly as [`LogHookRoute`] says.
pub(crate) fn mark_log_hook_route(
    lua: &Lua,
    (f, hook, queue): (Function, String, String),
) -> mlua::Result<()> {
    if lua.app_data_ref::<LogHookRoutes>().is_none() {
        lua.set_app_data(LogHookRoutes::default());
    }
    if let Some(mut routes) = lua.app_data_mut::<LogHookRoutes>() {
        // The handler table keeps `f` alive, so its address stays its own.
        routes
            .0
            .insert(f.to_pointer() as usize, LogHookRoute { hook, queue });
    }
    Ok(())
}

/// A `should_enqueue_log_record` chain made only of marked routers. The
/// policy cannot change after start-up, so one context's chain holds for
/// all, and applying it needs no Lua context at all.
#[derive(Clone, Debug)]
pub struct LogHookPlan(Vec<LogHookRoute>);

impl LogHookPlan {
    /// The plan of a chain whose handlers have these routes; `None` if one of them is Lua code.
    pub(crate) fn of(routes: impl Iterator<Item = Option<LogHookRoute>>) -> Option<LogHookPlan> {
        routes.collect::<Option<Vec<_>>>().map(LogHookPlan)
    }

    /// The chain's answer for `hook`: the queue the first router of that
    /// hook sent the record to (now its meta `queue`, and so its queue name),
    /// `None` when every router declines. The Lua chain returns `true` then.
    pub fn route(&self, msg: &Message, hook: &str) -> Option<&str> {
        self.0.iter().find_map(|r| r.apply(msg, hook))
    }
}

/// The log-hook calls of a prepared `should_enqueue_log_record` chain (`Context::prepare`).
impl Prepared {
    /// The chain as a [`LogHookPlan`], if every handler is a marked router.
    pub(crate) fn log_hook_plan(&self) -> Option<LogHookPlan> {
        LogHookPlan::of(self.funcs.iter().map(|(_, r)| r.clone()))
    }

    /// [`Prepared::call`] for `should_enqueue_log_record(msg, hook_name)`,
    /// with the same chain, where a marked router takes effect without
    /// entering Lua; the message becomes a Lua object only for a Lua handler.
    pub(crate) async fn call_log_hook(
        &self,
        lua: &Lua,
        msg: &Message,
        hook: &str,
        limit: Duration,
    ) -> Result<Option<Value>, CallError> {
        for (f, route) in &self.funcs {
            let step = match route {
                Some(r) => match r.apply(msg, hook) {
                    Some(_) => Step::Returned(Value::Boolean(true)),
                    None => Step::Declined,
                },
                None => self.step(lua, f, (msg.clone(), hook), limit).await?,
            };
            if let Step::Returned(v) = step {
                return Ok(Some(v));
            }
        }
        Ok(None)
    }
}
