//! STARTTLS with the self-signed certificate generated at start.

mod common;

use common::*;
use rustls::pki_types::ServerName;

#[tokio::test]
async fn starttls_upgrade_then_full_transaction() {
    let srv = start(config()).await;
    let mut c = Client::greeted(srv.addr).await;
    c.cmd("EHLO c", 250).await;
    assert_eq!(c.cmd("STARTTLS", 220).await, "2.0.0 Ready to start TLS");
    let tcp = c.io.into_inner();
    let name = ServerName::try_from("mx.test").unwrap();
    let tls = connector().connect(name, tcp).await.unwrap();
    let mut c = Client::new(tls);

    // The pre-TLS EHLO no longer counts.
    assert!(c
        .cmd("MAIL FROM:<a@example.com>", 503)
        .await
        .starts_with("5.5.1"));
    c.send("EHLO c\r\n").await;
    let (code, lines) = c.reply().await;
    assert_eq!(code, 250);
    assert!(!lines.iter().any(|l| l == "STARTTLS"), "{lines:?}");
    assert!(c.cmd("STARTTLS", 501).await.starts_with("5.5.1"));

    let (code, text) = c
        .transaction(
            "a@example.com",
            &["b@example.com"],
            "Subject: secret\r\n\r\nx\r\n",
        )
        .await;
    assert_eq!(code, 250, "{text}");
    c.cmd("QUIT", 221).await;

    let m = &srv.acceptor.messages()[0];
    let version = m.get_meta("tls_protocol_version").unwrap();
    let cipher = m.get_meta("tls_cipher").unwrap();
    assert_eq!(version, "TLSv1_3");
    assert!(cipher.as_str().unwrap().starts_with("TLS13_"), "{cipher}");
    let data = srv.acceptor.data(0);
    assert!(
        data.contains(&format!(
            "with ESMTPS (TLSv1_3:{})",
            cipher.as_str().unwrap()
        )),
        "{data}"
    );
    let info = srv.acceptor.received.lock()[0].1.clone();
    assert_eq!(info.tls_protocol_version.as_deref(), Some("TLSv1_3"));
}

#[tokio::test]
async fn commands_pipelined_after_starttls_are_discarded() {
    let srv = start(config()).await;
    let mut c = Client::greeted(srv.addr).await;
    c.cmd("EHLO c", 250).await;
    // An injected plaintext command must not be executed inside the TLS session.
    c.send("STARTTLS\r\nNOOP\r\n").await;
    c.expect(220).await;
    let tcp = c.io.into_inner();
    let name = ServerName::try_from("mx.test").unwrap();
    let tls = connector().connect(name, tcp).await.unwrap();
    let mut c = Client::new(tls);
    c.cmd("EHLO c", 250).await;
}

#[tokio::test]
async fn configured_certificate_from_key_data_is_presented() {
    let ck = rcgen::generate_simple_self_signed(vec!["mx.test".to_string()]).unwrap();
    let mut cfg = config();
    cfg.tls_certificate = Some(hermod_smtp::KeySource::Data {
        key_data: ck.cert.pem(),
    });
    cfg.tls_private_key = Some(hermod_smtp::KeySource::Data {
        key_data: ck.signing_key.serialize_pem(),
    });
    let srv = start(cfg).await;
    let mut c = Client::greeted(srv.addr).await;
    c.cmd("EHLO c", 250).await;
    c.cmd("STARTTLS", 220).await;
    let tcp = c.io.into_inner();
    let tls = connector()
        .connect(ServerName::try_from("mx.test").unwrap(), tcp)
        .await
        .unwrap();
    let presented = tls.get_ref().1.peer_certificates().unwrap()[0].clone();
    assert_eq!(presented.as_ref(), ck.cert.der().as_ref());
    let mut c = Client::new(tls);
    c.cmd("EHLO c", 250).await;
}
