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
    /// `AUTH mechanism [initial-response]` (RFC 4954). The response is kept
    /// as sent (base64 or `=`); the AUTH handler decodes it.
    Auth {
        mechanism: String,
        initial_response: Option<String>,
    },
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
    #[error("AUTH requires a mechanism")]
    NoMechanism,
    /// Not `1*20(ALPHA / DIGIT / "-" / "_")` (RFC 4422 §3.1).
    #[error("invalid AUTH mechanism name")]
    Mechanism,
    /// Not base64 or `=`; the text is not echoed, as it may hold credentials.
    #[error("invalid AUTH initial response")]
    InitialResponse,
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

/// The longest SASL mechanism name (RFC 4422 §3.1).
const MAX_MECHANISM_LEN: usize = 20;

/// True for a well-formed SASL mechanism name. Names are compared without
/// regard to case, as most servers and clients do.
pub fn is_mechanism_name(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= MAX_MECHANISM_LEN
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
}

fn parse_auth(rest: &str) -> Result<Command, ParseError> {
    let mut words = rest.split_ascii_whitespace();
    let mechanism = words.next().ok_or(SyntaxError::NoMechanism)?;
    if !is_mechanism_name(mechanism) {
        return Err(SyntaxError::Mechanism.into());
    }
    let initial_response = match (words.next(), words.next()) {
        (None, _) => None,
        (Some(r), None)
            if r.bytes()
                .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'+' | b'/' | b'=')) =>
        {
            Some(r.to_string())
        }
        _ => return Err(SyntaxError::InitialResponse.into()),
    };
    Ok(Command::Auth {
        mechanism: mechanism.to_ascii_uppercase(),
        initial_response,
    })
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
        "AUTH" => parse_auth(rest),
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
    fn auth_parses_the_mechanism_and_an_optional_initial_response() {
        assert_eq!(
            parse(b"auth plain AGEAYg==").unwrap(),
            Command::Auth {
                mechanism: "PLAIN".into(),
                initial_response: Some("AGEAYg==".into())
            }
        );
        assert_eq!(
            parse(b"AUTH PLAIN").unwrap(),
            Command::Auth {
                mechanism: "PLAIN".into(),
                initial_response: None
            }
        );
        assert_eq!(
            parse(b"AUTH PLAIN =").unwrap(),
            Command::Auth {
                mechanism: "PLAIN".into(),
                initial_response: Some("=".into())
            }
        );
    }

    #[test]
    fn malformed_auth_lines_are_syntax_errors_that_do_not_echo_the_response() {
        let reply = |line: &[u8]| parse(line).unwrap_err().reply();
        assert_eq!(
            reply(b"AUTH"),
            (501, "5.5.4 AUTH requires a mechanism".into())
        );
        assert_eq!(
            reply(b"AUTH PL@IN"),
            (501, "5.5.4 invalid AUTH mechanism name".into())
        );
        assert_eq!(
            reply(b"AUTH PLAIN secret!pw"),
            (501, "5.5.4 invalid AUTH initial response".into())
        );
        assert_eq!(
            reply(b"AUTH PLAIN a b"),
            (501, "5.5.4 invalid AUTH initial response".into())
        );
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
