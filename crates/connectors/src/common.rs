//! Pieces shared by every broker module: binary-safe payloads, lenient
//! strings and durations, strict decoding at a captured call site and the
//! closed-handle error. Errors are located with `hermod_policy::errors`
//! (`crates/policy/src/errors.rs`).

use std::fmt;
use std::time::Duration;

use hermod_policy::errors::CallSite;
use mlua::Lua;
use serde::de::{self, Deserializer, MapAccess, Visitor};
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

/// A duration given either as a duration string / number of seconds, or as
/// the `{ secs = , nanos = }` struct KumoMTA's serde representation uses.
pub fn deserialize_flexible_duration_opt<'de, D: Deserializer<'de>>(
    d: D,
) -> Result<Option<Duration>, D::Error> {
    struct V;
    impl<'de> Visitor<'de> for V {
        type Value = Duration;
        fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
            f.write_str("a duration: seconds, a string like \"10s\", or { secs = , nanos = }")
        }
        fn visit_str<E: de::Error>(self, v: &str) -> Result<Duration, E> {
            hermod_policy::duration::parse(v).map_err(E::custom)
        }
        fn visit_i64<E: de::Error>(self, v: i64) -> Result<Duration, E> {
            hermod_policy::duration::from_secs(v as f64).map_err(E::custom)
        }
        fn visit_u64<E: de::Error>(self, v: u64) -> Result<Duration, E> {
            Ok(Duration::from_secs(v))
        }
        fn visit_f64<E: de::Error>(self, v: f64) -> Result<Duration, E> {
            hermod_policy::duration::from_secs(v).map_err(E::custom)
        }
        fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Duration, A::Error> {
            let (mut secs, mut nanos) = (0u64, 0u32);
            while let Some(key) = map.next_key::<String>()? {
                match key.as_str() {
                    "secs" => secs = map.next_value()?,
                    "nanos" => nanos = map.next_value()?,
                    k => return Err(de::Error::unknown_field(k, &["secs", "nanos"])),
                }
            }
            if nanos >= 1_000_000_000 {
                return Err(de::Error::custom("nanos must be below 1000000000"));
            }
            Ok(Duration::new(secs, nanos))
        }
    }
    d.deserialize_any(V).map(Some)
}

/// Install the ring crypto provider for rustls once; reqwest and the TLS
/// broker clients need a process default. Another crate may have installed
/// it first, which is fine.
pub fn ensure_crypto_provider() {
    let _ = rustls::crypto::ring::default_provider().install_default();
}

/// Strictly decode a parameter table (the target type should use
/// `#[serde(deny_unknown_fields)]`), with errors located at `site`. Mirrors
/// `hermod_policy::config::from_lua_strict` but works inside async
/// functions, where the policy frame is below mlua's async shim.
pub fn decode<T: serde::de::DeserializeOwned>(
    lua: &Lua,
    site: &CallSite,
    value: mlua::Value,
    what: &str,
) -> mlua::Result<T> {
    use mlua::LuaSerdeExt;
    let opts = mlua::DeserializeOptions::new().deny_unsupported_types(false);
    lua.from_value_with::<T>(value, opts)
        .map_err(|e| site.error(format!("{what}: {}", hermod_policy::errors::describe(&e))))
}
