//! Command-level behaviour of the ESMTP listener over real TCP.

mod common;

use std::time::Duration;

use common::*;
use tokio::io::AsyncReadExt;
use tokio::net::TcpSocket;

#[tokio::test]
async fn banner_ehlo_and_helo_use_the_configured_hostname() {
    let srv = start(config()).await;
    let mut c = Client::connect(srv.addr).await;
    assert_eq!(c.expect(220).await, "mx.test Hermod");
    c.send("EHLO client.example\r\n").await;
    let (code, lines) = c.reply().await;
    assert_eq!(code, 250);
    assert_eq!(lines[0], "mx.test Aloha client.example");
    for ext in [
        "PIPELINING",
        "ENHANCEDSTATUSCODES",
        "8BITMIME",
        "SMTPUTF8",
        "SIZE 20971520",
        "STARTTLS",
    ] {
        assert!(
            lines.iter().any(|l| l == ext),
            "{ext} missing from {lines:?}"
        );
    }
    assert_eq!(
        c.cmd("HELO other.example", 250).await,
        "Hello other.example!"
    );
    c.cmd("RSET", 250).await;
    c.cmd("NOOP", 250).await;
    c.cmd("QUIT", 221).await;
}

#[tokio::test]
async fn ehlo_handler_can_replace_the_extension_list() {
    let srv = start(config()).await;
    let mut c = Client::greeted(srv.addr).await;
    c.send("EHLO short.example\r\n").await;
    let (_, lines) = c.reply().await;
    assert_eq!(
        lines,
        vec!["mx.test Aloha short.example", "PIPELINING", "X-SHORT"]
    );
}

#[tokio::test]
async fn out_of_sequence_commands_get_503() {
    let srv = start(config()).await;
    let mut c = Client::greeted(srv.addr).await;
    assert!(c
        .cmd("MAIL FROM:<a@example.com>", 503)
        .await
        .starts_with("5.5.1"));
    c.cmd("EHLO c", 250).await;
    assert!(c
        .cmd("RCPT TO:<b@example.com>", 503)
        .await
        .starts_with("5.5.0"));
    assert!(c.cmd("DATA", 503).await.starts_with("5.5.0"));
    c.cmd("MAIL FROM:<a@example.com>", 250).await;
    assert!(c
        .cmd("MAIL FROM:<a@example.com>", 503)
        .await
        .starts_with("5.5.0"));
    assert!(c.cmd("DATA", 503).await.starts_with("5.5.0"));
}

#[tokio::test]
async fn malformed_addresses_get_specific_501s() {
    let srv = start(config()).await;
    let mut c = Client::greeted(srv.addr).await;
    c.cmd("EHLO c", 250).await;
    assert!(c
        .cmd("MAIL FROM:<no-domain>", 501)
        .await
        .starts_with("5.1.7"));
    c.cmd("MAIL FROM:<a@example.com>", 250).await;
    assert!(c.cmd("RCPT TO:<no-domain>", 501).await.starts_with("5.1.3"));
    assert!(c
        .cmd("RCPT TO:<a@bad..domain>", 501)
        .await
        .starts_with("5.1.3"));
    c.cmd("MAIL FROM <a@example.com>", 501).await;
}

#[tokio::test]
async fn nul_bytes_and_invalid_utf8_get_501_5_5_2() {
    let srv = start(config()).await;
    let mut c = Client::greeted(srv.addr).await;
    c.send_bytes(b"NOOP\0\r\n").await;
    assert!(c.expect(501).await.starts_with("5.5.2"));
    c.send_bytes(b"EHLO \xff\xfe\r\n").await;
    assert!(c.expect(501).await.starts_with("5.5.2"));
    c.cmd("NOOP", 250).await;
}

#[tokio::test]
async fn vrfy_expn_help_and_unknown_verbs_get_502_5_5_1() {
    let srv = start(config()).await;
    let mut c = Client::greeted(srv.addr).await;
    for cmd in ["VRFY postmaster", "EXPN staff", "HELP", "LHLO x", "XYZZY"] {
        assert!(c.cmd(cmd, 502).await.starts_with("5.5.1"), "{cmd}");
    }
}

#[tokio::test]
async fn over_long_command_line_gets_500_5_2_3_and_session_continues() {
    let mut cfg = config();
    cfg.line_length_hard_limit = 100;
    let srv = start(cfg).await;
    let mut c = Client::greeted(srv.addr).await;
    c.send(&format!("EHLO {}\r\n", "x".repeat(5000))).await;
    assert!(c.expect(500).await.starts_with("5.2.3"));
    c.cmd("EHLO c", 250).await;
}

#[tokio::test]
async fn relay_is_denied_for_a_peer_outside_relay_hosts() {
    let mut cfg = config();
    cfg.relay_hosts = vec!["127.0.0.1/32".parse().unwrap()];
    let srv = start(cfg).await;
    let sock = TcpSocket::new_v4().unwrap();
    sock.bind("127.0.0.2:0".parse().unwrap()).unwrap();
    let stream = sock.connect(srv.addr).await.unwrap();
    let mut c = Client::new(stream);
    c.expect(220).await;
    c.cmd("EHLO c", 250).await;
    c.cmd("MAIL FROM:<a@example.com>", 250).await;
    assert_eq!(
        c.cmd("RCPT TO:<b@example.com>", 550).await,
        "5.7.1 relaying not permitted for 127.0.0.2"
    );
    // The loopback peer in relay_hosts may relay.
    let mut ok = Client::greeted(srv.addr).await;
    ok.cmd("EHLO c", 250).await;
    ok.cmd("MAIL FROM:<a@example.com>", 250).await;
    ok.cmd("RCPT TO:<b@example.com>", 250).await;
}

#[tokio::test]
async fn too_many_recipients_get_452_4_5_3() {
    let mut cfg = config();
    cfg.max_recipients_per_message = 2;
    let srv = start(cfg).await;
    let mut c = Client::greeted(srv.addr).await;
    c.cmd("EHLO c", 250).await;
    c.cmd("MAIL FROM:<a@example.com>", 250).await;
    c.cmd("RCPT TO:<b1@example.com>", 250).await;
    c.cmd("RCPT TO:<b2@example.com>", 250).await;
    assert!(c
        .cmd("RCPT TO:<b3@example.com>", 452)
        .await
        .starts_with("4.5.3"));
}

#[tokio::test]
async fn message_limit_per_connection_counts_recipients_across_the_session() {
    let mut cfg = config();
    cfg.max_messages_per_connection = 2;
    let srv = start(cfg).await;
    let mut c = Client::greeted(srv.addr).await;
    c.cmd("EHLO c", 250).await;
    c.cmd("MAIL FROM:<a@example.com>", 250).await;
    c.cmd("RCPT TO:<b1@example.com>", 250).await;
    c.cmd("RCPT TO:<b2@example.com>", 250).await;
    assert!(c
        .cmd("RCPT TO:<b3@example.com>", 452)
        .await
        .starts_with("4.5.3"));
    c.cmd("RSET", 250).await;
    c.cmd("MAIL FROM:<a@example.com>", 250).await;
    assert!(c
        .cmd("RCPT TO:<b4@example.com>", 421)
        .await
        .starts_with("4.5.3"));
    assert!(c.closed().await);
}

#[tokio::test]
async fn idle_client_gets_421_4_3_2_and_is_disconnected() {
    let mut cfg = config();
    cfg.client_timeout = Duration::from_millis(300);
    let srv = start(cfg).await;
    let mut c = Client::greeted(srv.addr).await;
    assert!(c.expect(421).await.starts_with("4.3.2 mx.test"));
    assert!(c.closed().await);
}

#[tokio::test]
async fn sessions_over_max_connections_get_421_too_many_concurrent_sessions() {
    let mut cfg = config();
    cfg.max_connections = 1;
    let srv = start(cfg).await;
    let mut first = Client::greeted(srv.addr).await;
    let mut second = Client::connect(srv.addr).await;
    let text = second.expect(421).await;
    assert!(
        text.starts_with("4.3.2") && text.contains("too many concurrent sessions"),
        "{text}"
    );
    assert!(second.closed().await);
    first.cmd("QUIT", 221).await;
    assert!(first.closed().await);
    // The slot is free again once the first session has ended.
    let mut third = None;
    for _ in 0..50 {
        let mut c = Client::connect(srv.addr).await;
        if c.reply().await.0 == 220 {
            third = Some(c);
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(third.is_some(), "no session slot freed after QUIT");
}

#[tokio::test]
async fn spool_not_started_gets_421_waiting_for_spool_startup() {
    let srv = start(config()).await;
    srv.acceptor
        .accepting
        .store(false, std::sync::atomic::Ordering::SeqCst);
    let mut c = Client::connect(srv.addr).await;
    assert_eq!(
        c.expect(421).await,
        "4.3.2 mx.test waiting for spool startup"
    );
    assert!(c.closed().await);
}

#[tokio::test]
async fn nothing_is_processed_after_quit() {
    let srv = start(config()).await;
    let mut c = Client::greeted(srv.addr).await;
    c.send("QUIT\r\nNOOP\r\nEHLO c\r\n").await;
    c.expect(221).await;
    assert!(c.closed().await);
}

#[tokio::test]
async fn shutdown_tells_idle_sessions_and_join_completes() {
    let mut srv = start(config()).await;
    let mut c = Client::greeted(srv.addr).await;
    c.cmd("EHLO c", 250).await;
    srv.shutdown.cancel();
    assert_eq!(c.expect(421).await, "4.3.2 mx.test shutting down");
    assert!(c.closed().await);
    let handle = srv.handle.take().unwrap();
    tokio::time::timeout(STEP, handle.join()).await.unwrap();
    assert!(tokio::net::TcpStream::connect(srv.addr).await.is_err());
}

#[tokio::test]
async fn mail_from_reject_is_relayed_and_421_reject_disconnects() {
    let srv = start(config()).await;
    let mut c = Client::greeted(srv.addr).await;
    c.cmd("EHLO c", 250).await;
    assert_eq!(
        c.cmd("MAIL FROM:<x@blocked.example>", 550).await,
        "5.7.1 sender blocked"
    );
    c.cmd("MAIL FROM:<x@ok.example>", 250).await;
    assert_eq!(
        c.cmd("RCPT TO:<bye@example.com>", 421).await,
        "4.7.0 go away"
    );
    assert!(c.closed().await);
}

#[tokio::test]
async fn connection_accepted_reject_is_sent_instead_of_the_banner() {
    let policy = r#"
local kumo = require 'kumo'
kumo.on('smtp_server_connection_accepted', function(conn_meta)
  if conn_meta:get_meta('reception_protocol') == 'ESMTP' then kumo.reject(554, '5.7.1 go away') end
end)
"#;
    let srv = start_with(config(), policy).await;
    let mut c = Client::connect(srv.addr).await;
    assert_eq!(c.expect(554).await, "5.7.1 go away");
    assert!(c.closed().await);
}

#[tokio::test]
async fn pipelined_transaction_in_one_write_gets_every_reply_in_one_write() {
    let srv = start(config()).await;
    let mut c = Client::greeted(srv.addr).await;
    c.send("EHLO c\r\nMAIL FROM:<a@example.com>\r\nRCPT TO:<b@example.com>\r\nRCPT TO:<c@example.com>\r\nDATA\r\n")
        .await;
    tokio::time::sleep(Duration::from_millis(200)).await;
    let mut buf = vec![0u8; 64 * 1024];
    let n = c.io.get_mut().read(&mut buf).await.unwrap();
    let text = String::from_utf8_lossy(&buf[..n]).into_owned();
    let codes: Vec<&str> = text
        .split("\r\n")
        .filter(|l| l.len() >= 4 && &l[3..4] == " ")
        .map(|l| &l[..3])
        .collect();
    assert_eq!(codes, vec!["250", "250", "250", "250", "354"], "{text}");
    c.send("Subject: pipelined\r\n\r\nhi\r\n.\r\nQUIT\r\n")
        .await;
    assert!(c.expect(250).await.starts_with("OK ids="));
    c.expect(221).await;
    assert_eq!(srv.acceptor.messages().len(), 2);
}

/// `(code, command, sender, recipients)` of a reported rejection.
type Seen = (u16, Option<String>, Option<String>, Vec<String>);

fn rejections(srv: &Server) -> Vec<Seen> {
    srv.acceptor
        .rejections
        .lock()
        .iter()
        .map(|r| {
            (
                r.code,
                r.command.clone(),
                r.sender.clone(),
                r.recipients.clone(),
            )
        })
        .collect()
}

#[tokio::test]
async fn refused_commands_are_reported_as_rejections_with_their_command_and_envelope() {
    let srv = start(config()).await;
    let mut c = Client::greeted(srv.addr).await;
    c.cmd("MAIL FROM:<early@example.com>", 503).await;
    c.cmd("EHLO c", 250).await;
    c.cmd("MAIL FROM:<x@blocked.example>", 550).await;
    c.cmd("MAIL FROM:<a@example.com>", 250).await;
    c.cmd("RCPT TO:<b@example.com>", 250).await;
    c.cmd("DATA", 354).await;
    c.send("Subject: reject\r\n\r\nbody\r\n.\r\n").await;
    c.expect(550).await;
    c.cmd("QUIT", 221).await;
    drop(c);

    let got = rejections(&srv);
    assert_eq!(
        got,
        vec![
            (
                503,
                Some("MAIL FROM:<early@example.com>".into()),
                None,
                vec![]
            ),
            (
                550,
                Some("MAIL FROM:<x@blocked.example>".into()),
                None,
                vec![]
            ),
            (
                550,
                Some("DATA".into()),
                Some("a@example.com".into()),
                vec!["b@example.com".into()]
            ),
        ]
    );
    let r = &srv.acceptor.rejections.lock()[1];
    assert_eq!(r.text, "5.7.1 sender blocked");
    assert_eq!(r.peer.peer_name, "c");
    assert_eq!(r.peer.peer_addr, "127.0.0.1");
}

#[tokio::test]
async fn a_refused_recipient_is_the_rejection_recipient_and_shutdown_421_is_not_a_rejection() {
    let mut cfg = config();
    cfg.max_recipients_per_message = 1;
    let srv = start(cfg).await;
    let mut c = Client::greeted(srv.addr).await;
    c.cmd("EHLO c", 250).await;
    c.cmd("MAIL FROM:<a@example.com>", 250).await;
    c.cmd("RCPT TO:<b1@example.com>", 250).await;
    c.cmd("RCPT TO:<b2@example.com>", 452).await;
    srv.shutdown.cancel();
    c.expect(421).await;
    let got = rejections(&srv);
    assert_eq!(
        got,
        vec![(
            452,
            Some("RCPT TO:<b2@example.com>".into()),
            Some("a@example.com".into()),
            vec!["b2@example.com".into()]
        )]
    );
}
