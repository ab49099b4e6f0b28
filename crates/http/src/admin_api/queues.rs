//! Rebind, inspect-sched-q, inspect-ready-q and set_diagnostic_log_filter:
//! the admin calls that move queued messages, show what a queue holds, or
//! change what the server logs.

use std::collections::HashSet;
use std::sync::Arc;
use std::time::SystemTime;

use axum::body::Bytes;
use axum::extract::{RawQuery, State};
use axum::http::StatusCode;
use axum::response::IntoResponse;
use axum::{Extension, Json};
use hermod_message::admin::Sample;
use serde_json::{json, Map, Value};

use super::wire::{InspectReadyQuery, InspectSchedQuery, LogFilterRequest, RebindRequest};
use super::{
    admin, admin_error, bad, decode, decode_query, message_json, reason, remaining, rfc3339, who,
    ApiError, ApiResult,
};
use crate::auth::AuthInfo;
use crate::server::AppState;

/// Whether the policy defines `event`.
async fn policy_defines(st: &AppState, event: &str) -> Result<bool, ApiError> {
    let ctx = st.engine.context().await.map_err(|e| {
        ApiError(
            StatusCode::SERVICE_UNAVAILABLE,
            format!("no policy context: {e}"),
        )
    })?;
    Ok(ctx.has_handler(event))
}

/// `POST /api/admin/rebind/v1`. The matching messages are taken at once and
/// rebound in the background (as in KumoMTA); the answer says how many.
pub(crate) async fn rebind(
    State(st): State<Arc<AppState>>,
    Extension(auth): Extension<AuthInfo>,
    body: Bytes,
) -> ApiResult {
    let admin = admin(&st)?;
    let req: RebindRequest = decode(&body)?;
    let reason_text = reason(req.reason.clone())?;
    if let Some(k) = req.data.keys().find(|k| k.trim().is_empty()) {
        return Err(bad(format!(
            "invalid field `data`: a key must not be empty (got {k:?})"
        )));
    }
    if !req.queue_names.is_empty() {
        let known: HashSet<String> = admin.scheduled_queue_names().into_iter().collect();
        let missing: Vec<&str> = req
            .queue_names
            .iter()
            .filter(|q| !known.contains(*q))
            .map(String::as_str)
            .collect();
        if !missing.is_empty() {
            return Err(ApiError(
                StatusCode::NOT_FOUND,
                format!("invalid field `queue_names`: no scheduled queue named {missing:?}"),
            ));
        }
    }
    if req.trigger_rebind_event && !policy_defines(&st, "rebind_message").await? {
        return Err(bad(
            "invalid field `trigger_rebind_event`: the policy defines no rebind_message event",
        ));
    }
    let order = req.into_order(reason_text);
    let (criteria, data) = (order.criteria.clone(), order.data.clone());
    let (event, flush) = (order.trigger_rebind_event, order.always_flush);
    let (id, n) = admin.rebind(order.clone());
    tracing::info!(peer = %auth.peer, by = %who(&auth), %id, ?criteria, ?data,
        reason = %order.reason, trigger_rebind_event = event, always_flush = flush,
        messages = n, everything = criteria.is_everything(), "admin: rebind started");
    // KumoMTA answers `{}`; the id and count are Hermod's addition.
    Ok(Json(json!({ "id": id, "matched": n })).into_response())
}

/// `GET /api/admin/rebind/v1` (Hermod's addition): the rebinds still
/// moving messages, with how far each has got.
pub(crate) async fn rebind_list(State(st): State<Arc<AppState>>) -> ApiResult {
    let list: Vec<Value> = admin(&st)?
        .rebinds()
        .into_iter()
        .map(|p| json!({"id": p.id, "reason": p.reason, "matched": p.matched, "done": p.done}))
        .collect();
    Ok(Json(list).into_response())
}

/// `GET /api/admin/inspect-sched-q/v1?queue_name=&want_body=&limit=`.
pub(crate) async fn inspect_sched_q(
    State(st): State<Arc<AppState>>,
    RawQuery(query): RawQuery,
) -> ApiResult {
    let admin = admin(&st)?;
    let q: InspectSchedQuery = decode_query(query.as_deref())?;
    let sample = Sample {
        limit: q.limit,
        want_body: q.want_body,
    };
    let info = admin
        .inspect_scheduled(q.queue_name, sample)
        .await
        .map_err(admin_error)?;
    let messages: Vec<Value> = info.messages.iter().map(message_json).collect();
    Ok(Json(json!({
        "queue_name": info.name,
        "messages": messages,
        "num_scheduled": info.waiting,
        "queue_config": info.config,
        // Hermod holds no scheduled-queue messages back for a throttle (a
        // throttled ready queue waits instead), so none are counted here.
        "delayed_metric": 0,
        "now": rfc3339(SystemTime::now()),
        "last_changed": rfc3339(info.last_used),
    }))
    .into_response())
}

/// `GET /api/admin/inspect-ready-q/v1?queue_name=&include_scheduled_queues=`,
/// with Hermod's `limit` and `want_body` for a sample of its messages.
pub(crate) async fn inspect_ready_q(
    State(st): State<Arc<AppState>>,
    RawQuery(query): RawQuery,
) -> ApiResult {
    let admin = admin(&st)?;
    let q: InspectReadyQuery = decode_query(query.as_deref())?;
    if q.want_body && q.limit.is_none() {
        return Err(bad(
            "invalid parameter `want_body`: give `limit` too (how many messages to show)",
        ));
    }
    let sample = q.limit.map(|limit| Sample {
        limit: Some(limit),
        want_body: q.want_body,
    });
    let info = admin
        .inspect_ready(q.queue_name, q.include_scheduled_queues, sample)
        .await
        .map_err(admin_error)?;
    let suspended = info.suspension.as_ref().map(|s| {
        json!({
            "id": s.id, "name": s.name, "reason": s.reason,
            "duration": remaining(s.expires), "expires": rfc3339(s.expires),
        })
    });
    let conditions: Map<String, Value> = info
        .conditions
        .iter()
        .map(|c| {
            let v = json!({"context": c.context, "since": rfc3339(c.since)});
            (c.name.clone(), v)
        })
        .collect();
    let mut out = json!({
        "queue_name": info.name,
        "mx": null,
        "egress_source": info.egress_source,
        "egress_pool": info.egress_pool,
        "protocol": info.protocol,
        "state": {
            "ready_count": info.queued,
            "connection_count": info.sessions,
            "connection_limit": info.connection_limit,
            "suspended": suspended,
            "conditions": conditions,
        },
        "path_config": info.path_config,
        "now": rfc3339(SystemTime::now()),
        "scheduled_queue_names": info.scheduled_queues,
    });
    if let Some(messages) = &info.messages {
        out["messages"] = messages.iter().map(message_json).collect();
    }
    Ok(Json(out).into_response())
}

/// `POST /api/admin/set_diagnostic_log_filter/v1` `{"filter": "..."}`.
pub(crate) async fn set_log_filter(Extension(auth): Extension<AuthInfo>, body: Bytes) -> ApiResult {
    let req: LogFilterRequest = decode(&body)?;
    hermod_policy::diagnostic_log::set_filter(&req.filter).map_err(|e| match e {
        hermod_policy::diagnostic_log::FilterError::NotInstalled => {
            ApiError(StatusCode::SERVICE_UNAVAILABLE, e.to_string())
        }
        e => bad(format!("invalid field `filter`: {e}")),
    })?;
    // Logged at warn so that the line survives the filter it sets.
    tracing::warn!(peer = %auth.peer, by = %who(&auth), filter = %req.filter,
        "admin: diagnostic log filter changed");
    Ok(StatusCode::OK.into_response())
}
