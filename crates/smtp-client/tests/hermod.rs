//! Against Hermod's own ESMTP listener: a real server that refuses chosen
//! recipients by policy, advertises SIZE and SMTPUTF8, and refuses bare LF
//! line endings, so what it stored shows what the client sent.

mod common;

use common::*;
use hermod_smtp_client::{connect, Needs, Stage};

#[tokio::test]
async fn one_refused_recipient_does_not_stop_the_others() {
    let srv = hermod(None, |_| {}).await;
    for pipelining in [true, false] {
        let mut cfg = config();
        cfg.enable_pipelining = pipelining;
        let mut client = connect(srv.addr, "mx.test", &cfg).await.unwrap();
        let rcpts = ["one@mx.test", "refused@mx.test", "three@mx.test"];
        let r = client
            .send_message(
                "a@client.test",
                &rcpts,
                b"Subject: m\r\n\r\nx\r\n",
                Needs::default(),
            )
            .await
            .unwrap();
        assert!(r.is_delivered(), "{r:?}");
        assert_eq!(r.rcpt_responses.len(), 3);
        let refused = r.recipient_response(1);
        assert_eq!(refused.code, 550, "{refused:?}");
        assert_eq!(refused.enhanced_code.unwrap().to_string(), "5.1.1");
        assert_eq!(
            refused.command.as_deref(),
            Some("RCPT TO:<refused@mx.test>")
        );
        assert_eq!(r.recipient_response(0).code, 250);
        assert_eq!(r.recipient_response(2), &r.response);
        client.quit().await.unwrap();
    }
    // Two accepted recipients per pass.
    assert_eq!(srv.recorder.messages.lock().unwrap().len(), 4);
}

#[tokio::test]
async fn a_message_over_the_listeners_size_limit_is_refused_before_sending() {
    let srv = hermod(None, |c| c.max_message_size = 64).await;
    let mut client = connect(srv.addr, "mx.test", &config()).await.unwrap();
    assert_eq!(client.capabilities().size(), Some(Some(64)));
    let big = format!("Subject: big\r\n\r\n{}\r\n", "x".repeat(100));
    let r = client
        .send_message(
            "a@client.test",
            &["b@mx.test"],
            big.as_bytes(),
            Needs::default(),
        )
        .await
        .unwrap();
    assert_eq!((r.stage, r.response.code), (Stage::Local, 552));
    // The connection is untouched and a small message still goes.
    let r = client
        .send_message(
            "a@client.test",
            &["b@mx.test"],
            b"Subject: s\r\n\r\nok\r\n",
            Needs::default(),
        )
        .await
        .unwrap();
    assert!(r.is_delivered(), "{r:?}");
    assert_eq!(srv.recorder.messages.lock().unwrap().len(), 1);
}

#[tokio::test]
async fn bare_lf_content_is_stored_by_a_strict_server_with_crlf_and_its_dots() {
    // Hermod's listener refuses bare LF by default, so acceptance alone
    // shows the client normalised the line endings.
    let srv = hermod(None, |_| {}).await;
    let mut client = connect(srv.addr, "mx.test", &config()).await.unwrap();
    let data = b"Subject: lf\n\n.dot first\nplain\n..two\n";
    let r = client
        .send_message("a@client.test", &["b@mx.test"], data, Needs::default())
        .await
        .unwrap();
    assert!(r.is_delivered(), "{r:?}");
    let stored = srv.data(0);
    assert!(
        stored.ends_with(b"Subject: lf\r\n\r\n.dot first\r\nplain\r\n..two\r\n"),
        "{}",
        String::from_utf8_lossy(&stored)
    );
}

#[tokio::test]
async fn a_utf8_envelope_is_delivered_where_smtputf8_is_offered() {
    let srv = hermod(None, |_| {}).await;
    let mut client = connect(srv.addr, "mx.test", &config()).await.unwrap();
    assert!(client.capabilities().smtputf8());
    let rcpts = ["jörg@mx.test"];
    let data = "Subject: ö\r\n\r\nö\r\n".as_bytes();
    let r = client
        .send_message(
            "ä@client.test",
            &rcpts,
            data,
            Needs::detect("ä@client.test", &rcpts, data),
        )
        .await
        .unwrap();
    assert!(r.is_delivered(), "{r:?}");
}
