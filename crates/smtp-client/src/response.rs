//! SMTP replies: parsing reply lines and assembling multi-line replies into
//! one [`Response`] the way delivery log records report them.

use std::fmt;

/// An RFC 3463 enhanced status code (`class.subject.detail`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct EnhancedStatusCode {
    pub class: u8,
    pub subject: u16,
    pub detail: u16,
}

impl EnhancedStatusCode {
    /// `text` starts with an enhanced code followed by a space (or ends
    /// after it): the code and the rest. Only classes 2, 4 and 5 exist, so
    /// text like "3.1.4 is pi" is left alone.
    fn split(text: &str) -> Option<(Self, &str)> {
        let (code, rest) = text.split_once(' ').unwrap_or((text, ""));
        let mut parts = code.split('.');
        let class: u8 = parse_digits(parts.next()?, 1)?;
        let subject: u16 = parse_digits(parts.next()?, 3)?;
        let detail: u16 = parse_digits(parts.next()?, 3)?;
        if parts.next().is_some() || !matches!(class, 2 | 4 | 5) {
            return None;
        }
        Some((
            Self {
                class,
                subject,
                detail,
            },
            rest,
        ))
    }
}

/// Only ASCII digits, 1..=max of them (`str::parse` would accept a `+`).
fn parse_digits<T: std::str::FromStr>(s: &str, max: usize) -> Option<T> {
    if s.is_empty() || s.len() > max || !s.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    s.parse().ok()
}

impl fmt::Display for EnhancedStatusCode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}.{}.{}", self.class, self.subject, self.detail)
    }
}

/// One complete reply from the server.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Response {
    pub code: u16,
    /// Taken from the first line when it starts with one.
    pub enhanced_code: Option<EnhancedStatusCode>,
    /// The text after the code (and after the enhanced code): the lines of
    /// a multi-line reply joined with `\n`, each continuation line without
    /// a repeat of the first line's enhanced code.
    pub content: String,
    /// The command line this reply answered, without its CRLF (`"."` for the
    /// end of the message data, `"AUTH PLAIN"` without the credentials);
    /// `None` for the banner and for replies made up locally.
    pub command: Option<String>,
}

impl Response {
    /// A reply the client makes up itself (for example when a message is
    /// larger than the server accepts, so nothing is sent).
    pub fn local(code: u16, enhanced: (u8, u16, u16), content: &str) -> Self {
        Self {
            code,
            enhanced_code: Some(EnhancedStatusCode {
                class: enhanced.0,
                subject: enhanced.1,
                detail: enhanced.2,
            }),
            content: content.to_string(),
            command: None,
        }
    }

    pub fn is_success(&self) -> bool {
        (200..300).contains(&self.code)
    }

    pub fn is_transient(&self) -> bool {
        (400..500).contains(&self.code)
    }

    pub fn is_permanent(&self) -> bool {
        (500..600).contains(&self.code)
    }

    /// The reply on one line: code, enhanced code and the content with each
    /// line break turned into a space (the form log records use).
    pub fn to_single_line(&self) -> String {
        self.to_string()
    }
}

impl fmt::Display for Response {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.code)?;
        if let Some(e) = &self.enhanced_code {
            write!(f, " {e}")?;
        }
        if !self.content.is_empty() {
            write!(f, " {}", self.content.replace(['\r', '\n'], " "))?;
        }
        Ok(())
    }
}

/// One parsed reply line.
#[derive(Debug, PartialEq, Eq)]
pub(crate) struct ReplyLine<'a> {
    pub code: u16,
    /// `ddd ` or a bare `ddd`: the last line of the reply.
    pub last: bool,
    pub text: &'a str,
}

/// Parses one reply line (without its CRLF). RFC 5321 §4.2: three digits,
/// then a space or a hyphen, then text; a bare `ddd` is accepted as a last
/// line because some servers send it. Anything else is garbage.
pub(crate) fn parse_line(line: &str) -> Option<ReplyLine<'_>> {
    let b = line.as_bytes();
    if b.len() < 3 || !b[..3].iter().all(u8::is_ascii_digit) {
        return None;
    }
    // The first digit of a reply code is 2..=5 (1yz is not used by SMTP).
    if !(b'2'..=b'5').contains(&b[0]) {
        return None;
    }
    let code = u16::from(b[0] - b'0') * 100 + u16::from(b[1] - b'0') * 10 + u16::from(b[2] - b'0');
    match b.get(3) {
        None => Some(ReplyLine {
            code,
            last: true,
            text: "",
        }),
        Some(b' ') => Some(ReplyLine {
            code,
            last: true,
            text: &line[4..],
        }),
        Some(b'-') => Some(ReplyLine {
            code,
            last: false,
            text: &line[4..],
        }),
        Some(_) => None,
    }
}

/// Collects the lines of one reply.
pub(crate) struct ReplyBuilder {
    code: u16,
    enhanced_code: Option<EnhancedStatusCode>,
    content: String,
}

impl ReplyBuilder {
    pub fn new(first: &ReplyLine<'_>) -> Self {
        let (enhanced_code, text) = match EnhancedStatusCode::split(first.text) {
            Some((code, rest)) => (Some(code), rest),
            None => (None, first.text),
        };
        Self {
            code: first.code,
            enhanced_code,
            content: text.to_string(),
        }
    }

    /// Adds a continuation or last line; `Err` when its code differs from
    /// the first line's (RFC 5321 §4.2.1 requires the same code).
    pub fn push(&mut self, line: &ReplyLine<'_>) -> Result<(), ()> {
        if line.code != self.code {
            return Err(());
        }
        let mut text = line.text;
        if let Some(enhanced) = self.enhanced_code {
            if let Some((code, rest)) = EnhancedStatusCode::split(text) {
                if code == enhanced {
                    text = rest;
                }
            }
        }
        self.content.push('\n');
        self.content.push_str(text);
        Ok(())
    }

    pub fn build(self, command: Option<String>) -> Response {
        Response {
            code: self.code,
            enhanced_code: self.enhanced_code,
            content: self.content,
            command,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn reply(lines: &[&str]) -> Response {
        let first = parse_line(lines[0]).unwrap();
        let mut b = ReplyBuilder::new(&first);
        for l in &lines[1..] {
            b.push(&parse_line(l).unwrap()).unwrap();
        }
        b.build(None)
    }

    #[test]
    fn single_line_reply_with_enhanced_code_splits_code_and_text() {
        let r = reply(&["250 2.1.5 Ok"]);
        assert_eq!(r.code, 250);
        assert_eq!(r.enhanced_code.unwrap().to_string(), "2.1.5");
        assert_eq!(r.content, "Ok");
        assert_eq!(r.to_string(), "250 2.1.5 Ok");
    }

    #[test]
    fn multi_line_reply_joins_lines_and_drops_repeated_enhanced_codes() {
        let r = reply(&[
            "550-5.7.1 first",
            "550-5.7.1 second",
            "550 third without code",
        ]);
        assert_eq!(r.content, "first\nsecond\nthird without code");
        assert_eq!(
            r.to_single_line(),
            "550 5.7.1 first second third without code"
        );
    }

    #[test]
    fn text_that_only_looks_like_an_enhanced_code_is_kept() {
        assert_eq!(reply(&["250 3.1.4 pi"]).enhanced_code, None);
        assert_eq!(reply(&["250 2.0.0.1 x"]).enhanced_code, None);
        assert_eq!(reply(&["250 2.0 x"]).enhanced_code, None);
        assert_eq!(reply(&["250 +2.0.0 x"]).enhanced_code, None);
        assert_eq!(reply(&["250 2.0.0"]).content, "");
    }

    #[test]
    fn garbage_lines_are_not_replies() {
        for line in [
            "",
            "25",
            "abc def",
            "2500 x",
            "250x",
            "099 x",
            "650 x",
            "２５０ x",
        ] {
            assert_eq!(parse_line(line), None, "{line:?}");
        }
        assert!(parse_line("250").unwrap().last);
        assert!(!parse_line("250-").unwrap().last);
    }

    #[test]
    fn a_continuation_with_another_code_is_refused() {
        let mut b = ReplyBuilder::new(&parse_line("250-a").unwrap());
        assert!(b.push(&parse_line("251 b").unwrap()).is_err());
    }
}
