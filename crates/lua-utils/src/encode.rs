//! `kumo.encode`: `<encoding>_encode(STRING)` and `<encoding>_decode(STRING)`
//! for `base32`, `base32_nopad`, `base32hex`, `base32hex_nopad`, `base64`,
//! `base64_nopad`, `base64url`, `base64url_nopad` and `hex`, as KumoMTA
//! lists them. Encoding gives text; decoding gives the bytes as a Lua
//! string, which may be binary. `hex_decode` accepts either case.
//!
//!
//! `charset_decode(CHARSET, BYTES)` turns text in a named charset (the
//! WHATWG Encoding Standard's labels: `iso-8859-1`, `shift_jis`, `gbk`,
//! `koi8-r`, `utf-16le`, ...) into UTF-8, failing on malformed input;
//! `charset_encode(CHARSET, TEXT [, IGNORE_ERRORS])` goes the other way,
//! leaving out characters the charset cannot represent unless
//! IGNORE_ERRORS is `false`, which makes them an error.

use data_encoding::Encoding;
use encoding_rs::EncoderResult;
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
    register_charsets(lua, &m)
}

fn charset(lua: &Lua, what: &str, v: &Value) -> mlua::Result<&'static encoding_rs::Encoding> {
    let name = crate::str_arg(lua, what, "charset", v)?;
    encoding_rs::Encoding::for_label(name.as_bytes())
        .ok_or_else(|| located(lua, format!("{what}: unknown charset {name:?}")))
}

pub(crate) fn register_charsets(lua: &Lua, m: &mlua::Table) -> mlua::Result<()> {
    m.set(
        "charset_decode",
        lua.create_function(|lua, (cs, input): (Value, Value)| {
            const WHAT: &str = "kumo.encode.charset_decode";
            let enc = charset(lua, WHAT, &cs)?;
            let bytes = crate::bytes_arg(lua, WHAT, "input", &input)?;
            let text = enc
                .decode_without_bom_handling_and_without_replacement(&bytes)
                .ok_or_else(|| {
                    located(lua, format!("{WHAT}: input is not valid {}", enc.name()))
                })?;
            lua.create_string(text.as_bytes())
        })?,
    )?;
    m.set(
        "charset_encode",
        lua.create_function(|lua, (cs, input, ignore): (Value, Value, Option<bool>)| {
            const WHAT: &str = "kumo.encode.charset_encode";
            let enc = charset(lua, WHAT, &cs)?;
            let text = crate::str_arg(lua, WHAT, "input", &input)?;
            encode_charset(enc, &text, ignore.unwrap_or(true))
                .map_err(|e| located(lua, format!("{WHAT}: {e}")))
                .and_then(|bytes| lua.create_string(bytes))
        })?,
    )?;
    Ok(())
}

/// `text` in `enc`. The Encoding Standard defines no encoder for UTF-16
/// (its encoders write UTF-8 instead), so those two are written here.
fn encode_charset(
    enc: &'static encoding_rs::Encoding,
    text: &str,
    ignore_errors: bool,
) -> Result<Vec<u8>, String> {
    if enc == encoding_rs::UTF_16LE {
        return Ok(text.encode_utf16().flat_map(u16::to_le_bytes).collect());
    }
    if enc == encoding_rs::UTF_16BE {
        return Ok(text.encode_utf16().flat_map(u16::to_be_bytes).collect());
    }
    if enc.output_encoding() != enc {
        return Err(format!("cannot encode into {}", enc.name()));
    }
    let mut encoder = enc.new_encoder();
    let mut out = Vec::with_capacity(text.len());
    let mut rest = text;
    loop {
        let room = encoder
            .max_buffer_length_from_utf8_without_replacement(rest.len())
            .unwrap_or(rest.len() * 4 + 16);
        let start = out.len();
        out.resize(start + room, 0);
        let (result, read, written) =
            encoder.encode_from_utf8_without_replacement(rest, &mut out[start..], true);
        out.truncate(start + written);
        rest = &rest[read..];
        match result {
            EncoderResult::InputEmpty => return Ok(out),
            EncoderResult::OutputFull => {}
            // Left out, as KumoMTA documents: a partial encoding.
            EncoderResult::Unmappable(_) if ignore_errors => {}
            EncoderResult::Unmappable(c) => {
                return Err(format!("{c:?} cannot be represented in {}", enc.name()))
            }
        }
    }
}
