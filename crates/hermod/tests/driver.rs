//! What the delivery driver (crates/queue/src/delivery/) gives every protocol, shown with the
//! maildir protocol through the real `hermod` binary: a destination that keeps failing pauses
//! its ready queue, and queues left idle are reaped and made again when mail arrives.

mod common;

use std::collections::HashSet;
use std::time::{Duration, Instant};

use common::{records_of, smtp, unique, Server, ServerConfig};

const WAIT: Duration = Duration::from_secs(30);

/// Every domain goes to a maildir at `path` (a template), retried every second.
fn maildir_policy(path: &str) -> String {
    format!(
        r#"
kumo.on('get_queue_config', function(domain, tenant, campaign, routing_domain)
  return kumo.make_queue_config {{
    retry_interval = '1s', max_retry_interval = '1s',
    protocol = {{ maildir_path = {path} }},
  }}
end)
"#
    )
}

async fn send_one(server: &Server, rcpt: &str) -> HashSet<String> {
    smtp::send_messages(server.smtp_addr(), rcpt, &unique("driver"), 1, 1)
        .await
        .into_iter()
        .map(|s| s.id)
        .collect()
}

/// Poll the server's stderr until it contains `needle`.
async fn wait_for_stderr(server: &Server, needle: &str, timeout: Duration) {
    let deadline = Instant::now() + timeout;
    while !server.stderr().contains(needle) {
        assert!(
            Instant::now() < deadline,
            "no {needle:?} in stderr after {timeout:?}:\n{}",
            server.stderr_tail()
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_maildir_that_cannot_be_written_pauses_its_ready_queue() {
    // Nothing can be created below /dev/null, so every write fails with an I/O error.
    let server = Server::start(&maildir_policy("'/dev/null/maildir'")).await;
    let ids = send_one(&server, "user@broken-disk.example").await;
    let records = server
        .wait_for_records(WAIT, "a TransientFailure", |r| {
            !records_of(r, "TransientFailure", &ids).is_empty()
        })
        .await;
    let failure = records_of(&records, "TransientFailure", &ids)[0];
    let content = failure["response"]["content"].as_str().unwrap_or_default();
    assert!(content.starts_with("maildir delivery failed:"), "{failure}");
    assert_eq!(failure["delivery_protocol"], "Maildir", "{failure}");
    // Three failed attempts in a row (one per retry, a second apart) pause the queue.
    wait_for_stderr(
        &server,
        "ready queue paused: destination looks unreachable",
        WAIT,
    )
    .await;
    let stderr = server.stderr();
    let paused = stderr
        .lines()
        .find(|l| l.contains("ready queue paused"))
        .unwrap_or_default();
    assert!(
        paused.contains("unspecified->broken-disk.example@maildir"),
        "the pause must name the maildir queue: {paused}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idle_queues_are_reaped_and_made_again_when_mail_arrives() {
    let mut cfg = ServerConfig::with_p0(&maildir_policy(
        "os.getenv('ACCEPT_DIR') .. '/maildir/{{ domain }}'",
    ));
    cfg.args = [
        "--queue-reap-interval",
        "500ms",
        "--session-idle-timeout",
        "200ms",
    ]
    .map(String::from)
    .to_vec();
    let cfg = cfg.env("HERMOD_LOG", "info,hermod_queue=debug");
    let server = Server::launch(cfg).await;

    let first = send_one(&server, "user@reaped.example").await;
    server
        .wait_for_records(WAIT, "the first Delivery", |r| {
            records_of(r, "Delivery", &first).len() == 1
        })
        .await;
    // Both the scheduled queue and the ready queue of the domain go once idle
    // (the only queues this server has).
    wait_for_stderr(&server, "ready=1", WAIT).await;
    wait_for_stderr(&server, "scheduled=1", WAIT).await;

    let second = send_one(&server, "user@reaped.example").await;
    let records = server
        .wait_for_records(WAIT, "the second Delivery", |r| {
            records_of(r, "Delivery", &second).len() == 1
        })
        .await;
    let delivered = records_of(&records, "Delivery", &second)[0];
    assert_eq!(
        delivered["site"], "unspecified->reaped.example@maildir",
        "{delivered}"
    );
    let files = std::fs::read_dir(server.dir().join("maildir/reaped.example/new"))
        .map(|d| d.count())
        .unwrap_or(0);
    assert_eq!(files, 2, "both messages are in the maildir");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn consecutive_connection_failures_before_delay_retries_the_whole_queue() {
    let policy = r#"
kumo.on('get_queue_config', function(domain, tenant, campaign, routing_domain)
  return kumo.make_queue_config {
    retry_interval = '1 hour',
    protocol = { custom_lua = { constructor = 'make.down' } },
  }
end)
kumo.on('get_egress_path_config', function(routing_domain, source, site)
  return kumo.make_egress_path {
    connection_limit = 1, consecutive_connection_failures_before_delay = 2,
  }
end)
kumo.on('make.down', function(domain, tenant, campaign)
  error('the broker is down')
end)
"#;
    let server = Server::start(policy).await;
    let ids: HashSet<String> = smtp::send_messages(
        server.smtp_addr(),
        "user@down.example",
        &unique("delay"),
        12,
        1,
    )
    .await
    .into_iter()
    .map(|s| s.id)
    .collect();
    let records = server
        .wait_for_records(WAIT, "a TransientFailure for every message", |r| {
            records_of(r, "TransientFailure", &ids).len() >= ids.len()
        })
        .await;
    let delayed: Vec<_> = records_of(&records, "TransientFailure", &ids)
        .into_iter()
        .filter(|r| {
            r["response"]["content"]
                .as_str()
                .is_some_and(|c| c.contains("consecutive connection failures"))
        })
        .collect();
    assert!(
        !delayed.is_empty(),
        "the queued messages must be delayed in bulk after two failed connections"
    );
    for d in &delayed {
        assert_eq!(d["response"]["code"], 451, "{d}");
        assert_eq!(d["response"]["enhanced_code"]["detail"], 1, "{d}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn messages_waiting_as_spool_ids_are_read_back_whole_and_delivered_byte_for_byte() {
    // `max_ready = 2`: beyond two queued messages a ready queue keeps ids only, and every
    // message waiting for its retry in the timer is an id too. The first attempts fail (a
    // file stands where the maildir must go); once it is gone, each message must be read
    // back from the spool (envelope, schedule and bytes) and delivered as it was received.
    let policy = r#"
kumo.on('get_queue_config', function(domain, tenant, campaign, routing_domain)
  return kumo.make_queue_config {
    retry_interval = '1s', max_retry_interval = '1s',
    protocol = { maildir_path = os.getenv('ACCEPT_DIR') .. '/blocked/{{ domain }}' },
  }
end)
kumo.on('get_egress_path_config', function(routing_domain, source, site)
  return kumo.make_egress_path { max_ready = 2, connection_limit = 2 }
end)
"#;
    let server = Server::start(policy).await;
    let blocker = server.dir().join("blocked");
    std::fs::write(&blocker, b"not a directory").expect("write the blocking file");
    let sent = smtp::send_messages(
        server.smtp_addr(),
        "user@parked.example",
        &unique("parked"),
        20,
        4,
    )
    .await;
    let ids: HashSet<String> = sent.iter().map(|s| s.id.clone()).collect();
    server
        .wait_for_records(WAIT, "a TransientFailure for every message", |r| {
            let failed: HashSet<&str> = records_of(r, "TransientFailure", &ids)
                .iter()
                .filter_map(|f| f["id"].as_str())
                .collect();
            failed.len() == ids.len()
        })
        .await;
    std::fs::remove_file(&blocker).expect("remove the blocking file");
    let records = server
        .wait_for_records(WAIT, "a Delivery for every message", |r| {
            records_of(r, "Delivery", &ids).len() == ids.len()
        })
        .await;
    for d in records_of(&records, "Delivery", &ids) {
        assert_eq!(d["recipient"], "user@parked.example", "{d}");
        assert!(
            d["num_attempts"].as_u64().is_some_and(|n| n >= 1),
            "the attempt count is read back with the message: {d}"
        );
    }
    let dir = server.dir().join("blocked/parked.example/new");
    let got: Vec<Vec<u8>> = std::fs::read_dir(&dir)
        .expect("the maildir exists")
        .filter_map(|e| std::fs::read(e.ok()?.path()).ok())
        .collect();
    assert_eq!(got.len(), sent.len(), "one file per message in {dir:?}");
    // Each file is the message as spooled: the listener's trace headers, then
    // exactly the bytes the client sent.
    for s in &sent {
        assert!(
            got.iter().any(|f| f.ends_with(&s.data)),
            "message {} did not arrive byte for byte; sent:\n{}\nfiled (one of):\n{}",
            s.id,
            String::from_utf8_lossy(&s.data),
            String::from_utf8_lossy(&got[0])
        );
    }
}
