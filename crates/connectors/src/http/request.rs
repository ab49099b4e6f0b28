//! A one-shot HTTP request builder; every setter returns the same request so
//! calls chain, and `send()` consumes it.

use std::collections::BTreeMap;

use hermod_policy::errors::CallSite;
use mlua::{AnyUserData, Lua, UserData, UserDataMethods, Value};
use parking_lot::Mutex;
use reqwest::RequestBuilder;

use super::response::HttpResponse;

const BROKEN: &str = "broken request builder";

pub struct HttpRequest {
    builder: Mutex<Option<RequestBuilder>>,
    url: String,
}

impl HttpRequest {
    pub(crate) fn new(builder: RequestBuilder, url: String) -> Self {
        Self {
            builder: Mutex::new(Some(builder)),
            url,
        }
    }
}

/// Register a chaining setter: `req:name(args)` returns `req`.
fn setter<M, A, F>(methods: &mut M, name: &'static str, f: F)
where
    M: UserDataMethods<HttpRequest>,
    A: mlua::FromLuaMulti,
    F: Fn(&Lua, RequestBuilder, A) -> mlua::Result<RequestBuilder> + Send + 'static,
{
    methods.add_function(name, move |lua, (ud, args): (AnyUserData, A)| {
        {
            let this = ud.borrow::<HttpRequest>()?;
            let mut slot = this.builder.lock();
            let b = slot
                .take()
                .ok_or_else(|| hermod_policy::errors::located(lua, BROKEN))?;
            *slot = Some(f(lua, b, args)?);
        }
        Ok(ud)
    });
}

impl UserData for HttpRequest {
    fn add_methods<M: UserDataMethods<Self>>(methods: &mut M) {
        setter(methods, "header", |_, b, (k, v): (String, String)| {
            Ok(b.header(k, v))
        });
        setter(methods, "headers", |_, b, map: BTreeMap<String, String>| {
            Ok(map.into_iter().fold(b, |b, (k, v)| b.header(k, v)))
        });
        setter(
            methods,
            "basic_auth",
            |_, b, (user, pass): (String, Option<String>)| Ok(b.basic_auth(user, pass)),
        );
        setter(methods, "bearer_auth", |_, b, token: String| {
            Ok(b.bearer_auth(token))
        });
        setter(methods, "body", |_, b, body: mlua::String| {
            Ok(b.body(body.as_bytes().to_vec()))
        });
        setter(
            methods,
            "form_url_encoded",
            |_, b, form: BTreeMap<String, String>| Ok(b.form(&form)),
        );
        setter(methods, "timeout", |lua, b, t: Value| {
            let d = super::duration_arg(&t).map_err(|e| {
                hermod_policy::errors::located(lua, format!("http request timeout: {e}"))
            })?;
            Ok(b.timeout(d))
        });

        methods.add_async_method("send", |lua, this, ()| async move {
            let site = CallSite::capture(&lua);
            let builder = this
                .builder
                .lock()
                .take()
                .ok_or_else(|| site.error(BROKEN))?;
            let url = this.url.clone();
            drop(this);
            let response = builder.send().await.map_err(|e| {
                site.error(format!(
                    "http request to '{url}' failed: {}",
                    error_chain(&e)
                ))
            })?;
            Ok(HttpResponse::new(response))
        });
    }
}

/// reqwest's top-level message hides the cause ("error sending request");
/// include the sources so the policy author sees e.g. "connection refused".
pub(crate) fn error_chain(e: &dyn std::error::Error) -> String {
    let mut s = e.to_string();
    let mut cur = e.source();
    while let Some(c) = cur {
        s.push_str(": ");
        s.push_str(&c.to_string());
        cur = c.source();
    }
    s
}
