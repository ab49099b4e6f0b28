//! Outbound SMTP (crates/queue/src/route.rs, crates/queue/src/delivery/smtp.rs) through the
//! real `hermod` binary, offline: a test resolver with zone text names the MX hosts, and the
//! receivers are other `hermod` processes listening on 127.0.0.x addresses, whose policy answers
//! by local part (`tempfail@` 451, `permfail@` 550) and files accepted mail in a maildir.

mod common;

use std::collections::HashSet;
use std::net::Ipv4Addr;
use std::path::PathBuf;
use std::time::Duration;

use common::{records_of, smtp, unique, Server, ServerConfig};
use serde_json::Value;

const WAIT: Duration = Duration::from_secs(40);

/// A receiving MTA on `ip:port`: no trace headers, so what it files is the
/// bytes it received; refusals by local part; everything else to
/// `<dir>/sink/<domain>/new`. `ehlo` may replace its EHLO extensions.
async fn sink(ip: Ipv4Addr, port: Option<u16>, ehlo: &str) -> Server {
    let scenario = format!(
        r#"
local DIR = os.getenv 'ACCEPT_DIR'
local function exists(path)
  local f = io.open(path)
  if f then f:close() end
  return f ~= nil
end
kumo.on('smtp_server_rcpt_to', function(rcpt, meta)
  if rcpt.user == 'tempfail' then kumo.reject(451, '4.3.0 try again later') end
  if rcpt.user == 'permfail' then kumo.reject(550, '5.1.1 no such user') end
  -- The first attempt fails, the next one is taken.
  if rcpt.user == 'once' and not exists(DIR .. '/once') then
    io.open(DIR .. '/once', 'w'):close()
    kumo.reject(451, '4.3.0 first attempt refused')
  end
end)
-- While the file `slow` exists, the reply to the message content waits: the test kills
-- this receiver in the middle of it.
kumo.on('smtp_server_message_received', function(msg)
  if exists(DIR .. '/slow') then kumo.sleep(60) end
end)
{ehlo}
kumo.on('get_queue_config', function(domain, tenant, campaign, routing_domain)
  return kumo.make_queue_config {{
    protocol = {{ maildir_path = os.getenv('ACCEPT_DIR') .. '/sink/{{{{ domain }}}}' }},
  }}
end)
"#
    );
    let mut cfg = ServerConfig::with_p0(&scenario);
    cfg.smtp_ip = ip;
    cfg.smtp_port = port;
    cfg.listener_extra =
        "trace_headers = { received_header = false, supplemental_header = false }".into();
    Server::launch(cfg).await
}

/// The files a sink has filed for `domain`.
/// What the sink filed once it holds at least `n` messages (or after
/// [`WAIT`]). The sink answers 250 when the message is in its spool and
/// files it into the maildir afterwards, so the sender's Delivery record
/// comes before the file.
async fn filed_at_least(sink: &Server, domain: &str, n: usize) -> Vec<Vec<u8>> {
    let deadline = std::time::Instant::now() + WAIT;
    loop {
        let got = filed(sink, domain);
        if got.len() >= n || std::time::Instant::now() > deadline {
            return got;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

fn filed(sink: &Server, domain: &str) -> Vec<Vec<u8>> {
    let dir: PathBuf = sink.dir().join("sink").join(domain).join("new");
    let mut out = Vec::new();
    if let Ok(rd) = std::fs::read_dir(dir) {
        for e in rd.flatten() {
            if let Ok(b) = std::fs::read(e.path()) {
                out.push(b);
            }
        }
    }
    out
}

/// The sending side: `zone` for the test resolver, every egress path sent to `port` with
/// loopback allowed, plus `path_extra` keys and `queue_extra` queue config keys.
fn sender_policy(zone: &str, port: u16, path_extra: &str, queue_extra: &str) -> String {
    format!(
        r#"
kumo.dns.configure_test_resolver {{ [=[
{zone}
]=] }}
kumo.on('get_queue_config', function(domain, tenant, campaign, routing_domain)
  return kumo.make_queue_config {{
    retry_interval = '1s', max_retry_interval = '2s', {queue_extra}
  }}
end)
kumo.on('get_egress_path_config', function(routing_domain, source, site)
  return kumo.make_egress_path {{
    smtp_port = {port}, prohibited_hosts = {{}}, enable_tls = 'OpportunisticInsecure',
    {path_extra}
  }}
end)
"#
    )
}

async fn sender(policy: &str) -> Server {
    let mut cfg = ServerConfig::with_p0(policy);
    cfg.listener_extra =
        "trace_headers = { received_header = false, supplemental_header = false }".into();
    Server::launch(cfg).await
}

async fn send(server: &Server, rcpt: &str, count: usize) -> Vec<smtp::Sent> {
    smtp::send_messages(server.smtp_addr(), rcpt, &unique("egress"), count, 1).await
}

fn ids(sent: &[smtp::Sent]) -> HashSet<String> {
    sent.iter().map(|s| s.id.clone()).collect()
}

const ONE_MX: &str = "$ORIGIN mx.test.
@ 300 IN MX 10 mx1.mx.test.
mx1 300 IN A 127.0.0.2";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mail_reaches_the_mx_host_byte_for_byte_with_an_esmtp_delivery_record() {
    let rx = sink(Ipv4Addr::new(127, 0, 0, 2), None, "").await;
    let tx = sender(&sender_policy(ONE_MX, rx.smtp_port, "", "")).await;
    let sent = send(&tx, "someone@mx.test", 3).await;
    let records = tx
        .wait_for_records(WAIT, "3 Delivery records", |r| {
            records_of(r, "Delivery", &ids(&sent)).len() == 3
        })
        .await;
    for d in records_of(&records, "Delivery", &ids(&sent)) {
        assert_eq!(d["delivery_protocol"], "ESMTP", "{d}");
        assert_eq!(d["site"], "unspecified->mx1.mx.test@smtp", "{d}");
        assert_eq!(d["peer_address"]["name"], "mx1.mx.test", "{d}");
        assert_eq!(d["peer_address"]["addr"], "127.0.0.2", "{d}");
        assert_eq!(d["response"]["code"], 250, "{d}");
        assert_eq!(d["egress_pool"], "unspecified", "{d}");
        assert_eq!(d["egress_source"], "unspecified", "{d}");
        // OpportunisticInsecure against a receiver that offers STARTTLS.
        assert!(d["tls_protocol_version"].is_string(), "{d}");
        assert!(d["tls_cipher"].is_string(), "{d}");
    }
    let got: HashSet<Vec<u8>> = filed_at_least(&rx, "mx.test", sent.len())
        .await
        .into_iter()
        .collect();
    for s in &sent {
        assert!(
            got.contains(s.data.as_slice()),
            "message {} did not arrive byte for byte",
            s.id
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_4xx_is_retried_and_a_5xx_bounces_with_the_remote_response() {
    let rx = sink(Ipv4Addr::new(127, 0, 0, 2), None, "").await;
    let tx = sender(&sender_policy(ONE_MX, rx.smtp_port, "", "max_age = '4s',")).await;
    let temp = send(&tx, "tempfail@mx.test", 1).await;
    let perm = send(&tx, "permfail@mx.test", 1).await;
    let records = tx
        .wait_for_records(WAIT, "a Bounce and two TransientFailures", |r| {
            records_of(r, "Bounce", &ids(&perm)).len() == 1
                && records_of(r, "TransientFailure", &ids(&temp)).len() >= 2
        })
        .await;
    let bounce = records_of(&records, "Bounce", &ids(&perm))[0];
    assert_eq!(bounce["response"]["code"], 550, "{bounce}");
    assert_eq!(bounce["response"]["enhanced_code"]["detail"], 1, "{bounce}");
    assert_eq!(
        bounce["response"]["command"],
        "RCPT TO:<permfail@mx.test>\r\n".trim_end(),
        "{bounce}"
    );
    let t = records_of(&records, "TransientFailure", &ids(&temp))[0];
    assert_eq!(t["response"]["code"], 451, "{t}");
    assert_eq!(t["peer_address"]["addr"], "127.0.0.2", "{t}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_next_mx_host_takes_the_mail_when_the_first_is_down() {
    let port = common::free_port();
    // mx1 (127.0.0.3) has no listener; mx2 (127.0.0.2) is up.
    let rx = sink(Ipv4Addr::new(127, 0, 0, 2), Some(port), "").await;
    let zone = "$ORIGIN failover.test.
@ 300 IN MX 10 mx1.failover.test.
@ 300 IN MX 20 mx2.failover.test.
mx1 300 IN A 127.0.0.3
mx2 300 IN A 127.0.0.2";
    let tx = sender(&sender_policy(zone, port, "", "")).await;
    let sent = send(&tx, "user@failover.test", 2).await;
    let records = tx
        .wait_for_records(WAIT, "2 Delivery records", |r| {
            records_of(r, "Delivery", &ids(&sent)).len() == 2
        })
        .await;
    for d in records_of(&records, "Delivery", &ids(&sent)) {
        assert_eq!(d["peer_address"]["name"], "mx2.failover.test", "{d}");
    }
    assert_eq!(filed_at_least(&rx, "failover.test", 2).await.len(), 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_null_mx_bounces_with_556_and_an_unknown_host_is_retried_with_451() {
    let zone = "$ORIGIN nullmx.test.
@ 300 IN MX 0 .
nohost 300 IN MX 10 gone.nullmx.test.";
    let tx = sender(&sender_policy(zone, 25, "", "max_age = '3s',")).await;
    let null = send(&tx, "user@nullmx.test", 1).await;
    let none = send(&tx, "user@nohost.nullmx.test", 1).await;
    let records = tx
        .wait_for_records(WAIT, "a Bounce and a TransientFailure", |r| {
            records_of(r, "Bounce", &ids(&null)).len() == 1
                && !records_of(r, "TransientFailure", &ids(&none)).is_empty()
        })
        .await;
    let b = records_of(&records, "Bounce", &ids(&null))[0];
    assert_eq!(b["response"]["code"], 556, "{b}");
    assert_eq!(b["response"]["enhanced_code"]["subject"], 1, "{b}");
    assert_eq!(b["response"]["enhanced_code"]["detail"], 10, "{b}");
    let t = records_of(&records, "TransientFailure", &ids(&none))[0];
    assert_eq!(t["response"]["code"], 451, "{t}");
    let content = t["response"]["content"].as_str().unwrap_or_default();
    assert!(content.contains("gone.nullmx.test"), "{t}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn loopback_is_refused_by_the_default_prohibited_hosts() {
    let rx = sink(Ipv4Addr::new(127, 0, 0, 2), None, "").await;
    // The path leaves prohibited_hosts at its default.
    let policy = sender_policy(ONE_MX, rx.smtp_port, "", "").replace("prohibited_hosts = {},", "");
    let tx = sender(&policy).await;
    let sent = send(&tx, "user@mx.test", 1).await;
    let records = tx
        .wait_for_records(WAIT, "a Bounce", |r| {
            records_of(r, "Bounce", &ids(&sent)).len() == 1
        })
        .await;
    let b = records_of(&records, "Bounce", &ids(&sent))[0];
    assert_eq!(b["response"]["code"], 550, "{b}");
    let content = b["response"]["content"].as_str().unwrap_or_default();
    assert!(content.contains("prohibited_hosts"), "{b}");
    assert!(content.contains("127.0.0.2"), "{b}");
    assert!(filed(&rx, "mx.test").is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn required_tls_without_starttls_is_a_transient_failure_naming_the_reason() {
    // This receiver offers no STARTTLS.
    let no_tls = r#"
kumo.on('smtp_server_ehlo', function(domain, meta, extensions)
  local out = {}
  for _, e in ipairs(extensions) do if e ~= 'STARTTLS' then table.insert(out, e) end end
  return out
end)"#;
    let rx = sink(Ipv4Addr::new(127, 0, 0, 2), None, no_tls).await;
    let policy = sender_policy(ONE_MX, rx.smtp_port, "", "").replace(
        "enable_tls = 'OpportunisticInsecure'",
        "enable_tls = 'RequiredInsecure'",
    );
    let tx = sender(&policy).await;
    let sent = send(&tx, "user@mx.test", 1).await;
    let records = tx
        .wait_for_records(WAIT, "a TransientFailure", |r| {
            !records_of(r, "TransientFailure", &ids(&sent)).is_empty()
        })
        .await;
    let t = records_of(&records, "TransientFailure", &ids(&sent))[0];
    let content = t["response"]["content"].as_str().unwrap_or_default();
    assert!(content.contains("STARTTLS"), "{t}");
    assert!(filed(&rx, "mx.test").is_empty());

    // Opportunistic delivers in plain text to the same receiver.
    let tx2 = sender(&sender_policy(ONE_MX, rx.smtp_port, "", "")).await;
    let plain = send(&tx2, "user@mx.test", 1).await;
    let records = tx2
        .wait_for_records(WAIT, "a Delivery", |r| {
            records_of(r, "Delivery", &ids(&plain)).len() == 1
        })
        .await;
    let d = records_of(&records, "Delivery", &ids(&plain))[0];
    assert_eq!(d["tls_cipher"], Value::Null, "{d}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn many_messages_share_few_connections_and_max_message_rate_spaces_them() {
    let rx = sink(Ipv4Addr::new(127, 0, 0, 2), None, "").await;
    let path = "connection_limit = 1, max_message_rate = '10/s,max_burst=1',";
    let tx = sender(&sender_policy(ONE_MX, rx.smtp_port, path, "")).await;
    let started = std::time::Instant::now();
    let sent = send(&tx, "user@mx.test", 20).await;
    let records = tx
        .wait_for_records(WAIT, "20 Delivery records", |r| {
            records_of(r, "Delivery", &ids(&sent)).len() == 20
        })
        .await;
    let took = started.elapsed();
    assert!(
        took >= Duration::from_millis(1800),
        "20 messages at 10/s took {took:?}"
    );
    let sessions: HashSet<&str> = records_of(&records, "Delivery", &ids(&sent))
        .iter()
        .filter_map(|d| d["session_id"].as_str())
        .collect();
    assert!(
        sessions.len() <= 2,
        "connection_limit 1 with reuse, got {} sessions",
        sessions.len()
    );
    // The waits are counted per scheduled queue, as KumoMTA counts its delays.
    let metrics = common::scrape_metrics(tx.http_port).await;
    let sample = |series: &str| {
        common::metric(&metrics, series).unwrap_or_else(|| panic!("no {series} in:\n{metrics}"))
    };
    let delayed = sample(r#"delayed_due_to_message_rate_throttle{queue="mx.test"}"#);
    assert!(
        (10.0..20.0).contains(&delayed),
        "20 messages at 10/s with a burst of 1: most wait, the first does not ({delayed})"
    );
    assert!(sample(r#"deliver_message_latency_rollup_count{service="smtp_client"}"#) >= 20.0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_smarthost_in_mx_list_gets_the_mail_with_auth_plain() {
    let rx = sink(
        Ipv4Addr::new(127, 0, 0, 2),
        None,
        r#"
kumo.on('smtp_server_auth_plain', function(authz, authc, password, meta)
  return authc == 'relay-user' and password == 'relay-secret'
end)"#,
    )
    .await;
    let dir = tempfile::tempdir().unwrap();
    let secret = dir.path().join("password");
    std::fs::write(&secret, "relay-secret\n").unwrap();
    let policy = format!(
        r#"
kumo.on('get_queue_config', function(domain, tenant, campaign, routing_domain)
  return kumo.make_queue_config {{
    retry_interval = '1s',
    protocol = {{ smtp = {{ mx_list = {{ '127.0.0.2:{port}' }} }} }},
  }}
end)
kumo.on('get_egress_path_config', function(routing_domain, source, site)
  return kumo.make_egress_path {{
    prohibited_hosts = {{}}, enable_tls = 'RequiredInsecure',
    smtp_auth_plain_username = 'relay-user',
    smtp_auth_plain_password = '{secret}',
    allow_smtp_auth_plain_without_valid_certificate = true,
  }}
end)
"#,
        port = rx.smtp_port,
        secret = secret.display()
    );
    let tx = sender(&policy).await;
    let sent = send(&tx, "someone@anywhere.test", 2).await;
    let records = tx
        .wait_for_records(WAIT, "2 Delivery records", |r| {
            records_of(r, "Delivery", &ids(&sent)).len() == 2
        })
        .await;
    for d in records_of(&records, "Delivery", &ids(&sent)) {
        assert_eq!(d["peer_address"]["addr"], "127.0.0.2", "{d}");
    }
    assert!(
        !tx.stderr().contains("relay-secret"),
        "the password must never reach the log"
    );
    assert_eq!(filed_at_least(&rx, "anywhere.test", 2).await.len(), 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postfix_takes_the_mail_over_starttls() {
    let port = common::free_port();
    let pf =
        common::postfix::Postfix::start(Ipv4Addr::new(127, 0, 0, 4), port, "postfix.test").await;
    let zone = "$ORIGIN postfix.test.
@ 300 IN MX 10 mx.postfix.test.
mx 300 IN A 127.0.0.4";
    let tx = sender(&sender_policy(zone, port, "", "")).await;
    let sent = send(&tx, "someone@postfix.test", 2).await;
    let records = tx
        .wait_for_records(WAIT, "2 Delivery records", |r| {
            records_of(r, "Delivery", &ids(&sent)).len() == 2
        })
        .await;
    for d in records_of(&records, "Delivery", &ids(&sent)) {
        assert_eq!(d["response"]["code"], 250, "{d}");
        assert_eq!(d["peer_address"]["name"], "mx.postfix.test", "{d}");
        assert!(
            d["tls_protocol_version"]
                .as_str()
                .is_some_and(|v| v.starts_with("TLS")),
            "{d}"
        );
        let subject = d["tls_peer_subject_name"].to_string();
        assert!(subject.contains("mx.postfix.test"), "{d}");
        let queued = d["response"]["content"].as_str().unwrap_or_default();
        assert!(queued.contains("queued as"), "Postfix's own 250: {d}");
    }
    let log = pf.log();
    assert!(
        log.contains("Anonymous TLS connection established")
            || log.contains("TLS connection established"),
        "Postfix saw no TLS connection:\n{log}"
    );
    assert_eq!(log.matches("to=<someone@postfix.test>").count(), 2, "{log}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_message_refused_once_with_451_is_delivered_on_retry() {
    let rx = sink(Ipv4Addr::new(127, 0, 0, 2), None, "").await;
    let tx = sender(&sender_policy(ONE_MX, rx.smtp_port, "", "")).await;
    let sent = send(&tx, "once@mx.test", 1).await;
    let records = tx
        .wait_for_records(WAIT, "a Delivery", |r| {
            records_of(r, "Delivery", &ids(&sent)).len() == 1
        })
        .await;
    let t = records_of(&records, "TransientFailure", &ids(&sent));
    assert_eq!(t.len(), 1, "one refused attempt before the delivery");
    assert_eq!(t[0]["response"]["code"], 451, "{}", t[0]);
    assert_eq!(filed_at_least(&rx, "mx.test", 1).await.len(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_receiver_killed_during_data_gets_the_message_on_a_later_attempt() {
    let mut rx = sink(Ipv4Addr::new(127, 0, 0, 2), None, "").await;
    std::fs::write(rx.dir().join("slow"), b"").unwrap();
    let tx = sender(&sender_policy(ONE_MX, rx.smtp_port, "", "")).await;
    let sent = send(&tx, "user@mx.test", 1).await;
    // Long enough for the content to be sent and the receiver to sit in its handler.
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert!(
        records_of(&tx.log_records(), "Delivery", &ids(&sent)).is_empty(),
        "no Delivery before the receiver answered"
    );
    rx.kill9();
    std::fs::remove_file(rx.dir().join("slow")).unwrap();
    rx.restart().await;
    let records = tx
        .wait_for_records(WAIT, "a Delivery after the restart", |r| {
            records_of(r, "Delivery", &ids(&sent)).len() == 1
        })
        .await;
    assert!(
        !records_of(&records, "TransientFailure", &ids(&sent)).is_empty(),
        "the broken attempt is a TransientFailure"
    );
    let copies = filed_at_least(&rx, "mx.test", 1).await.len();
    // A second copy would come as late as the first: give it the time.
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert_eq!(
        copies.max(filed(&rx, "mx.test").len()),
        1,
        "exactly one copy arrived"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connection_limit_caps_the_connections_the_receiver_sees() {
    let rx = sink(Ipv4Addr::new(127, 0, 0, 2), None, "").await;
    let tx = sender(&sender_policy(
        ONE_MX,
        rx.smtp_port,
        "connection_limit = 2,",
        "",
    ))
    .await;
    let sent = smtp::send_messages(tx.smtp_addr(), "user@mx.test", &unique("limit"), 60, 6).await;
    tx.wait_for_records(WAIT, "60 Delivery records", |r| {
        records_of(r, "Delivery", &ids(&sent)).len() == 60
    })
    .await;
    // Each connection the receiver accepted is one SMTP session. The mail
    // arrives within the 5 s idle timeout, so the two connections allowed
    // carry all of it.
    let sessions: HashSet<String> = rx
        .log_records()
        .iter()
        .filter(|r| r["type"] == "Reception")
        .filter_map(|r| r["session_id"].as_str().map(String::from))
        .collect();
    assert!(
        (1..=2).contains(&sessions.len()),
        "{} connections reached the receiver with connection_limit 2",
        sessions.len()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_9_during_egress_loses_no_acknowledged_message() {
    let rx = sink(Ipv4Addr::new(127, 0, 0, 2), None, "").await;
    let mut tx = sender(&sender_policy(ONE_MX, rx.smtp_port, "", "")).await;
    let mut sent = Vec::new();
    for round in 0..3 {
        sent.extend(
            smtp::send_messages(tx.smtp_addr(), "user@mx.test", &unique("crash"), 40, 4).await,
        );
        // Kill while the last ones are still on their way out.
        tokio::time::sleep(Duration::from_millis(50 * round)).await;
        tx.kill9();
        tx.restart().await;
    }
    let deadline = std::time::Instant::now() + WAIT;
    loop {
        let got: HashSet<Vec<u8>> = filed(&rx, "mx.test").into_iter().collect();
        let missing = sent
            .iter()
            .filter(|s| !got.contains(s.data.as_slice()))
            .count();
        if missing == 0 {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "{missing} of {} acknowledged messages never reached the receiver; sender stderr:\n{}",
            sent.len(),
            tx.stderr_tail()
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn smtp_client_rewrite_delivery_status_turns_a_451_into_a_bounce() {
    let rx = sink(Ipv4Addr::new(127, 0, 0, 2), None, "").await;
    let policy = sender_policy(ONE_MX, rx.smtp_port, "", "")
        + r#"
kumo.on('smtp_client_rewrite_delivery_status', function(response, domain, tenant, campaign, routing_domain)
  if domain == 'mx.test' and response:find('try again later') then return 550 end
end)
"#;
    let tx = sender(&policy).await;
    let sent = send(&tx, "tempfail@mx.test", 1).await;
    let records = tx
        .wait_for_records(WAIT, "a Bounce", |r| {
            records_of(r, "Bounce", &ids(&sent)).len() == 1
        })
        .await;
    let b = records_of(&records, "Bounce", &ids(&sent))[0];
    assert_eq!(b["response"]["code"], 550, "{b}");
    let content = b["response"]["content"].as_str().unwrap_or_default();
    assert!(content.contains("rewritten from 451"), "{b}");
    assert!(records_of(&records, "TransientFailure", &ids(&sent)).is_empty());
}

/// What each `enable_tls` mode does against a receiver offering STARTTLS with a certificate
/// no one trusts (Hermod's self-signed one), and against one offering no STARTTLS.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_enable_tls_mode_against_receivers_with_and_without_starttls() {
    let no_tls = r#"
kumo.on('smtp_server_ehlo', function(domain, meta, extensions)
  local out = {}
  for _, e in ipairs(extensions) do if e ~= 'STARTTLS' then table.insert(out, e) end end
  return out
end)"#;
    let with = sink(Ipv4Addr::new(127, 0, 0, 2), None, "").await;
    let without = sink(Ipv4Addr::new(127, 0, 0, 2), None, no_tls).await;
    // (mode, outcome with STARTTLS, outcome without): Some(true) delivered over TLS,
    // Some(false) delivered in plain text, None retried.
    let cases = [
        ("Opportunistic", None, Some(false)),
        ("OpportunisticInsecure", Some(true), Some(false)),
        ("Required", None, None),
        ("RequiredInsecure", Some(true), None),
        ("Disabled", Some(false), Some(false)),
    ];
    for (mode, with_tls, without_tls) in cases {
        for (rx, want, label) in [
            (&with, with_tls, "STARTTLS"),
            (&without, without_tls, "no STARTTLS"),
        ] {
            let policy = sender_policy(ONE_MX, rx.smtp_port, "", "").replace(
                "enable_tls = 'OpportunisticInsecure'",
                &format!("enable_tls = '{mode}'"),
            );
            let tx = sender(&policy).await;
            let sent = send(&tx, "user@mx.test", 1).await;
            let records = tx
                .wait_for_records(WAIT, "an attempt", |r| {
                    !records_of(r, "Delivery", &ids(&sent)).is_empty()
                        || !records_of(r, "TransientFailure", &ids(&sent)).is_empty()
                })
                .await;
            let delivered = records_of(&records, "Delivery", &ids(&sent));
            match want {
                None => assert!(
                    delivered.is_empty(),
                    "{mode} against a receiver with {label} must not deliver: {delivered:?}"
                ),
                Some(tls) => {
                    assert_eq!(delivered.len(), 1, "{mode} against {label} must deliver");
                    assert_eq!(
                        delivered[0]["tls_cipher"].is_string(),
                        tls,
                        "{mode} against {label}: {}",
                        delivered[0]
                    );
                }
            }
        }
    }
}
