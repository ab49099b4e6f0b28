//! The Lua functions, through the real policy engine.

use std::time::Duration;

use hermod_logging::{LocalLogConfig, LogHookConfig, RecordType};
use hermod_policy::{Engine, EngineOptions};

async fn start(policy: &str) -> Result<std::sync::Arc<hermod_policy::startup::Collected>, String> {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("policy.lua");
    std::fs::write(&path, policy).unwrap();
    let mut opts = EngineOptions::new(&path);
    opts.registrars.push(hermod_logging::register);
    match Engine::start(opts).await {
        Ok((_engine, collected)) => Ok(collected),
        Err(e) => Err(e.to_string()),
    }
}

#[tokio::test]
async fn configure_local_logs_and_log_hook_in_init_are_collected() {
    let collected = start(
        r#"
local kumo = require 'kumo'
kumo.on('pre_init', function()
  kumo.configure_log_hook { name = 'webhook', meta = { 'x_*' }, deferred_spool = true }
end)
kumo.on('init', function()
  kumo.configure_local_logs {
    log_dir = '/var/log/hermod-test',
    max_segment_duration = '1 minute',
    per_record = { Reception = { enable = false } },
  }
end)
"#,
    )
    .await
    .unwrap();
    let locals = collected.take::<LocalLogConfig>();
    assert_eq!(locals.len(), 1);
    assert_eq!(
        locals[0].max_segment_duration,
        Some(Duration::from_secs(60))
    );
    assert!(!locals[0].per_record[&RecordType::Reception].enable);
    let hooks = collected.take::<LogHookConfig>();
    assert_eq!(hooks.len(), 1);
    assert_eq!(hooks[0].name, "webhook");
    assert!(hooks[0].deferred_spool);
}

#[tokio::test]
async fn configure_local_logs_with_an_unknown_key_fails_naming_it_and_the_line() {
    let err = start(
        "local kumo = require 'kumo'\nkumo.on('init', function()\n  kumo.configure_local_logs { log_dir = '/tmp/x', max_file_sise = 5 }\nend)\n",
    )
    .await
    .err()
    .unwrap_or_default();
    assert!(err.contains("max_file_sise"), "{err}");
    assert!(err.contains("policy.lua:3"), "{err}");
}

#[tokio::test]
async fn a_second_log_hook_with_the_same_name_is_an_error_naming_it() {
    let err = start(
        r#"
local kumo = require 'kumo'
kumo.on('pre_init', function() kumo.configure_log_hook { name = 'twice' } end)
kumo.on('init', function() kumo.configure_log_hook { name = 'twice' } end)
"#,
    )
    .await
    .err()
    .unwrap_or_default();
    assert!(
        err.contains("\"twice\"") && err.contains("already configured"),
        "{err}"
    );
}
