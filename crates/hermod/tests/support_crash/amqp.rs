//! Private RabbitMQ nodes: each with its own node name, AMQP and
//! distribution ports, Mnesia and log directories, config and plugin files,
//! and Erlang cookie (HOME), so neither /etc/rabbitmq nor the shared node on
//! 5672 is touched. [`RabbitNode`] is one node for `tests/crash.rs`;
//! `tests/rabbit_cluster.rs` builds three of them with [`node_daemon`] and
//! joins them into one cluster. With [`RabbitTls`] a node listens for
//! `amqps` only (`tests/broker_tls.rs`).
//!
//! The destination is a quorum queue. Seed B1 publishes without
//! `delivery_mode = 2`, and a classic queue drops such transient messages
//! when the broker restarts even after confirming them; a quorum queue
//! persists every message before it confirms, so a confirmed message
//! survives the broker's SIGKILL and the outage test measures Hermod, not
//! the queue type.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use lapin::options::{BasicGetOptions, QueueDeclareOptions};
use lapin::tcp::{OwnedIdentity, OwnedTLSConfig};
use lapin::types::{AMQPValue, FieldTable, LongString};
use lapin::{Connection, ConnectionProperties};

use super::broker::{retry, Contents, Daemon};
use super::{free_port, unique};

/// The start script itself, not Debian's /usr/sbin wrapper, which would
/// switch to the `rabbitmq` user and its shared directories.
const RABBITMQ_SERVER: &str = "/usr/lib/rabbitmq/bin/rabbitmq-server";
/// The CLI of the same install, for the same reason.
const RABBITMQCTL: &str = "/usr/lib/rabbitmq/bin/rabbitmqctl";

/// A node boots in about 7 s on the idle 2-core machine; much longer while
/// other builds run.
pub const RABBIT_STARTUP: Duration = Duration::from_secs(120);

/// One private node: `dir` holds its config, Mnesia and logs; `home` is
/// its HOME, where Erlang keeps the cookie (nodes of one cluster share it).
/// `conf` is appended to its rabbitmq.conf. Not started yet.
pub fn node_daemon(home: &Path, dir: &Path, node: &str, port: u16, conf: &str) -> Daemon {
    std::fs::create_dir_all(dir).expect("creating the RabbitMQ dir");
    let file = |name: &str, text: &str| -> PathBuf {
        let p = dir.join(name);
        std::fs::write(&p, text).expect("writing a RabbitMQ file");
        p
    };
    let config = file(
        "rabbitmq.conf",
        &format!("listeners.tcp.1 = 127.0.0.1:{port}\n{conf}"),
    );
    let env_file = file("rabbitmq-env.conf", "");
    let plugins = file("enabled_plugins", "[].\n");
    let addr = format!("127.0.0.1:{port}")
        .parse()
        .expect("loopback address");
    let mut daemon = Daemon::new(
        "rabbitmq-server",
        PathBuf::from(RABBITMQ_SERVER),
        addr,
        dir.join("server.log"),
    );
    daemon.env = vec![
        ("HOME".into(), home.into()),
        ("RABBITMQ_CONF_ENV_FILE".into(), env_file.into()),
        ("RABBITMQ_CONFIG_FILE".into(), config.into()),
        ("RABBITMQ_ENABLED_PLUGINS_FILE".into(), plugins.into()),
        ("RABBITMQ_NODENAME".into(), node.into()),
        ("RABBITMQ_NODE_PORT".into(), port.to_string().into()),
        ("RABBITMQ_DIST_PORT".into(), free_port().to_string().into()),
        ("RABBITMQ_MNESIA_BASE".into(), dir.join("mnesia").into()),
        ("RABBITMQ_LOG_BASE".into(), dir.join("log").into()),
        ("RABBITMQ_PID_FILE".into(), dir.join("node.pid").into()),
        ("ERL_EPMD_ADDRESS".into(), "127.0.0.1".into()),
        (
            "RABBITMQ_SERVER_ADDITIONAL_ERL_ARGS".into(),
            "-kernel inet_dist_use_interface {127,0,0,1}".into(),
        ),
    ];
    daemon.startup = RABBIT_STARTUP;
    daemon
}

/// `rabbitmqctl -n <node> <args>` with the cookie in `home`; its stdout.
pub fn rabbitmqctl(home: &Path, node: &str, args: &[&str]) -> Result<String, String> {
    let out = Command::new(RABBITMQCTL)
        .arg("-n")
        .arg(node)
        .args(args)
        .env("HOME", home)
        // An empty env file: /etc/rabbitmq is the shared node's.
        .env("RABBITMQ_CONF_ENV_FILE", "/dev/null")
        .env("ERL_EPMD_ADDRESS", "127.0.0.1")
        .output()
        .map_err(|e| format!("running {RABBITMQCTL}: {e}"))?;
    if out.status.success() {
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    } else {
        Err(format!(
            "rabbitmqctl {} ({}): {}{}",
            args.join(" "),
            out.status,
            String::from_utf8_lossy(&out.stdout).trim(),
            String::from_utf8_lossy(&out.stderr).trim()
        ))
    }
}

/// The URI of a node on `addr`, default user and vhost.
pub fn uri(addr: std::net::SocketAddr) -> String {
    format!("amqp://guest:guest@{addr}/%2f")
}

/// A fresh connection each time, so a call after a broker restart just
/// works. The connection must outlive its channel.
pub async fn channel(uri: &str) -> Result<(Connection, lapin::Channel), String> {
    channel_with(uri, None).await
}

/// [`channel`], over TLS trusting `tls.ca` (and presenting `tls.client`)
/// when `tls` is given.
pub async fn channel_with(
    uri: &str,
    tls: Option<&RabbitTls>,
) -> Result<(Connection, lapin::Channel), String> {
    let conn = match tls {
        None => Connection::connect(uri, ConnectionProperties::default()).await,
        Some(t) => {
            let read = |p: &Path| std::fs::read(p).map_err(|e| format!("{}: {e}", p.display()));
            let identity = match &t.client {
                Some((cert, key)) => Some(OwnedIdentity::PKCS8 {
                    pem: read(cert)?,
                    key: read(key)?,
                }),
                None => None,
            };
            let config = OwnedTLSConfig {
                identity,
                cert_chain: Some(String::from_utf8_lossy(&read(&t.ca)?).into_owned()),
            };
            let runtime = lapin::runtime::default_runtime().map_err(|e| e.to_string())?;
            Connection::connect_with_config(uri, ConnectionProperties::default(), config, runtime)
                .await
        }
    }
    .map_err(|e| e.to_string())?;
    let ch = conn.create_channel().await.map_err(|e| e.to_string())?;
    Ok((conn, ch))
}

/// Declare the durable quorum queue `queue` through the node at `uri`,
/// which becomes the queue's first leader (`client-local`).
pub async fn declare_quorum(uri: &str, queue: &str) -> Result<(), String> {
    let (_conn, ch) = channel(uri).await?;
    declare_quorum_on(&ch, queue).await
}

async fn declare_quorum_on(ch: &lapin::Channel, queue: &str) -> Result<(), String> {
    let mut args = FieldTable::default();
    let text = |s: &str| AMQPValue::LongString(LongString::from(s));
    args.insert("x-queue-type".into(), text("quorum"));
    args.insert("x-queue-leader-locator".into(), text("client-local"));
    let opts = QueueDeclareOptions {
        durable: true,
        ..Default::default()
    };
    ch.queue_declare(queue.into(), opts, args)
        .await
        .map(|_| ())
        .map_err(|e| e.to_string())
}

/// Messages in `queue`. Nothing consumes until the final read, so during a
/// run this is the number published so far.
pub async fn depth(uri: &str, queue: &str) -> Result<u64, String> {
    let (_conn, ch) = channel(uri).await?;
    depth_on(&ch, queue).await
}

async fn depth_on(ch: &lapin::Channel, queue: &str) -> Result<u64, String> {
    let opts = QueueDeclareOptions {
        passive: true,
        ..Default::default()
    };
    let q = ch
        .queue_declare(queue.into(), opts, FieldTable::default())
        .await
        .map_err(|e| e.to_string())?;
    Ok(u64::from(q.message_count()))
}

/// Consume everything queued; the queue is FIFO, so the consumption order
/// is the publish order and positions line up with [`depth`].
pub async fn consume_all(uri: &str, queue: &str, contents: &mut Contents) -> Result<(), String> {
    let (_conn, ch) = channel(uri).await?;
    consume_all_on(&ch, queue, contents).await
}

async fn consume_all_on(
    ch: &lapin::Channel,
    queue: &str,
    contents: &mut Contents,
) -> Result<(), String> {
    while let Some(m) = ch
        .basic_get(queue.into(), BasicGetOptions { no_ack: true })
        .await
        .map_err(|e| e.to_string())?
    {
        let id = m
            .delivery
            .properties
            .message_id()
            .as_ref()
            .map(|s| s.as_str().to_string());
        contents.record(&m.delivery.data, id);
    }
    Ok(())
}

pub struct RabbitNode {
    pub daemon: Daemon,
    pub queue: String,
    pub tls: Option<RabbitTls>,
}

/// An `amqps` listener instead of plain AMQP, and a user of the test's
/// choosing instead of guest.
#[derive(Clone)]
pub struct RabbitTls {
    pub ca: PathBuf,
    pub cert: PathBuf,
    pub key: PathBuf,
    pub user: String,
    pub password: String,
    /// Demand a client certificate signed by `ca`; the test's own
    /// connections present this one (certificate, key).
    pub client: Option<(PathBuf, PathBuf)>,
}

impl RabbitTls {
    /// The whole rabbitmq.conf of a TLS-only node on `port`.
    fn config(&self, port: u16) -> String {
        let verify = if self.client.is_some() {
            "ssl_options.verify = verify_peer\nssl_options.fail_if_no_peer_cert = true\n"
        } else {
            "ssl_options.verify = verify_none\n"
        };
        format!(
            "listeners.tcp = none\nlisteners.ssl.1 = 127.0.0.1:{port}\n\
             ssl_options.cacertfile = {}\nssl_options.certfile = {}\nssl_options.keyfile = {}\n\
             {verify}default_user = {}\ndefault_pass = {}\n",
            self.ca.display(),
            self.cert.display(),
            self.key.display(),
            self.user,
            self.password
        )
    }
}

impl RabbitNode {
    pub async fn start(dir: &Path) -> RabbitNode {
        Self::start_with(dir, None).await
    }

    pub async fn start_with(dir: &Path, tls: Option<RabbitTls>) -> RabbitNode {
        let home = dir.join("rabbitmq");
        let node = format!("{}@localhost", unique("hermodtest"));
        let port = free_port();
        let mut daemon = node_daemon(&home, &home, &node, port, "");
        if let Some(tls) = &tls {
            // Only the amqps listener: replace the plain one node_daemon wrote
            // and drop the variable that would open it again.
            std::fs::write(home.join("rabbitmq.conf"), tls.config(port))
                .expect("writing a RabbitMQ file");
            daemon.env.retain(|(k, _)| k != "RABBITMQ_NODE_PORT");
        }
        daemon.start();
        let node = RabbitNode {
            daemon,
            queue: unique("crash"),
            tls,
        };
        retry("declaring the quorum queue", RABBIT_STARTUP, || async {
            let (_conn, ch) = node.channel().await?;
            declare_quorum_on(&ch, &node.queue).await
        })
        .await;
        node
    }

    fn uri(&self) -> String {
        match &self.tls {
            Some(t) => format!("amqps://{}:{}@{}/%2f", t.user, t.password, self.daemon.addr),
            None => uri(self.daemon.addr),
        }
    }

    /// A fresh connection to this node (over TLS for a TLS node).
    pub async fn channel(&self) -> Result<(Connection, lapin::Channel), String> {
        channel_with(&self.uri(), self.tls.as_ref()).await
    }

    pub fn seed_substitutions(&self) -> Vec<(&'static str, String)> {
        vec![
            (
                "'amqp://localhost'",
                format!("'amqp://{}'", self.daemon.addr),
            ),
            (
                "routing_key = 'logging'",
                format!("routing_key = '{}'", self.queue),
            ),
        ]
    }

    /// Messages in the queue (see [`depth`]).
    pub async fn stored(&self) -> Result<u64, String> {
        let (_conn, ch) = self.channel().await?;
        depth_on(&ch, &self.queue).await
    }

    /// Consume everything queued (see [`consume_all`]).
    pub async fn refresh(&self, contents: &mut Contents) -> Result<(), String> {
        let (_conn, ch) = self.channel().await?;
        consume_all_on(&ch, &self.queue, contents).await
    }
}
