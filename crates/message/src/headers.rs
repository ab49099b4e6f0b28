//! Header lookup (parsed by mail-parser) and header editing on raw bytes.

use base64::Engine;
use mail_parser::{HeaderValue, MessageParser};

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum HeaderError {
    #[error("message content has no header/body separator (blank line)")]
    NoSeparator,
    #[error("header name {0:?} is not a valid field name")]
    BadName(String),
    #[error("header value contains a bare CR or LF")]
    BadValue,
}

/// Raw, unfolded value text of a header occurrence.
fn raw_value(data: &[u8], start: u32, end: u32) -> String {
    let bytes = data.get(start as usize..end as usize).unwrap_or_default();
    let s = String::from_utf8_lossy(bytes);
    s.replace("\r\n", "").replace('\n', "").trim().to_string()
}

fn decoded(value: &HeaderValue<'_>) -> Option<String> {
    match value {
        HeaderValue::Text(t) => Some(t.to_string()),
        HeaderValue::TextList(list) => Some(list.join(", ")),
        _ => None,
    }
}

/// All values of the named header (case-insensitive), decoded to UTF-8 where the
/// parser understands the field, otherwise the raw unfolded value.
pub fn get_all_named(data: &[u8], name: &str) -> Vec<String> {
    let Some(parsed) = MessageParser::default().parse_headers(data) else {
        return Vec::new();
    };
    parsed
        .headers()
        .iter()
        .filter(|h| h.name.as_str().eq_ignore_ascii_case(name))
        .map(|h| decoded(&h.value).unwrap_or_else(|| raw_value(data, h.offset_start, h.offset_end)))
        .collect()
}

pub fn get_first_named(data: &[u8], name: &str) -> Option<String> {
    get_all_named(data, name).into_iter().next()
}

/// Offset of the blank line that ends the header block (the index of its
/// first byte), or the position where the headers end if the body is empty.
fn header_end(data: &[u8]) -> Option<usize> {
    // The first empty line, whether it ends in LF or CRLF: "a\n\r\n" ends
    // the block at the CRLF, which a search for "\n\n" or "\r\n\r\n" misses.
    let mut start = 0;
    while start < data.len() {
        let rest = &data[start..];
        if rest.starts_with(b"\n") || rest.starts_with(b"\r\n") {
            return Some(start);
        }
        start += rest.iter().position(|&b| b == b'\n')? + 1;
    }
    None
}

fn check_name(name: &str) -> Result<(), HeaderError> {
    if name.is_empty() || !name.bytes().all(|b| (33..=126).contains(&b) && b != b':') {
        return Err(HeaderError::BadName(name.to_string()));
    }
    Ok(())
}

fn format_header(name: &str, value: &str, encode: bool) -> Result<Vec<u8>, HeaderError> {
    check_name(name)?;
    let value = if encode && !value.is_ascii() {
        rfc2047(value)
    } else {
        if value.contains(['\r', '\n']) && !is_folded(value) {
            return Err(HeaderError::BadValue);
        }
        value.to_string()
    };
    Ok(format!("{name}: {value}\r\n").into_bytes())
}

/// A value that already contains properly folded continuation lines is kept.
fn is_folded(v: &str) -> bool {
    v.split("\r\n").skip(1).all(|l| l.starts_with([' ', '\t']))
        && !v.replace("\r\n", "").contains(['\r', '\n'])
}

/// RFC 2047 B-encoding, split so that no encoded word exceeds 75 characters.
fn rfc2047(value: &str) -> String {
    let mut words = Vec::new();
    let mut chunk = String::new();
    for ch in value.chars() {
        if chunk.len() + ch.len_utf8() > 45 {
            words.push(std::mem::take(&mut chunk));
        }
        chunk.push(ch);
    }
    if !chunk.is_empty() {
        words.push(chunk);
    }
    words
        .iter()
        .map(|w| {
            format!(
                "=?UTF-8?B?{}?=",
                base64::engine::general_purpose::STANDARD.encode(w)
            )
        })
        .collect::<Vec<_>>()
        .join("\r\n\t")
}

pub fn prepend(data: &[u8], name: &str, value: &str, encode: bool) -> Result<Vec<u8>, HeaderError> {
    let mut out = format_header(name, value, encode)?;
    out.extend_from_slice(data);
    Ok(out)
}

pub fn append(data: &[u8], name: &str, value: &str, encode: bool) -> Result<Vec<u8>, HeaderError> {
    let end = header_end(data).ok_or(HeaderError::NoSeparator)?;
    let h = format_header(name, value, encode)?;
    let mut out = Vec::with_capacity(data.len() + h.len());
    out.extend_from_slice(&data[..end]);
    out.extend_from_slice(&h);
    out.extend_from_slice(&data[end..]);
    Ok(out)
}

/// Remove every occurrence of the named header (with its folded lines).
pub fn remove_all_named(data: &[u8], name: &str) -> Vec<u8> {
    let Some(parsed) = MessageParser::default().parse_headers(data) else {
        return data.to_vec();
    };
    let mut ranges: Vec<(usize, usize)> = parsed
        .headers()
        .iter()
        .filter(|h| h.name.as_str().eq_ignore_ascii_case(name))
        .map(|h| (h.offset_field as usize, h.offset_end as usize))
        .collect();
    if ranges.is_empty() {
        return data.to_vec();
    }
    ranges.sort();
    let mut out = Vec::with_capacity(data.len());
    let mut pos = 0;
    for (start, end) in ranges {
        if start < pos || end > data.len() {
            continue;
        }
        out.extend_from_slice(&data[pos..start]);
        // Depending on the field, offset_end is at or after the line break
        // that ends it; drop the break exactly once.
        let mut e = end;
        if e == 0 || data.get(e - 1) != Some(&b'\n') {
            if data.get(e) == Some(&b'\r') {
                e += 1;
            }
            if data.get(e) == Some(&b'\n') {
                e += 1;
            }
        }
        pos = e;
    }
    out.extend_from_slice(&data[pos..]);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    const MSG: &[u8] = b"Subject: hello\r\nX-Tag: one\r\nFrom: a@example.com\r\nX-Tag: two\r\n  folded\r\n\r\nbody\r\n";

    #[test]
    fn lookup_is_case_insensitive_and_returns_all_values() {
        assert_eq!(get_first_named(MSG, "subject").as_deref(), Some("hello"));
        let tags = get_all_named(MSG, "x-tag");
        assert_eq!(tags.len(), 2);
        assert_eq!(tags[0], "one");
        assert!(tags[1].starts_with("two"));
        assert_eq!(get_first_named(MSG, "missing"), None);
    }

    #[test]
    fn encoded_words_are_decoded() {
        let m = b"Subject: =?UTF-8?B?aMOpbGxv?=\r\n\r\nx";
        assert_eq!(get_first_named(m, "Subject").as_deref(), Some("h\u{e9}llo"));
    }

    #[test]
    fn append_inserts_before_the_blank_line() {
        let out = append(MSG, "X-New", "v", false).unwrap();
        let s = String::from_utf8(out).unwrap();
        assert!(s.contains("folded\r\nX-New: v\r\n\r\nbody"), "{s}");
    }

    /// Fuzz finding (message_headers): an LF line followed by a CRLF blank
    /// line put the new header into the body.
    #[test]
    fn append_finds_a_crlf_blank_line_after_an_lf_line() {
        let data = b"cc:(cc:3\n\r\n\n\x01I\0=";
        let out = append(data, "X-Fuzz", "", false).unwrap();
        assert_eq!(get_all_named(&out, "X-Fuzz"), vec![String::new()]);
        assert_eq!(&out[..9], b"cc:(cc:3\n");
        assert!(out.ends_with(b"\r\n\n\x01I\0="));
    }

    #[test]
    fn append_without_separator_is_an_error() {
        assert_eq!(
            append(b"no separator", "X", "v", false),
            Err(HeaderError::NoSeparator)
        );
    }

    #[test]
    fn prepend_puts_the_header_first() {
        let out = prepend(MSG, "Received", "from x", false).unwrap();
        assert!(out.starts_with(b"Received: from x\r\nSubject: hello"));
    }

    #[test]
    fn encode_true_produces_rfc2047_that_round_trips() {
        let out = append(b"A: b\r\n\r\n", "Subject", "h\u{e9}llo w\u{f6}rld", true).unwrap();
        assert!(String::from_utf8_lossy(&out).contains("=?UTF-8?B?"));
        assert_eq!(
            get_first_named(&out, "subject").as_deref(),
            Some("h\u{e9}llo w\u{f6}rld")
        );
    }

    #[test]
    fn remove_all_named_drops_folded_occurrences() {
        let out = remove_all_named(MSG, "x-tag");
        let s = String::from_utf8(out).unwrap();
        assert_eq!(s, "Subject: hello\r\nFrom: a@example.com\r\n\r\nbody\r\n");
    }

    #[test]
    fn header_injection_is_refused() {
        assert_eq!(
            append(MSG, "X", "a\r\nBcc: evil", false),
            Err(HeaderError::BadValue)
        );
        assert!(matches!(
            append(MSG, "Bad Name", "v", false),
            Err(HeaderError::BadName(_))
        ));
    }
}
