//! The admin API (crates/http/src/admin_api/, crates/queue/src/admin.rs)
//! against a real `hermod serve` over real sockets: suspensions hold their
//! queues while others flow, bounces remove queued messages and new
//! arrivals with AdminBounce records, ready-q-states and inspect-message
//! report what is queued, and callers that are not trusted or send bad
//! requests change nothing.

mod common;

use std::collections::HashSet;
use std::net::{IpAddr, Ipv4Addr};
use std::time::Duration;

use common::{records_of, smtp, unique, Server, ServerConfig};
use serde_json::{json, Value};

const WAIT: Duration = Duration::from_secs(30);

/// A server running `common::ADMIN_POLICY`. The spool's free-space floor is lowered: these
/// tests are about operators' directives, not disk headroom, and run on
/// build machines whose disks other builds fill.
async fn start() -> Server {
    let mut cfg = ServerConfig::with_p0(common::ADMIN_POLICY);
    cfg.spool_extra = "min_free_space = '1%'".into();
    Server::launch(cfg).await
}

fn client() -> reqwest::Client {
    let _ = rustls::crypto::ring::default_provider().install_default();
    reqwest::Client::builder()
        .timeout(Duration::from_secs(20))
        .no_proxy()
        .build()
        .expect("building the HTTP client")
}

/// A client whose connections come from 127.0.0.2, which the listener's
/// default `trusted_hosts` (127.0.0.1, ::1) does not include.
fn untrusted_client() -> reqwest::Client {
    let _ = rustls::crypto::ring::default_provider().install_default();
    reqwest::Client::builder()
        .local_address(IpAddr::V4(Ipv4Addr::new(127, 0, 0, 2)))
        .timeout(Duration::from_secs(20))
        .no_proxy()
        .build()
        .expect("building the HTTP client")
}

fn url(server: &Server, path: &str) -> String {
    format!("http://127.0.0.1:{}{path}", server.http_port)
}

/// Call the admin API; returns the status and the body (JSON when it is).
async fn call(
    server: &Server,
    method: reqwest::Method,
    path: &str,
    body: Option<Value>,
) -> (u16, Value) {
    let mut req = client().request(method, url(server, path));
    if let Some(b) = body {
        req = req.json(&b);
    }
    let resp = req.send().await.expect("calling the admin API");
    let status = resp.status().as_u16();
    let text = resp.text().await.unwrap_or_default();
    let body = serde_json::from_str(&text).unwrap_or(Value::String(text));
    (status, body)
}

async fn post(server: &Server, path: &str, body: Value) -> Value {
    let (status, v) = call(server, reqwest::Method::POST, path, Some(body)).await;
    assert_eq!(status, 200, "POST {path}: {v}");
    v
}

async fn get(server: &Server, path: &str) -> Value {
    let (status, v) = call(server, reqwest::Method::GET, path, None).await;
    assert_eq!(status, 200, "GET {path}: {v}");
    v
}

async fn send(server: &Server, rcpt: &str, count: usize) -> HashSet<String> {
    smtp::send_messages(server.smtp_addr(), rcpt, &unique("admin"), count, 1)
        .await
        .into_iter()
        .map(|s| s.id)
        .collect()
}

fn maildir_files(server: &Server, domain: &str) -> usize {
    std::fs::read_dir(server.dir().join("maildir").join(domain).join("new"))
        .map(|d| d.count())
        .unwrap_or(0)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_suspension_holds_its_domain_while_others_flow_and_cancelling_resumes_it() {
    let server = start().await;
    let v = post(
        &server,
        "/api/admin/suspend/v1",
        json!({"domain": "held.example", "reason": "postmaster asked us to wait", "duration": "10m"}),
    )
    .await;
    let id = v["id"].as_str().expect("a suspension id").to_string();

    let held = send(&server, "user@held.example", 2).await;
    let flowing = send(&server, "user@flowing.example", 1).await;
    server
        .wait_for_records(WAIT, "the other domain's Delivery", |r| {
            records_of(r, "Delivery", &flowing).len() == 1
        })
        .await;
    // Give the held domain's messages every chance to go out if they were going to.
    tokio::time::sleep(Duration::from_secs(2)).await;
    let records = server.log_records();
    assert!(
        records_of(&records, "Delivery", &held).is_empty()
            && records_of(&records, "TransientFailure", &held).is_empty(),
        "a suspended domain's messages must wait without attempts"
    );
    assert_eq!(maildir_files(&server, "held.example"), 0);

    let list = get(&server, "/api/admin/suspend/v1").await;
    let entry = &list[0];
    assert_eq!(entry["id"], id.as_str(), "{list}");
    assert_eq!(entry["domain"], "held.example", "{list}");
    assert_eq!(entry["reason"], "postmaster asked us to wait", "{list}");

    let (status, body) = call(
        &server,
        reqwest::Method::DELETE,
        "/api/admin/suspend/v1",
        Some(json!({ "id": id })),
    )
    .await;
    assert_eq!(status, 200, "{body}");
    server
        .wait_for_records(WAIT, "the held messages' Deliveries", |r| {
            records_of(r, "Delivery", &held).len() == 2
        })
        .await;
    assert_eq!(maildir_files(&server, "held.example"), 2);
    assert_eq!(get(&server, "/api/admin/suspend/v1").await, json!([]));
    let (status, _) = call(
        &server,
        reqwest::Method::DELETE,
        "/api/admin/suspend/v1",
        Some(json!({ "id": id })),
    )
    .await;
    assert_eq!(
        status, 404,
        "a cancelled suspension cannot be cancelled again"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_bounce_removes_waiting_messages_with_admin_bounce_records_and_bounces_new_arrivals() {
    let server = start().await;
    // Each fails once and then waits an hour in the timer for its retry.
    let waiting = send(&server, "user@broken.example", 2).await;
    server
        .wait_for_records(WAIT, "the first attempts to fail", |r| {
            records_of(r, "TransientFailure", &waiting).len() == 2
        })
        .await;

    let v = post(
        &server,
        "/api/admin/bounce/v1",
        json!({"domain": "broken.example", "reason": "cleaning up a bad send", "duration": "10m"}),
    )
    .await;
    let id = v["id"].as_str().expect("a bounce id").to_string();
    let records = server
        .wait_for_records(WAIT, "AdminBounce records for the waiting messages", |r| {
            records_of(r, "AdminBounce", &waiting).len() == 2
        })
        .await;
    let bounced = records_of(&records, "AdminBounce", &waiting)[0];
    assert_eq!(bounced["response"]["code"], 551, "{bounced}");
    let content = bounced["response"]["content"].as_str().unwrap_or_default();
    assert!(content.contains("cleaning up a bad send"), "{bounced}");

    // A new arrival for the domain is received, then bounced at once.
    let fresh = send(&server, "other@broken.example", 1).await;
    server
        .wait_for_records(WAIT, "the new arrival's AdminBounce", |r| {
            records_of(r, "AdminBounce", &fresh).len() == 1
        })
        .await;
    let records = server.log_records();
    assert_eq!(records_of(&records, "Reception", &fresh).len(), 1);
    assert!(records_of(&records, "TransientFailure", &fresh).is_empty());

    // They have left the spool.
    for gone in waiting.iter().chain(&fresh) {
        let path = format!("/api/admin/inspect-message/v1?id={gone}");
        let (status, body) = call(&server, reqwest::Method::GET, &path, None).await;
        assert_eq!(status, 404, "{gone} is still in the spool: {body}");
    }
    let list = get(&server, "/api/admin/bounce/v1").await;
    assert_eq!(list[0]["id"], id.as_str(), "{list}");
    assert_eq!(list[0]["total_bounced"], 3, "{list}");
    assert_eq!(list[0]["bounced"]["broken.example"], 3, "{list}");

    // Other domains are untouched, and once cancelled the domain is not bounced.
    let (status, body) = call(
        &server,
        reqwest::Method::DELETE,
        "/api/admin/bounce/v1",
        Some(json!({ "id": id })),
    )
    .await;
    assert_eq!(status, 200, "{body}");
    let after = send(&server, "late@broken.example", 1).await;
    server
        .wait_for_records(WAIT, "an attempt after the bounce was cancelled", |r| {
            records_of(r, "TransientFailure", &after).len() == 1
        })
        .await;
    assert!(records_of(&server.log_records(), "AdminBounce", &after).is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_suspended_ready_queue_is_listed_by_ready_q_states_and_delivers_after_cancel() {
    let server = start().await;
    let name = "unspecified->rq.example@maildir";
    let v = post(
        &server,
        "/api/admin/suspend-ready-q/v1",
        json!({"name": name, "reason": "maintenance window", "duration": "10m"}),
    )
    .await;
    let id = v["id"].as_str().expect("a suspension id").to_string();
    let ids = send(&server, "user@rq.example", 1).await;

    let states = get(&server, "/api/admin/ready-q-states/v1").await;
    let suspended = &states["states_by_ready_queue"][name]["suspended"];
    assert_eq!(suspended["context"], "maintenance window", "{states}");
    assert!(suspended["since"].is_string(), "{states}");
    let only = get(
        &server,
        "/api/admin/ready-q-states/v1?queues=unspecified-%3Eother.example%40maildir",
    )
    .await;
    assert_eq!(only, json!({"states_by_ready_queue": {}}));
    let list = get(&server, "/api/admin/suspend-ready-q/v1").await;
    assert_eq!(list[0]["name"], name, "{list}");

    tokio::time::sleep(Duration::from_secs(2)).await;
    assert!(records_of(&server.log_records(), "Delivery", &ids).is_empty());
    let (status, body) = call(
        &server,
        reqwest::Method::DELETE,
        "/api/admin/suspend-ready-q/v1",
        Some(json!({ "id": id })),
    )
    .await;
    assert_eq!(status, 200, "{body}");
    server
        .wait_for_records(WAIT, "the Delivery after the cancel", |r| {
            records_of(r, "Delivery", &ids).len() == 1
        })
        .await;
    let states = get(&server, "/api/admin/ready-q-states/v1").await;
    assert!(
        states["states_by_ready_queue"].get(name).is_none(),
        "{states}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn inspect_message_returns_the_envelope_meta_and_body_of_a_queued_message() {
    let server = start().await;
    post(
        &server,
        "/api/admin/suspend/v1",
        json!({"domain": "inspect.example", "reason": "hold for inspection"}),
    )
    .await;
    let sent = smtp::send_messages(server.smtp_addr(), "who@inspect.example", "insp", 1, 1).await;
    let id = &sent[0].id;

    let path = format!("/api/admin/inspect-message/v1?id={id}");
    let v = get(&server, &path).await;
    assert_eq!(v["id"], id.as_str(), "{v}");
    let m = &v["message"];
    assert_eq!(m["sender"], "sender@e2e.test", "{v}");
    assert_eq!(m["recipient"], "who@inspect.example", "{v}");
    let from = m["meta"]["received_from"].as_str().unwrap_or_default();
    assert!(from.starts_with("127.0.0.1"), "{v}");
    assert!(m["data"].is_null(), "no body unless asked: {v}");

    let v = get(&server, &format!("{path}&want_body=true")).await;
    let data = v["message"]["data"].as_str().unwrap_or_default();
    assert!(data.contains("Subject: e2e insp #0"), "{v}");

    let (status, body) = call(
        &server,
        reqwest::Method::GET,
        "/api/admin/inspect-message/v1?id=not-an-id",
        None,
    )
    .await;
    assert_eq!(status, 400, "{body}");
    assert!(body.as_str().unwrap_or_default().contains("`id`"), "{body}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn admin_calls_from_an_untrusted_address_need_credentials_the_policy_accepts() {
    let server = start().await;
    let body = json!({"domain": "x.example", "reason": "r"});
    let r = untrusted_client()
        .post(url(&server, "/api/admin/suspend/v1"))
        .json(&body)
        .send()
        .await
        .expect("calling the admin API");
    assert_eq!(r.status().as_u16(), 401);
    let text = r.text().await.unwrap_or_default();
    assert!(text.contains("authentication required"), "{text}");
    let r = untrusted_client()
        .post(url(&server, "/api/admin/bounce/v1"))
        .basic_auth("api", Some("wrong"))
        .json(&body)
        .send()
        .await
        .expect("calling the admin API");
    assert_eq!(r.status().as_u16(), 401);
    assert_eq!(get(&server, "/api/admin/suspend/v1").await, json!([]));
    assert_eq!(get(&server, "/api/admin/bounce/v1").await, json!([]));

    let r = untrusted_client()
        .post(url(&server, "/api/admin/suspend/v1"))
        .basic_auth("api", Some("s3cret"))
        .json(&body)
        .send()
        .await
        .expect("calling the admin API");
    assert_eq!(r.status().as_u16(), 200);
    assert_eq!(
        get(&server, "/api/admin/suspend/v1").await[0]["domain"],
        "x.example"
    );
    // The change is logged with who asked.
    let stderr = server.stderr();
    let line = stderr
        .lines()
        .find(|l| l.contains("admin: scheduled queues suspended"))
        .unwrap_or_default();
    assert!(
        line.contains("127.0.0.2") && line.contains("user api"),
        "{line}"
    );
    assert!(!stderr.contains("s3cret"), "a password reached the log");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_json_unknown_fields_and_bad_durations_get_400_naming_them_and_change_nothing() {
    let server = start().await;
    let cases = [
        (
            "/api/admin/suspend/v1",
            json!({"domian": "a.example", "reason": "r"}),
            "domian",
        ),
        (
            "/api/admin/suspend/v1",
            json!({"domain": "a.example", "reason": "r", "duration": "soon"}),
            "duration",
        ),
        (
            "/api/admin/suspend/v1",
            json!({"domain": "a.example"}),
            "reason",
        ),
        (
            "/api/admin/bounce/v1",
            json!({"domain": "a.example", "reason": "r", "suppress_logging": "yes"}),
            "suppress_logging",
        ),
        (
            "/api/admin/bounce/v1",
            json!({"domain": "a.example", "reason": "r", "expires": "yesterday"}),
            "expires",
        ),
        (
            "/api/admin/suspend-ready-q/v1",
            json!({"name": "q", "reason": "r", "duration": "-5m"}),
            "duration",
        ),
    ];
    for (path, body, field) in cases {
        let (status, answer) = call(&server, reqwest::Method::POST, path, Some(body.clone())).await;
        assert_eq!(status, 400, "{path} {body}: {answer}");
        let text = answer.as_str().unwrap_or_default();
        assert!(
            text.contains(field),
            "{path} {body}: the answer must name {field}: {text}"
        );
    }
    let r = client()
        .post(url(&server, "/api/admin/bounce/v1"))
        .header("content-type", "application/json")
        .body("{\"reason\": ")
        .send()
        .await
        .expect("calling the admin API");
    assert_eq!(r.status().as_u16(), 400);
    let (status, _) = call(
        &server,
        reqwest::Method::DELETE,
        "/api/admin/bounce/v1",
        Some(json!({"id": "0", "extra": 1})),
    )
    .await;
    assert_eq!(status, 400);
    for path in [
        "/api/admin/suspend/v1",
        "/api/admin/bounce/v1",
        "/api/admin/suspend-ready-q/v1",
    ] {
        assert_eq!(get(&server, path).await, json!([]), "{path} changed");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_suspension_that_expires_releases_its_messages_without_a_cancel() {
    let server = start().await;
    post(
        &server,
        "/api/admin/suspend/v1",
        json!({"domain": "brief.example", "reason": "short pause", "duration": "2s"}),
    )
    .await;
    let ids = send(&server, "user@brief.example", 1).await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert!(records_of(&server.log_records(), "Delivery", &ids).is_empty());
    let records = server
        .wait_for_records(WAIT, "the Delivery once the suspension expired", |r| {
            records_of(r, "Delivery", &ids).len() == 1
        })
        .await;
    let delivery = records_of(&records, "Delivery", &ids)[0];
    assert_eq!(
        delivery["num_attempts"], 0,
        "waiting used no attempt: {delivery}"
    );
    assert_eq!(get(&server, "/api/admin/suspend/v1").await, json!([]));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_bounce_with_suppress_logging_removes_messages_without_records() {
    let server = start().await;
    post(
        &server,
        "/api/admin/suspend/v1",
        json!({"domain": "quiet.example", "reason": "hold"}),
    )
    .await;
    let ids = send(&server, "user@quiet.example", 1).await;
    let id = ids.iter().next().cloned().unwrap_or_default();
    let path = format!("/api/admin/inspect-message/v1?id={id}");
    assert_eq!(
        call(&server, reqwest::Method::GET, &path, None).await.0,
        200
    );
    post(
        &server,
        "/api/admin/bounce/v1",
        json!({"domain": "quiet.example", "reason": "quietly", "suppress_logging": true}),
    )
    .await;
    let deadline = std::time::Instant::now() + WAIT;
    while call(&server, reqwest::Method::GET, &path, None).await.0 != 404 {
        assert!(std::time::Instant::now() < deadline, "{id} was not removed");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let list = get(&server, "/api/admin/bounce/v1").await;
    assert_eq!(list[0]["total_bounced"], 1, "{list}");
    assert_eq!(list[0]["suppress_logging"], true, "{list}");
    // The Reception record reaches the log; no AdminBounce follows it.
    server
        .wait_for_records(WAIT, "the Reception record", |r| {
            records_of(r, "Reception", &ids).len() == 1
        })
        .await;
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert!(records_of(&server.log_records(), "AdminBounce", &ids).is_empty());
}
