//! `/metrics` of a running `hermod serve` after real deliveries: KumoMTA's
//! family names, labels and types (crates/metrics/src/lib.rs), and Hermod's
//! own families, with the values the traffic produced.
//!
//! The traffic: 10 messages held behind a ready-queue suspension whose
//! `max_ready` is 4 (so `ready_full` counts), 5 published to the shared
//! NATS JetStream (`broker_publish_latency`), 3 whose Maildir cannot be
//! created (transient failures that wait in `scheduled_count`), and one SMTP
//! connection held open (`connection_count{service="esmtp_listener"}`).

mod common;

use std::time::Duration;

use common::{eventually, metric, smtp, Server};
use serde_json::{json, Value};

const WAIT: Duration = Duration::from_secs(40);

const POLICY: &str = r#"
local DIR = os.getenv 'ACCEPT_DIR'
kumo.on('pre_init', function()
  kumo.configure_log_hook { name = 'events', back_pressure = 1 }
end)
kumo.on('init', function()
  nats = kumo.nats.connect { servers = { '127.0.0.1:4222' } }
end)
kumo.on('get_queue_config', function(domain, tenant, campaign, routing_domain)
  if domain == 'nats' then
    return kumo.make_queue_config { protocol = { custom_lua = { constructor = 'make.nats' } } }
  end
  if domain == 'blocked.example' then
    -- A regular file where the Maildir's directory would go: delivery fails.
    return kumo.make_queue_config { protocol = { maildir_path = DIR .. '/blocked/{{ domain }}' } }
  end
  return kumo.make_queue_config { protocol = { maildir_path = DIR .. '/maildir/{{ domain }}' } }
end)
kumo.on('get_egress_path_config', function(routing_domain, egress_source, site_name)
  return kumo.make_egress_path { max_ready = 4 }
end)
kumo.on('make.nats', function(domain, tenant, campaign)
  local conn = {}
  function conn:send(msg)
    nats:publish { subject = 'subject', payload = msg:get_data() }
    return '250 ok'
  end
  function conn:close() end
  return conn
end)
"#;

const HELD: &str = "unspecified->held.example@maildir";

fn client() -> reqwest::Client {
    // reqwest is built without a default TLS provider.
    let _ = rustls::crypto::ring::default_provider().install_default();
    reqwest::Client::new()
}

async fn scrape(server: &Server) -> String {
    common::scrape_metrics(server.http_port).await
}

fn must(text: &str, series: &str) -> f64 {
    metric(text, series).unwrap_or_else(|| panic!("no {series} in:\n{text}"))
}

/// Scrape until `series` satisfies `ok`; returns that scrape.
async fn until(server: &Server, series: &str, ok: impl Fn(f64) -> bool) -> String {
    eventually(
        WAIT,
        &format!("{series} to reach the expected value"),
        || async {
            let text = scrape(server).await;
            metric(&text, series).filter(|v| ok(*v)).map(|_| text)
        },
    )
    .await
}

fn delivered_count(recs: &[Value], domain: &str, kind: &str) -> usize {
    recs.iter()
        .filter(|r| {
            r["type"] == kind
                && r["recipient"]
                    .as_str()
                    .is_some_and(|a| a.ends_with(&format!("@{domain}")))
        })
        .count()
}

async fn api(server: &Server, method: reqwest::Method, body: Value) -> Value {
    let resp = client()
        .request(
            method,
            format!(
                "http://127.0.0.1:{}/api/admin/suspend-ready-q/v1",
                server.http_port
            ),
        )
        .json(&body)
        .send()
        .await
        .expect("admin API call");
    assert!(resp.status().is_success(), "{}", resp.status());
    let text = resp.text().await.expect("admin answer");
    serde_json::from_str(&text).unwrap_or(Value::Null)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_after_deliveries_carry_kumomta_names_labels_types_and_values() {
    let server = Server::start(POLICY).await;
    std::fs::write(server.dir().join("blocked"), b"not a directory").unwrap();
    let held = api(
        &server,
        reqwest::Method::POST,
        json!({"name": HELD, "reason": "metrics test", "duration": "10m"}),
    )
    .await;
    let hold_id = held["id"].as_str().expect("suspension id").to_string();

    // An open inbound session is counted while it lasts.
    let open = smtp::Client::connect(server.smtp_addr()).await;
    until(
        &server,
        r#"connection_count{service="esmtp_listener"}"#,
        |v| v == 1.0,
    )
    .await;
    open.quit().await;

    let addr = server.smtp_addr();
    smtp::send_messages(addr, "user@held.example", "metrics-held", 10, 1).await;
    smtp::send_messages(addr, "user@nats", "metrics-nats", 5, 1).await;
    smtp::send_messages(addr, "user@blocked.example", "metrics-blocked", 3, 1).await;
    server
        .wait_for_records(WAIT, "5 NATS deliveries and 3 transient failures", |r| {
            delivered_count(r, "nats", "Delivery") == 5
                && delivered_count(r, "blocked.example", "TransientFailure") == 3
        })
        .await;

    let held_service = format!("maildir:{HELD}");
    let text = until(
        &server,
        &format!(r#"ready_count{{service="{held_service}"}}"#),
        |v| v == 10.0,
    )
    .await;
    assert!(
        must(&text, &format!(r#"ready_full{{service="{held_service}"}}"#)) >= 1.0,
        "messages beyond max_ready = 4 are counted"
    );
    let text = until(
        &server,
        r#"scheduled_count{queue="blocked.example"}"#,
        |v| v == 3.0,
    )
    .await;
    assert!(
        must(&text, "message_count") >= 13.0,
        "10 held and 3 waiting"
    );
    assert_eq!(
        must(
            &text,
            r#"total_messages_transfail{service="maildir:unspecified->blocked.example@maildir"}"#
        ),
        3.0
    );

    api(&server, reqwest::Method::DELETE, json!({"id": hold_id})).await;
    server
        .wait_for_records(WAIT, "the 10 held messages delivered", |r| {
            delivered_count(r, "held.example", "Delivery") == 10
        })
        .await;
    let text = until(
        &server,
        &format!(r#"ready_count{{service="{held_service}"}}"#),
        |v| v == 0.0,
    )
    .await;

    // KumoMTA's families, names and labels.
    assert_eq!(
        must(
            &text,
            r#"total_messages_received{service="esmtp_listener"}"#
        ),
        18.0
    );
    assert_eq!(
        must(
            &text,
            &format!(r#"total_messages_delivered{{service="{held_service}"}}"#)
        ),
        10.0
    );
    assert_eq!(
        must(
            &text,
            r#"total_messages_delivered{service="lua:unspecified->nats@lua:make.nats"}"#
        ),
        5.0
    );
    assert_eq!(
        must(&text, r#"connection_count{service="esmtp_listener"}"#),
        0.0
    );
    let messages = must(&text, "message_count");
    assert!(
        (3.0..13.0).contains(&messages),
        "the delivered messages are gone, the 3 waiting ones are not: {messages}"
    );
    assert_eq!(
        must(&text, r#"log_hook_backlog_count{logger="events"}"#).fract(),
        0.0
    );
    for rollup in ["maildir", "lua"] {
        assert!(
            must(
                &text,
                &format!(r#"deliver_message_latency_rollup_count{{service="{rollup}"}}"#)
            ) >= 1.0
        );
        // KumoMTA's buckets.
        assert!(
            metric(
                &text,
                &format!(
                    r#"deliver_message_latency_rollup_bucket{{le="0.005",service="{rollup}"}}"#
                )
            )
            .or_else(|| metric(
                &text,
                &format!(
                    r#"deliver_message_latency_rollup_bucket{{service="{rollup}",le="0.005"}}"#
                )
            ))
            .is_some(),
            "{text}"
        );
    }
    for (family, kind) in [
        ("total_messages_received", "counter"),
        ("total_messages_delivered", "counter"),
        ("total_messages_transfail", "counter"),
        ("total_messages_fail", "counter"),
        ("scheduled_count", "gauge"),
        ("ready_count", "gauge"),
        ("message_count", "gauge"),
        ("connection_count", "gauge"),
        ("ready_full", "counter"),
        ("delayed_due_to_message_rate_throttle", "counter"),
        ("deliver_message_latency_rollup", "histogram"),
        ("log_hook_backlog_count", "counter"),
        ("ready_queue_paused", "gauge"),
        ("broker_publish_latency", "histogram"),
        ("spool_group_commits", "counter"),
        ("spool_fsync_latency", "histogram"),
    ] {
        assert!(
            text.contains(&format!("# TYPE {family} {kind}\n")),
            "{family} is a {kind}:\n{text}"
        );
    }

    // Hermod's own.
    assert_eq!(
        must(&text, r#"broker_publish_latency_count{broker="nats"}"#),
        5.0
    );
    assert!(must(&text, r#"broker_publish_latency_sum{broker="nats"}"#) > 0.0);
    assert!(must(&text, "spool_group_commits") >= 1.0);
    assert!(must(&text, "spool_fsync_latency_count") >= 1.0);
    assert_eq!(
        must(
            &text,
            &format!(r#"ready_queue_paused{{service="{held_service}"}}"#)
        ),
        0.0
    );
}
