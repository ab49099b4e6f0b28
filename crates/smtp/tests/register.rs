//! `kumo.start_esmtp_listener` from a policy, and listener start-up errors.

mod common;

use common::*;
use hermod_policy::{Engine, EngineOptions};
use hermod_smtp::{start_listener, EsmtpListenerConfig, SmtpError};
use tokio_util::sync::CancellationToken;

fn options(dir: &tempfile::TempDir, policy: &str) -> EngineOptions {
    let path = dir.path().join("policy.lua");
    std::fs::write(&path, policy).unwrap();
    let mut opts = EngineOptions::new(&path);
    opts.registrars.push(hermod_smtp::register);
    opts
}

#[tokio::test]
async fn listener_configured_in_init_is_recorded_and_can_be_started() {
    let dir = tempfile::tempdir().unwrap();
    let policy = r#"
local kumo = require 'kumo'
kumo.on('init', function()
  kumo.start_esmtp_listener { listen = '127.0.0.1:0', hostname = 'mx.reg', banner = 'Welcome',
    relay_hosts = { '127.0.0.0/8' }, client_timeout = '5s' }
end)
"#;
    let (engine, collected) = Engine::start(options(&dir, policy)).await.unwrap();
    let cfgs = collected.take::<EsmtpListenerConfig>();
    assert_eq!(cfgs.len(), 1);
    assert_eq!(cfgs[0].hostname, "mx.reg");
    let acceptor = TestAcceptor::new();
    let token = CancellationToken::new();
    let handle = start_listener(cfgs[0].clone(), engine, acceptor, token.clone())
        .await
        .unwrap();
    let mut c = Client::connect(handle.local_addr()).await;
    assert_eq!(c.expect(220).await, "mx.reg Welcome");
    token.cancel();
    c.expect(421).await;
    tokio::time::timeout(STEP, handle.join()).await.unwrap();
}

#[tokio::test]
async fn invalid_listen_address_fails_init_with_file_and_line() {
    let dir = tempfile::tempdir().unwrap();
    let policy = "local kumo = require 'kumo'\nkumo.on('init', function()\n  kumo.start_esmtp_listener { listen = 'not-an-address' }\nend)\n";
    let err = Engine::start(options(&dir, policy))
        .await
        .err()
        .unwrap()
        .to_string();
    assert!(err.contains("policy.lua:3:"), "{err}");
    assert!(err.contains("not-an-address"), "{err}");
}

#[tokio::test]
async fn misspelled_key_fails_init_naming_the_key() {
    let dir = tempfile::tempdir().unwrap();
    let policy = "local kumo = require 'kumo'\nkumo.on('init', function()\n  kumo.start_esmtp_listener { listen = '127.0.0.1:0', max_mesage_size = 1 }\nend)\n";
    let err = Engine::start(options(&dir, policy))
        .await
        .err()
        .unwrap()
        .to_string();
    assert!(
        err.contains("max_mesage_size") && err.contains("policy.lua:3:"),
        "{err}"
    );
}

#[tokio::test]
async fn bind_failure_is_reported_by_start_listener() {
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let (engine, _dir) = engine_with("").await;
    let mut cfg = config();
    cfg.listen = taken.local_addr().unwrap().to_string();
    let r = start_listener(cfg, engine, TestAcceptor::new(), CancellationToken::new()).await;
    match r {
        Err(SmtpError::Bind { addr, .. }) => {
            assert_eq!(addr, taken.local_addr().unwrap().to_string())
        }
        Err(other) => panic!("unexpected error {other}"),
        Ok(_) => panic!("second bind on the same address succeeded"),
    }
}

#[tokio::test]
async fn mismatched_tls_key_is_reported_at_start() {
    let (engine, _dir) = engine_with("").await;
    let a = rcgen::generate_simple_self_signed(vec!["a.test".to_string()]).unwrap();
    let b = rcgen::generate_simple_self_signed(vec!["b.test".to_string()]).unwrap();
    let mut cfg = config();
    cfg.tls_certificate = Some(hermod_smtp::KeySource::Data {
        key_data: a.cert.pem(),
    });
    cfg.tls_private_key = Some(hermod_smtp::KeySource::Data {
        key_data: b.signing_key.serialize_pem(),
    });
    let r = start_listener(cfg, engine, TestAcceptor::new(), CancellationToken::new()).await;
    assert!(matches!(r, Err(SmtpError::Tls(_))), "{:?}", r.err());
}
