//! Parsing of one SMTP command line (without its CRLF).

use hermod_message::{AddressError, EnvelopeAddress};

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Command {
    Ehlo(String),
    Helo(String),
    MailFrom {
        address: EnvelopeAddress,
        size: Option<usize>,
    },
    RcptTo {
        address: EnvelopeAddress,
    },
    Data,
    Rset,
    Noop,
    Quit,
    StartTls,
    /// VRFY, EXPN, HELP, LHLO and unknown verbs: all answered `502 5.5.1`.
    NotImplemented(String),
}

/// Why a line is not a valid command; each maps to one reply, whose text
/// is the enhanced code and this error's text.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ParseError {
    /// Not UTF-8 or contains NUL: `501 5.5.2`.
    #[error("command is not valid UTF-8")]
    Encoding,
    /// Bad MAIL FROM path: `501 5.1.7`.
    #[error("bad sender address: {0}")]
    Sender(#[source] AddressError),
    /// Bad RCPT TO path: `501 5.1.3`.
    #[error("bad recipient address: {0}")]
    Recipient(#[source] AddressError),
    /// `RCPT TO:<>`: `501 5.1.3`.
    #[error("bad recipient address: empty recipient")]
    EmptyRecipient,
    /// Other syntax errors: `501 5.5.4`.
    #[error(transparent)]
    Syntax(#[from] SyntaxError),
}

/// A command line that does not follow the command's syntax.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SyntaxError {
    /// The path does not start with `FROM:` / `TO:`.
    #[error("expected {0}<address>")]
    Keyword(&'static str),
    #[error("missing closing '>'")]
    UnclosedPath,
    #[error("missing address")]
    NoAddress,
    #[error("invalid SIZE parameter {0:?}")]
    Size(String),
    /// The verb, as the client would recognise it (upper case).
    #[error("{0} takes no arguments")]
    Arguments(String),
    #[error("{0} requires a domain")]
    NoDomain(String),
}

impl ParseError {
    pub fn reply(&self) -> (u16, String) {
        let enhanced = match self {
            ParseError::Encoding => "5.5.2",
            ParseError::Sender(_) => "5.1.7",
            ParseError::Recipient(_) | ParseError::EmptyRecipient => "5.1.3",
            ParseError::Syntax(_) => "5.5.4",
        };
        (501, format!("{enhanced} {self}"))
    }
}

fn split_verb(line: &str) -> (&str, &str) {
    match line.find(' ') {
        Some(i) => (&line[..i], line[i + 1..].trim()),
        None => (line, ""),
    }
}

/// `FROM:<addr> params` / `TO:<addr> params` → (path, params).
fn split_path<'a>(rest: &'a str, keyword: &'static str) -> Result<(&'a str, &'a str), SyntaxError> {
    let rest = rest.trim_start();
    let head = rest.get(..keyword.len()).unwrap_or("");
    if !head.eq_ignore_ascii_case(keyword) {
        return Err(SyntaxError::Keyword(keyword));
    }
    // Some clients put a space after the colon; tolerate it.
    let rest = rest[keyword.len()..].trim_start();
    if let Some(inner) = rest.strip_prefix('<') {
        let end = inner.find('>').ok_or(SyntaxError::UnclosedPath)?;
        let path = &inner[..end];
        Ok((strip_source_route(path), inner[end + 1..].trim()))
    } else {
        // Bare address without brackets (RFC-violating but common).
        let (path, params) = split_verb(rest);
        if path.is_empty() {
            return Err(SyntaxError::NoAddress);
        }
        Ok((path, params))
    }
}

/// RFC 5321 §4.1.2 source routes (`@a,@b:user@c`) are ignored.
fn strip_source_route(path: &str) -> &str {
    if path.starts_with('@') {
        if let Some(i) = path.find(':') {
            return &path[i + 1..];
        }
    }
    path
}

fn parse_size(params: &str) -> Result<Option<usize>, SyntaxError> {
    for p in params.split_ascii_whitespace() {
        let (k, v) = p.split_once('=').unwrap_or((p, ""));
        if k.eq_ignore_ascii_case("SIZE") {
            return v
                .parse::<usize>()
                .map(Some)
                .map_err(|_| SyntaxError::Size(v.to_string()));
        }
    }
    Ok(None)
}

pub fn parse(line: &[u8]) -> Result<Command, ParseError> {
    if line.contains(&0) {
        return Err(ParseError::Encoding);
    }
    let line = std::str::from_utf8(line).map_err(|_| ParseError::Encoding)?;
    let line = line.trim_end();
    let (verb, rest) = split_verb(line);
    let upper = verb.to_ascii_uppercase();
    let no_args = |cmd: Command| {
        if rest.is_empty() {
            Ok(cmd)
        } else {
            Err(ParseError::Syntax(SyntaxError::Arguments(upper.clone())))
        }
    };
    match upper.as_str() {
        "EHLO" | "HELO" => {
            let domain = rest.split_ascii_whitespace().next().unwrap_or("");
            if domain.is_empty() {
                return Err(SyntaxError::NoDomain(upper.clone()).into());
            }
            Ok(if upper == "EHLO" {
                Command::Ehlo(domain.to_string())
            } else {
                Command::Helo(domain.to_string())
            })
        }
        "MAIL" => {
            let (path, params) = split_path(rest, "FROM:")?;
            let address = EnvelopeAddress::parse(path).map_err(ParseError::Sender)?;
            let size = parse_size(params)?;
            Ok(Command::MailFrom { address, size })
        }
        "RCPT" => {
            let (path, _params) = split_path(rest, "TO:")?;
            if path.is_empty() {
                return Err(ParseError::EmptyRecipient);
            }
            let address = EnvelopeAddress::parse(path).map_err(ParseError::Recipient)?;
            Ok(Command::RcptTo { address })
        }
        "DATA" => no_args(Command::Data),
        "RSET" => no_args(Command::Rset),
        // NOOP may carry an argument, which is ignored (RFC 5321 §4.1.1.9).
        "NOOP" => Ok(Command::Noop),
        "QUIT" => no_args(Command::Quit),
        "STARTTLS" => no_args(Command::StartTls),
        _ => Ok(Command::NotImplemented(upper)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn addr(s: &str) -> EnvelopeAddress {
        EnvelopeAddress::parse(s).unwrap()
    }

    #[test]
    fn verbs_are_case_insensitive() {
        assert_eq!(
            parse(b"ehlo client.example").unwrap(),
            Command::Ehlo("client.example".into())
        );
        assert_eq!(parse(b"HeLo x").unwrap(), Command::Helo("x".into()));
        assert_eq!(parse(b"data").unwrap(), Command::Data);
        assert_eq!(parse(b"Quit").unwrap(), Command::Quit);
        assert_eq!(parse(b"NOOP whatever").unwrap(), Command::Noop);
        assert_eq!(parse(b"STARTTLS").unwrap(), Command::StartTls);
    }

    #[test]
    fn mail_from_parses_address_and_size_parameter() {
        assert_eq!(
            parse(b"MAIL FROM:<a@example.com> SIZE=1000 BODY=8BITMIME").unwrap(),
            Command::MailFrom {
                address: addr("a@example.com"),
                size: Some(1000)
            }
        );
        assert_eq!(
            parse(b"mail from: <a@example.com>").unwrap(),
            Command::MailFrom {
                address: addr("a@example.com"),
                size: None
            }
        );
    }

    #[test]
    fn null_sender_and_source_routes_are_accepted() {
        match parse(b"MAIL FROM:<>").unwrap() {
            Command::MailFrom { address, .. } => assert!(address.is_null()),
            other => panic!("{other:?}"),
        }
        assert_eq!(
            parse(b"RCPT TO:<@relay.example:b@example.com>").unwrap(),
            Command::RcptTo {
                address: addr("b@example.com")
            }
        );
    }

    #[test]
    fn utf8_addresses_parse() {
        assert_eq!(
            parse("RCPT TO:<jöran@bücher.example>".as_bytes()).unwrap(),
            Command::RcptTo {
                address: addr("jöran@bücher.example")
            }
        );
    }

    #[test]
    fn bad_addresses_get_sender_or_recipient_errors() {
        assert!(matches!(
            parse(b"MAIL FROM:<nodomain>"),
            Err(ParseError::Sender(_))
        ));
        assert!(matches!(
            parse(b"RCPT TO:<nodomain>"),
            Err(ParseError::Recipient(_))
        ));
        assert_eq!(parse(b"RCPT TO:<>"), Err(ParseError::EmptyRecipient));
        assert_eq!(
            parse(b"MAIL FROM:<nodomain>").unwrap_err().reply().1[..5],
            *"5.1.7"
        );
        assert_eq!(parse(b"RCPT TO:<x>").unwrap_err().reply().1[..5], *"5.1.3");
    }

    #[test]
    fn malformed_syntax_is_a_generic_501() {
        assert!(matches!(
            parse(b"MAIL TO:<a@b>"),
            Err(ParseError::Syntax(_))
        ));
        assert!(matches!(
            parse(b"MAIL FROM:<a@b"),
            Err(ParseError::Syntax(_))
        ));
        assert!(matches!(
            parse(b"MAIL FROM:<a@b> SIZE=big"),
            Err(ParseError::Syntax(_))
        ));
        assert!(matches!(parse(b"EHLO"), Err(ParseError::Syntax(_))));
        assert!(matches!(parse(b"DATA now"), Err(ParseError::Syntax(_))));
    }

    #[test]
    fn reply_texts_are_the_enhanced_code_and_the_reason() {
        let reply = |line: &[u8]| parse(line).unwrap_err().reply();
        let cases: [(&[u8], &str); 8] = [
            (b"NOOP\0", "5.5.2 command is not valid UTF-8"),
            (
                b"MAIL FROM:<nodomain>",
                "5.1.7 bad sender address: address \"nodomain\" has no @domain part",
            ),
            (
                b"RCPT TO:<>",
                "5.1.3 bad recipient address: empty recipient",
            ),
            (b"MAIL TO:<a@b>", "5.5.4 expected FROM:<address>"),
            (b"MAIL FROM:<a@b", "5.5.4 missing closing '>'"),
            (
                b"MAIL FROM:<a@b> SIZE=big",
                "5.5.4 invalid SIZE parameter \"big\"",
            ),
            (b"data now", "5.5.4 DATA takes no arguments"),
            (b"ehlo", "5.5.4 EHLO requires a domain"),
        ];
        for (line, text) in cases {
            assert_eq!(reply(line), (501, text.to_string()));
        }
    }

    #[test]
    fn nul_and_invalid_utf8_are_encoding_errors() {
        assert_eq!(parse(b"NOOP\0"), Err(ParseError::Encoding));
        assert_eq!(parse(b"EHLO \xff\xfe"), Err(ParseError::Encoding));
        assert_eq!(ParseError::Encoding.reply().0, 501);
    }

    #[test]
    fn unimplemented_verbs_are_reported_by_name() {
        for v in ["VRFY x", "EXPN list", "HELP", "LHLO x", "XYZZY"] {
            assert!(
                matches!(parse(v.as_bytes()), Ok(Command::NotImplemented(_))),
                "{v}"
            );
        }
    }
}
