//! Side-effect configuration recorded while `pre_init`/`init` run
//! (listeners, spools, loggers, hooks). The binary takes the items after
//! `init` and starts the services; in validation mode it only reports them.

use std::any::{Any, TypeId};
use std::collections::HashMap;
use std::sync::Arc;

use mlua::Lua;
use parking_lot::Mutex;

use crate::errors::located;

#[derive(Default)]
pub struct Collected {
    items: Mutex<HashMap<TypeId, Vec<Box<dyn Any + Send>>>>,
}

impl Collected {
    pub fn take<T: Send + 'static>(&self) -> Vec<T> {
        let mut g = self.items.lock();
        g.remove(&TypeId::of::<T>())
            .unwrap_or_default()
            .into_iter()
            .filter_map(|b| b.downcast::<T>().ok().map(|b| *b))
            .collect()
    }

    /// Look at the items of a type without taking them.
    pub fn with<T: Send + 'static, R>(&self, f: impl FnOnce(&[&T]) -> R) -> R {
        let g = self.items.lock();
        let v: Vec<&T> = g
            .get(&TypeId::of::<T>())
            .map(|v| v.iter().filter_map(|b| b.downcast_ref::<T>()).collect())
            .unwrap_or_default();
        f(&v)
    }
}

/// Which phase a context is in; side effects are only allowed during start-up.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Phase {
    Loading,
    Startup,
    Running,
}

#[derive(Clone)]
pub(crate) struct StartupState {
    pub collected: Arc<Collected>,
    pub validating: bool,
}

/// Record one configuration item. Fails (with `file:line`) outside
/// `pre_init`/`init`, since KumoMTA would repeat such calls in every context.
pub fn push<T: Send + 'static>(lua: &Lua, what: &str, item: T) -> mlua::Result<()> {
    let phase = lua
        .app_data_ref::<Phase>()
        .map(|p| *p)
        .unwrap_or(Phase::Running);
    if phase != Phase::Startup {
        return Err(located(
            lua,
            format!("{what} may only be called from the pre_init or init event"),
        ));
    }
    let state = lua
        .app_data_ref::<StartupState>()
        .map(|s| s.clone())
        .ok_or_else(|| located(lua, format!("{what}: no start-up state in this context")))?;
    state
        .collected
        .items
        .lock()
        .entry(TypeId::of::<T>())
        .or_default()
        .push(Box::new(item));
    Ok(())
}

/// True under `hermod check`: modules must validate but not connect or bind.
pub fn is_validating(lua: &Lua) -> bool {
    lua.app_data_ref::<StartupState>()
        .map(|s| s.validating)
        .unwrap_or(false)
}
