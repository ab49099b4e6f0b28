//! Failure paths of `custom_lua` delivery (ARCHITECTURE.md steps 7 and 8) through the
//! real `hermod` binary: bounces, transient failures and retries, expiry,
//! a broker restart in the middle of a run, and a retry that outlives a
//! Hermod restart. Each test uses its own tempdir, ports and broker objects.

mod common;

use std::collections::{HashMap, HashSet};
use std::time::Duration;

use common::brokers::{PrivateNats, AMQP_URI};
use common::{records_of, smtp, unique, Server, ServerConfig};
use lapin::options::{QueueDeclareOptions, QueueDeleteOptions};
use lapin::types::{AMQPValue, FieldTable, ShortString};
use serde_json::Value;

const WAIT: Duration = Duration::from_secs(30);

/// `get_queue_config` sending domain `test` through constructor `make.test`
/// with a fast retry schedule, plus the given constructor body.
fn scenario(queue_extra: &str, constructor: &str) -> String {
    format!(
        r#"
kumo.on('get_queue_config', function(domain, tenant, campaign, routing_domain)
  if domain == 'test' then
    return kumo.make_queue_config {{
      retry_interval = '1s', max_retry_interval = '2s', {queue_extra}
      protocol = {{ custom_lua = {{ constructor = 'make.test' }} }},
    }}
  end
  return kumo.make_queue_config {{}}
end)
kumo.on('make.test', function(domain, tenant, campaign)
{constructor}
end)
"#
    )
}

async fn inject(server: &Server, count: usize) -> HashSet<String> {
    let marker = unique("delivery");
    smtp::send_messages(server.smtp_addr(), "user@test", &marker, count, 1)
        .await
        .into_iter()
        .map(|s| s.id)
        .collect()
}

/// Records for `ids` by id, in log order.
fn by_id<'a>(records: &'a [Value], ids: &HashSet<String>) -> HashMap<&'a str, Vec<&'a Value>> {
    let mut m: HashMap<&str, Vec<&Value>> = HashMap::new();
    for r in records {
        if let Some(id) = r["id"].as_str().filter(|id| ids.contains(*id)) {
            m.entry(id).or_default().push(r);
        }
    }
    m
}

fn kinds(rs: &[&Value]) -> Vec<String> {
    rs.iter()
        .map(|r| r["type"].as_str().unwrap_or("?").to_string())
        .collect()
}

/// Stop, start again on the same data dir, and return how many messages the
/// new process found in the spool.
async fn spooled_after_restart(server: &mut Server) -> usize {
    server.restart().await;
    *server
        .enumerated_per_start()
        .last()
        .expect("no 'spool enumerated' line in stderr")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reject_500_in_send_logs_bounce_and_removes_the_message_from_the_spool() {
    let mut server = Server::start(&scenario(
        "",
        r#"
  local conn = {}
  function conn:send(msg) kumo.reject(500, 'permanently refused by test') end
  return conn"#,
    ))
    .await;
    let ids = inject(&server, 3).await;
    let records = server
        .wait_for_records(WAIT, "3 Bounce records", |r| {
            records_of(r, "Bounce", &ids).len() == 3
        })
        .await;
    for (id, rs) in by_id(&records, &ids) {
        assert_eq!(kinds(&rs), ["Reception", "Bounce"], "{id}");
        let b = rs[1];
        assert_eq!(b["response"]["code"], 500, "{b}");
        assert_eq!(
            b["response"]["content"], "permanently refused by test",
            "{b}"
        );
        assert_eq!(b["delivery_protocol"], "Lua", "{b}");
    }
    assert_eq!(
        spooled_after_restart(&mut server).await,
        0,
        "bounced messages must be gone from the spool"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_delivered_send_batch_removes_every_message_of_the_batch_from_the_spool() {
    let mut server = Server::start(&scenario(
        "",
        r#"
  local conn = {}
  function conn:send_batch(msgs) return '250 took ' .. #msgs end
  return conn"#,
    )
    .replace(
        "custom_lua = { constructor = 'make.test' }",
        "custom_lua = { constructor = 'make.test', batch_size = 10, max_batch_latency = '500ms' }",
    ))
    .await;
    let ids = inject(&server, 6).await;
    let records = server
        .wait_for_records(WAIT, "6 Delivery records", |r| {
            records_of(r, "Delivery", &ids).len() == 6
        })
        .await;
    for (id, rs) in by_id(&records, &ids) {
        assert_eq!(kinds(&rs), ["Reception", "Delivery"], "{id}");
        assert!(
            rs[1]["response"]["content"]
                .as_str()
                .is_some_and(|c| c.starts_with("250 took ")),
            "{}",
            rs[1]
        );
    }
    assert_eq!(
        spooled_after_restart(&mut server).await,
        0,
        "delivered messages must be gone from the spool"
    );
}

/// RabbitMQ answers a publish with `basic.nack` when the target queue has
/// `x-overflow = reject-publish` and is at `x-max-length` (here 0): a genuine
/// broker Nack, which the B2 shape turns into `kumo.reject(500, json)`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn amqp_nack_from_a_full_reject_publish_queue_logs_bounce_500() {
    let conn = lapin::Connection::connect(AMQP_URI, lapin::ConnectionProperties::default())
        .await
        .expect("connecting to RabbitMQ");
    let channel = conn.create_channel().await.expect("AMQP channel");
    let queue = unique("hermod_e2e_full");
    let mut args = FieldTable::default();
    args.insert(ShortString::from("x-max-length"), AMQPValue::LongInt(0));
    args.insert(
        ShortString::from("x-overflow"),
        AMQPValue::LongString("reject-publish".into()),
    );
    channel
        .queue_declare(queue.as_str().into(), QueueDeclareOptions::default(), args)
        .await
        .expect("declaring the full queue");

    let server = Server::launch(
        ServerConfig::with_p0(&scenario(
            "",
            r#"
  local client = kumo.amqp.build_client 'amqp://localhost'
  local conn = {}
  function conn:send(msg)
    local r = client:publish({ routing_key = os.getenv 'TEST_QUEUE', payload = msg:get_data() }):wait()
    if r.status == 'Ack' or r.status == 'NotRequested' then return '250 ok' end
    kumo.reject(500, kumo.json_encode(r))
  end
  function conn:close() client:close() end
  return conn"#,
        ))
        .env("TEST_QUEUE", &queue),
    )
    .await;
    let ids = inject(&server, 2).await;
    let records = server
        .wait_for_records(WAIT, "2 Bounce records", |r| {
            records_of(r, "Bounce", &ids).len() == 2
        })
        .await;
    for (id, rs) in by_id(&records, &ids) {
        assert_eq!(kinds(&rs), ["Reception", "Bounce"], "{id}");
        assert_eq!(rs[1]["response"]["code"], 500, "{}", rs[1]);
        let content = rs[1]["response"]["content"].as_str().unwrap_or_default();
        let json: Value = serde_json::from_str(content)
            .unwrap_or_else(|e| panic!("bounce content {content:?} is not JSON: {e}"));
        assert_eq!(json["status"], "Nack", "{content}");
    }
    let _ = channel
        .queue_delete(queue.as_str().into(), QueueDeleteOptions::default())
        .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reject_451_on_the_first_attempt_logs_one_transient_failure_then_delivery() {
    let server = Server::start(&scenario(
        "",
        r#"
  local conn = {}
  function conn:send(msg)
    if msg:num_attempts() == 0 then kumo.reject(451, 'first attempt deferred by test') end
    return '250 ok'
  end
  return conn"#,
    ))
    .await;
    let ids = inject(&server, 3).await;
    let records = server
        .wait_for_records(WAIT, "3 Delivery records", |r| {
            records_of(r, "Delivery", &ids).len() == 3
        })
        .await;
    for (id, rs) in by_id(&records, &ids) {
        assert_eq!(
            kinds(&rs),
            ["Reception", "TransientFailure", "Delivery"],
            "{id}"
        );
        assert_eq!(rs[1]["response"]["code"], 451, "{}", rs[1]);
        assert_eq!(
            rs[1]["response"]["content"], "first attempt deferred by test",
            "{}",
            rs[1]
        );
        assert_eq!(rs[2]["response"]["content"], "250 ok", "{}", rs[2]);
        assert_eq!(rs[2]["num_attempts"], 1, "{}", rs[2]);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn constructor_that_always_raises_expires_the_message_with_551_after_max_age() {
    let mut server = Server::start(&scenario(
        "max_age = '3s',",
        "  error('constructor always fails in this test')",
    ))
    .await;
    let ids = inject(&server, 2).await;
    let records = server
        .wait_for_records(WAIT, "2 Expiration records", |r| {
            records_of(r, "Expiration", &ids).len() == 2
        })
        .await;
    for (id, rs) in by_id(&records, &ids) {
        let k = kinds(&rs);
        assert_eq!(k.first().map(String::as_str), Some("Reception"), "{id}");
        assert_eq!(k.last().map(String::as_str), Some("Expiration"), "{id}");
        assert!(
            k[1..k.len() - 1].iter().all(|t| t == "TransientFailure") && k.len() >= 3,
            "{id}: expected TransientFailures between Reception and Expiration, got {k:?}"
        );
        let tf = rs[1];
        assert_eq!(tf["response"]["code"], 400, "{tf}");
        let c = tf["response"]["content"].as_str().unwrap_or_default();
        assert!(
            c.contains("failed to connect to any candidate hosts")
                && c.contains("constructor always fails in this test"),
            "{tf}"
        );
        let exp = rs[rs.len() - 1];
        assert_eq!(exp["response"]["code"], 551, "{exp}");
    }
    assert_eq!(
        spooled_after_restart(&mut server).await,
        0,
        "expired messages must be gone from the spool"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn message_waiting_for_retry_is_delivered_after_a_hermod_restart() {
    let flag = tempfile::tempdir().expect("tempdir");
    let flag_file = flag.path().join("deliver-now");
    let mut server = Server::launch(
        ServerConfig::with_p0(&scenario(
            "",
            r#"
  local conn = {}
  function conn:send(msg)
    local f = io.open(os.getenv 'FLAG_FILE', 'r')
    if f then f:close(); return '250 ok' end
    kumo.reject(451, 'flag file not there yet')
  end
  return conn"#,
        ))
        .env("FLAG_FILE", &flag_file.to_string_lossy()),
    )
    .await;
    let ids = inject(&server, 3).await;
    server
        .wait_for_records(WAIT, "a TransientFailure for each message", |r| {
            let failed: HashSet<&str> = records_of(r, "TransientFailure", &ids)
                .iter()
                .filter_map(|x| x["id"].as_str())
                .collect();
            failed.len() == 3
        })
        .await;
    let status = server.stop().await.expect("hermod was running");
    assert!(status.success(), "SIGTERM shutdown failed: {status}");
    std::fs::write(&flag_file, b"go").expect("writing the flag file");
    server.restart().await;
    assert_eq!(
        server.enumerated_per_start().last().copied(),
        Some(3),
        "the restarted server must find the 3 waiting messages in the spool"
    );
    let records = server
        .wait_for_records(WAIT, "3 Delivery records after restart", |r| {
            records_of(r, "Delivery", &ids).len() == 3
        })
        .await;
    for (id, rs) in by_id(&records, &ids) {
        let k = kinds(&rs);
        assert_eq!(
            k.iter().filter(|t| *t == "Delivery").count(),
            1,
            "{id}: {k:?}"
        );
        assert!(
            !k.iter().any(|t| t == "Bounce" || t == "Expiration"),
            "{id}: {k:?}"
        );
    }
}

/// A2's shape against a private nats-server that is SIGKILLed while mail is
/// flowing and restarted on the same port and store: Hermod reconnects on its
/// own, retries, and JetStream's `Nats-Msg-Id` dedup keeps it exactly-once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nats_killed_mid_run_and_restarted_gets_every_message_exactly_once() {
    const COUNT: usize = 60;
    let mut nats = PrivateNats::start().await;
    let subject = unique("e2e.restart").replace('_', ".");
    let stream_name = unique("E2E_RESTART");
    nats.create_stream(&stream_name, &subject).await;

    let server = Server::launch(
        ServerConfig::with_p0(&format!(
            "{}\n{}",
            "kumo.on('init', function()\n  nats = kumo.nats.connect { servers = { os.getenv 'TEST_NATS' } }\nend)",
            scenario(
                "",
                r#"
  local conn = {}
  function conn:send(msg)
    nats:publish { subject = os.getenv 'TEST_SUBJECT', payload = msg:get_data() }
    return '250 ok'
  end
  function conn:close() end
  return conn"#,
            )
        ))
        .env("TEST_NATS", &nats.url())
        .env("TEST_SUBJECT", &subject),
    )
    .await;

    let addr = server.smtp_addr();
    let marker = unique("restart");
    let sender = tokio::spawn(async move {
        let mut sent = Vec::new();
        let mut client = smtp::Client::connect(addr).await;
        for i in 0..COUNT {
            let data = smtp::test_message(&marker, "user@test", i);
            sent.push(client.send("sender@e2e.test", "user@test", &data).await);
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
        client.quit().await;
        sent
    });
    let stream_of = |url: String, name: String| async move {
        let c = async_nats::connect(url).await.ok()?;
        async_nats::jetstream::new(c).get_stream(name).await.ok()
    };
    // Kill the broker once some, but not all, messages went through.
    common::eventually(WAIT, "the first publishes", || {
        let s = stream_of(nats.url(), stream_name.clone());
        async move {
            let info = s.await?.get_info().await.ok()?;
            (info.state.messages >= 5).then_some(())
        }
    })
    .await;
    nats.kill();
    // Longer than the connector's 5 s JetStream ack timeout, so publishes in
    // flight fail (and may still be stored once async-nats flushes its buffer).
    tokio::time::sleep(Duration::from_secs(7)).await;
    nats.restart().await;
    let ids: HashSet<String> = sender.await.expect("sender task").into_iter().collect();
    assert_eq!(ids.len(), COUNT);

    let stream = common::eventually(WAIT, "all messages in the stream", || {
        let s = stream_of(nats.url(), stream_name.clone());
        async move {
            let s = s.await?;
            let info = s.get_info().await.ok()?;
            (info.state.messages as usize >= COUNT).then_some(s)
        }
    })
    .await;
    tokio::time::sleep(common::brokers::SETTLE).await;
    let last = stream
        .get_info()
        .await
        .expect("stream info")
        .state
        .last_sequence;
    let mut seen: HashMap<String, usize> = HashMap::new();
    for seq in 1..=last {
        let m = stream.get_raw_message(seq).await.expect("stream message");
        let id = m
            .headers
            .get("Nats-Msg-Id")
            .map(|v| v.as_str().to_string())
            .expect("every message carries Nats-Msg-Id");
        let t = common::payload::split_trace(&m.payload).expect("trace headers");
        assert_eq!(t.id, id, "Nats-Msg-Id must be the Received id");
        *seen.entry(id).or_default() += 1;
    }
    let dupes: Vec<_> = seen.iter().filter(|(_, &n)| n > 1).collect();
    assert!(dupes.is_empty(), "duplicates in the stream: {dupes:?}");
    let got: HashSet<String> = seen.into_keys().collect();
    assert_eq!(
        got, ids,
        "the stream must hold exactly the accepted messages"
    );

    let records = server
        .wait_for_records(WAIT, "a Delivery per message", |r| {
            records_of(r, "Delivery", &ids).len() == COUNT
        })
        .await;
    assert!(
        !records_of(&records, "TransientFailure", &ids).is_empty(),
        "the broker outage should have caused at least one transient failure"
    );
}
