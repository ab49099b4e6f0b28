//! Against a real SMTP server: Postfix's smtp-sink, which dumps each
//! transaction it receives. These tests fail (they do not skip) when
//! /usr/sbin/smtp-sink is missing.

mod common;

use std::time::Duration;

use common::*;
use hermod_smtp_client::{connect, AuthPlain, ErrorKind, Needs, Stage, Step, TlsMode};

const SENDER: &str = "sender@client.test";

async fn deliver(sink: &Sink, cfg: &hermod_smtp_client::ClientConfig, data: &[u8]) -> String {
    let mut client = connect(sink.addr, "sink.test", cfg).await.unwrap();
    let rcpts = ["rcpt@sink.test"];
    let result = client
        .send_message(SENDER, &rcpts, data, Needs::detect(SENDER, &rcpts, data))
        .await
        .unwrap();
    assert!(result.is_delivered(), "{result:?}");
    assert_eq!(client.quit().await.unwrap().code, 221);
    sink.dumps(1).await.remove(0)
}

#[tokio::test]
async fn a_message_reaches_smtp_sink_with_its_envelope_and_every_reply_reported() {
    let sink = Sink::start(&[]).await;
    let mut client = connect(sink.addr, "sink.test", &config()).await.unwrap();
    assert_eq!(client.banner().code, 220);
    let caps = client.capabilities();
    assert!(caps.pipelining() && caps.eight_bit_mime() && caps.enhanced_status_codes());
    assert_eq!(caps.auth_mechanisms(), vec!["PLAIN", "LOGIN"]);
    assert!(!client.is_tls());

    let rcpts = ["one@sink.test", "two@sink.test"];
    let result = client
        .send_message(
            SENDER,
            &rcpts,
            b"Subject: hi\r\n\r\nhello\r\n",
            Needs::default(),
        )
        .await
        .unwrap();
    assert!(result.is_delivered());
    assert_eq!(result.stage, Stage::DataDot);
    for (i, rcpt) in rcpts.iter().enumerate() {
        let r = &result.rcpt_responses[i];
        assert_eq!(
            (r.code, r.enhanced_code.unwrap().to_string()),
            (250, "2.1.5".into())
        );
        assert_eq!(
            r.command.as_deref(),
            Some(format!("RCPT TO:<{rcpt}>").as_str())
        );
    }
    assert_eq!(result.response.to_string(), "250 2.0.0 Ok");
    client.quit().await.unwrap();

    let dump = &sink.dumps(1).await[0];
    assert!(
        dump.contains("X-Mail-Args: <sender@client.test>\n"),
        "{dump}"
    );
    assert!(dump.contains("X-Rcpt-Args: <one@sink.test>\nX-Rcpt-Args: <two@sink.test>\n"));
    assert!(dump.contains("X-Helo-Args: client.test\n"));
    assert_eq!(dump_content(dump), "Subject: hi\n\nhello\n\n");
}

#[tokio::test]
async fn delivery_works_without_pipelining_when_the_server_does_not_offer_it() {
    let sink = Sink::start(&["-p"]).await;
    let dump = deliver(&sink, &config(), b"Subject: p\r\n\r\nno pipelining\r\n").await;
    assert_eq!(dump_content(&dump), "Subject: p\n\nno pipelining\n\n");
}

#[tokio::test]
async fn delivery_works_with_pipelining_switched_off_in_the_configuration() {
    let sink = Sink::start(&[]).await;
    let mut cfg = config();
    cfg.enable_pipelining = false;
    let dump = deliver(&sink, &cfg, b"Subject: p\r\n\r\nturn by turn\r\n").await;
    assert_eq!(dump_content(&dump), "Subject: p\n\nturn by turn\n\n");
}

#[tokio::test]
async fn dotted_lines_and_bare_lf_arrive_as_written() {
    let sink = Sink::start(&[]).await;
    let data = b"Subject: dots\n\n.leading dot\n..two dots\r\n.\nend";
    let dump = deliver(&sink, &config(), data).await;
    // The server removed the transparency dots again; smtp-sink writes
    // lines with LF.
    assert_eq!(
        dump_content(&dump),
        "Subject: dots\n\n.leading dot\n..two dots\n.\nend\n\n"
    );
}

#[tokio::test]
async fn eight_bit_content_goes_with_body_8bitmime() {
    let sink = Sink::start(&[]).await;
    let dump = deliver(
        &sink,
        &config(),
        "Subject: x\r\n\r\nsmörgåsbord\r\n".as_bytes(),
    )
    .await;
    assert!(
        dump.contains("X-Mail-Args: <sender@client.test> BODY=8BITMIME\n"),
        "{dump}"
    );
}

#[tokio::test]
async fn eight_bit_content_fails_permanently_when_8bitmime_is_not_offered() {
    let sink = Sink::start(&["-8"]).await;
    let mut client = connect(sink.addr, "sink.test", &config()).await.unwrap();
    let data = "Subject: x\r\n\r\nsmörgåsbord\r\n".as_bytes();
    let rcpts = ["rcpt@sink.test"];
    let result = client
        .send_message(SENDER, &rcpts, data, Needs::detect(SENDER, &rcpts, data))
        .await
        .unwrap();
    assert_eq!(result.stage, Stage::Local);
    assert_eq!(result.response.to_string().get(..9), Some("554 5.6.3"));
    // Nothing was sent, so the connection is still good.
    let ascii = client
        .send_message(SENDER, &rcpts, b"ascii\r\n", Needs::default())
        .await
        .unwrap();
    assert!(ascii.is_delivered());
}

#[tokio::test]
async fn eight_bit_content_is_sent_anyway_when_told_to_ignore_8bit_checks() {
    let sink = Sink::start(&["-8"]).await;
    let mut cfg = config();
    cfg.ignore_8bit_checks = true;
    let dump = deliver(&sink, &cfg, "Subject: x\r\n\r\nsmörgåsbord\r\n".as_bytes()).await;
    // No BODY= parameter for a server that does not know it.
    assert!(
        dump.contains("X-Mail-Args: <sender@client.test>\n"),
        "{dump}"
    );
    assert!(dump_content(&dump).contains("smörgåsbord"));
}

#[tokio::test]
async fn a_utf8_envelope_fails_permanently_when_smtputf8_is_not_offered() {
    let sink = Sink::start(&[]).await;
    let mut client = connect(sink.addr, "sink.test", &config()).await.unwrap();
    let rcpts = ["jörg@sink.test"];
    let result = client
        .send_message(
            SENDER,
            &rcpts,
            b"x\r\n",
            Needs::detect(SENDER, &rcpts, b"x"),
        )
        .await
        .unwrap();
    assert_eq!(result.stage, Stage::Local);
    assert_eq!(result.response.code, 554);
    assert_eq!(result.response.enhanced_code.unwrap().to_string(), "5.6.7");
}

#[tokio::test]
async fn one_connection_carries_several_messages() {
    let sink = Sink::start(&[]).await;
    let mut client = connect(sink.addr, "sink.test", &config()).await.unwrap();
    for i in 0..3 {
        let data = format!("Subject: {i}\r\n\r\nmessage {i}\r\n");
        let r = client
            .send_message(
                SENDER,
                &["rcpt@sink.test"],
                data.as_bytes(),
                Needs::default(),
            )
            .await
            .unwrap();
        assert!(r.is_delivered(), "{r:?}");
    }
    client.rset().await.unwrap();
    client.quit().await.unwrap();
    let dumps = sink.dumps(3).await;
    let mut subjects: Vec<&str> = dumps.iter().map(|d| dump_content(d)).collect();
    subjects.sort();
    assert_eq!(
        subjects,
        [
            "Subject: 0\n\nmessage 0\n\n",
            "Subject: 1\n\nmessage 1\n\n",
            "Subject: 2\n\nmessage 2\n\n"
        ]
    );
}

#[tokio::test]
async fn recipients_refused_by_the_server_end_the_transaction_at_rcpt_to() {
    // -f RCPT: every RCPT TO gets a 5xx (and PIPELINING is not offered).
    let sink = Sink::start(&["-f", "RCPT"]).await;
    let mut client = connect(sink.addr, "sink.test", &config()).await.unwrap();
    let rcpts = ["a@sink.test", "b@sink.test"];
    let result = client
        .send_message(SENDER, &rcpts, b"x\r\n", Needs::default())
        .await
        .unwrap();
    assert_eq!(result.stage, Stage::RcptTo);
    assert_eq!(result.rcpt_responses.len(), 2);
    for i in 0..2 {
        assert!(result.recipient_response(i).is_permanent());
    }
    // The connection goes on (RSET first, since the last one failed).
    let again = client
        .send_message(SENDER, &rcpts, b"x\r\n", Needs::default())
        .await
        .unwrap();
    assert_eq!(again.stage, Stage::RcptTo);
    client.quit().await.unwrap();
}

#[tokio::test]
async fn a_421_from_the_server_during_the_envelope_is_service_closing() {
    let sink = Sink::start(&["-Q", "RCPT"]).await;
    let mut client = connect(sink.addr, "sink.test", &config()).await.unwrap();
    let err = client
        .send_message(SENDER, &["a@sink.test"], b"x\r\n", Needs::default())
        .await
        .unwrap_err();
    assert_eq!(err.step, Step::RcptTo);
    assert!(err.is_service_closing(), "{err}");
    assert!(!client.is_usable());
}

#[tokio::test]
async fn the_server_hanging_up_after_the_final_dot_is_a_data_dot_error() {
    let sink = Sink::start(&["-q", "."]).await;
    let mut client = connect(sink.addr, "sink.test", &config()).await.unwrap();
    let err = client
        .send_message(SENDER, &["a@sink.test"], b"x\r\n", Needs::default())
        .await
        .unwrap_err();
    assert_eq!(err.step, Step::DataDot);
    assert!(
        matches!(err.kind, ErrorKind::Closed | ErrorKind::Io(_)),
        "{err}"
    );
}

#[tokio::test]
async fn a_slow_rcpt_reply_times_out_at_the_rcpt_step() {
    // -W RCPT:3: smtp-sink waits three seconds before answering RCPT TO.
    let sink = Sink::start(&["-W", "RCPT:3"]).await;
    let mut cfg = config();
    cfg.timeouts.rcpt_to = Duration::from_millis(500);
    // smtp-sink answers the commands after a delayed one first, so only
    // an unpipelined client sees the delay where it is.
    cfg.enable_pipelining = false;
    let mut client = connect(sink.addr, "sink.test", &cfg).await.unwrap();
    let started = std::time::Instant::now();
    let err = client
        .send_message(SENDER, &["a@sink.test"], b"x\r\n", Needs::default())
        .await
        .unwrap_err();
    assert_eq!(err.step, Step::RcptTo);
    assert!(matches!(err.kind, ErrorKind::Timeout(_)), "{err}");
    assert!(started.elapsed() < Duration::from_secs(3));
}

#[tokio::test]
async fn an_ehlo_refusing_server_is_reached_with_helo_when_the_fallback_is_on() {
    // -e: no ESMTP, EHLO gets a 5xx.
    let sink = Sink::start(&["-e"]).await;
    let err = connect(sink.addr, "sink.test", &config())
        .await
        .unwrap_err();
    assert_eq!(err.step, Step::Ehlo);
    assert!(err.response().unwrap().is_permanent());

    let mut cfg = config();
    cfg.helo_fallback = true;
    let dump = deliver(
        &sink,
        &cfg,
        "Subject: helo\r\n\r\nold school\r\n".as_bytes(),
    )
    .await;
    assert!(dump.contains("X-Client-Proto: SMTP\n"), "{dump}");
}

#[tokio::test]
async fn auth_refused_by_the_server_fails_the_connection_at_the_auth_step() {
    let sink = Sink::start(&["-f", "AUTH"]).await;
    let mut cfg = config();
    let mut auth = AuthPlain::new("user", "pw");
    auth.allow_without_tls = true;
    cfg.auth = Some(auth);
    let err = connect(sink.addr, "sink.test", &cfg).await.unwrap_err();
    assert_eq!(err.step, Step::Auth);
    assert_eq!(err.response().unwrap().code, 500);
}

#[tokio::test]
async fn tls_modes_against_a_server_without_starttls() {
    let sink = Sink::start(&[]).await;
    for mode in [
        TlsMode::Opportunistic,
        TlsMode::OpportunisticInsecure,
        TlsMode::Disabled,
    ] {
        let mut cfg = config();
        cfg.tls = mode;
        let client = connect(sink.addr, "sink.test", &cfg).await.unwrap();
        assert!(!client.is_tls(), "{mode:?}");
        client.quit().await.unwrap();
    }
    for mode in [TlsMode::Required, TlsMode::RequiredInsecure] {
        let mut cfg = config();
        cfg.tls = mode;
        let err = connect(sink.addr, "sink.test", &cfg).await.unwrap_err();
        assert_eq!(err.step, Step::StartTls, "{mode:?}");
        assert!(
            matches!(err.kind, ErrorKind::StartTlsNotOffered),
            "{mode:?}: {err}"
        );
    }
}
