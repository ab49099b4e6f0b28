//! Pieces shared by every broker module: binary-safe payloads, lenient
//! strings and the closed-handle error. Durations, strict decoding at a
//! captured call site and `file:line` errors come from the policy crate
//! (`crates/policy/src/duration.rs`, `config.rs`, `errors.rs`).

use std::fmt;

use serde::de::{self, Deserializer, Visitor};
use serde::Deserialize;

/// Raised by every method of a handle after `close()` on it or on any copy.
pub const CLIENT_CLOSED: &str = "client was closed";

/// A Lua string taken byte for byte: payloads are mail, which is not
/// guaranteed to be UTF-8.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct LuaBytes(pub Vec<u8>);

impl<'de> Deserialize<'de> for LuaBytes {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl Visitor<'_> for V {
            type Value = LuaBytes;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a string")
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<LuaBytes, E> {
                Ok(LuaBytes(v.as_bytes().to_vec()))
            }
            fn visit_string<E: de::Error>(self, v: String) -> Result<LuaBytes, E> {
                Ok(LuaBytes(v.into_bytes()))
            }
            fn visit_bytes<E: de::Error>(self, v: &[u8]) -> Result<LuaBytes, E> {
                Ok(LuaBytes(v.to_vec()))
            }
            fn visit_byte_buf<E: de::Error>(self, v: Vec<u8>) -> Result<LuaBytes, E> {
                Ok(LuaBytes(v))
            }
        }
        d.deserialize_any(V)
    }
}

/// A string setting where policies commonly write numbers or booleans
/// (librdkafka properties, AMQP header values): numbers and booleans are
/// turned into their textual form.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Stringish(pub String);

impl<'de> Deserialize<'de> for Stringish {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl Visitor<'_> for V {
            type Value = Stringish;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a string, number or boolean")
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<Stringish, E> {
                Ok(Stringish(v.to_string()))
            }
            fn visit_bool<E: de::Error>(self, v: bool) -> Result<Stringish, E> {
                Ok(Stringish(v.to_string()))
            }
            fn visit_i64<E: de::Error>(self, v: i64) -> Result<Stringish, E> {
                Ok(Stringish(v.to_string()))
            }
            fn visit_u64<E: de::Error>(self, v: u64) -> Result<Stringish, E> {
                Ok(Stringish(v.to_string()))
            }
            fn visit_f64<E: de::Error>(self, v: f64) -> Result<Stringish, E> {
                if v.fract() == 0.0 && v.abs() < 9.0e15 {
                    Ok(Stringish(format!("{}", v as i64)))
                } else {
                    Ok(Stringish(v.to_string()))
                }
            }
        }
        d.deserialize_any(V)
    }
}

/// Install the ring crypto provider for rustls once; reqwest and the TLS
/// broker clients need a process default. Another crate may have installed
/// it first, which is fine.
pub fn ensure_crypto_provider() {
    let _ = rustls::crypto::ring::default_provider().install_default();
}
