//! Trace headers for injected messages: the HTTP form of `Received:` and
//! the supplemental `X-KumoRef:` header (same encoding as the SMTP listener).

use hermod_message::{trace, Protocol};
use serde::Deserialize;
use serde_json::{Map, Value};

fn default_true() -> bool {
    true
}

fn default_header_name() -> String {
    "X-KumoRef".into()
}

/// `trace_headers` of an inject request. Unlike SMTP, `received_header`
/// defaults to false.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TraceHeaders {
    #[serde(default)]
    pub received_header: bool,
    #[serde(default = "default_true")]
    pub supplemental_header: bool,
    #[serde(default = "default_header_name")]
    pub header_name: String,
    #[serde(default)]
    pub include_meta_names: Vec<String>,
}

impl Default for TraceHeaders {
    fn default() -> Self {
        Self {
            received_header: false,
            supplemental_header: true,
            header_name: default_header_name(),
            include_meta_names: Vec::new(),
        }
    }
}

/// `Received: from <sender domain> (<client ip>) by <hostname> (Hermod) with HTTP id <id> for <rcpt>; <date>`
/// as a full header line with CRLF, folded like the SMTP variant.
pub fn received_header(
    sender_domain: &str,
    peer_ip: &str,
    hostname: &str,
    id: &str,
    recipient: &str,
    now: chrono::DateTime<chrono::Local>,
) -> String {
    trace::received_header(
        &trace::Received {
            from: (!sender_domain.is_empty()).then_some(sender_domain),
            peer_ip,
            by: hostname,
            by_comment: "Hermod",
            with: Protocol::Http,
            tls: None,
            authenticated: false,
            id,
            recipient,
        },
        now,
    )
}

/// The supplemental header for an injected message, which always has
/// exactly one recipient.
pub fn supplemental_header(
    name: &str,
    recipient: &str,
    include: &[String],
    meta: &Map<String, Value>,
) -> String {
    trace::supplemental_header(name, &[recipient.to_string()], include, meta)
}

#[cfg(test)]
mod tests {
    use super::*;
    use base64::Engine as _;
    use chrono::TimeZone;

    #[test]
    fn received_header_names_sender_domain_peer_and_protocol() {
        let now = chrono::Local.with_ymd_and_hms(2026, 1, 2, 3, 4, 5).unwrap();
        let h = received_header(
            "example.com",
            "127.0.0.1",
            "mx.example",
            "abc",
            "b@example.net",
            now,
        );
        assert!(h.starts_with("Received: from example.com (127.0.0.1)\r\n  by mx.example (Hermod)\r\n  with HTTP\r\n  id abc\r\n  for <b@example.net>;"), "{h}");
        assert!(h.ends_with("\r\n"));
    }

    #[test]
    fn supplemental_header_lines_stay_short_and_decode() {
        let h = supplemental_header(
            "X-KumoRef",
            "someone.with.a.long.name@example.com",
            &[],
            &Map::new(),
        );
        assert!(h.lines().all(|l| l.len() <= 78), "{h}");
        let b64: String = h["X-KumoRef: ".len()..].split_whitespace().collect();
        let json = base64::engine::general_purpose::STANDARD
            .decode(b64)
            .unwrap();
        assert_eq!(
            String::from_utf8(json).unwrap(),
            r#"{"_@_":"\\_/","recipient":"someone.with.a.long.name@example.com"}"#
        );
    }
}
