//! The `hermod` command line: `check` locates policy errors as
//! `file:line: message`, every shipped example passes it, `--version` and
//! `--help` work, `logs tail --type` filters records, and `serve` colours
//! its diagnostics only on a terminal.

mod common;
mod support_durability;

use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::Duration;

use serde_json::Value;
use support_durability::{hermod_bin, rtype, wait_logs, Server, Smtp, PRELUDE};

fn hermod(args: &[&str], env: &[(&str, &Path)]) -> Output {
    let mut cmd = Command::new(hermod_bin());
    cmd.args(args);
    for (k, v) in env {
        cmd.env(k, v);
    }
    cmd.output().expect("running hermod")
}

fn text(o: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

/// Write a policy; returns its path.
fn policy(dir: &Path, src: &str) -> PathBuf {
    let p = dir.join("policy.lua");
    std::fs::write(&p, src).unwrap();
    p
}

/// `hermod check` fails and reports `<policy path>:<line>: ...` containing `needle`.
fn assert_check_reports(src: &str, line: u32, needle: &str) {
    let tmp = tempfile::tempdir().unwrap();
    let p = policy(tmp.path(), src);
    let path = p.to_str().unwrap();
    let out = hermod(&["check", "--policy", path], &[("ACCEPT_DIR", tmp.path())]);
    let all = text(&out);
    assert!(!out.status.success(), "check must fail: {all}");
    let prefix = format!("{path}:{line}: ");
    let hit = all
        .lines()
        .find(|l| l.starts_with(&prefix))
        .unwrap_or_else(|| panic!("no line starting {prefix:?} in:\n{all}"));
    assert!(hit.contains(needle), "{hit:?} should mention {needle:?}");

    let out = hermod(
        &["check", "--policy", path, "--json"],
        &[("ACCEPT_DIR", tmp.path())],
    );
    assert!(!out.status.success());
    let v: Value = serde_json::from_slice(&out.stdout)
        .unwrap_or_else(|e| panic!("--json output must parse ({e}): {}", text(&out)));
    assert_eq!(v["ok"], false, "{v}");
    let errors = v["errors"].as_array().expect("errors array");
    assert!(
        errors
            .iter()
            .any(|e| e["file"] == path && e["line"] == line && e["message"].is_string()),
        "--json names {path}:{line}: {v}"
    );
}

#[test]
fn check_locates_a_syntax_error() {
    assert_check_reports(
        "local kumo = require 'kumo'\nkumo.on('init', function()\n  local x = = 1\nend)\n",
        3,
        "=",
    );
}

#[test]
fn check_locates_an_unknown_queue_config_key_in_the_catch_all() {
    let src = "local kumo = require 'kumo'\n\
kumo.on('get_queue_config', function(domain, tenant, campaign, routing_domain)\n\
  if domain == 'special' then\n\
    return kumo.make_queue_config {}\n\
  end\n\
  return kumo.make_queue_config { retry_intervall = '1m' }\n\
end)\n";
    assert_check_reports(src, 6, "retry_intervall");
}

#[test]
fn check_runs_the_utility_functions_and_locates_a_bad_toml_file_they_load() {
    // `hermod check` gets the same modules as `serve`: the TOML file is
    // read and its error names the policy line, the file and its line.
    let tmp = tempfile::tempdir().unwrap();
    let toml = tmp.path().join("queue.toml");
    std::fs::write(&toml, "[queue]\nmax_age = \n").unwrap();
    let src = format!(
        "local kumo = require 'kumo'\n\
         kumo.on('init', function()\n\
           local id = kumo.uuid.new_v4()\n\
           local d = kumo.digest.sha256(kumo.encode.hex_encode('x'))\n\
           local cfg = kumo.toml_load({:?})\n\
         end)\n",
        toml.display().to_string()
    );
    let p = policy(tmp.path(), &src);
    let path = p.to_str().unwrap();
    let out = hermod(&["check", "--policy", path], &[]);
    let all = text(&out);
    assert!(!out.status.success(), "check must fail: {all}");
    let expected = format!("{path}:5: kumo.toml_load: {}:2:", toml.display());
    assert!(
        all.lines().any(|l| l.starts_with(&expected)),
        "expected a line starting {expected:?} in:\n{all}"
    );
}

#[test]
fn check_locates_an_unknown_queue_config_key_in_init() {
    let src = "local kumo = require 'kumo'\n\
kumo.on('init', function()\n\
  local cfg = kumo.make_queue_config {\n\
    max_agee = '1h',\n\
  }\n\
end)\n";
    let tmp = tempfile::tempdir().unwrap();
    let p = policy(tmp.path(), src);
    let out = hermod(&["check", "--policy", p.to_str().unwrap()], &[]);
    // The call starts on line 3; a multi-line table may be reported at either line.
    let all = text(&out);
    assert!(!out.status.success(), "{all}");
    let path = p.to_str().unwrap();
    assert!(
        all.lines().any(|l| (l.starts_with(&format!("{path}:3: "))
            || l.starts_with(&format!("{path}:5: ")))
            && l.contains("max_agee")),
        "expected {path}:3 (or :5) naming max_agee in:\n{all}"
    );
}

#[test]
fn check_locates_an_unsupported_egress_path_key_in_the_shaping_catch_all() {
    let src = "local kumo = require 'kumo'\n\
kumo.on('get_egress_path_config', function(routing_domain, egress_source, site_name)\n\
  return kumo.make_egress_path {\n\
    connection_limit = 10,\n\
    enable_dane = true,\n\
  }\n\
end)\n";
    // The call starts on line 3; Lua reports a multi-line table call at its last line.
    let tmp = tempfile::tempdir().unwrap();
    let p = policy(tmp.path(), src);
    let out = hermod(&["check", "--policy", p.to_str().unwrap()], &[]);
    let all = text(&out);
    assert!(!out.status.success(), "{all}");
    let path = p.to_str().unwrap();
    assert!(
        all.lines().any(|l| (l.starts_with(&format!("{path}:3: "))
            || l.starts_with(&format!("{path}:6: ")))
            && l.contains("make_egress_path: key 'enable_dane' is not supported by Hermod yet")),
        "expected {path}:3 (or :6) refusing enable_dane in:\n{all}"
    );
}

#[test]
fn check_locates_a_duplicate_init_handler() {
    let src = "local kumo = require 'kumo'\n\
kumo.on('init', function() end)\n\
\n\
kumo.on('init', function() end)\n";
    assert_check_reports(src, 4, "init");
}

#[test]
fn every_example_policy_passes_check() {
    let examples = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../examples");
    let tmp = tempfile::tempdir().unwrap();
    let mut checked = 0;
    for entry in std::fs::read_dir(&examples).unwrap() {
        let p = entry.unwrap().path();
        if p.extension().and_then(|e| e.to_str()) != Some("lua") {
            continue;
        }
        let out = hermod(
            &["check", "--policy", p.to_str().unwrap()],
            &[("ACCEPT_DIR", tmp.path())],
        );
        assert!(
            out.status.success(),
            "{} fails check:\n{}",
            p.display(),
            text(&out)
        );
        checked += 1;
    }
    assert!(checked >= 9, "only {checked} examples found");
}

#[test]
fn version_and_help_exit_zero() {
    let out = hermod(&["--version"], &[]);
    assert!(out.status.success(), "{}", text(&out));
    let v = String::from_utf8_lossy(&out.stdout);
    assert!(
        v.starts_with("hermod ") && v.contains(env!("CARGO_PKG_VERSION")),
        "{v}"
    );
    for sub in ["serve", "check"] {
        let out = hermod(&[sub, "--help"], &[]);
        assert!(out.status.success(), "{sub} --help: {}", text(&out));
        assert!(
            String::from_utf8_lossy(&out.stdout).contains("--policy"),
            "{sub} --help documents --policy"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn logs_tail_type_bounce_shows_only_the_bounce_and_a_segment_bar_only_on_a_terminal() {
    let tmp = tempfile::tempdir().unwrap();
    let src = format!(
        "{PRELUDE}{}",
        r#"
kumo.on('get_queue_config', function(domain, tenant, campaign, routing_domain)
  return kumo.make_queue_config { protocol = { custom_lua = { constructor = 'make.bounce' } } }
end)
kumo.on('make.bounce', function(domain, tenant, campaign)
  local conn = {}
  function conn:send(msg) kumo.reject(550, 'no such user here') end
  function conn:close() end
  return conn
end)
"#
    );
    let mut server = Server::start(tmp.path(), &src, &[]);
    let mut c = Smtp::connect(server.smtp).await;
    c.ehlo().await;
    let r = c
        .send(
            "sender@example.com",
            &["nobody@bounce.test"],
            &support_durability::message_body("bounce"),
        )
        .await;
    assert_eq!(r.code, 250, "{r:?}");
    let id = r.ids().pop().expect("an id");
    c.quit().await;
    wait_logs(
        &server,
        Duration::from_secs(20),
        "a Bounce record",
        |recs| recs.iter().any(|x| rtype(x) == "Bounce"),
    )
    .await;
    assert!(server.sigterm().success());

    let dir = server.logs_dir();
    let out = hermod(
        &[
            "logs",
            "tail",
            "--dir",
            dir.to_str().unwrap(),
            "--type",
            "Bounce",
            "--json",
        ],
        &[],
    );
    assert!(out.status.success(), "{}", text(&out));
    let lines: Vec<Value> = String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(|l| serde_json::from_str(l).expect("JSON line"))
        .collect();
    assert_eq!(lines.len(), 1, "exactly the one Bounce: {lines:?}");
    assert_eq!(lines[0]["type"], "Bounce");
    assert_eq!(lines[0]["id"], id.as_str());
    assert_eq!(lines[0]["response"]["code"], 550);
    assert_eq!(lines[0]["response"]["content"], "no such user here");

    // With stderr on a terminal and the records going to a file, a bar counts the
    // segments read; with stderr a pipe (above), nothing but the records is written.
    assert!(out.stderr.is_empty(), "{}", text(&out));
    let saved = tmp.path().join("tail.out");
    let shown = std::process::Command::new("script")
        .args(["-qec"])
        .arg(format!(
            "{} logs tail --dir {} --json > {}",
            env!("CARGO_BIN_EXE_hermod"),
            dir.display(),
            saved.display()
        ))
        .arg("/dev/null")
        .output()
        .expect("script(1) gives hermod a terminal");
    let terminal = String::from_utf8_lossy(&shown.stdout);
    assert!(shown.status.success(), "{terminal}");
    assert!(terminal.contains("reading log segments"), "{terminal:?}");
    let saved = std::fs::read_to_string(&saved).expect("the records");
    assert!(saved.contains("\"Bounce\""), "{saved}");

    // The human-readable form names the record too.
    let out = hermod(
        &[
            "logs",
            "tail",
            "--dir",
            dir.to_str().unwrap(),
            "--type",
            "Bounce",
        ],
        &[],
    );
    assert!(out.status.success());
    let human = String::from_utf8_lossy(&out.stdout);
    assert_eq!(human.lines().count(), 1, "{human}");
    assert!(human.contains("Bounce") && human.contains(&id), "{human}");
}

#[test]
fn serve_writes_no_colour_codes_when_stderr_is_a_file() {
    let tmp = tempfile::tempdir().unwrap();
    // An empty NO_COLOR counts as unset, so only the file test decides here.
    let mut server = Server::start(tmp.path(), PRELUDE, &[("NO_COLOR", "")]);
    assert!(server.sigterm().success());
    let log = server.stderr_text();
    assert!(
        log.contains(" INFO "),
        "serve logs at info level to stderr: {log:?}"
    );
    assert!(
        !log.contains('\u{1b}'),
        "stderr is a file, so no ANSI escape codes: {log:?}"
    );
}
