//! `kumo.encode`: `<encoding>_encode(STRING)` and `<encoding>_decode(STRING)`
//! for `base32`, `base32_nopad`, `base32hex`, `base32hex_nopad`, `base64`,
//! `base64_nopad`, `base64url`, `base64url_nopad` and `hex`, as KumoMTA
//! lists them. Encoding gives text; decoding gives the bytes as a Lua
//! string, which may be binary. `hex_decode` accepts either case.
//!
//! KumoMTA's `charset_encode`/`charset_decode` are not provided yet.

use data_encoding::Encoding;
use hermod_policy::errors::located;
use mlua::{Lua, Value};

/// The encodings by KumoMTA's name. [`crate::digest::BinaryResult`] has a
/// field for each, so the two always offer the same set.
pub const ENCODINGS: [(&str, &Encoding); 9] = [
    ("base32", &data_encoding::BASE32),
    ("base32_nopad", &data_encoding::BASE32_NOPAD),
    ("base32hex", &data_encoding::BASE32HEX),
    ("base32hex_nopad", &data_encoding::BASE32HEX_NOPAD),
    ("base64", &data_encoding::BASE64),
    ("base64_nopad", &data_encoding::BASE64_NOPAD),
    ("base64url", &data_encoding::BASE64URL),
    ("base64url_nopad", &data_encoding::BASE64URL_NOPAD),
    ("hex", &data_encoding::HEXLOWER),
];

const HEX_ANY_CASE: &Encoding = &data_encoding::HEXLOWER_PERMISSIVE;

pub fn register(lua: &Lua) -> mlua::Result<()> {
    let m = crate::module(lua, "encode")?;
    for (name, encoding) in ENCODINGS {
        let encode_name = format!("kumo.encode.{name}_encode");
        m.set(
            format!("{name}_encode"),
            lua.create_function(move |lua, v: Value| {
                let bytes = crate::bytes_arg(lua, &encode_name, "input", &v)?;
                Ok(encoding.encode(&bytes))
            })?,
        )?;
        // Hex from other tools is often upper case; decoding it is harmless.
        let decoder = if name == "hex" {
            HEX_ANY_CASE
        } else {
            encoding
        };
        let decode_name = format!("kumo.encode.{name}_decode");
        m.set(
            format!("{name}_decode"),
            lua.create_function(move |lua, v: Value| {
                let bytes = crate::bytes_arg(lua, &decode_name, "input", &v)?;
                // The input is not echoed: it may be a credential.
                let decoded = decoder.decode(&bytes).map_err(|e| {
                    located(
                        lua,
                        format!("{decode_name}: input is not valid {name}: {e}"),
                    )
                })?;
                lua.create_string(decoded)
            })?,
        )?;
    }
    Ok(())
}
