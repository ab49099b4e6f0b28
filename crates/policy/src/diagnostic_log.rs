//! The diagnostic log filter (`HERMOD_LOG`), changeable while the server
//! runs: by the admin API's `set_diagnostic_log_filter` and by the policy's
//! `kumo.set_diagnostic_log_filter`. The binary owns the tracing subscriber
//! and installs the function that swaps its filter (crates/hermod/src/main.rs);
//! this crate only holds it, so that both callers reach it without
//! depending on the binary.

use std::sync::OnceLock;

use mlua::{Lua, Table};

/// Parses a filter spec and puts it in force; `Err` says why the spec is bad.
pub type Setter = Box<dyn Fn(&str) -> Result<(), String> + Send + Sync>;

static SETTER: OnceLock<Setter> = OnceLock::new();

#[derive(Debug, Clone, thiserror::Error)]
pub enum FilterError {
    #[error("this process's diagnostic log filter cannot be changed")]
    NotInstalled,
    #[error("invalid diagnostic log filter {spec:?}: {reason}")]
    Invalid { spec: String, reason: String },
}

/// Install the function that changes the filter; only the first call counts.
pub fn install(setter: Setter) -> bool {
    SETTER.set(setter).is_ok()
}

/// Put `spec` (tracing's `EnvFilter` syntax, as `HERMOD_LOG`) in force.
/// A bad spec changes nothing.
pub fn set_filter(spec: &str) -> Result<(), FilterError> {
    let setter = SETTER.get().ok_or(FilterError::NotInstalled)?;
    setter(spec).map_err(|reason| FilterError::Invalid {
        spec: spec.to_string(),
        reason,
    })
}

/// `kumo.set_diagnostic_log_filter(spec)`.
pub(crate) fn register(lua: &Lua, kumo: &Table) -> mlua::Result<()> {
    kumo.set(
        "set_diagnostic_log_filter",
        lua.create_function(|lua, spec: String| {
            set_filter(&spec).map_err(|e| {
                crate::errors::located(lua, format!("kumo.set_diagnostic_log_filter: {e}"))
            })
        })?,
    )
}
