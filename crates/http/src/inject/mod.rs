//! `POST /api/inject/v1`: build one message per recipient, let the policy
//! see each (`http_message_generated`), and hand the batch to the acceptor.

mod build;
mod request;
mod template;

use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::{ConnectInfo, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::{Extension, Json};
use hermod_message::{
    AcceptError, AddressError, EnvelopeAddress, Message, MessageError, Protocol, ReceptionInfo,
    SpoolId,
};
use hermod_policy::{CallError, Context, Reject};
use serde_json::{json, Map, Value};

pub use build::BuildError;
pub use request::{InjectRequest, RequestError, MAX_RECIPIENTS};
pub use template::TemplateError;

use crate::auth::AuthInfo;
use crate::config::canonical;
use crate::server::{AppState, ConnInfo};
use build::{PreparedAttachment, RenderedParts};
use request::{Content, Recipient};
use template::{Part, Templates};

/// Why a request (HTTP 400/422) or one recipient's message (its entry in
/// the response's `errors`) fails.
#[derive(Debug, thiserror::Error)]
pub enum InjectError {
    #[error(transparent)]
    Request(#[from] RequestError),
    #[error("invalid envelope_sender: {0}")]
    Sender(#[source] AddressError),
    #[error("deferred_generation is not supported yet; send without it")]
    DeferredGeneration,
    #[error("content needs at least one of text_body or html_body")]
    NoBody,
    #[error(transparent)]
    Template(#[from] TemplateError),
    #[error(transparent)]
    Build(#[from] BuildError),
    #[error("invalid recipient: {0}")]
    Recipient(#[source] AddressError),
    #[error("invalid recipient: empty address")]
    EmptyRecipient,
    /// `kumo.reject` in `http_message_generated`.
    #[error("{0}")]
    Rejected(Reject),
    /// `http_message_generated` raised an error.
    #[error("{0}")]
    Policy(#[source] CallError),
    #[error(transparent)]
    Message(#[from] MessageError),
}

fn json_error(status: StatusCode, msg: impl std::fmt::Display) -> Response {
    (status, Json(json!({ "error": msg.to_string() }))).into_response()
}

fn is_json(headers: &HeaderMap) -> bool {
    headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split(';').next())
        .is_some_and(|m| m.trim().eq_ignore_ascii_case("application/json"))
}

/// Everything computed once per request, shared by every recipient.
struct Prepared<'a> {
    req: &'a InjectRequest,
    sender: EnvelopeAddress,
    templates: Templates,
    attachments: Vec<PreparedAttachment>,
    peer_ip: String,
    local_ip: String,
    auth: &'a AuthInfo,
    hostname: &'a str,
}

/// The request-level checks that need no Lua: template syntax, builder
/// completeness, attachments (all 422).
fn compile(req: &InjectRequest) -> Result<(Templates, Vec<PreparedAttachment>), InjectError> {
    if req.deferred_generation {
        return Err(InjectError::DeferredGeneration);
    }
    match &req.content {
        Content::Rfc5322(s) => {
            let t = Templates::compile(req.template_dialect, vec![(Part::Content, s.clone())])?;
            Ok((t, Vec::new()))
        }
        Content::Builder(b) => {
            if b.text_body.is_none() && b.html_body.is_none() {
                return Err(InjectError::NoBody);
            }
            let mut parts = Vec::new();
            let opt = [
                (Part::Subject, &b.subject),
                (Part::TextBody, &b.text_body),
                (Part::HtmlBody, &b.html_body),
                (Part::AmpHtmlBody, &b.amp_html_body),
            ];
            for (part, src) in opt {
                if let Some(s) = src {
                    parts.push((part, s.clone()));
                }
            }
            for (i, (_, v)) in b.headers.0.iter().enumerate() {
                parts.push((Part::Header(i), v.clone()));
            }
            let t = Templates::compile(req.template_dialect, parts)?;
            Ok((t, build::prepare_attachments(&b.attachments)?))
        }
    }
}

fn render_data(p: &Prepared<'_>, r: &Recipient, email: &str) -> Result<Vec<u8>, InjectError> {
    let to = build::to_header(email, r.name.as_deref());
    let ctx = template::context(
        email,
        r.name.as_deref(),
        &to,
        &p.req.substitutions,
        &r.substitutions,
    );
    match &p.req.content {
        Content::Rfc5322(_) => Ok(build::finish_rfc5322(
            &p.templates.render(Part::Content, &ctx)?,
        )?),
        Content::Builder(b) => {
            let render = |part, present: bool| -> Result<Option<String>, TemplateError> {
                if present {
                    p.templates.render(part, &ctx).map(Some)
                } else {
                    Ok(None)
                }
            };
            let mut headers = Vec::with_capacity(b.headers.0.len());
            for (i, (name, _)) in b.headers.0.iter().enumerate() {
                headers.push((name.clone(), p.templates.render(Part::Header(i), &ctx)?));
            }
            let parts = RenderedParts {
                subject: render(Part::Subject, b.subject.is_some())?,
                text_body: render(Part::TextBody, b.text_body.is_some())?,
                html_body: render(Part::HtmlBody, b.html_body.is_some())?,
                amp_html_body: render(Part::AmpHtmlBody, b.amp_html_body.is_some())?,
                headers,
            };
            Ok(build::build_message(
                parts,
                b.from.as_ref(),
                b.reply_to.as_ref(),
                &p.attachments,
                email,
                r.name.as_deref(),
            )?)
        }
    }
}

/// The recipient's address; the null address is refused.
fn recipient(r: &Recipient) -> Result<EnvelopeAddress, InjectError> {
    let rcpt = EnvelopeAddress::parse(&r.email).map_err(InjectError::Recipient)?;
    if rcpt.is_null() {
        return Err(InjectError::EmptyRecipient);
    }
    Ok(rcpt)
}

/// Build one recipient's message and run `http_message_generated` on it.
/// `lua_error` is set when the context should not go back to the pool.
async fn generate(
    p: &Prepared<'_>,
    ctx: &Context,
    auth_lua: &mlua::Value,
    r: &Recipient,
    lua_error: &mut bool,
) -> Result<Message, InjectError> {
    let rcpt = recipient(r)?;
    let mut data = render_data(p, r, rcpt.email())?;
    let id = SpoolId::new();
    let trace = &p.req.trace_headers;
    if trace.received_header {
        let h = crate::trace::received_header(
            p.sender.domain(),
            &p.peer_ip,
            p.hostname,
            &id.to_string(),
            rcpt.email(),
            chrono::Local::now(),
        );
        let mut with = h.into_bytes();
        with.extend_from_slice(&data);
        data = with;
    }
    let mut meta = Map::new();
    meta.insert("http_auth".into(), Value::String(p.auth.summary()));
    meta.insert(
        "reception_protocol".into(),
        Value::String(Protocol::Http.as_str().into()),
    );
    meta.insert("received_from".into(), Value::String(p.peer_ip.clone()));
    meta.insert("received_via".into(), Value::String(p.local_ip.clone()));
    meta.insert("hostname".into(), Value::String(p.hostname.to_string()));
    if !r.metadata.is_empty() {
        meta.insert("extra".into(), Value::Object(r.metadata.clone()));
    }
    let msg = Message::new(id, p.sender.clone(), vec![rcpt.clone()], meta, data);

    match ctx
        .call::<mlua::Value>("http_message_generated", (msg.clone(), auth_lua.clone()))
        .await
    {
        Ok(_) => {}
        Err(CallError::Reject(rej)) => return Err(InjectError::Rejected(rej)),
        Err(e) => {
            *lua_error = true;
            return Err(InjectError::Policy(e));
        }
    }

    if trace.supplemental_header {
        let h = crate::trace::supplemental_header(
            &trace.header_name,
            rcpt.email(),
            &trace.include_meta_names,
            &msg.meta(),
        );
        let current = msg.data()?;
        let mut with = h.into_bytes();
        with.extend_from_slice(&current);
        msg.set_data(with);
    }
    Ok(msg)
}

pub(crate) async fn handler(
    State(st): State<Arc<AppState>>,
    Extension(auth): Extension<AuthInfo>,
    ConnectInfo(conn): ConnectInfo<ConnInfo>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Response {
    if !is_json(&headers) {
        return json_error(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "Content-Type must be application/json",
        );
    }
    let body = match body {
        Ok(b) => b,
        Err(e) if e.status() == StatusCode::PAYLOAD_TOO_LARGE => {
            return json_error(
                StatusCode::PAYLOAD_TOO_LARGE,
                format!(
                    "request body exceeds request_body_limit of {} bytes",
                    st.cfg.request_body_limit
                ),
            )
        }
        Err(e) => return json_error(e.status(), e.body_text()),
    };
    let req = match request::parse(&body) {
        Ok(r) => r,
        Err(e) => return json_error(StatusCode::BAD_REQUEST, e),
    };
    let sender = match EnvelopeAddress::parse(&req.envelope_sender) {
        Ok(s) => s,
        Err(e) => return json_error(StatusCode::BAD_REQUEST, InjectError::Sender(e)),
    };
    let (templates, attachments) = match compile(&req) {
        Ok(t) => t,
        Err(e) => return json_error(StatusCode::UNPROCESSABLE_ENTITY, e),
    };
    if !st.acceptor.is_accepting() {
        return json_error(StatusCode::SERVICE_UNAVAILABLE, "not accepting messages");
    }
    let ctx = match st.engine.context().await {
        Ok(c) => c,
        Err(e) => {
            tracing::error!(error = %e, "cannot load a Lua context for an HTTP injection");
            return json_error(StatusCode::INTERNAL_SERVER_ERROR, "policy unavailable");
        }
    };
    let auth_lua = match ctx.to_lua(&auth.to_json()) {
        Ok(v) => v,
        Err(e) => return json_error(StatusCode::INTERNAL_SERVER_ERROR, format!("auth_info: {e}")),
    };
    let peer_ip = canonical(conn.peer.ip()).to_string();
    let p = Prepared {
        req: &req,
        sender,
        templates,
        attachments,
        peer_ip: peer_ip.clone(),
        local_ip: canonical(conn.local.ip()).to_string(),
        auth: &auth,
        hostname: &st.cfg.hostname,
    };

    let mut messages = Vec::with_capacity(req.recipients.len());
    let mut accepted_for = Vec::with_capacity(req.recipients.len());
    let mut failed_recipients = Vec::new();
    let mut errors = Vec::new();
    let mut lua_error = false;
    for r in &req.recipients {
        match generate(&p, &ctx, &auth_lua, r, &mut lua_error).await {
            Ok(m) => {
                messages.push(m);
                accepted_for.push(r.email.clone());
            }
            Err(e) => {
                errors.push(format!("{}: {e}", r.email));
                failed_recipients.push(r.email.clone());
            }
        }
    }
    // Return (or discard) the context before waiting on the spool.
    if lua_error {
        ctx.discard();
    } else {
        drop(ctx);
    }

    let mut success_count = 0usize;
    if !messages.is_empty() {
        let info = ReceptionInfo {
            protocol: Protocol::Http,
            peer_name: String::new(),
            peer_addr: peer_ip,
            session_id: None,
            tls_cipher: None,
            tls_protocol_version: None,
        };
        let results = st.acceptor.accept(messages, info).await;
        let unavailable = !results.is_empty()
            && results.len() == accepted_for.len()
            && results
                .iter()
                .all(|r| matches!(r, Err(AcceptError::Spool(_) | AcceptError::Unavailable(_))));
        if unavailable {
            let first = results
                .iter()
                .find_map(|r| r.as_ref().err())
                .map(|e| e.to_string());
            return json_error(
                StatusCode::SERVICE_UNAVAILABLE,
                first.unwrap_or_else(|| "not accepting messages".into()),
            );
        }
        let mut results = results.into_iter();
        for email in accepted_for {
            match results.next() {
                Some(Ok(_)) => success_count += 1,
                Some(Err(e)) => {
                    errors.push(format!("{email}: {e}"));
                    failed_recipients.push(email);
                }
                None => {
                    errors.push(format!("{email}: no result from the queue"));
                    failed_recipients.push(email);
                }
            }
        }
    }
    st.received.inc_by(success_count as u64);
    Json(json!({
        "success_count": success_count,
        "fail_count": failed_recipients.len(),
        "failed_recipients": failed_recipients,
        "errors": errors,
    }))
    .into_response()
}

/// The Lua-free part of [`handler`] for the fuzz targets: decode the body,
/// check the request and render each recipient's message bytes. The outer
/// error is the request-level rejection (400/422); each recipient gets its
/// own result, as in the response's `errors`.
pub(crate) fn render_without_policy(
    body: &[u8],
) -> Result<Vec<Result<Vec<u8>, InjectError>>, InjectError> {
    let req = request::parse(body)?;
    let sender = EnvelopeAddress::parse(&req.envelope_sender).map_err(InjectError::Sender)?;
    let (templates, attachments) = compile(&req)?;
    let auth = AuthInfo {
        peer: std::net::Ipv4Addr::LOCALHOST.into(),
        kind: crate::auth::AuthKind::TrustedHost,
    };
    let p = Prepared {
        req: &req,
        sender,
        templates,
        attachments,
        peer_ip: "127.0.0.1".into(),
        local_ip: "127.0.0.1".into(),
        auth: &auth,
        hostname: "fuzz.example",
    };
    Ok(req
        .recipients
        .iter()
        .map(|r| render_data(&p, r, recipient(r)?.email()))
        .collect())
}
