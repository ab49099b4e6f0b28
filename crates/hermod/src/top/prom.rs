//! Reading the Prometheus text exposition format (version 0.0.4) that
//! `/metrics` serves: one sample per line, `name{label="value",...} number`,
//! with `#` comment lines (HELP, TYPE) that carry no samples.

/// One sample line.
#[derive(Debug, Clone, PartialEq)]
pub struct Sample {
    pub name: String,
    pub labels: Vec<(String, String)>,
    pub value: f64,
}

impl Sample {
    /// The value of label `key`, if the sample has it.
    pub fn label(&self, key: &str) -> Option<&str> {
        self.labels
            .iter()
            .find(|(k, _)| k == key)
            .map(|(_, v)| v.as_str())
    }
}

#[derive(Debug, thiserror::Error, PartialEq)]
#[error("line {line}: {why}: {text:?}")]
pub struct ParseError {
    pub line: usize,
    pub why: &'static str,
    pub text: String,
}

/// Every sample of `text`, in order.
pub fn parse(text: &str) -> Result<Vec<Sample>, ParseError> {
    let mut out = Vec::new();
    for (i, raw) in text.lines().enumerate() {
        let line = raw.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let err = |why| ParseError {
            line: i + 1,
            why,
            text: raw.chars().take(120).collect(),
        };
        out.push(parse_line(line).map_err(err)?);
    }
    Ok(out)
}

fn parse_line(line: &str) -> Result<Sample, &'static str> {
    let name_end = line
        .find(|c: char| c == '{' || c.is_whitespace())
        .ok_or("no value")?;
    let name = &line[..name_end];
    if name.is_empty() {
        return Err("no metric name");
    }
    let mut rest = &line[name_end..];
    let mut labels = Vec::new();
    if let Some(after) = rest.strip_prefix('{') {
        let (parsed, tail) = parse_labels(after)?;
        labels = parsed;
        rest = tail;
    }
    // A timestamp may follow the value; only the value is wanted.
    let value = rest.split_whitespace().next().ok_or("no value")?;
    let value = parse_value(value).ok_or("value is not a number")?;
    Ok(Sample {
        name: name.to_string(),
        labels,
        value,
    })
}

fn parse_value(v: &str) -> Option<f64> {
    match v {
        "+Inf" => Some(f64::INFINITY),
        "-Inf" => Some(f64::NEG_INFINITY),
        "NaN" => Some(f64::NAN),
        _ => v.parse().ok(),
    }
}

type Labels = Vec<(String, String)>;

/// Labels after the opening brace; returns them and the text after `}`.
fn parse_labels(mut s: &str) -> Result<(Labels, &str), &'static str> {
    let mut labels = Vec::new();
    loop {
        s = s.trim_start();
        if let Some(after) = s.strip_prefix('}') {
            return Ok((labels, after));
        }
        let eq = s.find('=').ok_or("label without '='")?;
        let key = s[..eq].trim();
        if key.is_empty() {
            return Err("empty label name");
        }
        s = s[eq + 1..]
            .trim_start()
            .strip_prefix('"')
            .ok_or("label value is not quoted")?;
        let mut value = String::new();
        let mut chars = s.char_indices();
        let end = loop {
            match chars.next() {
                None => return Err("unterminated label value"),
                Some((i, '"')) => break i,
                Some((_, '\\')) => match chars.next() {
                    Some((_, 'n')) => value.push('\n'),
                    Some((_, c)) => value.push(c),
                    None => return Err("unterminated label value"),
                },
                Some((_, c)) => value.push(c),
            }
        };
        labels.push((key.to_string(), value));
        s = s[end + 1..].trim_start();
        s = s.strip_prefix(',').unwrap_or(s);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn samples_with_and_without_labels_are_read_and_comments_skipped() {
        let text = "# HELP total_messages_delivered total number of messages delivered\n\
                    # TYPE total_messages_delivered counter\n\
                    total_messages_delivered{service=\"lua:unspecified->nats@lua:make.nats\"} 100\n\
                    message_count 7\n\
                    \n\
                    spool_fsync_latency_bucket{le=\"+Inf\"} 3 1700000000000\n";
        let s = parse(text).unwrap();
        assert_eq!(s.len(), 3);
        assert_eq!(s[0].name, "total_messages_delivered");
        assert_eq!(
            s[0].label("service"),
            Some("lua:unspecified->nats@lua:make.nats")
        );
        assert_eq!(s[0].value, 100.0);
        assert_eq!((s[1].name.as_str(), s[1].value), ("message_count", 7.0));
        assert!(s[1].labels.is_empty());
        assert_eq!(s[2].label("le"), Some("+Inf"));
        assert_eq!(s[2].value, 3.0);
    }

    #[test]
    fn escaped_label_values_and_several_labels_are_unescaped() {
        let s = parse("x{a=\"q\\\"uo\\\\te\",b=\"two\\nlines\",} 1.5e3").unwrap();
        assert_eq!(s[0].label("a"), Some("q\"uo\\te"));
        assert_eq!(s[0].label("b"), Some("two\nlines"));
        assert_eq!(s[0].value, 1500.0);
    }

    #[test]
    fn special_values_are_numbers() {
        let s = parse("a +Inf\nb NaN\nc -Inf").unwrap();
        assert!(s[0].value.is_infinite() && s[0].value > 0.0);
        assert!(s[1].value.is_nan());
        assert!(s[2].value.is_infinite() && s[2].value < 0.0);
    }

    #[test]
    fn a_malformed_line_is_refused_with_its_number() {
        let e = parse("ok 1\nbroken{service=\"x} 2\n").unwrap_err();
        assert_eq!(e.line, 2);
        assert_eq!(e.why, "unterminated label value");
        let e = parse("ok 1\n\nnovalue\n").unwrap_err();
        assert_eq!((e.line, e.why), (3, "no value"));
        let e = parse("x{a=\"1\"} many").unwrap_err();
        assert_eq!(e.why, "value is not a number");
    }
}
