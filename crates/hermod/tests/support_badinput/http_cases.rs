//! Bad-input catalogue, HTTP injection part (included by
//! `tests/bad_input.rs`): each malformed request gets a 4xx whose JSON
//! `error` names the problem, and the server keeps accepting.

use std::time::Duration;

use serde_json::{json, Value};

use crate::support_badinput::{Hermod, HTTP_NULL_QUEUE, SMTP_NULL_QUEUE};

fn http() -> reqwest::Client {
    let _ = rustls::crypto::ring::default_provider().install_default();
    reqwest::Client::builder()
        .timeout(Duration::from_secs(60))
        .build()
        .expect("building the HTTP client")
}

async fn inject(h: &Hermod, content_type: &str, body: impl Into<reqwest::Body>) -> (u16, Value) {
    let resp = http()
        .post(h.http_url("/api/inject/v1"))
        .header("Content-Type", content_type)
        .body(body)
        .send()
        .await
        .expect("POST /api/inject/v1");
    let status = resp.status().as_u16();
    let text = resp.text().await.expect("response body");
    let v =
        serde_json::from_str(&text).unwrap_or_else(|e| panic!("not JSON ({e}): {status} {text:?}"));
    (status, v)
}

fn valid_request() -> Value {
    json!({
        "envelope_sender": "noreply@ok.test",
        "content": "Subject: hi {{ name }}\r\n\r\nhello\r\n",
        "recipients": [{ "email": "someone@ok.test", "name": "Someone" }]
    })
}

async fn http_server() -> Hermod {
    Hermod::start(
        "",
        "request_body_limit = 400000",
        &format!("{SMTP_NULL_QUEUE}{HTTP_NULL_QUEUE}"),
    )
    .await
}

/// A 4xx with a JSON `error` that mentions `needle`, then a valid injection
/// and an SMTP transaction both still succeed.
async fn assert_http_error(h: &Hermod, got: (u16, Value), status: u16, needle: &str) {
    assert_eq!(got.0, status, "{}", got.1);
    let err = got.1["error"]
        .as_str()
        .unwrap_or_else(|| panic!("no error field: {}", got.1));
    assert!(
        err.contains(needle),
        "error {err:?} does not mention {needle:?}"
    );
    let (code, body) = inject(h, "application/json", valid_request().to_string()).await;
    assert_eq!((code, &body["success_count"]), (200, &json!(1)), "{body}");
    h.assert_serves().await;
}

#[tokio::test]
async fn http_invalid_json_is_400() {
    let h = http_server().await;
    let got = inject(&h, "application/json", "{\"envelope_sender\": ").await;
    assert_http_error(&h, got, 400, "malformed JSON").await;
}

#[tokio::test]
async fn http_recipients_as_a_string_is_400_naming_the_type() {
    let h = http_server().await;
    let mut req = valid_request();
    req["recipients"] = json!("someone@ok.test");
    let got = inject(&h, "application/json", req.to_string()).await;
    assert_http_error(
        &h,
        got,
        400,
        "invalid request field recipients: invalid type: string",
    )
    .await;
}

#[tokio::test]
async fn http_missing_envelope_sender_is_400_naming_it() {
    let h = http_server().await;
    let mut req = valid_request();
    req.as_object_mut()
        .expect("object")
        .remove("envelope_sender");
    let got = inject(&h, "application/json", req.to_string()).await;
    assert_http_error(&h, got, 400, "missing field `envelope_sender`").await;
}

#[tokio::test]
async fn http_invalid_envelope_sender_is_400() {
    let h = http_server().await;
    let mut req = valid_request();
    req["envelope_sender"] = json!("not an address");
    let got = inject(&h, "application/json", req.to_string()).await;
    assert_http_error(&h, got, 400, "invalid envelope_sender").await;
}

#[tokio::test]
async fn http_unknown_field_is_400_naming_it() {
    let h = http_server().await;
    let mut req = valid_request();
    req["bogus_field"] = json!(1);
    let got = inject(&h, "application/json", req.to_string()).await;
    assert_http_error(&h, got, 400, "bogus_field").await;
}

#[tokio::test]
async fn http_body_over_request_body_limit_is_413() {
    let h = http_server().await;
    let mut req = valid_request();
    req["content"] = json!(format!("Subject: big\r\n\r\n{}\r\n", "x".repeat(500_000)));
    let got = inject(&h, "application/json", req.to_string()).await;
    assert_http_error(&h, got, 413, "request_body_limit of 400000 bytes").await;
}

#[tokio::test]
async fn http_bad_template_syntax_is_422() {
    let h = http_server().await;
    let mut req = valid_request();
    req["content"] = json!("Subject: {{ name \r\n\r\n{% if %}\r\n");
    let got = inject(&h, "application/json", req.to_string()).await;
    assert_http_error(&h, got, 422, "template error in content: syntax error").await;
}

#[tokio::test]
async fn http_wrong_content_type_is_415() {
    let h = http_server().await;
    let got = inject(&h, "text/plain", valid_request().to_string()).await;
    assert_http_error(&h, got, 415, "application/json").await;
}

#[tokio::test]
async fn http_ten_thousand_recipients_all_succeed_into_the_null_queue() {
    let h = http_server().await;
    let recipients: Vec<Value> = (0..10_000)
        .map(|i| json!({ "email": format!("r{i}@ok.test") }))
        .collect();
    let req = json!({
        "envelope_sender": "noreply@ok.test",
        "content": "Subject: bulk\r\n\r\nhello\r\n",
        "recipients": recipients,
    });
    let (code, body) = inject(&h, "application/json", req.to_string()).await;
    assert_eq!(code, 200, "{body}");
    assert_eq!(body["success_count"], 10_000, "{body}");
    assert_eq!(body["fail_count"], 0, "{body}");
    h.assert_serves().await;
}
