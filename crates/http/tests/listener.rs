//! Auth, metrics, TLS and shutdown of the listener.

mod common;

use std::net::{IpAddr, Ipv4Addr};
use std::time::Duration;

use common::*;
use serde_json::json;

const AUTH_POLICY: &str = r#"
local kumo = require 'kumo'
kumo.on('http_server_validate_auth_basic', function(user, password)
  return user == 'api' and password == 's3cret'
end)
"#;

fn untrusted_client() -> reqwest::Client {
    let _ = rustls::crypto::ring::default_provider().install_default();
    reqwest::Client::builder()
        .local_address(IpAddr::V4(Ipv4Addr::new(127, 0, 0, 2)))
        .timeout(Duration::from_secs(20))
        .no_proxy()
        .build()
        .unwrap()
}

#[tokio::test]
async fn untrusted_peer_without_credentials_gets_401() {
    let s = start(AUTH_POLICY, trust_only("127.0.0.1")).await;
    let r = untrusted_client()
        .get(s.url("/api/check-liveness/v1"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 401);
}

#[tokio::test]
async fn untrusted_peer_with_valid_basic_credentials_is_authorised() {
    let s = start(AUTH_POLICY, trust_only("127.0.0.1")).await;
    let r = untrusted_client()
        .post(s.url("/api/inject/v1"))
        .basic_auth("api", Some("s3cret"))
        .json(
            &json!({"envelope_sender": "a@example.com", "recipients": [{"email": "b@example.net"}],
                      "content": "Subject: x\n\nbody"}),
        )
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 200);
    let msgs = s.messages();
    assert_eq!(msgs[0].get_meta("http_auth"), Some(json!("api")));
    assert_eq!(msgs[0].get_meta("received_from"), Some(json!("127.0.0.2")));
}

#[tokio::test]
async fn untrusted_peer_with_wrong_password_gets_401() {
    let s = start(AUTH_POLICY, trust_only("127.0.0.1")).await;
    let r = untrusted_client()
        .get(s.url("/api/check-liveness/v1"))
        .basic_auth("api", Some("guess"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 401);
}

#[tokio::test]
async fn malformed_authorization_header_gets_400() {
    let s = start(AUTH_POLICY, trust_only("127.0.0.1")).await;
    let r = untrusted_client()
        .get(s.url("/api/check-liveness/v1"))
        .header("authorization", "Basic %%%")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 400);
}

#[tokio::test]
async fn metrics_count_messages_received_over_http() {
    let s = start(EMPTY_POLICY, |_| {}).await;
    let (status, _) = inject(
        &s,
        json!({"envelope_sender": "a@example.com", "recipients": [{"email": "b@example.net"}],
               "content": "Subject: x\n\nbody"}),
    )
    .await;
    assert_eq!(status, 200);
    let text = client()
        .get(s.url("/metrics"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(
        text.contains("total_messages_received{service=\"http_listener\"}"),
        "{text}"
    );
    let doc: serde_json::Value = client()
        .get(s.url("/metrics.json"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let n = doc["total_messages_received"]["value"]["service"]["http_listener"]
        .as_u64()
        .unwrap_or(0);
    assert!(n >= 1, "{doc}");
}

#[tokio::test]
async fn tls_listener_serves_over_a_self_signed_certificate() {
    let s = start(EMPTY_POLICY, |c| c.use_tls = true).await;
    let c = reqwest::Client::builder()
        .tls_danger_accept_invalid_certs(true)
        .timeout(Duration::from_secs(20))
        .no_proxy()
        .build()
        .unwrap();
    let r = c
        .get(format!("https://{}/api/check-liveness/v1", s.addr))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 200);
}

#[tokio::test]
async fn cancelled_listener_stops_and_refuses_new_connections() {
    let mut s = start(EMPTY_POLICY, |_| {}).await;
    s.shutdown.cancel();
    let handle = s.handle.take().unwrap();
    tokio::time::timeout(Duration::from_secs(10), handle.wait())
        .await
        .expect("stops in time");
    let r = client().get(s.url("/api/check-liveness/v1")).send().await;
    assert!(r.is_err(), "listener still answers after shutdown");
}

#[tokio::test]
async fn bind_conflict_is_returned_as_an_error() {
    let s = start(EMPTY_POLICY, |_| {}).await;
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("p.lua");
    std::fs::write(&path, EMPTY_POLICY).unwrap();
    let (engine, _) = hermod_policy::Engine::start(hermod_policy::EngineOptions::new(&path))
        .await
        .unwrap();
    let cfg = hermod_http::HttpListenerConfig {
        listen: s.addr.to_string(),
        ..Default::default()
    };
    let r = hermod_http::start_listener(
        cfg,
        engine,
        std::sync::Arc::new(RecordingAcceptor::default()),
        tokio_util::sync::CancellationToken::new(),
    )
    .await;
    assert!(matches!(r, Err(hermod_http::HttpError::Bind { .. })));
}

#[tokio::test]
async fn start_http_listener_in_init_records_the_configuration() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("p.lua");
    std::fs::write(
        &path,
        r#"
local kumo = require 'kumo'
kumo.on('init', function()
  kumo.start_http_listener { listen = '127.0.0.1:0', trusted_hosts = { '10.0.0.0/8' }, request_body_limit = 4096 }
end)
"#,
    )
    .unwrap();
    let mut opts = hermod_policy::EngineOptions::new(&path);
    opts.registrars.push(hermod_http::register);
    let (_engine, collected) = hermod_policy::Engine::start(opts).await.unwrap();
    let cfgs = collected.take::<hermod_http::HttpListenerConfig>();
    assert_eq!(cfgs.len(), 1);
    assert_eq!(cfgs[0].request_body_limit, 4096);
    assert!(cfgs[0].is_trusted("10.9.8.7".parse().unwrap()));
    assert!(!cfgs[0].is_trusted("127.0.0.1".parse().unwrap()));
}

#[tokio::test]
async fn start_http_listener_rejects_unknown_keys() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("p.lua");
    std::fs::write(
        &path,
        "local kumo = require 'kumo'\nkumo.on('init', function() kumo.start_http_listener { listen = '127.0.0.1:0', use_tsl = true } end)\n",
    )
    .unwrap();
    let mut opts = hermod_policy::EngineOptions::new(&path);
    opts.registrars.push(hermod_http::register);
    let err = hermod_policy::Engine::start(opts)
        .await
        .err()
        .map(|e| e.to_string())
        .unwrap_or_default();
    assert!(err.contains("use_tsl"), "{err}");
}

#[tokio::test]
async fn untrusted_peer_with_valid_bearer_token_is_authorised() {
    let policy = r#"
local kumo = require 'kumo'
kumo.on('http_server_validate_auth_bearer', function(token) return token == 'tok-123' end)
"#;
    let s = start(policy, trust_only("127.0.0.1")).await;
    let ok = untrusted_client()
        .get(s.url("/api/check-liveness/v1"))
        .bearer_auth("tok-123")
        .send()
        .await
        .unwrap();
    assert_eq!(ok.status().as_u16(), 200);
    let bad = untrusted_client()
        .get(s.url("/api/check-liveness/v1"))
        .bearer_auth("tok-999")
        .send()
        .await
        .unwrap();
    assert_eq!(bad.status().as_u16(), 401);
}
