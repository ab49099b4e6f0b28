//! The core `kumo` module: `on`, `reject`, JSON, logging, `sleep`,
//! `make_queue_config`, the egress constructors (`make_egress_path`, `make_egress_source`,
//! `make_egress_pool`), `memoize` (in `memoize.rs`) and the context-pool settings.

use mlua::{Lua, Table, Value, Variadic};
use serde_json::Value as Json;

use crate::egress_path::make_egress_path;
use crate::egress_source::{make_egress_pool, make_egress_source};
use crate::errors::{caller_location, located, reject_error};
use crate::listener_domain::make_listener_domain;
use crate::queue_config::make_queue_config;
use crate::{json_to_lua, lua_to_json};

pub(crate) fn register(lua: &Lua) -> mlua::Result<()> {
    let kumo = lua.create_table()?;
    let loaded: Table = lua.globals().get::<Table>("package")?.get("loaded")?;
    loaded.set("kumo", kumo.clone())?;
    // KumoMTA only offers `require 'kumo'`; the global is a superset that
    // lets the seed policies load unchanged.
    lua.globals().set("kumo", kumo.clone())?;

    kumo.set("on", lua.create_function(crate::events::on)?)?;
    kumo.set(
        "reject",
        lua.create_function(
            |lua, (code, message): (Value, Option<String>)| -> mlua::Result<()> {
                let code = match code {
                    Value::Integer(i) if (100..1000).contains(&i) => i as u16,
                    Value::Number(n) if n.fract() == 0.0 && (100.0..1000.0).contains(&n) => {
                        n as u16
                    }
                    other => {
                        return Err(located(
                            lua,
                            format!(
                            "kumo.reject: code must be an integer from 100 to 999, got {other:?}"
                        ),
                        ))
                    }
                };
                Err(reject_error(code, message.unwrap_or_default()))
            },
        )?,
    )?;
    kumo.set(
        "make_queue_config",
        lua.create_function(|lua, params: Value| make_queue_config(lua, params))?,
    )?;
    kumo.set(
        "make_egress_path",
        lua.create_function(|lua, params: Value| make_egress_path(lua, params))?,
    )?;
    kumo.set(
        "make_listener_domain",
        lua.create_function(|lua, params: Value| make_listener_domain(lua, params))?,
    )?;
    kumo.set(
        "make_egress_source",
        lua.create_function(|lua, params: Value| make_egress_source(lua, params))?,
    )?;
    kumo.set(
        "make_egress_pool",
        lua.create_function(|lua, params: Value| make_egress_pool(lua, params))?,
    )?;

    let serde = lua.create_table()?;
    serde.set("json_encode", lua.create_function(json_encode)?)?;
    serde.set(
        "json_encode_pretty",
        lua.create_function(json_encode_pretty)?,
    )?;
    serde.set("json_parse", lua.create_function(json_parse)?)?;
    serde.set(
        "json_load",
        lua.create_async_function(|lua, path: String| async move {
            let text = tokio::fs::read_to_string(&path)
                .await
                .map_err(|e| located(&lua, format!("kumo.json_load: cannot read {path}: {e}")))?;
            json_parse(&lua, text)
        })?,
    )?;
    for name in [
        "json_encode",
        "json_encode_pretty",
        "json_parse",
        "json_load",
    ] {
        kumo.set(name, serde.get::<Value>(name)?)?;
    }
    kumo.set("serde", serde)?;
    crate::memoize::register(lua, &kumo)?;

    for (name, level) in [
        ("log_error", tracing::Level::ERROR),
        ("log_warn", tracing::Level::WARN),
        ("log_info", tracing::Level::INFO),
        ("log_debug", tracing::Level::DEBUG),
    ] {
        kumo.set(
            name,
            lua.create_function(move |lua, args: Variadic<Value>| {
                log(lua, level, args);
                Ok(())
            })?,
        )?;
    }

    crate::diagnostic_log::register(lua, &kumo)?;

    kumo.set(
        "sleep",
        lua.create_async_function(|lua, secs: Value| async move {
            let d = match secs {
                Value::Integer(i) => crate::duration::from_secs(i as f64),
                Value::Number(n) => crate::duration::from_secs(n),
                other => {
                    return Err(located(
                        &lua,
                        format!(
                            "kumo.sleep: expected seconds as a number, got {}",
                            other.type_name()
                        ),
                    ))
                }
            }
            .map_err(|e| located(&lua, format!("kumo.sleep: {e}")))?;
            tokio::time::sleep(d).await;
            Ok(())
        })?,
    )?;

    // Hermod sizes its pool itself; the settings are accepted so policies
    // written for KumoMTA keep loading.
    for name in [
        "set_max_lua_context_age",
        "set_max_lua_context_use_count",
        "set_max_spare_lua_contexts",
    ] {
        kumo.set(name, lua.create_function(|_, _v: Value| Ok(()))?)?;
    }
    Ok(())
}

fn tostring(lua: &Lua, v: &Value) -> String {
    match v {
        Value::String(s) => {
            let b = s.as_bytes();
            match std::str::from_utf8(&b) {
                Ok(s) => s.to_string(),
                Err(_) => b
                    .iter()
                    .map(|c| {
                        if c.is_ascii() {
                            (*c as char).to_string()
                        } else {
                            format!("\\x{c:02x}")
                        }
                    })
                    .collect(),
            }
        }
        other => lua
            .globals()
            .get::<mlua::Function>("tostring")
            .and_then(|f| f.call::<String>(other.clone()))
            .unwrap_or_else(|_| format!("{other:?}")),
    }
}

fn log(lua: &Lua, level: tracing::Level, args: Variadic<Value>) {
    let text = args
        .iter()
        .map(|v| tostring(lua, v))
        .collect::<Vec<_>>()
        .join(" ");
    let loc = caller_location(lua).unwrap_or_else(|| "?".into());
    match level {
        tracing::Level::ERROR => tracing::error!(target: "lua", "{loc}: {text}"),
        tracing::Level::WARN => tracing::warn!(target: "lua", "{loc}: {text}"),
        tracing::Level::INFO => tracing::info!(target: "lua", "{loc}: {text}"),
        _ => tracing::debug!(target: "lua", "{loc}: {text}"),
    }
}

fn json_encode(lua: &Lua, v: Value) -> mlua::Result<String> {
    let j = lua_to_json(lua, v).map_err(|e| located(lua, format!("kumo.json_encode: {e}")))?;
    serde_json::to_string(&j).map_err(|e| located(lua, format!("kumo.json_encode: {e}")))
}

pub(crate) fn sorted(v: Json) -> Json {
    match v {
        Json::Object(m) => {
            let mut entries: Vec<_> = m.into_iter().collect();
            entries.sort_by(|a, b| a.0.cmp(&b.0));
            Json::Object(entries.into_iter().map(|(k, v)| (k, sorted(v))).collect())
        }
        Json::Array(a) => Json::Array(a.into_iter().map(sorted).collect()),
        other => other,
    }
}

fn json_encode_pretty(lua: &Lua, v: Value) -> mlua::Result<String> {
    let j =
        lua_to_json(lua, v).map_err(|e| located(lua, format!("kumo.json_encode_pretty: {e}")))?;
    serde_json::to_string_pretty(&sorted(j))
        .map_err(|e| located(lua, format!("kumo.json_encode_pretty: {e}")))
}

fn json_parse(lua: &Lua, text: String) -> mlua::Result<Value> {
    let cleaned = strip_comments(&text);
    let j: Json = serde_json::from_str(&cleaned)
        .map_err(|e| located(lua, format!("kumo.json_parse: {e}")))?;
    json_to_lua(lua, &j)
}

/// Remove `//` and `/* */` comments outside strings, keeping line breaks so
/// parse errors still point at the right line.
pub(crate) fn strip_comments(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    let mut in_str = false;
    while i < b.len() {
        let c = b[i];
        if in_str {
            out.push(c);
            if c == b'\\' && i + 1 < b.len() {
                out.push(b[i + 1]);
                i += 2;
                continue;
            }
            if c == b'"' {
                in_str = false;
            }
            i += 1;
        } else if c == b'"' {
            in_str = true;
            out.push(c);
            i += 1;
        } else if c == b'/' && b.get(i + 1) == Some(&b'/') {
            while i < b.len() && b[i] != b'\n' {
                i += 1;
            }
        } else if c == b'/' && b.get(i + 1) == Some(&b'*') {
            i += 2;
            while i < b.len() && !(b[i] == b'*' && b.get(i + 1) == Some(&b'/')) {
                if b[i] == b'\n' {
                    out.push(b'\n');
                }
                i += 1;
            }
            i += 2;
        } else {
            out.push(c);
            i += 1;
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}
