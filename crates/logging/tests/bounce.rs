//! `kumo.configure_bounce_classifier` through the real policy engine, and
//! the label in the records the logger writes.
//!
//! The classifier is process-wide: only one test here installs one, and the
//! others fail before installing, so they can run in parallel.

mod common;

use std::path::Path;

use common::*;
use hermod_logging::{EnhancedCode, LocalLogConfig, Logger, RecordType, Response};
use hermod_message::{Protocol, ReceptionInfo, RejectionInfo};
use hermod_policy::{Engine, EngineOptions};

const RULES: &str = r#"
[rules]
InvalidRecipient = [
  "^(451|550) [45]\\.1\\.[1234] ",
]
BadDomain = [
  "^(451|550) [45]\\.1\\.10 ",
]
SpamBlock = [
  "^550 5\\.7\\.1 ",
]
"#;

/// Run `init` with `body` in a policy file in `dir`; the error text on failure.
async fn init(dir: &Path, body: &str) -> Result<(), String> {
    let path = dir.join("policy.lua");
    let policy = format!("local kumo = require 'kumo'\nkumo.on('init', function()\n{body}\nend)\n");
    std::fs::write(&path, policy).unwrap();
    let mut opts = EngineOptions::new(&path);
    opts.registrars.push(hermod_logging::register);
    Engine::start(opts)
        .await
        .map(drop)
        .map_err(|e| e.to_string())
}

fn configure(files: &[&Path]) -> String {
    let files: Vec<String> = files.iter().map(|f| format!("'{}'", f.display())).collect();
    format!(
        "  kumo.configure_bounce_classifier {{ files = {{ {} }}, pool_size = 2, cache_size = 64 }}",
        files.join(", ")
    )
}

fn response(code: u16, (class, subject, detail): (u8, u16, u16), content: &str) -> Response {
    let enhanced = EnhancedCode {
        class,
        subject,
        detail,
    };
    Response::new(code, Some(enhanced), content)
}

fn rejection() -> RejectionInfo {
    RejectionInfo {
        code: 550,
        text: "5.7.1 relaying denied".into(),
        command: Some("RCPT TO:<x@elsewhere>".into()),
        sender: Some("a@b.example".into()),
        recipients: vec!["x@elsewhere".into()],
        meta: Default::default(),
        peer: ReceptionInfo {
            protocol: Protocol::Esmtp,
            peer_name: "client.example".into(),
            peer_addr: "10.0.0.1".into(),
            session_id: None,
            tls_cipher: None,
            tls_protocol_version: None,
        },
    }
}

/// The raw JSON lines of the local log in `dir`.
fn lines(dir: &Path) -> Vec<serde_json::Value> {
    let mut out = Vec::new();
    hermod_logging::tail(tail_opts(dir), &mut out).unwrap();
    String::from_utf8(out)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

#[tokio::test]
async fn a_classifier_configured_in_init_labels_classifiable_records_in_their_json_lines() {
    let dir = tempfile::tempdir().unwrap();
    let rules = dir.path().join("rules.toml");
    std::fs::write(&rules, RULES).unwrap();
    init(dir.path(), &configure(&[&rules])).await.unwrap();

    let logs = dir.path().join("logs");
    let log = Logger::new(
        uuid::Uuid::new_v4(),
        vec![LocalLogConfig::new(&logs)],
        vec![],
        None,
    )
    .unwrap();
    let no_such_user = response(550, (5, 1, 1), "no such user");
    let sent = [
        (RecordType::Bounce, no_such_user.clone()),
        (
            RecordType::TransientFailure,
            response(451, (4, 1, 10), "null MX"),
        ),
        (
            RecordType::TransientFailure,
            response(421, (4, 4, 2), "timed out"),
        ),
        // Deliveries are never classified, whatever their response says.
        (RecordType::Delivery, no_such_user),
    ];
    for (kind, resp) in sent {
        let mut ev = event(kind, message("ESMTP"));
        ev.response = resp;
        log.log(ev).await;
    }
    log.log_rejection(&rejection()).await;
    log.shutdown().await;

    let labels: Vec<(String, String)> = lines(&logs)
        .iter()
        .map(|v| {
            (
                v["type"].as_str().unwrap_or_default().to_string(),
                v["bounce_classification"]
                    .as_str()
                    .unwrap_or_default()
                    .to_string(),
            )
        })
        .collect();
    let want = [
        ("Bounce", "InvalidRecipient"),
        ("TransientFailure", "BadDomain"),
        ("TransientFailure", "Uncategorized"),
        ("Delivery", "Uncategorized"),
        ("Rejection", "SpamBlock"),
    ];
    let want: Vec<(String, String)> = want
        .iter()
        .map(|(k, l)| (k.to_string(), l.to_string()))
        .collect();
    assert_eq!(labels, want);

    // Another engine in this process running the same init is fine...
    let copy = dir.path().join("copy.toml");
    std::fs::write(&copy, RULES).unwrap();
    init(dir.path(), &configure(&[&copy])).await.unwrap();
    // ...but different rules cannot replace the ones records were classified with.
    let other = dir.path().join("other.toml");
    std::fs::write(&other, "[rules]\nX = ['x']\n").unwrap();
    let err = init(dir.path(), &configure(&[&other])).await.unwrap_err();
    assert!(err.contains("already configured"), "{err}");
    assert!(err.contains("policy.lua:3"), "{err}");
}

#[tokio::test]
async fn an_unknown_key_is_refused_naming_it_and_the_policy_line() {
    let dir = tempfile::tempdir().unwrap();
    let rules = dir.path().join("rules.toml");
    std::fs::write(&rules, RULES).unwrap();
    let body = format!(
        "  kumo.configure_bounce_classifier {{ files = {{ '{}' }}, pol_size = 2 }}",
        rules.display()
    );
    let err = init(dir.path(), &body).await.unwrap_err();
    assert!(err.contains("pol_size"), "{err}");
    assert!(err.contains("policy.lua:3"), "{err}");
}

#[tokio::test]
async fn a_bad_regex_is_refused_naming_the_rules_file_and_label_at_the_policy_line() {
    let dir = tempfile::tempdir().unwrap();
    let rules = dir.path().join("broken.toml");
    std::fs::write(&rules, "[rules]\nQuotaIssues = [\"^552 [45\"]\n").unwrap();
    let err = init(dir.path(), &configure(&[&rules])).await.unwrap_err();
    assert!(err.contains("policy.lua:3"), "{err}");
    assert!(err.contains("broken.toml:2: rule QuotaIssues"), "{err}");
}

#[tokio::test]
async fn a_missing_rules_file_is_refused_naming_it() {
    let dir = tempfile::tempdir().unwrap();
    let missing = dir.path().join("nowhere.toml");
    let err = init(dir.path(), &configure(&[&missing])).await.unwrap_err();
    assert!(err.contains("policy.lua:3"), "{err}");
    assert!(err.contains("nowhere.toml: cannot read"), "{err}");
}
