//! `kumo.on` registration and event dispatch with single/multiple semantics.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use mlua::{
    FromLua, Function, HookTriggers, IntoLuaMulti, Lua, MultiValue, Table, Thread, ThreadStatus,
    Value, VmState,
};

use crate::errors::{caller_location, located, CallError};
use crate::log_hook_route::LogHookRoute;
use crate::startup::Phase;

const HANDLERS: &str = "hermod.handlers";

/// Events whose handlers chain; every other name allows one handler.
pub const MULTIPLE_EVENTS: &[&str] = &[
    "pre_init",
    "validate_config",
    "get_queue_config",
    "should_enqueue_log_record",
    "requeue_message",
    "throttle_insert_ready_queue",
    "get_acl_definition",
];

pub fn is_multiple(event: &str) -> bool {
    MULTIPLE_EVENTS.contains(&event)
}

/// Where each event's handlers were registered, for duplicate errors.
#[derive(Default)]
struct Locations(HashMap<String, Vec<String>>);

fn handlers(lua: &Lua) -> mlua::Result<Table> {
    match lua.named_registry_value::<Option<Table>>(HANDLERS)? {
        Some(t) => Ok(t),
        None => {
            let t = lua.create_table()?;
            lua.set_named_registry_value(HANDLERS, t.clone())?;
            Ok(t)
        }
    }
}

pub(crate) fn on(lua: &Lua, (name, func): (String, Function)) -> mlua::Result<()> {
    let phase = lua
        .app_data_ref::<Phase>()
        .map(|p| *p)
        .unwrap_or(Phase::Running);
    if phase != Phase::Loading {
        return Err(located(
            lua,
            format!("kumo.on('{name}', ...) must be called while the policy loads, not from inside an event handler"),
        ));
    }
    let here = caller_location(lua).unwrap_or_else(|| "?".into());
    if lua.app_data_ref::<Locations>().is_none() {
        lua.set_app_data(Locations::default());
    }
    let previous = lua
        .app_data_ref::<Locations>()
        .and_then(|l| l.0.get(&name).and_then(|v| v.first().cloned()));
    if let Some(first) = &previous {
        if !is_multiple(&name) {
            return Err(mlua::Error::RuntimeError(format!(
                "{here}: event '{name}' already has a handler, registered at {first}; \
                 only one handler is allowed for this event"
            )));
        }
    }
    if let Some(mut l) = lua.app_data_mut::<Locations>() {
        l.0.entry(name.clone()).or_default().push(here);
    }
    let all = handlers(lua)?;
    let list = match all.get::<Option<Table>>(name.as_str())? {
        Some(t) => t,
        None => {
            let t = lua.create_table()?;
            all.set(name.as_str(), t.clone())?;
            t
        }
    };
    list.push(func)
}

pub(crate) fn has_handler(lua: &Lua, event: &str) -> bool {
    handlers(lua)
        .and_then(|h| h.get::<Option<Table>>(event))
        .map(|t| t.is_some_and(|t| t.raw_len() > 0))
        .unwrap_or(false)
}

/// A per-call deadline checked by the instruction hook, so a handler stuck
/// in a loop is stopped instead of wedging a worker.
pub(crate) struct CallDeadline<'a> {
    lua: &'a Lua,
    previous: Option<Deadline>,
}

#[derive(Clone, Copy)]
struct Deadline(Instant, Duration);

impl<'a> CallDeadline<'a> {
    pub fn start(lua: &'a Lua, limit: Duration) -> Self {
        let previous = lua.set_app_data(Deadline(Instant::now() + limit, limit));
        Self { lua, previous }
    }
}

impl Drop for CallDeadline<'_> {
    fn drop(&mut self) {
        match self.previous.take() {
            Some(p) => {
                self.lua.set_app_data(p);
            }
            None => {
                self.lua.remove_app_data::<Deadline>();
            }
        }
    }
}

fn time_limit_hook(lua: &Lua, dbg: mlua::Debug) -> mlua::Result<VmState> {
    let over = lua.app_data_ref::<Deadline>().and_then(|d| {
        if Instant::now() > d.0 {
            Some(d.1)
        } else {
            None
        }
    });
    match over {
        Some(limit) => {
            // The hook runs inside the looping function: name its line.
            let line = dbg.curr_line();
            let file = dbg
                .source()
                .short_src
                .map(|s| s.to_string())
                .unwrap_or_else(|| "?".into());
            Err(mlua::Error::RuntimeError(format!(
                "{file}:{line}: handler exceeded its time limit of {limit:?} (infinite loop?)"
            )))
        }
        None => Ok(VmState::Continue),
    }
}

fn limit_triggers() -> HookTriggers {
    HookTriggers::new().every_nth_instruction(100_000)
}

pub(crate) fn install_time_limit(lua: &Lua) {
    lua.set_hook(limit_triggers(), time_limit_hook);
}

/// Coroutines whose call finished, kept for the next call: creating one per
/// call (a new Lua thread and its stack, and later its collection) was a
/// visible share of every event call, and log hooks make one per record.
#[derive(Default)]
struct IdleThreads(Vec<Thread>);

/// Enough for the calls one context runs at once; more are simply dropped.
const MAX_IDLE_THREADS: usize = 32;

/// Run `f` as its own coroutine with the time-limit hook: mlua's async calls
/// run on threads that do not inherit the main state's hook.
pub(crate) async fn run_limited(
    lua: &Lua,
    f: &Function,
    args: impl IntoLuaMulti,
) -> mlua::Result<MultiValue> {
    let idle = lua
        .app_data_mut::<IdleThreads>()
        .and_then(|mut t| t.0.pop());
    let thread = match idle {
        // A reset that fails (it reports errors of to-be-closed variables)
        // leaves that thread unused.
        Some(t) if t.reset(f.clone()).is_ok() => t,
        _ => lua.create_thread(f.clone())?,
    };
    thread.set_hook(limit_triggers(), time_limit_hook);
    let result = thread.clone().into_async::<MultiValue>(args).await;
    // Only a thread that ran to its end is clean; one that failed or was
    // cancelled mid-call is left to the garbage collector.
    if result.is_ok() && thread.status() == ThreadStatus::Finished {
        match lua.app_data_mut::<IdleThreads>() {
            Some(mut idle) if idle.0.len() < MAX_IDLE_THREADS => idle.0.push(thread),
            Some(_) => {}
            None => {
                lua.set_app_data(IdleThreads(vec![thread]));
            }
        }
    }
    result
}

/// An event's handlers, looked up once: a caller with many calls of one
/// event in a row (the log-hook worker, once per record) pays the lookup,
/// the handler list and the `_KUMO_CURRENT_EVENT` global once.
pub(crate) struct Prepared {
    /// Each handler with its route if it is a marked log-hook router
    /// (crates/policy/src/log_hook_route.rs calls the chain with them).
    pub(crate) funcs: Vec<(Function, Option<LogHookRoute>)>,
    multiple: bool,
}

/// What one handler of a chain said.
pub(crate) enum Step {
    Declined,
    Returned(Value),
}

/// Look up `event`'s handlers and mark it current; `None` if it has none.
pub(crate) fn prepare(lua: &Lua, event: &str) -> Result<Option<Prepared>, CallError> {
    let lerr = |e: mlua::Error| CallError::from_lua(&e);
    let list = handlers(lua)
        .and_then(|h| h.get::<Option<Table>>(event))
        .map_err(lerr)?;
    let Some(list) = list else {
        return Ok(None);
    };
    let funcs: Vec<(Function, Option<LogHookRoute>)> = list
        .sequence_values::<Function>()
        .map(|f| {
            f.map(|f| {
                let route = LogHookRoute::marked(lua, &f);
                (f, route)
            })
        })
        .collect::<mlua::Result<_>>()
        .map_err(lerr)?;
    lua.globals()
        .set("_KUMO_CURRENT_EVENT", event)
        .map_err(lerr)?;
    Ok(Some(Prepared {
        funcs,
        multiple: is_multiple(event),
    }))
}

impl Prepared {
    pub(crate) async fn step(
        &self,
        lua: &Lua,
        f: &Function,
        args: impl IntoLuaMulti,
        limit: Duration,
    ) -> Result<Step, CallError> {
        let _deadline = CallDeadline::start(lua, limit);
        let rets: MultiValue = run_limited(lua, f, args)
            .await
            .map_err(|e| CallError::from_lua(&e))?;
        if self.multiple && rets.is_empty() {
            return Ok(Step::Declined);
        }
        Ok(Step::Returned(
            rets.into_iter().next().unwrap_or(Value::Nil),
        ))
    }

    fn convert<R: FromLua>(lua: &Lua, event: &str, v: Value) -> Result<Option<R>, CallError> {
        R::from_lua(v, lua).map(Some).map_err(|e| {
            CallError::Lua(format!(
                "event '{event}' handler returned a value of the wrong type: {}",
                crate::errors::describe(&e)
            ))
        })
    }

    /// Run the handlers with KumoMTA's semantics: a single event's handler
    /// result is returned as is (nil if it returned nothing); multiple
    /// events chain and the first handler that returns a value wins.
    pub(crate) async fn call<R: FromLua>(
        &self,
        lua: &Lua,
        event: &str,
        args: impl IntoLuaMulti + Clone,
        limit: Duration,
    ) -> Result<Option<R>, CallError> {
        for (f, _) in &self.funcs {
            if let Step::Returned(v) = self.step(lua, f, args.clone(), limit).await? {
                return Self::convert(lua, event, v);
            }
        }
        Ok(None)
    }
}

/// Call `event` in this context once (see [`Prepared::call`]).
pub(crate) async fn call<R: FromLua>(
    lua: &Lua,
    event: &str,
    args: impl IntoLuaMulti + Clone,
    limit: Duration,
) -> Result<Option<R>, CallError> {
    match prepare(lua, event)? {
        Some(p) => p.call(lua, event, args, limit).await,
        None => Ok(None),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn idle(lua: &Lua) -> usize {
        lua.app_data_ref::<IdleThreads>().map_or(0, |t| t.0.len())
    }

    #[tokio::test]
    async fn only_the_helpers_routers_without_a_filter_are_applied_without_lua() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("policy.lua");
        std::fs::write(
            &path,
            r#"
            kumo.configure_log_hook = function() end
            kumo.on('should_enqueue_log_record', function() end)
            local log_hooks = require 'policy-extras.log_hooks'
            log_hooks:new { name = 'plain', constructor = function() return {} end }
            log_hooks:new { name = 'f', constructor = function() return {} end,
                            filter = function() return false end }
            "#,
        )
        .unwrap();
        let (engine, _) = crate::Engine::start(crate::EngineOptions::new(&path))
            .await
            .unwrap();
        let ctx = engine.context().await.unwrap();
        let prepared = prepare(ctx.lua(), "should_enqueue_log_record")
            .unwrap()
            .unwrap();
        let routes: Vec<_> = prepared.funcs.iter().map(|(_, r)| r.clone()).collect();
        assert_eq!(
            routes,
            vec![
                None,
                Some(LogHookRoute {
                    hook: "plain".into(),
                    queue: "plain.log_hook".into()
                }),
                None
            ]
        );
    }

    #[tokio::test]
    async fn a_finished_call_leaves_its_coroutine_for_the_next_and_a_failed_one_does_not() {
        let lua = Lua::new();
        let double: Function = lua
            .load("return function(x) return x * 2 end")
            .eval()
            .unwrap();
        let fail: Function = lua
            .load("return function() error('no') end")
            .eval()
            .unwrap();

        let r = run_limited(&lua, &double, 4).await.unwrap();
        assert_eq!(r.into_iter().next().and_then(|v| v.as_i64()), Some(8));
        assert_eq!(idle(&lua), 1, "the finished coroutine is kept");

        let r = run_limited(&lua, &double, 5).await.unwrap();
        assert_eq!(r.into_iter().next().and_then(|v| v.as_i64()), Some(10));
        assert_eq!(idle(&lua), 1, "reused, not a second one");

        assert!(run_limited(&lua, &fail, ()).await.is_err());
        assert_eq!(idle(&lua), 0, "the failed call's coroutine is not reused");
    }
}
