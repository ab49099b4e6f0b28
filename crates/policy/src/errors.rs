//! Error types and the helpers that attach `file:line` to errors raised by
//! Rust functions called from a policy.

use std::fmt;
use std::sync::Arc;

use mlua::Lua;

/// Raised by `kumo.reject(code, message)`: carries an SMTP-style code.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reject {
    pub code: u16,
    pub message: String,
}

impl fmt::Display for Reject {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} {}", self.code, self.message)
    }
}

impl std::error::Error for Reject {}

/// Failure of an event call, as Rust callers see it.
#[derive(Debug, Clone, thiserror::Error)]
pub enum CallError {
    #[error("rejected: {0}")]
    Reject(Reject),
    /// A Lua error; the text starts with `file:line:` where Lua knows it.
    #[error("{0}")]
    Lua(String),
}

impl CallError {
    pub fn from_lua(err: &mlua::Error) -> Self {
        match find_reject(err) {
            Some(r) => CallError::Reject(r.clone()),
            None => CallError::Lua(describe(err)),
        }
    }
}

/// Errors that stop a policy from loading or starting.
#[derive(Debug, thiserror::Error)]
pub enum PolicyError {
    #[error("cannot read policy {path}: {source}")]
    Read {
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error("{0}")]
    Load(String),
    #[error("{event} failed: {message}")]
    Event { event: String, message: String },
}

/// Find a `kumo.reject` error anywhere in the chain of wrapped errors.
pub fn find_reject(err: &mlua::Error) -> Option<&Reject> {
    match err {
        mlua::Error::ExternalError(e) => e.downcast_ref::<Reject>(),
        mlua::Error::CallbackError { cause, .. } => find_reject(cause),
        mlua::Error::WithContext { cause, .. } => find_reject(cause),
        mlua::Error::BadArgument { cause, .. } => find_reject(cause),
        _ => None,
    }
}

/// The most specific message of an error chain without mlua's traceback noise.
pub fn describe(err: &mlua::Error) -> String {
    match err {
        mlua::Error::CallbackError { cause, .. } => describe(cause),
        mlua::Error::WithContext { context, cause } => format!("{context}: {}", describe(cause)),
        mlua::Error::ExternalError(e) => e.to_string(),
        mlua::Error::RuntimeError(s) | mlua::Error::SyntaxError { message: s, .. } => s.clone(),
        mlua::Error::MemoryError(s) => format!("out of memory: {s}"),
        mlua::Error::BadArgument {
            to,
            pos,
            name,
            cause,
        } => {
            let what = match (to, name) {
                (Some(to), Some(n)) => format!("bad argument #{pos} ({n}) to {to}"),
                (Some(to), None) => format!("bad argument #{pos} to {to}"),
                (None, _) => format!("bad argument #{pos}"),
            };
            format!("{what}: {}", describe(cause))
        }
        other => other.to_string(),
    }
}

/// `file:line` of the policy code that called the running Rust function.
/// Frames of mlua's async shims (chunks without a file name) are skipped so
/// async functions report the policy line too.
pub fn caller_location(lua: &Lua) -> Option<String> {
    let mut fallback = None;
    for level in 1..12 {
        let Some(dbg) = lua.inspect_stack(level) else {
            break;
        };
        let line = dbg.curr_line();
        if line <= 0 {
            continue;
        }
        let src = dbg.source();
        let named = src
            .source
            .as_deref()
            .is_some_and(|s| s.starts_with('@') || s.starts_with("=[builtin"));
        let file = src
            .short_src
            .map(|s| s.to_string())
            .unwrap_or_else(|| "?".into());
        if named {
            return Some(format!("{file}:{line}"));
        }
        fallback.get_or_insert(format!("{file}:{line}"));
    }
    fallback
}

/// A runtime error whose text starts with the policy's `file:line`.
pub fn located(lua: &Lua, msg: impl fmt::Display) -> mlua::Error {
    match caller_location(lua) {
        Some(loc) => mlua::Error::RuntimeError(format!("{loc}: {msg}")),
        None => mlua::Error::RuntimeError(msg.to_string()),
    }
}

pub(crate) fn reject_error(code: u16, message: String) -> mlua::Error {
    mlua::Error::ExternalError(Arc::new(Reject { code, message }))
}
