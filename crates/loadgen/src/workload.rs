//! What each generated message looks like: body size, recipient domains
//! and the message content.

use rand::Rng;

/// Upper bound on `--size`; larger bodies are a typo, not a benchmark.
const MAX_BODY_BYTES: u64 = 256 * 1024 * 1024;

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum WorkloadError {
    #[error("invalid size {0:?}: expected e.g. 512, 1KB, 100KB, 2MB")]
    Size(String),
    #[error("size {0} exceeds the 256MB limit")]
    SizeTooLarge(u64),
    #[error("invalid domain list {0:?}: expected e.g. nats:3,amqp:1")]
    Domains(String),
}

/// Parses a body size. Units are binary (1KB = 1024 bytes), which is what
/// the benchmark tables mean by "1KB message"; a bare number is bytes.
pub fn parse_size(text: &str) -> Result<usize, WorkloadError> {
    let t = text.trim();
    let split = t.find(|c: char| !c.is_ascii_digit()).unwrap_or(t.len());
    let (digits, unit) = t.split_at(split);
    let n: u64 = digits
        .parse()
        .map_err(|_| WorkloadError::Size(text.to_owned()))?;
    let mult: u64 = match unit.trim().to_ascii_lowercase().as_str() {
        "" | "b" => 1,
        "k" | "kb" | "kib" => 1024,
        "m" | "mb" | "mib" => 1024 * 1024,
        _ => return Err(WorkloadError::Size(text.to_owned())),
    };
    let bytes = n
        .checked_mul(mult)
        .ok_or_else(|| WorkloadError::Size(text.to_owned()))?;
    if bytes > MAX_BODY_BYTES {
        return Err(WorkloadError::SizeTooLarge(bytes));
    }
    usize::try_from(bytes).map_err(|_| WorkloadError::SizeTooLarge(bytes))
}

/// Recipient domains chosen at random in proportion to their weights.
#[derive(Debug, Clone)]
pub struct DomainPicker {
    /// (domain, cumulative weight) in input order.
    entries: Vec<(String, u64)>,
    total: u64,
}

impl DomainPicker {
    /// Parses `name[:weight],...`; a missing weight means 1.
    pub fn parse(text: &str) -> Result<Self, WorkloadError> {
        let err = || WorkloadError::Domains(text.to_owned());
        let mut entries = Vec::new();
        let mut total: u64 = 0;
        for part in text.split(',') {
            let part = part.trim();
            let (name, weight) = match part.rsplit_once(':') {
                Some((name, w)) => (name.trim(), w.trim().parse::<u64>().map_err(|_| err())?),
                None => (part, 1),
            };
            let valid_name = !name.is_empty()
                && name
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || c == '.' || c == '-' || c == '_');
            if !valid_name {
                return Err(err());
            }
            if weight == 0 {
                continue;
            }
            total = total.checked_add(weight).ok_or_else(err)?;
            entries.push((name.to_owned(), total));
        }
        if entries.is_empty() {
            return Err(err());
        }
        Ok(DomainPicker { entries, total })
    }

    /// The domain owning position `ticket` in `0..total`.
    fn domain_at(&self, ticket: u64) -> &str {
        let idx = self.entries.partition_point(|(_, cum)| *cum <= ticket);
        let idx = idx.min(self.entries.len() - 1);
        &self.entries[idx].0
    }

    pub fn pick(&self, rng: &mut impl Rng) -> &str {
        self.domain_at(rng.random_range(0..self.total))
    }
}

/// Builds the DATA payload: a minimal header block and filler lines
/// adding up to `size` bytes, already terminated by `.\r\n`. Filler never
/// starts a line with '.', so no dot-stuffing is needed.
pub fn build_body(size: usize, from: &str) -> Vec<u8> {
    let mut body = format!(
        "From: <{from}>\r\nTo: undisclosed-recipients:;\r\nSubject: hermod-loadgen test message\r\n\r\n"
    )
    .into_bytes();
    const ALPHABET: &[u8] = b"abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789";
    const LINE: usize = 76;
    let mut offset = 0usize;
    while body.len() + 2 < size {
        let room = size - body.len() - 2;
        // A line needs at least one character, so never leave a remainder
        // too small to hold one.
        let len = if room <= LINE {
            room
        } else if room >= LINE + 3 {
            LINE
        } else {
            room - 3
        };
        body.extend((0..len).map(|i| ALPHABET[(offset + i) % ALPHABET.len()]));
        body.extend_from_slice(b"\r\n");
        offset += 7;
    }
    body.extend_from_slice(b".\r\n");
    body
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::SeedableRng;

    #[test]
    fn sizes_accept_bytes_and_binary_units() {
        assert_eq!(parse_size("512"), Ok(512));
        assert_eq!(parse_size("1KB"), Ok(1024));
        assert_eq!(parse_size("100kb"), Ok(100 * 1024));
        assert_eq!(parse_size("2 MB"), Ok(2 * 1024 * 1024));
        assert_eq!(parse_size("10B"), Ok(10));
    }

    #[test]
    fn sizes_reject_unknown_units_and_huge_values() {
        assert!(matches!(parse_size("1GB"), Err(WorkloadError::Size(_))));
        assert!(matches!(parse_size("KB"), Err(WorkloadError::Size(_))));
        assert!(matches!(parse_size("-1"), Err(WorkloadError::Size(_))));
        assert!(matches!(
            parse_size("300MB"),
            Err(WorkloadError::SizeTooLarge(_))
        ));
        assert!(parse_size("99999999999999999999KB").is_err());
    }

    #[test]
    fn weighted_domains_map_tickets_by_cumulative_weight() {
        let p = DomainPicker::parse("nats:3,amqp:1").unwrap();
        assert_eq!(p.total, 4);
        let picked: Vec<&str> = (0..4).map(|t| p.domain_at(t)).collect();
        assert_eq!(picked, ["nats", "nats", "nats", "amqp"]);
    }

    #[test]
    fn weighted_domains_follow_weights_statistically() {
        let p = DomainPicker::parse("nats:3, amqp:1,kafka:0").unwrap();
        let mut rng = rand::rngs::StdRng::seed_from_u64(7);
        let n = 40_000;
        let nats = (0..n).filter(|_| p.pick(&mut rng) == "nats").count();
        let share = nats as f64 / n as f64;
        assert!((share - 0.75).abs() < 0.02, "nats share {share}");
    }

    #[test]
    fn default_domain_without_weight_always_wins() {
        let p = DomainPicker::parse("example.com").unwrap();
        let mut rng = rand::rngs::StdRng::seed_from_u64(1);
        assert!((0..100).all(|_| p.pick(&mut rng) == "example.com"));
    }

    #[test]
    fn malformed_domain_lists_are_rejected() {
        for bad in ["", "a:x", "a:0", ",", "bad domain:1", "a:-1"] {
            assert!(DomainPicker::parse(bad).is_err(), "{bad:?} accepted");
        }
    }

    #[test]
    fn body_matches_requested_size_and_is_terminated() {
        for size in (1000usize..1200).chain([100 * 1024]) {
            let body = build_body(size, "a@b.test");
            assert!(body.ends_with(b"\r\n.\r\n"));
            assert_eq!(body.len() - 3, size, "size {size}");
            let dot_lines = body.windows(2).filter(|w| w == b"\n.").count();
            assert_eq!(dot_lines, 1, "only the terminator may start with a dot");
        }
        // Smaller than the headers: headers only.
        let tiny = build_body(1, "a@b.test");
        assert!(tiny.ends_with(b"\r\n\r\n.\r\n"));
    }
}
