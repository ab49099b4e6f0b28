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
///
/// Walks the Lua stack from the running function outwards and skips frames
/// that are not the policy's: C functions (the Rust function itself,
/// `pcall`, ...), frames without a current line, and mlua's async shim
/// ([`is_async_shim`]). Of the frames left, the first from a file (`@path`)
/// or a built-in module (`=[builtin ...]`, `crates/policy/src/extras.rs`)
/// wins; without one, the first left (a chunk loaded from a string).
pub fn caller_location(lua: &Lua) -> Option<String> {
    let mut fallback = None;
    for level in 0..12 {
        let Some(dbg) = lua.inspect_stack(level) else {
            break;
        };
        let line = dbg.curr_line();
        if line <= 0 {
            continue;
        }
        let src = dbg.source();
        if src.what == "C" || src.source.as_deref().is_some_and(is_async_shim) {
            continue;
        }
        let named = src
            .source
            .as_deref()
            .is_some_and(|s| s.starts_with('@') || s.starts_with("=[builtin"));
        if !named && fallback.is_some() {
            continue;
        }
        let file = src.short_src.as_deref().unwrap_or("?");
        let at = format!("{file}:{line}");
        if named {
            return Some(at);
        }
        fallback = Some(at);
    }
    fallback
}

/// mlua drives async Rust functions through a small Lua shim whose frame
/// sits between the policy and the Rust function. mlua names it
/// `__mlua_async_poll`, but it caches the chunk compiled without a name,
/// so the frame reports the source `?` (and has line numbers).
fn is_async_shim(source: &str) -> bool {
    source == "?" || source.contains("__mlua_async_poll")
}

/// The policy's `file:line` captured when a Rust function starts, for
/// errors raised later. Async functions must capture it before their first
/// `.await`: once the future is suspended, the Lua stack no longer shows
/// the caller.
#[derive(Clone, Debug, Default)]
pub struct CallSite(Option<String>);

impl CallSite {
    pub fn capture(lua: &Lua) -> Self {
        CallSite(caller_location(lua))
    }

    /// The captured `file:line`, if Lua code was on the stack.
    pub fn location(&self) -> Option<&str> {
        self.0.as_deref()
    }

    /// A runtime error whose text starts with the captured `file:line`.
    pub fn error(&self, msg: impl fmt::Display) -> mlua::Error {
        match &self.0 {
            Some(loc) => mlua::Error::RuntimeError(format!("{loc}: {msg}")),
            None => mlua::Error::RuntimeError(msg.to_string()),
        }
    }
}

/// A runtime error whose text starts with the policy's `file:line`.
pub fn located(lua: &Lua, msg: impl fmt::Display) -> mlua::Error {
    CallSite::capture(lua).error(msg)
}

pub(crate) fn reject_error(code: u16, message: String) -> mlua::Error {
    mlua::Error::ExternalError(Arc::new(Reject { code, message }))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A Lua state with `here()` (sync) and `here_async()` returning where
    /// they were called from, as [`located`] and [`CallSite`] see it. The
    /// chunks below never `return f()`: a tail call replaces the caller's
    /// frame, so no rule could find it.
    fn lua() -> Lua {
        let lua = Lua::new();
        let here = lua
            .create_function(|lua, ()| Ok(caller_location(lua)))
            .unwrap();
        let here_async = lua
            .create_async_function(|lua, ()| async move {
                let site = CallSite::capture(&lua);
                tokio::task::yield_now().await;
                Ok(site.location().map(str::to_string))
            })
            .unwrap();
        lua.globals().set("here", here).unwrap();
        lua.globals().set("here_async", here_async).unwrap();
        lua
    }

    async fn run(lua: &Lua, name: &str, src: &str) -> Option<String> {
        lua.load(src)
            .set_name(name)
            .call_async::<Option<String>>(())
            .await
            .unwrap()
    }

    #[tokio::test]
    async fn a_sync_function_reports_the_policy_line() {
        let lua = lua();
        let at = run(
            &lua,
            "@policy.lua",
            "local x = 1\nlocal at = here()\nreturn at",
        )
        .await;
        assert_eq!(at.as_deref(), Some("policy.lua:2"));
    }

    #[tokio::test]
    async fn c_frames_between_policy_and_function_are_skipped() {
        let lua = lua();
        let src = "local ok, at = pcall(here)\nreturn at";
        assert_eq!(
            run(&lua, "@policy.lua", src).await.as_deref(),
            Some("policy.lua:1")
        );
    }

    #[tokio::test]
    async fn an_async_function_reports_the_policy_line_not_the_shim() {
        let lua = lua();
        let at = run(
            &lua,
            "@policy.lua",
            "\n\nlocal at = here_async()\nreturn at",
        )
        .await;
        assert_eq!(at.as_deref(), Some("policy.lua:3"));
    }

    #[tokio::test]
    async fn an_async_function_called_from_a_string_chunk_skips_the_shim() {
        // The shim is no file either, so only the explicit shim rule keeps
        // it from being taken for the caller here.
        let lua = lua();
        let at = run(
            &lua,
            "inline",
            "local x = 1\nlocal at = here_async()\nreturn at",
        )
        .await;
        assert_eq!(at.as_deref(), Some(r#"[string "inline"]:2"#));
    }

    #[tokio::test]
    async fn a_file_frame_wins_over_a_string_chunk_it_called() {
        let lua = lua();
        let helper: mlua::Function = lua
            .load("return function() local at = here(); return at end")
            .set_name("helper")
            .eval()
            .unwrap();
        lua.globals().set("helper", helper).unwrap();
        let at = run(&lua, "@policy.lua", "\nlocal at = helper()\nreturn at").await;
        assert_eq!(at.as_deref(), Some("policy.lua:2"));
        let at = run(&lua, "=[builtin mod]", "local at = helper()\nreturn at").await;
        assert_eq!(at.as_deref(), Some("[builtin mod]:1"));
    }

    #[test]
    fn without_lua_code_on_the_stack_there_is_no_location() {
        let lua = lua();
        let here: mlua::Function = lua.globals().get("here").unwrap();
        assert_eq!(here.call::<Option<String>>(()).unwrap(), None);
        assert_eq!(
            CallSite::default().error("boom").to_string(),
            "runtime error: boom"
        );
    }

    #[test]
    fn located_prefixes_the_message() {
        let lua = Lua::new();
        let f = lua
            .create_function(|lua, ()| Err::<(), _>(located(lua, "boom")))
            .unwrap();
        lua.globals().set("f", f).unwrap();
        let e = lua.load("\nf()").set_name("@p.lua").exec().unwrap_err();
        assert_eq!(describe(&e), "p.lua:2: boom");
    }
}
