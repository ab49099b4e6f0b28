//! Status codes and error bodies of the injection API.

mod common;

use common::*;
use serde_json::json;

fn error_text(body: &serde_json::Value) -> String {
    body["error"].as_str().unwrap_or_default().to_string()
}

#[tokio::test]
async fn malformed_json_is_400_naming_the_problem() {
    let s = start(EMPTY_POLICY, |_| {}).await;
    let (status, body) = inject_raw(&s, "{\"envelope_sender\": ").await;
    assert_eq!(status, 400);
    assert!(error_text(&body).contains("malformed JSON"), "{body}");
}

#[tokio::test]
async fn missing_envelope_sender_is_400_naming_the_field() {
    let s = start(EMPTY_POLICY, |_| {}).await;
    let (status, body) = inject(
        &s,
        json!({"recipients": [{"email": "b@example.net"}], "content": "x"}),
    )
    .await;
    assert_eq!(status, 400);
    assert!(error_text(&body).contains("envelope_sender"), "{body}");
}

#[tokio::test]
async fn unknown_field_is_400_naming_the_field() {
    let s = start(EMPTY_POLICY, |_| {}).await;
    let (status, body) = inject(
        &s,
        json!({"envelope_sender": "a@example.com", "recipients": [{"email": "b@example.net"}],
               "content": "Subject: x\n\nbody", "substitutons": {}}),
    )
    .await;
    assert_eq!(status, 400);
    assert!(error_text(&body).contains("substitutons"), "{body}");
}

#[tokio::test]
async fn wrong_type_is_400_naming_the_field_path() {
    let s = start(EMPTY_POLICY, |_| {}).await;
    let (status, body) = inject(
        &s,
        json!({"envelope_sender": "a@example.com", "recipients": [{"email": 42}], "content": "x"}),
    )
    .await;
    assert_eq!(status, 400);
    assert!(error_text(&body).contains("recipients[0].email"), "{body}");
}

#[tokio::test]
async fn template_syntax_error_is_422() {
    let s = start(EMPTY_POLICY, |_| {}).await;
    let (status, body) = inject(
        &s,
        json!({"envelope_sender": "a@example.com", "recipients": [{"email": "b@example.net"}],
               "content": {"text_body": "Hello {{ name"}}),
    )
    .await;
    assert_eq!(status, 422);
    assert!(error_text(&body).contains("content.text_body"), "{body}");
    assert!(s.messages().is_empty());
}

#[tokio::test]
async fn wrong_content_type_is_415() {
    let s = start(EMPTY_POLICY, |_| {}).await;
    let r = client()
        .post(s.url("/api/inject/v1"))
        .header("content-type", "text/plain")
        .body("{}")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 415);
}

#[tokio::test]
async fn body_over_request_body_limit_is_413() {
    let s = start(EMPTY_POLICY, |c| c.request_body_limit = 1024).await;
    let big = "x".repeat(4096);
    let (status, body) = inject(
        &s,
        json!({"envelope_sender": "a@example.com", "recipients": [{"email": "b@example.net"}],
               "content": format!("Subject: x\n\n{big}")}),
    )
    .await;
    assert_eq!(status, 413, "{body}");
    assert!(error_text(&body).contains("1024"), "{body}");
}

#[tokio::test]
async fn every_message_failing_in_the_spool_is_503() {
    let s = start(EMPTY_POLICY, |_| {}).await;
    s.acceptor
        .spool_broken
        .store(true, std::sync::atomic::Ordering::SeqCst);
    let (status, body) = inject(
        &s,
        json!({"envelope_sender": "a@example.com", "recipients": [{"email": "b@example.net"}],
               "content": "Subject: x\n\nbody"}),
    )
    .await;
    assert_eq!(status, 503, "{body}");
}

#[tokio::test]
async fn not_accepting_is_503_for_inject_and_liveness() {
    let s = start(EMPTY_POLICY, |_| {}).await;
    let live = client()
        .get(s.url("/api/check-liveness/v1"))
        .send()
        .await
        .unwrap();
    assert_eq!(live.status().as_u16(), 200);
    s.acceptor
        .not_accepting
        .store(true, std::sync::atomic::Ordering::SeqCst);
    let live = client()
        .get(s.url("/api/check-liveness/v1"))
        .send()
        .await
        .unwrap();
    assert_eq!(live.status().as_u16(), 503);
    let (status, _) = inject(
        &s,
        json!({"envelope_sender": "a@example.com", "recipients": [{"email": "b@example.net"}],
               "content": "Subject: x\n\nbody"}),
    )
    .await;
    assert_eq!(status, 503);
}

fn gzip(data: &[u8]) -> Vec<u8> {
    use std::io::Write;
    let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    e.write_all(data).unwrap();
    e.finish().unwrap()
}

#[tokio::test]
async fn gzip_request_body_is_decompressed() {
    let s = start(EMPTY_POLICY, |_| {}).await;
    let body = json!({"envelope_sender": "a@example.com", "recipients": [{"email": "b@example.net"}],
                      "content": "Subject: zipped\n\nbody"});
    let r = client()
        .post(s.url("/api/inject/v1"))
        .header("content-type", "application/json")
        .header("content-encoding", "gzip")
        .body(gzip(body.to_string().as_bytes()))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 200);
    assert_eq!(s.messages().len(), 1);
}

#[tokio::test]
async fn request_body_limit_applies_after_decompression() {
    let s = start(EMPTY_POLICY, |c| c.request_body_limit = 2048).await;
    let big = "x".repeat(64 * 1024);
    let body = json!({"envelope_sender": "a@example.com", "recipients": [{"email": "b@example.net"}],
                      "content": format!("Subject: x\n\n{big}")});
    let compressed = gzip(body.to_string().as_bytes());
    assert!(
        compressed.len() < 2048,
        "test needs a small compressed body"
    );
    let r = client()
        .post(s.url("/api/inject/v1"))
        .header("content-type", "application/json")
        .header("content-encoding", "gzip")
        .body(compressed)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 413);
}
