//! docs/compat.md: every name KumoMTA documents for policies (docs/kumomta-api.txt) with
//! whether Hermod has it, generated from Hermod's own registrations so that it cannot drift:
//! the `kumo` functions a policy sees under `hermod check`, the events the code fires, the
//! Message methods crates/message/src/lua.rs registers, and the helpers
//! crates/policy/src/extras.rs ships. How a supported name differs from KumoMTA is said in
//! README.md's compatibility notes; the table points there.
//!
//! When this test fails, run it with `HERMOD_UPDATE_COMPAT=1` and commit docs/compat.md.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

/// Every function reachable from the `kumo` table, as `kumo.a.b`.
fn registered_functions() -> BTreeSet<String> {
    let dir = tempfile::tempdir().expect("tempdir");
    let out = dir.path().join("functions.txt");
    let policy = dir.path().join("dump.lua");
    std::fs::write(
        &policy,
        r#"
local out, seen = {}, {}
local function walk(prefix, t, depth)
  if seen[t] or depth > 3 then return end
  seen[t] = true
  for k, v in pairs(t) do
    if type(k) == 'string' then
      local name = prefix .. '.' .. k
      if type(v) == 'function' then
        table.insert(out, name)
      elseif type(v) == 'table' then
        walk(name, v, depth + 1)
      end
    end
  end
end
walk('kumo', kumo, 0)
table.sort(out)
local f = assert(io.open(os.getenv 'COMPAT_OUT', 'w'))
f:write(table.concat(out, '\n'))
f:close()
"#,
    )
    .expect("writing the policy");
    let run = std::process::Command::new(env!("CARGO_BIN_EXE_hermod"))
        .args(["check", "--policy"])
        .arg(&policy)
        .env("COMPAT_OUT", &out)
        .output()
        .expect("running hermod check");
    assert!(
        run.status.success(),
        "hermod check failed: {}{}",
        String::from_utf8_lossy(&run.stdout),
        String::from_utf8_lossy(&run.stderr)
    );
    std::fs::read_to_string(&out)
        .expect("the dump policy wrote its list")
        .lines()
        .map(str::to_string)
        .collect()
}

fn sources(dir: &Path, out: &mut Vec<(PathBuf, String)>) {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    for e in entries.flatten() {
        let p = e.path();
        if p.is_dir() {
            sources(&p, out);
        } else if p.extension().is_some_and(|x| x == "rs") {
            if let Ok(text) = std::fs::read_to_string(&p) {
                out.push((p, text));
            }
        }
    }
}

/// The crates' source files (not their tests).
fn crate_sources() -> Vec<(PathBuf, String)> {
    let mut out = Vec::new();
    for e in std::fs::read_dir(root().join("crates"))
        .expect("crates/")
        .flatten()
    {
        sources(&e.path().join("src"), &mut out);
    }
    out
}

/// An event is fired by the code when its name is a string literal outside the table of
/// event semantics (crates/policy/src/events.rs), which lists names without firing them.
fn fired(event: &str, srcs: &[(PathBuf, String)]) -> bool {
    let lit = format!("\"{event}\"");
    srcs.iter()
        .filter(|(p, _)| !p.ends_with("policy/src/events.rs"))
        .any(|(_, text)| text.contains(&lit))
}

/// The Message methods crates/message/src/lua.rs registers.
fn message_methods() -> BTreeSet<String> {
    let text = std::fs::read_to_string(root().join("crates/message/src/lua.rs")).expect("lua.rs");
    // `add_method(` then the quoted name, on the same line or the next.
    text.split("add_method(")
        .skip(1)
        .filter_map(|rest| rest.trim_start().strip_prefix('"'))
        .filter_map(|rest| rest.split('"').next())
        .map(str::to_string)
        .collect()
}

/// The helpers crates/policy/src/extras.rs compiles in.
fn helpers() -> BTreeSet<String> {
    let text =
        std::fs::read_to_string(root().join("crates/policy/src/extras.rs")).expect("extras.rs");
    text.split("\"policy-extras.")
        .skip(1)
        .filter_map(|rest| rest.split('"').next())
        .map(|n| format!("policy-extras.{n}"))
        .collect()
}

fn render() -> String {
    let api = std::fs::read_to_string(root().join("docs/kumomta-api.txt")).expect("api list");
    let functions = registered_functions();
    let srcs = crate_sources();
    let methods = message_methods();
    let shipped = helpers();
    let mut sections: Vec<(&str, Vec<(String, bool)>)> = vec![
        ("Functions", Vec::new()),
        ("Events", Vec::new()),
        ("Message methods", Vec::new()),
        ("policy-extras helpers", Vec::new()),
    ];
    for line in api
        .lines()
        .filter(|l| !l.starts_with('#') && !l.trim().is_empty())
    {
        let Some((kind, name)) = line.split_once(' ') else {
            continue;
        };
        let (i, has) = match kind {
            "function" => (0, functions.contains(name)),
            "event" => (1, fired(name, &srcs)),
            "message" => (2, methods.contains(name)),
            "helper" => (3, shipped.contains(name)),
            _ => continue,
        };
        sections[i].1.push((name.to_string(), has));
    }
    let mut out = String::from(
        "# KumoMTA policy API: what Hermod has\n\n\
         Generated by `crates/hermod/tests/compat.rs` from Hermod's registrations (the `kumo`\n\
         functions a policy sees, the events the code fires, the Message methods and the\n\
         shipped helpers), against the names KumoMTA documents (`docs/kumomta-api.txt`). Do not\n\
         edit; run `HERMOD_UPDATE_COMPAT=1 cargo test -p hermod --test compat`. How a supported\n\
         name behaves differently from KumoMTA is in README.md's compatibility notes; keys\n\
         Hermod does not implement yet are refused with `file:line`, never ignored.\n",
    );
    for (title, rows) in &sections {
        let have = rows.iter().filter(|(_, h)| *h).count();
        out.push_str(&format!(
            "\n## {title}: {have} of {} documented\n\n| name | Hermod |\n|---|---|\n",
            rows.len()
        ));
        for (name, has) in rows {
            let mark = if *has { "yes" } else { "not yet" };
            out.push_str(&format!("| `{name}` | {mark} |\n"));
        }
    }
    let extra: Vec<&String> = functions
        .iter()
        .filter(|f| {
            !api.lines()
                .any(|l| l.strip_prefix("function ") == Some(f.as_str()))
        })
        .collect();
    out.push_str(&format!(
        "\n## Functions Hermod has beyond that list: {}\n\n\
         Aliases (`kumo.json_encode` for `kumo.serde.json_encode`), documented fields that are\n\
         functions, and Hermod's own additions.\n\n",
        extra.len()
    ));
    for f in extra {
        out.push_str(&format!("- `{f}`\n"));
    }
    out
}

#[test]
fn docs_compat_md_matches_what_the_code_registers() {
    let want = render();
    let path = root().join("docs/compat.md");
    if std::env::var_os("HERMOD_UPDATE_COMPAT").is_some() {
        std::fs::write(&path, &want).expect("writing docs/compat.md");
        return;
    }
    let have = std::fs::read_to_string(&path).unwrap_or_default();
    assert!(
        have == want,
        "docs/compat.md is out of date: run `HERMOD_UPDATE_COMPAT=1 cargo test -p hermod --test compat` and commit it"
    );
}
