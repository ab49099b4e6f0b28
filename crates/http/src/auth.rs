//! Who may use the listener: trusted peers by address, others with HTTP
//! Basic or Bearer credentials validated by the policy (results cached).

use std::collections::HashMap;
use std::hash::BuildHasher;
use std::net::IpAddr;
use std::time::{Duration, Instant};

use axum::http::HeaderMap;
use base64::Engine as _;
use parking_lot::Mutex;
use serde_json::json;

const CACHE_TTL: Duration = Duration::from_secs(60);
/// Bounds memory if a client sprays distinct credentials.
const CACHE_MAX: usize = 10_000;

/// How a request was authorised; passed to `http_message_generated`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AuthKind {
    TrustedHost,
    Basic { user: String },
    Bearer,
}

#[derive(Debug, Clone)]
pub struct AuthInfo {
    pub peer: IpAddr,
    pub kind: AuthKind,
}

impl AuthInfo {
    /// Value of the `http_auth` meta: the user name, or the trusted peer
    /// address. Never the secret itself.
    pub fn summary(&self) -> String {
        match &self.kind {
            AuthKind::TrustedHost => self.peer.to_string(),
            AuthKind::Basic { user } => user.clone(),
            AuthKind::Bearer => "bearer".into(),
        }
    }

    /// The `auth_info` table policies receive.
    pub fn to_json(&self) -> serde_json::Value {
        let (identity, context) = match &self.kind {
            AuthKind::TrustedHost => (self.peer.to_string(), "TrustedHost"),
            AuthKind::Basic { user } => (user.clone(), "HttpBasicAuth"),
            AuthKind::Bearer => ("bearer".to_string(), "BearerToken"),
        };
        json!({
            "peer_address": self.peer.to_string(),
            "identities": [{"identity": identity, "context": context}],
            "groups": [],
        })
    }
}

/// Credentials found in the `Authorization` header.
#[derive(Debug, PartialEq, Eq)]
pub enum Credentials {
    Basic { user: String, password: String },
    Bearer(String),
}

/// An `Authorization` header that is not valid Basic/Bearer (HTTP 400).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AuthError {
    #[error("Authorization header is not valid ASCII")]
    NotAscii,
    #[error("Authorization: Basic credentials are not valid base64")]
    BasicBase64,
    #[error("Authorization: Basic credentials are not UTF-8")]
    BasicUtf8,
    #[error("Authorization: Basic credentials lack the user:password separator")]
    BasicSeparator,
    #[error("Authorization: Bearer token is empty")]
    EmptyBearer,
    #[error("Authorization scheme {0:?} is not supported; use Basic or Bearer")]
    Scheme(String),
}

/// `Ok(None)`: no header. `Err`: a header that is not valid Basic/Bearer.
pub fn parse_authorization(headers: &HeaderMap) -> Result<Option<Credentials>, AuthError> {
    let Some(value) = headers.get(axum::http::header::AUTHORIZATION) else {
        return Ok(None);
    };
    let value = value.to_str().map_err(|_| AuthError::NotAscii)?.trim();
    let (scheme, rest) = value.split_once(' ').unwrap_or((value, ""));
    let rest = rest.trim();
    if scheme.eq_ignore_ascii_case("basic") {
        let decoded = base64::engine::general_purpose::STANDARD
            .decode(rest)
            .map_err(|_| AuthError::BasicBase64)?;
        let text = String::from_utf8(decoded).map_err(|_| AuthError::BasicUtf8)?;
        let (user, password) = text.split_once(':').ok_or(AuthError::BasicSeparator)?;
        Ok(Some(Credentials::Basic {
            user: user.to_string(),
            password: password.to_string(),
        }))
    } else if scheme.eq_ignore_ascii_case("bearer") {
        if rest.is_empty() {
            return Err(AuthError::EmptyBearer);
        }
        Ok(Some(Credentials::Bearer(rest.to_string())))
    } else {
        Err(AuthError::Scheme(scheme.to_string()))
    }
}

#[derive(Hash, PartialEq, Eq)]
enum CacheKey {
    /// The secret is kept only as a keyed hash, so memory dumps do not leak it.
    Basic(String, u64),
    Bearer(u64),
}

/// Validation results by credential, for [`CACHE_TTL`].
pub struct AuthCache {
    hasher: std::collections::hash_map::RandomState,
    entries: Mutex<HashMap<CacheKey, (bool, Instant)>>,
}

impl Default for AuthCache {
    fn default() -> Self {
        Self {
            hasher: std::collections::hash_map::RandomState::new(),
            entries: Mutex::new(HashMap::new()),
        }
    }
}

impl AuthCache {
    fn key(&self, c: &Credentials) -> CacheKey {
        match c {
            Credentials::Basic { user, password } => {
                CacheKey::Basic(user.clone(), self.hasher.hash_one(password))
            }
            Credentials::Bearer(token) => CacheKey::Bearer(self.hasher.hash_one(token)),
        }
    }

    fn get(&self, c: &Credentials) -> Option<bool> {
        let key = self.key(c);
        let g = self.entries.lock();
        g.get(&key)
            .filter(|(_, at)| at.elapsed() < CACHE_TTL)
            .map(|(ok, _)| *ok)
    }

    fn put(&self, c: &Credentials, ok: bool) {
        let key = self.key(c);
        let mut g = self.entries.lock();
        if g.len() >= CACHE_MAX {
            g.retain(|_, (_, at)| at.elapsed() < CACHE_TTL);
            if g.len() >= CACHE_MAX {
                g.clear();
            }
        }
        g.insert(key, (ok, Instant::now()));
    }
}

/// Ask the policy whether the credentials are valid; errors count as "no".
pub async fn validate(
    engine: &std::sync::Arc<hermod_policy::Engine>,
    cache: &AuthCache,
    creds: &Credentials,
) -> bool {
    if let Some(ok) = cache.get(creds) {
        return ok;
    }
    let result = match creds {
        Credentials::Basic { user, password } => {
            engine
                .call::<bool>(
                    "http_server_validate_auth_basic",
                    (user.clone(), password.clone()),
                )
                .await
        }
        Credentials::Bearer(token) => {
            engine
                .call::<bool>("http_server_validate_auth_bearer", token.clone())
                .await
        }
    };
    let ok = match result {
        Ok(v) => v.unwrap_or(false),
        Err(e) => {
            // Not cached: a transient policy failure should not lock a user out for a minute.
            tracing::warn!(error = %e, "HTTP credential validation failed in the policy");
            return false;
        }
    };
    cache.put(creds, ok);
    ok
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::http::HeaderValue;

    fn headers(v: &str) -> HeaderMap {
        let mut h = HeaderMap::new();
        h.insert("authorization", HeaderValue::from_str(v).unwrap());
        h
    }

    #[test]
    fn basic_credentials_are_decoded() {
        let h = headers("Basic dXNlcjpwYTpzcw==");
        assert_eq!(
            parse_authorization(&h).unwrap(),
            Some(Credentials::Basic {
                user: "user".into(),
                password: "pa:ss".into()
            })
        );
    }

    #[test]
    fn malformed_headers_are_errors() {
        let err = |v: &str| parse_authorization(&headers(v)).unwrap_err();
        assert_eq!(err("Basic !!!"), AuthError::BasicBase64);
        assert_eq!(err("Basic dXNlcg=="), AuthError::BasicSeparator);
        assert_eq!(
            err("Digest abc").to_string(),
            "Authorization scheme \"Digest\" is not supported; use Basic or Bearer"
        );
        assert_eq!(err("Bearer"), AuthError::EmptyBearer);
    }

    #[test]
    fn cache_remembers_results_per_secret() {
        let c = AuthCache::default();
        let good = Credentials::Basic {
            user: "u".into(),
            password: "right".into(),
        };
        let bad = Credentials::Basic {
            user: "u".into(),
            password: "wrong".into(),
        };
        c.put(&good, true);
        assert_eq!(c.get(&good), Some(true));
        assert_eq!(c.get(&bad), None);
    }
}
