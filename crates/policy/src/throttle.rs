//! Limits and rates as egress policies write them: `connection_limit = 32` or `'local:1_000'`,
//! `max_message_rate = '100/s'`, `'10/min'`, `'local:3,600/h'`, `'50/5m,max_burst=10'`.
//!
//! `local:` marks a limit or rate as node-local when throttles are shared between nodes; a
//! single Hermod node keeps every limit local, so the flag is recorded for the day they are
//! shared, and changes nothing until then.

use std::fmt;
use std::time::Duration;

use serde::de::{self, Deserializer, Visitor};
use serde::Deserialize;

/// Why a limit or a rate was refused; the text names the input.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ThrottleError {
    #[error("invalid limit {input:?}: expected a whole number greater than 0, optionally with a 'local:' prefix")]
    Limit { input: String },
    #[error(
        "invalid rate {input:?}: expected 'limit/period' such as '100/s', '10/min' or '3600/h'"
    )]
    NoSlash { input: String },
    #[error("invalid rate {input:?}: the limit must be a whole number greater than 0")]
    RateLimit { input: String },
    #[error(
        "invalid rate {input:?}: unknown period {period:?} (use s, sec, second, m, min, minute, \
         h, hr, hour, d or day, optionally after a count such as '5m')"
    )]
    Period { input: String, period: String },
    #[error("invalid rate {input:?}: max_burst must be a whole number greater than 0")]
    Burst { input: String },
}

/// A maximum count, such as `connection_limit`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LimitSpec {
    pub limit: u64,
    /// Written with the `local:` prefix: never shared between nodes.
    pub local: bool,
}

impl LimitSpec {
    pub const fn new(limit: u64) -> Self {
        LimitSpec {
            limit,
            local: false,
        }
    }

    pub fn parse(input: &str) -> Result<Self, ThrottleError> {
        let (local, rest) = strip_local(input);
        match parse_count(rest) {
            Some(limit) => Ok(LimitSpec { limit, local }),
            None => Err(ThrottleError::Limit {
                input: input.to_string(),
            }),
        }
    }
}

/// A rate: at most `limit` events per `period`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ThrottleSpec {
    pub limit: u64,
    pub period: Duration,
    /// How many events may pass at once (`,max_burst=N`); `None` lets the whole `limit`
    /// through in an instant.
    pub max_burst: Option<u64>,
    /// Written with the `local:` prefix: never shared between nodes.
    pub local: bool,
}

impl ThrottleSpec {
    pub fn parse(input: &str) -> Result<Self, ThrottleError> {
        let (local, rest) = strip_local(input);
        let (rate, max_burst) = match rest.split_once(",max_burst=") {
            Some((rate, burst)) => match parse_count(burst) {
                Some(b) => (rate, Some(b)),
                None => {
                    return Err(ThrottleError::Burst {
                        input: input.to_string(),
                    })
                }
            },
            None => (rest, None),
        };
        let (limit, period) = rate.split_once('/').ok_or_else(|| ThrottleError::NoSlash {
            input: input.to_string(),
        })?;
        let limit = parse_count(limit).ok_or_else(|| ThrottleError::RateLimit {
            input: input.to_string(),
        })?;
        let period = parse_period(period).ok_or_else(|| ThrottleError::Period {
            input: input.to_string(),
            period: period.to_string(),
        })?;
        Ok(ThrottleSpec {
            limit,
            period,
            max_burst,
            local,
        })
    }

    /// The spacing of events when the rate is spread evenly (`period / limit`).
    pub fn interval(&self) -> Duration {
        // `limit` is never 0 after parsing; max(1) keeps a hand-built value from dividing by 0.
        self.period / u32::try_from(self.limit.max(1)).unwrap_or(u32::MAX)
    }
}

fn strip_local(s: &str) -> (bool, &str) {
    match s.trim().strip_prefix("local:") {
        Some(rest) => (true, rest.trim()),
        None => (false, s.trim()),
    }
}

/// A whole number above 0; `_` and `,` may group digits (`1_000`, `1,000`).
fn parse_count(s: &str) -> Option<u64> {
    let digits: String = s
        .trim()
        .chars()
        .filter(|c| *c != '_' && *c != ',')
        .collect();
    if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    digits.parse::<u64>().ok().filter(|n| *n > 0)
}

/// `s`, `min`, `h`, `day`..., optionally after a count: `5m` is five minutes.
fn parse_period(s: &str) -> Option<Duration> {
    let s = s.trim();
    let unit_at = s.find(|c: char| !c.is_ascii_digit())?;
    let count = match &s[..unit_at] {
        "" => 1,
        n => n.parse::<u64>().ok().filter(|n| *n > 0)?,
    };
    let unit_secs: u64 = match &s[unit_at..] {
        "s" | "sec" | "second" => 1,
        "m" | "min" | "minute" => 60,
        "h" | "hr" | "hour" => 3600,
        "d" | "day" => 86400,
        _ => return None,
    };
    count.checked_mul(unit_secs).map(Duration::from_secs)
}

/// `#[serde(deserialize_with = ...)]` for a [`LimitSpec`]: a positive integer or a string.
pub(crate) fn deserialize_limit<'de, D: Deserializer<'de>>(d: D) -> Result<LimitSpec, D::Error> {
    struct V;
    impl Visitor<'_> for V {
        type Value = LimitSpec;
        fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
            f.write_str("a limit: a whole number greater than 0, or a string such as 'local:10'")
        }
        fn visit_str<E: de::Error>(self, v: &str) -> Result<LimitSpec, E> {
            LimitSpec::parse(v).map_err(E::custom)
        }
        fn visit_u64<E: de::Error>(self, v: u64) -> Result<LimitSpec, E> {
            match v {
                0 => Err(E::custom("invalid limit 0: must be greater than 0")),
                n => Ok(LimitSpec::new(n)),
            }
        }
        fn visit_i64<E: de::Error>(self, v: i64) -> Result<LimitSpec, E> {
            match u64::try_from(v) {
                Ok(n) => self.visit_u64(n),
                Err(_) => Err(E::custom(format!(
                    "invalid limit {v}: must be greater than 0"
                ))),
            }
        }
        // Lua numbers such as `10.0` arrive as floats; only whole ones are limits.
        fn visit_f64<E: de::Error>(self, v: f64) -> Result<LimitSpec, E> {
            if v.fract() == 0.0 && v >= 1.0 && v <= u64::MAX as f64 {
                Ok(LimitSpec::new(v as u64))
            } else {
                Err(E::custom(format!(
                    "invalid limit {v}: expected a whole number greater than 0"
                )))
            }
        }
    }
    d.deserialize_any(V)
}

/// For `Option<ThrottleSpec>` fields (add `#[serde(default)]`).
pub(crate) fn deserialize_rate_opt<'de, D: Deserializer<'de>>(
    d: D,
) -> Result<Option<ThrottleSpec>, D::Error> {
    let s = String::deserialize(d)?;
    ThrottleSpec::parse(&s).map(Some).map_err(de::Error::custom)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rate(limit: u64, secs: u64) -> ThrottleSpec {
        ThrottleSpec {
            limit,
            period: Duration::from_secs(secs),
            max_burst: None,
            local: false,
        }
    }

    #[test]
    fn rates_parse_every_period_spelling() {
        assert_eq!(ThrottleSpec::parse("100/s").unwrap(), rate(100, 1));
        assert_eq!(ThrottleSpec::parse("10/min").unwrap(), rate(10, 60));
        assert_eq!(ThrottleSpec::parse("3600/h").unwrap(), rate(3600, 3600));
        assert_eq!(ThrottleSpec::parse("5/hr").unwrap(), rate(5, 3600));
        assert_eq!(ThrottleSpec::parse("2/day").unwrap(), rate(2, 86400));
        assert_eq!(ThrottleSpec::parse("50/5m").unwrap(), rate(50, 300));
        assert_eq!(ThrottleSpec::parse("1_000/hour").unwrap(), rate(1000, 3600));
        assert_eq!(ThrottleSpec::parse("1,000/second").unwrap(), rate(1000, 1));
        assert_eq!(
            ThrottleSpec::parse("100/s").unwrap().interval(),
            Duration::from_millis(10)
        );
    }

    #[test]
    fn a_local_prefix_and_max_burst_are_kept() {
        let r = ThrottleSpec::parse("local:10/min,max_burst=2").unwrap();
        assert!(r.local);
        assert_eq!(r.max_burst, Some(2));
        assert_eq!((r.limit, r.period), (10, Duration::from_secs(60)));
    }

    #[test]
    fn garbage_rates_are_refused_with_the_input_named() {
        for (bad, kind) in [
            ("100", "expected 'limit/period'"),
            ("0/s", "greater than 0"),
            ("ten/s", "greater than 0"),
            ("10/fortnight", "unknown period \"fortnight\""),
            ("10/5", "unknown period \"5\""),
            ("10/s,max_burst=x", "max_burst"),
        ] {
            let e = ThrottleSpec::parse(bad).unwrap_err().to_string();
            assert!(e.contains(&format!("{bad:?}")), "{e}");
            assert!(e.contains(kind), "{e}");
        }
    }

    #[test]
    fn limits_take_numbers_or_strings_with_local_and_separators() {
        assert_eq!(LimitSpec::parse("10").unwrap(), LimitSpec::new(10));
        assert_eq!(
            LimitSpec::parse("local:10").unwrap(),
            LimitSpec {
                limit: 10,
                local: true
            }
        );
        assert_eq!(LimitSpec::parse("1,000").unwrap(), LimitSpec::new(1000));
        assert_eq!(LimitSpec::parse("1_000").unwrap(), LimitSpec::new(1000));
        for bad in ["0", "", "local:", "-3", "ten"] {
            let e = LimitSpec::parse(bad).unwrap_err().to_string();
            assert!(e.starts_with(&format!("invalid limit {bad:?}")), "{e}");
        }
    }
}
