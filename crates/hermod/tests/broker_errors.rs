//! A broker that refuses Hermod's publishes — wrong credentials, a topic
//! that does not exist — must cost a retry, not a message and not the
//! process: each attempt is logged as a TransientFailure carrying the
//! broker's own reason, the message stays spooled, and Hermod keeps
//! accepting mail. Seeds B1 and C1 run against the shared brokers, changed
//! only where the test needs the broker to refuse (and a 1 s retry).

mod common;

use std::collections::HashSet;
use std::time::Duration;

use common::{records_of, smtp, summarize, unique, Server};

const WAIT: Duration = Duration::from_secs(90);

/// `examples/<file>` after P0, with each `(from, to)` replaced; `from` must
/// occur exactly once so a changed seed fails here instead of passing.
fn seed_with(file: &str, subs: &[(&str, &str)]) -> String {
    let retry = (
        "kumo.make_queue_config { protocol",
        "kumo.make_queue_config { retry_interval = '1s', protocol",
    );
    let mut text = common::seed_section(file);
    for (from, to) in subs.iter().chain(std::iter::once(&retry)) {
        assert_eq!(text.matches(from).count(), 1, "{file}: {from:?}");
        text = text.replace(from, to);
    }
    text
}

/// Send two messages, wait until each has failed `attempts` times, and
/// check that every failure is transient, names `reason`, and that nothing
/// was delivered or bounced. Then prove Hermod still accepts mail.
async fn assert_refused_transiently(server: &Server, domain: &str, reason: &str, attempts: usize) {
    let rcpt = format!("user@{domain}");
    let sent = smtp::send_messages(server.smtp_addr(), &rcpt, &unique("refused"), 2, 1).await;
    let ids: HashSet<String> = sent.into_iter().map(|s| s.id).collect();
    let records = server
        .wait_for_records(WAIT, "TransientFailures", |r| {
            records_of(r, "TransientFailure", &ids).len() >= attempts * ids.len()
        })
        .await;
    let failures = records_of(&records, "TransientFailure", &ids);
    if let Some(first) = failures.first() {
        eprintln!("first failure: {}", summarize(first));
    }
    for r in failures {
        let content = r["response"]["content"].as_str().unwrap_or_default();
        assert!(
            content.contains(reason),
            "the failure must carry the broker's reason {reason:?}: {}",
            summarize(r)
        );
        let code = r["response"]["code"].as_u64().unwrap_or_default();
        assert!(
            (400..500).contains(&code),
            "not transient: {}",
            summarize(r)
        );
    }
    let final_records: Vec<String> = records
        .iter()
        .filter(|r| r["type"] == "Delivery" || r["type"] == "Bounce")
        .filter(|r| r["id"].as_str().is_some_and(|id| ids.contains(id)))
        .map(summarize)
        .collect();
    assert!(
        final_records.is_empty(),
        "refused messages must stay queued: {final_records:?}"
    );
    let again = smtp::send_messages(server.smtp_addr(), &rcpt, &unique("after"), 1, 1).await;
    assert_eq!(
        again.len(),
        1,
        "Hermod must keep accepting mail; stderr:\n{}",
        server.stderr_tail()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn amqp_wrong_password_is_a_transient_failure_naming_access_refused() {
    let server = Server::start(&seed_with(
        "b1-amqp-legacy.lua",
        &[(
            "'amqp://localhost'",
            "'amqp://guest:not-the-password@127.0.0.1:5672'",
        )],
    ))
    .await;
    assert_refused_transiently(&server, "amqp", "ACCESS_REFUSED", 2).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kafka_missing_topic_is_a_transient_failure_naming_the_unknown_topic() {
    let topic = unique("missing_topic");
    let server = Server::start(&seed_with(
        "c1-kafka-legacy.lua",
        &[
            ("'localhost:9092'", "'127.0.0.1:9092'"),
            ("topic = 'my.topic'", &format!("topic = '{topic}'")),
        ],
    ))
    .await;
    assert_refused_transiently(&server, "kafka", "nknown topic", 1).await;
}
