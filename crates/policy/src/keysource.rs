//! Where a policy says key material or a secret lives: a file path, or the
//! data inline. One type for every user: the listeners' TLS certificate and
//! key (`crates/tls/src/lib.rs`), the broker credentials of the connectors
//! (`crates/connectors/src/nats/config.rs`), and signing keys.

use std::fmt;

use serde::de::{self, Deserializer, MapAccess, Visitor};
use serde::Deserialize;

/// Key material or a secret as a policy gives it: a file path string, or
/// the data inline as `{ key_data = '...' }`. KumoMTA's vault form
/// (`{ vault_path = ..., ... }`) is rejected with a clear message rather
/// than silently ignored, and so is any other table key.
// Hash: a key source is part of cache keys (the DKIM signer and key caches).
#[derive(Clone, PartialEq, Eq, Hash)]
pub enum KeySource {
    /// A file holding the data.
    Path(String),
    /// The data itself.
    Data { key_data: String },
}

/// Why a [`KeySource`] could not be read. It names the file, never inline
/// data: only a file can fail to load.
#[derive(Debug, thiserror::Error)]
pub enum KeySourceError {
    #[error("cannot read key file '{path}': {source}")]
    Read {
        path: String,
        #[source]
        source: std::io::Error,
    },
}

// Inline data is a secret; config structs holding a KeySource derive Debug
// and may end up in logs.
impl fmt::Debug for KeySource {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            KeySource::Path(p) => f.debug_tuple("Path").field(p).finish(),
            KeySource::Data { .. } => f.write_str("Data { key_data: <redacted> }"),
        }
    }
}

impl KeySource {
    /// The bytes as given (a file's whole content), for PEM and other
    /// binary-safe key material.
    pub fn load(&self) -> Result<Vec<u8>, KeySourceError> {
        match self {
            KeySource::Path(path) => std::fs::read(path).map_err(|source| KeySourceError::Read {
                path: path.clone(),
                source,
            }),
            KeySource::Data { key_data } => Ok(key_data.as_bytes().to_vec()),
        }
    }

    /// The secret as text, for passwords and tokens: a file's trailing line
    /// breaks are removed (files usually end in one); inline data is kept
    /// as written.
    pub async fn resolve(&self) -> Result<String, KeySourceError> {
        match self {
            KeySource::Data { key_data } => Ok(key_data.clone()),
            KeySource::Path(path) => tokio::fs::read_to_string(path)
                .await
                .map(|s| s.trim_end_matches(['\r', '\n']).to_string())
                .map_err(|source| KeySourceError::Read {
                    path: path.clone(),
                    source,
                }),
        }
    }

    /// How to name the source in messages without revealing inline data:
    /// the path, or `<inline key_data>`.
    pub fn describe(&self) -> &str {
        match self {
            KeySource::Path(p) => p,
            KeySource::Data { .. } => "<inline key_data>",
        }
    }
}

impl<'de> Deserialize<'de> for KeySource {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = KeySource;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a file path string or a table { key_data = '...' }")
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<KeySource, E> {
                Ok(KeySource::Path(v.to_string()))
            }
            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<KeySource, A::Error> {
                let mut data = None;
                while let Some(key) = map.next_key::<String>()? {
                    match key.as_str() {
                        "key_data" => data = Some(map.next_value::<String>()?),
                        k if k.starts_with("vault_") => {
                            return Err(de::Error::custom(format!(
                                "key source field `{k}`: vault key sources are not supported; \
                                 use a file path or {{ key_data = '...' }}"
                            )))
                        }
                        k => return Err(de::Error::unknown_field(k, &["key_data"])),
                    }
                }
                data.map(|key_data| KeySource::Data { key_data })
                    .ok_or_else(|| de::Error::missing_field("key_data"))
            }
        }
        d.deserialize_any(V)
    }
}

/// A secret such as a password, given as a [`KeySource`]: a file path string or
/// `{ key_data = '...' }`. Unlike a key file, neither the path nor the data is ever shown:
/// a policy that writes the password itself where a path belongs (`password = 'tiger'`) must
/// not have it printed in a log line or an error.
#[derive(Clone, PartialEq, Eq, Deserialize)]
#[serde(transparent)]
pub struct Secret(KeySource);

/// Why a [`Secret`] could not be read; names no path (see [`Secret`]).
#[derive(Debug, thiserror::Error)]
#[error("cannot read the secret's file: {source}")]
pub struct SecretError {
    #[source]
    source: std::io::Error,
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Secret(<redacted>)")
    }
}

impl Secret {
    pub fn new(source: KeySource) -> Self {
        Secret(source)
    }

    /// The secret as text: a file's trailing line breaks removed, inline data as written.
    pub async fn resolve(&self) -> Result<String, SecretError> {
        self.0.resolve().await.map_err(|e| match e {
            KeySourceError::Read { source, .. } => SecretError { source },
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn data(s: &str) -> KeySource {
        KeySource::Data {
            key_data: s.to_string(),
        }
    }

    #[test]
    fn deserializes_from_a_path_or_key_data() {
        let p: KeySource = serde_json::from_str(r#""/x/cert.pem""#).unwrap();
        assert_eq!(p, KeySource::Path("/x/cert.pem".into()));
        assert_eq!(p.describe(), "/x/cert.pem");
        let d: KeySource = serde_json::from_str(r#"{"key_data": "PEM"}"#).unwrap();
        assert_eq!(d, data("PEM"));
        assert_eq!(d.load().unwrap(), b"PEM");
        assert_eq!(d.describe(), "<inline key_data>");
    }

    #[test]
    fn other_forms_are_rejected_with_what_is_expected() {
        let e = serde_json::from_str::<KeySource>("5").unwrap_err();
        assert!(e.to_string().contains("key_data"), "{e}");
        let e = serde_json::from_str::<KeySource>(r#"{"vault_path": "x"}"#).unwrap_err();
        assert!(
            e.to_string()
                .starts_with("key source field `vault_path`: vault key sources are not supported"),
            "{e}"
        );
        let e = serde_json::from_str::<KeySource>(r#"{"key_data": "k", "kye": 1}"#).unwrap_err();
        assert!(e.to_string().contains("unknown field `kye`"), "{e}");
        let e = serde_json::from_str::<KeySource>("{}").unwrap_err();
        assert!(e.to_string().contains("missing field `key_data`"), "{e}");
    }

    #[test]
    fn lua_tables_decode_like_policies_write_them() {
        use mlua::LuaSerdeExt;
        let lua = mlua::Lua::new();
        let v: mlua::Value = lua
            .load("return { a = '/k.pem', b = { key_data = 'SUAX' } }")
            .eval()
            .unwrap();
        let m: std::collections::BTreeMap<String, KeySource> = lua.from_value(v).unwrap();
        assert_eq!(m["a"], KeySource::Path("/k.pem".into()));
        assert_eq!(m["b"], data("SUAX"));
    }

    #[test]
    fn debug_output_never_shows_inline_data() {
        let shown = format!("{:?}", data("-----BEGIN PRIVATE KEY-----secret"));
        assert!(!shown.contains("secret"), "{shown}");
        assert_eq!(shown, "Data { key_data: <redacted> }");
        assert_eq!(
            format!("{:?}", KeySource::Path("/k.pem".into())),
            r#"Path("/k.pem")"#
        );
    }

    #[tokio::test]
    async fn resolve_trims_a_files_trailing_line_breaks_but_not_inline_data() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("token");
        std::fs::write(&path, "s3cret\r\n\n").unwrap();
        let file = KeySource::Path(path.display().to_string());
        assert_eq!(file.resolve().await.unwrap(), "s3cret");
        assert_eq!(file.load().unwrap(), b"s3cret\r\n\n");
        assert_eq!(data("kept\n").resolve().await.unwrap(), "kept\n");
    }

    #[tokio::test]
    async fn a_missing_file_is_named_in_the_error() {
        let missing = KeySource::Path("/nonexistent/hermod/key".into());
        let e = missing.resolve().await.unwrap_err().to_string();
        assert!(
            e.starts_with("cannot read key file '/nonexistent/hermod/key': "),
            "{e}"
        );
        let e = missing.load().unwrap_err();
        assert!(
            matches!(&e, KeySourceError::Read { path, .. } if path == "/nonexistent/hermod/key")
        );
    }

    #[tokio::test]
    async fn a_secret_shows_neither_its_data_nor_its_path() {
        let inline = Secret::new(data("tiger"));
        assert_eq!(format!("{inline:?}"), "Secret(<redacted>)");
        assert_eq!(inline.resolve().await.unwrap(), "tiger");
        let mistaken = Secret::new(KeySource::Path("tiger-password".into()));
        assert_eq!(format!("{mistaken:?}"), "Secret(<redacted>)");
        let e = mistaken.resolve().await.unwrap_err().to_string();
        assert!(e.starts_with("cannot read the secret's file: "), "{e}");
        assert!(!e.contains("tiger"), "{e}");
    }
}
