//! The live web dashboard (ARCHITECTURE.md, "Who owns what"): the page at
//! `/`, its script and style sheet (embedded in the binary; plain files, no
//! build step), and `/dashboard/events`, the delivery log's records as
//! server-sent events. Everything else the page shows it reads from the
//! endpoints operators already script against (`/metrics.json` and
//! `/api/admin/...`), and its buttons call the same admin API: the page can
//! do nothing a `curl` from the same host could not. The listener's
//! `authorise` layer serves all of it to trusted hosts and callers the
//! policy accepts only, like the admin API.

use std::convert::Infallible;
use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::body::Bytes;
use axum::extract::{Request, State};
use axum::http::{header, HeaderValue, Method, StatusCode};
use axum::middleware::Next;
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use tokio::sync::broadcast::{self, error::RecvError};
use tokio_util::sync::CancellationToken;

use crate::server::{text_error, AppState};

const PAGE: &str = include_str!("index.html");
const SCRIPT: &str = include_str!("dashboard.js");
const STYLE: &str = include_str!("dashboard.css");

/// The page loads only its own script and style and talks only to this
/// listener; no other site may frame it.
const CSP: &str = "default-src 'none'; script-src 'self'; style-src 'self'; \
                   connect-src 'self'; img-src 'self' data:; frame-ancestors 'none'";

/// The most records one viewer is sent per second. The page keeps the
/// latest few hundred; at a server's full rate a browser would spend its
/// time drawing rows nobody can read. What is left out is counted and
/// reported to the page as a `skipped` event.
const MAX_EVENTS_PER_SECOND: u32 = 50;

fn asset(body: &'static str, content_type: &'static str) -> Response {
    let mut r = body.into_response();
    let h = r.headers_mut();
    h.insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    // Embedded in the binary: an upgraded server must not meet a stale copy.
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    h.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(CSP),
    );
    h.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    r
}

pub(crate) async fn page() -> Response {
    asset(PAGE, "text/html; charset=utf-8")
}

pub(crate) async fn script() -> Response {
    asset(SCRIPT, "text/javascript; charset=utf-8")
}

pub(crate) async fn style() -> Response {
    asset(STYLE, "text/css; charset=utf-8")
}

/// One viewer's subscription to the log tap, with its rate allowance.
struct Viewer {
    rx: broadcast::Receiver<Bytes>,
    shutdown: CancellationToken,
    window: Instant,
    sent: u32,
    skipped: u64,
    /// A record held back while the `skipped` event before it is sent.
    pending: Option<Bytes>,
}

fn record_event(line: &Bytes) -> Event {
    // Log lines are JSON, hence UTF-8; the newline ends the SSE data instead.
    Event::default()
        .event("record")
        .data(String::from_utf8_lossy(line).trim_end())
}

/// The next event for `v`: a record, or how many were left out before it.
/// Ends at shutdown, so the listener's graceful stop is not held open by
/// a browser tab.
async fn next_event(mut v: Viewer) -> Option<(Result<Event, Infallible>, Viewer)> {
    loop {
        if let Some(line) = v.pending.take() {
            return Some((Ok(record_event(&line)), v));
        }
        let got = tokio::select! {
            _ = v.shutdown.cancelled() => return None,
            r = v.rx.recv() => r,
        };
        match got {
            Ok(line) => {
                if v.window.elapsed() >= Duration::from_secs(1) {
                    v.window = Instant::now();
                    v.sent = 0;
                }
                if v.sent >= MAX_EVENTS_PER_SECOND {
                    v.skipped += 1;
                    continue;
                }
                v.sent += 1;
                if v.skipped > 0 {
                    let n = std::mem::take(&mut v.skipped);
                    v.pending = Some(line);
                    return Some((Ok(Event::default().event("skipped").data(n.to_string())), v));
                }
                return Some((Ok(record_event(&line)), v));
            }
            // The viewer fell behind the tap: the oldest records are gone.
            Err(RecvError::Lagged(n)) => v.skipped += n,
            Err(RecvError::Closed) => return None,
        }
    }
}

/// `GET /dashboard/events`: records from now on, as `record` events whose
/// data is the record's JSON (without meta and headers).
pub(crate) async fn events(State(st): State<Arc<AppState>>) -> Response {
    let Some(tap) = &st.log_events else {
        return text_error(
            StatusCode::SERVICE_UNAVAILABLE,
            "the delivery log is not available on this listener",
        );
    };
    let viewer = Viewer {
        rx: tap.subscribe(),
        shutdown: st.shutdown.clone(),
        window: Instant::now(),
        sent: 0,
        skipped: 0,
        pending: None,
    };
    Sse::new(futures::stream::unfold(viewer, next_event))
        .keep_alive(KeepAlive::default())
        .into_response()
}

/// Refuse a state-changing request that a browser sent on behalf of another
/// site. The admin API trusts its hosts' addresses, and a browser on such a
/// host (the one showing this dashboard) would otherwise carry out a form or
/// `no-cors` fetch that any web page aims at the listener. Browsers name the
/// page's origin in `Origin` on every POST and DELETE; `curl`, `hermod` and
/// other clients send none and are not affected.
pub(crate) async fn same_origin(req: Request, next: Next) -> Response {
    if matches!(*req.method(), Method::GET | Method::HEAD | Method::OPTIONS) {
        return next.run(req).await;
    }
    let headers = req.headers();
    let Some(origin) = headers.get(header::ORIGIN) else {
        return next.run(req).await;
    };
    let host = headers.get(header::HOST).and_then(|h| h.to_str().ok());
    // `scheme://host[:port]`; the scheme is whichever the page was served with.
    let origin_host = origin
        .to_str()
        .ok()
        .and_then(|o| o.split_once("://"))
        .map(|(_, h)| h);
    match (origin_host, host) {
        (Some(o), Some(h)) if o.eq_ignore_ascii_case(h) => next.run(req).await,
        _ => text_error(
            StatusCode::FORBIDDEN,
            "cross-site request refused: its Origin is not this listener",
        ),
    }
}
