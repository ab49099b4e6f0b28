//! The local-log and log-hook options beyond plain JSON, against
//! `hermod serve` over real SMTP: `filter_event`, `per_record` templates
//! (local logs and hooks) and Rejection records for refused commands.

mod common;

use std::collections::HashSet;
use std::path::Path;
use std::time::Duration;

use common::smtp::Client;
use common::{eventually, read_log_lines, Server};
use serde_json::Value;

/// Appended to the P0 prelude, whose `DIR` local it reuses.
const SCENARIO: &str = r#"
kumo.on('init', function()
  kumo.configure_local_logs {
    log_dir = DIR .. '/logs-kept',
    max_segment_duration = '1s',
    filter_event = 'keep_in_log',
    per_record = {
      Delivery = { template = 'delivered {{ id }} to {{ recipient }} via {{ log_record.delivery_protocol }}' },
    },
  }
  kumo.configure_log_hook {
    name = 'tpl',
    per_record = { Any = { template = '{{ type }} {{ id }}' } },
  }
end)
kumo.on('keep_in_log', function(msg)
  return tostring(msg:sender()):find('^keep@') ~= nil
end)
kumo.on('smtp_server_rcpt_to', function(rcpt)
  if tostring(rcpt):find('^nobody@') then
    kumo.reject(550, '5.1.1 no such user')
  end
end)
kumo.on('should_enqueue_log_record', function(msg, hook_name)
  msg:set_meta('queue', 'hooks')
  return true
end)
kumo.on('get_queue_config', function(domain, tenant, campaign, routing_domain)
  return kumo.make_queue_config { protocol = { maildir_path = DIR .. '/' .. domain } }
end)
"#;

const BODY: &[u8] = b"Subject: options\r\n\r\nhello\r\n";

/// Contents of every delivered file of a Maildir.
fn maildir_texts(dir: &Path) -> Vec<String> {
    let Ok(entries) = std::fs::read_dir(dir.join("new")) else {
        return Vec::new();
    };
    entries
        .filter_map(|e| std::fs::read(e.ok()?.path()).ok())
        .map(|b| String::from_utf8_lossy(&b).into_owned())
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn filter_event_templates_and_rejections_shape_the_logs() {
    let server = Server::start(SCENARIO).await;
    let mut c = Client::connect(server.smtp_addr()).await;
    let kept = c.send("keep@a.example", "user@maildir", BODY).await;
    let dropped = c.send("drop@a.example", "user@maildir", BODY).await;
    c.command("MAIL FROM:<rej@a.example>", 250).await;
    let refused = c.command("RCPT TO:<nobody@maildir>", 550).await;
    assert!(refused.text.contains("no such user"), "{refused:?}");
    c.command("RSET", 250).await;
    c.quit().await;

    // The main (P0) log has everything, the rejection included.
    let records = server
        .wait_for_records(
            Duration::from_secs(30),
            "2 deliveries and a rejection",
            |r| {
                let n = |t: &str| {
                    r.iter()
                        .filter(|x| x["type"] == t && x["reception_protocol"] == "ESMTP")
                        .count()
                };
                n("Delivery") >= 2 && n("Rejection") >= 1
            },
        )
        .await;
    let rejection = records
        .iter()
        .find(|r| r["type"] == "Rejection")
        .expect("a Rejection record");
    assert_eq!(rejection["id"], "");
    assert_eq!(rejection["sender"], "rej@a.example");
    assert_eq!(rejection["recipient"], "nobody@maildir");
    assert_eq!(rejection["response"]["code"], 550);
    assert_eq!(
        rejection["response"]["enhanced_code"],
        serde_json::json!({"class": 5, "subject": 1, "detail": 1})
    );
    assert_eq!(rejection["response"]["content"], "no such user");
    assert_eq!(rejection["response"]["command"], "RCPT TO:<nobody@maildir>");
    assert_eq!(rejection["peer_address"]["addr"], "127.0.0.1");
    assert!(rejection["session_id"].is_string());

    // The filtered, templated log: only the kept message, its Delivery as
    // the template's text, its Reception as JSON; the rejection has no
    // message, so no filter applies to it.
    let kept_dir = server.dir().join("logs-kept");
    let delivered = format!("delivered {kept} to user@maildir via Maildir");
    let lines = eventually(Duration::from_secs(20), "the filtered log", || {
        let kept_dir = kept_dir.clone();
        let delivered = delivered.clone();
        async move {
            let lines = read_log_lines(&kept_dir);
            let done = lines.contains(&delivered) && lines.iter().any(|l| l.contains("Rejection"));
            done.then_some(lines)
        }
    })
    .await;
    assert!(
        lines.iter().all(|l| !l.contains(&dropped)),
        "the filter let the dropped message through: {lines:#?}"
    );
    let json: Vec<Value> = lines
        .iter()
        .filter_map(|l| serde_json::from_str(l).ok())
        .collect();
    let types: HashSet<&str> = json.iter().filter_map(|r| r["type"].as_str()).collect();
    assert_eq!(
        types,
        HashSet::from(["Reception", "Rejection"]),
        "{lines:#?}"
    );
    assert_eq!(
        json.iter().find(|r| r["type"] == "Reception").unwrap()["id"],
        kept.as_str()
    );

    // The hook's template is the data of every hook message; Rejections
    // have no message and never reach hooks.
    let hooks_dir = server.dir().join("hooks");
    let mut texts = eventually(Duration::from_secs(30), "4 hook messages", || {
        let hooks_dir = hooks_dir.clone();
        async move {
            let t = maildir_texts(&hooks_dir);
            (t.len() >= 4).then_some(t)
        }
    })
    .await;
    texts.sort();
    let mut want: Vec<String> = [&kept, &dropped]
        .iter()
        .flat_map(|id| [format!("Delivery {id}\n"), format!("Reception {id}\n")])
        .collect();
    want.sort();
    assert_eq!(texts, want);
}
