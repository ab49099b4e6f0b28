//! Peers that misbehave: scripted on real sockets, since no real server
//! misbehaves on demand. Each must end in a bounded, typed error.

mod common;

use std::time::{Duration, Instant};

use common::*;
use hermod_smtp_client::{connect, ErrorKind, Needs, Step, Timeouts, MAX_LINE_LEN};

fn quick() -> hermod_smtp_client::ClientConfig {
    let mut c = config();
    c.timeouts = Timeouts::all(Duration::from_millis(500));
    c
}

#[tokio::test]
async fn a_server_that_never_sends_a_banner_times_out_at_the_banner_step() {
    let peer = Scripted::start(|mut p| async move {
        // Hold the connection open, silent, until the client gives up.
        let _ = p.line().await;
    })
    .await;
    let started = Instant::now();
    let err = connect(peer.addr, "silent.test", &quick())
        .await
        .unwrap_err();
    assert_eq!(err.step, Step::Banner);
    assert!(matches!(err.kind, ErrorKind::Timeout(_)), "{err}");
    assert!(started.elapsed() < Duration::from_secs(5));
    // Display names the host and the address.
    let text = err.to_string();
    assert!(
        text.contains("silent.test") && text.contains(&peer.addr.to_string()),
        "{text}"
    );
    peer.finish().await;
}

#[tokio::test]
async fn a_server_trickling_bytes_cannot_stretch_a_step_past_its_timeout() {
    let peer = Scripted::start(|mut p| async move {
        // One byte of a never-ending continuation line every 50 ms.
        p.send("220-").await;
        for _ in 0..200 {
            p.send("x").await;
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    })
    .await;
    let started = Instant::now();
    let err = connect(peer.addr, "slow.test", &quick()).await.unwrap_err();
    assert!(matches!(err.kind, ErrorKind::Timeout(_)), "{err}");
    assert!(started.elapsed() < Duration::from_secs(5));
}

#[tokio::test]
async fn an_endless_line_without_crlf_is_refused_as_too_long() {
    let peer = Scripted::start(|mut p| async move {
        let chunk = "y".repeat(1024);
        for _ in 0..64 {
            p.send(&chunk).await;
        }
        let _ = p.line().await;
    })
    .await;
    let err = connect(peer.addr, "long.test", &config())
        .await
        .unwrap_err();
    assert_eq!(err.step, Step::Banner);
    assert!(
        matches!(err.kind, ErrorKind::LineTooLong(MAX_LINE_LEN)),
        "{err}"
    );
}

#[tokio::test]
async fn a_reply_that_never_ends_is_refused_after_too_many_lines() {
    let peer = Scripted::start(|mut p| async move {
        for _ in 0..1000 {
            p.send("220-still greeting\r\n").await;
        }
        let _ = p.line().await;
    })
    .await;
    let err = connect(peer.addr, "chatty.test", &config())
        .await
        .unwrap_err();
    assert!(matches!(err.kind, ErrorKind::TooManyLines(_)), "{err}");
}

#[tokio::test]
async fn long_lines_adding_up_past_the_reply_size_limit_are_refused() {
    let peer = Scripted::start(|mut p| async move {
        let line = format!("220-{}\r\n", "z".repeat(4000));
        for _ in 0..40 {
            p.send(&line).await;
        }
        let _ = p.line().await;
    })
    .await;
    let err = connect(peer.addr, "big.test", &config()).await.unwrap_err();
    assert!(matches!(err.kind, ErrorKind::ReplyTooLarge(_)), "{err}");
}

#[tokio::test]
async fn a_garbage_banner_is_a_malformed_reply() {
    let peer = Scripted::start(|mut p| async move {
        p.send("HELLO, this is not SMTP\r\n").await;
        let _ = p.line().await;
    })
    .await;
    let err = connect(peer.addr, "garbage.test", &config())
        .await
        .unwrap_err();
    assert_eq!(err.step, Step::Banner);
    assert!(
        matches!(&err.kind, ErrorKind::Malformed(l) if l.starts_with("HELLO")),
        "{err}"
    );
}

#[tokio::test]
async fn a_multi_line_reply_switching_codes_is_malformed() {
    let peer = Scripted::start(|mut p| async move {
        p.send("220 hi\r\n").await;
        p.expect("EHLO").await;
        p.send("250-hi\r\n550 surprise\r\n").await;
        let _ = p.line().await;
    })
    .await;
    let err = connect(peer.addr, "mixed.test", &config())
        .await
        .unwrap_err();
    assert_eq!(err.step, Step::Ehlo);
    assert!(matches!(err.kind, ErrorKind::Malformed(_)), "{err}");
}

#[tokio::test]
async fn a_refusing_banner_is_an_error_carrying_the_reply() {
    let peer = Scripted::start(|mut p| async move {
        p.send("554 5.7.1 go away\r\n").await;
        let _ = p.line().await;
    })
    .await;
    let err = connect(peer.addr, "refusing.test", &config())
        .await
        .unwrap_err();
    assert_eq!(err.step, Step::Banner);
    let reply = err.response().unwrap();
    assert_eq!((reply.code, reply.content.as_str()), (554, "go away"));
    assert_eq!(reply.enhanced_code.unwrap().to_string(), "5.7.1");
}

#[tokio::test]
async fn a_421_banner_is_service_closing() {
    let peer = Scripted::start(|mut p| async move {
        p.send("421 4.3.2 shutting down\r\n").await;
    })
    .await;
    let err = connect(peer.addr, "closing.test", &config())
        .await
        .unwrap_err();
    assert!(err.is_service_closing(), "{err}");
    assert_eq!(err.step, Step::Banner);
}

#[tokio::test]
async fn a_421_in_the_middle_of_a_transaction_ends_the_connection() {
    let peer = Scripted::start(|mut p| async move {
        p.greet(&[]).await;
        p.expect("MAIL FROM").await;
        p.send("250 ok\r\n").await;
        p.expect("RCPT TO").await;
        p.send("421 4.4.5 too busy, closing\r\n").await;
    })
    .await;
    let mut client = connect(peer.addr, "busy.test", &config()).await.unwrap();
    let err = client
        .send_message(
            "a@client.test",
            &["b@peer.test"],
            b"x\r\n",
            Needs::default(),
        )
        .await
        .unwrap_err();
    assert_eq!(err.step, Step::RcptTo);
    assert!(err.is_service_closing());
    assert_eq!(
        err.response().unwrap().command.as_deref(),
        Some("RCPT TO:<b@peer.test>")
    );
    assert!(!client.is_usable());
    // The connection is not used again.
    let again = client
        .send_message(
            "a@client.test",
            &["b@peer.test"],
            b"x\r\n",
            Needs::default(),
        )
        .await
        .unwrap_err();
    assert!(matches!(again.kind, ErrorKind::Unusable));
    peer.finish().await;
}

#[tokio::test]
async fn a_server_closing_in_the_middle_of_data_is_a_connection_error() {
    let peer = Scripted::start(|mut p| async move {
        p.greet(&[]).await;
        p.expect("MAIL FROM").await;
        p.send("250 ok\r\n").await;
        p.expect("RCPT TO").await;
        p.send("250 ok\r\n").await;
        p.expect("DATA").await;
        p.send("354 go\r\n").await;
        p.expect("Subject").await;
        // Gone without a word, mid-content.
    })
    .await;
    let mut client = connect(peer.addr, "vanishing.test", &config())
        .await
        .unwrap();
    let body = format!("Subject: big\r\n\r\n{}", "line of text\r\n".repeat(20_000));
    let err = client
        .send_message(
            "a@client.test",
            &["b@peer.test"],
            body.as_bytes(),
            Needs::default(),
        )
        .await
        .unwrap_err();
    assert!(matches!(err.step, Step::Data | Step::DataDot), "{err}");
    assert!(
        matches!(err.kind, ErrorKind::Closed | ErrorKind::Io(_)),
        "{err}"
    );
    assert!(!client.is_usable());
}

#[tokio::test]
async fn a_server_silent_after_the_final_dot_times_out_at_data_dot() {
    let peer = Scripted::start(|mut p| async move {
        p.greet(&[]).await;
        p.expect("MAIL FROM").await;
        p.send("250 ok\r\n").await;
        p.expect("RCPT TO").await;
        p.send("250 ok\r\n").await;
        p.expect("DATA").await;
        p.send("354 go\r\n").await;
        p.content().await;
        let _ = p.line().await;
    })
    .await;
    let mut cfg = config();
    cfg.timeouts.data_dot = Duration::from_millis(300);
    let mut client = connect(peer.addr, "pondering.test", &cfg).await.unwrap();
    let err = client
        .send_message(
            "a@client.test",
            &["b@peer.test"],
            b"x\r\n",
            Needs::default(),
        )
        .await
        .unwrap_err();
    assert_eq!(err.step, Step::DataDot);
    assert!(matches!(err.kind, ErrorKind::Timeout(d) if d == Duration::from_millis(300)));
}

#[tokio::test]
async fn plain_text_injected_after_the_starttls_220_is_refused() {
    let peer = Scripted::start(|mut p| async move {
        p.greet(&["STARTTLS"]).await;
        p.expect("STARTTLS").await;
        // RFC 3207 response injection: a reply smuggled in ahead of TLS.
        p.send("220 ready\r\n250 injected\r\n").await;
        let _ = p.line().await;
    })
    .await;
    let mut cfg = config();
    cfg.tls = hermod_smtp_client::TlsMode::OpportunisticInsecure;
    let err = connect(peer.addr, "inject.test", &cfg).await.unwrap_err();
    assert_eq!(err.step, Step::StartTls);
    assert!(matches!(err.kind, ErrorKind::TlsHandshake(_)), "{err}");
}

#[tokio::test]
async fn a_connect_to_a_port_nobody_listens_on_is_a_connect_error() {
    let addr = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap()
    };
    let err = connect(addr, "nobody.test", &config()).await.unwrap_err();
    assert_eq!(err.step, Step::Connect);
    assert!(matches!(err.kind, ErrorKind::Io(_)), "{err}");
}
