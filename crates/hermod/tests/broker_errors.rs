//! A broker that refuses Hermod's publishes — wrong credentials, a topic
//! that does not exist — must cost a retry, not a message and not the
//! process: each attempt is logged as a TransientFailure carrying the
//! broker's own reason, the message stays spooled, and Hermod keeps
//! accepting mail. Seeds B1 and C1 run against the shared brokers, changed
//! only where the test needs the broker to refuse (and a 1 s retry).

mod common;

use std::time::Duration;

use common::refusal::assert_refused_transiently;
use common::{unique, Server};

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
    assert_refused_transiently(&server, "user@amqp", &["ACCESS_REFUSED"], 2, WAIT).await;
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
    assert_refused_transiently(&server, "user@kafka", &["nknown topic"], 1, WAIT).await;
}
