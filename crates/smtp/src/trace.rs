//! Trace headers added at reception: `Received:` and the supplemental
//! `X-KumoRef:` header.

pub use hermod_message::trace::supplemental_header;
use hermod_message::{trace, Protocol};

/// Facts about the session that go into the `Received:` header.
pub struct ReceivedParts<'a> {
    pub ehlo: Option<&'a str>,
    pub peer_ip: &'a str,
    pub hostname: &'a str,
    pub listener_ip: &'a str,
    /// `(protocol version, cipher)` when TLS is active.
    pub tls: Option<(&'a str, &'a str)>,
    /// The client authenticated with SMTP AUTH.
    pub authenticated: bool,
}

/// The complete header line, CRLF included.
pub fn received_header(
    p: &ReceivedParts<'_>,
    id: &str,
    recipient: &str,
    now: chrono::DateTime<chrono::Local>,
) -> String {
    let by_comment = format!("Hermod {}", p.listener_ip);
    trace::received_header(
        &trace::Received {
            from: p.ehlo,
            peer_ip: p.peer_ip,
            by: p.hostname,
            by_comment: &by_comment,
            with: Protocol::Esmtp,
            tls: p.tls,
            authenticated: p.authenticated,
            id,
            recipient,
        },
        now,
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use base64::Engine as _;
    use chrono::TimeZone;
    use serde_json::{Map, Value};

    #[test]
    fn received_header_names_peer_host_tls_id_and_recipient() {
        let now = chrono::Local.with_ymd_and_hms(2026, 1, 2, 3, 4, 5).unwrap();
        let p = ReceivedParts {
            ehlo: None,
            peer_ip: "127.0.0.1",
            hostname: "mx.example",
            listener_ip: "127.0.0.1",
            tls: Some(("TLSv1_3", "TLS13_AES_128_GCM_SHA256")),
            authenticated: false,
        };
        let h = received_header(&p, "abc", "b@example.com", now);
        assert!(
            h.starts_with(
                "Received: from unspecified (127.0.0.1)\r\n  by mx.example (Hermod 127.0.0.1)\r\n"
            ),
            "{h}"
        );
        assert!(h.contains("\r\n  with ESMTPS (TLSv1_3:TLS13_AES_128_GCM_SHA256)\r\n  id abc\r\n  for <b@example.com>;\r\n  "), "{h}");
        assert!(h.contains("2 Jan 2026 03:04:05"), "{h}");
        assert!(h.ends_with("\r\n"));
    }

    #[test]
    fn supplemental_header_decodes_to_the_reference_json() {
        let mut meta = Map::new();
        meta.insert("x_campaign".into(), Value::String("c1".into()));
        let h = supplemental_header(
            "X-KumoRef",
            &["b@example.com".into()],
            &["x_campaign".into()],
            &meta,
        );
        assert!(h.lines().all(|l| l.len() <= 78), "{h}");
        let b64: String = h["X-KumoRef: ".len()..].split_whitespace().collect();
        let json = base64::engine::general_purpose::STANDARD
            .decode(b64)
            .unwrap();
        assert_eq!(
            String::from_utf8(json).unwrap(),
            r#"{"_@_":"\\_/","recipient":"b@example.com","x_campaign":"c1"}"#
        );
    }
}
