//! `msg:check_fix_conformance(CHECKS, FIXES)`: find the RFC 5322 conformance
//! issues KumoMTA names, refuse the ones a policy checks for, and repair the
//! ones it asks to fix. Detection follows KumoMTA's documented rules: a line
//! longer than 78 characters is LINE_TOO_LONG, any 8-bit byte needs a
//! transfer encoding, line endings must be CRLF.
//!
//! Hermod repairs what it can without re-encoding the MIME tree: missing
//! Date, Message-ID and MIME-Version headers are added, line endings become
//! CRLF, a header name's trailing space is removed and a header line without
//! a colon is dropped. Fixing LINE_TOO_LONG or NEEDS_TRANSFER_ENCODING would
//! mean rebuilding the message; asking for it is refused with a clear error
//! rather than ignored.

use std::fmt;

/// One conformance issue, named as in KumoMTA's policies.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Issue {
    MissingColonValue,
    NonCanonicalLineEndings,
    NameEndsWithSpace,
    LineTooLong,
    NeedsTransferEncoding,
    MissingDateHeader,
    MissingMessageIdHeader,
    MissingMimeVersion,
}

impl Issue {
    /// Every issue, in the order KumoMTA lists them.
    pub const ALL: [Issue; 8] = [
        Issue::MissingColonValue,
        Issue::NonCanonicalLineEndings,
        Issue::NameEndsWithSpace,
        Issue::LineTooLong,
        Issue::NeedsTransferEncoding,
        Issue::MissingDateHeader,
        Issue::MissingMessageIdHeader,
        Issue::MissingMimeVersion,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Issue::MissingColonValue => "MISSING_COLON_VALUE",
            Issue::NonCanonicalLineEndings => "NON_CANONICAL_LINE_ENDINGS",
            Issue::NameEndsWithSpace => "NAME_ENDS_WITH_SPACE",
            Issue::LineTooLong => "LINE_TOO_LONG",
            Issue::NeedsTransferEncoding => "NEEDS_TRANSFER_ENCODING",
            Issue::MissingDateHeader => "MISSING_DATE_HEADER",
            Issue::MissingMessageIdHeader => "MISSING_MESSAGE_ID_HEADER",
            Issue::MissingMimeVersion => "MISSING_MIME_VERSION",
        }
    }

    fn bit(self) -> u16 {
        1 << (self as u16)
    }

    /// Whether Hermod can repair this issue.
    fn fixable(self) -> bool {
        !matches!(self, Issue::LineTooLong | Issue::NeedsTransferEncoding)
    }
}

/// A set of issues, written in policies as names joined by `|`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Issues(u16);

#[derive(Debug, thiserror::Error)]
pub enum ConformanceError {
    #[error("unknown conformance issue '{0}'; expected one of {list}", list = names(Issues(u16::MAX)))]
    Unknown(String),
    #[error("Hermod cannot fix {0} yet: it would mean re-encoding the message; check for it instead, or leave it out of the fixes")]
    CannotFix(String),
}

fn names(set: Issues) -> String {
    Issue::ALL
        .iter()
        .filter(|i| set.contains(**i))
        .map(|i| i.name())
        .collect::<Vec<_>>()
        .join("|")
}

impl Issues {
    pub fn parse(text: &str) -> Result<Issues, ConformanceError> {
        let mut set = Issues::default();
        for part in text.split('|').map(str::trim).filter(|p| !p.is_empty()) {
            let issue = Issue::ALL
                .iter()
                .find(|i| i.name().eq_ignore_ascii_case(part))
                .ok_or_else(|| ConformanceError::Unknown(part.to_string()))?;
            set.insert(*issue);
        }
        Ok(set)
    }

    pub fn insert(&mut self, i: Issue) {
        self.0 |= i.bit();
    }

    pub fn contains(self, i: Issue) -> bool {
        self.0 & i.bit() != 0
    }

    pub fn is_empty(self) -> bool {
        self.0 == 0
    }

    fn and(self, other: Issues) -> Issues {
        Issues(self.0 & other.0)
    }

    fn minus(self, other: Issues) -> Issues {
        Issues(self.0 & !other.0)
    }
}

impl fmt::Display for Issues {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&names(*self))
    }
}

/// The issues found in a message's bytes.
pub fn find(data: &[u8]) -> Issues {
    let mut found = Issues::default();
    if !data.is_ascii() {
        found.insert(Issue::NeedsTransferEncoding);
    }
    let mut prev = 0u8;
    let mut line_start = 0usize;
    for (i, &b) in data.iter().enumerate() {
        if (b == b'\n' && prev != b'\r') || (prev == b'\r' && b != b'\n') {
            found.insert(Issue::NonCanonicalLineEndings);
        }
        if b == b'\n' {
            let end = if prev == b'\r' { i - 1 } else { i };
            if end - line_start > 78 {
                found.insert(Issue::LineTooLong);
            }
            line_start = i + 1;
        }
        prev = b;
    }
    if prev == b'\r' {
        found.insert(Issue::NonCanonicalLineEndings);
    }
    if data.len() - line_start > 78 {
        found.insert(Issue::LineTooLong);
    }
    let (mut date, mut id, mut mime) = (false, false, false);
    for line in header_lines(data) {
        if line.first().is_some_and(|c| *c == b' ' || *c == b'\t') {
            continue; // a folded continuation
        }
        let Some(colon) = line.iter().position(|c| *c == b':') else {
            found.insert(Issue::MissingColonValue);
            continue;
        };
        let name = &line[..colon];
        if name.last().is_some_and(|c| *c == b' ' || *c == b'\t') {
            found.insert(Issue::NameEndsWithSpace);
        }
        let name = trim(name);
        let value = trim(&line[colon + 1..]);
        if name.eq_ignore_ascii_case(b"Date") {
            date = true;
        } else if name.eq_ignore_ascii_case(b"Message-ID") {
            id = true;
        } else if name.eq_ignore_ascii_case(b"MIME-Version") && value == b"1.0" {
            mime = true;
        }
    }
    for (present, issue) in [
        (date, Issue::MissingDateHeader),
        (id, Issue::MissingMessageIdHeader),
        (mime, Issue::MissingMimeVersion),
    ] {
        if !present {
            found.insert(issue);
        }
    }
    found
}

fn trim(b: &[u8]) -> &[u8] {
    let start = b
        .iter()
        .position(|c| !c.is_ascii_whitespace())
        .unwrap_or(b.len());
    let end = b
        .iter()
        .rposition(|c| !c.is_ascii_whitespace())
        .map_or(start, |e| e + 1);
    &b[start..end.max(start)]
}

/// The header block's lines (without line endings), up to the blank line.
fn header_lines(data: &[u8]) -> impl Iterator<Item = &[u8]> {
    data.split(|b| *b == b'\n')
        .map(|l| l.strip_suffix(b"\r").unwrap_or(l))
        .take_while(|l| !l.is_empty())
}

/// What `check_fix_conformance` decided.
#[derive(Debug, PartialEq, Eq)]
pub enum Verdict {
    /// Issues the policy checks for were found: the text to reject with.
    Failed(String),
    /// Nothing to refuse; the repaired bytes when something was fixed.
    Passed(Option<Vec<u8>>),
}

/// Check `data` against `checks` (issues also listed in `fixes` are fixed,
/// not refused), then repair what `fixes` asks for. `hostname` makes the
/// Message-ID of a message that had none.
pub fn check_fix(
    data: &[u8],
    checks: Issues,
    fixes: Issues,
    hostname: &str,
) -> Result<Verdict, ConformanceError> {
    let found = find(data);
    let refused = checks.minus(fixes).and(found);
    if !refused.is_empty() {
        return Ok(Verdict::Failed(format!(
            "Message has conformance issues: {refused}"
        )));
    }
    let to_fix = fixes.and(found);
    if to_fix.is_empty() {
        return Ok(Verdict::Passed(None));
    }
    if let Some(i) = Issue::ALL
        .iter()
        .find(|i| to_fix.contains(**i) && !i.fixable())
    {
        return Err(ConformanceError::CannotFix(i.name().to_string()));
    }
    Ok(Verdict::Passed(Some(repair(data, to_fix, hostname))))
}

fn repair(data: &[u8], to_fix: Issues, hostname: &str) -> Vec<u8> {
    let mut out = Vec::with_capacity(data.len() + 160);
    if to_fix.contains(Issue::MissingDateHeader) {
        out.extend_from_slice(b"Date: ");
        out.extend_from_slice(chrono::Utc::now().to_rfc2822().as_bytes());
        out.extend_from_slice(b"\r\n");
    }
    if to_fix.contains(Issue::MissingMessageIdHeader) {
        out.extend_from_slice(
            format!(
                "Message-ID: <{}@{hostname}>\r\n",
                uuid::Uuid::new_v4().simple()
            )
            .as_bytes(),
        );
    }
    let add_mime = to_fix.contains(Issue::MissingMimeVersion);
    if add_mime {
        out.extend_from_slice(b"MIME-Version: 1.0\r\n");
    }
    let crlf = to_fix.contains(Issue::NonCanonicalLineEndings);
    let mut in_headers = true;
    let mut lines = data.split(|b| *b == b'\n').peekable();
    while let Some(raw) = lines.next() {
        let last = lines.peek().is_none();
        let had_cr = raw.last() == Some(&b'\r');
        let mut line: &[u8] = raw.strip_suffix(b"\r").unwrap_or(raw);
        let owned: Vec<u8>;
        if in_headers {
            if line.is_empty() {
                in_headers = false;
            } else if !line.starts_with(b" ") && !line.starts_with(b"\t") {
                match line.iter().position(|c| *c == b':') {
                    None if to_fix.contains(Issue::MissingColonValue) => continue,
                    Some(colon)
                        if to_fix.contains(Issue::NameEndsWithSpace)
                            && line[..colon]
                                .last()
                                .is_some_and(|c| c.is_ascii_whitespace()) =>
                    {
                        owned = [trim(&line[..colon]), &line[colon..]].concat();
                        line = &owned;
                    }
                    // A MIME-Version other than 1.0 was replaced above.
                    Some(colon)
                        if add_mime
                            && trim(&line[..colon]).eq_ignore_ascii_case(b"MIME-Version") =>
                    {
                        continue
                    }
                    _ => {}
                }
            }
        }
        if last && line.is_empty() && !had_cr {
            break; // the data ended with a line ending
        }
        // Bare CR inside a line is kept unless line endings are repaired.
        if crlf {
            out.extend(line.iter().copied().filter(|c| *c != b'\r'));
            out.extend_from_slice(b"\r\n");
        } else {
            out.extend_from_slice(line);
            if !last {
                out.extend_from_slice(if had_cr { b"\r\n" } else { b"\n" });
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    const GOOD: &[u8] = b"Date: Fri, 4 Dec 2026 10:00:00 +0000\r\nMessage-ID: <a@b>\r\nMIME-Version: 1.0\r\nSubject: hi\r\n\r\nbody\r\n";

    #[test]
    fn a_conforming_message_has_no_issues() {
        assert!(find(GOOD).is_empty(), "{}", find(GOOD));
    }

    #[test]
    fn each_issue_is_found_by_its_rule() {
        let cases: [(&[u8], Issue); 8] = [
            (b"Subject\r\n\r\nx\r\n", Issue::MissingColonValue),
            (b"Subject: a\n\nbare LF\n", Issue::NonCanonicalLineEndings),
            (b"Subject : a\r\n\r\nx\r\n", Issue::NameEndsWithSpace),
            (
                b"Subject: a\r\n\r\nc\xc3\xa9\r\n",
                Issue::NeedsTransferEncoding,
            ),
            (b"Subject: a\r\n\r\nx\r\n", Issue::MissingDateHeader),
            (b"Subject: a\r\n\r\nx\r\n", Issue::MissingMessageIdHeader),
            (b"MIME-Version: 2.0\r\n\r\nx\r\n", Issue::MissingMimeVersion),
            (b"Subject: a\r\n\r\n", Issue::MissingMimeVersion),
        ];
        for (data, issue) in cases {
            assert!(find(data).contains(issue), "{issue:?} in {data:?}");
        }
        let long = format!("Subject: a\r\n\r\n{}\r\n", "x".repeat(79));
        assert!(find(long.as_bytes()).contains(Issue::LineTooLong));
        let ok = format!("Subject: a\r\n\r\n{}\r\n", "x".repeat(78));
        assert!(!find(ok.as_bytes()).contains(Issue::LineTooLong));
    }

    #[test]
    fn checked_issues_fail_with_their_names_unless_also_fixed() {
        let bare = b"Subject: a\n\nbody\n";
        let checks = Issues::parse("NON_CANONICAL_LINE_ENDINGS|MISSING_DATE_HEADER").unwrap();
        assert_eq!(
            check_fix(bare, checks, Issues::default(), "h").unwrap(),
            Verdict::Failed(
                "Message has conformance issues: NON_CANONICAL_LINE_ENDINGS|MISSING_DATE_HEADER"
                    .into()
            )
        );
        let fixes = Issues::parse("NON_CANONICAL_LINE_ENDINGS|MISSING_DATE_HEADER").unwrap();
        let Verdict::Passed(Some(fixed)) = check_fix(bare, checks, fixes, "h").unwrap() else {
            panic!("expected a repaired message")
        };
        let after = find(&fixed);
        assert!(!after.contains(Issue::NonCanonicalLineEndings), "{fixed:?}");
        assert!(!after.contains(Issue::MissingDateHeader), "{fixed:?}");
        assert!(fixed.ends_with(b"Subject: a\r\n\r\nbody\r\n"), "{fixed:?}");
    }

    #[test]
    fn header_repairs_keep_the_rest_of_the_message_byte_for_byte() {
        let data = b"Subject : hi\r\nBroken\r\nMIME-Version: 2.0\r\nX: y\r\n\r\nbody\r\n";
        let fixes = Issues::parse(
            "NAME_ENDS_WITH_SPACE|MISSING_COLON_VALUE|MISSING_MIME_VERSION|MISSING_MESSAGE_ID_HEADER",
        )
        .unwrap();
        let Verdict::Passed(Some(fixed)) =
            check_fix(data, Issues::default(), fixes, "mx.example").unwrap()
        else {
            panic!("expected a repaired message")
        };
        let text = String::from_utf8(fixed).unwrap();
        assert!(text.starts_with("Message-ID: <"), "{text}");
        assert!(
            text.contains("@mx.example>\r\nMIME-Version: 1.0\r\n"),
            "{text}"
        );
        assert!(
            text.ends_with("Subject: hi\r\nX: y\r\n\r\nbody\r\n"),
            "{text}"
        );
    }

    #[test]
    fn unknown_names_and_unfixable_issues_are_refused() {
        assert!(matches!(
            Issues::parse("LINE_TOO_LONG|NOPE"),
            Err(ConformanceError::Unknown(n)) if n == "NOPE"
        ));
        let long = format!("Subject: a\r\n\r\n{}\r\n", "x".repeat(100));
        let e = check_fix(
            long.as_bytes(),
            Issues::default(),
            Issues::parse("LINE_TOO_LONG").unwrap(),
            "h",
        )
        .unwrap_err();
        assert!(e.to_string().contains("LINE_TOO_LONG"), "{e}");
    }
}
