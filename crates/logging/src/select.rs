//! Selection of the meta keys and headers a logger copies into its records.

use hermod_message::Message;
use serde_json::{Map, Value};

/// A configured name: exact, or a prefix when it ends in `*`.
#[derive(Debug, Clone)]
pub(crate) enum Pattern {
    Exact(String),
    Prefix(String),
}

impl Pattern {
    pub fn parse(s: &str) -> Self {
        match s.strip_suffix('*') {
            Some(p) => Pattern::Prefix(p.to_string()),
            None => Pattern::Exact(s.to_string()),
        }
    }

    fn matches(&self, name: &str) -> bool {
        match self {
            Pattern::Exact(e) => e == name,
            Pattern::Prefix(p) => name.starts_with(p.as_str()),
        }
    }

    fn matches_ignore_case(&self, name: &str) -> bool {
        match self {
            Pattern::Exact(e) => e.eq_ignore_ascii_case(name),
            Pattern::Prefix(p) => {
                name.len() >= p.len()
                    && name.as_bytes()[..p.len()].eq_ignore_ascii_case(p.as_bytes())
            }
        }
    }
}

/// Meta keys matching any pattern (case-sensitive); null values are skipped.
pub(crate) fn select_meta(meta: &Map<String, Value>, patterns: &[Pattern]) -> Map<String, Value> {
    if patterns.is_empty() {
        return Map::new();
    }
    meta.iter()
        .filter(|(k, v)| !v.is_null() && patterns.iter().any(|p| p.matches(k)))
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect()
}

/// Headers matching any pattern (case-insensitive). A repeated header becomes
/// an array. Skipped when the body is not in memory: loading it just for a
/// log line would cost a spool read on every delivery attempt.
pub(crate) fn select_headers(msg: &Message, patterns: &[Pattern]) -> Map<String, Value> {
    let mut out = Map::new();
    if patterns.is_empty() || !msg.is_data_loaded() {
        return out;
    }
    let mut names: Vec<String> = Vec::new();
    let mut add = |name: &str| {
        if !names.iter().any(|n| n.eq_ignore_ascii_case(name)) {
            names.push(name.to_string());
        }
    };
    for p in patterns {
        if let Pattern::Exact(e) = p {
            add(e);
        }
    }
    if patterns.iter().any(|p| matches!(p, Pattern::Prefix(_))) {
        if let Ok(data) = msg.data() {
            if let Some(parsed) = mail_parser::MessageParser::default().parse_headers(&data[..]) {
                for h in parsed.headers() {
                    let name = h.name.as_str();
                    if patterns
                        .iter()
                        .any(|p| matches!(p, Pattern::Prefix(_)) && p.matches_ignore_case(name))
                    {
                        add(name);
                    }
                }
            }
        }
    }
    for name in names {
        let Ok(mut values) = msg.get_all_named_header_values(&name) else {
            continue;
        };
        let value = match values.len() {
            0 => continue,
            1 => Value::String(values.remove(0)),
            _ => Value::Array(values.into_iter().map(Value::String).collect()),
        };
        out.insert(name, value);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use hermod_message::{EnvelopeAddress, SpoolId};
    use serde_json::json;

    fn pats(v: &[&str]) -> Vec<Pattern> {
        v.iter().map(|s| Pattern::parse(s)).collect()
    }

    #[test]
    fn meta_selection_supports_exact_and_prefix_and_skips_nulls() {
        let meta: Map<String, Value> = serde_json::from_value(json!({
            "queue": "q", "x_a": 1, "x_b": null, "X_c": 2, "other": 3
        }))
        .unwrap();
        let sel = select_meta(&meta, &pats(&["queue", "x_*"]));
        assert_eq!(Value::Object(sel), json!({"queue": "q", "x_a": 1}));
        assert!(select_meta(&meta, &[]).is_empty());
    }

    #[test]
    fn header_selection_is_case_insensitive_and_arrays_repeats() {
        let msg = Message::new(
            SpoolId::new(),
            EnvelopeAddress::parse("a@x.com").unwrap(),
            vec![EnvelopeAddress::parse("b@y.com").unwrap()],
            Map::new(),
            &b"Subject: hi\r\nX-Tag: 1\r\nX-Tag: 2\r\nX-Other: o\r\n\r\nbody"[..],
        );
        let sel = select_headers(&msg, &pats(&["subject", "x-t*"]));
        assert_eq!(
            Value::Object(sel),
            json!({"subject": "hi", "X-Tag": ["1", "2"]})
        );
        msg.mark_clean();
        msg.unload_data();
        assert!(select_headers(&msg, &pats(&["subject"])).is_empty());
    }
}
