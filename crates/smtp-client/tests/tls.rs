//! STARTTLS per TLS mode against Hermod's own ESMTP listener presenting a
//! certificate from a throw-away CA (trusted as an extra root), or one the
//! client does not trust. Modes against a server without STARTTLS are in
//! sink.rs.

mod common;

use common::*;
use hermod_smtp_client::{connect, AuthPlain, ErrorKind, Needs, Step, TlsMode, TlsTrust};

async fn tls_connect(
    srv: &Hermod,
    host: &str,
    cfg: &hermod_smtp_client::ClientConfig,
) -> Result<hermod_smtp_client::Client, hermod_smtp_client::ClientError> {
    connect(srv.addr, host, cfg).await
}

#[tokio::test]
async fn every_mode_but_disabled_uses_starttls_with_a_trusted_certificate() {
    let pki = pki();
    let srv = hermod(Some(&pki), |_| {}).await;
    for (mode, verified) in [
        (TlsMode::Opportunistic, true),
        (TlsMode::OpportunisticInsecure, false),
        (TlsMode::Required, true),
        (TlsMode::RequiredInsecure, false),
    ] {
        let mut cfg = trusting(&pki);
        cfg.tls = mode;
        let client = tls_connect(&srv, "mx.test", &cfg).await.unwrap();
        let info = client
            .tls_info()
            .unwrap_or_else(|| panic!("{mode:?}: no TLS"));
        assert_eq!(info.verified, verified, "{mode:?}");
        assert_eq!(info.protocol_version, "TLSv1_3");
        assert!(info.cipher.starts_with("TLS13_"), "{}", info.cipher);
        assert_eq!(info.subject_name, ["O=Hermod Tests", "CN=mx.test"]);
        // The EHLO after TLS no longer offers STARTTLS.
        assert!(!client.capabilities().starttls());
        client.quit().await.unwrap();
    }
    let mut cfg = trusting(&pki);
    cfg.tls = TlsMode::Disabled;
    let client = tls_connect(&srv, "mx.test", &cfg).await.unwrap();
    assert!(!client.is_tls());
    assert!(client.capabilities().starttls());
}

#[tokio::test]
async fn a_message_sent_over_starttls_arrives() {
    let pki = pki();
    let srv = hermod(Some(&pki), |_| {}).await;
    let mut cfg = trusting(&pki);
    cfg.tls = TlsMode::Required;
    let mut client = tls_connect(&srv, "mx.test", &cfg).await.unwrap();
    let r = client
        .send_message(
            "a@client.test",
            &["b@mx.test"],
            b"Subject: tls\r\n\r\nsecret\r\n",
            Needs::default(),
        )
        .await
        .unwrap();
    assert!(r.is_delivered(), "{r:?}");
    client.quit().await.unwrap();
    let data = srv.data(0);
    assert!(data.ends_with(b"Subject: tls\r\n\r\nsecret\r\n"));
    assert!(String::from_utf8_lossy(&data).contains("with ESMTPS"));
}

#[tokio::test]
async fn an_untrusted_certificate_fails_the_verifying_modes_and_passes_the_insecure_ones() {
    let pki = pki();
    let srv = hermod(Some(&pki), |_| {}).await;
    // Trust some other CA only.
    let other = common::pki();
    for mode in [TlsMode::Opportunistic, TlsMode::Required] {
        let mut cfg = trusting(&other);
        cfg.tls = mode;
        let err = tls_connect(&srv, "mx.test", &cfg).await.unwrap_err();
        assert_eq!(err.step, Step::StartTls, "{mode:?}");
        // Opportunistic does not fall back to plain text on the same
        // connection after a failed handshake.
        assert!(
            matches!(err.kind, ErrorKind::TlsHandshake(_)),
            "{mode:?}: {err}"
        );
    }
    for mode in [TlsMode::OpportunisticInsecure, TlsMode::RequiredInsecure] {
        let mut cfg = trusting(&other);
        cfg.tls = mode;
        let client = tls_connect(&srv, "mx.test", &cfg).await.unwrap();
        assert!(!client.tls_info().unwrap().verified, "{mode:?}");
    }
}

#[tokio::test]
async fn a_certificate_for_another_name_fails_verification() {
    let pki = pki();
    let srv = hermod(Some(&pki), |_| {}).await;
    let mut cfg = trusting(&pki);
    cfg.tls = TlsMode::Required;
    let err = tls_connect(&srv, "other.test", &cfg).await.unwrap_err();
    assert!(matches!(err.kind, ErrorKind::TlsHandshake(_)), "{err}");
    assert!(err.to_string().contains("other.test"), "{err}");
}

#[tokio::test]
async fn system_roots_plus_an_extra_root_verify_the_test_ca() {
    let pki = pki();
    let srv = hermod(Some(&pki), |_| {}).await;
    let mut cfg = config();
    cfg.tls = TlsMode::Required;
    cfg.tls_trust = TlsTrust::with_extra_roots(vec![pki.ca_der.clone()]);
    let client = tls_connect(&srv, "mx.test", &cfg).await.unwrap();
    assert!(client.tls_info().unwrap().verified);
    // The system store alone does not know the test CA.
    cfg.tls_trust = TlsTrust::system();
    let err = tls_connect(&srv, "mx.test", &cfg).await.unwrap_err();
    assert!(
        matches!(
            err.kind,
            ErrorKind::TlsHandshake(_) | ErrorKind::TlsConfig(_)
        ),
        "{err}"
    );
}

#[tokio::test]
async fn auth_is_refused_locally_over_tls_whose_certificate_was_not_verified() {
    let pki = pki();
    let srv = hermod(Some(&pki), |_| {}).await;
    let mut cfg = trusting(&pki);
    cfg.tls = TlsMode::OpportunisticInsecure;
    cfg.auth = Some(AuthPlain::new("user", "pw"));
    let err = tls_connect(&srv, "mx.test", &cfg).await.unwrap_err();
    assert_eq!(err.step, Step::Auth);
    assert!(matches!(err.kind, ErrorKind::AuthNotAllowed(_)), "{err}");
}

#[tokio::test]
async fn a_failed_handshake_in_opportunistic_insecure_mode_goes_on_in_plain_text() {
    let peer = Scripted::start(|mut p| async move {
        p.greet(&["STARTTLS"]).await;
        p.expect("STARTTLS").await;
        p.send("220 go ahead\r\n").await;
        // Answer the ClientHello with something that is not TLS, then wait
        // for the client to carry on in plain text.
        let mut hello = [0u8; 1];
        tokio::io::AsyncReadExt::read_exact(&mut p.io, &mut hello)
            .await
            .unwrap();
        p.send("this is not a TLS record\r\n").await;
        loop {
            match p.line().await {
                // TLS alert bytes may precede it on the same "line".
                Some(l) if l.contains("EHLO client.test") => break,
                Some(_) => continue,
                None => panic!("client hung up instead of continuing"),
            }
        }
        p.send("250 scripted.test\r\n").await;
    })
    .await;
    let mut cfg = config();
    cfg.tls = TlsMode::OpportunisticInsecure;
    let client = connect(peer.addr, "broken-tls.test", &cfg).await.unwrap();
    assert!(!client.is_tls());
    assert!(client.tls_failure().is_some());
    peer.finish().await;
}

#[tokio::test]
async fn starttls_refused_by_the_server_fails_the_connection() {
    let peer = Scripted::start(|mut p| async move {
        p.greet(&["STARTTLS"]).await;
        p.expect("STARTTLS").await;
        p.send("454 4.7.0 TLS not available\r\n").await;
    })
    .await;
    let mut cfg = config();
    cfg.tls = TlsMode::Opportunistic;
    let err = connect(peer.addr, "no-tls-today.test", &cfg)
        .await
        .unwrap_err();
    assert_eq!(err.step, Step::StartTls);
    assert_eq!(err.response().unwrap().code, 454);
}

#[tokio::test]
async fn a_host_name_that_cannot_be_verified_is_a_starttls_error() {
    let pki = pki();
    let srv = hermod(Some(&pki), |_| {}).await;
    let mut cfg = trusting(&pki);
    cfg.tls = TlsMode::Required;
    let err = tls_connect(&srv, "not a host name", &cfg)
        .await
        .unwrap_err();
    assert!(matches!(err.kind, ErrorKind::InvalidServerName(_)), "{err}");
}
