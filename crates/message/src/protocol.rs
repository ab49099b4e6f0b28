//! The protocol a message was received or is delivered with. Rust code
//! compares and passes this enum; the text form is what log records, meta
//! `reception_protocol` and `Received:` headers carry.

use std::fmt;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Protocol {
    /// The ESMTP listener (reception) or SMTP client (delivery).
    Esmtp,
    /// The HTTP injection API.
    Http,
    /// A `custom_lua` delivery.
    Lua,
    /// A `maildir_path` delivery.
    Maildir,
    /// A log-hook message: the log record made into a message. Records
    /// about such messages never feed hooks again.
    LogRecord,
}

impl Protocol {
    /// The text written out, as KumoMTA writes it.
    pub const fn as_str(self) -> &'static str {
        match self {
            Protocol::Esmtp => "ESMTP",
            Protocol::Http => "HTTP",
            Protocol::Lua => "Lua",
            Protocol::Maildir => "Maildir",
            Protocol::LogRecord => "LogRecord",
        }
    }
}

impl fmt::Display for Protocol {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn text_forms_are_what_records_and_headers_carry() {
        for (p, text) in [
            (Protocol::Esmtp, "ESMTP"),
            (Protocol::Http, "HTTP"),
            (Protocol::Lua, "Lua"),
            (Protocol::Maildir, "Maildir"),
            (Protocol::LogRecord, "LogRecord"),
        ] {
            assert_eq!(p.as_str(), text);
            assert_eq!(p.to_string(), text);
        }
    }
}
