//! Brokers as operators run them: TLS with a private CA, and credentials.
//!
//! Each test starts its own broker (a `nats-server` from a configuration
//! file, or a private RabbitMQ node with only an `amqps` listener) using
//! certificates the test issues, then runs `hermod serve` with a policy that
//! publishes every message there. Correct settings deliver each message
//! exactly once; a wrong credential or a certificate from an untrusted CA
//! becomes a TransientFailure naming the broker and the reason, the message
//! stays queued, and Hermod keeps accepting mail. No password, token, key
//! seed, creds file or private key appears in Hermod's stderr (debug level) or local
//! log.

mod common;
mod support_crash;

use std::path::Path;
use std::time::Duration;

use async_nats::ConnectOptions;
use common::brokers::{NatsStreamReader, PrivateNats};
use common::nats_jwt::NatsOperator;
use common::pki::Pki;
use common::refusal::{assert_no_secret, assert_refused_transiently};
use common::{smtp, unique, Server, ServerConfig};
use lapin::options::BasicGetOptions;
use support_crash::amqp::{RabbitNode, RabbitTls};

const WAIT: Duration = Duration::from_secs(90);
const SUBJECT: &str = "tls.mail";

/// A policy whose every queue is delivered by the custom_lua constructor
/// `make.broker`, retried each second; `body` defines that constructor.
fn policy(body: &str) -> String {
    format!(
        r#"
kumo.on('get_queue_config', function(domain, tenant, campaign, routing_domain)
  return kumo.make_queue_config {{
    retry_interval = '1s', max_retry_interval = '1s',
    protocol = {{ custom_lua = {{ constructor = 'make.broker' }} }},
  }}
end)
{body}
"#
    )
}

/// `kumo.nats.connect` with `options` (Lua table fields after `servers`).
fn nats_policy(port: u16, options: &str) -> String {
    policy(&format!(
        r#"
kumo.on('make.broker', function(domain, tenant, campaign)
  local client = kumo.nats.connect {{
    servers = {{ 'nats://127.0.0.1:{port}' }}, connection_timeout = '5s', {options}
  }}
  local conn = {{}}
  function conn:send(msg)
    client:publish {{ subject = '{SUBJECT}', payload = msg:get_data() }}
    return '250 ok'
  end
  function conn:close() client:close() end
  return conn
end)
"#
    ))
}

async fn start(policy_text: String, env: &[(&str, &str)]) -> Server {
    let mut cfg = ServerConfig::with_p0(&policy_text).env("HERMOD_LOG", "debug");
    for (k, v) in env {
        cfg = cfg.env(k, v);
    }
    Server::launch(cfg).await
}

/// Send `n` messages and expect each in `reader` exactly once.
async fn assert_delivered_once(server: &Server, reader: &mut NatsStreamReader, n: usize) {
    let marker = unique("tls");
    let sent = smtp::send_messages(server.smtp_addr(), "user@broker.test", &marker, n, 1).await;
    let got = reader.collect(&marker, n, WAIT).await;
    assert_eq!(
        got.len(),
        sent.len(),
        "each accepted message must arrive exactly once; stderr:\n{}",
        server.stderr_tail()
    );
}

fn tls_block(pki: &Pki, verify_clients: bool) -> String {
    format!(
        "tls {{ cert_file: {:?}, key_file: {:?}, ca_file: {:?}, verify: {verify_clients} }}",
        pki.server_cert.display().to_string(),
        pki.server_key.display().to_string(),
        pki.ca.display().to_string(),
    )
}

/// The test's own client: TLS trusting `pki`'s CA, then `auth`.
fn trusting(pki: &Pki, auth: ConnectOptions) -> ConnectOptions {
    auth.require_tls(true).add_root_certificates(pki.ca.clone())
}

async fn nats_reader(nats: &PrivateNats, options: ConnectOptions) -> NatsStreamReader {
    let stream = nats.create_stream_as(options, "TLSMAIL", SUBJECT).await;
    NatsStreamReader::at_end_of(stream).await
}

fn lua_path(p: &Path) -> String {
    format!("'{}'", p.display())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nats_over_tls_with_a_password_delivers_once_and_never_shows_the_password() {
    let dir = tempfile::tempdir().expect("tempdir");
    let pki = Pki::new(dir.path(), "nats");
    let password = unique("pw-Secret");
    let nats = PrivateNats::start_with_config(&format!(
        "{}\nauthorization {{ user: hermod, password: {password:?} }}",
        tls_block(&pki, false)
    ))
    .await;
    let mut reader = nats_reader(
        &nats,
        trusting(
            &pki,
            ConnectOptions::with_user_and_password("hermod".into(), password.clone()),
        ),
    )
    .await;
    let server = start(
        nats_policy(
            nats.port,
            &format!(
                "tls_required = true, certificate = {}, auth = {{ username = {{ key_data = 'hermod' }}, password = {{ key_data = '{password}' }} }}",
                lua_path(&pki.ca)
            ),
        ),
        &[],
    )
    .await;
    assert_delivered_once(&server, &mut reader, 3).await;
    assert_no_secret(&server, &[&password, &pki.key_texts[0], &pki.key_texts[1]]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nats_over_tls_with_a_token_file_delivers_once_and_never_shows_the_token() {
    let dir = tempfile::tempdir().expect("tempdir");
    let pki = Pki::new(dir.path(), "nats");
    let token = unique("tok-Secret");
    let token_file = dir.path().join("nats.token");
    std::fs::write(&token_file, &token).expect("writing the token file");
    let nats = PrivateNats::start_with_config(&format!(
        "{}\nauthorization {{ token: {token:?} }}",
        tls_block(&pki, false)
    ))
    .await;
    let mut reader = nats_reader(
        &nats,
        trusting(&pki, ConnectOptions::with_token(token.clone())),
    )
    .await;
    let server = start(
        nats_policy(
            nats.port,
            &format!(
                "tls_required = true, certificate = {}, auth = {{ token = {} }}",
                lua_path(&pki.ca),
                lua_path(&token_file)
            ),
        ),
        &[],
    )
    .await;
    assert_delivered_once(&server, &mut reader, 3).await;
    assert_no_secret(&server, &[&token]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nats_with_an_nkey_and_a_client_certificate_delivers_once() {
    let dir = tempfile::tempdir().expect("tempdir");
    let pki = Pki::new(dir.path(), "nats");
    let user = nkeys::KeyPair::new_user();
    let seed = user.seed().expect("nkey seed");
    // `verify: true`: the server refuses a client without a certificate
    // from the CA, so delivery proves Hermod presented its client_cert.
    let nats = PrivateNats::start_with_config(&format!(
        "{}\nauthorization {{ users: [ {{ nkey: {:?} }} ] }}",
        tls_block(&pki, true),
        user.public_key()
    ))
    .await;
    let mut reader = nats_reader(
        &nats,
        trusting(&pki, ConnectOptions::with_nkey(seed.clone()))
            .add_client_certificate(pki.client_cert.clone(), pki.client_key.clone()),
    )
    .await;
    let server = start(
        nats_policy(
            nats.port,
            &format!(
                "tls_required = true, certificate = {}, client_cert = {}, client_key = {}, auth = {{ nkey = {{ key_data = '{seed}' }} }}",
                lua_path(&pki.ca),
                lua_path(&pki.client_cert),
                lua_path(&pki.client_key)
            ),
        ),
        &[],
    )
    .await;
    assert_delivered_once(&server, &mut reader, 3).await;
    assert_no_secret(&server, &[&seed, &pki.key_texts[1]]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nats_over_tls_with_an_operator_issued_creds_file_delivers_once() {
    let dir = tempfile::tempdir().expect("tempdir");
    let pki = Pki::new(dir.path(), "nats");
    let operator = NatsOperator::new(dir.path());
    let nats = PrivateNats::start_with_config(&format!(
        "{}\n{}",
        tls_block(&pki, false),
        operator.server_config
    ))
    .await;
    let own = ConnectOptions::with_credentials(&operator.creds).expect("parsing the creds file");
    let mut reader = nats_reader(&nats, trusting(&pki, own)).await;
    let server = start(
        nats_policy(
            nats.port,
            &format!(
                "tls_required = true, certificate = {}, auth = {{ credentials_file = {} }}",
                lua_path(&pki.ca),
                lua_path(&operator.creds_file)
            ),
        ),
        &[],
    )
    .await;
    assert_delivered_once(&server, &mut reader, 3).await;
    assert_no_secret(&server, &[&operator.user_seed]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nats_wrong_password_is_a_transient_failure_naming_the_server_and_authorization() {
    let dir = tempfile::tempdir().expect("tempdir");
    let pki = Pki::new(dir.path(), "nats");
    let nats = PrivateNats::start_with_config(&format!(
        "{}\nauthorization {{ user: hermod, password: \"the-right-one\" }}",
        tls_block(&pki, false)
    ))
    .await;
    let wrong = unique("wrong-Secret");
    let server = start(
        nats_policy(
            nats.port,
            &format!(
                "tls_required = true, certificate = {}, auth = {{ username = {{ key_data = 'hermod' }}, password = {{ key_data = '{wrong}' }} }}",
                lua_path(&pki.ca)
            ),
        ),
        &[],
    )
    .await;
    let target = format!("127.0.0.1:{}", nats.port);
    assert_refused_transiently(
        &server,
        "user@broker.test",
        &[&target, "authorization"],
        2,
        WAIT,
    )
    .await;
    assert_no_secret(&server, &[&wrong]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nats_server_certificate_from_an_untrusted_ca_is_a_transient_failure() {
    let dir = tempfile::tempdir().expect("tempdir");
    let pki = Pki::new(dir.path(), "nats");
    let stranger = Pki::new(dir.path(), "stranger");
    let nats = PrivateNats::start_with_config(&tls_block(&pki, false)).await;
    let server = start(
        nats_policy(
            nats.port,
            &format!(
                "tls_required = true, certificate = {}",
                lua_path(&stranger.ca)
            ),
        ),
        &[],
    )
    .await;
    let target = format!("127.0.0.1:{}", nats.port);
    assert_refused_transiently(
        &server,
        "user@broker.test",
        &[&target, "certificate"],
        2,
        WAIT,
    )
    .await;
}

// ---- RabbitMQ ----

/// `kumo.amqp.build_client(uri)` publishing to `queue` (seed B1's shape).
fn amqp_uri_policy(uri: &str, queue: &str) -> String {
    policy(&format!(
        r#"
kumo.on('make.broker', function(domain, tenant, campaign)
  local client = kumo.amqp.build_client '{uri}'
  local conn = {{}}
  function conn:send(msg)
    local r = client:publish({{ routing_key = '{queue}', payload = msg:get_data() }}):wait()
    if r.status == 'Ack' then return '250 ok' end
    kumo.reject(400, kumo.json_encode(r))
  end
  function conn:close() client:close() end
  return conn
end)
"#
    ))
}

/// `kumo.amqp.basic_publish` with `connection` fields (after host/port).
fn basic_publish_policy(port: u16, queue: &str, connection: &str) -> String {
    policy(&format!(
        r#"
kumo.on('make.broker', function(domain, tenant, campaign)
  local conn = {{}}
  function conn:send(msg)
    kumo.amqp.basic_publish {{
      routing_key = '{queue}', payload = msg:get_data(),
      connection = {{ host = '127.0.0.1', port = {port}, enable_tls = true, {connection} }},
    }}
    return '250 ok'
  end
  function conn:close() end
  return conn
end)
"#
    ))
}

/// Payloads in the node's queue that contain `marker` (consumes the queue:
/// other markers' messages are returned to the caller's count too).
async fn rabbit_copies(node: &RabbitNode, seen: &mut Vec<Vec<u8>>) {
    let (_conn, ch) = node.channel().await.expect("a test connection to the node");
    while let Ok(Some(m)) = ch
        .basic_get(node.queue.as_str().into(), BasicGetOptions { no_ack: true })
        .await
    {
        seen.push(m.delivery.data.clone());
    }
}

async fn assert_rabbit_delivered_once(server: &Server, node: &RabbitNode, seen: &mut Vec<Vec<u8>>) {
    let marker = unique("amqps");
    let n = 3;
    smtp::send_messages(server.smtp_addr(), "user@broker.test", &marker, n, 1).await;
    let count = |seen: &Vec<Vec<u8>>| {
        seen.iter()
            .filter(|p| p.windows(marker.len()).any(|w| w == marker.as_bytes()))
            .count()
    };
    let deadline = std::time::Instant::now() + WAIT;
    while count(seen) < n && std::time::Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(250)).await;
        rabbit_copies(node, seen).await;
    }
    tokio::time::sleep(common::brokers::SETTLE).await;
    rabbit_copies(node, seen).await;
    assert_eq!(
        count(seen),
        n,
        "each accepted message must arrive exactly once; stderr:\n{}",
        server.stderr_tail()
    );
}

fn rabbit_tls(pki: &Pki, password: &str, mutual: bool) -> RabbitTls {
    RabbitTls {
        ca: pki.ca.clone(),
        cert: pki.server_cert.clone(),
        key: pki.server_key.clone(),
        user: "hermod".into(),
        password: password.into(),
        client: mutual.then(|| (pki.client_cert.clone(), pki.client_key.clone())),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn amqps_delivers_with_password_and_ca_and_refuses_a_wrong_password_or_an_untrusted_ca() {
    let dir = tempfile::tempdir().expect("tempdir");
    let pki = Pki::new(dir.path(), "rabbit");
    let stranger = Pki::new(dir.path(), "stranger");
    let password = unique("pw-Secret");
    let node = RabbitNode::start_with(dir.path(), Some(rabbit_tls(&pki, &password, false))).await;
    let port = node.daemon.addr.port();
    let queue = node.queue.clone();
    let ca = pki.ca.display().to_string();

    // build_client with an amqps:// URI: the CA reaches it the way it
    // reaches any rustls client, through the system root store (SSL_CERT_FILE).
    let uri_server = start(
        amqp_uri_policy(
            &format!("amqps://hermod:{password}@127.0.0.1:{port}/%2f"),
            &queue,
        ),
        &[("SSL_CERT_FILE", &ca)],
    )
    .await;
    // basic_publish with root_ca_cert.
    let publish_server = start(
        basic_publish_policy(
            port,
            &queue,
            &format!("username = 'hermod', password = '{password}', root_ca_cert = '{ca}'"),
        ),
        &[],
    )
    .await;
    let mut seen = Vec::new();
    assert_rabbit_delivered_once(&uri_server, &node, &mut seen).await;
    assert_rabbit_delivered_once(&publish_server, &node, &mut seen).await;

    let wrong = unique("wrong-Secret");
    let wrong_password = start(
        basic_publish_policy(
            port,
            &queue,
            &format!("username = 'hermod', password = '{wrong}', root_ca_cert = '{ca}'"),
        ),
        &[],
    )
    .await;
    let untrusted = start(
        basic_publish_policy(
            port,
            &queue,
            &format!(
                "username = 'hermod', password = '{password}', root_ca_cert = '{}'",
                stranger.ca.display()
            ),
        ),
        &[],
    )
    .await;
    let target = format!("127.0.0.1:{port}");
    assert_refused_transiently(
        &wrong_password,
        "user@broker.test",
        &[&target, "ACCESS_REFUSED"],
        2,
        WAIT,
    )
    .await;
    assert_refused_transiently(
        &untrusted,
        "user@broker.test",
        &[&target, "certificate"],
        2,
        WAIT,
    )
    .await;

    for server in [&uri_server, &publish_server, &wrong_password, &untrusted] {
        assert_no_secret(server, &[&password, &wrong, &pki.key_texts[0]]);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn amqps_mutual_tls_delivers_only_when_basic_publish_presents_the_client_certificate() {
    let dir = tempfile::tempdir().expect("tempdir");
    let pki = Pki::new(dir.path(), "rabbit");
    let password = unique("pw-Secret");
    let node = RabbitNode::start_with(dir.path(), Some(rabbit_tls(&pki, &password, true))).await;
    let port = node.daemon.addr.port();
    let queue = node.queue.clone();
    let auth = format!(
        "username = 'hermod', password = '{password}', root_ca_cert = '{}'",
        pki.ca.display()
    );
    let with_cert = start(
        basic_publish_policy(
            port,
            &queue,
            &format!(
                "{auth}, client_cert = '{}', client_private_key = '{}'",
                pki.client_cert.display(),
                pki.client_key.display()
            ),
        ),
        &[],
    )
    .await;
    let without_cert = start(basic_publish_policy(port, &queue, &auth), &[]).await;
    let mut seen = Vec::new();
    assert_rabbit_delivered_once(&with_cert, &node, &mut seen).await;
    let target = format!("127.0.0.1:{port}");
    // TLS 1.3 sends the client's (missing) certificate after the client
    // considers the handshake done, so the refusal arrives either as the
    // server's alert or, when it closes first, as a reset.
    assert_refused_transiently(
        &without_cert,
        "user@broker.test",
        &[&target, "CertificateRequired|Connection reset by peer"],
        2,
        WAIT,
    )
    .await;
    for server in [&with_cert, &without_cert] {
        assert_no_secret(server, &[&password, &pki.key_texts[1]]);
    }
}
