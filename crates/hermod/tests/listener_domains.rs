//! Listener domains over real SMTP: `get_listener_domain` lets a peer
//! outside `relay_hosts` relay to a domain (`relay_to`) or with a sender
//! domain (`relay_from`), and accepts OOB bounces and ARF feedback reports
//! for logging (`log_oob`, `log_arf`); `policy-extras.listener_domains`
//! answers the event from a data file. Every listener here has
//! `relay_hosts = {}`, so the test client (127.0.0.1) is not a relay host.

mod common;

use std::collections::HashSet;
use std::time::Duration;

use common::smtp::{ids_of, Client};
use common::{records_of, Server, ServerConfig};
use serde_json::Value;

const DSN: &[u8] = include_bytes!("../../message/testdata/dsn.eml");
const ARF: &[u8] = include_bytes!("../../message/testdata/arf.eml");
const WAIT: Duration = Duration::from_secs(30);

/// Deliver everything queued into `$ACCEPT_DIR/maildir`.
const MAILDIR_QUEUES: &str = r#"
kumo.on('get_queue_config', function()
  return kumo.make_queue_config { protocol = { maildir_path = DIR .. '/maildir' } }
end)
"#;

/// `test_p0` with the listener outside `relay_hosts`, and spools that take
/// mail down to 1% free disk: these tests are about relaying, not space,
/// and shared build machines run with little of it.
fn config(scenario: &str) -> ServerConfig {
    let smtp_port = common::free_port();
    let p0 = common::test_p0(smtp_port, common::free_port())
        .replace("/spool/data' }", "/spool/data', min_free_space = '1%' }")
        .replace("/spool/meta' }", "/spool/meta', min_free_space = '1%' }")
        .replace(
            &format!("listen = '127.0.0.1:{smtp_port}'"),
            &format!("listen = '127.0.0.1:{smtp_port}', relay_hosts = {{}}"),
        );
    let mut cfg = ServerConfig::with_p0(&format!("{p0}\n{MAILDIR_QUEUES}\n{scenario}"));
    cfg.with_p0 = false;
    cfg.smtp_port = Some(smtp_port);
    cfg
}

async fn start(scenario: &str) -> Server {
    Server::launch(config(scenario)).await
}

fn ids(list: &[String]) -> HashSet<String> {
    list.iter().cloned().collect()
}

async fn rcpt(c: &mut Client, from: &str, to: &str) -> u16 {
    c.command(&format!("MAIL FROM:<{from}>"), 250).await;
    let code = c.reply_to(&format!("RCPT TO:<{to}>")).await.code;
    c.command("RSET", 250).await;
    code
}

#[tokio::test]
async fn relay_to_lets_a_non_relay_peer_send_to_that_domain_and_only_that_domain() {
    let server = start(
        r#"
kumo.on('get_listener_domain', function(domain, listener, conn_meta)
  if domain == 'inbound.test' then
    return kumo.make_listener_domain { relay_to = true }
  end
end)
"#,
    )
    .await;
    let mut c = Client::connect(server.smtp_addr()).await;
    assert_eq!(rcpt(&mut c, "a@sender.test", "x@other.test").await, 550);
    assert_eq!(rcpt(&mut c, "a@sender.test", "x@inbound.test").await, 250);
    let id = c
        .send(
            "a@sender.test",
            "x@inbound.test",
            b"Subject: in\r\n\r\nhello\r\n",
        )
        .await;
    c.quit().await;
    let want = ids(&[id]);
    server
        .wait_for_records(WAIT, "the Delivery of the relayed message", |r| {
            !records_of(r, "Delivery", &want).is_empty()
        })
        .await;
}

#[tokio::test]
async fn relay_from_lets_a_sender_domain_relay_only_from_a_matching_peer_cidr() {
    let server = start(
        r#"
kumo.on('get_listener_domain', function(domain, listener, conn_meta)
  if domain == 'near.test' then
    return kumo.make_listener_domain { relay_from = { '127.0.0.0/8' } }
  elseif domain == 'far.test' then
    return kumo.make_listener_domain { relay_from = { '10.0.0.0/8' } }
  end
end)
"#,
    )
    .await;
    let mut c = Client::connect(server.smtp_addr()).await;
    assert_eq!(rcpt(&mut c, "a@near.test", "x@anywhere.test").await, 250);
    assert_eq!(rcpt(&mut c, "a@far.test", "x@anywhere.test").await, 550);
    assert_eq!(rcpt(&mut c, "a@other.test", "x@anywhere.test").await, 550);
    c.quit().await;
}

#[tokio::test]
async fn log_oob_log_then_drop_logs_an_oob_record_for_a_dsn_and_spools_nothing() {
    let server = start(
        r#"
kumo.on('get_listener_domain', function(domain, listener, conn_meta)
  if domain == 'bounce.example.com' then
    return kumo.make_listener_domain { log_oob = 'LogThenDrop' }
  end
end)
"#,
    )
    .await;
    let mut c = Client::connect(server.smtp_addr()).await;
    let reply = c.transaction("", "bounces@bounce.example.com", DSN).await;
    assert_eq!(reply.code, 250, "{reply:?}");
    let want = ids(&ids_of(&reply.text));
    assert_eq!(want.len(), 1, "{reply:?}");
    // Ordinary mail to a log-only domain is not relayed.
    let plain = c
        .transaction(
            "a@s.test",
            "x@bounce.example.com",
            b"Subject: hi\r\n\r\nhi\r\n",
        )
        .await;
    assert_eq!(plain.code, 550, "{plain:?}");
    c.quit().await;

    let records = server
        .wait_for_records(WAIT, "the OOB record", |r| {
            !records_of(r, "OOB", &want).is_empty()
        })
        .await;
    let oob = records_of(&records, "OOB", &want);
    assert_eq!(oob.len(), 1, "only the failed recipient: {oob:?}");
    let r = oob[0];
    assert_eq!(r["sender"], "bounces@bounce.example.com");
    assert_eq!(r["recipient"], "Nobody@Example.net");
    assert_eq!(r["response"]["code"], 550);
    assert_eq!(
        r["response"]["enhanced_code"],
        serde_json::json!({"class": 5, "subject": 1, "detail": 1})
    );
    assert_eq!(r["peer_address"]["name"], "mx.example.net");
    // Timed by the report's Last-Attempt-Date (Tue, 1 Dec 2026 10:00:05 +0000).
    assert_eq!(r["timestamp"], 1_796_119_205, "{r}");
    // Dropped: never spooled, so never delivered, and no maildir file.
    tokio::time::sleep(Duration::from_secs(2)).await;
    let records = server.log_records();
    assert!(records_of(&records, "Delivery", &want).is_empty());
    let maildir = server.dir().join("maildir");
    assert!(!maildir.exists(), "nothing may reach the maildir");
    let spool_ids = spool_files_mentioning(&server, &want);
    assert!(spool_ids.is_empty(), "spool holds {spool_ids:?}");
}

/// Spool entries are RocksDB files; the dropped message's id must appear in
/// none of them (checked by its bytes, without opening the database).
fn spool_files_mentioning(server: &Server, ids: &HashSet<String>) -> Vec<String> {
    let mut hits = Vec::new();
    let Ok(walk) = std::fs::read_dir(server.dir().join("spool/data")) else {
        return hits;
    };
    for entry in walk.flatten() {
        let Ok(bytes) = std::fs::read(entry.path()) else {
            continue;
        };
        for id in ids {
            if bytes.windows(id.len()).any(|w| w == id.as_bytes()) {
                hits.push(format!("{} in {}", id, entry.path().display()));
            }
        }
    }
    hits
}

#[tokio::test]
async fn log_arf_log_then_relay_logs_feedback_with_its_report_and_queues_the_message() {
    let server = start(
        r#"
kumo.on('get_listener_domain', function(domain, listener, conn_meta)
  if domain == 'fbl.example.com' then
    return kumo.make_listener_domain { log_arf = 'LogThenRelay' }
  end
end)
"#,
    )
    .await;
    let mut c = Client::connect(server.smtp_addr()).await;
    let id = c
        .send("abusedesk@isp.test", "abuse@fbl.example.com", ARF)
        .await;
    c.quit().await;
    let want = ids(&[id]);
    let records = server
        .wait_for_records(WAIT, "the Feedback record and the Delivery", |r| {
            !records_of(r, "Feedback", &want).is_empty()
                && !records_of(r, "Delivery", &want).is_empty()
        })
        .await;
    let fb: &Value = records_of(&records, "Feedback", &want)[0];
    let report = &fb["feedback_report"];
    assert_eq!(report["feedback_type"], "abuse");
    assert_eq!(report["user_agent"], "SomeGenerator/1.0");
    assert_eq!(report["source_ip"], "192.0.2.1");
    assert_eq!(
        report["original_rcpto_to"],
        serde_json::json!(["<user@example.com>"])
    );
    // The Feedback record takes the Reception record's place, as in KumoMTA.
    assert!(records_of(&records, "Reception", &want).is_empty());
}

#[tokio::test]
async fn the_helper_applies_its_default_wildcard_and_per_listener_sections() {
    let dir = tempfile::tempdir().expect("tempdir");
    let data = dir.path().join("listener_domains.json");
    let cfg = config(&format!(
        "local listener_domains = require 'policy-extras.listener_domains'
kumo.on('get_listener_domain', listener_domains:setup {{ '{}' }})
",
        data.display()
    ));
    let port = cfg.smtp_port.unwrap_or_default();
    let json = format!(
        r#"{{
  "*": {{ "log_arf": "LogThenDrop" }},
  "*.relay.test": {{ "relay_to": true }},
  "www.relay.test": {{ "relay_to": false }},
  "listener": {{
    "127.0.0.1:{port}": {{ "blocked.relay.test": {{ "relay_to": false }} }}
  }}
}}
"#
    );
    std::fs::write(&data, json).expect("writing the data file");
    let server = Server::launch(cfg).await;
    let mut c = Client::connect(server.smtp_addr()).await;
    // The wildcard relays its subdomains, at any depth.
    assert_eq!(rcpt(&mut c, "a@s.test", "x@mx.relay.test").await, 250);
    assert_eq!(rcpt(&mut c, "a@s.test", "x@a.b.relay.test").await, 250);
    // An exact entry wins over the wildcard (and over "*").
    assert_eq!(rcpt(&mut c, "a@s.test", "x@www.relay.test").await, 550);
    // This listener's section is laid over the wildcard's entry.
    assert_eq!(rcpt(&mut c, "a@s.test", "x@blocked.relay.test").await, 550);
    // "*" answers for any other domain: accepted for ARF logging only.
    assert_eq!(rcpt(&mut c, "a@s.test", "x@elsewhere.test").await, 250);
    let plain = c
        .transaction("a@s.test", "x@elsewhere.test", b"Subject: hi\r\n\r\nhi\r\n")
        .await;
    assert_eq!(plain.code, 550, "not a report, so not relayed: {plain:?}");
    c.quit().await;
}

#[test]
fn a_misspelt_key_in_the_helpers_data_file_is_reported_with_its_line() {
    let dir = tempfile::tempdir().expect("tempdir");
    let data = dir.path().join("listener_domains.json");
    std::fs::write(
        &data,
        "{\n  \"example.com\": {\n    \"relay_to\": true,\n    \"relay_too\": true\n  }\n}\n",
    )
    .expect("writing the data file");
    let policy = dir.path().join("policy.lua");
    std::fs::write(
        &policy,
        format!(
            "local kumo = require 'kumo'\n\
             local listener_domains = require 'policy-extras.listener_domains'\n\
             kumo.on('get_listener_domain', listener_domains:setup {{ '{}' }})\n",
            data.display()
        ),
    )
    .expect("writing the policy");
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_hermod"))
        .args(["check", "--policy"])
        .arg(&policy)
        .env("ACCEPT_DIR", dir.path())
        .output()
        .expect("running hermod check");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(!out.status.success(), "check must fail: {text}");
    let want = format!("{}:4: ", data.display());
    assert!(
        text.contains(&want) && text.contains("relay_too"),
        "expected {want:?} naming relay_too in:\n{text}"
    );
}
