//! Binding, the accept loop (plain or TLS), routing and graceful shutdown.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use axum::body::Bytes;
use axum::extract::connect_info::Connected;
use axum::extract::{ConnectInfo, DefaultBodyLimit, Request, State};
use axum::http::StatusCode;
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::serve::{IncomingStream, Listener};
use axum::Router;
use hermod_message::admin::Admin;
use hermod_message::Acceptor;
use hermod_policy::Engine;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpListener;
use tokio::sync::{broadcast, mpsc};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;
use tower_http::compression::CompressionLayer;
use tower_http::decompression::RequestDecompressionLayer;

use crate::auth::{self, AuthCache, AuthInfo, AuthKind};
use crate::config::{canonical, HttpListenerConfig};
use crate::HttpError;

/// A slow or silent client must not hold a handshake slot forever.
const TLS_HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

pub(crate) struct AppState {
    pub cfg: HttpListenerConfig,
    pub engine: Arc<Engine>,
    pub acceptor: Arc<dyn Acceptor>,
    /// The queues' admin handle; without one the admin API answers 503.
    pub admin: Option<Arc<dyn Admin>>,
    pub auth_cache: AuthCache,
    pub received: hermod_metrics::Counter,
    /// The delivery log's live tap, streamed by the dashboard; without one
    /// `/dashboard/events` answers 503.
    pub log_events: Option<broadcast::Sender<Bytes>>,
    /// Ends long-lived responses (the dashboard's event stream) at shutdown.
    pub shutdown: CancellationToken,
}

/// Both ends of a connection: the peer for auth and `received_from`, the
/// local address for `received_via`.
#[derive(Debug, Clone, Copy)]
pub(crate) struct ConnInfo {
    pub peer: SocketAddr,
    pub local: SocketAddr,
}

pub(crate) trait Io: AsyncRead + AsyncWrite + Unpin + Send {}
impl<T: AsyncRead + AsyncWrite + Unpin + Send> Io for T {}

/// Connections handed over by the accept task, already through TLS.
struct Incoming {
    rx: mpsc::Receiver<(Box<dyn Io>, ConnInfo)>,
    local: SocketAddr,
}

impl Listener for Incoming {
    type Io = Box<dyn Io>;
    type Addr = ConnInfo;

    async fn accept(&mut self) -> (Self::Io, Self::Addr) {
        match self.rx.recv().await {
            Some(conn) => conn,
            // The accept task stopped (shutdown): wait for axum's own shutdown signal.
            None => std::future::pending().await,
        }
    }

    fn local_addr(&self) -> std::io::Result<Self::Addr> {
        Ok(ConnInfo {
            peer: self.local,
            local: self.local,
        })
    }
}

impl Connected<IncomingStream<'_, Incoming>> for ConnInfo {
    fn connect_info(stream: IncomingStream<'_, Incoming>) -> Self {
        *stream.remote_addr()
    }
}

/// A running listener.
pub struct HttpHandle {
    local_addr: SocketAddr,
    task: JoinHandle<()>,
}

impl HttpHandle {
    /// The bound address (useful with port 0).
    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    /// Wait until the listener has stopped after the shutdown token fired
    /// and in-flight requests completed.
    pub async fn wait(self) {
        if let Err(e) = self.task.await {
            tracing::error!(error = %e, "HTTP listener task failed");
        }
    }
}

/// Bind and serve. Bind and TLS configuration errors are returned; once
/// running, the listener stops accepting when `shutdown` is cancelled and
/// finishes the requests in flight.
pub async fn start_listener(
    cfg: HttpListenerConfig,
    engine: Arc<Engine>,
    acceptor: Arc<dyn Acceptor>,
    shutdown: CancellationToken,
) -> Result<HttpHandle, HttpError> {
    start_listener_with_admin(cfg, engine, acceptor, None, shutdown).await
}

/// [`start_listener`] with the admin API (`/api/admin/...`) served by `admin`.
pub async fn start_listener_with_admin(
    cfg: HttpListenerConfig,
    engine: Arc<Engine>,
    acceptor: Arc<dyn Acceptor>,
    admin: Option<Arc<dyn Admin>>,
    shutdown: CancellationToken,
) -> Result<HttpHandle, HttpError> {
    start_listener_with_dashboard(cfg, engine, acceptor, admin, None, shutdown).await
}

/// [`start_listener_with_admin`] whose dashboard (`/`) also streams the
/// records `log_events` carries (`hermod_logging::Logger::record_tap`).
pub async fn start_listener_with_dashboard(
    cfg: HttpListenerConfig,
    engine: Arc<Engine>,
    acceptor: Arc<dyn Acceptor>,
    admin: Option<Arc<dyn Admin>>,
    log_events: Option<broadcast::Sender<Bytes>>,
    shutdown: CancellationToken,
) -> Result<HttpHandle, HttpError> {
    let addr = cfg.validate()?;
    let tls = if cfg.use_tls {
        Some(tokio_rustls::TlsAcceptor::from(crate::tls::server_config(
            &cfg,
        )?))
    } else {
        None
    };
    let tcp = TcpListener::bind(addr).await.map_err(|e| HttpError::Bind {
        addr: cfg.listen.clone(),
        source: e,
    })?;
    let local_addr = tcp.local_addr().map_err(|e| HttpError::Bind {
        addr: cfg.listen.clone(),
        source: e,
    })?;
    let body_limit = cfg.request_body_limit;
    let state = Arc::new(AppState {
        cfg,
        engine,
        acceptor,
        admin,
        auth_cache: AuthCache::default(),
        received: hermod_metrics::received(hermod_metrics::SERVICE_HTTP_LISTENER),
        log_events,
        shutdown: shutdown.clone(),
    });
    let app = router(state, body_limit);

    let (tx, rx) = mpsc::channel(64);
    tokio::spawn(accept_loop(tcp, tls, tx, shutdown.clone()));
    let incoming = Incoming {
        rx,
        local: local_addr,
    };
    let task = tokio::spawn(async move {
        let serve = axum::serve(
            incoming,
            app.into_make_service_with_connect_info::<ConnInfo>(),
        )
        .with_graceful_shutdown(shutdown.cancelled_owned());
        if let Err(e) = serve.await {
            tracing::error!(error = %e, "HTTP listener stopped with an error");
        }
    });
    tracing::info!(%local_addr, "HTTP listener started");
    Ok(HttpHandle { local_addr, task })
}

fn router(state: Arc<AppState>, body_limit: usize) -> Router {
    use crate::admin_api as api;
    Router::new()
        .route("/api/inject/v1", post(crate::inject::handler))
        .route("/metrics", get(crate::admin::metrics_text))
        .route("/metrics.json", get(crate::admin::metrics_json))
        .route("/api/check-liveness/v1", get(crate::admin::liveness))
        .route(
            "/api/admin/suspend/v1",
            post(api::suspend_create)
                .get(api::suspend_list)
                .delete(api::suspend_cancel),
        )
        .route(
            "/api/admin/suspend-ready-q/v1",
            post(api::ready_suspend_create)
                .get(api::ready_suspend_list)
                .delete(api::ready_suspend_cancel),
        )
        .route(
            "/api/admin/bounce/v1",
            post(api::bounce_create)
                .get(api::bounce_list)
                .delete(api::bounce_cancel),
        )
        .route("/api/admin/ready-q-states/v1", get(api::ready_q_states))
        .route("/api/admin/inspect-message/v1", get(api::inspect_message))
        .route("/", get(crate::dashboard::page))
        .route("/dashboard/app.js", get(crate::dashboard::script))
        .route("/dashboard/style.css", get(crate::dashboard::style))
        .route("/dashboard/events", get(crate::dashboard::events))
        .route(
            "/api/admin/rebind/v1",
            post(api::rebind).get(api::rebind_list),
        )
        .route("/api/admin/inspect-sched-q/v1", get(api::inspect_sched_q))
        .route("/api/admin/inspect-ready-q/v1", get(api::inspect_ready_q))
        .route(
            "/api/admin/set_diagnostic_log_filter/v1",
            post(api::set_log_filter),
        )
        // The limit applies to the decompressed body, so a gzip bomb is cut off too.
        .layer(DefaultBodyLimit::max(body_limit))
        .layer(RequestDecompressionLayer::new())
        .layer(CompressionLayer::new().gzip(true).deflate(true))
        .layer(axum::middleware::from_fn_with_state(
            state.clone(),
            authorise,
        ))
        .layer(axum::middleware::from_fn(crate::dashboard::same_origin))
        .with_state(state)
}

async fn accept_loop(
    tcp: TcpListener,
    tls: Option<tokio_rustls::TlsAcceptor>,
    tx: mpsc::Sender<(Box<dyn Io>, ConnInfo)>,
    shutdown: CancellationToken,
) {
    loop {
        let (stream, peer) = tokio::select! {
            _ = shutdown.cancelled() => break,
            r = tcp.accept() => match r {
                Ok(conn) => conn,
                Err(e) => {
                    // Usually EMFILE: back off instead of spinning.
                    tracing::warn!(error = %e, "HTTP accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
        };
        let local = match stream.local_addr() {
            Ok(a) => a,
            Err(e) => {
                tracing::debug!(error = %e, "HTTP connection closed before it could be served");
                continue;
            }
        };
        let _ = stream.set_nodelay(true);
        let info = ConnInfo { peer, local };
        match &tls {
            None => {
                if tx.send((Box::new(stream), info)).await.is_err() {
                    break;
                }
            }
            Some(acceptor) => {
                let acceptor = acceptor.clone();
                let tx = tx.clone();
                tokio::spawn(async move {
                    match tokio::time::timeout(TLS_HANDSHAKE_TIMEOUT, acceptor.accept(stream)).await
                    {
                        Ok(Ok(tls_stream)) => {
                            let _ = tx.send((Box::new(tls_stream), info)).await;
                        }
                        Ok(Err(e)) => {
                            tracing::debug!(%peer, error = %e, "HTTP TLS handshake failed")
                        }
                        Err(_) => tracing::debug!(%peer, "HTTP TLS handshake timed out"),
                    }
                });
            }
        }
    }
}

/// Plain-text error in the form the spec gives for the listener.
pub(crate) fn text_error(status: StatusCode, msg: impl std::fmt::Display) -> Response {
    (status, format!("Error: {msg}\n")).into_response()
}

async fn authorise(
    State(st): State<Arc<AppState>>,
    ConnectInfo(conn): ConnectInfo<ConnInfo>,
    mut req: Request,
    next: Next,
) -> Response {
    let peer = canonical(conn.peer.ip());
    let kind = if st.cfg.is_trusted(peer) {
        AuthKind::TrustedHost
    } else {
        let creds = match auth::parse_authorization(req.headers()) {
            Ok(Some(c)) => c,
            Ok(None) => {
                return unauthorised("authentication required");
            }
            Err(e) => return text_error(StatusCode::BAD_REQUEST, e),
        };
        if !auth::validate(&st.engine, &st.auth_cache, &creds).await {
            return unauthorised("invalid credentials");
        }
        match creds {
            auth::Credentials::Basic { user, .. } => AuthKind::Basic { user },
            auth::Credentials::Bearer(_) => AuthKind::Bearer,
        }
    };
    req.extensions_mut().insert(AuthInfo { peer, kind });
    next.run(req).await
}

fn unauthorised(msg: &str) -> Response {
    let mut r = text_error(StatusCode::UNAUTHORIZED, msg);
    r.headers_mut().insert(
        axum::http::header::WWW_AUTHENTICATE,
        axum::http::HeaderValue::from_static("Basic realm=\"hermod\""),
    );
    r
}
