//! The policy engine: loads contexts, runs start-up events, and lends
//! contexts to callers.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use mlua::{FromLua, IntoLuaMulti, Lua, LuaSerdeExt, Value};
use parking_lot::RwLock;

use crate::errors::{describe, CallError, PolicyError};
use crate::events::{self, CallDeadline};
use crate::pool::Pool;
use crate::portable::Portable;
use crate::startup::{Collected, Phase, StartupState};

/// Adds a module's functions to a fresh context (e.g. `kumo.nats`).
pub type Registrar = fn(&Lua) -> mlua::Result<()>;

/// Whether custom_lua constructors may use the legacy global `message` form.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum LegacyMode {
    #[default]
    Auto,
    Off,
}

#[derive(Clone)]
pub struct EngineOptions {
    /// Shown in errors as the file of `file:line`.
    pub policy_path: PathBuf,
    /// Source text; `None` reads `policy_path`.
    pub policy_source: Option<String>,
    /// `hermod check`: nothing binds or connects.
    pub validating: bool,
    pub legacy_constructors: LegacyMode,
    pub registrars: Vec<Registrar>,
    /// Longest a handler may run Lua code without yielding (infinite loops).
    pub call_time_limit: Duration,
}

impl EngineOptions {
    pub fn new(policy_path: impl Into<PathBuf>) -> Self {
        Self {
            policy_path: policy_path.into(),
            policy_source: None,
            validating: false,
            legacy_constructors: LegacyMode::Auto,
            registrars: Vec::new(),
            call_time_limit: Duration::from_secs(60),
        }
    }
}

pub struct Engine {
    opts: EngineOptions,
    source: String,
    chunk_name: String,
    collected: Arc<Collected>,
    init_globals: RwLock<Vec<(String, Portable)>>,
    pool: Pool,
}

impl Engine {
    /// Load the policy, run `pre_init` and `init`, and return the engine plus
    /// everything the policy configured during start-up.
    pub async fn start(opts: EngineOptions) -> Result<(Arc<Engine>, Arc<Collected>), PolicyError> {
        let source = match &opts.policy_source {
            Some(s) => s.clone(),
            None => std::fs::read_to_string(&opts.policy_path).map_err(|e| PolicyError::Read {
                path: opts.policy_path.display().to_string(),
                source: e,
            })?,
        };
        let chunk_name = format!("@{}", opts.policy_path.display());
        let engine = Arc::new(Engine {
            opts,
            source,
            chunk_name,
            collected: Arc::new(Collected::default()),
            init_globals: RwLock::new(Vec::new()),
            pool: Pool::default(),
        });
        let lua = engine.load_context().await?;

        let before = global_snapshot(&lua);
        lua.set_app_data(Phase::Startup);
        for event in ["pre_init", "init"] {
            let r = events::call::<Value>(&lua, event, (), engine.opts.call_time_limit).await;
            if let Err(e) = r {
                return Err(PolicyError::Event {
                    event: event.into(),
                    message: match e {
                        CallError::Reject(r) => format!("kumo.reject({}, {:?})", r.code, r.message),
                        other => other.to_string(),
                    },
                });
            }
        }
        lua.set_app_data(Phase::Running);
        *engine.init_globals.write() = changed_globals(&lua, &before);
        engine.pool.put(lua, Instant::now(), 0);
        let collected = engine.collected.clone();
        Ok((engine, collected))
    }

    pub fn legacy_mode(&self) -> LegacyMode {
        self.opts.legacy_constructors
    }

    /// Create and fully load a new context: modules, policy file, init globals.
    async fn load_context(&self) -> Result<Lua, PolicyError> {
        let lua = Lua::new();
        let load_err = |e: mlua::Error| PolicyError::Load(describe(&e));
        lua.set_app_data(Phase::Loading);
        lua.set_app_data(StartupState {
            collected: self.collected.clone(),
            validating: self.opts.validating,
        });
        crate::kumo::register(&lua).map_err(load_err)?;
        crate::extras::install(&lua, &self.opts.policy_path).map_err(load_err)?;
        for r in &self.opts.registrars {
            r(&lua).map_err(load_err)?;
        }
        if self.opts.validating {
            lua.globals()
                .set("_VALIDATING_CONFIG", true)
                .map_err(load_err)?;
        }
        events::install_time_limit(&lua);
        let deadline = CallDeadline::start(&lua, self.opts.call_time_limit);
        let result = match lua
            .load(self.source.as_str())
            .set_name(self.chunk_name.as_str())
            .into_function()
        {
            Ok(f) => events::run_limited(&lua, &f, ()).await.map(|_| ()),
            Err(e) => Err(e),
        };
        drop(deadline);
        result.map_err(load_err)?;
        // A later context sees what `init` assigned, unless its own file set it.
        let globals = lua.globals();
        for (name, value) in self.init_globals.read().iter() {
            if globals
                .get::<Value>(name.as_str())
                .map(|v| v.is_nil())
                .unwrap_or(false)
            {
                let v = value.restore(&lua).map_err(load_err)?;
                globals.set(name.as_str(), v).map_err(load_err)?;
            }
        }
        lua.set_app_data(Phase::Running);
        crate::metrics_hook::context_loaded();
        Ok(lua)
    }

    /// Borrow a context; it goes back to the pool when dropped.
    pub async fn context(self: &Arc<Self>) -> Result<Context, PolicyError> {
        if let Some((lua, created, uses)) = self.pool.take() {
            return Ok(Context {
                engine: self.clone(),
                lua: Some(lua),
                created,
                uses,
                keep: true,
            });
        }
        let lua = self.load_context().await?;
        Ok(Context {
            engine: self.clone(),
            lua: Some(lua),
            created: Instant::now(),
            uses: 0,
            keep: true,
        })
    }

    /// Borrow a context, call one event, return the context.
    pub async fn call<R: FromLua>(
        self: &Arc<Self>,
        event: &str,
        args: impl IntoLuaMulti + Clone,
    ) -> Result<Option<R>, CallError> {
        let ctx = self
            .context()
            .await
            .map_err(|e| CallError::Lua(e.to_string()))?;
        ctx.call(event, args).await
    }

    /// Number of idle contexts in the pool (for metrics).
    pub fn spare_contexts(&self) -> usize {
        self.pool.len()
    }
}

/// A borrowed Lua context. Used by one task at a time.
pub struct Context {
    engine: Arc<Engine>,
    lua: Option<Lua>,
    created: Instant,
    uses: u32,
    keep: bool,
}

impl Context {
    pub fn lua(&self) -> &Lua {
        // Only `Drop` takes the state out, so it is always present here.
        self.lua
            .as_ref()
            .unwrap_or_else(|| unreachable!("context used after drop"))
    }

    pub fn engine(&self) -> &Arc<Engine> {
        &self.engine
    }

    /// Call an event. `Ok(None)`: no handler, or every multiple-event handler declined.
    pub async fn call<R: FromLua>(
        &self,
        event: &str,
        args: impl IntoLuaMulti + Clone,
    ) -> Result<Option<R>, CallError> {
        let started = Instant::now();
        let r = events::call::<R>(self.lua(), event, args, self.engine.opts.call_time_limit).await;
        crate::metrics_hook::event_latency(event, started.elapsed());
        r
    }

    /// Prepare `event` for many calls in a row; `None` if it has no handler.
    /// Other events must not be called in between: they replace
    /// `_KUMO_CURRENT_EVENT`.
    pub fn prepare(&self, event: &str) -> Result<Option<PreparedEvent<'_>>, CallError> {
        Ok(
            events::prepare(self.lua(), event)?.map(|handlers| PreparedEvent {
                ctx: self,
                event: event.to_string(),
                handlers,
            }),
        )
    }

    /// Call a Lua function (e.g. a connection object's `send`) under the
    /// per-call time limit, mapping errors like event calls do.
    pub async fn call_function(
        &self,
        f: &mlua::Function,
        args: impl IntoLuaMulti,
    ) -> Result<mlua::MultiValue, CallError> {
        let lua = self.lua();
        let _deadline = events::CallDeadline::start(lua, self.engine.opts.call_time_limit);
        events::run_limited(lua, f, args)
            .await
            .map_err(|e| CallError::from_lua(&e))
    }

    pub fn has_handler(&self, event: &str) -> bool {
        events::has_handler(self.lua(), event)
    }

    /// Do not return this context to the pool (custom_lua sessions, errors).
    pub fn discard(mut self) {
        self.keep = false;
    }

    /// Convert a Rust value into Lua in this context.
    pub fn to_lua<T: serde::Serialize>(&self, v: &T) -> mlua::Result<Value> {
        self.lua().to_value(v)
    }
}

/// An event's handlers looked up once for many calls; see [`Context::prepare`].
pub struct PreparedEvent<'a> {
    ctx: &'a Context,
    event: String,
    handlers: events::Prepared,
}

impl PreparedEvent<'_> {
    /// Call the event once, as [`Context::call`] would.
    pub async fn call<R: FromLua>(
        &self,
        args: impl IntoLuaMulti + Clone,
    ) -> Result<Option<R>, CallError> {
        let started = Instant::now();
        let limit = self.ctx.engine.opts.call_time_limit;
        let r = self
            .handlers
            .call::<R>(self.ctx.lua(), &self.event, args, limit)
            .await;
        crate::metrics_hook::event_latency(&self.event, started.elapsed());
        r
    }

    /// See [`crate::LogHookPlan`]; `None` if some handler is Lua code.
    pub fn log_hook_plan(&self) -> Option<crate::LogHookPlan> {
        self.handlers.log_hook_plan()
    }

    /// Call `should_enqueue_log_record(msg, hook)` as [`PreparedEvent::call`]
    /// would. Routers of the built-in `policy-extras.log_hooks` helper that
    /// have no `filter` take effect here without a Lua call
    /// (crates/policy/src/log_hook_route.rs; the log-hook worker in
    /// crates/queue/src/hooks/ drives it).
    pub async fn call_log_hook(
        &self,
        msg: &hermod_message::Message,
        hook: &str,
    ) -> Result<Option<Value>, CallError> {
        let started = Instant::now();
        let limit = self.ctx.engine.opts.call_time_limit;
        let r = self
            .handlers
            .call_log_hook(self.ctx.lua(), msg, hook, limit)
            .await;
        crate::metrics_hook::event_latency(&self.event, started.elapsed());
        r
    }
}

impl Drop for Context {
    fn drop(&mut self) {
        if let Some(lua) = self.lua.take() {
            if self.keep {
                self.engine.pool.put(lua, self.created, self.uses + 1);
            }
        }
    }
}

fn global_snapshot(lua: &Lua) -> Vec<(String, Value)> {
    lua.globals()
        .pairs::<Value, Value>()
        .filter_map(|p| p.ok())
        .filter_map(|(k, v)| match k {
            Value::String(s) => s.to_str().ok().map(|s| (s.to_string(), v)),
            _ => None,
        })
        .collect()
}

/// Globals that `pre_init`/`init` created or replaced, in portable form.
fn changed_globals(lua: &Lua, before: &[(String, Value)]) -> Vec<(String, Portable)> {
    let mut out = Vec::new();
    for (name, value) in global_snapshot(lua) {
        let unchanged = before.iter().any(|(n, v)| *n == name && v == &value);
        if unchanged || value.is_nil() {
            continue;
        }
        match Portable::capture(lua, &value) {
            Some(p) => out.push((name, p)),
            None => tracing::warn!(
                global = %name,
                kind = value.type_name(),
                "global set in init holds a value that cannot be shared with other Lua contexts; \
                 other event handlers will see nil"
            ),
        }
    }
    out
}
