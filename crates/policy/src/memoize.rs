//! `kumo.memoize(func, { name, ttl, capacity, ... })`: KumoMTA's result cache.
//!
//! Hermod runs a policy in several Lua states, and the policy (so every
//! `kumo.memoize` call in it) runs once in each. The caches therefore live
//! outside Lua, one per `name` for the whole process as in KumoMTA, and
//! results are kept in [`Portable`] form: plain values, deep-copied tables
//! and userdata registered as shareable handles, restored afresh in the
//! context that asks, so a caller mutating a returned table cannot change
//! what the next caller gets.
//!
//! Behaviour follows KumoMTA's `mod-memoize` and `lruttl` crates:
//! - the key is the JSON of the arguments (`null` for none, the value for
//!   one, an array for several); object keys are sorted here, because Lua's
//!   table order differs between states and the key must not;
//! - several results come back as one table of them, as KumoMTA returns them;
//! - one caller populates a missing entry while others for the same key wait
//!   up to `populate_timeout` (120 s) and then fail, or try again with
//!   `retry_on_populate_timeout`, or get the expired value with
//!   `allow_stale_reads`; a populate older than the timeout is taken as
//!   abandoned and the next caller populates instead;
//! - a failed populate is remembered for [`ERROR_TTL`] whatever `ttl` says,
//!   so a failing backend is not called again by every lookup;
//! - a memoize call with an existing name and other parameters replaces that
//!   cache; with the same parameters (every context loading the policy) it
//!   shares it.
//!
//! `invalidate_with_epoch` is accepted and has no effect: Hermod has no
//! configuration epoch (no `kumo.bump_config_epoch`, no epoch API), so
//! entries expire only by `ttl` or eviction.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use mlua::{Function, Lua, MultiValue, RegistryKey, Value};
use parking_lot::Mutex;
use serde::Deserialize;
use tokio::sync::Semaphore;
use tokio::time::Instant;

use crate::config::from_lua_strict;
use crate::errors::{describe, CallSite};
use crate::portable::Portable;

/// How long KumoMTA's `lruttl` keeps a failed populate (its fixed default,
/// used because the `ttl` of a memoize cache applies only to values).
pub const ERROR_TTL: Duration = Duration::from_secs(60);

/// KumoMTA's default `populate_timeout`.
const DEFAULT_POPULATE_TIMEOUT: Duration = Duration::from_secs(120);

/// With `retry_on_populate_timeout`, KumoMTA makes three attempts in all.
const TIMEOUT_ATTEMPTS: usize = 3;

/// Bound on re-checks after waking (a populate abandoned and taken over, an
/// entry evicted between the wake-up and the look), as KumoMTA bounds them.
const MAX_RECHECKS: usize = 10;

#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
struct Params {
    name: String,
    #[serde(deserialize_with = "crate::duration::deserialize")]
    ttl: Duration,
    capacity: usize,
    /// Accepted for KumoMTA policies; see the module comment.
    #[serde(default)]
    invalidate_with_epoch: bool,
    #[serde(default, deserialize_with = "crate::duration::deserialize_opt")]
    populate_timeout: Option<Duration>,
    #[serde(default)]
    retry_on_populate_timeout: bool,
    #[serde(default)]
    allow_stale_reads: bool,
}

/// What a populate produced. Lua errors are `Send + Sync` and cloneable, so
/// a remembered failure is raised again as it was (a `kumo.reject` stays one).
type Outcome = Result<Arc<Cached>, mlua::Error>;

enum Cached {
    Nothing,
    One(Portable),
    Many(Vec<Portable>),
}

impl Cached {
    fn restore(&self, lua: &Lua) -> mlua::Result<Value> {
        match self {
            Cached::Nothing => Ok(Value::Nil),
            Cached::One(p) => p.restore(lua),
            Cached::Many(values) => {
                let t = lua.create_table()?;
                for (i, p) in values.iter().enumerate() {
                    t.raw_set(i + 1, p.restore(lua)?)?;
                }
                Ok(Value::Table(t))
            }
        }
    }
}

struct Entry {
    outcome: Outcome,
    expires: Instant,
    tick: u64,
}

struct Pending {
    /// Never has permits: it is closed when the populate ends, which wakes
    /// every waiter at once.
    done: Arc<Semaphore>,
    started: Instant,
}

#[derive(Default)]
struct State {
    entries: HashMap<Arc<str>, Entry>,
    /// Last use → key, so the least recently used entry is the first.
    lru: BTreeMap<u64, Arc<str>>,
    pending: HashMap<Arc<str>, Pending>,
    tick: u64,
}

impl State {
    fn next_tick(&mut self) -> u64 {
        self.tick += 1;
        self.tick
    }

    fn remove(&mut self, key: &str) {
        if let Some(e) = self.entries.remove(key) {
            self.lru.remove(&e.tick);
        }
    }

    fn insert(&mut self, key: Arc<str>, outcome: Outcome, expires: Instant, capacity: usize) {
        self.remove(&key);
        let tick = self.next_tick();
        self.lru.insert(tick, key.clone());
        self.entries.insert(
            key,
            Entry {
                outcome,
                expires,
                tick,
            },
        );
        while self.entries.len() > capacity {
            let Some((_, oldest)) = self.lru.pop_first() else {
                break;
            };
            self.entries.remove(&oldest);
        }
    }
}

struct Cache {
    params: Params,
    state: Mutex<State>,
}

fn caches() -> &'static Mutex<HashMap<String, Arc<Cache>>> {
    static C: OnceLock<Mutex<HashMap<String, Arc<Cache>>>> = OnceLock::new();
    C.get_or_init(Default::default)
}

/// The cache named `params.name`, made anew when its parameters changed.
fn cache_for(params: &Params) -> Arc<Cache> {
    let mut all = caches().lock();
    match all.get(&params.name) {
        Some(c) if c.params == *params => c.clone(),
        _ => {
            let c = Arc::new(Cache {
                params: params.clone(),
                state: Mutex::new(State::default()),
            });
            all.insert(params.name.clone(), c.clone());
            c
        }
    }
}

/// What a lookup found under the lock.
enum Step {
    Done(Outcome),
    Wait(Arc<Semaphore>, Option<Outcome>),
    Populate(PopulateGuard),
}

/// Held by the caller populating an entry. Dropping it (also when the
/// populating Lua call is cancelled) clears the pending mark and wakes the
/// waiters, who then look again.
struct PopulateGuard {
    cache: Arc<Cache>,
    key: Arc<str>,
    done: Arc<Semaphore>,
}

impl Drop for PopulateGuard {
    fn drop(&mut self) {
        let mut st = self.cache.state.lock();
        // A caller that took over an abandoned populate owns the mark now.
        if st
            .pending
            .get(&self.key)
            .is_some_and(|p| Arc::ptr_eq(&p.done, &self.done))
        {
            st.pending.remove(&self.key);
        }
        drop(st);
        self.done.close();
    }
}

impl Cache {
    fn timeout(&self) -> Duration {
        self.params
            .populate_timeout
            .unwrap_or(DEFAULT_POPULATE_TIMEOUT)
    }

    fn step(self: &Arc<Self>, key: &Arc<str>) -> Step {
        let now = Instant::now();
        let mut st = self.state.lock();
        let mut stale = None;
        if let Some(e) = st.entries.get(key) {
            if now < e.expires {
                let (outcome, old) = (e.outcome.clone(), e.tick);
                let tick = st.next_tick();
                st.lru.remove(&old);
                st.lru.insert(tick, key.clone());
                if let Some(e) = st.entries.get_mut(key) {
                    e.tick = tick;
                }
                return Step::Done(outcome);
            }
            if self.params.allow_stale_reads && e.outcome.is_ok() {
                stale = Some(e.outcome.clone());
            } else {
                st.remove(key);
            }
        }
        let timeout = self.timeout();
        if let Some(p) = st.pending.get(key) {
            if now.duration_since(p.started) < timeout {
                return Step::Wait(p.done.clone(), stale);
            }
            tracing::warn!(
                cache = %self.params.name,
                "kumo.memoize: a populate has run longer than populate_timeout ({timeout:?}); \
                 taking it as abandoned and populating again"
            );
        }
        let done = Arc::new(Semaphore::new(0));
        st.pending.insert(
            key.clone(),
            Pending {
                done: done.clone(),
                started: now,
            },
        );
        Step::Populate(PopulateGuard {
            cache: self.clone(),
            key: key.clone(),
            done,
        })
    }

    fn store(&self, key: Arc<str>, outcome: Outcome) {
        let lifetime = if outcome.is_ok() {
            self.params.ttl
        } else {
            ERROR_TTL
        };
        let expires = after(lifetime);
        self.state
            .lock()
            .insert(key, outcome, expires, self.params.capacity);
    }
}

/// `d` from now. A policy may write a `ttl` or `populate_timeout` too large
/// for the clock (`1e19` seconds), where `+` would panic; that means never.
fn after(d: Duration) -> Instant {
    let now = Instant::now();
    now.checked_add(d)
        .unwrap_or_else(|| now + Duration::from_secs(100 * 365 * 86400))
}

pub(crate) fn register(lua: &Lua, kumo: &mlua::Table) -> mlua::Result<()> {
    kumo.set("memoize", lua.create_function(memoize)?)
}

fn memoize(lua: &Lua, (func, params): (Function, Value)) -> mlua::Result<Function> {
    let params: Params = from_lua_strict(lua, params, "kumo.memoize")?;
    let cache = cache_for(&params);
    // The function lives in this context's registry, not in the closure:
    // a Lua function captured by a Rust closure that Lua owns would keep
    // the state alive in a cycle.
    let func = Arc::new(lua.create_registry_value(func)?);
    let name = params.name;
    let made_at = CallSite::capture(lua);
    lua.create_async_function(move |lua, args: MultiValue| {
        // `return cached(x)` is a tail call, which leaves no caller frame;
        // the line that made the function still points at the right cache.
        let site = match CallSite::capture(&lua) {
            here if here.location().is_some() => here,
            _ => made_at.clone(),
        };
        let func = func.clone();
        // A later memoize with other parameters replaced this name's cache;
        // KumoMTA's memoized functions follow the name, so these do too.
        let cache = caches()
            .lock()
            .get(&name)
            .cloned()
            .unwrap_or_else(|| cache.clone());
        async move { call(&lua, &site, &cache, &func, args).await }
    })
}

async fn call(
    lua: &Lua,
    site: &CallSite,
    cache: &Arc<Cache>,
    func: &RegistryKey,
    args: MultiValue,
) -> mlua::Result<Value> {
    let name = &cache.params.name;
    let key: Arc<str> = cache_key(lua, &args)
        .map_err(|e| {
            site.error(format!(
                "kumo.memoize '{name}': the arguments cannot be a cache key: {e}"
            ))
        })?
        .into();
    let mut timeouts = 0;
    let mut deadline = after(cache.timeout());
    for _ in 0..MAX_RECHECKS {
        match cache.step(&key) {
            Step::Done(outcome) => return outcome?.restore(lua),
            Step::Wait(done, stale) => {
                // `acquire` can only fail: the semaphore has no permits and
                // is closed when the populate ends.
                if tokio::time::timeout_at(deadline, done.acquire())
                    .await
                    .is_ok()
                {
                    continue;
                }
                if let Some(outcome) = stale {
                    return outcome?.restore(lua);
                }
                timeouts += 1;
                if !cache.params.retry_on_populate_timeout || timeouts >= TIMEOUT_ATTEMPTS {
                    // Neither message names the key: arguments may be
                    // credentials (KumoMTA's own example caches an AUTH check).
                    return Err(site.error(format!(
                        "kumo.memoize '{name}': timed out after {:?} waiting for another \
                         call with the same arguments to populate the entry",
                        cache.timeout()
                    )));
                }
                deadline = after(cache.timeout());
            }
            Step::Populate(guard) => {
                let outcome = populate(lua, site, name, func, args).await;
                cache.store(key, outcome.clone());
                drop(guard);
                return outcome?.restore(lua);
            }
        }
    }
    Err(site.error(format!(
        "kumo.memoize '{name}': gave up after {MAX_RECHECKS} lookups that found the entry \
         neither present nor being populated"
    )))
}

async fn populate(
    lua: &Lua,
    site: &CallSite,
    name: &str,
    func: &RegistryKey,
    args: MultiValue,
) -> Outcome {
    let func: Function = lua.registry_value(func)?;
    let results: MultiValue = func.call_async(args).await?;
    let mut values = results.into_vec();
    let capture = |i: usize, v: &Value| {
        Portable::capture(lua, v).ok_or_else(|| {
            site.error(format!(
                "kumo.memoize '{name}': result {i} ({}) cannot be cached: cached values are \
                 shared by every Lua context, so they may hold only nil, booleans, numbers, \
                 strings, tables of these and shareable handles (not functions, coroutines, \
                 other userdata or tables nested more than 32 deep)",
                v.type_name()
            ))
        })
    };
    let cached = match values.len() {
        0 => Cached::Nothing,
        1 => {
            let v = values.pop().unwrap_or(Value::Nil);
            Cached::One(capture(1, &v)?)
        }
        _ => Cached::Many(
            values
                .iter()
                .enumerate()
                .map(|(i, v)| capture(i + 1, v))
                .collect::<mlua::Result<_>>()?,
        ),
    };
    Ok(Arc::new(cached))
}

/// The arguments as JSON text with object keys sorted, so equal arguments
/// make the same key in every Lua state.
fn cache_key(lua: &Lua, args: &MultiValue) -> Result<String, String> {
    let to_json = |v: &Value| {
        crate::lua_to_json(lua, v.clone())
            .map(crate::kumo::sorted)
            .map_err(|e| describe(&e))
    };
    let json = match args.len() {
        0 => serde_json::Value::Null,
        1 => to_json(&args[0])?,
        _ => serde_json::Value::Array(args.iter().map(to_json).collect::<Result<_, _>>()?),
    };
    serde_json::to_string(&json).map_err(|e| e.to_string())
}
