//! `policy-extras.shaping` (crates/policy/src/extras/shaping.lua) through `hermod check`: a
//! policy sets the helper up with shaping.toml files and, in `validate_config`, prints the
//! options the helper merges for egress paths, their site names resolved by `kumo.dns` from a
//! zone file (`--dns-zone-file`, never the network); misspelt keys are reported with the
//! data file's line.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use serde_json::Value;

const ZONE: &str = "$ORIGIN test.
bigmail 300 IN MX 10 mx1.bigmail.test.
hosted 300 IN MX 10 mx1.bigmail.test.
solo 300 IN MX 10 mx1.bigmail.test.
mx1.bigmail 300 IN A 192.0.2.1
mixed 300 IN MX 10 mx1.bigmail.test.
mixed 300 IN MX 20 mx.other.test.
mx.other 300 IN A 192.0.2.2
";

const SHAPING: &str = r#"["default"]
connection_limit = 10
max_deliveries_per_connection = 100
idle_timeout = "60s"

[provider."bigmail"]
match = [{MXSuffix = ".bigmail.test"}]
max_deliveries_per_connection = 50
enable_tls = "Required"

[[provider."bigmail".automation]]
regex = "\\[TS04\\]"
action = "Suspend"
duration = "2 hours"

["bigmail.test"]
connection_limit = 20

["bigmail.test".sources."ip-1"]
connection_limit = 2

["solo.test"]
mx_rollup = false
max_deliveries_per_connection = 7

["solo.test".sources."ip-1"]
max_deliveries_per_connection = 3

["suffix.test"]
mx_rollup = false
smtp_port = 2525
"#;

/// A later file: merged key by key, except the table with replace_base.
const OVERRIDE: &str = r#"["bigmail.test"]
max_ready = 99

["suffix.test"]
mx_rollup = false
replace_base = true
max_ready = 5
"#;

fn hermod_check(policy: &Path, zone: &Path) -> Output {
    Command::new(env!("CARGO_BIN_EXE_hermod"))
        .arg("check")
        .arg("--policy")
        .arg(policy)
        .arg("--dns-zone-file")
        .arg(zone)
        .output()
        .expect("running hermod check")
}

fn text(o: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

struct Scratch {
    dir: tempfile::TempDir,
}

impl Scratch {
    fn new() -> Self {
        Self {
            dir: tempfile::tempdir().expect("tempdir"),
        }
    }
    fn file(&self, name: &str, text: &str) -> PathBuf {
        let p = self.dir.path().join(name);
        std::fs::write(&p, text).expect("write");
        p
    }
}

/// The merged options for each `(domain, source)`, as the policy printed them.
fn merged(queries: &[(&str, &str)]) -> Vec<Value> {
    let s = Scratch::new();
    let shaping = s.file("shaping.toml", SHAPING);
    let over = s.file("override.toml", OVERRIDE);
    let zone = s.file("zone.txt", ZONE);
    let list: Vec<String> = queries
        .iter()
        .map(|(d, src)| format!("{{ '{d}', '{src}' }}"))
        .collect();
    let policy = s.file(
        "policy.lua",
        &format!(
            r#"local kumo = require 'kumo'
local shaping = require 'policy-extras.shaping'
local get = shaping:setup {{ '{}', '{}' }}
kumo.on('get_egress_path_config', get)
kumo.on('validate_config', function()
  for _, q in ipairs {{ {} }} do
    local ok, mx = pcall(kumo.dns.lookup_mx, q[1])
    local site = ok and mx.site_name or q[1]
    -- The fourth argument (KumoMTA's skip_make) returns the merged options.
    local params = get(q[1], q[2], site, true)
    kumo.make_egress_path(params)
    print('MERGED ' .. kumo.json_encode {{ domain = q[1], source = q[2], site = site, params = params }})
  end
end)
"#,
            shaping.display(),
            over.display(),
            list.join(", ")
        ),
    );
    let out = hermod_check(&policy, &zone);
    assert!(out.status.success(), "check must pass:\n{}", text(&out));
    let stdout = String::from_utf8_lossy(&out.stdout).to_string();
    let got: Vec<Value> = stdout
        .lines()
        .filter_map(|l| l.strip_prefix("MERGED "))
        .map(|l| serde_json::from_str(l).expect("json"))
        .collect();
    assert_eq!(got.len(), queries.len(), "{stdout}");
    got
}

#[test]
fn shaping_merges_default_provider_site_domain_and_source_tables_in_kumomtas_order() {
    let got = merged(&[
        ("plain.test", "unspecified"),
        ("hosted.test", "unspecified"),
        ("hosted.test", "ip-1"),
        ("solo.test", "ip-1"),
        ("suffix.test", "unspecified"),
        ("mixed.test", "unspecified"),
    ]);
    let p = |i: usize| &got[i]["params"];

    // No MX, no table of its own: the default alone.
    assert_eq!(got[0]["params"]["connection_limit"], 10, "{}", got[0]);
    assert_eq!(p(0)["max_deliveries_per_connection"], 100);
    assert!(p(0)["enable_tls"].is_null(), "{}", got[0]);

    // hosted.test has no table, but its MX host is bigmail.test's, so the site's table (MX
    // rollup) applies over the provider's (whose MXSuffix matches), over the default; the
    // later file's key joins the earlier file's.
    assert_eq!(got[1]["site"], "mx1.bigmail.test", "{}", got[1]);
    assert_eq!(p(1)["connection_limit"], 20, "{}", got[1]);
    assert_eq!(p(1)["max_deliveries_per_connection"], 50, "{}", got[1]);
    assert_eq!(p(1)["enable_tls"], "Required", "{}", got[1]);
    assert_eq!(p(1)["max_ready"], 99, "{}", got[1]);
    assert_eq!(p(1)["idle_timeout"], "60s", "{}", got[1]);

    // Through ip-1 the site's sources table wins.
    assert_eq!(p(2)["connection_limit"], 2, "{}", got[2]);
    assert_eq!(p(2)["max_deliveries_per_connection"], 50, "{}", got[2]);

    // solo.test (mx_rollup = false) is on the same site but its own table comes after the
    // site's, and its sources table after the site's sources table.
    assert_eq!(p(3)["connection_limit"], 2, "{}", got[3]);
    assert_eq!(p(3)["max_deliveries_per_connection"], 3, "{}", got[3]);

    // replace_base in the later file: the earlier file's suffix.test keys are gone, and so
    // are the default's.
    assert_eq!(p(4)["max_ready"], 5, "{}", got[4]);
    assert!(p(4)["smtp_port"].is_null(), "{}", got[4]);
    assert!(p(4)["connection_limit"].is_null(), "{}", got[4]);

    // A domain whose MX hosts are not all the provider's is not the provider's.
    assert!(p(5)["enable_tls"].is_null(), "{}", got[5]);
    assert_eq!(p(5)["max_deliveries_per_connection"], 100, "{}", got[5]);
}

/// `hermod check` on a policy that loads `shaping` (written into `shaping.toml`); its output.
fn check_shaping_file(shaping: &str) -> (String, PathBuf, Output) {
    let s = Scratch::new();
    let file = s.file("shaping.toml", shaping);
    let zone = s.file("zone.txt", ZONE);
    let policy = s.file(
        "policy.lua",
        &format!(
            "local kumo = require 'kumo'\n\
             local shaping = require 'policy-extras.shaping'\n\
             local shaper = shaping:setup_with_automation {{ extra_files = {{ '{}' }} }}\n\
             kumo.on('get_egress_path_config', shaper.get_egress_path_config)\n",
            file.display()
        ),
    );
    let out = hermod_check(&policy, &zone);
    // Keep the directory alive until the output is read.
    let all = text(&out);
    drop(s);
    (all, file, out)
}

#[test]
fn a_misspelt_shaping_key_is_reported_by_hermod_check_at_its_line_in_its_table() {
    // `connection_limit` is written correctly in ["default"] first: the error must name
    // the misspelt key's own line, not the first line with a similar key.
    let cases: &[(&str, u32, &str)] = &[
        (
            "[\"default\"]\nconnection_limit = 10\n\n[\"a.test\"]\nconection_limit = 5\n",
            5,
            "domain 'a.test': unknown key 'conection_limit'",
        ),
        (
            "[\"default\"]\nconnection_limit = 10\n\n[\"a.test\"]\nconnection_limit = 5\n\n[\"a.test\".sources.\"ip-1\"]\nconnection_limit = 1\nmax_deliveries_per_conection = 2\n",
            9,
            "domain 'a.test', source 'ip-1': unknown key 'max_deliveries_per_conection'",
        ),
        (
            "[provider.\"p\"]\nmatch = [{MXSuffix = \".p.test\"}]\nprovider_connection_limit = 5\n",
            3,
            "provider 'p': 'provider_connection_limit' is not supported by Hermod yet",
        ),
        (
            "[\"a.test\"]\nmax_message_rate = \"100/s\"\n\n[\"b.test\"]\nmax_message_rate = \"lots\"\n",
            5,
            "domain 'b.test': ",
        ),
        (
            "[\"a.test\"]\nconnection_limit = 5\n\n[[\"a.test\".automation]]\nregex = \"x\"\naction = \"Suspend\"\nduration = \"1h\"\n\n[[\"a.test\".automation]]\nregex = \"y\"\naction = \"Explode\"\nduration = \"1h\"\n",
            11,
            "domain 'a.test', automation rule 2: 'action' must be one of",
        ),
    ];
    for (toml, line, needle) in cases {
        let (all, file, out) = check_shaping_file(toml);
        assert!(!out.status.success(), "check must fail for:\n{toml}\n{all}");
        let prefix = format!("{}:{line}: ", file.display());
        let hit = all
            .lines()
            .find(|l| l.starts_with(&prefix))
            .unwrap_or_else(|| panic!("no line starting {prefix:?} for:\n{toml}\n{all}"));
        assert!(hit.contains(needle), "{hit:?} should contain {needle:?}");
    }
}

#[test]
fn a_valid_shaping_file_with_automation_rules_passes_hermod_check() {
    let (all, _, out) = check_shaping_file(&format!(
        "{SHAPING}\n[[\"a.test\".automation]]\nregex = [\"x\", \"y\"]\naction = [{{SetConfig = {{name = \"connection_limit\", value = 1}}}}, \"SuspendTenant\"]\ntrigger = {{Threshold = \"2/hr\"}}\nduration = \"2 hours\"\nmatch_internal = false\n"
    ));
    assert!(out.status.success(), "{all}");
}

#[test]
fn hermod_check_reports_a_shaping_sources_table_naming_a_source_the_sources_helper_lacks() {
    let s = Scratch::new();
    let sources = s.file(
        "sources.toml",
        "[source.\"ip-1\"]\nsource_address = \"127.0.0.1\"\n",
    );
    let shaping = s.file(
        "shaping.toml",
        "[\"a.test\"]\nconnection_limit = 5\n\n[\"a.test\".sources.\"ip-1\"]\nconnection_limit = 1\n\n[\"a.test\".sources.\"ip-9\"]\nconnection_limit = 2\n",
    );
    let zone = s.file("zone.txt", ZONE);
    let policy = s.file(
        "policy.lua",
        &format!(
            "local kumo = require 'kumo'\n\
             local sources = require 'policy-extras.sources'\n\
             local shaping = require 'policy-extras.shaping'\n\
             sources:setup {{ '{}' }}\n\
             kumo.on('get_egress_path_config', shaping:setup {{ '{}' }})\n",
            sources.display(),
            shaping.display()
        ),
    );
    let out = hermod_check(&policy, &zone);
    let all = text(&out);
    assert!(!out.status.success(), "{all}");
    let want = format!(
        "{}:7: sources table names source 'ip-9', which the sources helper does not define",
        shaping.display()
    );
    assert!(all.contains(&want), "{want:?} in:\n{all}");
}
