//! SMTP AUTH (RFC 4954) with the PLAIN mechanism (RFC 4616), decided by
//! the policy's `smtp_server_auth_plain` event.
//!
//! PLAIN carries the password merely base64-encoded, so it is offered and
//! accepted only once TLS is active. The password is handed to the event
//! and nowhere else: it is not logged, and the command line recorded for a
//! refused AUTH is cut down to `AUTH <mechanism>` ([`redact`]), because the
//! initial response on that line holds the credentials.

use std::fmt;

use base64::Engine as _;
use bytes::BytesMut;
use mlua::{FromLua, Lua, Table, Value as LuaValue};

use crate::command::is_mechanism_name;
use crate::connection::{Connection, Line, ReadError};
use crate::session::{Flow, Session};
use crate::tls::Stream;

pub(crate) const EVENT: &str = "smtp_server_auth_plain";

/// The longest line accepted in answer to `334`: far above any real PLAIN
/// response (RFC 4616 asks for 255 octets per field), yet a bound on what a
/// client can make the session buffer.
const MAX_RESPONSE_LINE: usize = 16 * 1024;

/// Who a client authenticated as; also set as the `authn_id` and
/// `authz_id` connection meta.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Identity {
    pub authn: String,
    pub authz: String,
}

/// The decoded PLAIN response. `Debug` leaves the password out so that the
/// value can never be logged with it by accident.
pub(crate) struct Credentials {
    pub authz: String,
    pub authc: String,
    pub password: String,
}

impl fmt::Debug for Credentials {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Credentials")
            .field("authz", &self.authz)
            .field("authc", &self.authc)
            .finish_non_exhaustive()
    }
}

/// Why a PLAIN response is refused before the policy sees it. Texts never
/// quote the response.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub(crate) enum PlainError {
    #[error("AUTH cancelled by the client")]
    Cancelled,
    #[error("AUTH response is not valid base64")]
    Base64,
    #[error("AUTH PLAIN response is not authzid NUL authcid NUL password")]
    Fields,
    #[error("AUTH PLAIN response is not valid UTF-8")]
    Utf8,
}

impl PlainError {
    pub(crate) fn reply(&self) -> (u16, String) {
        let enhanced = match self {
            PlainError::Cancelled => "5.5.0",
            _ => "5.5.2",
        };
        (501, format!("{enhanced} {self}"))
    }
}

/// Decode `[authzid] NUL authcid NUL passwd` from its base64 form. An
/// empty authzid means "act as authcid" (RFC 4616 §2), so the event always
/// receives both.
pub(crate) fn decode_plain(response: &str) -> Result<Credentials, PlainError> {
    if response == "*" {
        return Err(PlainError::Cancelled);
    }
    // `=` is how RFC 4954 §4 sends an empty response; PLAIN has no use for
    // one, so it fails below like any response without three fields.
    let payload = if response == "=" {
        Vec::new()
    } else {
        base64::engine::general_purpose::STANDARD
            .decode(response)
            .map_err(|_| PlainError::Base64)?
    };
    let mut fields = payload.split(|b| *b == 0);
    let (Some(authz), Some(authc), Some(password), None) =
        (fields.next(), fields.next(), fields.next(), fields.next())
    else {
        return Err(PlainError::Fields);
    };
    let text = |b: &[u8]| {
        std::str::from_utf8(b)
            .map(str::to_string)
            .map_err(|_| PlainError::Utf8)
    };
    let (authz, authc, password) = (text(authz)?, text(authc)?, text(password)?);
    let authz = if authz.is_empty() {
        authc.clone()
    } else {
        authz
    };
    Ok(Credentials {
        authz,
        authc,
        password,
    })
}

/// What the handler returned: a boolean, or an AuthInfo-shaped table
/// (`{ identities = { { identity = ..., context = ... } }, groups = ... }`)
/// that also means success.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Verdict {
    Bool(bool),
    Identities(Vec<(String, String)>),
}

const AUTHN_CONTEXT: &str = "SmtpAuthPlainAuthentication";
const AUTHZ_CONTEXT: &str = "SmtpAuthPlainAuthorization";
const CONTEXTS: [&str; 7] = [
    AUTHN_CONTEXT,
    AUTHZ_CONTEXT,
    "HttpBasicAuth",
    "BearerToken",
    "ProxyAuthRfc1929",
    "LocalSystem",
    "GenericAuth",
];

impl FromLua for Verdict {
    fn from_lua(value: LuaValue, _lua: &Lua) -> mlua::Result<Self> {
        let identities = match value {
            LuaValue::Nil => return Ok(Verdict::Bool(false)),
            LuaValue::Boolean(b) => return Ok(Verdict::Bool(b)),
            LuaValue::Table(t) => t.get::<Option<Table>>("identities")?,
            other => {
                return Err(mlua::Error::runtime(format!(
                    "{EVENT} must return a boolean or an AuthInfo table, not a {}",
                    other.type_name()
                )))
            }
        };
        let mut out = Vec::new();
        if let Some(identities) = identities {
            for entry in identities.sequence_values::<Table>() {
                let entry = entry?;
                let identity: String = entry.get("identity")?;
                let context: String = entry.get("context")?;
                if !CONTEXTS.contains(&context.as_str()) {
                    return Err(mlua::Error::runtime(format!(
                        "{EVENT} returned an identity with unknown context {context:?}"
                    )));
                }
                out.push((identity, context));
            }
        }
        // Success without anyone to be is not a state the session can hold.
        if out.is_empty() {
            return Err(mlua::Error::runtime(format!(
                "{EVENT} returned an AuthInfo without identities"
            )));
        }
        Ok(Verdict::Identities(out))
    }
}

impl Verdict {
    /// Who the client is, or `None` when the credentials were refused. An
    /// AuthInfo names the identities itself; where it leaves one out, the
    /// first identity stands for authentication and authentication for
    /// authorization.
    pub(crate) fn identity(self, creds: &Credentials) -> Option<Identity> {
        match self {
            Verdict::Bool(false) => None,
            Verdict::Bool(true) => Some(Identity {
                authn: creds.authc.clone(),
                authz: creds.authz.clone(),
            }),
            Verdict::Identities(ids) => {
                let last_with = |ctx: &str| {
                    ids.iter()
                        .rev()
                        .find(|(_, c)| c == ctx)
                        .map(|(i, _)| i.clone())
                };
                let authn =
                    last_with(AUTHN_CONTEXT).or_else(|| ids.first().map(|(i, _)| i.clone()))?;
                let authz = last_with(AUTHZ_CONTEXT).unwrap_or_else(|| authn.clone());
                Some(Identity { authn, authz })
            }
        }
    }
}

/// The command line as a Rejection record may show it: an AUTH line keeps
/// only its verb and a well-formed mechanism name; other lines are kept.
pub(crate) fn redact(line: BytesMut) -> BytesMut {
    let mut words = line[..]
        .split(|b| b.is_ascii_whitespace())
        .filter(|w| !w.is_empty());
    if !words
        .next()
        .is_some_and(|v| v.eq_ignore_ascii_case(b"AUTH"))
    {
        return line;
    }
    let mut out = BytesMut::from(&b"AUTH"[..]);
    if let Some(mech) = words.next().and_then(|m| std::str::from_utf8(m).ok()) {
        if is_mechanism_name(mech) {
            out.extend_from_slice(b" ");
            out.extend_from_slice(mech.to_ascii_uppercase().as_bytes());
        }
    }
    out
}

impl Session {
    pub(crate) async fn auth(
        &mut self,
        conn: &mut Connection<Stream>,
        mechanism: String,
        initial_response: Option<String>,
    ) -> Flow {
        // Without a handler nothing could ever succeed, so AUTH is neither
        // offered nor known.
        if !self.shared.handlers.auth_plain {
            conn.reply(502, "5.5.1 AUTH is not implemented");
            return Flow::Continue;
        }
        if self.ehlo.is_none() {
            conn.reply(503, "5.5.1 EHLO first");
            return Flow::Continue;
        }
        if self.auth.is_some() {
            conn.reply(503, "5.5.1 already authenticated");
            return Flow::Continue;
        }
        if self.sender.is_some() {
            conn.reply(503, "5.5.1 AUTH is not permitted during a mail transaction");
            return Flow::Continue;
        }
        if mechanism != "PLAIN" {
            conn.reply(504, &format!("5.5.4 AUTH {mechanism} is not supported"));
            return Flow::Continue;
        }
        if self.tls.is_none() {
            conn.reply(
                538,
                "5.7.11 encryption required for AUTH PLAIN; use STARTTLS first",
            );
            return Flow::Continue;
        }
        let response = match initial_response {
            Some(r) => r,
            None => match self.read_response(conn).await {
                Ok(r) => r,
                Err(flow) => return flow,
            },
        };
        let creds = match decode_plain(&response) {
            Ok(c) => c,
            Err(e) => {
                let (code, text) = e.reply();
                conn.reply(code, &text);
                return Flow::Continue;
            }
        };
        let args = (
            creds.authz.clone(),
            creds.authc.clone(),
            creds.password.clone(),
            self.meta.clone(),
        );
        let verdict = match self.event::<Verdict>(EVENT, args).await {
            Ok(v) => v.unwrap_or(Verdict::Bool(false)),
            Err(e) => return self.event_failure(conn, e),
        };
        match verdict.identity(&creds) {
            Some(identity) => {
                tracing::debug!(session = %self.id, authn = %identity.authn, "esmtp client authenticated");
                self.meta.set("authn_id", identity.authn.clone());
                self.meta.set("authz_id", identity.authz.clone());
                self.auth = Some(identity);
                conn.reply(235, "2.7.0 Authentication successful");
            }
            None => {
                tracing::debug!(session = %self.id, authc = %creds.authc, "esmtp authentication refused");
                conn.reply(535, "5.7.8 Authentication credentials invalid");
            }
        }
        Flow::Continue
    }

    /// Ask for the response with `334` and read it; `Err` holds the flow
    /// when there is none to process.
    async fn read_response(&mut self, conn: &mut Connection<Stream>) -> Result<String, Flow> {
        conn.reply(334, "");
        let line = tokio::select! {
            biased;
            _ = self.shared.shutdown.cancelled() => {
                self.shutting_down(conn);
                return Err(Flow::Close);
            }
            r = conn.read_line_limited(MAX_RESPONSE_LINE) => r,
        };
        match line {
            Ok(Line::Text(line)) => match String::from_utf8(line.to_vec()) {
                Ok(text) => Ok(text.trim().to_string()),
                Err(_) => {
                    conn.reply(501, "5.5.2 AUTH response is not valid UTF-8");
                    Err(Flow::Continue)
                }
            },
            Ok(Line::TooLong) => {
                conn.reply(500, "5.5.6 AUTH response line too long");
                Err(Flow::Continue)
            }
            Err(ReadError::Timeout(_)) => {
                conn.reply(
                    421,
                    &format!(
                        "4.3.2 {} idle too long; closing connection",
                        self.shared.cfg.hostname
                    ),
                );
                Err(Flow::Close)
            }
            Err(_) => Err(Flow::Close),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn b64(raw: &[u8]) -> String {
        base64::engine::general_purpose::STANDARD.encode(raw)
    }

    #[test]
    fn plain_response_yields_the_three_fields() {
        let c = decode_plain(&b64(b"admin\0daniel\0tiger")).unwrap();
        assert_eq!((c.authz.as_str(), c.authc.as_str()), ("admin", "daniel"));
        assert_eq!(c.password, "tiger");
    }

    #[test]
    fn empty_authorization_identity_becomes_the_authentication_identity() {
        let c = decode_plain(&b64(b"\0daniel\0tiger")).unwrap();
        assert_eq!(c.authz, "daniel");
    }

    #[test]
    fn malformed_responses_are_refused_with_501() {
        assert_eq!(decode_plain("*").unwrap_err(), PlainError::Cancelled);
        assert_eq!(decode_plain("not base64!").unwrap_err(), PlainError::Base64);
        assert_eq!(decode_plain("=").unwrap_err(), PlainError::Fields);
        assert_eq!(
            decode_plain(&b64(b"daniel\0tiger")).unwrap_err(),
            PlainError::Fields
        );
        assert_eq!(
            decode_plain(&b64(b"a\0b\0c\0d")).unwrap_err(),
            PlainError::Fields
        );
        assert_eq!(
            decode_plain(&b64(b"\0dan\xffiel\0tiger")).unwrap_err(),
            PlainError::Utf8
        );
        assert_eq!(PlainError::Cancelled.reply().0, 501);
        assert!(PlainError::Base64.reply().1.starts_with("5.5.2 "));
    }

    #[test]
    fn credentials_debug_leaves_out_the_password() {
        let c = decode_plain(&b64(b"\0daniel\0tiger")).unwrap();
        assert!(!format!("{c:?}").contains("tiger"));
    }

    #[test]
    fn auth_lines_are_redacted_to_verb_and_mechanism() {
        let r = |s: &str| redact(BytesMut::from(s.as_bytes()));
        assert_eq!(&r("AUTH PLAIN AGRhbmllbAB0aWdlcg==")[..], b"AUTH PLAIN");
        assert_eq!(&r("auth plain")[..], b"AUTH PLAIN");
        assert_eq!(&r("AUTH secret!pw")[..], b"AUTH");
        assert_eq!(&r("AUTH\tPLAIN AGRhbmllbAB0aWdlcg==")[..], b"AUTH PLAIN");
        assert_eq!(&r("MAIL FROM:<a@b>")[..], b"MAIL FROM:<a@b>");
    }

    #[test]
    fn handler_results_map_to_identities() {
        let lua = Lua::new();
        let creds = decode_plain(&b64(b"\0daniel\0tiger")).unwrap();
        let verdict = |src: &str| {
            let v: LuaValue = lua.load(src).eval().unwrap();
            Verdict::from_lua(v, &lua)
        };
        assert_eq!(verdict("return false").unwrap().identity(&creds), None);
        assert_eq!(verdict("return nil").unwrap().identity(&creds), None);
        assert_eq!(
            verdict("return true").unwrap().identity(&creds),
            Some(Identity {
                authn: "daniel".into(),
                authz: "daniel".into()
            })
        );
        let info = "return { groups = {'g'}, identities = {
            { identity = 'svc', context = 'GenericAuth' },
            { identity = 'tenant-a', context = 'SmtpAuthPlainAuthorization' } } }";
        assert_eq!(
            verdict(info).unwrap().identity(&creds),
            Some(Identity {
                authn: "svc".into(),
                authz: "tenant-a".into()
            })
        );
        assert!(verdict("return { identities = {} }").is_err());
        assert!(verdict("return 'yes'").is_err());
        assert!(verdict("return { identities = {{ identity = 'x', context = 'Nope' }} }").is_err());
    }
}
