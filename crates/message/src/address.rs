use std::fmt;

/// An SMTP envelope address. The null sender is the empty string.
#[derive(Clone, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct EnvelopeAddress {
    raw: String,
    at: Option<usize>,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AddressError {
    #[error("address {0:?} has no @domain part")]
    NoDomain(String),
    #[error("address {0:?} has an empty local part")]
    EmptyLocal(String),
    #[error("address {0:?} contains a control character or space")]
    BadCharacter(String),
    #[error("address {0:?} has an invalid domain")]
    BadDomain(String),
    #[error("address is longer than 320 bytes")]
    TooLong,
}

impl EnvelopeAddress {
    pub fn null_sender() -> Self {
        Self {
            raw: String::new(),
            at: None,
        }
    }

    /// Parse `user@domain`. UTF-8 (SMTPUTF8) local parts and domains are allowed;
    /// quoted local parts keep their quotes.
    pub fn parse(s: &str) -> Result<Self, AddressError> {
        if s.is_empty() {
            return Ok(Self::null_sender());
        }
        if s.len() > 320 {
            return Err(AddressError::TooLong);
        }
        if s.chars()
            .any(|c| c.is_control() || (c == ' ' && !s.starts_with('"')))
        {
            return Err(AddressError::BadCharacter(s.to_string()));
        }
        let at = s
            .rfind('@')
            .ok_or_else(|| AddressError::NoDomain(s.into()))?;
        if at == 0 {
            return Err(AddressError::EmptyLocal(s.into()));
        }
        let domain = &s[at + 1..];
        if domain.is_empty() {
            return Err(AddressError::NoDomain(s.into()));
        }
        let literal = domain.starts_with('[') && domain.ends_with(']');
        if !literal
            && (domain.starts_with('.')
                || domain.ends_with('.')
                || domain.contains("..")
                || domain.chars().any(|c| {
                    !(c.is_alphanumeric() || c == '-' || c == '.' || c == '_' || c == ':')
                }))
        {
            return Err(AddressError::BadDomain(s.into()));
        }
        Ok(Self {
            raw: s.to_string(),
            at: Some(at),
        })
    }

    pub fn is_null(&self) -> bool {
        self.raw.is_empty()
    }

    pub fn user(&self) -> &str {
        match self.at {
            Some(at) => &self.raw[..at],
            None => "",
        }
    }

    pub fn domain(&self) -> &str {
        match self.at {
            Some(at) => &self.raw[at + 1..],
            None => "",
        }
    }

    pub fn email(&self) -> &str {
        &self.raw
    }
}

impl TryFrom<String> for EnvelopeAddress {
    type Error = AddressError;
    fn try_from(s: String) -> Result<Self, AddressError> {
        Self::parse(&s)
    }
}

impl From<EnvelopeAddress> for String {
    fn from(a: EnvelopeAddress) -> String {
        a.raw
    }
}

impl fmt::Display for EnvelopeAddress {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.raw)
    }
}

impl fmt::Debug for EnvelopeAddress {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "<{}>", self.raw)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn splits_user_and_domain_at_last_at() {
        let a = EnvelopeAddress::parse("\"a@b\"@example.com").unwrap();
        assert_eq!(a.user(), "\"a@b\"");
        assert_eq!(a.domain(), "example.com");
    }

    #[test]
    fn null_sender_is_empty() {
        let a = EnvelopeAddress::parse("").unwrap();
        assert!(a.is_null());
        assert_eq!(a.to_string(), "");
    }

    #[test]
    fn utf8_addresses_are_accepted() {
        let a = EnvelopeAddress::parse("jöran@bücher.example").unwrap();
        assert_eq!(a.domain(), "bücher.example");
    }

    #[test]
    fn malformed_addresses_are_rejected_with_the_reason() {
        assert_eq!(
            EnvelopeAddress::parse("nodomain"),
            Err(AddressError::NoDomain("nodomain".into()))
        );
        assert!(matches!(
            EnvelopeAddress::parse("@x.com"),
            Err(AddressError::EmptyLocal(_))
        ));
        assert!(matches!(
            EnvelopeAddress::parse("a@"),
            Err(AddressError::NoDomain(_))
        ));
        assert!(matches!(
            EnvelopeAddress::parse("a b@x"),
            Err(AddressError::BadCharacter(_))
        ));
        assert!(matches!(
            EnvelopeAddress::parse("a@x..y"),
            Err(AddressError::BadDomain(_))
        ));
        assert!(matches!(
            EnvelopeAddress::parse("a@x\0"),
            Err(AddressError::BadCharacter(_))
        ));
    }
}
