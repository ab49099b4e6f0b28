//! KumoMTA's admin API: suspensions of scheduled and ready queues,
//! administrative bounces, ready-queue states and message inspection.
//! The listener's `authorise` layer has already let only trusted hosts and
//! callers the policy accepted through. Requests are decoded strictly (an
//! unknown field or a bad duration is a 400 naming it, and nothing
//! changes), and every change is logged with who asked.

mod queues;
mod wire;

pub(crate) use queues::{inspect_ready_q, inspect_sched_q, rebind, rebind_list, set_log_filter};

use std::sync::Arc;
use std::time::{Duration, SystemTime};

use axum::body::Bytes;
use axum::extract::{Query, RawQuery, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::{Extension, Json};
use hermod_message::admin::{Admin, AdminError, Criteria, MessageInfo};
use hermod_message::SpoolId;
use serde::de::DeserializeOwned;
use serde_json::{json, Map, Value};

use crate::auth::{AuthInfo, AuthKind};
use crate::server::{text_error, AppState};
use wire::{BounceRequest, CancelRequest, InspectQuery, ReadySuspendRequest, SuspendRequest};

/// How long a rule lasts when the request names neither `duration` nor
/// `expires` (KumoMTA's default).
const DEFAULT_DURATION: Duration = Duration::from_secs(300);

/// A refused request: the status and what to tell the caller.
pub(crate) struct ApiError(StatusCode, String);

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        text_error(self.0, self.1)
    }
}

fn bad(msg: impl Into<String>) -> ApiError {
    ApiError(StatusCode::BAD_REQUEST, msg.into())
}

pub(crate) type ApiResult = Result<Response, ApiError>;

fn admin(st: &AppState) -> Result<&Arc<dyn Admin>, ApiError> {
    st.admin.as_ref().ok_or_else(|| {
        ApiError(
            StatusCode::SERVICE_UNAVAILABLE,
            "the admin API is not available on this listener".into(),
        )
    })
}

/// Who asked, for the log: the user the policy accepted, or how else the
/// caller was let in. Never a secret.
fn who(auth: &AuthInfo) -> String {
    match &auth.kind {
        AuthKind::TrustedHost => "trusted host".into(),
        AuthKind::Basic { user } => format!("user {user}"),
        AuthKind::Bearer => "bearer token".into(),
    }
}

/// Decode a JSON body into `T`, naming the field that is wrong.
fn decode<T: DeserializeOwned>(body: &[u8]) -> Result<T, ApiError> {
    let de = &mut serde_json::Deserializer::from_slice(body);
    serde_path_to_error::deserialize(de).map_err(|e| {
        let path = e.path().to_string();
        let inner = e.into_inner();
        if path == "." {
            bad(format!("invalid request body: {inner}"))
        } else {
            bad(format!("invalid field `{path}`: {inner}"))
        }
    })
}

/// Decode query parameters into `T`, naming the parameter that is wrong.
fn decode_query<T: DeserializeOwned>(raw: Option<&str>) -> Result<T, ApiError> {
    let pairs = form_urlencoded::parse(raw.unwrap_or("").as_bytes());
    let de = serde_urlencoded::Deserializer::new(pairs);
    serde_path_to_error::deserialize(de).map_err(|e| {
        let path = e.path().to_string();
        let inner = e.into_inner();
        if path == "." {
            bad(format!("invalid query: {inner}"))
        } else {
            bad(format!("invalid parameter `{path}`: {inner}"))
        }
    })
}

/// How long a rule lasts: `duration` or `expires` (RFC 3339), not both.
fn lifetime(duration: Option<&str>, expires: Option<&str>) -> Result<Duration, ApiError> {
    let d = match (duration, expires) {
        (Some(_), Some(_)) => return Err(bad("give either `duration` or `expires`, not both")),
        (Some(d), None) => hermod_policy::duration::parse(d)
            .map_err(|e| bad(format!("invalid field `duration`: {e}")))?,
        (None, Some(x)) => {
            let at = chrono::DateTime::parse_from_rfc3339(x)
                .map_err(|e| bad(format!("invalid field `expires`: {x:?}: {e}")))?;
            SystemTime::from(at)
                .duration_since(SystemTime::now())
                .map_err(|_| bad(format!("invalid field `expires`: {x} is in the past")))?
        }
        (None, None) => DEFAULT_DURATION,
    };
    if d.is_zero() {
        return Err(bad("invalid field `duration`: must be greater than zero"));
    }
    Ok(d)
}

fn reason(r: String) -> Result<String, ApiError> {
    if r.trim().is_empty() {
        return Err(bad("invalid field `reason`: must not be empty"));
    }
    Ok(r)
}

fn rfc3339(t: SystemTime) -> String {
    chrono::DateTime::<chrono::Utc>::from(t).to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
}

/// Time left until `t`, as KumoMTA lists it (`4m 59s`).
fn remaining(t: SystemTime) -> String {
    let left = t.duration_since(SystemTime::now()).unwrap_or_default();
    humantime::format_duration(Duration::from_secs(left.as_secs())).to_string()
}

/// What a suspension and a bounce list alike: id, criteria, reason, time left.
fn rule_json(id: &str, c: &Criteria, reason: &str, expires: SystemTime) -> Map<String, Value> {
    let mut o = Map::new();
    o.insert("id".into(), json!(id));
    criteria_json(c, &mut o);
    o.insert("reason".into(), json!(reason));
    o.insert("duration".into(), json!(remaining(expires)));
    o.insert("expires".into(), json!(rfc3339(expires)));
    o
}

fn criteria_json(c: &Criteria, out: &mut Map<String, Value>) {
    out.insert("domain".into(), json!(c.domain));
    out.insert("campaign".into(), json!(c.campaign));
    out.insert("tenant".into(), json!(c.tenant));
    out.insert("routing_domain".into(), json!(c.routing_domain));
    if !c.queue_names.is_empty() {
        out.insert("queue_names".into(), json!(c.queue_names));
    }
}

fn cancelled(found: bool, what: &str) -> ApiResult {
    if found {
        Ok(StatusCode::OK.into_response())
    } else {
        Err(ApiError(
            StatusCode::NOT_FOUND,
            format!("no such {what}: it expired, was cancelled, or never existed"),
        ))
    }
}

pub(crate) async fn suspend_create(
    State(st): State<Arc<AppState>>,
    Extension(auth): Extension<AuthInfo>,
    body: Bytes,
) -> ApiResult {
    let admin = admin(&st)?;
    let req: SuspendRequest = decode(&body)?;
    let duration = lifetime(req.duration.as_deref(), req.expires.as_deref())?;
    let (criteria, reason_text) = (req.criteria(), reason(req.reason)?);
    let id = admin.suspend(criteria.clone(), reason_text.clone(), duration);
    tracing::info!(peer = %auth.peer, by = %who(&auth), %id, ?criteria, reason = %reason_text,
        ?duration, "admin: scheduled queues suspended");
    Ok(Json(json!({ "id": id })).into_response())
}

pub(crate) async fn suspend_list(State(st): State<Arc<AppState>>) -> ApiResult {
    let list: Vec<Value> = admin(&st)?
        .suspensions()
        .into_iter()
        .map(|s| Value::Object(rule_json(&s.id, &s.criteria, &s.reason, s.expires)))
        .collect();
    Ok(Json(list).into_response())
}

pub(crate) async fn suspend_cancel(
    State(st): State<Arc<AppState>>,
    Extension(auth): Extension<AuthInfo>,
    body: Bytes,
) -> ApiResult {
    let admin = admin(&st)?;
    let req: CancelRequest = decode(&body)?;
    let found = admin.cancel_suspension(&req.id);
    if found {
        tracing::info!(peer = %auth.peer, by = %who(&auth), id = %req.id,
            "admin: scheduled-queue suspension cancelled");
    }
    cancelled(found, "suspension")
}

pub(crate) async fn ready_suspend_create(
    State(st): State<Arc<AppState>>,
    Extension(auth): Extension<AuthInfo>,
    body: Bytes,
) -> ApiResult {
    let admin = admin(&st)?;
    let req: ReadySuspendRequest = decode(&body)?;
    let duration = lifetime(req.duration.as_deref(), req.expires.as_deref())?;
    if req.name.trim().is_empty() {
        return Err(bad("invalid field `name`: must not be empty"));
    }
    let reason_text = reason(req.reason)?;
    let id = admin.suspend_ready(req.name.clone(), reason_text.clone(), duration);
    tracing::info!(peer = %auth.peer, by = %who(&auth), %id, queue = %req.name,
        reason = %reason_text, ?duration, "admin: ready queue suspended");
    Ok(Json(json!({ "id": id })).into_response())
}

pub(crate) async fn ready_suspend_list(State(st): State<Arc<AppState>>) -> ApiResult {
    let list: Vec<Value> = admin(&st)?
        .ready_suspensions()
        .into_iter()
        .map(|s| {
            json!({
                "id": s.id,
                "name": s.name,
                "reason": s.reason,
                "duration": remaining(s.expires),
                "expires": rfc3339(s.expires),
            })
        })
        .collect();
    Ok(Json(list).into_response())
}

pub(crate) async fn ready_suspend_cancel(
    State(st): State<Arc<AppState>>,
    Extension(auth): Extension<AuthInfo>,
    body: Bytes,
) -> ApiResult {
    let admin = admin(&st)?;
    let req: CancelRequest = decode(&body)?;
    let found = admin.cancel_ready_suspension(&req.id);
    if found {
        tracing::info!(peer = %auth.peer, by = %who(&auth), id = %req.id,
            "admin: ready-queue suspension cancelled");
    }
    cancelled(found, "ready-queue suspension")
}

pub(crate) async fn bounce_create(
    State(st): State<Arc<AppState>>,
    Extension(auth): Extension<AuthInfo>,
    body: Bytes,
) -> ApiResult {
    let admin = admin(&st)?;
    let req: BounceRequest = decode(&body)?;
    let duration = lifetime(req.duration.as_deref(), req.expires.as_deref())?;
    let criteria = req.criteria();
    let suppress = req.suppress_logging;
    let reason_text = reason(req.reason)?;
    let (id, matched) = admin.bounce(criteria.clone(), reason_text.clone(), duration, suppress);
    tracing::info!(peer = %auth.peer, by = %who(&auth), %id, ?criteria, reason = %reason_text,
        ?duration, suppress_logging = suppress, everything = criteria.is_everything(),
        messages = matched, "admin: bounce started");
    // The sweep runs in the background, so nothing is counted yet (KumoMTA
    // has stopped filling these too); bounce-list shows the counts as they
    // grow. `matched`, Hermod's addition, is how many the sweep took.
    Ok(
        Json(json!({ "id": id, "bounced": {}, "total_bounced": 0, "matched": matched }))
            .into_response(),
    )
}

pub(crate) async fn bounce_list(State(st): State<Arc<AppState>>) -> ApiResult {
    let list: Vec<Value> = admin(&st)?
        .bounces()
        .into_iter()
        .map(|b| {
            let mut o = rule_json(&b.id, &b.criteria, &b.reason, b.expires);
            o.insert("suppress_logging".into(), json!(b.suppress_logging));
            o.insert(
                "total_bounced".into(),
                json!(b.bounced.values().sum::<u64>()),
            );
            o.insert("bounced".into(), json!(b.bounced));
            Value::Object(o)
        })
        .collect();
    Ok(Json(list).into_response())
}

pub(crate) async fn bounce_cancel(
    State(st): State<Arc<AppState>>,
    Extension(auth): Extension<AuthInfo>,
    body: Bytes,
) -> ApiResult {
    let admin = admin(&st)?;
    let req: CancelRequest = decode(&body)?;
    let found = admin.cancel_bounce(&req.id);
    if found {
        tracing::info!(peer = %auth.peer, by = %who(&auth), id = %req.id,
            "admin: bounce cancelled");
    }
    cancelled(found, "bounce")
}

/// `states_by_ready_queue`: the queues with a condition (suspended, paused),
/// each condition with its context and since when. `queues` (repeated or
/// comma-separated) narrows the answer to those names.
pub(crate) async fn ready_q_states(
    State(st): State<Arc<AppState>>,
    RawQuery(query): RawQuery,
) -> ApiResult {
    let admin = admin(&st)?;
    let wanted = wire::queues_param(query.as_deref().unwrap_or(""))
        .map_err(|e| bad(format!("invalid query: {e}")))?;
    let mut by_queue = Map::new();
    for q in admin.ready_queue_states() {
        if !wanted.is_empty() && !wanted.contains(&q.name) {
            continue;
        }
        if q.conditions.is_empty() {
            continue;
        }
        let states: Map<String, Value> = q
            .conditions
            .into_iter()
            .map(|c| {
                (
                    c.name,
                    json!({"context": c.context, "since": rfc3339(c.since)}),
                )
            })
            .collect();
        by_queue.insert(q.name, Value::Object(states));
    }
    Ok(Json(json!({ "states_by_ready_queue": by_queue })).into_response())
}

pub(crate) async fn inspect_message(
    State(st): State<Arc<AppState>>,
    query: Result<Query<InspectQuery>, axum::extract::rejection::QueryRejection>,
) -> ApiResult {
    let admin = admin(&st)?;
    let Query(q) = query.map_err(|e| bad(e.body_text()))?;
    let id: SpoolId =
        q.id.parse()
            .map_err(|e| bad(format!("invalid parameter `id`: {e}")))?;
    let info = admin.inspect(id, q.want_body).await.map_err(admin_error)?;
    Ok(Json(message_json(&info)).into_response())
}

/// An error of the queues as the caller sees it.
fn admin_error(e: AdminError) -> ApiError {
    match e {
        AdminError::NotFound(_) => ApiError(StatusCode::NOT_FOUND, e.to_string()),
        AdminError::NoSuchQueue { .. } => ApiError(
            StatusCode::NOT_FOUND,
            format!("invalid parameter `queue_name`: {e}"),
        ),
        AdminError::Spool { .. } => ApiError(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()),
    }
}

/// One message as KumoMTA's inspect endpoints write it.
fn message_json(info: &MessageInfo) -> Value {
    // KumoMTA writes a single recipient as a string, several as an array.
    let recipient = match info.recipients.as_slice() {
        [one] => json!(one),
        many => json!(many),
    };
    let data = info
        .data
        .as_deref()
        .map(|d| String::from_utf8_lossy(d).into_owned());
    json!({
        "id": info.id.to_string(),
        "message": {
            "sender": info.sender,
            "recipient": recipient,
            "meta": info.meta,
            "data": data,
            "due": info.due.map(rfc3339),
            "num_attempts": info.num_attempts,
            "scheduling": info.scheduling.map(|s| s.to_json()),
        }
    })
}
