//! Kafka over TLS, end to end: seed C1 with `security.protocol = 'ssl'`
//! (and `sasl_ssl` with SCRAM) publishing to a private broker that only
//! speaks TLS to its clients.
//!
//! tansu 0.6.0, the project's Kafka-protocol broker, has no working TLS
//! listener: `tansu broker --cert` and `--key` are mutually exclusive
//! options, and its accept loop never wraps a connection in TLS (a TLS
//! handshake against it hangs). So stunnel terminates TLS in front of a
//! private tansu, which advertises stunnel's port in its metadata: every
//! connection librdkafka opens, bootstrap or to the partition leader, goes
//! through TLS. tansu does check SASL SCRAM-SHA-256/512 credentials
//! (`tansu broker --authentication`; PLAIN is not built into it), so SCRAM
//! over TLS is covered too. The certificates are made here with rcgen.
//!
//! Every test also checks that no secret (the server's private key, the SCRAM
//! password) shows up in Hermod's stderr or local log.

mod common;
mod support_crash;

use std::collections::{HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use common::pki::Pki;
use common::refusal::{assert_no_secret, assert_refused_transiently};
use common::{free_port, records_of, smtp, unique, Server};
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::message::{Headers, Message as _};
use rdkafka::{ClientConfig, Offset, TopicPartitionList};
use support_crash::broker::Daemon;
use support_crash::kafka::{tansu_binary, tansu_command};

const WAIT: Duration = Duration::from_secs(60);
const SCRAM_USER: &str = "hermod";

/// A private tansu behind stunnel: TLS on `tls_port`, and tansu's own
/// plain port known only to this test (tansu advertises the TLS port).
struct TlsKafka {
    // Field order is drop order: stunnel first, then the broker.
    stunnel: Daemon,
    _tansu: Daemon,
    tls_port: u16,
    topic: String,
    /// The CA that issued stunnel's certificate, and the certificate.
    pki: Pki,
    /// A CA that issued nothing here.
    untrusted_ca: PathBuf,
}

impl TlsKafka {
    /// With `scram_password`, a SCRAM user [`SCRAM_USER`] is created and
    /// the broker then restarted to require authentication.
    async fn start(dir: &Path, scram_password: Option<&str>) -> TlsKafka {
        let pki = Pki::new(dir, "kafka");
        let untrusted_ca = Pki::new(dir, "unrelated").ca;
        let bin = tansu_binary();
        let (plain_port, tls_port) = (free_port(), free_port());
        let plain = format!("tcp://127.0.0.1:{plain_port}");
        let mut tansu = Daemon::new(
            "tansu",
            bin.clone(),
            ([127, 0, 0, 1], plain_port).into(),
            dir.join("tansu.log"),
        )
        .arg("broker")
        .arg("--listener-url")
        .arg(&plain)
        .arg("--advertised-listener-url")
        .arg(format!("tcp://127.0.0.1:{tls_port}"))
        .arg("--storage-engine")
        .arg(format!("sqlite:///{}", dir.join("tansu.db").display()));
        tansu.start();
        let topic = unique("tls");
        let create = ["topic", "create", &topic, "--partitions", "1"];
        let create = [&create[..], &["--broker", &plain]].concat();
        tansu_command(&bin, "creating the Kafka topic", &create).await;
        if let Some(password) = scram_password {
            // Users are managed through the Kafka API, which a broker that
            // requires authentication only serves to authenticated clients.
            let user = ["user", "create", SCRAM_USER, password];
            let user = [&user[..], &["--mechanism", "scram256", "--broker", &plain]].concat();
            tansu_command(&bin, "creating the SCRAM user", &user).await;
            tansu.kill9();
            tansu.args.push("--authentication".into());
            tansu.start();
        }
        let conf = dir.join("stunnel.conf");
        std::fs::write(
            &conf,
            format!(
                "foreground = yes\npid =\ndebug = notice\n[kafka]\naccept = 127.0.0.1:{tls_port}\nconnect = 127.0.0.1:{plain_port}\ncert = {}\nkey = {}\n",
                pki.server_cert.display(),
                pki.server_key.display()
            ),
        )
        .expect("writing the stunnel configuration");
        let mut stunnel = Daemon::new(
            "stunnel",
            "stunnel4".into(),
            ([127, 0, 0, 1], tls_port).into(),
            dir.join("stunnel.log"),
        )
        .arg(&conf);
        stunnel.start();
        TlsKafka {
            stunnel,
            _tansu: tansu,
            tls_port,
            topic,
            pki,
            untrusted_ca,
        }
    }

    /// librdkafka settings for a client of the TLS port trusting `ca`,
    /// authenticating with SCRAM-SHA-256 when `password` is given.
    fn client_settings(&self, ca: &Path, password: Option<&str>) -> Vec<(&'static str, String)> {
        let mut s = vec![
            ("bootstrap.servers", format!("127.0.0.1:{}", self.tls_port)),
            ("ssl.ca.location", ca.display().to_string()),
        ];
        match password {
            None => s.push(("security.protocol", "ssl".into())),
            Some(p) => s.extend([
                ("security.protocol", "sasl_ssl".into()),
                ("sasl.mechanism", "SCRAM-SHA-256".into()),
                ("sasl.username", SCRAM_USER.into()),
                ("sasl.password", p.into()),
            ]),
        }
        s
    }

    /// The `hermod-message-id` header of every record in the topic, read
    /// back over TLS with `settings`.
    async fn message_ids(&self, settings: Vec<(&'static str, String)>) -> Vec<String> {
        let topic = self.topic.clone();
        tokio::task::spawn_blocking(move || read_ids(&settings, &topic))
            .await
            .expect("Kafka reader task")
    }
}

fn read_ids(settings: &[(&str, String)], topic: &str) -> Vec<String> {
    let mut config = ClientConfig::new();
    for (k, v) in settings {
        config.set(*k, v);
    }
    let consumer: BaseConsumer = config
        .set("group.id", unique("tls_reader"))
        .set("enable.auto.commit", "false")
        .create()
        .expect("Kafka consumer");
    let (_, high) = consumer
        .fetch_watermarks(topic, 0, Duration::from_secs(10))
        .expect("Kafka watermarks over TLS");
    let mut tpl = TopicPartitionList::new();
    tpl.add_partition_offset(topic, 0, Offset::Beginning)
        .expect("Kafka partition offset");
    consumer.assign(&tpl).expect("Kafka assign");
    let deadline = Instant::now() + Duration::from_secs(20);
    let mut ids = Vec::new();
    let mut next = 0;
    while next < high {
        assert!(
            Instant::now() < deadline,
            "read {next} of {high} records from {topic} over TLS"
        );
        let Some(m) = consumer.poll(Duration::from_millis(200)) else {
            continue;
        };
        let m = m.expect("a Kafka record over TLS");
        next = m.offset() + 1;
        let id = m.headers().and_then(|h| {
            h.iter()
                .find(|h| h.key == "hermod-message-id")
                .and_then(|h| h.value)
                .map(|v| String::from_utf8_lossy(v).into_owned())
        });
        ids.push(id.unwrap_or_else(|| format!("record {} without an id", m.offset())));
    }
    ids
}

/// Seed C1 after P0, with librdkafka `settings` instead of the plain
/// bootstrap server, the private topic, `send_timeout` for the seed's
/// 1 minute, and a 1 s retry. Each replaced text must occur once.
fn policy(kafka: &TlsKafka, settings: &[(&str, String)], send_timeout: &str) -> String {
    let table: Vec<String> = settings
        .iter()
        .map(|(k, v)| format!("['{k}'] = '{v}'"))
        .collect();
    let subs = [
        (
            "{ ['bootstrap.servers'] = 'localhost:9092' }".to_string(),
            format!("{{ {} }}", table.join(", ")),
        ),
        (
            "topic = 'my.topic'".to_string(),
            format!("topic = '{}'", kafka.topic),
        ),
        (
            "timeout = '1 minute'".to_string(),
            format!("timeout = '{send_timeout}'"),
        ),
        (
            "kumo.make_queue_config { protocol".to_string(),
            "kumo.make_queue_config { retry_interval = '1s', protocol".to_string(),
        ),
    ];
    let mut text = common::seed_section("c1-kafka-legacy.lua");
    for (from, to) in &subs {
        assert_eq!(text.matches(from.as_str()).count(), 1, "c1: {from:?}");
        text = text.replace(from.as_str(), to);
    }
    text
}

/// Send `count` messages to `user@kafka`; their Hermod ids.
async fn send(server: &Server, count: usize) -> HashSet<String> {
    let sent =
        smtp::send_messages(server.smtp_addr(), "user@kafka", &unique("tls"), count, 2).await;
    assert_eq!(sent.len(), count, "SMTP acceptance");
    sent.into_iter().map(|s| s.id).collect()
}

/// Wait until every id has a Delivery record; then the topic, read over
/// TLS, must hold each of them exactly once and nothing else.
async fn assert_delivered_once(
    server: &Server,
    kafka: &TlsKafka,
    ids: &HashSet<String>,
    reader: Vec<(&'static str, String)>,
) {
    server
        .wait_for_records(WAIT, "a Delivery per message", |r| {
            records_of(r, "Delivery", ids).len() >= ids.len()
        })
        .await;
    let mut seen: HashMap<String, usize> = HashMap::new();
    for id in kafka.message_ids(reader).await {
        *seen.entry(id).or_default() += 1;
    }
    let expected: HashMap<String, usize> = ids.iter().map(|id| (id.clone(), 1)).collect();
    assert_eq!(seen, expected, "records in {} (id -> copies)", kafka.topic);
}

/// The server's private key (`assert_no_secret` searches it line by line).
fn key_secrets(pki: &Pki) -> Vec<&str> {
    vec![pki.key_texts[0].as_str()]
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn messages_published_over_tls_arrive_in_the_topic_exactly_once() {
    let dir = tempfile::tempdir().expect("tempdir");
    let kafka = TlsKafka::start(dir.path(), None).await;
    let settings = kafka.client_settings(&kafka.pki.ca, None);
    let server = Server::start(&policy(&kafka, &settings, "1 minute")).await;
    let ids = send(&server, 5).await;
    assert_delivered_once(&server, &kafka, &ids, settings).await;
    let stunnel_log = std::fs::read_to_string(&kafka.stunnel.log).unwrap_or_default();
    assert!(
        stunnel_log.contains("accepted connection"),
        "the producer must have connected through stunnel:\n{stunnel_log}"
    );
    assert_no_secret(&server, &key_secrets(&kafka.pki));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_broker_certificate_from_an_untrusted_ca_is_a_transient_failure_naming_the_verify_error()
{
    let dir = tempfile::tempdir().expect("tempdir");
    let kafka = TlsKafka::start(dir.path(), None).await;
    let mut settings = kafka.client_settings(&kafka.untrusted_ca, None);
    // librdkafka reports the undeliverable record after 4 s, inside the
    // send's own 10 s limit.
    settings.push(("message.timeout.ms", "4000".into()));
    let server = Server::start(&policy(&kafka, &settings, "10s")).await;
    let reader = kafka.client_settings(&kafka.pki.ca, None);
    assert_refused_transiently(
        &server,
        "user@kafka",
        &["certificate verify failed"],
        2,
        WAIT,
    )
    .await;
    assert!(
        kafka.message_ids(reader).await.is_empty(),
        "nothing may reach {}",
        kafka.topic
    );
    assert_no_secret(&server, &key_secrets(&kafka.pki));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn scram_over_tls_with_the_right_password_delivers_each_message_once() {
    let dir = tempfile::tempdir().expect("tempdir");
    let password = unique("scram-password");
    let kafka = TlsKafka::start(dir.path(), Some(&password)).await;
    let settings = kafka.client_settings(&kafka.pki.ca, Some(&password));
    let server = Server::start(&policy(&kafka, &settings, "1 minute")).await;
    let ids = send(&server, 3).await;
    assert_delivered_once(&server, &kafka, &ids, settings).await;
    let mut secrets = key_secrets(&kafka.pki);
    secrets.push(&password);
    assert_no_secret(&server, &secrets);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_wrong_scram_password_is_a_transient_failure_naming_the_authentication_failure() {
    let dir = tempfile::tempdir().expect("tempdir");
    let password = unique("scram-password");
    let wrong = unique("not-the-password");
    let kafka = TlsKafka::start(dir.path(), Some(&password)).await;
    let mut settings = kafka.client_settings(&kafka.pki.ca, Some(&wrong));
    settings.push(("message.timeout.ms", "4000".into()));
    let server = Server::start(&policy(&kafka, &settings, "10s")).await;
    let reader = kafka.client_settings(&kafka.pki.ca, Some(&password));
    assert_refused_transiently(
        &server,
        "user@kafka",
        &["SASL authentication error"],
        2,
        WAIT,
    )
    .await;
    assert!(
        kafka.message_ids(reader).await.is_empty(),
        "nothing may reach {}",
        kafka.topic
    );
    let mut secrets = key_secrets(&kafka.pki);
    secrets.extend([password.as_str(), wrong.as_str()]);
    assert_no_secret(&server, &secrets);
}
