//! The accept loop: one task per session, a connection limit, and graceful
//! shutdown (stop accepting, tell sessions, wait for them).

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use tokio::io::AsyncWriteExt;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::Semaphore;
use tokio::task::JoinHandle;
use tokio_rustls::TlsAcceptor;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::Instrument;

use hermod_message::Acceptor;
use hermod_policy::Engine;

use crate::config::EsmtpListenerConfig;
use crate::SmtpError;

/// Which SMTP events the policy handles; every context loads the same
/// policy, so this is decided once and saves a context borrow per command.
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct Handlers {
    pub connection_accepted: bool,
    pub ehlo: bool,
    pub mail_from: bool,
    pub rcpt_to: bool,
    pub message_received: bool,
    pub auth_plain: bool,
    pub listener_domain: bool,
}

/// Everything a session needs from its listener.
pub(crate) struct Shared {
    pub cfg: EsmtpListenerConfig,
    pub engine: Arc<Engine>,
    pub acceptor: Arc<dyn Acceptor>,
    pub tls: TlsAcceptor,
    pub handlers: Handlers,
    pub local_addr: SocketAddr,
    pub shutdown: CancellationToken,
}

pub struct ListenerHandle {
    local_addr: SocketAddr,
    task: JoinHandle<()>,
}

impl ListenerHandle {
    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    /// Resolves once shutdown was requested and every session has ended.
    pub async fn join(self) {
        if let Err(e) = self.task.await {
            tracing::error!(error = %e, "esmtp listener task failed");
        }
    }
}

/// Bind the listener and spawn its accept loop.
pub async fn start_listener(
    cfg: EsmtpListenerConfig,
    engine: Arc<Engine>,
    acceptor: Arc<dyn Acceptor>,
    shutdown: CancellationToken,
) -> Result<ListenerHandle, SmtpError> {
    cfg.validate()?;
    let addr = cfg.listen_addr()?;
    let tls = TlsAcceptor::from(crate::tls::server_config(&cfg)?);
    let handlers = {
        let ctx = engine
            .context()
            .await
            .map_err(|e| SmtpError::Policy(e.to_string()))?;
        Handlers {
            connection_accepted: ctx.has_handler("smtp_server_connection_accepted"),
            ehlo: ctx.has_handler("smtp_server_ehlo"),
            mail_from: ctx.has_handler("smtp_server_mail_from"),
            rcpt_to: ctx.has_handler("smtp_server_rcpt_to"),
            message_received: ctx.has_handler("smtp_server_message_received"),
            auth_plain: ctx.has_handler(crate::auth::EVENT),
            listener_domain: ctx.has_handler("get_listener_domain"),
        }
    };
    let listener = TcpListener::bind(addr)
        .await
        .map_err(|source| SmtpError::Bind {
            addr: cfg.listen.clone(),
            source,
        })?;
    let local_addr = listener.local_addr().map_err(|source| SmtpError::Bind {
        addr: cfg.listen.clone(),
        source,
    })?;
    tracing::info!(%local_addr, hostname = %cfg.hostname, "esmtp listener started");
    let limit = Arc::new(Semaphore::new(cfg.max_connections));
    let shared = Arc::new(Shared {
        cfg,
        engine,
        acceptor,
        tls,
        handlers,
        local_addr,
        shutdown,
    });
    let task = tokio::spawn(accept_loop(listener, shared, limit));
    Ok(ListenerHandle { local_addr, task })
}

async fn accept_loop(listener: TcpListener, shared: Arc<Shared>, limit: Arc<Semaphore>) {
    let tracker = TaskTracker::new();
    loop {
        let accepted = tokio::select! {
            _ = shared.shutdown.cancelled() => break,
            r = listener.accept() => r,
        };
        let (sock, peer) = match accepted {
            Ok(x) => x,
            Err(e) => {
                // Typically EMFILE: back off instead of spinning on the error.
                tracing::warn!(error = %e, "esmtp accept failed");
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
        };
        let _ = sock.set_nodelay(true);
        let shared = shared.clone();
        match limit.clone().try_acquire_owned() {
            Ok(permit) => {
                let span = tracing::debug_span!("esmtp", %peer);
                let open = OpenConnection::new();
                tracker.spawn(
                    async move {
                        crate::session::run(shared, sock, peer).await;
                        drop(open);
                        drop(permit);
                    }
                    .instrument(span),
                );
            }
            Err(_) => {
                tracker.spawn(refuse_busy(sock, shared.cfg.hostname.clone()));
            }
        }
    }
    drop(listener);
    tracker.close();
    tracker.wait().await;
    tracing::info!(local_addr = %shared.local_addr, "esmtp listener stopped");
}

/// An inbound session in `connection_count{service="esmtp_listener"}`, as
/// KumoMTA counts its listener's connections, for as long as it lives.
struct OpenConnection(hermod_metrics::Gauge);

impl OpenConnection {
    fn new() -> Self {
        let g = hermod_metrics::connection_count(hermod_metrics::SERVICE_ESMTP_LISTENER);
        g.inc();
        OpenConnection(g)
    }
}

impl Drop for OpenConnection {
    fn drop(&mut self) {
        self.0.dec();
    }
}

async fn refuse_busy(mut sock: TcpStream, hostname: String) {
    let msg = format!("421 4.3.2 {hostname} too many concurrent sessions; try later\r\n");
    let write = async {
        sock.write_all(msg.as_bytes()).await?;
        sock.shutdown().await
    };
    let _ = tokio::time::timeout(Duration::from_secs(5), write).await;
}
