//! Log hooks through the real binary: every record of injected mail reaches
//! a broker (NATS JetStream, an HTTP webhook) exactly once, byte-for-byte the
//! local record; the hook messages' own records stay local.

mod common;
mod support_durability;

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use async_nats::jetstream;
use serde_json::Value;
use support_durability::{inject, rid, rtype, unique, wait_logs, Server, PRELUDE};

const NATS: &str = "127.0.0.1:4222";

/// Mail goes to a Maildir; the NATS client lives in a global set in `init`.
fn mail_to_maildir() -> &'static str {
    r#"
local SUBJECT = os.getenv 'HOOK_SUBJECT'
kumo.on('init', function()
  nats = kumo.nats.connect { servers = { '127.0.0.1:4222' } }
end)
"#
}

const CATCH_ALL: &str = r#"
kumo.on('get_queue_config', function(domain, tenant, campaign, routing_domain)
  if domain == 'nats' then
    return kumo.make_queue_config { protocol = { custom_lua = { constructor = 'make.nats' } } }
  end
  return kumo.make_queue_config { protocol = { maildir_path = DIR .. '/maildir' } }
end)
"#;

/// D1's hook shape, publishing the hook queue to a private subject.
fn d1_policy() -> String {
    format!(
        "{PRELUDE}{}{CATCH_ALL}{}",
        mail_to_maildir(),
        r#"
kumo.on('make.nats', function(domain, tenant, campaign)
  local conn = {}
  function conn:send(msg)
    nats:publish { subject = SUBJECT, payload = msg:get_data() }
    return '250 ok'
  end
  function conn:close() end
  return conn
end)
kumo.on('pre_init', function()
  kumo.configure_log_hook { name = 'events' }
end)
kumo.on('should_enqueue_log_record', function(msg, hook_name)
  if hook_name ~= 'events' then return end
  msg:set_meta('queue', 'nats')
  return true
end)
"#
    )
}

/// The `policy-extras.log_hooks` helper with batches of up to 50 records,
/// each batch published as one JSON array of the records.
fn batched_policy() -> String {
    format!(
        "{PRELUDE}{}{}{CATCH_ALL}",
        mail_to_maildir(),
        r#"
local log_hooks = require 'policy-extras.log_hooks'
log_hooks:new {
  name = 'batched',
  batch_size = 50,
  max_batch_latency = '500ms',
  constructor = function(domain, tenant, campaign)
    local conn = {}
    function conn:send_batch(msgs)
      local records = {}
      for _, m in ipairs(msgs) do
        table.insert(records, m:get_meta 'log_record')
      end
      nats:publish { subject = SUBJECT, payload = kumo.json_encode(records) }
      return '250 ok'
    end
    function conn:close() end
    return conn
  end,
}
"#
    )
}

/// A private stream capturing one unique subject; deleted on drop.
struct PrivateStream {
    js: jetstream::Context,
    name: String,
    subject: String,
}

impl PrivateStream {
    async fn create(prefix: &str) -> PrivateStream {
        let name = unique(prefix).to_uppercase();
        let subject = format!("hermod.e2e.{}", name.to_lowercase());
        let client = async_nats::connect(NATS).await.expect("connect to NATS");
        let js = jetstream::new(client);
        js.create_stream(jetstream::stream::Config {
            name: name.clone(),
            subjects: vec![subject.clone()],
            max_age: Duration::from_secs(600),
            ..Default::default()
        })
        .await
        .expect("create stream");
        PrivateStream { js, name, subject }
    }

    async fn count(&self) -> u64 {
        let mut s = self.js.get_stream(&self.name).await.expect("get stream");
        s.info().await.expect("stream info").state.messages
    }

    /// Every payload in the stream, in order.
    async fn payloads(&self) -> Vec<Vec<u8>> {
        let s = self.js.get_stream(&self.name).await.expect("get stream");
        let n = self.count().await;
        let mut out = Vec::new();
        for seq in 1..=n {
            let m = s.get_raw_message(seq).await.expect("stream message");
            out.push(m.payload.to_vec());
        }
        out
    }

    async fn delete(self) {
        let _ = self.js.delete_stream(&self.name).await;
    }
}

fn key(r: &Value) -> (String, String) {
    (rtype(r).to_string(), rid(r).to_string())
}

/// `v` with every null-valued object member removed, recursively.
fn without_nulls(v: &Value) -> Value {
    match v {
        Value::Object(m) => Value::Object(
            m.iter()
                .filter(|(_, x)| !x.is_null())
                .map(|(k, x)| (k.clone(), without_nulls(x)))
                .collect(),
        ),
        Value::Array(a) => Value::Array(a.iter().map(without_nulls).collect()),
        other => other.clone(),
    }
}

fn is_hook(r: &Value) -> bool {
    r["reception_protocol"] == "LogRecord"
}

/// Local records of ordinary mail: exactly a Reception and a Delivery per id.
fn mail_records(recs: &[Value], ids: &HashSet<String>) -> HashMap<(String, String), Value> {
    let mut out = HashMap::new();
    for r in recs.iter().filter(|r| !is_hook(r)) {
        let prev = out.insert(key(r), r.clone());
        assert!(prev.is_none(), "duplicate local record {:?}", key(r));
    }
    let want: HashSet<_> = ids
        .iter()
        .flat_map(|id| {
            [
                ("Reception".to_string(), id.clone()),
                ("Delivery".to_string(), id.clone()),
            ]
        })
        .collect();
    let got: HashSet<_> = out.keys().cloned().collect();
    assert_eq!(got, want, "local records of the injected mail");
    out
}

/// Wait until the hook delivered `n` records (its own Delivery records).
async fn wait_hook_deliveries(server: &Server, n: usize) -> Vec<Value> {
    wait_logs(
        server,
        Duration::from_secs(40),
        "hook messages delivered",
        |recs| {
            recs.iter()
                .filter(|r| is_hook(r) && rtype(r) == "Delivery")
                .count()
                >= n
        },
    )
    .await
}

/// The hook's own records are local only: no Reception, and none of them
/// was fed back into a hook.
fn assert_hook_records_local_only(recs: &[Value], published: &[Value]) {
    assert!(
        !recs.iter().any(|r| is_hook(r) && rtype(r) == "Reception"),
        "hook messages get no Reception record"
    );
    assert!(
        !published.iter().any(is_hook),
        "a hook message's own record was published"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn d1_hook_publishes_each_record_once_as_the_local_json_line() {
    let stream = PrivateStream::create("D1").await;
    let tmp = tempfile::tempdir().unwrap();
    let mut server = Server::start(
        tmp.path(),
        &d1_policy(),
        &[("HOOK_SUBJECT", &stream.subject)],
    );
    let ids: HashSet<String> = inject(server.smtp, "user@example.com", 100, "d1")
        .await
        .into_iter()
        .collect();
    let recs = wait_hook_deliveries(&server, 200).await;
    let local = mail_records(&recs, &ids);

    // Publishes are acked before Delivery is logged; the count must be exact.
    assert_eq!(stream.count().await, 200, "one publish per record");
    let mut published = Vec::new();
    for p in stream.payloads().await {
        assert_eq!(p.last(), Some(&b'\n'), "payload ends with a newline");
        assert_eq!(
            p.iter().filter(|b| **b == b'\n').count(),
            1,
            "one JSON line per payload"
        );
        let v: Value = serde_json::from_slice(&p).expect("payload is JSON");
        let l = local
            .get(&key(&v))
            .unwrap_or_else(|| panic!("published record {:?} is not a local record", key(&v)));
        assert_eq!(&v, l, "published record equals the local one");
        published.push(v);
    }
    let keys: HashSet<_> = published.iter().map(key).collect();
    assert_eq!(keys.len(), 200, "no record published twice");
    assert_hook_records_local_only(&recs, &published);
    assert!(server.sigterm().success());
    stream.delete().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn log_hooks_helper_batches_records_without_loss() {
    let stream = PrivateStream::create("BATCH").await;
    let tmp = tempfile::tempdir().unwrap();
    let mut server = Server::start(
        tmp.path(),
        &batched_policy(),
        &[("HOOK_SUBJECT", &stream.subject)],
    );
    let ids: HashSet<String> = inject(server.smtp, "user@example.com", 100, "batch")
        .await
        .into_iter()
        .collect();
    let recs = wait_hook_deliveries(&server, 200).await;
    let local = mail_records(&recs, &ids);

    let mut published = Vec::new();
    let payloads = stream.payloads().await;
    for p in &payloads {
        let arr: Vec<Value> = serde_json::from_slice(p).expect("a JSON array");
        assert!(
            (1..=50).contains(&arr.len()),
            "batch of {} records",
            arr.len()
        );
        published.extend(arr);
    }
    assert_eq!(published.len(), 200, "array lengths add up to the records");
    for v in &published {
        let l = local
            .get(&key(v))
            .unwrap_or_else(|| panic!("published record {:?} is not a local record", key(v)));
        // The record went through a Lua table, where a JSON null is nil.
        assert_eq!(
            without_nulls(v),
            without_nulls(l),
            "published record equals the local one"
        );
    }
    let keys: HashSet<_> = published.iter().map(key).collect();
    assert_eq!(keys.len(), 200, "no record published twice");
    assert!(
        payloads.len() < 200,
        "records were batched: {} publishes",
        payloads.len()
    );
    assert_hook_records_local_only(&recs, &published);
    assert!(server.sigterm().success());
    stream.delete().await;
}

/// Seed D2 from `examples/` unchanged except that the webhook queue retries
/// after 1 s (so a 5xx is retried quickly) and other mail goes to a Maildir
/// (so it has Delivery records to report). Each substitution must match
/// exactly once, so a changed example fails here instead of going untested.
fn d2_policy() -> String {
    let mut scenario = common::seed_section("d2-log-events-webhook.lua");
    for (from, to) in [
        (
            "kumo.make_queue_config { protocol = { custom_lua = { constructor = 'make.webhook' } } }",
            "kumo.make_queue_config { retry_interval = '1s', max_retry_interval = '1s', \
             protocol = { custom_lua = { constructor = 'make.webhook' } } }",
        ),
        (
            "  return kumo.make_queue_config {}\n",
            "  return kumo.make_queue_config { protocol = { maildir_path = DIR .. '/maildir' } }\n",
        ),
    ] {
        assert_eq!(scenario.matches(from).count(), 1, "examples/d2: {from:?}");
        scenario = scenario.replace(from, to);
    }
    format!("{PRELUDE}{scenario}")
}

/// A webhook receiver on a free loopback port: answers 503 to the first
/// `fail_first` POSTs, then 200, keeping the bodies it accepted.
struct Receiver {
    url: String,
    accepted: Arc<Mutex<Vec<Vec<u8>>>>,
    refused: Arc<Mutex<usize>>,
    task: tokio::task::JoinHandle<()>,
}

impl Receiver {
    async fn start(fail_first: usize) -> Receiver {
        use axum::http::{HeaderMap, StatusCode};
        let accepted = Arc::new(Mutex::new(Vec::new()));
        let refused = Arc::new(Mutex::new(0usize));
        let (a, r) = (accepted.clone(), refused.clone());
        let app = axum::Router::new().route(
            "/events",
            axum::routing::post(move |headers: HeaderMap, body: axum::body::Bytes| {
                let (a, r) = (a.clone(), r.clone());
                async move {
                    let json = headers
                        .get("content-type")
                        .is_some_and(|v| v.as_bytes() == b"application/json");
                    if !json {
                        return (StatusCode::UNSUPPORTED_MEDIA_TYPE, "need json");
                    }
                    {
                        let mut n = r.lock().unwrap();
                        if *n < fail_first {
                            *n += 1;
                            return (StatusCode::SERVICE_UNAVAILABLE, "try later");
                        }
                    }
                    a.lock().unwrap().push(body.to_vec());
                    (StatusCode::OK, "stored")
                }
            }),
        );
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}/events", listener.local_addr().unwrap());
        let task = tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        Receiver {
            url,
            accepted,
            refused,
            task,
        }
    }
}

impl Drop for Receiver {
    fn drop(&mut self) {
        self.task.abort();
    }
}

async fn webhook_run(messages: usize, fail_first: usize) {
    let receiver = Receiver::start(fail_first).await;
    let tmp = tempfile::tempdir().unwrap();
    let mut server = Server::start(tmp.path(), &d2_policy(), &[("WEBHOOK_URL", &receiver.url)]);
    let ids: HashSet<String> = inject(server.smtp, "user@example.com", messages, "d2")
        .await
        .into_iter()
        .collect();
    let recs = wait_hook_deliveries(&server, 2 * messages).await;
    let local = mail_records(&recs, &ids);

    let bodies = receiver.accepted.lock().unwrap().clone();
    assert_eq!(bodies.len(), 2 * messages, "one accepted POST per record");
    let mut published = Vec::new();
    for b in &bodies {
        assert_eq!(b.last(), Some(&b'\n'), "body is one JSON line");
        let v: Value = serde_json::from_slice(b).expect("JSON body");
        assert_eq!(
            local.get(&key(&v)),
            Some(&v),
            "POSTed record equals the local one"
        );
        published.push(v);
    }
    let keys: HashSet<_> = published.iter().map(key).collect();
    assert_eq!(keys.len(), 2 * messages, "no record POSTed twice");
    assert_hook_records_local_only(&recs, &published);

    let refused = *receiver.refused.lock().unwrap();
    assert_eq!(refused, fail_first, "503 answers given");
    let retried = recs
        .iter()
        .filter(|r| is_hook(r) && rtype(r) == "TransientFailure")
        .filter(|r| r["response"]["code"] == 451)
        .count();
    assert_eq!(retried, fail_first, "each 503 is a TransientFailure 451");
    assert!(server.sigterm().success());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn d2_webhook_receives_each_record_once_as_the_local_json_line() {
    webhook_run(100, 0).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn d2_webhook_503_is_retried_until_accepted_without_loss() {
    let started = Instant::now();
    webhook_run(20, 5).await;
    assert!(started.elapsed() < Duration::from_secs(60));
}

/// D1's hook shape with the hook queue published to a private RabbitMQ
/// queue (B2's connection-object form, confirms awaited).
fn amqp_policy() -> String {
    format!(
        "{PRELUDE}{}",
        r#"
local QUEUE = os.getenv 'HOOK_QUEUE'
kumo.on('get_queue_config', function(domain, tenant, campaign, routing_domain)
  if domain == 'amqp' then
    return kumo.make_queue_config { protocol = { custom_lua = { constructor = 'make.amqp' } } }
  end
  return kumo.make_queue_config { protocol = { maildir_path = DIR .. '/maildir' } }
end)
kumo.on('make.amqp', function(domain, tenant, campaign)
  local client = kumo.amqp.build_client 'amqp://127.0.0.1'
  local conn = {}
  function conn:send(msg)
    local r = client:publish({ routing_key = QUEUE, payload = msg:get_data() }):wait()
    if r.status == 'Ack' or r.status == 'NotRequested' then return '250 ok' end
    kumo.reject(500, kumo.json_encode(r))
  end
  function conn:close() client:close() end
  return conn
end)
kumo.on('pre_init', function()
  kumo.configure_log_hook { name = 'events' }
end)
kumo.on('should_enqueue_log_record', function(msg, hook_name)
  if hook_name ~= 'events' then return end
  msg:set_meta('queue', 'amqp')
  return true
end)
"#
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn amqp_hook_publishes_each_record_once_as_the_local_json_line() {
    use lapin::options::{BasicGetOptions, QueueDeclareOptions, QueueDeleteOptions};
    use lapin::types::FieldTable;
    let conn = lapin::Connection::connect(
        "amqp://guest:guest@127.0.0.1:5672/%2f",
        lapin::ConnectionProperties::default(),
    )
    .await
    .expect("connect to RabbitMQ");
    let channel = conn.create_channel().await.expect("AMQP channel");
    let queue = unique("hermod.e2e.hook");
    channel
        .queue_declare(
            queue.as_str().into(),
            QueueDeclareOptions::default(),
            FieldTable::default(),
        )
        .await
        .expect("declare the private queue");

    let tmp = tempfile::tempdir().unwrap();
    let mut server = Server::start(tmp.path(), &amqp_policy(), &[("HOOK_QUEUE", &queue)]);
    let ids: HashSet<String> = inject(server.smtp, "user@example.com", 100, "amqp")
        .await
        .into_iter()
        .collect();
    let recs = wait_hook_deliveries(&server, 200).await;
    let local = mail_records(&recs, &ids);
    assert!(server.sigterm().success());

    // Confirms were awaited before Delivery was logged: everything is queued.
    let mut published = Vec::new();
    while let Some(m) = channel
        .basic_get(queue.as_str().into(), BasicGetOptions { no_ack: true })
        .await
        .expect("basic_get")
    {
        let p = &m.delivery.data;
        assert_eq!(p.last(), Some(&b'\n'), "payload ends with a newline");
        let v: Value = serde_json::from_slice(p).expect("payload is JSON");
        assert_eq!(
            local.get(&key(&v)),
            Some(&v),
            "published record equals the local one"
        );
        published.push(v);
    }
    assert_eq!(published.len(), 200, "one publish per record");
    let keys: HashSet<_> = published.iter().map(key).collect();
    assert_eq!(keys.len(), 200, "no record published twice");
    assert_hook_records_local_only(&recs, &published);
    let _ = channel
        .queue_delete(queue.as_str().into(), QueueDeleteOptions::default())
        .await;
}

/// Two helper hooks: every record becomes one message per hook, and each
/// message is delivered through its own hook's queue, never the other's.
fn two_hooks_policy() -> String {
    let hook = |name: &str| {
        format!(
            r#"
log_hooks:new {{
  name = '{name}',
  batch_size = 10,
  max_batch_latency = '50ms',
  constructor = function(domain, tenant, campaign)
    local conn = {{}}
    function conn:send_batch(msgs) return '250 ok' end
    function conn:close() end
    return conn
  end,
}}
"#
        )
    };
    format!(
        "{PRELUDE}{}\nlocal log_hooks = require 'policy-extras.log_hooks'\n{}{}{CATCH_ALL}",
        mail_to_maildir(),
        hook("alpha"),
        hook("beta"),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_helper_hook_delivers_its_records_through_its_own_queue() {
    let tmp = tempfile::tempdir().unwrap();
    let mut server = Server::start(
        tmp.path(),
        &two_hooks_policy(),
        &[("HOOK_SUBJECT", "unused")],
    );
    let mails = 20;
    inject(server.smtp, "user@example.com", mails, "two-hooks").await;
    // Reception and Delivery of each mail, once per hook.
    let recs = wait_hook_deliveries(&server, mails * 2 * 2).await;
    let mut per_queue: HashMap<String, usize> = HashMap::new();
    for r in recs.iter().filter(|r| is_hook(r) && rtype(r) == "Delivery") {
        let queue = r["queue"].as_str().unwrap_or_default().to_string();
        *per_queue.entry(queue).or_default() += 1;
    }
    let want: HashMap<String, usize> = [
        ("alpha.log_hook".to_string(), mails * 2),
        ("beta.log_hook".to_string(), mails * 2),
    ]
    .into();
    assert_eq!(per_queue, want, "hook deliveries per queue");
    assert!(server.sigterm().success());
}
