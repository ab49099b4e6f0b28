//! AUTH PLAIN: offered over TLS when the policy has an
//! `smtp_server_auth_plain` handler, decided by that handler.

mod common;

use std::io::Write;
use std::sync::{Arc, OnceLock};

use base64::Engine as _;
use common::*;
use parking_lot::Mutex;
use tokio::net::TcpSocket;

const PASSWORD: &str = "tiger-s3cret";

fn policy() -> String {
    format!(
        r#"
local kumo = require 'kumo'
kumo.on('smtp_server_auth_plain', function(authz, authc, password, conn_meta)
  if password == 'boom' then error('auth backend down') end
  if password == 'later' then kumo.reject(454, '4.7.0 try again later') end
  conn_meta:set_meta('x_auth_tried', authz .. '/' .. authc)
  return authc == 'daniel' and password == '{PASSWORD}'
end)
"#
    )
}

fn plain(authz: &str, authc: &str, password: &str) -> String {
    base64::engine::general_purpose::STANDARD.encode(format!("{authz}\0{authc}\0{password}"))
}

/// Everything the crate logs at any level while these tests run.
#[derive(Clone, Default)]
struct Captured(Arc<Mutex<Vec<u8>>>);

impl Write for Captured {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

fn logs() -> &'static Captured {
    static LOGS: OnceLock<Captured> = OnceLock::new();
    LOGS.get_or_init(|| {
        let logs = Captured::default();
        let writer = logs.clone();
        let subscriber = tracing_subscriber::fmt()
            .with_max_level(tracing::Level::TRACE)
            .with_writer(move || writer.clone())
            .with_ansi(false)
            .finish();
        tracing::subscriber::set_global_default(subscriber).unwrap();
        logs
    })
}

async fn server() -> Server {
    logs();
    start_with(config(), &policy()).await
}

async fn ehlo_lines<S>(c: &mut Client<S>) -> Vec<String>
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin,
{
    c.send("EHLO c\r\n").await;
    let (code, lines) = c.reply().await;
    assert_eq!(code, 250, "{lines:?}");
    lines
}

#[tokio::test]
async fn auth_plain_with_an_initial_response_over_tls_succeeds_and_sets_meta() {
    let srv = server().await;
    let mut c = Client::greeted(srv.addr).await;
    let before = ehlo_lines(&mut c).await;
    assert!(!before.iter().any(|l| l.starts_with("AUTH")), "{before:?}");
    let mut c = c.starttls().await;
    let after = ehlo_lines(&mut c).await;
    assert!(after.iter().any(|l| l == "AUTH PLAIN"), "{after:?}");

    let text = c
        .cmd(
            &format!("AUTH PLAIN {}", plain("", "daniel", PASSWORD)),
            235,
        )
        .await;
    assert!(text.starts_with("2.7.0"), "{text}");
    let (code, text) = c
        .transaction(
            "a@example.com",
            &["b@example.com"],
            "Subject: hi\r\n\r\nx\r\n",
        )
        .await;
    assert_eq!(code, 250, "{text}");

    let m = &srv.acceptor.messages()[0];
    assert_eq!(m.get_meta("authn_id").unwrap(), "daniel");
    // An empty authorization identity stands for the authentication one.
    assert_eq!(m.get_meta("authz_id").unwrap(), "daniel");
    assert_eq!(m.get_meta("x_auth_tried").unwrap(), "daniel/daniel");
    assert!(srv.acceptor.data(0).contains("with ESMTPSA ("));
}

#[tokio::test]
async fn auth_plain_answers_334_and_takes_the_response_on_the_next_line() {
    let srv = server().await;
    let mut c = Client::greeted(srv.addr).await.starttls().await;
    ehlo_lines(&mut c).await;
    c.send("AUTH PLAIN\r\n").await;
    assert_eq!(c.reply().await, (334, vec![String::new()]));
    c.cmd(&plain("tenant-a", "daniel", PASSWORD), 235).await;
    c.transaction(
        "a@example.com",
        &["b@example.com"],
        "Subject: hi\r\n\r\nx\r\n",
    )
    .await;
    let m = &srv.acceptor.messages()[0];
    assert_eq!(m.get_meta("authz_id").unwrap(), "tenant-a");
    assert_eq!(m.get_meta("authn_id").unwrap(), "daniel");
}

#[tokio::test]
async fn wrong_password_gets_535_and_no_record_or_log_holds_the_credentials() {
    let srv = server().await;
    let mut c = Client::greeted(srv.addr).await.starttls().await;
    ehlo_lines(&mut c).await;
    let wrong = "wrong-pass-XYZ";
    let token = plain("", "daniel", wrong);
    let text = c.cmd(&format!("AUTH PLAIN {token}"), 535).await;
    assert_eq!(text, "5.7.8 Authentication credentials invalid");
    // Through the 334 form as well.
    c.send("AUTH PLAIN\r\n").await;
    c.expect(334).await;
    c.cmd(&token, 535).await;
    // A malformed line is refused without being quoted either.
    c.cmd(&format!("AUTH PLAIN {token} {wrong}"), 501).await;
    c.cmd(
        &format!("AUTH PLAIN {}", plain("", "daniel", PASSWORD)),
        235,
    )
    .await;
    c.cmd("QUIT", 221).await;

    let rejections = srv.acceptor.rejections.lock().clone();
    assert_eq!(rejections.len(), 3, "{rejections:?}");
    for r in &rejections {
        assert_eq!(r.command.as_deref(), Some("AUTH PLAIN"), "{r:?}");
        let all = format!("{r:?}");
        for secret in [wrong, token.as_str(), PASSWORD] {
            assert!(!all.contains(secret), "{secret} in {all}");
        }
    }
    let logged = String::from_utf8_lossy(&logs().0.lock()).into_owned();
    assert!(logged.contains("esmtp authentication refused"), "{logged}");
    for secret in [wrong, token.as_str(), PASSWORD] {
        assert!(!logged.contains(secret), "{secret} logged:\n{logged}");
    }
}

#[tokio::test]
async fn malformed_responses_get_501_and_a_star_cancels() {
    let srv = server().await;
    let mut c = Client::greeted(srv.addr).await.starttls().await;
    ehlo_lines(&mut c).await;
    assert!(c.cmd("AUTH PLAIN !!!", 501).await.starts_with("5.5.4"));
    let two_fields = base64::engine::general_purpose::STANDARD.encode("daniel\0pw");
    assert!(c
        .cmd(&format!("AUTH PLAIN {two_fields}"), 501)
        .await
        .starts_with("5.5.2"));
    c.send("AUTH PLAIN\r\n").await;
    c.expect(334).await;
    assert!(c.cmd("not*base64", 501).await.starts_with("5.5.2"));
    c.send("AUTH PLAIN\r\n").await;
    c.expect(334).await;
    assert!(c.cmd("*", 501).await.starts_with("5.5.0"));
    c.send("AUTH PLAIN\r\n").await;
    c.expect(334).await;
    let long = "A".repeat(20_000);
    assert!(c.cmd(&long, 500).await.starts_with("5.5.6"));
    // The session is still in step and AUTH still works.
    c.cmd(
        &format!("AUTH PLAIN {}", plain("", "daniel", PASSWORD)),
        235,
    )
    .await;
}

#[tokio::test]
async fn without_a_handler_auth_is_not_advertised_and_answered_502() {
    logs();
    let srv = start(config()).await;
    let mut c = Client::greeted(srv.addr).await.starttls().await;
    let lines = ehlo_lines(&mut c).await;
    assert!(!lines.iter().any(|l| l.starts_with("AUTH")), "{lines:?}");
    let text = c
        .cmd(
            &format!("AUTH PLAIN {}", plain("", "daniel", PASSWORD)),
            502,
        )
        .await;
    assert_eq!(text, "5.5.1 AUTH is not implemented");
}

#[tokio::test]
async fn auth_before_starttls_is_refused_with_538() {
    let srv = server().await;
    let mut c = Client::greeted(srv.addr).await;
    ehlo_lines(&mut c).await;
    let text = c
        .cmd(
            &format!("AUTH PLAIN {}", plain("", "daniel", PASSWORD)),
            538,
        )
        .await;
    assert!(text.starts_with("5.7.11"), "{text}");
}

#[tokio::test]
async fn auth_out_of_sequence_gets_503_and_other_mechanisms_504() {
    let srv = server().await;
    let mut c = Client::greeted(srv.addr).await.starttls().await;
    let ok = format!("AUTH PLAIN {}", plain("", "daniel", PASSWORD));
    // STARTTLS forgets the EHLO.
    assert!(c.cmd(&ok, 503).await.starts_with("5.5.1"));
    ehlo_lines(&mut c).await;
    assert!(c.cmd("AUTH LOGIN", 504).await.starts_with("5.5.4"));
    c.cmd("MAIL FROM:<a@example.com>", 250).await;
    assert_eq!(
        c.cmd(&ok, 503).await,
        "5.5.1 AUTH is not permitted during a mail transaction"
    );
    c.cmd("RSET", 250).await;
    c.cmd(&ok, 235).await;
    assert_eq!(c.cmd(&ok, 503).await, "5.5.1 already authenticated");
}

#[tokio::test]
async fn handler_errors_and_rejects_reply_as_other_events_do() {
    let srv = server().await;
    let mut c = Client::greeted(srv.addr).await.starttls().await;
    ehlo_lines(&mut c).await;
    let text = c
        .cmd(&format!("AUTH PLAIN {}", plain("", "daniel", "later")), 454)
        .await;
    assert_eq!(text, "4.7.0 try again later");
    let text = c
        .cmd(&format!("AUTH PLAIN {}", plain("", "daniel", "boom")), 421)
        .await;
    assert!(text.starts_with("4.3.0"), "{text}");
    assert!(c.closed().await);
}

#[tokio::test]
async fn authentication_alone_does_not_let_a_host_outside_relay_hosts_relay() {
    logs();
    let mut cfg = config();
    cfg.relay_hosts = vec!["127.0.0.1/32".parse().unwrap()];
    let srv = start_with(cfg, &policy()).await;
    let sock = TcpSocket::new_v4().unwrap();
    sock.bind("127.0.0.2:0".parse().unwrap()).unwrap();
    let mut c = Client::new(sock.connect(srv.addr).await.unwrap());
    c.expect(220).await;
    let mut c = c.starttls().await;
    ehlo_lines(&mut c).await;
    c.cmd(
        &format!("AUTH PLAIN {}", plain("", "daniel", PASSWORD)),
        235,
    )
    .await;
    c.cmd("MAIL FROM:<a@example.com>", 250).await;
    assert_eq!(
        c.cmd("RCPT TO:<b@example.com>", 550).await,
        "5.7.1 relaying not permitted for 127.0.0.2"
    );
}

/// Connect from 127.0.0.2 (outside `relay_hosts`), STARTTLS and EHLO.
async fn outsider(srv: &Server) -> Client<tokio_rustls::client::TlsStream<tokio::net::TcpStream>> {
    let sock = TcpSocket::new_v4().unwrap();
    sock.bind("127.0.0.2:0".parse().unwrap()).unwrap();
    let mut c = Client::new(sock.connect(srv.addr).await.unwrap());
    c.expect(220).await;
    let mut c = c.starttls().await;
    ehlo_lines(&mut c).await;
    c
}

#[tokio::test]
async fn relay_from_authz_lets_that_identity_relay_with_its_sender_domain_from_outside_relay_hosts()
{
    logs();
    let mut cfg = config();
    cfg.relay_hosts = vec!["127.0.0.1/32".parse().unwrap()];
    let policy = format!(
        "{}\nkumo.on('get_listener_domain', function(domain, listener, conn_meta)\n\
           if domain == 'example.com' then\n\
             return kumo.make_listener_domain {{ relay_from_authz = {{ 'daniel' }} }}\n\
           end\n\
         end)\n",
        policy()
    );
    let srv = start_with(cfg, &policy).await;

    // Without AUTH the sender domain alone does not relay.
    let mut c = outsider(&srv).await;
    c.cmd("MAIL FROM:<a@example.com>", 250).await;
    c.cmd("RCPT TO:<b@elsewhere.test>", 550).await;

    let mut c = outsider(&srv).await;
    c.cmd(
        &format!("AUTH PLAIN {}", plain("", "daniel", PASSWORD)),
        235,
    )
    .await;
    // Another sender domain is not daniel's to relay.
    c.cmd("MAIL FROM:<a@other.test>", 250).await;
    c.cmd("RCPT TO:<b@elsewhere.test>", 550).await;
    c.cmd("RSET", 250).await;
    let (code, text) = c
        .transaction(
            "a@example.com",
            &["b@elsewhere.test"],
            "Subject: hi\r\n\r\nx\r\n",
        )
        .await;
    assert_eq!(code, 250, "{text}");
    assert_eq!(srv.acceptor.messages().len(), 1);
}
