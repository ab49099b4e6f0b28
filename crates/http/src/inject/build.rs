//! Turning rendered templates into RFC 5322 message bytes (CRLF line ends).

use base64::Engine as _;
use mail_builder::headers::address::Address as MbAddress;
use mail_builder::headers::raw::Raw;
use mail_builder::headers::text::Text;
use mail_builder::mime::{BodyPart, MimePart};
use mail_builder::MessageBuilder;

use super::request::{Address, Attachment};

/// Why a message cannot be built from a request's parts: a bad attachment
/// fails the request (HTTP 422), anything else only its recipient.
#[derive(Debug, thiserror::Error)]
pub enum BuildError {
    #[error("content does not start with a header field; expected an RFC 5322 message")]
    NoHeader,
    #[error("content.attachments[{index}].data is not valid base64: {source}")]
    AttachmentData {
        index: usize,
        #[source]
        source: base64::DecodeError,
    },
    #[error("content.attachments[{0}].content_type is not a MIME type")]
    AttachmentType(usize),
    #[error("header name {0:?} is not a valid field name")]
    HeaderName(String),
    #[error("header {0} contains a line break")]
    HeaderLineBreak(String),
    #[error("subject contains a line break")]
    SubjectLineBreak,
    #[error("content needs text_body or html_body")]
    NoBody,
    #[error("assembling the message failed: {0}")]
    Assemble(#[source] std::io::Error),
}

/// `"Name" <email>` (RFC 2047-encoded when the name is not ASCII) or `email`.
pub fn to_header(email: &str, name: Option<&str>) -> String {
    match name.filter(|n| !n.is_empty()) {
        None => email.to_string(),
        Some(n) if n.is_ascii() => {
            let escaped = n.replace('\\', "\\\\").replace('"', "\\\"");
            format!("\"{escaped}\" <{email}>")
        }
        Some(n) => {
            let b64 = base64::engine::general_purpose::STANDARD.encode(n.as_bytes());
            format!("=?utf-8?b?{b64}?= <{email}>")
        }
    }
}

/// Make every line end CRLF (bare LF and bare CR included).
pub fn normalize_crlf(s: &str) -> Vec<u8> {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len() + b.len() / 32);
    let mut i = 0;
    while i < b.len() {
        match b[i] {
            b'\r' => {
                out.extend_from_slice(b"\r\n");
                if b.get(i + 1) == Some(&b'\n') {
                    i += 1;
                }
            }
            b'\n' => out.extend_from_slice(b"\r\n"),
            c => out.push(c),
        }
        i += 1;
    }
    out
}

/// A rendered `content` string as message bytes: CRLF line ends and a
/// `MIME-Version` header.
pub fn finish_rfc5322(rendered: &str) -> Result<Vec<u8>, BuildError> {
    let mut data = normalize_crlf(rendered);
    let first_line = data.split(|&c| c == b'\n').next().unwrap_or_default();
    if !first_line.contains(&b':') {
        return Err(BuildError::NoHeader);
    }
    if !data.ends_with(b"\r\n") {
        data.extend_from_slice(b"\r\n");
    }
    if hermod_message::headers::get_first_named(&data, "MIME-Version").is_none() {
        let mut with = b"MIME-Version: 1.0\r\n".to_vec();
        with.extend_from_slice(&data);
        data = with;
    }
    Ok(data)
}

/// An attachment decoded once per request.
pub struct PreparedAttachment {
    content_type: String,
    file_name: Option<String>,
    content_id: Option<String>,
    body: Vec<u8>,
    is_text: bool,
}

/// Decode base64 data up front so a bad attachment fails the request (422)
/// rather than every recipient.
pub fn prepare_attachments(list: &[Attachment]) -> Result<Vec<PreparedAttachment>, BuildError> {
    list.iter()
        .enumerate()
        .map(|(index, a)| {
            let body = if a.base64 {
                let compact: String = a.data.split_ascii_whitespace().collect();
                base64::engine::general_purpose::STANDARD
                    .decode(compact)
                    .map_err(|source| BuildError::AttachmentData { index, source })?
            } else {
                a.data.as_bytes().to_vec()
            };
            if a.content_type.trim().is_empty() || a.content_type.contains(['\r', '\n']) {
                return Err(BuildError::AttachmentType(index));
            }
            Ok(PreparedAttachment {
                is_text: !a.base64 && a.content_type.starts_with("text/"),
                content_type: a.content_type.clone(),
                file_name: a.file_name.clone(),
                content_id: a.content_id.clone(),
                body,
            })
        })
        .collect()
}

/// The per-recipient rendering of a builder request.
pub struct RenderedParts {
    pub subject: Option<String>,
    pub text_body: Option<String>,
    pub html_body: Option<String>,
    pub amp_html_body: Option<String>,
    pub headers: Vec<(String, String)>,
}

fn check_header(name: &str, value: &str) -> Result<(), BuildError> {
    let valid_name = !name.is_empty() && name.bytes().all(|c| c.is_ascii_graphic() && c != b':');
    if !valid_name {
        return Err(BuildError::HeaderName(name.to_string()));
    }
    if value.contains(['\r', '\n']) {
        return Err(BuildError::HeaderLineBreak(name.to_string()));
    }
    Ok(())
}

/// mail-builder only recognises these exact spellings when deciding
/// whether to add its own.
fn canonical_name(name: &str) -> &str {
    for known in ["Message-ID", "Date", "MIME-Version"] {
        if name.eq_ignore_ascii_case(known) {
            return known;
        }
    }
    name
}

fn mb_address(a: &Address) -> MbAddress<'static> {
    match a.name.as_deref().filter(|n| !n.is_empty()) {
        Some(n) => MbAddress::from((n.to_string(), a.email.clone())),
        None => MbAddress::from(a.email.clone()),
    }
}

fn text_part(content_type: &'static str, body: String) -> MimePart<'static> {
    MimePart::new(content_type, BodyPart::Text(lf_only(body).into()))
}

/// mail-builder turns LF into CRLF but passes a lone CR through, which would
/// put a bare CR on the wire; every line break becomes LF first.
fn lf_only(s: String) -> String {
    if !s.contains('\r') {
        return s;
    }
    s.replace("\r\n", "\n").replace('\r', "\n")
}

/// Assemble a builder message: multipart/alternative of the bodies, wrapped
/// in multipart/related for inline parts and multipart/mixed for attachments.
pub fn build_message(
    parts: RenderedParts,
    from: Option<&Address>,
    reply_to: Option<&Address>,
    attachments: &[PreparedAttachment],
    recipient_email: &str,
    recipient_name: Option<&str>,
) -> Result<Vec<u8>, BuildError> {
    let mut mb = MessageBuilder::new();
    let has_to = parts
        .headers
        .iter()
        .any(|(n, _)| n.eq_ignore_ascii_case("To"));
    if let Some(f) = from {
        mb = mb.from(mb_address(f));
    }
    if !has_to {
        mb = mb.to(mb_address(&Address {
            email: recipient_email.to_string(),
            name: recipient_name.map(str::to_string),
        }));
    }
    if let Some(r) = reply_to {
        mb = mb.reply_to(mb_address(r));
    }
    if let Some(s) = parts.subject {
        if s.contains(['\r', '\n']) {
            return Err(BuildError::SubjectLineBreak);
        }
        mb = mb.subject(s);
    }
    for (name, value) in parts.headers {
        check_header(&name, &value)?;
        let name = canonical_name(&name).to_string();
        mb = if value.is_ascii() {
            mb.header(name, Raw::new(value))
        } else {
            mb.header(name, Text::new(value))
        };
    }

    let mut alternatives = Vec::new();
    if let Some(t) = parts.text_body {
        alternatives.push(text_part("text/plain", t));
    }
    if let Some(a) = parts.amp_html_body {
        alternatives.push(text_part("text/x-amp-html", a));
    }
    if let Some(h) = parts.html_body {
        alternatives.push(text_part("text/html", h));
    }
    let mut body = match alternatives.len() {
        0 => return Err(BuildError::NoBody),
        1 => alternatives.remove(0),
        _ => MimePart::new("multipart/alternative", alternatives),
    };

    let (inline, attached): (Vec<_>, Vec<_>) =
        attachments.iter().partition(|a| a.content_id.is_some());
    let to_part = |a: &PreparedAttachment| {
        let contents = if a.is_text {
            BodyPart::Text(lf_only(String::from_utf8_lossy(&a.body).into_owned()).into())
        } else {
            BodyPart::Binary(a.body.clone().into())
        };
        MimePart::new(a.content_type.clone(), contents)
    };
    if !inline.is_empty() {
        let mut related = vec![body];
        for a in inline {
            let mut p = to_part(a).inline();
            if let Some(cid) = &a.content_id {
                p = p.cid(cid.clone());
            }
            related.push(p);
        }
        body = MimePart::new("multipart/related", related);
    }
    if !attached.is_empty() {
        let mut mixed = vec![body];
        for a in attached {
            mixed.push(
                to_part(a).attachment(a.file_name.clone().unwrap_or_else(|| "attachment".into())),
            );
        }
        body = MimePart::new("multipart/mixed", mixed);
    }
    mb.body(body).write_to_vec().map_err(BuildError::Assemble)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn line_endings_become_crlf() {
        assert_eq!(normalize_crlf("a\nb\r\nc\rd"), b"a\r\nb\r\nc\r\nd".to_vec());
    }

    #[test]
    fn mime_version_is_added_only_when_absent() {
        let d = finish_rfc5322("Subject: x\n\nbody\n").unwrap();
        assert!(d.starts_with(b"MIME-Version: 1.0\r\nSubject: x\r\n\r\nbody\r\n"));
        let d = finish_rfc5322("Mime-Version: 1.0\nSubject: x\n\nbody").unwrap();
        assert_eq!(
            d,
            b"Mime-Version: 1.0\r\nSubject: x\r\n\r\nbody\r\n".to_vec()
        );
        assert!(finish_rfc5322("just text").is_err());
    }

    #[test]
    fn to_header_quotes_and_encodes_names() {
        assert_eq!(to_header("b@y.com", None), "b@y.com");
        assert_eq!(
            to_header("b@y.com", Some("Bo \"B\"")),
            "\"Bo \\\"B\\\"\" <b@y.com>"
        );
        assert!(to_header("b@y.com", Some("Bjørn")).starts_with("=?utf-8?b?"));
    }

    #[test]
    fn header_injection_is_refused() {
        let parts = RenderedParts {
            subject: None,
            text_body: Some("x".into()),
            html_body: None,
            amp_html_body: None,
            headers: vec![("X-A".into(), "1\r\nBcc: evil@x.com".into())],
        };
        assert!(build_message(parts, None, None, &[], "b@y.com", None).is_err());
    }

    /// Fuzz finding (http_inject): a lone CR in a builder body reached the
    /// wire unchanged.
    #[test]
    fn builder_body_with_a_bare_cr_is_emitted_with_crlf_only() {
        let parts = RenderedParts {
            subject: None,
            text_body: Some("t\rn\r\nx\ny".into()),
            html_body: None,
            amp_html_body: None,
            headers: vec![],
        };
        let out = build_message(parts, None, None, &[], "b@y.com", None).unwrap();
        for (i, &c) in out.iter().enumerate() {
            match c {
                b'\r' => assert_eq!(out.get(i + 1), Some(&b'\n'), "bare CR at {i}"),
                b'\n' => assert_eq!(out[i - 1], b'\r', "bare LF at {i}"),
                _ => {}
            }
        }
        assert!(String::from_utf8_lossy(&out).contains("t\r\nn\r\nx\r\ny"));
    }
}
