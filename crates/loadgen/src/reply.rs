//! SMTP reply parsing.

use crate::smtp_client::ClientError;

/// One (possibly multi-line) SMTP reply.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reply {
    pub code: u16,
    pub lines: Vec<String>,
}

impl Reply {
    pub fn is_positive(&self) -> bool {
        (200..400).contains(&self.code)
    }

    /// Message ids from a Hermod `250 OK ids=<id> <id>...` (or `PARTIAL ids=`)
    /// reply; empty for servers that do not report ids.
    pub fn ids(&self) -> Vec<String> {
        let Some(first) = self.lines.first() else {
            return Vec::new();
        };
        match first.find("ids=") {
            Some(pos) => first[pos + 4..]
                .split_ascii_whitespace()
                .map(str::to_owned)
                .collect(),
            None => Vec::new(),
        }
    }

    pub fn is_partial(&self) -> bool {
        self.lines.first().is_some_and(|l| l.starts_with("PARTIAL"))
    }
}

impl std::fmt::Display for Reply {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} {}", self.code, self.lines.join(" / "))
    }
}

/// Parses one reply line (without CRLF) into (code, is_last_line, text).
pub fn parse_reply_line(line: &str) -> Result<(u16, bool, &str), ClientError> {
    let bytes = line.as_bytes();
    if bytes.len() < 3 || !bytes[..3].iter().all(u8::is_ascii_digit) {
        return Err(ClientError::Malformed(truncate(line)));
    }
    let code: u16 = line[..3]
        .parse()
        .map_err(|_| ClientError::Malformed(truncate(line)))?;
    if !(200..600).contains(&code) {
        return Err(ClientError::Malformed(truncate(line)));
    }
    match bytes.get(3) {
        None => Ok((code, true, "")),
        Some(b' ') => Ok((code, true, &line[4..])),
        Some(b'-') => Ok((code, false, &line[4..])),
        Some(_) => Err(ClientError::Malformed(truncate(line))),
    }
}

pub(crate) fn truncate(s: &str) -> String {
    s.chars().take(120).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parse_reply_line_distinguishes_continuation_and_last_lines() {
        assert_eq!(
            parse_reply_line("250-PIPELINING").unwrap(),
            (250, false, "PIPELINING")
        );
        assert_eq!(
            parse_reply_line("250 OK ids=abc").unwrap(),
            (250, true, "OK ids=abc")
        );
        assert_eq!(parse_reply_line("354").unwrap(), (354, true, ""));
    }

    #[test]
    fn parse_reply_line_rejects_garbage() {
        for bad in ["", "25", "abc hello", "250xfoo", "999 no", "100 early"] {
            assert!(parse_reply_line(bad).is_err(), "{bad:?} accepted");
        }
    }

    #[test]
    fn ids_are_extracted_from_ok_and_partial_replies() {
        let ok = Reply {
            code: 250,
            lines: vec!["OK ids=0123abcd 4567ef01".to_owned()],
        };
        assert_eq!(ok.ids(), vec!["0123abcd", "4567ef01"]);
        assert!(!ok.is_partial());
        let partial = Reply {
            code: 250,
            lines: vec!["PARTIAL ids=aa".to_owned()],
        };
        assert_eq!(partial.ids(), vec!["aa"]);
        assert!(partial.is_partial());
        let plain = Reply {
            code: 250,
            lines: vec!["2.0.0 queued".to_owned()],
        };
        assert!(plain.ids().is_empty());
    }
}
