//! DATA handling: message construction, trace headers, limits, line
//! endings, policy events and acceptor outcomes.

mod common;

use base64::Engine as _;
use common::*;
use hermod_smtp::InvalidLineEndings;

#[tokio::test]
async fn accepted_transaction_yields_one_message_per_recipient_with_trace_headers() {
    let srv = start(config()).await;
    let mut c = Client::greeted(srv.addr).await;
    c.cmd("EHLO client.example", 250).await;
    let (code, text) = c
        .transaction(
            "a@example.com",
            &["b@example.com", "c@example.com"],
            "Subject: hi\r\n\r\nbody\r\n",
        )
        .await;
    assert_eq!(code, 250, "{text}");
    let msgs = srv.acceptor.messages();
    assert_eq!(msgs.len(), 2);
    assert_eq!(text, format!("OK ids={} {}", msgs[0].id(), msgs[1].id()));
    let data = srv.acceptor.data(0);
    assert!(data.starts_with("X-KumoRef: "), "{data}");
    let received = format!(
        "Received: from client.example (127.0.0.1)\r\n  by mx.test (Hermod 127.0.0.1)\r\n  with ESMTP\r\n  id {}\r\n  for <b@example.com>;\r\n  ",
        msgs[0].id()
    );
    assert!(data.contains(&received), "{data}");
    assert!(data.ends_with("Subject: hi\r\n\r\nbody\r\n"), "{data}");
    let kumo_ref = msgs[0]
        .get_first_named_header_value("X-KumoRef")
        .unwrap()
        .unwrap();
    let b64: String = kumo_ref.split_whitespace().collect();
    let json = base64::engine::general_purpose::STANDARD
        .decode(b64)
        .unwrap();
    assert_eq!(json, br#"{"_@_":"\\_/","recipient":"b@example.com"}"#);

    let m = &msgs[1];
    assert_eq!(m.sender().email(), "a@example.com");
    assert_eq!(m.recipients()[0].email(), "c@example.com");
    assert_eq!(m.get_meta("reception_protocol").unwrap(), "ESMTP");
    assert_eq!(m.get_meta("hostname").unwrap(), "mx.test");
    assert_eq!(m.get_meta("ehlo_domain").unwrap(), "client.example");
    assert_eq!(m.get_meta("received_via").unwrap(), srv.addr.to_string());
    assert!(m
        .get_meta("received_from")
        .unwrap()
        .as_str()
        .unwrap()
        .starts_with("127.0.0.1:"));
    // Set by the mail_from handler on conn_meta, and by message_received.
    assert_eq!(m.get_meta("x_sender_seen").unwrap(), "a@example.com");
    assert_eq!(m.get_meta("x_checked").unwrap(), "client.example");

    let info = srv.acceptor.received.lock()[0].1.clone();
    assert_eq!(info.protocol, hermod_message::Protocol::Esmtp);
    assert_eq!(info.peer_name, "client.example");
    assert_eq!(info.peer_addr, "127.0.0.1");
    assert!(uuid::Uuid::parse_str(info.session_id.as_deref().unwrap()).is_ok());
    assert!(info.tls_cipher.is_none());
}

#[tokio::test]
async fn trace_headers_can_be_disabled() {
    let mut cfg = config();
    cfg.trace_headers.received_header = false;
    cfg.trace_headers.supplemental_header = false;
    let srv = start(cfg).await;
    let mut c = Client::greeted(srv.addr).await;
    c.cmd("EHLO c", 250).await;
    let (code, _) = c
        .transaction(
            "a@example.com",
            &["b@example.com"],
            "Subject: x\r\n\r\nb\r\n",
        )
        .await;
    assert_eq!(code, 250);
    assert_eq!(srv.acceptor.data(0), "Subject: x\r\n\r\nb\r\n");
}

#[tokio::test]
async fn dot_stuffed_lines_are_unstuffed() {
    let mut cfg = config();
    cfg.trace_headers.received_header = false;
    cfg.trace_headers.supplemental_header = false;
    let srv = start(cfg).await;
    let mut c = Client::greeted(srv.addr).await;
    c.cmd("EHLO c", 250).await;
    let (code, _) = c
        .transaction(
            "a@example.com",
            &["b@example.com"],
            "Subject: x\r\n\r\n..line\r\n...\r\n",
        )
        .await;
    assert_eq!(code, 250);
    assert_eq!(srv.acceptor.data(0), "Subject: x\r\n\r\n.line\r\n..\r\n");
}

#[tokio::test]
async fn utf8_and_8bit_content_and_addresses_are_accepted() {
    let srv = start(config()).await;
    let mut c = Client::greeted(srv.addr).await;
    c.cmd("EHLO c", 250).await;
    c.cmd(
        "MAIL FROM:<jöran@bücher.example> SMTPUTF8 BODY=8BITMIME",
        250,
    )
    .await;
    c.cmd("RCPT TO:<пользователь@пример.рф>", 250).await;
    c.cmd("DATA", 354).await;
    c.send_bytes(b"Subject: caf\xc3\xa9\r\n\r\n\xe9\xff raw 8-bit\r\n.\r\n")
        .await;
    c.expect(250).await;
    let m = &srv.acceptor.messages()[0];
    assert_eq!(m.sender().domain(), "bücher.example");
    assert_eq!(m.recipients()[0].email(), "пользователь@пример.рф");
    assert!(m.data().unwrap().ends_with(b"\r\n\xe9\xff raw 8-bit\r\n"));
}

#[tokio::test]
async fn oversized_message_gets_552_5_3_4_and_session_stays_usable() {
    let mut cfg = config();
    cfg.max_message_size = 1000;
    let srv = start(cfg).await;
    let mut c = Client::greeted(srv.addr).await;
    c.send("EHLO c\r\n").await;
    let (_, lines) = c.reply().await;
    assert!(lines.iter().any(|l| l == "SIZE 1000"), "{lines:?}");
    assert!(c
        .cmd("MAIL FROM:<a@example.com> SIZE=5000", 552)
        .await
        .starts_with("5.3.4"));
    let big = "0123456789".repeat(10) + "\r\n";
    let (code, text) = c
        .transaction("a@example.com", &["b@example.com"], &big.repeat(50))
        .await;
    assert_eq!(code, 552, "{text}");
    assert!(text.starts_with("5.3.4"));
    assert!(srv.acceptor.messages().is_empty());
    let (code, text) = c
        .transaction(
            "a@example.com",
            &["b@example.com"],
            "Subject: small\r\n\r\nok\r\n",
        )
        .await;
    assert_eq!(code, 250, "{text}");
    assert_eq!(srv.acceptor.messages().len(), 1);
}

async fn send_bare_lf(mode: InvalidLineEndings) -> (u16, String, Option<String>) {
    let mut cfg = config();
    cfg.invalid_line_endings = mode;
    cfg.trace_headers.received_header = false;
    cfg.trace_headers.supplemental_header = false;
    let srv = start(cfg).await;
    let mut c = Client::greeted(srv.addr).await;
    c.cmd("EHLO c", 250).await;
    let (code, text) = c
        .transaction(
            "a@example.com",
            &["b@example.com"],
            "Subject: x\nA: b\r\n\r\nline\nend\r\n",
        )
        .await;
    c.cmd("NOOP", 250).await;
    let data = srv
        .acceptor
        .messages()
        .first()
        .map(|_| srv.acceptor.data(0));
    (code, text, data)
}

#[tokio::test]
async fn bare_lf_is_rejected_under_deny() {
    let (code, text, data) = send_bare_lf(InvalidLineEndings::Deny).await;
    assert_eq!(code, 552);
    assert!(text.starts_with("5.6.0"), "{text}");
    assert!(data.is_none());
}

#[tokio::test]
async fn bare_lf_is_kept_under_allow() {
    let (code, _, data) = send_bare_lf(InvalidLineEndings::Allow).await;
    assert_eq!(code, 250);
    assert_eq!(data.unwrap(), "Subject: x\nA: b\r\n\r\nline\nend\r\n");
}

#[tokio::test]
async fn bare_lf_is_rewritten_to_crlf_under_fix() {
    let (code, _, data) = send_bare_lf(InvalidLineEndings::Fix).await;
    assert_eq!(code, 250);
    assert_eq!(data.unwrap(), "Subject: x\r\nA: b\r\n\r\nline\r\nend\r\n");
}

#[tokio::test]
async fn lua_error_in_message_received_gives_421_4_3_0_and_disconnects() {
    let srv = start(config()).await;
    let mut c = Client::greeted(srv.addr).await;
    c.cmd("EHLO c", 250).await;
    let (code, text) = c
        .transaction(
            "a@example.com",
            &["b@example.com"],
            "Subject: lua-error\r\n\r\nx\r\n",
        )
        .await;
    assert_eq!(
        (code, text.as_str()),
        (421, "4.3.0 mx.test technical difficulties")
    );
    assert!(c.closed().await);
    assert!(srv.acceptor.messages().is_empty());
}

#[tokio::test]
async fn kumo_reject_in_message_received_rejects_the_whole_transaction() {
    let srv = start(config()).await;
    let mut c = Client::greeted(srv.addr).await;
    c.cmd("EHLO c", 250).await;
    let (code, text) = c
        .transaction(
            "a@example.com",
            &["b@example.com", "c@example.com"],
            "Subject: reject\r\n\r\nx\r\n",
        )
        .await;
    assert_eq!((code, text.as_str()), (550, "no"));
    assert!(srv.acceptor.messages().is_empty());
    // The session carries on with a fresh transaction.
    let (code, _) = c
        .transaction(
            "a@example.com",
            &["b@example.com"],
            "Subject: fine\r\n\r\nx\r\n",
        )
        .await;
    assert_eq!(code, 250);
}

#[tokio::test]
async fn acceptor_failures_map_to_partial_451_and_421() {
    let srv = start(config()).await;
    let mut c = Client::greeted(srv.addr).await;
    c.cmd("EHLO c", 250).await;
    *srv.acceptor.mode.lock() = Mode::Partial;
    let (code, text) = c
        .transaction(
            "a@example.com",
            &["b@example.com", "c@example.com"],
            "Subject: x\r\n\r\nx\r\n",
        )
        .await;
    let kept = srv.acceptor.messages();
    assert_eq!((code, text), (250, format!("PARTIAL ids={}", kept[0].id())));
    *srv.acceptor.mode.lock() = Mode::SpoolFails;
    let (code, text) = c
        .transaction(
            "a@example.com",
            &["b@example.com"],
            "Subject: x\r\n\r\nx\r\n",
        )
        .await;
    assert_eq!((code, text.as_str()), (451, "4.3.0 disk full"));
    *srv.acceptor.mode.lock() = Mode::Unavailable;
    let (code, text) = c
        .transaction(
            "a@example.com",
            &["b@example.com"],
            "Subject: x\r\n\r\nx\r\n",
        )
        .await;
    assert_eq!(code, 421);
    assert!(text.starts_with("4.3.2 mx.test"), "{text}");
    assert!(c.closed().await);
}

#[tokio::test]
async fn over_long_data_line_gets_500_5_2_3() {
    let mut cfg = config();
    cfg.line_length_hard_limit = 100;
    let srv = start(cfg).await;
    let mut c = Client::greeted(srv.addr).await;
    c.cmd("EHLO c", 250).await;
    let body = format!("Subject: x\r\n\r\n{}\r\n", "y".repeat(300));
    let (code, text) = c
        .transaction("a@example.com", &["b@example.com"], &body)
        .await;
    assert_eq!(code, 500);
    assert!(text.starts_with("5.2.3"));
    c.cmd("NOOP", 250).await;
}

#[tokio::test]
async fn post_data_processing_over_budget_gets_451_4_4_5() {
    let policy = r#"
local kumo = require 'kumo'
kumo.on('smtp_server_message_received', function(msg, conn_meta)
  if msg:get_first_named_header_value('Subject') == 'slow' then kumo.sleep(5) end
end)
"#;
    let mut cfg = config();
    cfg.data_processing_timeout = std::time::Duration::from_millis(200);
    let srv = start_with(cfg, policy).await;
    let mut c = Client::greeted(srv.addr).await;
    c.cmd("EHLO c", 250).await;
    let (code, text) = c
        .transaction(
            "a@example.com",
            &["b@example.com"],
            "Subject: slow\r\n\r\nx\r\n",
        )
        .await;
    assert_eq!(code, 451, "{text}");
    assert!(text.starts_with("4.4.5"), "{text}");
    assert!(srv.acceptor.messages().is_empty());
    // The context the slow call was using is usable again afterwards.
    let (code, _) = c
        .transaction(
            "a@example.com",
            &["b@example.com"],
            "Subject: quick\r\n\r\nx\r\n",
        )
        .await;
    assert_eq!(code, 250);
}
