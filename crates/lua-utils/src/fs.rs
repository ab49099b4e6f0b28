//! `kumo.fs.read_dir`, `kumo.fs.glob`, `kumo.fs.uncached_glob`, and the
//! older names `kumo.read_dir`, `kumo.glob`, `kumo.uncached_glob`; the
//! `metadata_for_path` functions are in [`crate::fs_metadata`], `open` in
//! [`crate::fs_open`].
//!
//! Globs support `*`, `?`, `[...]`, `**` (any depth) and `{a,b}`
//! alternatives. As KumoMTA documents, directories that do not exist or
//! cannot be read are left out rather than raising an error, a relative
//! pattern is evaluated from `relative_to` (default `.`) and that prefix is
//! removed from the results, and `glob` caches its results per pattern and
//! `relative_to` for `ttl_seconds` (default 60). Hermod sorts the results,
//! and refuses walks that yield more than [`MAX_RESULTS`] paths: a policy
//! that asks for that many files almost certainly globbed the wrong tree,
//! and holding them all would cost every context memory.

use std::collections::{BTreeSet, HashMap};
use std::path::Path;
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use hermod_policy::errors::CallSite;
use mlua::{Lua, Value};
use parking_lot::Mutex;

/// Most paths one `read_dir` or glob may return.
pub const MAX_RESULTS: usize = 100_000;
/// Most patterns one `{a,b}` expansion may produce.
const MAX_ALTERNATIVES: usize = 1024;
const DEFAULT_TTL: Duration = Duration::from_secs(60);
/// Cached globs kept at most; the policy's own patterns are few, so this
/// only bounds a policy that globs computed patterns.
const CACHE_CAPACITY: usize = 1024;

pub fn register(lua: &Lua) -> mlua::Result<()> {
    let fs = crate::module(lua, "fs")?;
    let kumo = hermod_policy::kumo_table(lua)?;
    let read_dir = lua.create_async_function(|lua, path: Value| async move {
        const WHAT: &str = "kumo.fs.read_dir";
        let site = CallSite::capture(&lua);
        let path = crate::str_arg(&lua, WHAT, "path", &path)?;
        let entries = read_dir(&path)
            .await
            .map_err(|e| site.error(format!("{WHAT}: {e}")))?;
        crate::array(&lua, entries)
    })?;
    let glob = lua.create_async_function(
        |lua, (pattern, relative_to, ttl): (Value, Value, Value)| async move {
            const WHAT: &str = "kumo.fs.glob";
            let site = CallSite::capture(&lua);
            let pattern = crate::str_arg(&lua, WHAT, "pattern", &pattern)?;
            let relative_to = opt_str(&lua, WHAT, "relative_to", &relative_to)?;
            let ttl = match ttl {
                Value::Nil => DEFAULT_TTL,
                Value::Integer(i) => seconds(i as f64),
                Value::Number(n) => seconds(n),
                other => {
                    return Err(site.error(format!(
                        "{WHAT}: ttl_seconds must be a number, got {}",
                        other.type_name()
                    )))
                }
            };
            let found = cached_glob(pattern, relative_to, ttl)
                .await
                .map_err(|e| site.error(format!("{WHAT}: {e}")))?;
            crate::array(&lua, found)
        },
    )?;
    let uncached =
        lua.create_async_function(|lua, (pattern, relative_to): (Value, Value)| async move {
            const WHAT: &str = "kumo.fs.uncached_glob";
            let site = CallSite::capture(&lua);
            let pattern = crate::str_arg(&lua, WHAT, "pattern", &pattern)?;
            let relative_to = opt_str(&lua, WHAT, "relative_to", &relative_to)?;
            let found = run_glob(pattern, relative_to)
                .await
                .map_err(|e| site.error(format!("{WHAT}: {e}")))?;
            crate::array(&lua, found)
        })?;
    for (name, f) in [
        ("read_dir", read_dir),
        ("glob", glob),
        ("uncached_glob", uncached),
    ] {
        fs.set(name, f.clone())?;
        kumo.set(name, f)?;
    }
    crate::fs_metadata::register(lua, &fs)?;
    crate::fs_open::register(lua, &fs)
}

fn opt_str(lua: &Lua, what: &str, arg: &str, v: &Value) -> mlua::Result<Option<String>> {
    match v {
        Value::Nil => Ok(None),
        v => crate::str_arg(lua, what, arg, v).map(Some),
    }
}

/// A TTL from a policy number; negative or absurd values mean "do not
/// cache" rather than an error, as a zero TTL does.
fn seconds(n: f64) -> Duration {
    Duration::try_from_secs_f64(n).unwrap_or(Duration::ZERO)
}

/// The paths in `dir` (each `dir` joined with the entry's name), sorted.
async fn read_dir(dir: &str) -> Result<Vec<String>, String> {
    let mut rd = tokio::fs::read_dir(dir)
        .await
        .map_err(|e| format!("cannot read directory {dir}: {e}"))?;
    let mut entries = Vec::new();
    while let Some(entry) = rd
        .next_entry()
        .await
        .map_err(|e| format!("cannot read directory {dir}: {e}"))?
    {
        if entries.len() == MAX_RESULTS {
            return Err(format!(
                "directory {dir} has more than {MAX_RESULTS} entries"
            ));
        }
        entries.push(utf8(&entry.path())?);
    }
    entries.sort();
    Ok(entries)
}

fn utf8(path: &Path) -> Result<String, String> {
    path.to_str()
        .map(str::to_string)
        .ok_or_else(|| format!("path {} cannot be represented as UTF-8", path.display()))
}

type CacheKey = (String, Option<String>);
type Cached = (Instant, Result<Vec<String>, String>);

fn cache() -> &'static Mutex<HashMap<CacheKey, Cached>> {
    static CACHE: OnceLock<Mutex<HashMap<CacheKey, Cached>>> = OnceLock::new();
    CACHE.get_or_init(Default::default)
}

/// A glob's result from the cache while it is fresh, else from a new walk.
/// Failures are cached too, like results: a policy that calls `glob` for
/// every message must not walk the disk for every message either.
async fn cached_glob(
    pattern: String,
    relative_to: Option<String>,
    ttl: Duration,
) -> Result<Vec<String>, String> {
    let key = (pattern, relative_to);
    let now = Instant::now();
    if let Some((expires, result)) = cache().lock().get(&key) {
        if *expires > now {
            return result.clone();
        }
    }
    let result = run_glob(key.0.clone(), key.1.clone()).await;
    if !ttl.is_zero() {
        let mut cache = cache().lock();
        if cache.len() >= CACHE_CAPACITY {
            cache.retain(|_, (expires, _)| *expires > now);
            if cache.len() >= CACHE_CAPACITY {
                cache.clear();
            }
        }
        cache.insert(key, (now + ttl, result.clone()));
    }
    result
}

async fn run_glob(pattern: String, relative_to: Option<String>) -> Result<Vec<String>, String> {
    tokio::task::spawn_blocking(move || glob_paths(&pattern, relative_to.as_deref()))
        .await
        .map_err(|e| format!("glob walk failed: {e}"))?
}

/// Evaluate `pattern` (relative ones from `relative_to`, default `.`), and
/// return the matches with the `relative_to` prefix removed, sorted.
pub fn glob_paths(pattern: &str, relative_to: Option<&str>) -> Result<Vec<String>, String> {
    let base = relative_to.unwrap_or(".");
    let options = glob::MatchOptions {
        case_sensitive: true,
        require_literal_separator: true,
        // As in a shell: `*` does not pick up hidden files (editor swap
        // files, `.git`) unless the pattern starts the name with a dot.
        require_literal_leading_dot: true,
    };
    let mut found = BTreeSet::new();
    for alternative in expand_braces(pattern)? {
        let full = if Path::new(&alternative).is_absolute() {
            alternative
        } else {
            format!(
                "{}/{alternative}",
                glob::Pattern::escape(base.trim_end_matches('/'))
            )
        };
        let paths = glob::glob_with(&full, options)
            .map_err(|e| format!("invalid glob pattern {pattern:?}: {e}"))?;
        // Unreadable entries are errors in the iterator; KumoMTA documents
        // that they are left out silently.
        for path in paths.flatten() {
            let relative = path.strip_prefix(base).unwrap_or(&path);
            found.insert(utf8(relative)?);
            if found.len() > MAX_RESULTS {
                return Err(format!(
                    "glob {pattern:?} matches more than {MAX_RESULTS} paths"
                ));
            }
        }
    }
    Ok(found.into_iter().collect())
}

/// `a{b,c{d,e}}f` → `abf`, `acdf`, `acef`. A `{` without its `}` is kept
/// as a literal character.
pub fn expand_braces(pattern: &str) -> Result<Vec<String>, String> {
    let mut out = Vec::new();
    expand_into(pattern, &mut out, pattern)?;
    Ok(out)
}

fn expand_into(pattern: &str, out: &mut Vec<String>, original: &str) -> Result<(), String> {
    let Some((open, close)) = first_group(pattern) else {
        if out.len() >= MAX_ALTERNATIVES {
            return Err(format!(
                "glob {original:?} expands to more than {MAX_ALTERNATIVES} patterns"
            ));
        }
        out.push(pattern.to_string());
        return Ok(());
    };
    let (head, tail) = (&pattern[..open], &pattern[close + 1..]);
    for choice in split_top_level(&pattern[open + 1..close]) {
        expand_into(&format!("{head}{choice}{tail}"), out, original)?;
    }
    Ok(())
}

/// Byte offsets of the first `{` that has a matching `}`, and that `}`.
fn first_group(pattern: &str) -> Option<(usize, usize)> {
    let bytes = pattern.as_bytes();
    for open in positions(bytes, b'{') {
        let mut depth = 0usize;
        for (i, &b) in bytes.iter().enumerate().skip(open) {
            match b {
                b'{' => depth += 1,
                b'}' => {
                    depth -= 1;
                    if depth == 0 {
                        return Some((open, i));
                    }
                }
                _ => {}
            }
        }
    }
    None
}

fn positions(bytes: &[u8], needle: u8) -> impl Iterator<Item = usize> + '_ {
    bytes
        .iter()
        .enumerate()
        .filter(move |(_, &b)| b == needle)
        .map(|(i, _)| i)
}

/// Split a group's body at the commas that are not inside a nested group.
fn split_top_level(body: &str) -> Vec<&str> {
    let mut parts = Vec::new();
    let mut depth = 0usize;
    let mut start = 0;
    for (i, b) in body.bytes().enumerate() {
        match b {
            b'{' => depth += 1,
            b'}' => depth = depth.saturating_sub(1),
            b',' if depth == 0 => {
                parts.push(&body[start..i]);
                start = i + 1;
            }
            _ => {}
        }
    }
    parts.push(&body[start..]);
    parts
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn braces_expand_nested_alternatives_in_order() {
        assert_eq!(
            expand_braces("a{b,c{d,e}}f").unwrap(),
            ["abf", "acdf", "acef"]
        );
        assert_eq!(
            expand_braces("*.{toml,json}").unwrap(),
            ["*.toml", "*.json"]
        );
    }

    #[test]
    fn an_unclosed_brace_is_a_literal() {
        assert_eq!(expand_braces("a{b").unwrap(), ["a{b"]);
        assert_eq!(expand_braces("a}{b,c}").unwrap(), ["a}b", "a}c"]);
    }

    #[test]
    fn too_many_alternatives_are_refused() {
        let pattern = "{a,b}".repeat(11);
        let err = expand_braces(&pattern).unwrap_err();
        assert!(err.contains("more than 1024 patterns"), "{err}");
    }

    #[test]
    fn a_relative_pattern_is_evaluated_from_relative_to_and_the_prefix_removed() {
        let dir = tempfile::tempdir().unwrap();
        let base = dir.path().to_str().unwrap();
        std::fs::create_dir(dir.path().join("sub")).unwrap();
        for f in ["a.toml", "b.json", "c.txt", ".hidden.toml", "sub/d.toml"] {
            std::fs::write(dir.path().join(f), "").unwrap();
        }
        assert_eq!(
            glob_paths("*.{toml,json}", Some(base)).unwrap(),
            ["a.toml", "b.json"]
        );
        assert_eq!(
            glob_paths("**/*.toml", Some(base)).unwrap(),
            ["a.toml", "sub/d.toml"]
        );
        let absolute = format!("{base}/*.txt");
        assert_eq!(
            glob_paths(&absolute, None).unwrap(),
            [format!("{base}/c.txt")]
        );
        assert!(glob_paths("*.toml", Some("/no/such/dir"))
            .unwrap()
            .is_empty());
    }
}
