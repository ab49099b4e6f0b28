//! Monitoring endpoints: Prometheus text, the JSON form `kcli` reads, and
//! liveness for load balancers.

use std::sync::Arc;

use axum::extract::State;
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;

use crate::server::AppState;

pub async fn metrics_text() -> Response {
    (
        [(header::CONTENT_TYPE, hermod_metrics::TEXT_CONTENT_TYPE)],
        hermod_metrics::encode_text(),
    )
        .into_response()
}

pub async fn metrics_json() -> Response {
    Json(hermod_metrics::encode_json()).into_response()
}

pub async fn liveness(State(st): State<Arc<AppState>>) -> Response {
    if st.acceptor.is_accepting() {
        (StatusCode::OK, "OK\n").into_response()
    } else {
        (
            StatusCode::SERVICE_UNAVAILABLE,
            "Error: not accepting messages\n",
        )
            .into_response()
    }
}
