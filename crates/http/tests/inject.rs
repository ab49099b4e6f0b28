//! The injection API over real HTTP.

mod common;

use common::*;
use mail_parser::MessageParser;
use serde_json::json;

fn parse(data: &[u8]) -> mail_parser::Message<'_> {
    MessageParser::default()
        .parse(data)
        .expect("generated message parses")
}

#[tokio::test]
async fn string_content_is_rendered_per_recipient_with_overrides() {
    let s = start(EMPTY_POLICY, |_| {}).await;
    let (status, body) = inject(
        &s,
        json!({
            "envelope_sender": "sender@example.com",
            "recipients": [
                {"email": "alice@example.net", "name": "Alice"},
                {"email": "bob@example.net", "name": "Bob", "substitutions": {"code": "B-2"},
                 "metadata": {"campaign": "c1"}},
            ],
            "substitutions": {"code": "G-1"},
            "content": "From: sender@example.com\nTo: {{ to_header }}\nSubject: Hi {{ name }}\n\nYour code is {{ code }}.\n",
        }),
    )
    .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(
        body,
        json!({"success_count": 2, "fail_count": 0, "failed_recipients": [], "errors": []})
    );

    let msgs = s.messages();
    assert_eq!(msgs.len(), 2);
    let alice = msgs[0].data().unwrap();
    let bob = msgs[1].data().unwrap();
    assert!(
        !alice.windows(2).any(|w| w[1] == b'\n' && w[0] != b'\r'),
        "bare LF left"
    );
    let pa = parse(&alice);
    assert_eq!(pa.subject(), Some("Hi Alice"));
    assert!(pa.body_text(0).unwrap().contains("Your code is G-1."));
    assert!(pa.header("MIME-Version").is_some());
    let pb = parse(&bob);
    assert!(pb.body_text(0).unwrap().contains("Your code is B-2."));
    assert_eq!(msgs[1].recipients()[0].email(), "bob@example.net");
    assert_eq!(msgs[1].sender().email(), "sender@example.com");

    let meta = msgs[1].meta();
    assert_eq!(meta["reception_protocol"], "HTTP");
    assert_eq!(meta["received_from"], "127.0.0.1");
    assert_eq!(meta["received_via"], "127.0.0.1");
    assert_eq!(meta["http_auth"], "127.0.0.1");
    assert_eq!(meta["hostname"], "mx.test.example");
    assert_eq!(meta["extra"], json!({"campaign": "c1"}));
    assert!(msgs[0].get_meta("extra").is_none());

    let info = s.acceptor.received.lock()[0].1.clone();
    assert_eq!(info.protocol, hermod_message::Protocol::Http);
    assert_eq!(info.peer_addr, "127.0.0.1");
    assert_eq!(info.peer_name, "");
    assert!(info.session_id.is_none());
}

#[tokio::test]
async fn builder_content_becomes_a_multipart_message_with_escaped_html() {
    let s = start(EMPTY_POLICY, |_| {}).await;
    let (status, body) = inject(
        &s,
        json!({
            "envelope_sender": "sender@example.com",
            "recipients": [{"email": "carol@example.net", "name": "Carol <C>"}],
            "content": {
                "subject": "Welcome {{ name }}",
                "text_body": "Hello {{ name }}, plan {{ plan }}\n",
                "html_body": "<p>Hello {{ name }}</p>",
                "from": {"email": "news@example.com", "name": "News"},
                "headers": {"X-Campaign": "{{ plan }}"},
                "attachments": [{"data": "aGVsbG8=", "base64": true, "content_type": "application/octet-stream", "file_name": "h.bin"}]
            },
            "substitutions": {"plan": "gold"}
        }),
    )
    .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["success_count"], 1);
    let data = s.messages()[0].data().unwrap();
    let m = parse(&data);
    assert_eq!(m.subject(), Some("Welcome Carol <C>"));
    assert_eq!(
        m.header("X-Campaign").and_then(|h| h.as_text()),
        Some("gold")
    );
    let to = m.to().and_then(|a| a.first()).expect("To header");
    assert_eq!(to.address(), Some("carol@example.net"));
    assert!(m
        .body_text(0)
        .unwrap()
        .contains("Hello Carol <C>, plan gold"));
    assert!(m
        .body_html(0)
        .unwrap()
        .contains("<p>Hello Carol &lt;C&gt;</p>"));
    assert_eq!(m.attachment_count(), 1);
    assert_eq!(m.attachment(0).unwrap().contents(), b"hello");
    assert_eq!(
        m.from().and_then(|a| a.first()).and_then(|a| a.address()),
        Some("news@example.com")
    );
}

#[tokio::test]
async fn reject_in_http_message_generated_fails_only_that_recipient() {
    let policy = r#"
local kumo = require 'kumo'
kumo.on('http_message_generated', function(msg, auth_info)
  if msg:recipient().email == 'bad@example.net' then
    kumo.reject(550, 'not this one')
  end
  msg:set_meta('auth_context', auth_info.identities[1].context)
end)
"#;
    let s = start(policy, |_| {}).await;
    let (status, body) = inject(
        &s,
        json!({
            "envelope_sender": "sender@example.com",
            "recipients": [{"email": "good@example.net"}, {"email": "bad@example.net"}],
            "content": "Subject: x\n\nbody\n",
        }),
    )
    .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["success_count"], 1);
    assert_eq!(body["fail_count"], 1);
    assert_eq!(body["failed_recipients"], json!(["bad@example.net"]));
    let err = body["errors"][0].as_str().unwrap();
    assert!(
        err.starts_with("bad@example.net: ") && err.contains("not this one"),
        "{err}"
    );
    let msgs = s.messages();
    assert_eq!(msgs.len(), 1);
    assert_eq!(msgs[0].get_meta("auth_context"), Some(json!("TrustedHost")));
}

#[tokio::test]
async fn invalid_recipient_address_fails_only_that_recipient() {
    let s = start(EMPTY_POLICY, |_| {}).await;
    let (status, body) = inject(
        &s,
        json!({
            "envelope_sender": "sender@example.com",
            "recipients": [{"email": "no-at-sign"}, {"email": "ok@example.net"}],
            "content": "Subject: x\n\nbody\n",
        }),
    )
    .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["success_count"], 1);
    assert_eq!(body["failed_recipients"], json!(["no-at-sign"]));
}

#[tokio::test]
async fn supplemental_header_is_added_by_default() {
    let s = start(EMPTY_POLICY, |_| {}).await;
    let (status, _) = inject(
        &s,
        json!({"envelope_sender": "a@example.com", "recipients": [{"email": "b@example.net"}],
               "content": "Subject: x\n\nbody\n"}),
    )
    .await;
    assert_eq!(status, 200);
    let data = s.messages()[0].data().unwrap();
    assert!(
        data.starts_with(b"X-KumoRef: "),
        "{}",
        String::from_utf8_lossy(&data)
    );
}

#[tokio::test]
async fn lua_error_in_http_message_generated_fails_only_that_recipient() {
    let policy = r#"
local kumo = require 'kumo'
kumo.on('http_message_generated', function(msg)
  if msg:recipient().email == 'boom@example.net' then
    error('handler exploded')
  end
end)
"#;
    let s = start(policy, |_| {}).await;
    let (status, body) = inject(
        &s,
        json!({
            "envelope_sender": "sender@example.com",
            "recipients": [{"email": "boom@example.net"}, {"email": "fine@example.net"}],
            "content": "Subject: x\n\nbody\n",
        }),
    )
    .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["success_count"], 1);
    assert_eq!(body["failed_recipients"], json!(["boom@example.net"]));
    assert!(
        body["errors"][0]
            .as_str()
            .unwrap()
            .contains("handler exploded"),
        "{body}"
    );
    assert_eq!(s.messages()[0].recipients()[0].email(), "fine@example.net");
}
