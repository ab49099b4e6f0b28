//! The bad-input catalogue: every case sends one kind
//! of malformed, abusive or broken input to a real `hermod serve`, asserts
//! the specific error Hermod gives (SMTP code + enhanced code, an HTTP 4xx
//! with a JSON body naming the problem, or a `policy.lua:<line>` diagnostic
//! on stderr), and then proves the server still serves: a fresh client
//! completes a transaction and gets `250 OK ids=`.
//!
//! Each case starts its own server (about 0.2 s), so cases stay hermetic.

mod common;
mod support_badinput;

use std::time::{Duration, Instant};

use support_badinput::raw::Raw;
use support_badinput::{Hermod, SMTP_NULL_QUEUE};

// ---------------------------------------------------------------- SMTP

#[tokio::test]
async fn mail_without_from_keyword_is_501_5_5_4() {
    let h = Hermod::null_queue().await;
    let mut c = Raw::ehlo(h.smtp_addr()).await;
    c.cmd("MAIL <a@ok.test>")
        .await
        .assert(501, "5.5.4 expected FROM:");
    c.cmd("MAIL").await.assert(501, "5.5.4 expected FROM:");
    h.assert_serves().await;
}

#[tokio::test]
async fn mail_before_ehlo_is_503_5_5_1() {
    let h = Hermod::null_queue().await;
    let mut c = Raw::connect(h.smtp_addr()).await;
    c.cmd("MAIL FROM:<a@ok.test>")
        .await
        .assert(503, "5.5.1 EHLO or HELO first");
    h.assert_serves().await;
}

#[tokio::test]
async fn rcpt_before_mail_is_503_5_5_0() {
    let h = Hermod::null_queue().await;
    let mut c = Raw::ehlo(h.smtp_addr()).await;
    c.cmd("RCPT TO:<b@ok.test>")
        .await
        .assert(503, "5.5.0 MAIL FROM first");
    h.assert_serves().await;
}

#[tokio::test]
async fn data_before_rcpt_is_503_5_5_0() {
    let h = Hermod::null_queue().await;
    let mut c = Raw::ehlo(h.smtp_addr()).await;
    c.cmd("DATA").await.assert(503, "5.5.0 MAIL FROM first");
    c.cmd("MAIL FROM:<a@ok.test>").await.assert(250, "OK");
    c.cmd("DATA").await.assert(503, "5.5.0 RCPT TO first");
    h.assert_serves().await;
}

#[tokio::test]
async fn second_mail_from_without_rset_is_503_5_5_0() {
    let h = Hermod::null_queue().await;
    let mut c = Raw::ehlo(h.smtp_addr()).await;
    c.cmd("MAIL FROM:<a@ok.test>").await.assert(250, "OK");
    c.cmd("MAIL FROM:<b@ok.test>")
        .await
        .assert(503, "5.5.0 MAIL FROM already issued");
    h.assert_serves().await;
}

#[tokio::test]
async fn garbage_verb_is_502_5_5_1() {
    let h = Hermod::null_queue().await;
    let mut c = Raw::ehlo(h.smtp_addr()).await;
    c.cmd("XYZZY plugh")
        .await
        .assert(502, "5.5.1 XYZZY is not implemented");
    h.assert_serves().await;
}

#[tokio::test]
async fn data_with_an_argument_is_501_5_5_4() {
    let h = Hermod::null_queue().await;
    let mut c = Raw::ehlo(h.smtp_addr()).await;
    c.cmd("DATA now")
        .await
        .assert(501, "5.5.4 DATA takes no arguments");
    h.assert_serves().await;
}

#[tokio::test]
async fn command_line_over_998_bytes_is_500_5_2_3_and_session_continues() {
    let h = Hermod::null_queue().await;
    let mut c = Raw::ehlo(h.smtp_addr()).await;
    let long = format!("MAIL FROM:<{}@ok.test>", "a".repeat(1100));
    c.cmd(&long).await.assert(500, "5.2.3 line too long");
    c.cmd("NOOP").await.assert(250, "2.0.0");
    h.assert_serves().await;
}

#[tokio::test]
async fn nul_byte_in_a_command_is_501_5_5_2() {
    let h = Hermod::null_queue().await;
    let mut c = Raw::ehlo(h.smtp_addr()).await;
    c.cmd_bytes(b"MAIL FROM:<a\0b@ok.test>")
        .await
        .assert(501, "5.5.2");
    c.cmd("NOOP").await.assert(250, "2.0.0");
    h.assert_serves().await;
}

#[tokio::test]
async fn non_utf8_command_is_501_5_5_2() {
    let h = Hermod::null_queue().await;
    let mut c = Raw::ehlo(h.smtp_addr()).await;
    c.cmd_bytes(b"MAIL FROM:<caf\xe9@ok.test>")
        .await
        .assert(501, "5.5.2 command is not valid UTF-8");
    h.assert_serves().await;
}

/// Open a transaction on `c` up to the 354.
async fn start_data(c: &mut Raw) {
    c.cmd("MAIL FROM:<a@ok.test>").await.assert(250, "OK");
    c.cmd("RCPT TO:<b@ok.test>").await.assert(250, "OK");
    c.cmd("DATA").await.assert(354, "");
}

#[tokio::test]
async fn bare_lf_in_data_is_552_5_6_0_under_default_deny() {
    let h = Hermod::null_queue().await;
    let mut c = Raw::ehlo(h.smtp_addr()).await;
    start_data(&mut c).await;
    c.send(b"Subject: bare lf\r\n\r\nline one\nline two\r\n.\r\n")
        .await;
    c.reply()
        .await
        .assert(552, "5.6.0 message contains a bare CR or LF");
    c.cmd("NOOP").await.assert(250, "2.0.0");
    h.assert_serves().await;
}

#[tokio::test]
async fn bare_cr_in_data_is_552_5_6_0_under_default_deny() {
    let h = Hermod::null_queue().await;
    let mut c = Raw::ehlo(h.smtp_addr()).await;
    start_data(&mut c).await;
    c.send(b"Subject: bare cr\r\n\r\nline one\rline two\r\n.\r\n")
        .await;
    c.reply()
        .await
        .assert(552, "5.6.0 message contains a bare CR or LF");
    h.assert_serves().await;
}

#[tokio::test]
async fn long_line_inside_data_is_500_5_2_3() {
    let h = Hermod::null_queue().await;
    let mut c = Raw::ehlo(h.smtp_addr()).await;
    start_data(&mut c).await;
    let body = format!("Subject: long\r\n\r\n{}\r\n.\r\n", "x".repeat(5000));
    c.send(body.as_bytes()).await;
    c.reply().await.assert(500, "5.2.3 line too long");
    h.assert_serves().await;
}

#[tokio::test]
async fn oversized_data_is_552_5_3_4_and_the_session_stays_usable() {
    let h = Hermod::start("max_message_size = 2000", "", SMTP_NULL_QUEUE).await;
    let mut c = Raw::ehlo(h.smtp_addr()).await;
    start_data(&mut c).await;
    let body = format!(
        "Subject: big\r\n\r\n{}.\r\n",
        "0123456789012345678901234567890123456789\r\n".repeat(200)
    );
    c.send(body.as_bytes()).await;
    c.reply()
        .await
        .assert(552, "5.3.4 message exceeds the maximum size of 2000 bytes");
    // Same connection: a small message is still accepted.
    start_data(&mut c).await;
    c.send(b"Subject: small\r\n\r\nok\r\n.\r\n").await;
    c.reply().await.assert(250, "OK ids=");
    h.assert_serves().await;
}

#[tokio::test]
async fn mail_from_size_over_the_limit_is_552_5_3_4() {
    let h = Hermod::start("max_message_size = 2000", "", SMTP_NULL_QUEUE).await;
    let mut c = Raw::ehlo(h.smtp_addr()).await;
    c.cmd("MAIL FROM:<a@ok.test> SIZE=99999999999")
        .await
        .assert(552, "5.3.4 message exceeds the maximum size of 2000 bytes");
    c.cmd("MAIL FROM:<a@ok.test> SIZE=lots")
        .await
        .assert(501, "5.5.4 invalid SIZE parameter");
    h.assert_serves().await;
}

#[tokio::test]
async fn a_small_size_declaration_does_not_lift_max_message_size() {
    let h = Hermod::start("max_message_size = 2000", "", SMTP_NULL_QUEUE).await;
    let mut c = Raw::ehlo(h.smtp_addr()).await;
    c.cmd("MAIL FROM:<a@ok.test> SIZE=10")
        .await
        .assert(250, "OK");
    c.cmd("RCPT TO:<b@ok.test>").await.assert(250, "OK");
    c.cmd("DATA").await.assert(354, "");
    let body = format!("Subject: liar\r\n\r\n{}.\r\n", "z\r\n".repeat(1000));
    c.send(body.as_bytes()).await;
    c.reply().await.assert(552, "5.3.4");
    h.assert_serves().await;
}

#[tokio::test]
async fn invalid_sender_syntax_is_501_5_1_7() {
    let h = Hermod::null_queue().await;
    let mut c = Raw::ehlo(h.smtp_addr()).await;
    c.cmd("MAIL FROM:<no-at-sign>")
        .await
        .assert(501, "5.1.7 bad sender address");
    c.cmd("MAIL FROM:<a@bad..domain>")
        .await
        .assert(501, "5.1.7 bad sender address");
    h.assert_serves().await;
}

#[tokio::test]
async fn invalid_recipient_syntax_is_501_5_1_3() {
    let h = Hermod::null_queue().await;
    let mut c = Raw::ehlo(h.smtp_addr()).await;
    c.cmd("MAIL FROM:<a@ok.test>").await.assert(250, "OK");
    c.cmd("RCPT TO:<no-at-sign>")
        .await
        .assert(501, "5.1.3 bad recipient address");
    c.cmd("RCPT TO:<>")
        .await
        .assert(501, "5.1.3 bad recipient address: empty recipient");
    c.cmd("RCPT TO:<@ok.test>")
        .await
        .assert(501, "5.1.3 bad recipient address");
    h.assert_serves().await;
}

/// Decision: Hermod advertises SMTPUTF8 and accepts UTF-8 addresses whether
/// or not the client adds the SMTPUTF8 parameter to MAIL (it never has to
/// downgrade: it only hands messages to brokers and Maildirs).
#[tokio::test]
async fn eight_bit_address_without_smtputf8_parameter_is_accepted() {
    let h = Hermod::null_queue().await;
    let mut c = Raw::ehlo(h.smtp_addr()).await;
    c.cmd("MAIL FROM:<jos\u{e9}@ok.test>")
        .await
        .assert(250, "OK <jos\u{e9}@ok.test>");
    c.cmd("RCPT TO:<m\u{fc}ller@b\u{fc}cher.test>")
        .await
        .assert(250, "OK");
    c.cmd("DATA").await.assert(354, "");
    c.send(b"Subject: utf8\r\n\r\nhi\r\n.\r\n").await;
    c.reply().await.assert(250, "OK ids=");
    h.assert_serves().await;
}

#[tokio::test]
async fn ten_thousand_rcpts_get_452_4_5_3_past_the_limit_and_the_connection_stays_usable() {
    let h = Hermod::start("max_recipients_per_message = 100", "", SMTP_NULL_QUEUE).await;
    let mut c = Raw::ehlo(h.smtp_addr()).await;
    c.cmd("MAIL FROM:<a@ok.test>").await.assert(250, "OK");
    // In chunks: 10,000 replies need not fit the socket buffers at once.
    let mut counts = (0usize, 0usize, Vec::new());
    for chunk in (0..10_000).collect::<Vec<usize>>().chunks(500) {
        let mut wire = Vec::new();
        for i in chunk {
            wire.extend_from_slice(format!("RCPT TO:<r{i}@ok.test>\r\n").as_bytes());
        }
        c.send(&wire).await;
        for _ in chunk {
            let r = c.reply().await;
            tally(&mut counts, r);
        }
    }
    let (ok, refused, other) = counts;
    assert_eq!((ok, refused), (100, 9_900), "unexpected replies: {other:?}");
    c.cmd("DATA").await.assert(354, "");
    c.send(b"Subject: many\r\n\r\nhi\r\n.\r\n").await;
    let r = c.reply().await;
    r.assert(250, "OK ids=");
    assert_eq!(common::smtp::ids_of(&r.text).len(), 100);
    c.cmd("MAIL FROM:<a@ok.test>").await.assert(250, "OK");
    h.assert_serves().await;
}

fn tally(
    counts: &mut (usize, usize, Vec<support_badinput::raw::Reply>),
    r: support_badinput::raw::Reply,
) {
    match (r.code, r.text.starts_with("4.5.3 too many recipients")) {
        (250, _) => counts.0 += 1,
        (452, true) => counts.1 += 1,
        _ => counts.2.push(r),
    }
}

#[tokio::test]
async fn whole_session_in_one_write_is_answered_in_order_and_nothing_after_221() {
    let h = Hermod::null_queue().await;
    let mut c = Raw::connect(h.smtp_addr()).await;
    c.send(
        b"EHLO pipe.test\r\nMAIL FROM:<a@ok.test>\r\nRCPT TO:<b@ok.test>\r\nDATA\r\n\
          Subject: pipelined\r\n\r\nbody\r\n.\r\nQUIT\r\nNOOP\r\nMAIL FROM:<c@ok.test>\r\nRSET\r\n",
    )
    .await;
    let out = c.read_to_close(Duration::from_secs(10)).await;
    let codes: Vec<&str> = out
        .lines()
        .filter(|l| l.as_bytes().get(3) != Some(&b'-'))
        .map(|l| l.get(..3).unwrap_or(l))
        .collect();
    assert_eq!(
        codes,
        ["250", "250", "250", "354", "250", "221"],
        "server output:\n{out}"
    );
    assert!(out.contains("250 OK ids="), "{out}");
    assert!(
        out.trim_end()
            .lines()
            .last()
            .is_some_and(|l| l.starts_with("221 2.0.0")),
        "{out}"
    );
    h.assert_serves().await;
}

#[tokio::test]
async fn starttls_followed_by_garbage_ends_the_session_and_the_server_keeps_serving() {
    let h = Hermod::null_queue().await;
    let mut c = Raw::ehlo(h.smtp_addr()).await;
    c.cmd("STARTTLS")
        .await
        .assert(220, "2.0.0 Ready to start TLS");
    c.send(b"this is not a TLS ClientHello\r\nMAIL FROM:<a@ok.test>\r\n")
        .await;
    let out = c.read_to_close(Duration::from_secs(10)).await;
    assert!(
        !out.contains("250"),
        "no plaintext command may be answered after STARTTLS: {out:?}"
    );
    h.assert_serves().await;
}

#[tokio::test]
async fn slowloris_gets_421_4_3_2_once_client_timeout_passes() {
    let h = Hermod::start("client_timeout = '2s'", "", SMTP_NULL_QUEUE).await;
    let mut c = Raw::ehlo(h.smtp_addr()).await;
    let started = Instant::now();
    // A slow client: one byte, then 1.5 s (inside the timeout), one more
    // byte, then nothing for longer than the 2 s timeout.
    c.send(b"M").await;
    tokio::time::sleep(Duration::from_millis(1500)).await;
    c.send(b"A").await;
    let r = c
        .try_reply(Duration::from_secs(10))
        .await
        .expect("a reply before the bound");
    let took = started.elapsed();
    r.assert(421, "4.3.2");
    assert!(r.text.contains("idle too long"), "{r:?}");
    assert!(
        took >= Duration::from_millis(3300) && took < Duration::from_secs(7),
        "421 after {took:?}"
    );
    c.wait_closed(Duration::from_secs(5)).await;
    h.assert_serves().await;
}

#[tokio::test]
async fn silent_client_gets_421_4_3_2_after_client_timeout() {
    let h = Hermod::start("client_timeout = '2s'", "", SMTP_NULL_QUEUE).await;
    let started = Instant::now();
    let mut c = Raw::connect(h.smtp_addr()).await;
    let r = c
        .try_reply(Duration::from_secs(10))
        .await
        .expect("a reply before the bound");
    r.assert(421, "4.3.2");
    assert!(
        started.elapsed() < Duration::from_secs(6),
        "421 after {:?}",
        started.elapsed()
    );
    h.assert_serves().await;
}

#[tokio::test]
async fn two_thousand_idle_connections_do_not_stop_a_fresh_client() {
    let limit = support_badinput::raise_nofile(8192);
    // Keep headroom for the runtime, the other cases and the fresh client.
    let count = 2000usize.min((limit as usize).saturating_sub(300));
    assert!(
        count >= 500,
        "RLIMIT_NOFILE {limit} is too low for this case"
    );
    let h = Hermod::null_queue().await;
    let mut idle = Vec::with_capacity(count);
    for _ in 0..count {
        idle.push(Raw::connect_silent(h.smtp_addr()).await);
    }
    // The newest idle connection was greeted: the server accepted them all.
    idle.last_mut()
        .expect("connections")
        .reply()
        .await
        .assert(220, "");
    h.assert_serves().await;
    drop(idle);
    h.assert_serves().await;
}

#[tokio::test]
async fn vrfy_is_502_5_5_1() {
    let h = Hermod::null_queue().await;
    let mut c = Raw::ehlo(h.smtp_addr()).await;
    c.cmd("VRFY postmaster")
        .await
        .assert(502, "5.5.1 VRFY is not implemented");
    h.assert_serves().await;
}

#[tokio::test]
async fn expn_is_502_5_5_1() {
    let h = Hermod::null_queue().await;
    let mut c = Raw::ehlo(h.smtp_addr()).await;
    c.cmd("EXPN staff")
        .await
        .assert(502, "5.5.1 EXPN is not implemented");
    h.assert_serves().await;
}

#[tokio::test]
async fn help_is_502_5_5_1() {
    let h = Hermod::null_queue().await;
    let mut c = Raw::ehlo(h.smtp_addr()).await;
    c.cmd("HELP")
        .await
        .assert(502, "5.5.1 HELP is not implemented");
    h.assert_serves().await;
}

#[tokio::test]
async fn relaying_from_127_0_0_2_is_550_5_7_1() {
    let h = Hermod::null_queue().await;
    let mut c = Raw::connect_from([127, 0, 0, 2], h.smtp_addr()).await;
    c.cmd("EHLO outsider.test").await.assert(250, "");
    c.cmd("MAIL FROM:<a@ok.test>").await.assert(250, "OK");
    c.cmd("RCPT TO:<b@elsewhere.test>")
        .await
        .assert(550, "5.7.1 relaying not permitted for 127.0.0.2");
    c.cmd("DATA").await.assert(503, "5.5.0 RCPT TO first");
    h.assert_serves().await;
}

#[path = "support_badinput/http_cases.rs"]
mod http_cases;
#[path = "support_badinput/policy_cases.rs"]
mod policy_cases;
