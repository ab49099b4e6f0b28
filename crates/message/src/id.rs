use std::fmt;
use std::str::FromStr;
use std::sync::OnceLock;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use uuid::{Timestamp, Uuid};

/// A spool id: a UUID v1 rendered as 32 lower-case hex characters.
/// The creation time is encoded in it, which is why it is used as the
/// message's `created` timestamp in log records (as KumoMTA does).
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct SpoolId(Uuid);

#[derive(Debug, thiserror::Error)]
pub enum IdError {
    #[error("invalid spool id {0:?}: expected 32 hex characters of a UUID v1")]
    Invalid(String),
}

fn node_id() -> &'static [u8; 6] {
    static NODE: OnceLock<[u8; 6]> = OnceLock::new();
    NODE.get_or_init(|| {
        let mut n: [u8; 6] = rand::random();
        // Multicast bit marks a random (non-MAC) node id, per RFC 4122 §4.5.
        n[0] |= 0x01;
        n
    })
}

fn context() -> &'static uuid::timestamp::context::ContextV1 {
    static CTX: OnceLock<uuid::timestamp::context::ContextV1> = OnceLock::new();
    CTX.get_or_init(|| uuid::timestamp::context::ContextV1::new(rand::random()))
}

impl SpoolId {
    pub fn new() -> Self {
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap_or_default();
        let ts = Timestamp::from_unix(context(), now.as_secs(), now.subsec_nanos());
        Self(Uuid::new_v1(ts, node_id()))
    }

    pub fn from_bytes(b: [u8; 16]) -> Self {
        Self(Uuid::from_bytes(b))
    }

    pub fn as_bytes(&self) -> &[u8; 16] {
        self.0.as_bytes()
    }

    pub fn from_slice(b: &[u8]) -> Result<Self, IdError> {
        let arr: [u8; 16] = b
            .try_into()
            .map_err(|_| IdError::Invalid(format!("{} raw bytes", b.len())))?;
        Ok(Self::from_bytes(arr))
    }

    /// When the id was minted; falls back to the epoch for ids that are not v1.
    pub fn created(&self) -> SystemTime {
        match self.0.get_timestamp() {
            Some(ts) => {
                let (secs, nanos) = ts.to_unix();
                UNIX_EPOCH + Duration::new(secs, nanos)
            }
            None => UNIX_EPOCH,
        }
    }
}

impl Default for SpoolId {
    fn default() -> Self {
        Self::new()
    }
}

impl fmt::Display for SpoolId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // Encoded in one step: formatting through `simple()`'s own Display
        // went through the formatter twice, and every log record and spool
        // key prints an id.
        let mut buf = [0u8; uuid::fmt::Simple::LENGTH];
        f.pad(self.0.simple().encode_lower(&mut buf))
    }
}

impl fmt::Debug for SpoolId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "SpoolId({})", self.0.simple())
    }
}

impl FromStr for SpoolId {
    type Err = IdError;
    fn from_str(s: &str) -> Result<Self, IdError> {
        if s.len() != 32 || !s.bytes().all(|b| b.is_ascii_hexdigit()) {
            return Err(IdError::Invalid(s.to_string()));
        }
        Uuid::parse_str(s)
            .map(SpoolId)
            .map_err(|_| IdError::Invalid(s.to_string()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_are_32_lowercase_hex_and_round_trip() {
        let id = SpoolId::new();
        let s = id.to_string();
        assert_eq!(s.len(), 32);
        assert!(s
            .bytes()
            .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b)));
        assert_eq!(s.parse::<SpoolId>().unwrap(), id);
        assert_eq!(s, id.0.simple().to_string());
        assert_eq!(format!("{id:>34}"), format!("  {s}"), "width is honoured");
    }

    #[test]
    fn ids_encode_their_creation_time() {
        let before = SystemTime::now() - Duration::from_secs(1);
        let id = SpoolId::new();
        let created = id.created();
        assert!(created >= before && created <= SystemTime::now() + Duration::from_secs(1));
    }

    #[test]
    fn ids_are_unique_under_rapid_minting() {
        let mut seen = std::collections::HashSet::new();
        for _ in 0..100_000 {
            assert!(seen.insert(SpoolId::new()));
        }
    }

    #[test]
    fn malformed_ids_are_rejected() {
        assert!("xyz".parse::<SpoolId>().is_err());
        assert!("0123456789abcdef0123456789abcdeg"
            .parse::<SpoolId>()
            .is_err());
    }
}
