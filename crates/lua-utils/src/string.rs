//! `kumo.string`: `split`, `rsplit`, `splitn`, `rsplitn`,
//! `split_whitespace`, `split_ascii_whitespace`, `trim`, `trim_start`,
//! `trim_end`, `replace`, `replacen`, `starts_with`, `ends_with`, `wrap`
//! and `eval_template`, with Rust's string semantics as in KumoMTA
//! (`split('a,,b', ',')` gives three parts, the middle one empty; whitespace
//! is Unicode `White_Space` unless the name says ASCII).
//!
//! Not provided yet: `psl_domain`, `psl_suffix` (they need the Public
//! Suffix List) and `normalize_smtp_response`.

use hermod_policy::errors::located;
use minijinja::{AutoEscape, Environment};
use mlua::{Lua, Value};

pub fn register(lua: &Lua) -> mlua::Result<()> {
    let m = crate::module(lua, "string")?;

    macro_rules! split_fn {
        ($name:literal, |$s:ident, $p:ident| $body:expr) => {
            m.set(
                $name,
                lua.create_function(|lua, (s, p): (Value, Value)| {
                    const WHAT: &str = concat!("kumo.string.", $name);
                    let $s = crate::str_arg(lua, WHAT, "string", &s)?;
                    let $p = crate::str_arg(lua, WHAT, "pattern", &p)?;
                    crate::array(lua, $body)
                })?,
            )?;
        };
    }
    split_fn!("split", |s, p| s.split(p.as_str()));
    split_fn!("rsplit", |s, p| s.rsplit(p.as_str()));

    macro_rules! splitn_fn {
        ($name:literal, $method:ident) => {
            m.set(
                $name,
                lua.create_function(|lua, (s, limit, p): (Value, Value, Value)| {
                    const WHAT: &str = concat!("kumo.string.", $name);
                    let s = crate::str_arg(lua, WHAT, "string", &s)?;
                    let limit = count_arg(lua, WHAT, "limit", &limit)?;
                    let p = crate::str_arg(lua, WHAT, "pattern", &p)?;
                    crate::array(lua, s.$method(limit, p.as_str()))
                })?,
            )?;
        };
    }
    splitn_fn!("splitn", splitn);
    splitn_fn!("rsplitn", rsplitn);

    // The body names the Lua state too: a macro's own identifiers are not
    // visible to the code passed in.
    macro_rules! unary_fn {
        ($name:literal, |$lua:ident, $s:ident| $body:expr) => {
            m.set(
                $name,
                lua.create_function(|$lua, s: Value| {
                    let $s = crate::str_arg($lua, concat!("kumo.string.", $name), "string", &s)?;
                    Ok($body)
                })?,
            )?;
        };
    }
    unary_fn!("trim", |_lua, s| s.trim().to_string());
    unary_fn!("trim_start", |_lua, s| s.trim_start().to_string());
    unary_fn!("trim_end", |_lua, s| s.trim_end().to_string());
    unary_fn!("split_whitespace", |lua, s| crate::array(
        lua,
        s.split_whitespace()
    )?);
    unary_fn!("split_ascii_whitespace", |lua, s| crate::array(
        lua,
        s.split_ascii_whitespace()
    )?);

    m.set(
        "replace",
        lua.create_function(|lua, (s, from, to): (Value, Value, Value)| {
            const WHAT: &str = "kumo.string.replace";
            let s = crate::str_arg(lua, WHAT, "string", &s)?;
            let from = crate::str_arg(lua, WHAT, "from", &from)?;
            let to = crate::str_arg(lua, WHAT, "to", &to)?;
            Ok(s.replace(from.as_str(), &to))
        })?,
    )?;
    m.set(
        "replacen",
        lua.create_function(|lua, (s, from, to, count): (Value, Value, Value, Value)| {
            const WHAT: &str = "kumo.string.replacen";
            let s = crate::str_arg(lua, WHAT, "string", &s)?;
            let from = crate::str_arg(lua, WHAT, "from", &from)?;
            let to = crate::str_arg(lua, WHAT, "to", &to)?;
            let count = count_arg(lua, WHAT, "count", &count)?;
            Ok(s.replacen(from.as_str(), &to, count))
        })?,
    )?;
    for (name, starts) in [("starts_with", true), ("ends_with", false)] {
        let what = format!("kumo.string.{name}");
        m.set(
            name,
            lua.create_function(move |lua, (s, affix): (Value, Value)| {
                // Plain byte comparison: neither side needs to be UTF-8.
                let s = crate::bytes_arg(lua, &what, "string", &s)?;
                let affix = crate::bytes_arg(lua, &what, "affix", &affix)?;
                Ok(if starts {
                    s.starts_with(&affix)
                } else {
                    s.ends_with(&affix)
                })
            })?,
        )?;
    }
    m.set(
        "wrap",
        lua.create_function(|lua, (text, soft, hard): (Value, Value, Value)| {
            const WHAT: &str = "kumo.string.wrap";
            let text = crate::str_arg(lua, WHAT, "text", &text)?;
            let soft = opt_count(lua, WHAT, "soft_limit", &soft)?.unwrap_or(75);
            let hard = opt_count(lua, WHAT, "hard_limit", &hard)?.unwrap_or(900);
            if soft == 0 || hard < soft {
                return Err(located(
                    lua,
                    format!("{WHAT}: need 0 < soft_limit <= hard_limit, got {soft} and {hard}"),
                ));
            }
            Ok(wrap(&text, soft, hard))
        })?,
    )?;
    m.set(
        "eval_template",
        lua.create_function(
            |lua, (name, source, context, dialect): (Value, Value, Value, Value)| {
                const WHAT: &str = "kumo.string.eval_template";
                let name = crate::str_arg(lua, WHAT, "name", &name)?;
                let source = crate::str_arg(lua, WHAT, "source", &source)?;
                let dialect = match dialect {
                    Value::Nil => "Jinja".to_string(),
                    v => crate::str_arg(lua, WHAT, "dialect", &v)?,
                };
                match dialect.as_str() {
                    "Jinja" => {}
                    "Static" => return Ok(source),
                    other => {
                        return Err(located(
                            lua,
                            format!(
                                "{WHAT}: template dialect {other:?} is not supported; \
                                 Hermod offers Jinja and Static"
                            ),
                        ))
                    }
                }
                let context = match context {
                    Value::Nil => serde_json::Value::Object(Default::default()),
                    v => hermod_policy::lua_to_json(lua, v).map_err(|e| {
                        located(lua, format!("{WHAT}: context cannot be used: {e}"))
                    })?,
                };
                render(&name, &source, &context).map_err(|e| located(lua, format!("{WHAT}: {e}")))
            },
        )?,
    )?;
    Ok(())
}

fn count_arg(lua: &Lua, what: &str, arg: &str, v: &Value) -> mlua::Result<usize> {
    let n = match v {
        Value::Integer(i) => Some(*i),
        Value::Number(n) if n.fract() == 0.0 => Some(*n as i64),
        _ => None,
    };
    n.and_then(|n| usize::try_from(n).ok()).ok_or_else(|| {
        located(
            lua,
            format!("{what}: {arg} must be a non-negative integer, got {v:?}"),
        )
    })
}

fn opt_count(lua: &Lua, what: &str, arg: &str, v: &Value) -> mlua::Result<Option<usize>> {
    match v {
        Value::Nil => Ok(None),
        v => count_arg(lua, what, arg, v).map(Some),
    }
}

/// Render a MiniJinja template. Names ending in `.html`, `.htm` or `.xml`
/// escape output for HTML, names ending in `.json`, `.json5`, `.js`,
/// `.yaml` or `.yml` write every value as JSON, as KumoMTA documents.
fn render(name: &str, source: &str, context: &serde_json::Value) -> Result<String, String> {
    let mut env = Environment::new();
    env.set_auto_escape_callback(|name| {
        let ext = name.rsplit_once('.').map(|(_, e)| e).unwrap_or("");
        match ext {
            "html" | "htm" | "xml" => AutoEscape::Html,
            "json" | "json5" | "js" | "yaml" | "yml" => AutoEscape::Custom("json"),
            _ => AutoEscape::None,
        }
    });
    env.set_formatter(|out, state, value| {
        if state.auto_escape() == AutoEscape::Custom("json") {
            let json = serde_json::to_string(value).map_err(|e| {
                minijinja::Error::new(minijinja::ErrorKind::BadSerialization, e.to_string())
            })?;
            out.write_str(&json)?;
            Ok(())
        } else {
            minijinja::escape_formatter(out, state, value)
        }
    });
    env.add_template(name, source).map_err(describe)?;
    let template = env.get_template(name).map_err(describe)?;
    template.render(context).map_err(describe)
}

/// MiniJinja's error with the template line it names.
fn describe(e: minijinja::Error) -> String {
    let what = match e.detail() {
        Some(d) => format!("{}: {d}", e.kind()),
        None => e.kind().to_string(),
    };
    match (e.name(), e.line()) {
        (Some(name), Some(line)) => format!("{name}:{line}: {what}"),
        _ => what,
    }
}

/// Break `text` at whitespace so that lines stay within `soft` characters
/// where words allow, and split words longer than `hard`. Each break is
/// `\r\n\t` (a folded header line); the tab does not count towards the
/// next line's length. Trailing whitespace is removed.
pub fn wrap(text: &str, soft: usize, hard: usize) -> String {
    const BREAK: &str = "\r\n\t";
    let mut out = String::with_capacity(text.len() + text.len() / soft * BREAK.len());
    let mut line_len = 0usize;
    // Whether the current line holds a word yet (it may start with spaces).
    let mut has_word = false;
    let mut rest = text;
    while !rest.is_empty() {
        let ws_end = rest
            .find(|c: char| !c.is_whitespace())
            .unwrap_or(rest.len());
        let (ws, after) = rest.split_at(ws_end);
        let word_end = after.find(char::is_whitespace).unwrap_or(after.len());
        let (word, tail) = after.split_at(word_end);
        rest = tail;
        if word.is_empty() {
            break; // only trailing whitespace was left
        }
        let ws_len = ws.chars().count();
        let word_len = word.chars().count();
        if !has_word || line_len + ws_len + word_len <= soft {
            // Existing line breaks start a new line for counting purposes.
            match ws.rfind('\n') {
                Some(i) => line_len = ws[i + 1..].chars().count(),
                None => line_len += ws_len,
            }
            out.push_str(ws);
        } else {
            out.push_str(BREAK);
            line_len = 0;
        }
        has_word = true;
        if word_len <= hard {
            out.push_str(word);
            line_len += word_len;
            continue;
        }
        // A word longer than the hard limit is cut into pieces of it. It
        // starts a line already: after a word it cannot fit under `soft`
        // (which is at most `hard`), so the branch above broke the line.
        let chars: Vec<char> = word.chars().collect();
        for (i, piece) in chars.chunks(hard).enumerate() {
            if i > 0 {
                out.push_str(BREAK);
            }
            out.extend(piece);
            line_len = piece.len();
        }
    }
    out.truncate(out.trim_end().len());
    out
}

#[cfg(test)]
mod tests {
    use super::wrap;

    #[test]
    fn wrap_breaks_at_the_soft_limit_and_cuts_words_at_the_hard_limit() {
        assert_eq!(wrap("hello", 75, 900), "hello");
        let long = "A".repeat(200);
        assert_eq!(
            wrap(&long, 75, 100),
            format!("{}\r\n\t{}", "A".repeat(100), "A".repeat(100))
        );
        let spaced = "hello there ".repeat(10);
        assert_eq!(
            wrap(&spaced, 75, 100),
            "hello there hello there hello there hello there hello there hello there\r\n\
             \thello there hello there hello there hello there"
        );
    }
}
