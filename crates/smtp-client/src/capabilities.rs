//! The ESMTP extensions a server advertised in its EHLO reply.

use std::collections::BTreeMap;

use crate::response::Response;

/// Parsed EHLO keywords. Keywords are case-insensitive (RFC 5321 §2.4), so
/// they are stored upper-cased; their parameters are kept as sent.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Capabilities {
    /// Every keyword with its parameter text (empty when it has none).
    keywords: BTreeMap<String, String>,
    /// False after a HELO fallback: no extension may be used.
    pub esmtp: bool,
}

impl Capabilities {
    /// From a 250 EHLO reply: the first line is the server's greeting, every
    /// further line one keyword and its parameters.
    pub fn from_ehlo(reply: &Response) -> Self {
        let mut keywords = BTreeMap::new();
        for line in reply.content.split('\n').skip(1) {
            let line = line.trim();
            // Split at the space only: the obsolete `AUTH=LOGIN` line some
            // servers add stays its own keyword instead of replacing `AUTH`.
            let (name, params) = line.split_once(' ').unwrap_or((line, ""));
            if name.is_empty() {
                continue;
            }
            keywords.insert(name.to_ascii_uppercase(), params.trim().to_string());
        }
        Self {
            keywords,
            esmtp: true,
        }
    }

    /// What a server that only answered HELO offers: nothing.
    pub fn helo_only() -> Self {
        Self::default()
    }

    pub fn has(&self, keyword: &str) -> bool {
        self.keywords.contains_key(&keyword.to_ascii_uppercase())
    }

    /// The parameter text of a keyword, when advertised.
    pub fn param(&self, keyword: &str) -> Option<&str> {
        self.keywords
            .get(&keyword.to_ascii_uppercase())
            .map(String::as_str)
    }

    pub fn pipelining(&self) -> bool {
        self.has("PIPELINING")
    }

    pub fn starttls(&self) -> bool {
        self.has("STARTTLS")
    }

    pub fn eight_bit_mime(&self) -> bool {
        self.has("8BITMIME")
    }

    pub fn smtputf8(&self) -> bool {
        self.has("SMTPUTF8")
    }

    pub fn enhanced_status_codes(&self) -> bool {
        self.has("ENHANCEDSTATUSCODES")
    }

    /// `Some(limit)` when SIZE was advertised: `Some(None)` for SIZE
    /// without a number or with 0 (RFC 1870: no fixed limit).
    pub fn size(&self) -> Option<Option<u64>> {
        let param = self.param("SIZE")?;
        Some(param.parse::<u64>().ok().filter(|n| *n > 0))
    }

    /// The SASL mechanisms after AUTH, upper-cased.
    pub fn auth_mechanisms(&self) -> Vec<String> {
        self.param("AUTH")
            .map(|p| p.split_whitespace().map(str::to_ascii_uppercase).collect())
            .unwrap_or_default()
    }

    /// Every advertised keyword, upper-cased.
    pub fn keywords(&self) -> impl Iterator<Item = &str> {
        self.keywords.keys().map(String::as_str)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn caps(lines: &str) -> Capabilities {
        Capabilities::from_ehlo(&Response {
            code: 250,
            enhanced_code: None,
            content: lines.to_string(),
            command: None,
        })
    }

    #[test]
    fn ehlo_keywords_and_parameters_are_parsed_case_insensitively() {
        let c = caps(
            "mx.example greets you\npipelining\nSIZE 1000\n8BITMIME\nSMTPUTF8\nSTARTTLS\n\
             AUTH plain LOGIN\nAUTH=LOGIN\nENHANCEDSTATUSCODES\n",
        );
        assert!(c.pipelining() && c.eight_bit_mime() && c.smtputf8() && c.starttls());
        assert!(c.enhanced_status_codes());
        assert_eq!(c.size(), Some(Some(1000)));
        // The greeting line is not a keyword.
        assert!(!c.has("MX.EXAMPLE"));
        // The obsolete `AUTH=` line does not replace the standard one.
        assert_eq!(c.auth_mechanisms(), vec!["PLAIN", "LOGIN"]);
    }

    #[test]
    fn size_without_a_limit_means_no_fixed_maximum() {
        assert_eq!(caps("hi\nSIZE").size(), Some(None));
        assert_eq!(caps("hi\nSIZE 0").size(), Some(None));
        assert_eq!(caps("hi\nPIPELINING").size(), None);
    }
}
