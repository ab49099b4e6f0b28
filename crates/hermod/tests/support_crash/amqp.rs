//! A private RabbitMQ node: its own node name, AMQP and distribution ports,
//! Mnesia and log directories, config and plugin files, and Erlang cookie
//! (HOME), so neither /etc/rabbitmq nor the shared node on 5672 is touched.
//!
//! The destination is a quorum queue. Seed B1 publishes without
//! `delivery_mode = 2`, and a classic queue drops such transient messages
//! when the broker restarts even after confirming them; a quorum queue
//! persists every message before it confirms, so a confirmed message
//! survives the broker's SIGKILL and the outage test measures Hermod, not
//! the queue type.

use std::path::{Path, PathBuf};
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

/// A node boots in about 7 s on the idle 2-core machine; much longer while
/// other builds run.
const RABBIT_STARTUP: Duration = Duration::from_secs(120);

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
        std::fs::create_dir_all(&home).expect("creating the RabbitMQ dir");
        let port = free_port();
        let file = |name: &str, text: &str| -> PathBuf {
            let p = home.join(name);
            std::fs::write(&p, text).expect("writing a RabbitMQ file");
            p
        };
        let config = file(
            "rabbitmq.conf",
            &match &tls {
                Some(tls) => tls.config(port),
                None => format!("listeners.tcp.1 = 127.0.0.1:{port}\n"),
            },
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
            home.join("server.log"),
        );
        let node = format!("{}@localhost", unique("hermodtest"));
        daemon.env = vec![
            ("HOME".into(), home.clone().into()),
            ("RABBITMQ_CONF_ENV_FILE".into(), env_file.into()),
            ("RABBITMQ_CONFIG_FILE".into(), config.into()),
            ("RABBITMQ_ENABLED_PLUGINS_FILE".into(), plugins.into()),
            ("RABBITMQ_NODENAME".into(), node.into()),
            ("RABBITMQ_DIST_PORT".into(), free_port().to_string().into()),
            ("RABBITMQ_MNESIA_BASE".into(), home.join("mnesia").into()),
            ("RABBITMQ_LOG_BASE".into(), home.join("log").into()),
            ("RABBITMQ_PID_FILE".into(), home.join("node.pid").into()),
            ("ERL_EPMD_ADDRESS".into(), "127.0.0.1".into()),
            (
                "RABBITMQ_SERVER_ADDITIONAL_ERL_ARGS".into(),
                "-kernel inet_dist_use_interface {127,0,0,1}".into(),
            ),
        ];
        if tls.is_none() {
            daemon
                .env
                .push(("RABBITMQ_NODE_PORT".into(), port.to_string().into()));
        }
        daemon.startup = RABBIT_STARTUP;
        daemon.start();
        let node = RabbitNode {
            daemon,
            queue: unique("crash"),
            tls,
        };
        let n = &node;
        retry(
            "declaring the quorum queue",
            RABBIT_STARTUP,
            move || async move {
                let (_conn, ch) = n.channel().await?;
                let mut args = FieldTable::default();
                args.insert(
                    "x-queue-type".into(),
                    AMQPValue::LongString(LongString::from("quorum")),
                );
                let opts = QueueDeclareOptions {
                    durable: true,
                    ..Default::default()
                };
                ch.queue_declare(n.queue.as_str().into(), opts, args)
                    .await
                    .map(|_| ())
                    .map_err(|e| e.to_string())
            },
        )
        .await;
        node
    }

    fn uri(&self) -> String {
        match &self.tls {
            Some(t) => format!("amqps://{}:{}@{}/%2f", t.user, t.password, self.daemon.addr),
            None => format!("amqp://guest:guest@{}/%2f", self.daemon.addr),
        }
    }

    /// A fresh connection each time, so a call after a broker restart
    /// just works. The connection must outlive its channel.
    pub async fn channel(&self) -> Result<(Connection, lapin::Channel), String> {
        let conn = match &self.tls {
            None => Connection::connect(&self.uri(), ConnectionProperties::default()).await,
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
                Connection::connect_with_config(
                    &self.uri(),
                    ConnectionProperties::default(),
                    config,
                    runtime,
                )
                .await
            }
        }
        .map_err(|e| e.to_string())?;
        let ch = conn.create_channel().await.map_err(|e| e.to_string())?;
        Ok((conn, ch))
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

    /// Messages in the queue. Nothing consumes until the final read, so
    /// during a run this is the number published so far.
    pub async fn stored(&self) -> Result<u64, String> {
        let (_conn, ch) = self.channel().await?;
        let opts = QueueDeclareOptions {
            passive: true,
            ..Default::default()
        };
        let q = ch
            .queue_declare(self.queue.as_str().into(), opts, FieldTable::default())
            .await
            .map_err(|e| e.to_string())?;
        Ok(u64::from(q.message_count()))
    }

    /// Consume everything queued; the queue is FIFO, so the consumption
    /// order is the publish order and positions line up with [`stored`].
    pub async fn refresh(&self, contents: &mut Contents) -> Result<(), String> {
        let (_conn, ch) = self.channel().await?;
        while let Some(m) = ch
            .basic_get(self.queue.as_str().into(), BasicGetOptions { no_ack: true })
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
}
