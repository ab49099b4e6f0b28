//! Exactly what goes on the wire, checked by scripted peers on real sockets:
//! pipelining, RSET between transactions, MAIL FROM parameters, the
//! content's bytes, AUTH PLAIN, the source address.

mod common;

use std::time::Duration;

use common::*;
use hermod_smtp_client::{connect, AuthPlain, ErrorKind, Needs, Stage, Step};

async fn send(c: &mut hermod_smtp_client::Client) -> hermod_smtp_client::TransactionResult {
    c.send_message("a@client.test", &["b@x.test"], b"hi\r\n", Needs::default())
        .await
        .unwrap()
}

/// Answers one transaction in turn: each command waits for its reply.
async fn answer_transaction(p: &mut Peer, rcpts: usize) -> Vec<u8> {
    p.expect("MAIL FROM").await;
    p.send("250 2.1.0 ok\r\n").await;
    for _ in 0..rcpts {
        p.expect("RCPT TO").await;
        p.send("250 2.1.5 ok\r\n").await;
    }
    p.expect("DATA").await;
    p.send("354 go ahead\r\n").await;
    let content = p.content().await;
    p.send("250 2.0.0 queued as 1\r\n").await;
    content
}

#[tokio::test]
async fn with_pipelining_the_envelope_goes_out_before_any_reply() {
    let peer = Scripted::start(|mut p| async move {
        p.greet(&["PIPELINING"]).await;
        // No reply until MAIL, both RCPTs and DATA have arrived: a client
        // waiting for replies in between would time out here.
        for prefix in ["MAIL FROM", "RCPT TO", "RCPT TO", "DATA"] {
            p.expect(prefix).await;
        }
        p.send("250 ok\r\n250 ok\r\n550-5.1.1 no such\r\n550 5.1.1 user\r\n354 go\r\n")
            .await;
        p.content().await;
        p.send("250 2.0.0 done\r\n").await;
        p.seen
    })
    .await;
    let mut client = connect(peer.addr, "pipe.test", &config()).await.unwrap();
    let result = client
        .send_message(
            "a@client.test",
            &["b@x.test", "c@x.test"],
            b"hi\r\n",
            Needs::default(),
        )
        .await
        .unwrap();
    assert!(result.is_delivered());
    assert_eq!(result.rcpt_responses.len(), 2);
    let refused = result.recipient_response(1);
    assert_eq!(refused.code, 550);
    assert_eq!(refused.content, "no such\nuser");
    assert_eq!(refused.command.as_deref(), Some("RCPT TO:<c@x.test>"));
    assert_eq!(result.recipient_response(0).content, "done");
    assert_eq!(result.response.command.as_deref(), Some("."));
    peer.finish().await;
}

#[tokio::test]
async fn without_pipelining_each_command_waits_for_its_reply() {
    let peer = Scripted::start(|mut p| async move {
        p.greet(&[]).await;
        p.expect("MAIL FROM").await;
        // Nothing more may arrive before this reply.
        let early = tokio::time::timeout(Duration::from_millis(200), p.line()).await;
        assert!(
            early.is_err(),
            "client sent {early:?} before the MAIL reply"
        );
        p.send("250 ok\r\n").await;
        p.expect("RCPT TO").await;
        p.send("250 ok\r\n").await;
        p.expect("DATA").await;
        p.send("354 go\r\n").await;
        p.content().await;
        p.send("250 done\r\n").await;
    })
    .await;
    let mut client = connect(peer.addr, "turns.test", &config()).await.unwrap();
    let result = client
        .send_message("a@client.test", &["b@x.test"], b"hi\r\n", Needs::default())
        .await
        .unwrap();
    assert!(result.is_delivered());
    peer.finish().await;
}

#[tokio::test]
async fn when_pipelining_data_is_accepted_after_every_recipient_was_refused_an_empty_message_ends_it(
) {
    let peer = Scripted::start(|mut p| async move {
        p.greet(&["PIPELINING"]).await;
        for prefix in ["MAIL FROM", "RCPT TO", "DATA"] {
            p.expect(prefix).await;
        }
        p.send("250 ok\r\n550 5.1.1 nobody\r\n354 go\r\n").await;
        // RFC 2920 §3.1: the client sends just the dot.
        assert_eq!(p.content().await, b".\r\n");
        p.send("554 5.5.1 no valid recipients\r\n").await;
        p.expect("QUIT").await;
        p.send("221 bye\r\n").await;
    })
    .await;
    let mut client = connect(peer.addr, "rfc2920.test", &config()).await.unwrap();
    let result = client
        .send_message("a@client.test", &["b@x.test"], b"hi\r\n", Needs::default())
        .await
        .unwrap();
    assert_eq!(result.stage, Stage::RcptTo);
    assert_eq!(result.response.code, 550);
    assert!(!result.is_delivered());
    assert_eq!(client.quit().await.unwrap().code, 221);
    peer.finish().await;
}

#[tokio::test]
async fn rset_comes_before_each_later_transaction_but_not_the_first() {
    let peer = Scripted::start(|mut p| async move {
        p.greet(&[]).await;
        answer_transaction(&mut p, 1).await;
        p.expect("RSET").await;
        p.send("250 2.0.0 reset\r\n").await;
        answer_transaction(&mut p, 1).await;
        p.seen
    })
    .await;
    let mut client = connect(peer.addr, "reuse.test", &config()).await.unwrap();
    for _ in 0..2 {
        let r = client
            .send_message("a@client.test", &["b@x.test"], b"hi\r\n", Needs::default())
            .await
            .unwrap();
        assert!(r.is_delivered());
    }
    let seen = peer.finish().await;
    assert_eq!(seen.iter().filter(|l| *l == "RSET").count(), 1, "{seen:?}");
}

#[tokio::test]
async fn without_enable_rset_rset_is_sent_only_after_a_failed_transaction() {
    let peer = Scripted::start(|mut p| async move {
        p.greet(&["PIPELINING"]).await;
        // First: delivered. Second: no RSET, MAIL refused. Third: RSET.
        for prefix in ["MAIL FROM", "RCPT TO", "DATA"] {
            p.expect(prefix).await;
        }
        p.send("250 ok\r\n250 ok\r\n354 go\r\n").await;
        p.content().await;
        p.send("250 done\r\n").await;
        for prefix in ["MAIL FROM", "RCPT TO", "DATA"] {
            p.expect(prefix).await;
        }
        p.send(
            "550 5.7.1 sender refused\r\n503 5.5.1 no sender\r\n503 5.5.1 no valid recipients\r\n",
        )
        .await;
        for prefix in ["RSET", "MAIL FROM", "RCPT TO", "DATA"] {
            p.expect(prefix).await;
        }
        p.send("250 reset\r\n250 ok\r\n250 ok\r\n354 go\r\n").await;
        p.content().await;
        p.send("250 done\r\n").await;
    })
    .await;
    let mut cfg = config();
    cfg.enable_rset = false;
    let mut client = connect(peer.addr, "norset.test", &cfg).await.unwrap();
    assert!(send(&mut client).await.is_delivered());
    let refused = send(&mut client).await;
    assert_eq!(refused.stage, Stage::MailFrom);
    assert_eq!(refused.recipient_response(0).code, 550);
    assert!(send(&mut client).await.is_delivered());
    peer.finish().await;
}

#[tokio::test]
async fn content_is_dot_stuffed_and_crlf_normalised_on_the_wire() {
    let peer = Scripted::start(|mut p| async move {
        p.greet(&[]).await;
        answer_transaction(&mut p, 1).await
    })
    .await;
    let mut client = connect(peer.addr, "bytes.test", &config()).await.unwrap();
    let data = b"Subject: dots\n\n.leading dot\r\n..two\nmiddle . dot\n.\nlast line without break";
    client
        .send_message("a@client.test", &["b@x.test"], data, Needs::default())
        .await
        .unwrap();
    let wire = peer.finish().await;
    assert_eq!(
        String::from_utf8(wire).unwrap(),
        "Subject: dots\r\n\r\n..leading dot\r\n...two\r\nmiddle . dot\r\n..\r\n\
         last line without break\r\n.\r\n"
    );
}

#[tokio::test]
async fn mail_from_carries_size_body_and_smtputf8_when_offered_and_needed() {
    let peer = Scripted::start(|mut p| async move {
        p.greet(&["SIZE 100000", "8BITMIME", "SMTPUTF8"]).await;
        answer_transaction(&mut p, 1).await;
        p.seen
    })
    .await;
    let mut client = connect(peer.addr, "params.test", &config()).await.unwrap();
    let data = "Subject: é\r\n\r\nhé\r\n".as_bytes();
    let rcpts = ["jörg@x.test"];
    let needs = Needs::detect("a@client.test", &rcpts, data);
    assert!(needs.eight_bit_mime && needs.smtputf8);
    client
        .send_message("a@client.test", &rcpts, data, needs)
        .await
        .unwrap();
    let seen = peer.finish().await;
    let mail = seen.iter().find(|l| l.starts_with("MAIL")).unwrap();
    assert_eq!(
        mail,
        &format!(
            "MAIL FROM:<a@client.test> SIZE={} BODY=8BITMIME SMTPUTF8",
            data.len()
        )
    );
}

#[tokio::test]
async fn a_message_over_the_advertised_size_fails_permanently_without_being_sent() {
    let peer = Scripted::start(|mut p| async move {
        p.greet(&["SIZE 10"]).await;
        p.expect("QUIT").await;
        p.send("221 bye\r\n").await;
        p.seen
    })
    .await;
    let mut client = connect(peer.addr, "small.test", &config()).await.unwrap();
    let result = client
        .send_message(
            "a@client.test",
            &["b@x.test"],
            b"0123456789abc\r\n",
            Needs::default(),
        )
        .await
        .unwrap();
    assert_eq!(result.stage, Stage::Local);
    assert_eq!(result.response.code, 552);
    assert_eq!(result.response.enhanced_code.unwrap().to_string(), "5.3.4");
    assert!(result.response.is_permanent());
    client.quit().await.unwrap();
    let seen = peer.finish().await;
    assert!(!seen.iter().any(|l| l.starts_with("MAIL")), "{seen:?}");
}

#[tokio::test]
async fn auth_plain_sends_the_rfc_4616_token_and_succeeds_on_235() {
    let peer = Scripted::start(|mut p| async move {
        p.greet(&["AUTH PLAIN LOGIN"]).await;
        let line = p.expect("AUTH PLAIN ").await;
        p.send("235 2.7.0 accepted\r\n").await;
        line
    })
    .await;
    let mut cfg = config();
    let mut auth = AuthPlain::new("user", "s3cret");
    auth.allow_without_tls = true;
    cfg.auth = Some(auth);
    connect(peer.addr, "auth.test", &cfg).await.unwrap();
    let line = peer.finish().await;
    // base64("\0user\0s3cret")
    assert_eq!(line, "AUTH PLAIN AHVzZXIAczNjcmV0");
}

#[tokio::test]
async fn auth_refused_is_an_auth_error_that_never_shows_the_password() {
    let peer = Scripted::start(|mut p| async move {
        p.greet(&["AUTH PLAIN"]).await;
        p.expect("AUTH PLAIN ").await;
        p.send("535 5.7.8 authentication credentials invalid\r\n")
            .await;
    })
    .await;
    let mut cfg = config();
    let mut auth = AuthPlain::new("user", "hunter2-password");
    auth.allow_without_tls = true;
    cfg.auth = Some(auth);
    let err = connect(peer.addr, "auth.test", &cfg).await.unwrap_err();
    assert_eq!(err.step, Step::Auth);
    let reply = err.response().unwrap();
    assert_eq!(reply.code, 535);
    assert_eq!(reply.command.as_deref(), Some("AUTH PLAIN"));
    for shown in [err.to_string(), format!("{err:?}"), format!("{cfg:?}")] {
        assert!(!shown.contains("hunter2"), "{shown}");
        // Nor its base64 form inside the token.
        assert!(!shown.contains("AHVzZXIA"), "{shown}");
    }
}

#[tokio::test]
async fn auth_is_not_attempted_over_plain_text_unless_allowed() {
    let peer = Scripted::start(|mut p| async move {
        p.greet(&["AUTH PLAIN"]).await;
        // The client must hang up instead of sending credentials.
        let next = p.line().await;
        assert!(next.is_none(), "client sent {next:?}");
    })
    .await;
    let mut cfg = config();
    cfg.auth = Some(AuthPlain::new("user", "pw"));
    let err = connect(peer.addr, "plain.test", &cfg).await.unwrap_err();
    assert_eq!(err.step, Step::Auth);
    assert!(matches!(err.kind, ErrorKind::AuthNotAllowed(_)), "{err}");
    peer.finish().await;
}

#[tokio::test]
async fn ehlo_refused_falls_back_to_helo_only_when_configured() {
    let script = |mut p: Peer| async move {
        p.send("220 old.test SMTP\r\n").await;
        p.expect("EHLO client.test").await;
        p.send("502 5.5.2 what?\r\n").await;
        if let Some(line) = p.line().await {
            assert_eq!(line, "HELO client.test");
            p.send("250 old.test\r\n").await;
            answer_transaction(&mut p, 1).await;
        }
    };
    let peer = Scripted::start(script).await;
    let err = connect(peer.addr, "old.test", &config()).await.unwrap_err();
    assert_eq!(err.step, Step::Ehlo);
    assert_eq!(err.response().unwrap().code, 502);
    peer.finish().await;

    let peer = Scripted::start(script).await;
    let mut cfg = config();
    cfg.helo_fallback = true;
    let mut client = connect(peer.addr, "old.test", &cfg).await.unwrap();
    assert!(!client.capabilities().esmtp);
    let r = client
        .send_message("a@client.test", &["b@x.test"], b"hi\r\n", Needs::default())
        .await
        .unwrap();
    assert!(r.is_delivered());
    peer.finish().await;
}

#[tokio::test]
async fn the_socket_is_bound_to_the_configured_source_address() {
    let peer = Scripted::start(|mut p| async move {
        let from = p.io.get_ref().peer_addr().unwrap();
        p.greet(&[]).await;
        from
    })
    .await;
    let mut cfg = config();
    // Linux routes all of 127/8 to loopback, so a second address is free.
    cfg.source_address = Some("127.0.0.2".parse().unwrap());
    let _client = connect(peer.addr, "bind.test", &cfg).await.unwrap();
    assert_eq!(peer.finish().await.ip().to_string(), "127.0.0.2");
}

#[tokio::test]
async fn addresses_that_would_break_the_command_line_are_refused_locally() {
    let peer = Scripted::start(|mut p| async move {
        p.greet(&[]).await;
        let _ = p.line().await;
        p.seen
    })
    .await;
    let mut client = connect(peer.addr, "inject.test", &config()).await.unwrap();
    let r = client
        .send_message(
            "a@client.test",
            &["b@x.test>\r\nRCPT TO:<evil@x.test"],
            b"x",
            Needs::default(),
        )
        .await
        .unwrap();
    assert_eq!(r.stage, Stage::Local);
    assert_eq!(r.response.code, 553);
    drop(client);
    let seen = peer.finish().await;
    assert!(!seen.iter().any(|l| l.contains("evil")), "{seen:?}");
}
