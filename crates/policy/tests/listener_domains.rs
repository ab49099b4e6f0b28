//! `kumo.make_listener_domain` and `policy-extras.listener_domains` in a real
//! policy file: errors at the policy's (or the data file's) line, and the
//! helper's lookup order across several data files.

mod support;

use support::{error_text, Policy};

#[tokio::test]
async fn an_unknown_make_listener_domain_key_is_refused_at_the_policys_line() {
    let p = Policy::new();
    let err = p
        .start("local kumo = require 'kumo'\n\nlocal d = kumo.make_listener_domain { relay_too = true }\n")
        .await
        .map(|_| ())
        .expect_err("an unknown key must stop the policy");
    let text = error_text(err);
    let policy = p.dir.path().join("policy.lua").display().to_string();
    assert!(
        text.contains(&format!("{policy}:3: make_listener_domain: ")) && text.contains("relay_too"),
        "{text}"
    );
}

/// The helper's answer for `domain` on `listener`, as `relay_to log_oob log_arf`.
const PROBE: &str = r#"
kumo.on('probe', function(domain, listener)
  local d = handler(domain, listener, nil)
  if not d then return 'nil' end
  return string.format('%s %s %s', tostring(d.relay_to), d.log_oob, d.log_arf)
end)
"#;

#[tokio::test]
async fn later_files_override_earlier_ones_key_by_key_and_listener_sections_apply_on_their_listener_only(
) {
    let p = Policy::new();
    let first = p.file(
        "a.json",
        r#"{ "example.com": { "relay_to": true, "log_oob": "LogThenDrop" },
             "*.example.com": { "log_arf": true } }"#,
    );
    let second = p.file(
        "b.json",
        r#"{ "example.com": { "log_oob": "LogThenRelay" },
             "listener": { "10.0.0.1:25": { "*.example.com": { "log_arf": "LogThenDrop" } } } }"#,
    );
    let engine = p
        .start(&format!(
            "local kumo = require 'kumo'\nlocal ld = require 'policy-extras.listener_domains'\n\
             handler = ld:setup {{ '{first}', '{second}' }}\n{PROBE}"
        ))
        .await
        .expect("policy loads");
    for (domain, listener, want) in [
        ("example.com", "127.0.0.1:25", "true LogThenRelay Ignore"),
        ("EXAMPLE.com", "127.0.0.1:25", "true LogThenRelay Ignore"),
        (
            "mx.example.com",
            "127.0.0.1:25",
            "false Ignore LogThenRelay",
        ),
        ("mx.example.com", "10.0.0.1:25", "false Ignore LogThenDrop"),
        ("example.net", "127.0.0.1:25", "nil"),
    ] {
        let got: Option<String> = engine
            .call("probe", (domain, listener))
            .await
            .expect("probe runs");
        assert_eq!(got.as_deref(), Some(want), "{domain} on {listener}");
    }
}

#[tokio::test]
async fn a_bad_value_in_the_helpers_data_file_is_refused_at_its_line() {
    let p = Policy::new();
    let data = p.file(
        "ld.json",
        "{\n  \"fbl.example.com\": {\n    \"log_arf\": \"yes\"\n  }\n}\n",
    );
    let err = p
        .start(&format!(
            "local ld = require 'policy-extras.listener_domains'\nld:setup {{ '{data}' }}\n"
        ))
        .await
        .map(|_| ())
        .expect_err("a bad value must stop the policy");
    let text = error_text(err);
    assert!(
        text.contains(&format!("{data}:3: 'fbl.example.com'")) && text.contains("LogThenDrop"),
        "{text}"
    );
}
