//! `kumo.serde.toml_load`, `toml_parse`, `toml_encode`, `toml_encode_pretty`
//! and their older names `kumo.toml_*`, which KumoMTA still accepts and its
//! `policy-extras` helpers still call.
//!
//! TOML maps to Lua as JSON does: tables become tables, arrays become
//! sequences (marked as arrays), datetimes become their TOML text
//! (`1979-05-27T07:32:00Z`). Encoding goes the other way; a Lua table is a
//! TOML array when it is marked as one or is a non-empty sequence, else a
//! TOML table, and the top level must be a table, as TOML requires.

use hermod_policy::errors::{located, CallSite};
use mlua::{Lua, LuaSerdeExt, Table, Value};

const NAMES: [&str; 4] = [
    "toml_load",
    "toml_parse",
    "toml_encode",
    "toml_encode_pretty",
];

/// Nesting deeper than this is refused on encoding: it is either a cycle
/// (a table that contains itself) or nothing a config file needs.
const MAX_DEPTH: usize = 64;

pub fn register(lua: &Lua) -> mlua::Result<()> {
    let serde = hermod_policy::kumo_subtable(lua, "serde")?;
    serde.set(
        "toml_parse",
        lua.create_function(|lua, text: Value| {
            let text = crate::str_arg(lua, "kumo.toml_parse", "text", &text)?;
            parse(lua, &text).map_err(|e| located(lua, format!("kumo.toml_parse: {e}")))
        })?,
    )?;
    serde.set(
        "toml_load",
        lua.create_async_function(|lua, path: Value| async move {
            const WHAT: &str = "kumo.toml_load";
            let site = CallSite::capture(&lua);
            let path = crate::str_arg(&lua, WHAT, "path", &path)?;
            let text = tokio::fs::read_to_string(&path)
                .await
                .map_err(|e| site.error(format!("{WHAT}: cannot read {path}: {e}")))?;
            parse(&lua, &text).map_err(|e| site.error(format!("{WHAT}: {path}:{e}")))
        })?,
    )?;
    serde.set(
        "toml_encode",
        lua.create_function(|lua, v: Value| encode(lua, "kumo.toml_encode", v, false))?,
    )?;
    serde.set(
        "toml_encode_pretty",
        lua.create_function(|lua, v: Value| encode(lua, "kumo.toml_encode_pretty", v, true))?,
    )?;
    let kumo = hermod_policy::kumo_table(lua)?;
    for name in NAMES {
        kumo.set(name, serde.get::<Value>(name)?)?;
    }
    Ok(())
}

/// Why a TOML text was refused: where (1-based line and column) and what.
#[derive(Debug, thiserror::Error)]
#[error("{line}:{column}: {message}")]
struct ParseError {
    line: usize,
    column: usize,
    message: String,
}

/// Parse `text` into Lua values. The error starts with `line:column`, so
/// that `toml_load` can put the file name in front of it.
fn parse(lua: &Lua, text: &str) -> Result<Value, ParseError> {
    let table: toml::Table = toml::from_str(text).map_err(|e| {
        let (line, column) = e
            .span()
            .map(|span| line_column(text, span.start))
            .unwrap_or((1, 1));
        ParseError {
            line,
            column,
            message: e.message().trim_end().to_string(),
        }
    })?;
    toml_to_lua(lua, toml::Value::Table(table)).map_err(|e| ParseError {
        line: 1,
        column: 1,
        message: e.to_string(),
    })
}

fn line_column(text: &str, offset: usize) -> (usize, usize) {
    let before = &text.as_bytes()[..offset.min(text.len())];
    let line = before.iter().filter(|&&b| b == b'\n').count() + 1;
    let line_start = before
        .iter()
        .rposition(|&b| b == b'\n')
        .map_or(0, |i| i + 1);
    let column = String::from_utf8_lossy(&before[line_start..])
        .chars()
        .count()
        + 1;
    (line, column)
}

fn toml_to_lua(lua: &Lua, v: toml::Value) -> mlua::Result<Value> {
    Ok(match v {
        toml::Value::String(s) => Value::String(lua.create_string(&s)?),
        toml::Value::Integer(i) => Value::Integer(i),
        toml::Value::Float(f) => Value::Number(f),
        toml::Value::Boolean(b) => Value::Boolean(b),
        toml::Value::Datetime(d) => Value::String(lua.create_string(d.to_string())?),
        toml::Value::Array(items) => {
            let t = lua.create_table_with_capacity(items.len(), 0)?;
            for item in items {
                t.raw_push(toml_to_lua(lua, item)?)?;
            }
            t.set_metatable(Some(lua.array_metatable()));
            Value::Table(t)
        }
        toml::Value::Table(map) => {
            let t = lua.create_table_with_capacity(0, map.len())?;
            for (k, v) in map {
                t.raw_set(k, toml_to_lua(lua, v)?)?;
            }
            Value::Table(t)
        }
    })
}

fn encode(lua: &Lua, what: &str, v: Value, pretty: bool) -> mlua::Result<String> {
    let fail = |msg: String| located(lua, format!("{what}: {msg}"));
    let toml::Value::Table(table) = lua_to_toml(lua, &v, &mut Vec::new()).map_err(fail)? else {
        return Err(fail(format!(
            "the top level of a TOML document must be a table, got {}",
            v.type_name()
        )));
    };
    let text = if pretty {
        toml::to_string_pretty(&table)
    } else {
        toml::to_string(&table)
    };
    text.map_err(|e| fail(e.to_string()))
}

/// Lua → TOML. `path` holds the keys leading to `v`, for error messages.
fn lua_to_toml(lua: &Lua, v: &Value, path: &mut Vec<String>) -> Result<toml::Value, String> {
    let at = |path: &Vec<String>| {
        if path.is_empty() {
            String::new()
        } else {
            format!(" at '{}'", path.join("."))
        }
    };
    if path.len() > MAX_DEPTH {
        return Err(format!(
            "value nested deeper than {MAX_DEPTH} levels{} (does a table contain itself?)",
            at(path)
        ));
    }
    Ok(match v {
        Value::Boolean(b) => toml::Value::Boolean(*b),
        Value::Integer(i) => toml::Value::Integer(*i),
        Value::Number(n) => toml::Value::Float(*n),
        Value::String(s) => toml::Value::String(
            s.to_str()
                .map_err(|_| format!("string{} is not valid UTF-8", at(path)))?
                .to_string(),
        ),
        Value::Table(t) => table_to_toml(lua, t, path)?,
        other => {
            return Err(format!(
                "a {} value{} cannot be represented in TOML",
                other.type_name(),
                at(path)
            ))
        }
    })
}

fn table_to_toml(lua: &Lua, t: &Table, path: &mut Vec<String>) -> Result<toml::Value, String> {
    let marked_array = t.metatable().is_some_and(|m| m == lua.array_metatable());
    let len = t.raw_len();
    let mut pairs = Vec::new();
    for pair in t.pairs::<Value, Value>() {
        pairs.push(pair.map_err(|e| e.to_string())?);
    }
    if marked_array || (len > 0 && pairs.len() == len) {
        let mut items = Vec::with_capacity(len);
        for i in 1..=len {
            let item: Value = t.raw_get(i).map_err(|e| e.to_string())?;
            path.push(i.to_string());
            items.push(lua_to_toml(lua, &item, path)?);
            path.pop();
        }
        return Ok(toml::Value::Array(items));
    }
    let mut map = toml::Table::new();
    for (k, v) in pairs {
        let key = match &k {
            Value::String(s) => s
                .to_str()
                .map_err(|_| "a table key is not valid UTF-8".to_string())?
                .to_string(),
            Value::Integer(i) => i.to_string(),
            other => {
                return Err(format!(
                    "table keys must be strings, got a {} key in a table at '{}'",
                    other.type_name(),
                    path.join(".")
                ))
            }
        };
        path.push(key.clone());
        let value = lua_to_toml(lua, &v, path)?;
        path.pop();
        map.insert(key, value);
    }
    Ok(toml::Value::Table(map))
}

#[cfg(test)]
mod tests {
    use super::line_column;

    #[test]
    fn line_and_column_count_from_one() {
        let text = "a = 1\nbé = x\n";
        assert_eq!(line_column(text, 0), (1, 1));
        assert_eq!(line_column(text, 6), (2, 1));
        // Columns count characters, not bytes: `x` follows a two-byte `é`.
        assert_eq!(line_column(text, 12), (2, 6));
    }
}
