//! An HTTP response. The body can be read once; the status stays available
//! afterwards because webhook policies check `status_is_success()` after
//! reading `text()`.

use hermod_policy::errors::CallSite;
use mlua::{Lua, Table, UserData, UserDataMethods};
use parking_lot::Mutex;
use reqwest::StatusCode;

use super::request::error_chain;

const BROKEN: &str = "broken response wrapper";

pub struct HttpResponse {
    status: StatusCode,
    inner: Mutex<Option<reqwest::Response>>,
}

impl HttpResponse {
    pub(crate) fn new(r: reqwest::Response) -> Self {
        Self {
            status: r.status(),
            inner: Mutex::new(Some(r)),
        }
    }

    fn take(&self, lua: &Lua) -> mlua::Result<reqwest::Response> {
        self.inner
            .lock()
            .take()
            .ok_or_else(|| hermod_policy::errors::located(lua, BROKEN))
    }
}

/// Headers as a table with lower-case keys and a case-insensitive `__index`;
/// repeated headers are joined with ", " as HTTP allows.
fn headers_table(lua: &Lua, headers: &reqwest::header::HeaderMap) -> mlua::Result<Table> {
    let t = lua.create_table()?;
    for name in headers.keys() {
        let joined = headers
            .get_all(name)
            .iter()
            .map(|v| String::from_utf8_lossy(v.as_bytes()).into_owned())
            .collect::<Vec<_>>()
            .join(", ");
        t.raw_set(name.as_str(), joined)?;
    }
    let meta = lua.create_table()?;
    meta.set(
        "__index",
        lua.create_function(|_, (t, k): (Table, mlua::Value)| match k {
            mlua::Value::String(s) => {
                t.raw_get::<mlua::Value>(s.to_string_lossy().to_ascii_lowercase())
            }
            _ => Ok(mlua::Value::Nil),
        })?,
    )?;
    t.set_metatable(Some(meta));
    Ok(t)
}

impl UserData for HttpResponse {
    fn add_methods<M: UserDataMethods<Self>>(methods: &mut M) {
        methods.add_method("status_code", |_, this, ()| Ok(this.status.as_u16()));
        methods.add_method("status_reason", |_, this, ()| {
            Ok(this.status.canonical_reason())
        });
        methods.add_method("status_is_informational", |_, this, ()| {
            Ok(this.status.is_informational())
        });
        methods.add_method("status_is_success", |_, this, ()| {
            Ok(this.status.is_success())
        });
        methods.add_method("status_is_redirection", |_, this, ()| {
            Ok(this.status.is_redirection())
        });
        methods.add_method("status_is_client_error", |_, this, ()| {
            Ok(this.status.is_client_error())
        });
        methods.add_method("status_is_server_error", |_, this, ()| {
            Ok(this.status.is_server_error())
        });
        methods.add_method("headers", |lua, this, ()| {
            let guard = this.inner.lock();
            let r = guard
                .as_ref()
                .ok_or_else(|| hermod_policy::errors::located(lua, BROKEN))?;
            headers_table(lua, r.headers())
        });
        methods.add_method("content_length", |lua, this, ()| {
            let guard = this.inner.lock();
            let r = guard
                .as_ref()
                .ok_or_else(|| hermod_policy::errors::located(lua, BROKEN))?;
            Ok(r.content_length())
        });
        methods.add_async_method("text", |lua, this, ()| async move {
            let site = CallSite::capture(&lua);
            let r = this.take(&lua)?;
            drop(this);
            r.text()
                .await
                .map_err(|e| site.error(format!("http read body: {}", error_chain(&e))))
        });
        methods.add_async_method("bytes", |lua, this, ()| async move {
            let site = CallSite::capture(&lua);
            let r = this.take(&lua)?;
            drop(this);
            let body = r
                .bytes()
                .await
                .map_err(|e| site.error(format!("http read body: {}", error_chain(&e))))?;
            lua.create_string(&body)
        });
    }
}
