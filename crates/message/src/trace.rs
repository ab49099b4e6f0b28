//! Trace headers added at reception, shared by the ESMTP and HTTP
//! listeners: the common layout of `Received:` and the supplemental
//! `X-KumoRef:` header that lets a bounce or FBL report be tied back to
//! the original recipient.

use base64::Engine as _;
use chrono::{DateTime, Local};
use serde_json::{Map, Value};

use crate::Protocol;

/// The parts of a `Received:` header.
pub struct Received<'a> {
    /// What the client said it is (EHLO name, sender domain); `None` is
    /// written as `unspecified`.
    pub from: Option<&'a str>,
    pub peer_ip: &'a str,
    pub by: &'a str,
    /// The parenthesised comment after `by`, e.g. `Hermod` or
    /// `Hermod 127.0.0.1`.
    pub by_comment: &'a str,
    /// The protocol after `with`.
    pub with: Protocol,
    /// `(protocol version, cipher)` when TLS is active: `with` is then
    /// written with an `S` and the two in parentheses, e.g.
    /// `ESMTPS (TLSv1_3:TLS13_AES_128_GCM_SHA256)`, as RFC 3848 names it.
    pub tls: Option<(&'a str, &'a str)>,
    /// The client authenticated (SMTP AUTH): `with` gets an `A` after the
    /// `S`, e.g. `ESMTPSA` (RFC 3848).
    pub authenticated: bool,
    pub id: &'a str,
    pub recipient: &'a str,
}

/// The complete header line, folded one clause per line, CRLF included.
pub fn received_header(r: &Received<'_>, now: DateTime<Local>) -> String {
    let auth = if r.authenticated { "A" } else { "" };
    let with: std::borrow::Cow<'_, str> = match (r.tls, r.authenticated) {
        (Some((version, cipher)), _) => format!("{}S{auth} ({version}:{cipher})", r.with).into(),
        (None, true) => format!("{}A", r.with).into(),
        (None, false) => r.with.as_str().into(),
    };
    format!(
        "Received: from {} ({})\r\n  by {} ({})\r\n  with {}\r\n  id {}\r\n  for <{}>;\r\n  {}\r\n",
        r.from.unwrap_or("unspecified"),
        r.peer_ip,
        r.by,
        r.by_comment,
        with,
        r.id,
        r.recipient,
        rfc2822_date(now),
    )
}

/// The date as trace and `Date:` headers write it (RFC 2822, local offset).
pub fn rfc2822_date(now: DateTime<Local>) -> String {
    now.to_rfc2822()
}

/// `name: base64(json)` where the JSON is
/// `{"_@_":"\\_/","recipient":...}` plus the `include` meta keys present in
/// `meta`. One recipient is written as a string, several as an array.
/// Folded so no line exceeds 78 characters; CRLF included.
pub fn supplemental_header(
    name: &str,
    recipients: &[String],
    include: &[String],
    meta: &Map<String, Value>,
) -> String {
    let mut obj = Map::new();
    obj.insert("_@_".into(), Value::String("\\_/".into()));
    let rcpt = match recipients {
        [one] => Value::String(one.clone()),
        many => Value::Array(many.iter().cloned().map(Value::String).collect()),
    };
    obj.insert("recipient".into(), rcpt);
    for key in include {
        if let Some(v) = meta.get(key) {
            obj.insert(key.clone(), v.clone());
        }
    }
    let encoded = base64::engine::general_purpose::STANDARD.encode(Value::Object(obj).to_string());
    fold_token(name, &encoded)
}

/// `name: value` for a value without spaces (base64), split with CRLF+TAB
/// so that no line exceeds 78 characters; CRLF included.
fn fold_token(name: &str, value: &str) -> String {
    let mut out = String::with_capacity(name.len() + value.len() + value.len() / 75 * 3 + 4);
    out.push_str(name);
    out.push_str(": ");
    let first = 76usize.saturating_sub(name.len() + 2).max(1);
    let (head, mut rest) = value.split_at(first.min(value.len()));
    out.push_str(head);
    while !rest.is_empty() {
        let (chunk, tail) = rest.split_at(75.min(rest.len()));
        out.push_str("\r\n\t");
        out.push_str(chunk);
        rest = tail;
    }
    out.push_str("\r\n");
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone;

    fn decode(h: &str, name: &str) -> String {
        let b64: String = h[name.len() + 2..].split_whitespace().collect();
        let json = base64::engine::general_purpose::STANDARD
            .decode(b64)
            .unwrap();
        String::from_utf8(json).unwrap()
    }

    #[test]
    fn received_header_lays_out_each_clause_on_its_own_line() {
        let now = Local.with_ymd_and_hms(2026, 1, 2, 3, 4, 5).unwrap();
        let h = received_header(
            &Received {
                from: Some("client.example"),
                peer_ip: "192.0.2.1",
                by: "mx.example",
                by_comment: "Hermod",
                with: Protocol::Http,
                tls: None,
                authenticated: false,
                id: "abc",
                recipient: "b@example.net",
            },
            now,
        );
        let expected = format!(
            "Received: from client.example (192.0.2.1)\r\n  by mx.example (Hermod)\r\n  with HTTP\r\n  id abc\r\n  for <b@example.net>;\r\n  {}\r\n",
            now.to_rfc2822()
        );
        assert_eq!(h, expected);
    }

    #[test]
    fn received_header_without_a_client_name_says_unspecified() {
        let now = Local.with_ymd_and_hms(2026, 1, 2, 3, 4, 5).unwrap();
        let r = Received {
            from: None,
            peer_ip: "::1",
            by: "h",
            by_comment: "Hermod",
            with: Protocol::Esmtp,
            tls: None,
            authenticated: false,
            id: "i",
            recipient: "r@x",
        };
        assert!(received_header(&r, now).starts_with("Received: from unspecified (::1)\r\n"));
    }

    #[test]
    fn received_header_over_tls_names_the_protocol_with_an_s_version_and_cipher() {
        let now = Local.with_ymd_and_hms(2026, 1, 2, 3, 4, 5).unwrap();
        let r = Received {
            from: Some("c"),
            peer_ip: "::1",
            by: "h",
            by_comment: "Hermod",
            with: Protocol::Esmtp,
            tls: Some(("TLSv1_3", "TLS13_AES_128_GCM_SHA256")),
            authenticated: false,
            id: "i",
            recipient: "r@x",
        };
        assert!(received_header(&r, now)
            .contains("\r\n  with ESMTPS (TLSv1_3:TLS13_AES_128_GCM_SHA256)\r\n  id i\r\n"));
    }

    #[test]
    fn received_header_of_an_authenticated_client_says_esmtpsa_or_esmtpa() {
        let now = Local.with_ymd_and_hms(2026, 1, 2, 3, 4, 5).unwrap();
        let mut r = Received {
            from: Some("c"),
            peer_ip: "::1",
            by: "h",
            by_comment: "Hermod",
            with: Protocol::Esmtp,
            tls: Some(("TLSv1_3", "TLS13_AES_128_GCM_SHA256")),
            authenticated: true,
            id: "i",
            recipient: "r@x",
        };
        assert!(received_header(&r, now)
            .contains("\r\n  with ESMTPSA (TLSv1_3:TLS13_AES_128_GCM_SHA256)\r\n"));
        r.tls = None;
        assert!(received_header(&r, now).contains("\r\n  with ESMTPA\r\n"));
    }

    #[test]
    fn rfc2822_date_names_day_month_year_and_time() {
        let now = Local.with_ymd_and_hms(2026, 1, 2, 3, 4, 5).unwrap();
        let d = rfc2822_date(now);
        assert!(d.starts_with("Fri, 2 Jan 2026 03:04:05 "), "{d}");
    }

    #[test]
    fn supplemental_header_with_one_recipient_encodes_it_as_a_string() {
        let mut meta = Map::new();
        meta.insert("x_campaign".into(), Value::String("c1".into()));
        meta.insert("x_other".into(), Value::String("not included".into()));
        let h = supplemental_header(
            "X-KumoRef",
            &["b@example.com".into()],
            &["x_campaign".into(), "x_absent".into()],
            &meta,
        );
        assert_eq!(
            decode(&h, "X-KumoRef"),
            r#"{"_@_":"\\_/","recipient":"b@example.com","x_campaign":"c1"}"#
        );
    }

    #[test]
    fn supplemental_header_with_several_recipients_encodes_an_array() {
        let h = supplemental_header(
            "X-Ref",
            &["a@x.example".into(), "b@x.example".into()],
            &[],
            &Map::new(),
        );
        assert_eq!(
            decode(&h, "X-Ref"),
            r#"{"_@_":"\\_/","recipient":["a@x.example","b@x.example"]}"#
        );
    }

    #[test]
    fn long_supplemental_headers_fold_under_78_columns_with_crlf_tab() {
        let long = format!("{}@example.com", "r".repeat(300));
        let h = supplemental_header("X-KumoRef", std::slice::from_ref(&long), &[], &Map::new());
        let lines: Vec<&str> = h.split("\r\n").collect();
        assert!(lines.len() > 3, "{h}");
        assert_eq!(lines.last(), Some(&""), "ends with CRLF");
        assert!(lines.iter().all(|l| l.len() <= 78), "{h}");
        assert!(lines[1..lines.len() - 1]
            .iter()
            .all(|l| l.starts_with('\t')));
        assert!(decode(&h, "X-KumoRef").contains(&long));
    }
}
