//! Incoming reports a listener domain may ask to log: RFC 3464 delivery
//! status notifications (out-of-band bounces, `OOB` records) and RFC 5965
//! ARF feedback reports (`Feedback` records). Both are `multipart/report`
//! messages whose machine-readable part is a block of header-like fields;
//! mail-parser finds the parts, and the fields are read here.
//!
//! Parsing never fails loudly: anything that is not a well-formed report is
//! "not a report" (`None`), so the message is handled as ordinary mail.

use chrono::{DateTime, Utc};
use mail_parser::{MessageParser, MimeHeaders};
use serde_json::{json, Map, Value};

/// One failed recipient of a delivery status notification.
#[derive(Debug, Clone, PartialEq)]
pub struct DsnRecipient {
    /// `Original-Recipient` when given, else `Final-Recipient`, without its
    /// address type (`rfc822;`).
    pub recipient: String,
    /// `Status`, as `(class, subject, detail)`.
    pub status: (u8, u16, u16),
    /// The SMTP code and text of an `smtp` `Diagnostic-Code`: 550 and the
    /// whole text when it does not start with a code, as in KumoMTA.
    pub code: u16,
    pub text: String,
    pub last_attempt: Option<DateTime<Utc>>,
}

/// The parts of an RFC 3464 report an `OOB` record needs.
#[derive(Debug, Clone, PartialEq)]
pub struct Dsn {
    /// `Reporting-MTA`, without its type (`dns;`).
    pub reporting_mta: String,
    /// Recipients whose `Action` is `failed`; other actions (delayed,
    /// delivered, relayed, expanded) are not bounces.
    pub failed: Vec<DsnRecipient>,
}

type Fields = Vec<(String, String)>;

/// The `multipart/report` parts of `data` with the given `report-type`:
/// the content of the part of type `message/<wanted>` and, for ARF, the
/// original message or headers when included.
fn report_parts(
    data: &[u8],
    report_type: &str,
    wanted: &str,
) -> Option<(Vec<u8>, Option<Vec<u8>>)> {
    let msg = MessageParser::default().parse(data)?;
    let ct = msg.root_part().content_type()?;
    if !ct.ctype().eq_ignore_ascii_case("multipart")
        || !ct.subtype()?.eq_ignore_ascii_case("report")
        || !ct
            .attribute("report-type")?
            .eq_ignore_ascii_case(report_type)
    {
        return None;
    }
    let mut fields = None;
    let mut original = None;
    for part in msg.parts.iter().skip(1) {
        let Some(ct) = part.content_type() else {
            continue;
        };
        let sub = ct.subtype().unwrap_or("").to_ascii_lowercase();
        let kind = (ct.ctype().to_ascii_lowercase(), sub);
        match (kind.0.as_str(), kind.1.as_str()) {
            ("message", s) if s == wanted => fields = Some(part.contents().to_vec()),
            ("message", "rfc822") | ("text", "rfc822-headers") => {
                let raw = data.get(part.raw_body_offset() as usize..part.raw_end_offset() as usize);
                original = raw.map(|r| r.to_vec());
            }
            _ => {}
        }
    }
    Some((fields?, original))
}

/// Header-like field blocks separated by blank lines; names lower-cased,
/// folded lines joined.
fn field_blocks(text: &str) -> Vec<Fields> {
    let mut blocks = Vec::new();
    let mut current: Fields = Vec::new();
    for line in text.lines() {
        let line = line.trim_end_matches('\r');
        if line.trim().is_empty() {
            if !current.is_empty() {
                blocks.push(std::mem::take(&mut current));
            }
        } else if line.starts_with([' ', '\t']) {
            if let Some((_, v)) = current.last_mut() {
                v.push(' ');
                v.push_str(line.trim());
            }
        } else if let Some((name, value)) = line.split_once(':') {
            current.push((name.trim().to_ascii_lowercase(), value.trim().to_string()));
        }
    }
    if !current.is_empty() {
        blocks.push(current);
    }
    blocks
}

fn field<'a>(fields: &'a Fields, name: &str) -> Option<&'a str> {
    fields
        .iter()
        .find(|(n, _)| n == name)
        .map(|(_, v)| v.as_str())
}

/// `rfc822; user@example.com` → `user@example.com`.
fn typed_value(v: &str) -> (&str, &str) {
    match v.split_once(';') {
        Some((t, rest)) => (t.trim(), rest.trim()),
        None => ("", v.trim()),
    }
}

fn parse_status(v: &str) -> Option<(u8, u16, u16)> {
    let code = v.split_whitespace().next()?;
    let mut parts = code.split('.');
    let class = parts.next()?.parse().ok()?;
    let subject = parts.next()?.parse().ok()?;
    let detail = parts.next()?.parse().ok()?;
    Some((class, subject, detail))
}

/// RFC 2822 dates; the day name is skipped because reporters get it wrong
/// (RFC 5965's own example says Thu for a Tuesday) and it adds nothing.
fn parse_date(v: &str) -> Option<DateTime<Utc>> {
    let v = v.trim();
    let v = v.split_once(',').map_or(v, |(_, rest)| rest.trim());
    DateTime::parse_from_rfc2822(v)
        .ok()
        .map(|d| d.with_timezone(&Utc))
}

/// The RFC 3464 report in `data`, or `None` when `data` is not one.
pub fn parse_dsn(data: &[u8]) -> Option<Dsn> {
    let (fields, _) = report_parts(data, "delivery-status", "delivery-status")?;
    let text = String::from_utf8_lossy(&fields);
    let mut blocks = field_blocks(&text).into_iter();
    let per_message = blocks.next()?;
    let reporting_mta = typed_value(field(&per_message, "reporting-mta")?)
        .1
        .to_string();
    let mut failed = Vec::new();
    for block in blocks {
        if !field(&block, "action").is_some_and(|a| a.eq_ignore_ascii_case("failed")) {
            continue;
        }
        let recipient = field(&block, "original-recipient")
            .or_else(|| field(&block, "final-recipient"))
            .map(|v| typed_value(v).1.to_string());
        let (Some(recipient), Some(status)) =
            (recipient, field(&block, "status").and_then(parse_status))
        else {
            continue;
        };
        let (code, text) = match field(&block, "diagnostic-code").map(typed_value) {
            Some((t, diag)) if t.eq_ignore_ascii_case("smtp") => match diag.split_once(' ') {
                Some((c, rest)) if c.parse::<u16>().is_ok() => {
                    (c.parse().unwrap_or(550), rest.to_string())
                }
                _ => (550, diag.to_string()),
            },
            _ => (550, String::new()),
        };
        failed.push(DsnRecipient {
            recipient,
            status,
            code,
            text,
            last_attempt: field(&block, "last-attempt-date").and_then(parse_date),
        });
    }
    Some(Dsn {
        reporting_mta,
        failed,
    })
}

/// Fields RFC 5965 defines, by their record key; every other field goes to
/// `extensions`.
const LISTS: &[(&str, &str)] = &[
    ("authentication-results", "authentication_results"),
    ("original-rcpt-to", "original_rcpto_to"),
    ("reported-domain", "reported_domain"),
    ("reported-uri", "reported_uri"),
];
const SINGLE: &[(&str, &str)] = &[
    ("feedback-type", "feedback_type"),
    ("user-agent", "user_agent"),
    ("version", "version"),
    ("original-envelope-id", "original_envelope_id"),
    ("original-mail-from", "original_mail_from"),
    ("source-ip", "source_ip"),
];

/// The RFC 5965 report in `data` as the `feedback_report` object of a
/// `Feedback` record (KumoMTA's field names, including its
/// `original_rcpto_to`), or `None` when `data` is not one.
pub fn parse_arf(data: &[u8]) -> Option<Value> {
    let (fields, original) = report_parts(data, "feedback-report", "feedback-report")?;
    let text = String::from_utf8_lossy(&fields);
    let fields: Fields = field_blocks(&text).into_iter().flatten().collect();
    let mut out = Map::new();
    for (name, key) in SINGLE {
        out.insert(
            key.to_string(),
            field(&fields, name).map_or(Value::Null, |v| json!(v)),
        );
    }
    // Required by RFC 5965: without them it is not a feedback report.
    for required in ["feedback_type", "user_agent", "version"] {
        if out[required].is_null() {
            return None;
        }
    }
    out.insert(
        "arrival_date".into(),
        field(&fields, "arrival-date")
            .or_else(|| field(&fields, "received-date"))
            .and_then(parse_date)
            .map_or(Value::Null, |d| {
                json!(d.to_rfc3339_opts(chrono::SecondsFormat::Secs, true))
            }),
    );
    out.insert(
        "incidents".into(),
        field(&fields, "incidents")
            .and_then(|v| v.parse::<u32>().ok())
            .map_or(Value::Null, |n| json!(n)),
    );
    out.insert(
        "reporting_mta".into(),
        field(&fields, "reporting-mta").map_or(Value::Null, |v| {
            let (mta_type, name) = typed_value(v);
            json!({ "mta_type": mta_type, "name": name })
        }),
    );
    for (name, key) in LISTS {
        let values: Vec<&str> = fields
            .iter()
            .filter(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
            .collect();
        out.insert(key.to_string(), json!(values));
    }
    let mut extensions: Map<String, Value> = Map::new();
    let known = |n: &str| {
        SINGLE.iter().chain(LISTS).any(|(f, _)| *f == n)
            || [
                "arrival-date",
                "received-date",
                "incidents",
                "reporting-mta",
            ]
            .contains(&n)
    };
    for (name, value) in fields.iter().filter(|(n, _)| !known(n)) {
        if let Value::Array(list) = extensions
            .entry(name.clone())
            .or_insert_with(|| Value::Array(Vec::new()))
        {
            list.push(json!(value));
        }
    }
    out.insert("extensions".into(), Value::Object(extensions));
    let original = original.map(|o| String::from_utf8_lossy(&o).replace("\r\n", "\n"));
    out.insert(
        "supplemental_trace".into(),
        original
            .as_deref()
            .and_then(supplemental_trace)
            .unwrap_or(Value::Null),
    );
    out.insert(
        "original_message".into(),
        original.map_or(Value::Null, Value::String),
    );
    Some(Value::Object(out))
}

/// The payload of a Hermod/KumoMTA supplemental trace header (base64 JSON
/// carrying the `"_@_": "\\_/"` marker) among the original's `X-` headers.
fn supplemental_trace(original: &str) -> Option<Value> {
    use base64::Engine as _;
    let headers = original.split("\n\n").next().unwrap_or("");
    let mut unfolded: Vec<String> = Vec::new();
    for line in headers.lines() {
        match unfolded.last_mut() {
            Some(last) if line.starts_with([' ', '\t']) => last.push_str(line.trim()),
            _ => unfolded.push(line.to_string()),
        }
    }
    for line in unfolded {
        let Some((name, value)) = line.split_once(':') else {
            continue;
        };
        if !name.get(..2).is_some_and(|p| p.eq_ignore_ascii_case("x-")) {
            continue;
        }
        let compact: String = value.chars().filter(|c| !c.is_whitespace()).collect();
        let Ok(bytes) = base64::engine::general_purpose::STANDARD.decode(compact) else {
            continue;
        };
        if let Ok(Value::Object(mut obj)) = serde_json::from_slice::<Value>(&bytes) {
            if obj.remove("_@_").as_ref().and_then(Value::as_str) == Some("\\_/") {
                return Some(Value::Object(obj));
            }
        }
    }
    None
}

#[cfg(test)]
#[path = "report_tests.rs"]
mod tests;
