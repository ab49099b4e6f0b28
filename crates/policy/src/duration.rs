//! Durations as policies write them: a number of seconds (fractions allowed)
//! or a humantime string such as `"20 minutes"`, `"1h 30m"`, `"7 days"`.

use std::time::Duration;

use serde::de::{self, Deserializer, Visitor};

/// Why a policy's duration was refused; the text names the input.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum DurationError {
    #[error("invalid duration {input:?}: {error}")]
    Unparsable {
        input: String,
        error: humantime::DurationError,
    },
    /// Negative, infinite or NaN.
    #[error("invalid duration {0}: must be a non-negative number of seconds")]
    NotNonNegative(f64),
    #[error("invalid duration {secs}: {error}")]
    OutOfRange {
        secs: f64,
        error: std::time::TryFromFloatSecsError,
    },
}

pub fn parse(s: &str) -> Result<Duration, DurationError> {
    let t = s.trim();
    if let Ok(n) = t.parse::<f64>() {
        return from_secs(n);
    }
    humantime::parse_duration(t).map_err(|error| DurationError::Unparsable {
        input: s.to_string(),
        error,
    })
}

pub fn from_secs(n: f64) -> Result<Duration, DurationError> {
    if !n.is_finite() || n < 0.0 {
        return Err(DurationError::NotNonNegative(n));
    }
    Duration::try_from_secs_f64(n).map_err(|error| DurationError::OutOfRange { secs: n, error })
}

struct DurationVisitor;

impl<'de> Visitor<'de> for DurationVisitor {
    type Value = Duration;
    fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
        f.write_str(
            "a duration: seconds as a number, a string like \"5 minutes\", or { secs = , nanos = }",
        )
    }
    fn visit_str<E: de::Error>(self, v: &str) -> Result<Duration, E> {
        parse(v).map_err(E::custom)
    }
    fn visit_f64<E: de::Error>(self, v: f64) -> Result<Duration, E> {
        from_secs(v).map_err(E::custom)
    }
    fn visit_i64<E: de::Error>(self, v: i64) -> Result<Duration, E> {
        from_secs(v as f64).map_err(E::custom)
    }
    fn visit_u64<E: de::Error>(self, v: u64) -> Result<Duration, E> {
        Ok(Duration::from_secs(v))
    }
    /// `{ secs = 30, nanos = 0 }`, the form serde gives a Rust `Duration`, which some
    /// published policies copy (for example NATS `ping_interval`).
    fn visit_map<A: de::MapAccess<'de>>(self, mut map: A) -> Result<Duration, A::Error> {
        let (mut secs, mut nanos) = (None::<u64>, 0u32);
        while let Some(key) = map.next_key::<String>()? {
            match key.as_str() {
                "secs" => secs = Some(map.next_value()?),
                "nanos" => nanos = map.next_value()?,
                k => return Err(de::Error::unknown_field(k, &["secs", "nanos"])),
            }
        }
        // An empty table is a mistake, not zero seconds.
        let secs = secs.ok_or_else(|| de::Error::missing_field("secs"))?;
        if nanos >= 1_000_000_000 {
            return Err(de::Error::custom("nanos must be below 1000000000"));
        }
        Ok(Duration::new(secs, nanos))
    }
}

/// `#[serde(deserialize_with = "hermod_policy::duration::deserialize")]`
pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
    d.deserialize_any(DurationVisitor)
}

/// For `Option<Duration>` fields (add `#[serde(default)]`).
pub fn deserialize_opt<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Duration>, D::Error> {
    deserialize(d).map(Some)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accepts_every_documented_form() {
        assert_eq!(parse("1 minute").unwrap(), Duration::from_secs(60));
        assert_eq!(parse("20m").unwrap(), Duration::from_secs(1200));
        assert_eq!(parse("7 days").unwrap(), Duration::from_secs(7 * 86400));
        assert_eq!(parse("1h 30m").unwrap(), Duration::from_secs(5400));
        assert_eq!(parse("5s").unwrap(), Duration::from_secs(5));
        assert_eq!(parse("1.5").unwrap(), Duration::from_millis(1500));
        assert_eq!(from_secs(0.25).unwrap(), Duration::from_millis(250));
    }

    #[test]
    fn a_secs_and_nanos_table_is_a_duration_and_other_keys_are_refused() {
        use serde::de::value::{Error, MapDeserializer};
        let table = |pairs: Vec<(&'static str, u64)>| {
            deserialize(MapDeserializer::<_, Error>::new(pairs.into_iter()))
        };
        assert_eq!(
            table(vec![("secs", 30), ("nanos", 500_000_000)]).unwrap(),
            Duration::from_millis(30_500)
        );
        let e = table(vec![("seconds", 30)]).unwrap_err().to_string();
        assert!(e.contains("unknown field `seconds`"), "{e}");
        let e = table(vec![("secs", 1), ("nanos", 1_000_000_000)])
            .unwrap_err()
            .to_string();
        assert!(e.contains("nanos must be below"), "{e}");
        let e = table(vec![]).unwrap_err().to_string();
        assert!(e.contains("missing field `secs`"), "{e}");
    }

    #[test]
    fn rejects_garbage_and_negatives_with_the_input_named() {
        let e = parse("soon").unwrap_err();
        assert!(matches!(&e, DurationError::Unparsable { input, .. } if input == "soon"));
        assert!(
            e.to_string().starts_with("invalid duration \"soon\": "),
            "{e}"
        );
        assert_eq!(
            from_secs(-1.0).unwrap_err().to_string(),
            "invalid duration -1: must be a non-negative number of seconds"
        );
        assert_eq!(
            parse("-2.5").unwrap_err(),
            DurationError::NotNonNegative(-2.5)
        );
        let e = from_secs(1e300).unwrap_err();
        assert!(matches!(e, DurationError::OutOfRange { .. }), "{e}");
        assert!(e.to_string().starts_with("invalid duration 1000"), "{e}");
    }
}
