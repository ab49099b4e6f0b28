//! Process-wide pool of AMQP connections, one per (URI, tokio runtime).
//!
//! Seed policies build a client per message, so `build_client` on a warm
//! pool must not open a TCP connection: every client built with the same URI
//! shares one connection and one confirm-mode channel (lapin tracks each
//! publish's confirmation by delivery tag, so concurrent publishes on one
//! channel are safe). A channel the broker closed (e.g. publish to a missing
//! exchange) is reopened on next use; a dead connection is replaced. A
//! watchdog task closes a connection after [`IDLE_CLOSE`] without use.
//!
//! The runtime is part of the key because lapin's I/O loop lives on the
//! runtime that opened the connection; a connection must not outlive it.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use lapin::options::ConfirmSelectOptions;
use lapin::tcp::{OwnedIdentity, OwnedTLSConfig};
use lapin::{Channel, Connection, ConnectionProperties};
use parking_lot::Mutex;

use super::AmqpError;

/// KumoMTA's hard connect timeout for `build_client`.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(20);
/// How long a pooled connection may sit unused before it is closed.
pub const IDLE_CLOSE: Duration = Duration::from_secs(60);
const WATCHDOG_TICK: Duration = Duration::from_secs(10);

type Key = (String, Option<TlsFiles>, tokio::runtime::Id);

/// PEM files for an `amqps` connection beyond the system's root store. The
/// files are read each time a connection opens, so a renewed certificate is
/// picked up on the next reconnect without a restart.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Default)]
pub struct TlsFiles {
    /// Extra trusted CA certificates (PEM), added to the system roots.
    pub root_ca_cert: Option<String>,
    /// Client certificate chain and its private key (PEM), for mutual TLS.
    pub client_cert_and_key: Option<(String, String)>,
}

impl TlsFiles {
    fn read(path: &str) -> Result<Vec<u8>, AmqpError> {
        std::fs::read(path).map_err(|source| AmqpError::TlsFile {
            path: path.to_string(),
            source,
        })
    }

    fn load(&self) -> Result<OwnedTLSConfig, AmqpError> {
        let cert_chain = match &self.root_ca_cert {
            Some(p) => Some(String::from_utf8_lossy(&Self::read(p)?).into_owned()),
            None => None,
        };
        let identity = match &self.client_cert_and_key {
            Some((cert, key)) => Some(OwnedIdentity::PKCS8 {
                pem: Self::read(cert)?,
                key: Self::read(key)?,
            }),
            None => None,
        };
        Ok(OwnedTLSConfig {
            identity,
            cert_chain,
        })
    }
}

struct Live {
    connection: Arc<Connection>,
    channel: Channel,
}

/// One pooled connection slot. Clients hold an `Arc` to it.
pub struct Slot {
    uri: String,
    tls: Option<TlsFiles>,
    live: tokio::sync::Mutex<Option<Live>>,
    last_used: Mutex<Instant>,
    opened: AtomicU64,
}

fn pool() -> &'static Mutex<HashMap<Key, Arc<Slot>>> {
    static POOL: OnceLock<Mutex<HashMap<Key, Arc<Slot>>>> = OnceLock::new();
    POOL.get_or_init(Default::default)
}

/// The pool slot for `uri` (and its TLS files) on the current runtime,
/// created empty if new.
pub fn slot(uri: &str, tls: Option<&TlsFiles>) -> Arc<Slot> {
    let key = (
        uri.to_string(),
        tls.cloned(),
        tokio::runtime::Handle::current().id(),
    );
    pool()
        .lock()
        .entry(key)
        .or_insert_with(|| {
            Arc::new(Slot {
                uri: uri.to_string(),
                tls: tls.cloned(),
                live: tokio::sync::Mutex::new(None),
                last_used: Mutex::new(Instant::now()),
                opened: AtomicU64::new(0),
            })
        })
        .clone()
}

/// How many TCP connections the pool has opened for `uri` on the current
/// runtime since start. Exposed so tests and metrics can prove reuse.
pub fn connections_opened(uri: &str) -> u64 {
    let key = (
        uri.to_string(),
        None,
        tokio::runtime::Handle::current().id(),
    );
    pool()
        .lock()
        .get(&key)
        .map(|s| s.opened.load(Ordering::Relaxed))
        .unwrap_or(0)
}

/// Remove credentials from a URI before it goes into logs or errors.
pub fn redact(uri: &str) -> String {
    match (uri.find("://"), uri.rfind('@')) {
        (Some(scheme), Some(at)) if at > scheme => {
            format!("{}://***@{}", &uri[..scheme], &uri[at + 1..])
        }
        _ => uri.to_string(),
    }
}

impl Slot {
    /// A confirm-mode channel on a live connection, connecting or
    /// reopening the channel as needed.
    pub async fn channel(self: &Arc<Self>) -> Result<Channel, AmqpError> {
        *self.last_used.lock() = Instant::now();
        let mut live = self.live.lock().await;
        if let Some(l) = live.as_mut() {
            if l.connection.status().connected() {
                if l.channel.status().connected() {
                    return Ok(l.channel.clone());
                }
                tracing::debug!(uri = %redact(&self.uri), "amqp channel closed; opening a new one");
                l.channel = open_channel(&l.connection).await?;
                return Ok(l.channel.clone());
            }
            tracing::info!(uri = %redact(&self.uri), "amqp connection lost; reconnecting");
        }
        *live = None;
        let connect = async {
            match &self.tls {
                None => Connection::connect(&self.uri, ConnectionProperties::default())
                    .await
                    .map_err(AmqpError::Connect),
                Some(files) => {
                    let config = files.load()?;
                    let runtime = lapin::runtime::default_runtime().map_err(AmqpError::Connect)?;
                    Connection::connect_with_config(
                        &self.uri,
                        ConnectionProperties::default(),
                        config,
                        runtime,
                    )
                    .await
                    .map_err(AmqpError::Connect)
                }
            }
        };
        let connection = tokio::time::timeout(CONNECT_TIMEOUT, connect)
            .await
            .map_err(|_| AmqpError::ConnectTimeout(CONNECT_TIMEOUT))??;
        let connection = Arc::new(connection);
        let channel = open_channel(&connection).await?;
        self.opened.fetch_add(1, Ordering::Relaxed);
        tracing::info!(uri = %redact(&self.uri), "amqp connection opened");
        spawn_watchdog(Arc::downgrade(self), Arc::downgrade(&connection));
        *live = Some(Live {
            connection,
            channel: channel.clone(),
        });
        Ok(channel)
    }

    async fn close_if_idle(&self, connection: &Arc<Connection>) -> bool {
        if self.last_used.lock().elapsed() < IDLE_CLOSE {
            return false;
        }
        let mut live = self.live.lock().await;
        let same = live
            .as_ref()
            .is_some_and(|l| Arc::ptr_eq(&l.connection, connection));
        if !same {
            return true;
        }
        if self.last_used.lock().elapsed() < IDLE_CLOSE {
            return false;
        }
        if let Some(l) = live.take() {
            tracing::debug!(uri = %redact(&self.uri), "closing idle amqp connection");
            if let Err(e) = l.connection.close(200, "idle".into()).await {
                tracing::debug!(error = %e, "closing idle amqp connection failed");
            }
        }
        true
    }
}

async fn open_channel(connection: &Connection) -> Result<Channel, AmqpError> {
    let channel = connection
        .create_channel()
        .await
        .map_err(AmqpError::OpenChannel)?;
    channel
        .confirm_select(ConfirmSelectOptions::default())
        .await
        .map_err(AmqpError::ConfirmSelect)?;
    Ok(channel)
}

/// Closes the connection once idle; exits when the connection is replaced,
/// the slot goes away, or the runtime shuts down.
fn spawn_watchdog(slot: std::sync::Weak<Slot>, connection: std::sync::Weak<Connection>) {
    tokio::spawn(async move {
        loop {
            tokio::time::sleep(WATCHDOG_TICK).await;
            let (Some(slot), Some(connection)) = (slot.upgrade(), connection.upgrade()) else {
                return;
            };
            if slot.close_if_idle(&connection).await {
                return;
            }
        }
    });
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn redact_hides_credentials_but_keeps_the_host() {
        assert_eq!(
            redact("amqp://guest:secret@host:5672/%2f"),
            "amqp://***@host:5672/%2f"
        );
        assert_eq!(redact("amqp://host"), "amqp://host");
    }
}
