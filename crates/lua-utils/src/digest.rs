//! `kumo.digest`: `sha1`, `sha224`, `sha256`, `sha384`, `sha512`,
//! `sha512_256`, `sha3_256`, `sha3_384`, `sha3_512` and `crc32` over any
//! number of arguments (strings as their bytes, anything else as its JSON
//! text, object keys sorted), and `hmac_sha1`/`224`/`256`/`384`/`512(KEY, MSG)` with the key as
//! a KeySource (`'/path'` or `{ key_data = '...' }`).
//!
//! Each returns a `BinaryResult`: `tostring` gives lowercase hex, and the
//! fields `bytes`, `hex`, `base32`, `base32_nopad`, `base32hex`,
//! `base32hex_nopad`, `base64`, `base64_nopad`, `base64url`,
//! `base64url_nopad` give the bytes raw or encoded. CRC32's four bytes are
//! big-endian, as in KumoMTA.

use std::sync::Once;

use hermod_policy::errors::located;
use hermod_policy::KeySource;
use mlua::{Lua, MetaMethod, UserData, UserDataFields, UserDataMethods, Value, Variadic};
use sha2::Digest;

/// Digest bytes with KumoMTA's encodings as fields.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BinaryResult(pub Vec<u8>);

impl UserData for BinaryResult {
    fn add_fields<F: UserDataFields<Self>>(fields: &mut F) {
        fields.add_field_method_get("bytes", |lua, this| lua.create_string(&this.0));
        for (name, encoding) in crate::encode::ENCODINGS {
            fields.add_field_method_get(name, move |_, this| Ok(encoding.encode(&this.0)));
        }
    }

    fn add_methods<M: UserDataMethods<Self>>(methods: &mut M) {
        methods.add_meta_method(MetaMethod::ToString, |_, this, ()| {
            Ok(data_encoding::HEXLOWER.encode(&this.0))
        });
        methods.add_meta_method(MetaMethod::Eq, |_, this, other: mlua::AnyUserData| {
            Ok(other.borrow::<BinaryResult>().is_ok_and(|o| *o == *this))
        });
    }
}

/// Feed each argument to `update`: strings as bytes, other values as JSON.
fn feed(
    lua: &Lua,
    what: &str,
    args: Variadic<Value>,
    mut update: impl FnMut(&[u8]),
) -> mlua::Result<()> {
    for arg in args {
        match arg {
            Value::String(s) => update(&s.as_bytes()),
            other => {
                let json = hermod_policy::lua_to_json(lua, other)
                    .and_then(|j| {
                        serde_json::to_string(&canonical(j)).map_err(mlua::Error::external)
                    })
                    .map_err(|e| {
                        located(
                            lua,
                            format!("{what}: an argument cannot be encoded as JSON: {e}"),
                        )
                    })?;
                update(json.as_bytes());
            }
        }
    }
    Ok(())
}

/// Object keys sorted at every level: Lua hands a table's keys over in no
/// fixed order, and equal tables must hash equally in every context.
fn canonical(v: serde_json::Value) -> serde_json::Value {
    use serde_json::Value as J;
    match v {
        J::Object(m) => {
            let mut entries: Vec<_> = m.into_iter().collect();
            entries.sort_by(|a, b| a.0.cmp(&b.0));
            J::Object(
                entries
                    .into_iter()
                    .map(|(k, v)| (k, canonical(v)))
                    .collect(),
            )
        }
        J::Array(a) => J::Array(a.into_iter().map(canonical).collect()),
        other => other,
    }
}

fn hash<D: Digest>(lua: &Lua, what: &str, args: Variadic<Value>) -> mlua::Result<BinaryResult> {
    let mut hasher = D::new();
    feed(lua, what, args, |b| hasher.update(b))?;
    Ok(BinaryResult(hasher.finalize().to_vec()))
}

/// HMAC (RFC 2104) over digest `D` with input block size `block` bytes.
/// Written out rather than taken from the `hmac` crate, whose `digest`
/// features would rebuild async-nats; the documented test vectors check it.
fn hmac<D: Digest>(
    lua: &Lua,
    what: &str,
    block: usize,
    key: Value,
    msg: Value,
) -> mlua::Result<BinaryResult> {
    let source: KeySource = hermod_policy::config::from_lua_strict(lua, key, what)?;
    let mut key = source
        .load()
        .map_err(|e| located(lua, format!("{what}: {e}")))?;
    let msg = crate::bytes_arg(lua, what, "message", &msg)?;
    if key.len() > block {
        key = D::digest(&key).to_vec();
    }
    key.resize(block, 0);
    let mut inner = D::new();
    inner.update(key.iter().map(|b| b ^ 0x36).collect::<Vec<u8>>());
    inner.update(&msg);
    let mut outer = D::new();
    outer.update(key.iter().map(|b| b ^ 0x5c).collect::<Vec<u8>>());
    outer.update(inner.finalize());
    Ok(BinaryResult(outer.finalize().to_vec()))
}

pub fn register(lua: &Lua) -> mlua::Result<()> {
    static PORTABLE: Once = Once::new();
    PORTABLE.call_once(hermod_policy::portable::register_handle::<BinaryResult>);

    let m = crate::module(lua, "digest")?;
    macro_rules! hashes {
        ($($name:literal => $ty:ty),* $(,)?) => {$(
            m.set(
                $name,
                lua.create_function(|lua, args: Variadic<Value>| {
                    hash::<$ty>(lua, concat!("kumo.digest.", $name), args)
                })?,
            )?;
        )*};
    }
    hashes! {
        "sha1" => sha1::Sha1,
        "sha224" => sha2::Sha224,
        "sha256" => sha2::Sha256,
        "sha384" => sha2::Sha384,
        "sha512" => sha2::Sha512,
        "sha512_256" => sha2::Sha512_256,
        "sha3_256" => sha3::Sha3_256,
        "sha3_384" => sha3::Sha3_384,
        "sha3_512" => sha3::Sha3_512,
    }
    // The block sizes are FIPS 180-4's.
    macro_rules! hmacs {
        ($($name:literal => $ty:ty, $block:literal),* $(,)?) => {$(
            m.set(
                $name,
                lua.create_function(|lua, (key, msg): (Value, Value)| {
                    hmac::<$ty>(lua, concat!("kumo.digest.", $name), $block, key, msg)
                })?,
            )?;
        )*};
    }
    hmacs! {
        "hmac_sha1" => sha1::Sha1, 64,
        "hmac_sha224" => sha2::Sha224, 64,
        "hmac_sha256" => sha2::Sha256, 64,
        "hmac_sha384" => sha2::Sha384, 128,
        "hmac_sha512" => sha2::Sha512, 128,
    }
    m.set(
        "crc32",
        lua.create_function(|lua, args: Variadic<Value>| {
            let mut hasher = crc32fast::Hasher::new();
            feed(lua, "kumo.digest.crc32", args, |b| hasher.update(b))?;
            Ok(BinaryResult(hasher.finalize().to_be_bytes().to_vec()))
        })?,
    )?;
    Ok(())
}
