//! Bad-input catalogue, policy and storage part (included by
//! `tests/bad_input.rs`): broken policies must fail with the policy's
//! `file:line`, and a broken handler must cost one session or one message,
//! never the server.

use std::time::{Duration, Instant};

use crate::support_badinput::raw::Raw;
use crate::support_badinput::{policy, serve_expecting_exit, Hermod, SMTP_NULL_QUEUE};

const WAIT: Duration = Duration::from_secs(20);

#[tokio::test]
async fn policy_syntax_error_makes_serve_exit_non_zero_naming_file_and_line() {
    let scenario =
        "kumo.on('smtp_server_ehlo', function(domain)\n  if domain = 'x' then end\nend)\n";
    let text = policy((1, 2), "", "", "", scenario);
    let line = text
        .lines()
        .position(|l| l.contains("if domain = 'x'"))
        .expect("line")
        + 1;
    let (_dir, status, out) = serve_expecting_exit(&text);
    assert!(
        !status.success(),
        "hermod serve exited with {status}; output:\n{out}"
    );
    assert!(
        out.contains(&format!("policy.lua:{line}:")),
        "no policy.lua:{line}: in:\n{out}"
    );
}

/// Assert a `421 4.3.0 ... technical difficulties` reply and that stderr
/// names the failing handler's `policy.lua:<line>` and its message.
async fn assert_policy_failure(h: &Hermod, r: crate::support_badinput::raw::Reply, marker: &str) {
    r.assert(421, "4.3.0");
    assert!(r.text.contains("technical difficulties"), "{r:?}");
    let at = h.policy_line(marker);
    let line = h
        .wait_stderr_line(&["esmtp policy event failed", &at, marker], WAIT)
        .await;
    assert!(line.contains("ERROR"), "{line}");
    h.assert_serves().await;
}

#[tokio::test]
async fn error_in_smtp_server_message_received_is_421_4_3_0_with_file_line_logged() {
    let h = Hermod::start(
        "",
        "",
        r#"
kumo.on('smtp_server_message_received', function(msg)
  if msg:sender().user == 'boom' then error('boom in message_received') end
  msg:set_meta('queue', 'null')
end)
"#,
    )
    .await;
    let mut c = Raw::ehlo(h.smtp_addr()).await;
    c.cmd("MAIL FROM:<boom@ok.test>").await.assert(250, "OK");
    c.cmd("RCPT TO:<b@ok.test>").await.assert(250, "OK");
    c.cmd("DATA").await.assert(354, "");
    c.send(b"Subject: x\r\n\r\nhi\r\n.\r\n").await;
    let r = c.reply().await;
    assert_policy_failure(&h, r, "boom in message_received").await;
}

#[tokio::test]
async fn error_in_smtp_server_mail_from_is_421_4_3_0_with_file_line_logged() {
    let scenario = format!(
        "{SMTP_NULL_QUEUE}
kumo.on('smtp_server_mail_from', function(sender, meta)
  if sender.user == 'boom' then error('boom in mail_from') end
end)
"
    );
    let h = Hermod::start("", "", &scenario).await;
    let mut c = Raw::ehlo(h.smtp_addr()).await;
    let r = c.cmd("MAIL FROM:<boom@ok.test>").await;
    assert_policy_failure(&h, r, "boom in mail_from").await;
}

#[tokio::test]
async fn error_in_smtp_server_rcpt_to_is_421_4_3_0_with_file_line_logged() {
    let scenario = format!(
        "{SMTP_NULL_QUEUE}
kumo.on('smtp_server_rcpt_to', function(rcpt, meta)
  if rcpt.user == 'boom' then error('boom in rcpt_to') end
end)
"
    );
    let h = Hermod::start("", "", &scenario).await;
    let mut c = Raw::ehlo(h.smtp_addr()).await;
    c.cmd("MAIL FROM:<a@ok.test>").await.assert(250, "OK");
    let r = c.cmd("RCPT TO:<boom@ok.test>").await;
    assert_policy_failure(&h, r, "boom in rcpt_to").await;
}

#[tokio::test]
async fn error_in_smtp_server_ehlo_is_421_4_3_0_with_file_line_logged() {
    let scenario = format!(
        "{SMTP_NULL_QUEUE}
kumo.on('smtp_server_ehlo', function(domain, meta, extensions)
  if domain == 'boom.test' then error('boom in ehlo') end
end)
"
    );
    let h = Hermod::start("", "", &scenario).await;
    let mut c = Raw::connect(h.smtp_addr()).await;
    let r = c.cmd("EHLO boom.test").await;
    assert_policy_failure(&h, r, "boom in ehlo").await;
}

#[tokio::test]
async fn error_in_smtp_server_connection_accepted_is_421_4_3_0_with_file_line_logged() {
    let scenario = format!(
        "{SMTP_NULL_QUEUE}
kumo.on('smtp_server_connection_accepted', function(meta)
  if string.find(meta:get_meta('received_from'), '127.0.0.2', 1, true) then
    error('boom in connection_accepted')
  end
end)
"
    );
    let h = Hermod::start("", "", &scenario).await;
    let sock = tokio::net::TcpSocket::new_v4().expect("socket");
    sock.bind(([127, 0, 0, 2], 0).into())
        .expect("binding 127.0.0.2");
    let stream = sock.connect(h.smtp_addr()).await.expect("connecting");
    let mut buf = Vec::new();
    tokio::time::timeout(
        WAIT,
        tokio::io::AsyncReadExt::read_to_end(&mut { stream }, &mut buf),
    )
    .await
    .expect("the session must end")
    .expect("reading");
    let text = String::from_utf8_lossy(&buf);
    assert!(
        text.starts_with("421 4.3.0 ") && text.contains("technical difficulties"),
        "{text:?}"
    );
    let at = h.policy_line("boom in connection_accepted");
    h.wait_stderr_line(&["esmtp policy event failed", &at], WAIT)
        .await;
    h.assert_serves().await;
}

/// Messages to `lua.test`/`boom.test` reach `get_queue_config`; everything
/// else goes to the null queue.
fn queue_scenario(get_queue_config: &str, extra: &str) -> String {
    format!(
        r#"
kumo.on('smtp_server_message_received', function(msg)
  local d = msg:recipient().domain
  if d ~= 'lua.test' and d ~= 'boom.test' then msg:set_meta('queue', 'null') end
end)
kumo.on('get_queue_config', function(domain, tenant, campaign, routing_domain)
{get_queue_config}
end)
{extra}
"#
    )
}

async fn send_to(h: &Hermod, rcpt: &str) -> crate::support_badinput::raw::Reply {
    let mut c = Raw::ehlo(h.smtp_addr()).await;
    c.cmd("MAIL FROM:<a@ok.test>").await.assert(250, "OK");
    c.cmd(&format!("RCPT TO:<{rcpt}>")).await.assert(250, "OK");
    c.cmd("DATA").await.assert(354, "");
    c.send(b"Subject: queue\r\n\r\nhi\r\n.\r\n").await;
    c.reply().await
}

#[tokio::test]
async fn error_in_get_queue_config_refuses_the_message_with_451_and_the_reason() {
    let h = Hermod::start(
        "",
        "",
        &queue_scenario("  error('no queue config for ' .. domain)", ""),
    )
    .await;
    let r = send_to(&h, "x@boom.test").await;
    r.assert(451, "4.3.0 get_queue_config failed");
    let at = h.policy_line("no queue config for");
    assert!(
        r.text.contains(&at) && r.text.contains("no queue config for boom.test"),
        "{r:?}"
    );
    h.assert_serves().await;
}

#[tokio::test]
async fn get_queue_config_returning_a_plain_table_is_451_naming_make_queue_config() {
    let h = Hermod::start("", "", &queue_scenario("  return { protocol = {} }", "")).await;
    let r = send_to(&h, "x@boom.test").await;
    r.assert(451, "4.3.0");
    assert!(
        r.text.contains("kumo.make_queue_config") && r.text.contains("got a table"),
        "{r:?}"
    );
    h.assert_serves().await;
}

const CUSTOM_LUA: &str = "  return kumo.make_queue_config { retry_interval = '1h', \
     protocol = { custom_lua = { constructor = 'make.conn' } } }";

/// Send to `lua.test` and wait for its first TransientFailure record.
async fn first_transient_failure(h: &Hermod) -> String {
    let r = send_to(h, "x@lua.test").await;
    r.assert(250, "OK ids=");
    let id = crate::common::smtp::ids_of(&r.text).remove(0);
    let rec = h
        .wait_record(WAIT, |r| {
            r["type"] == "TransientFailure" && r["id"] == id.as_str()
        })
        .await;
    h.assert_serves().await;
    rec["response"]["content"]
        .as_str()
        .unwrap_or_default()
        .to_string()
}

#[tokio::test]
async fn constructor_returning_a_number_is_a_transient_failure_saying_invalid_connection_object() {
    let extra = "kumo.on('make.conn', function(domain, tenant, campaign) return 42 end)";
    let h = Hermod::start("", "", &queue_scenario(CUSTOM_LUA, extra)).await;
    let content = first_transient_failure(&h).await;
    assert!(
        content.contains("invalid connection object")
            && content.contains("instead of a connection table"),
        "{content:?}"
    );
}

#[tokio::test]
async fn send_returning_nil_is_a_transient_failure_naming_the_return() {
    let extra = r#"
kumo.on('make.conn', function(domain, tenant, campaign)
  return { send = function(self, msg) return nil end, close = function(self) end }
end)"#;
    let h = Hermod::start("", "", &queue_scenario(CUSTOM_LUA, extra)).await;
    let content = first_transient_failure(&h).await;
    assert!(
        content.contains("sender:send method failed") && content.contains("returned nothing"),
        "{content:?}"
    );
}

#[tokio::test]
async fn infinite_loop_in_a_handler_is_stopped_by_the_call_time_limit() {
    let h = Hermod::start(
        "data_processing_timeout = '10m'",
        "",
        r#"
kumo.on('smtp_server_message_received', function(msg)
  if msg:sender().user == 'loop' then while true do end end
  msg:set_meta('queue', 'null')
end)
"#,
    )
    .await;
    let started = Instant::now();
    let mut c = Raw::ehlo(h.smtp_addr()).await;
    c.cmd("MAIL FROM:<loop@ok.test>").await.assert(250, "OK");
    c.cmd("RCPT TO:<b@ok.test>").await.assert(250, "OK");
    c.cmd("DATA").await.assert(354, "");
    c.send(b"Subject: loop\r\n\r\nhi\r\n.\r\n").await;
    let r = c
        .try_reply(Duration::from_secs(30))
        .await
        .unwrap_or_else(|e| panic!("no reply within 30 s ({e}); stderr:\n{}", h.stderr()));
    r.assert(421, "4.3.0");
    // The limit is 3 s (HERMOD_HANDLER_TIME_LIMIT in the support launcher).
    assert!(started.elapsed() < Duration::from_secs(25));
    let line = h.policy_line("while true do end");
    let err = h
        .wait_stderr_line(&["time limit", &line], Duration::from_secs(5))
        .await;
    assert!(err.contains(&line), "{err}");
    h.assert_serves().await;
}

#[tokio::test]
async fn error_in_should_enqueue_log_record_is_logged_and_the_message_still_delivered() {
    let scenario = r#"
kumo.on('get_queue_config', function(domain, tenant, campaign, routing_domain)
  return kumo.make_queue_config { protocol = { maildir_path = DIR .. '/maildir' } }
end)
kumo.on('should_enqueue_log_record', function(msg, hook_name)
  error('boom in should_enqueue_log_record')
end)
"#;
    let h = Hermod::start_with_pre(
        "kumo.configure_log_hook { name = 'hook' }",
        "",
        "",
        scenario,
    )
    .await;
    let r = send_to(&h, "x@ok.test").await;
    r.assert(250, "OK ids=");
    let id = crate::common::smtp::ids_of(&r.text).remove(0);
    h.wait_record(WAIT, |r| r["type"] == "Delivery" && r["id"] == id.as_str())
        .await;
    let at = h.policy_line("boom in should_enqueue_log_record");
    let line = h
        .wait_stderr_line(&["should_enqueue_log_record", &at], WAIT)
        .await;
    assert!(line.contains("ERROR"), "{line}");
    h.assert_serves().await;
}

// ---------------------------------------------------------------- storage

#[tokio::test]
async fn corrupt_spool_entry_is_moved_aside_and_logged_at_start_up() {
    // Mail to lua.test stays spooled: its constructor fails, retry in 1 h.
    let extra = "kumo.on('make.conn', function(domain, tenant, campaign) error('not now') end)";
    let mut h = Hermod::start("", "", &queue_scenario(CUSTOM_LUA, extra)).await;
    let r = send_to(&h, "x@lua.test").await;
    r.assert(250, "OK ids=");
    let id = crate::common::smtp::ids_of(&r.text).remove(0);
    h.wait_record(WAIT, |r| {
        r["type"] == "TransientFailure" && r["id"] == id.as_str()
    })
    .await;
    h.stop().await;

    corrupt_meta(&h.dir().join("spool/meta/db"), &id);
    let restarted = Instant::now();
    h.restart().await;
    assert!(restarted.elapsed() < WAIT);
    let line = h.wait_stderr_line(&["ERROR", &id, "moved_to"], WAIT).await;
    assert!(line.contains("unreadable meta"), "{line}");
    h.wait_stderr_line(&["spool enumerated", "corrupt_moved=1"], WAIT)
        .await;
    h.assert_serves().await;
}

/// Overwrite the meta value of spool id `id` (32 hex digits) with garbage,
/// opening the RocksDB directly while Hermod is stopped.
fn corrupt_meta(db_path: &std::path::Path, id: &str) {
    let key: Vec<u8> = (0..id.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&id[i..i + 2], 16).expect("hex id"))
        .collect();
    let opts = rocksdb::Options::default();
    let cfs = rocksdb::DB::list_cf(&opts, db_path).expect("listing column families");
    let db = rocksdb::DB::open_cf(&opts, db_path, &cfs).expect("opening the meta spool");
    let cf = db.cf_handle("meta").expect("meta column family");
    assert!(
        db.get_cf(cf, &key).expect("reading").is_some(),
        "message {id} is not in the meta spool"
    );
    db.put_cf(cf, &key, b"\xff\x00 this is not a spool record")
        .expect("writing garbage");
    db.flush_cf(cf).expect("flushing");
}
