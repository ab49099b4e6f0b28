//! Hook messages in the spool. With `configure_log_hook{deferred_spool =
//! true}` they are queued without a spool write, and a clean shutdown spools
//! the ones still queued so that they are delivered after the restart.
//! Without it they are spooled before they are queued, as one meta record
//! that carries the data, and a restart (even after SIGKILL) restores them
//! exactly.

mod common;
mod support_durability;

use std::time::Duration;

use serde_json::Value;
use support_durability::{inject, rid, rtype, wait_logs, Server, PRELUDE};

fn policy() -> String {
    format!(
        "{PRELUDE}{}",
        r#"
local HOLD = os.getenv 'HOOK_HOLD' == '1'
kumo.on('pre_init', function()
  kumo.configure_log_hook { name = 'events', deferred_spool = os.getenv 'HOOK_SPOOLED' ~= '1' }
end)
kumo.on('should_enqueue_log_record', function(msg, hook_name)
  msg:set_meta('queue', 'hooks')
  return true
end)
kumo.on('get_queue_config', function(domain, tenant, campaign, routing_domain)
  if domain == 'hooks' and HOLD then
    -- Sessions wait for a batch that never fills: the messages stay queued.
    return kumo.make_queue_config { protocol = { custom_lua = {
      constructor = 'make.hold', batch_size = 1000, min_batch_size = 1000,
      max_batch_latency = '1h' } } }
  end
  if domain == 'hooks' then
    return kumo.make_queue_config { protocol = { maildir_path = DIR .. '/hooks' } }
  end
  return kumo.make_queue_config { protocol = { maildir_path = DIR .. '/maildir' } }
end)
kumo.on('make.hold', function()
  error('held hook messages must not be sent')
end)
"#
    )
}

fn is_hook(r: &Value) -> bool {
    r["reception_protocol"] == "LogRecord"
}

fn count(recs: &[Value], hook: bool, ty: &str) -> usize {
    recs.iter()
        .filter(|r| is_hook(r) == hook && rtype(r) == ty)
        .count()
}

async fn spool_writes(server: &Server) -> f64 {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let text = reqwest::Client::new()
        .get(format!("{}/metrics", server.base_url()))
        .send()
        .await
        .expect("GET /metrics")
        .text()
        .await
        .expect("metrics body");
    text.lines()
        .find(|l| l.starts_with("spool_messages_written"))
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or_else(|| panic!("no spool_messages_written_total in:\n{text}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deferred_hook_messages_are_delivered_without_a_spool_write() {
    let tmp = tempfile::tempdir().unwrap();
    let mut server = Server::start(tmp.path(), &policy(), &[]);
    inject(server.smtp, "user@example.com", 20, "deferred").await;
    wait_logs(
        &server,
        Duration::from_secs(40),
        "40 hook deliveries",
        |recs| count(recs, true, "Delivery") >= 40,
    )
    .await;
    // Only the 20 mails were written; each of their two records was not.
    assert_eq!(spool_writes(&server).await, 20.0);
    assert!(server.sigterm().success());
}

/// Start with the hook queue held (its sessions wait for a batch that never
/// fills), send 20 mails, and wait until their records are queued.
async fn hold_records(dir: &std::path::Path, env: &[(&str, &str)]) -> Server {
    let mut held = vec![("HOOK_HOLD", "1"), ("HERMOD_SESSION_IDLE_TIMEOUT", "120s")];
    held.extend_from_slice(env);
    let server = Server::start(dir, &policy(), &held);
    inject(server.smtp, "user@example.com", 20, "held").await;
    wait_logs(
        &server,
        Duration::from_secs(40),
        "20 mail deliveries",
        |recs| count(recs, false, "Delivery") >= 20,
    )
    .await;
    // The Delivery records' hook messages are queued right after the records.
    tokio::time::sleep(Duration::from_secs(1)).await;
    server
}

/// Restart with the hook queue released; every held record is delivered
/// exactly once. Returns the records logged after the restart.
async fn release_records(dir: &std::path::Path, env: &[(&str, &str)]) -> Vec<Value> {
    let mut released = vec![("HOOK_HOLD", "0")];
    released.extend_from_slice(env);
    let server = Server::start(dir, &policy(), &released);
    let recs = wait_logs(
        &server,
        Duration::from_secs(40),
        "40 hook deliveries after restart",
        |recs| count(recs, true, "Delivery") >= 40,
    )
    .await;
    assert_eq!(
        count(&recs, true, "Delivery"),
        40,
        "each held record delivered once"
    );
    recs
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deferred_hook_messages_queued_at_shutdown_are_spooled_and_delivered_after_restart() {
    let tmp = tempfile::tempdir().unwrap();
    let mut server = hold_records(tmp.path(), &[]).await;
    assert!(server.sigterm().success());
    let stderr = server.stderr_text();
    assert!(
        stderr.contains("stored deferred log hook messages at shutdown"),
        "{stderr}"
    );
    release_records(tmp.path(), &[]).await;
}

/// The hook messages' Maildir files, read back as the records they carry.
fn hook_files(dir: &std::path::Path) -> Vec<Vec<u8>> {
    let Ok(rd) = std::fs::read_dir(dir.join("hooks/new")) else {
        return Vec::new();
    };
    rd.filter_map(|e| std::fs::read(e.ok()?.path()).ok())
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn spooled_hook_messages_survive_kill_9_and_are_delivered_after_restart_as_their_records() {
    let tmp = tempfile::tempdir().unwrap();
    let spooled = [("HOOK_SPOOLED", "1")];
    let mut server = hold_records(tmp.path(), &spooled).await;
    // 20 mails, then each of their 40 records as one write (meta only),
    // fsynced before it was queued: a SIGKILL now must lose none of them.
    assert_eq!(spool_writes(&server).await, 60.0);
    server.kill9();

    let recs = release_records(tmp.path(), &spooled).await;
    let files = hook_files(tmp.path());
    assert_eq!(files.len(), 40);
    for data in files {
        assert_eq!(
            data.iter().filter(|b| **b == b'\n').count(),
            1,
            "one JSON line"
        );
        assert!(data.ends_with(b"\n"));
        let carried: Value = serde_json::from_slice(&data).expect("a JSON record");
        let local = recs
            .iter()
            .find(|r| !is_hook(r) && rid(r) == rid(&carried) && rtype(r) == rtype(&carried))
            .unwrap_or_else(|| panic!("no local record for {carried}"));
        assert_eq!(&carried, local, "the restored message carries its record");
    }
}
