//! The JSON body of `POST /api/inject/v1`, decoded strictly so that a typo
//! is reported instead of silently ignored.

use std::fmt;

use serde::de::{self, MapAccess, Visitor};
use serde::{Deserialize, Deserializer};
use serde_json::{Map, Value};

use crate::trace::TraceHeaders;

/// A request may name at most this many recipients; each becomes a message
/// held in memory until the batch is spooled.
pub const MAX_RECIPIENTS: usize = 100_000;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct InjectRequest {
    pub envelope_sender: String,
    pub recipients: Vec<Recipient>,
    pub content: Content,
    #[serde(default)]
    pub substitutions: Map<String, Value>,
    #[serde(default)]
    pub template_dialect: TemplateDialect,
    #[serde(default)]
    pub deferred_spool: bool,
    #[serde(default)]
    pub deferred_generation: bool,
    #[serde(default)]
    pub trace_headers: TraceHeaders,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Recipient {
    pub email: String,
    #[serde(default)]
    pub name: Option<String>,
    #[serde(default)]
    pub substitutions: Map<String, Value>,
    #[serde(default)]
    pub metadata: Map<String, Value>,
}

#[derive(Debug, Default, Clone, Copy, PartialEq, Eq, Deserialize)]
pub enum TemplateDialect {
    #[default]
    Jinja,
    Static,
    Handlebars,
}

/// `content`: a complete RFC 5322 message (used as a template) or the
/// parts to build one from.
#[derive(Debug)]
pub enum Content {
    Rfc5322(String),
    Builder(Box<Builder>),
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Builder {
    #[serde(default)]
    pub text_body: Option<String>,
    #[serde(default)]
    pub html_body: Option<String>,
    #[serde(default)]
    pub amp_html_body: Option<String>,
    #[serde(default)]
    pub headers: OrderedHeaders,
    #[serde(default)]
    pub subject: Option<String>,
    #[serde(default)]
    pub from: Option<Address>,
    #[serde(default)]
    pub reply_to: Option<Address>,
    #[serde(default)]
    pub attachments: Vec<Attachment>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Address {
    pub email: String,
    #[serde(default)]
    pub name: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Attachment {
    pub data: String,
    pub content_type: String,
    #[serde(default)]
    pub file_name: Option<String>,
    #[serde(default)]
    pub content_id: Option<String>,
    #[serde(default)]
    pub base64: bool,
}

/// Header name → value, in the order the client gave them.
#[derive(Debug, Default)]
pub struct OrderedHeaders(pub Vec<(String, String)>);

impl OrderedHeaders {
    pub fn contains(&self, name: &str) -> bool {
        self.0.iter().any(|(n, _)| n.eq_ignore_ascii_case(name))
    }
}

impl<'de> Deserialize<'de> for OrderedHeaders {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = OrderedHeaders;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("an object of header names to string values")
            }
            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
                let mut out = Vec::new();
                while let Some((k, v)) = map.next_entry::<String, String>()? {
                    out.push((k, v));
                }
                Ok(OrderedHeaders(out))
            }
        }
        d.deserialize_map(V)
    }
}

impl<'de> Deserialize<'de> for Content {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = Content;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a string (RFC 5322 message) or an object (builder)")
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<Content, E> {
                Ok(Content::Rfc5322(v.to_string()))
            }
            fn visit_string<E: de::Error>(self, v: String) -> Result<Content, E> {
                Ok(Content::Rfc5322(v))
            }
            fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<Content, A::Error> {
                Builder::deserialize(de::value::MapAccessDeserializer::new(map))
                    .map(|b| Content::Builder(Box::new(b)))
            }
        }
        d.deserialize_any(V)
    }
}

/// Why a body could not be decoded; all are the client's fault (400).
#[derive(Debug, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct RequestError(pub String);

/// Decode the body, naming the JSON path of a field that is wrong.
pub fn parse(body: &[u8]) -> Result<InjectRequest, RequestError> {
    let de = &mut serde_json::Deserializer::from_slice(body);
    let req: InjectRequest = serde_path_to_error::deserialize(de).map_err(|e| {
        let path = e.path().to_string();
        let inner = e.into_inner();
        let msg = if inner.is_syntax() || inner.is_eof() {
            format!("malformed JSON: {inner}")
        } else if path.is_empty() || path == "." {
            format!("invalid request: {inner}")
        } else {
            format!("invalid request field {path}: {inner}")
        };
        RequestError(msg)
    })?;
    if req.recipients.is_empty() {
        return Err(RequestError(
            "recipients must list at least one recipient".into(),
        ));
    }
    if req.recipients.len() > MAX_RECIPIENTS {
        return Err(RequestError(format!(
            "too many recipients: {} (at most {MAX_RECIPIENTS} per request)",
            req.recipients.len()
        )));
    }
    Ok(req)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn err(body: &str) -> String {
        parse(body.as_bytes()).unwrap_err().0
    }

    #[test]
    fn string_and_builder_content_are_distinguished() {
        let r = parse(br#"{"envelope_sender":"a@x.com","recipients":[{"email":"b@y.com"}],"content":"Subject: hi\n\nbody"}"#)
            .unwrap();
        assert!(matches!(r.content, Content::Rfc5322(ref s) if s.starts_with("Subject")));
        let r = parse(
            br#"{"envelope_sender":"a@x.com","recipients":[{"email":"b@y.com"}],
                "content":{"text_body":"hi","headers":{"X-B":"2","X-A":"1"}},"template_dialect":"Static"}"#,
        )
        .unwrap();
        let Content::Builder(b) = r.content else {
            panic!("expected builder")
        };
        assert_eq!(
            b.headers.0,
            vec![
                ("X-B".to_string(), "2".to_string()),
                ("X-A".to_string(), "1".to_string())
            ]
        );
        assert_eq!(r.template_dialect, TemplateDialect::Static);
        assert!(r.trace_headers.supplemental_header && !r.trace_headers.received_header);
    }

    #[test]
    fn malformed_json_is_named_as_such() {
        assert!(err("{\"envelope_sender\":").starts_with("malformed JSON"));
    }

    #[test]
    fn missing_field_is_named() {
        let e = err(r#"{"recipients":[{"email":"b@y.com"}],"content":"x"}"#);
        assert!(e.contains("missing field `envelope_sender`"), "{e}");
    }

    #[test]
    fn unknown_nested_field_is_named_with_its_path() {
        let e = err(
            r#"{"envelope_sender":"a@x.com","recipients":[{"email":"b@y.com"}],"content":{"text_body":"x","sujbect":"s"}}"#,
        );
        assert!(e.contains("content") && e.contains("sujbect"), "{e}");
    }

    #[test]
    fn wrong_type_is_named_with_its_path() {
        let e = err(r#"{"envelope_sender":"a@x.com","recipients":[{"email":5}],"content":"x"}"#);
        assert!(e.contains("recipients[0].email"), "{e}");
    }

    #[test]
    fn empty_and_oversized_recipient_lists_are_refused() {
        assert!(
            err(r#"{"envelope_sender":"a@x.com","recipients":[],"content":"x"}"#)
                .contains("at least one")
        );
        let many = vec![r#"{"email":"b@y.com"}"#; MAX_RECIPIENTS + 1].join(",");
        let body =
            format!(r#"{{"envelope_sender":"a@x.com","recipients":[{many}],"content":"x"}}"#);
        assert!(err(&body).contains("too many recipients"));
    }
}
