//! Scheduled-queue names: `campaign:tenant@domain!routing_domain`.

use serde_json::{Map, Value};

#[derive(Debug, Clone, PartialEq, Eq, Hash, Default)]
pub struct QueueNameComponents {
    pub campaign: Option<String>,
    pub tenant: Option<String>,
    pub domain: String,
    pub routing_domain: Option<String>,
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum QueueNameError {
    #[error("meta {0:?} must be a string to compute the queue name, got {1}")]
    NotAString(&'static str, String),
    #[error("message has no recipient to compute the queue name from")]
    NoRecipient,
}

impl QueueNameComponents {
    /// Split a queue name back into the arguments of `get_queue_config`.
    pub fn parse(name: &str) -> Self {
        let (left, domain_part) = match name.find('@') {
            Some(at) => (Some(&name[..at]), &name[at + 1..]),
            None => (None, name),
        };
        let (campaign, tenant) = match left {
            None => (None, None),
            Some(l) => match l.find(':') {
                Some(c) => (Some(l[..c].to_string()), Some(l[c + 1..].to_string())),
                None => (None, Some(l.to_string())),
            },
        };
        let (domain, routing_domain) = match domain_part.find('!') {
            Some(b) => (
                domain_part[..b].to_string(),
                Some(domain_part[b + 1..].to_string()),
            ),
            None => (domain_part.to_string(), None),
        };
        Self {
            campaign,
            tenant,
            domain,
            routing_domain,
        }
    }

    pub fn format(&self) -> String {
        let mut s = String::new();
        if let Some(c) = &self.campaign {
            s.push_str(c);
            s.push(':');
        }
        if let Some(t) = &self.tenant {
            s.push_str(t);
        }
        if self.campaign.is_some() || self.tenant.is_some() {
            s.push('@');
        }
        s.push_str(&self.domain);
        if let Some(r) = &self.routing_domain {
            s.push('!');
            s.push_str(r);
        }
        s
    }

    /// Compute a message's queue name from its meta and first recipient domain.
    pub fn compute(
        meta: &Map<String, Value>,
        first_domain: Option<&str>,
    ) -> Result<String, QueueNameError> {
        if let Some(q) = string_meta(meta, "queue")? {
            return Ok(q);
        }
        let domain = first_domain
            .ok_or(QueueNameError::NoRecipient)?
            .to_lowercase();
        Ok(Self {
            campaign: string_meta(meta, "campaign")?,
            tenant: string_meta(meta, "tenant")?,
            domain,
            routing_domain: string_meta(meta, "routing_domain")?,
        }
        .format())
    }

    /// The domain deliveries for this queue are routed to.
    pub fn site_domain(&self) -> &str {
        self.routing_domain.as_deref().unwrap_or(&self.domain)
    }
}

fn string_meta(
    meta: &Map<String, Value>,
    key: &'static str,
) -> Result<Option<String>, QueueNameError> {
    match meta.get(key) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(s)) => Ok(Some(s.clone())),
        Some(other) => Err(QueueNameError::NotAString(key, other.to_string())),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn c(
        campaign: Option<&str>,
        tenant: Option<&str>,
        domain: &str,
        rd: Option<&str>,
    ) -> QueueNameComponents {
        QueueNameComponents {
            campaign: campaign.map(Into::into),
            tenant: tenant.map(Into::into),
            domain: domain.into(),
            routing_domain: rd.map(Into::into),
        }
    }

    #[test]
    fn formats_every_combination_of_parts() {
        assert_eq!(c(None, None, "d", None).format(), "d");
        assert_eq!(c(None, Some("t"), "d", None).format(), "t@d");
        assert_eq!(c(Some("c"), None, "d", None).format(), "c:@d");
        assert_eq!(c(Some("c"), Some("t"), "d", None).format(), "c:t@d");
        assert_eq!(c(Some("c"), Some("t"), "d", Some("r")).format(), "c:t@d!r");
        assert_eq!(c(None, None, "d", Some("r")).format(), "d!r");
    }

    #[test]
    fn parses_names_back_into_parts() {
        assert_eq!(QueueNameComponents::parse("d"), c(None, None, "d", None));
        assert_eq!(
            QueueNameComponents::parse("t@d"),
            c(None, Some("t"), "d", None)
        );
        // `campaign:@d` yields an empty tenant, not nil.
        assert_eq!(
            QueueNameComponents::parse("c:@d"),
            c(Some("c"), Some(""), "d", None)
        );
        assert_eq!(
            QueueNameComponents::parse("c:t@d!r"),
            c(Some("c"), Some("t"), "d", Some("r"))
        );
        assert_eq!(
            QueueNameComponents::parse("d:25!r:26"),
            c(None, None, "d:25", Some("r:26"))
        );
    }

    #[test]
    fn computes_from_meta_and_lowercases_the_domain() {
        let meta = json!({"tenant": "t", "campaign": "c"});
        let name = QueueNameComponents::compute(meta.as_object().unwrap(), Some("NATS")).unwrap();
        assert_eq!(name, "c:t@nats");
    }

    #[test]
    fn meta_queue_is_used_verbatim() {
        let meta = json!({"queue": "Webhook", "tenant": "t"});
        assert_eq!(
            QueueNameComponents::compute(meta.as_object().unwrap(), Some("x")).unwrap(),
            "Webhook"
        );
    }

    #[test]
    fn non_string_meta_fails_queue_computation() {
        let meta = json!({"tenant": 5});
        assert!(matches!(
            QueueNameComponents::compute(meta.as_object().unwrap(), Some("x")),
            Err(QueueNameError::NotAString("tenant", _))
        ));
    }
}
