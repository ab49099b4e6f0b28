//! Rebind, inspect-sched-q, inspect-ready-q and set_diagnostic_log_filter
//! (crates/http/src/admin_api/queues.rs, crates/queue/src/rebind.rs and
//! inspect.rs) against a real `hermod serve`, a real NATS JetStream and
//! Maildirs: messages stuck behind a broker that is down are moved to a
//! working one and arrive; the spool keeps their new queue across a
//! restart; bad requests change nothing.

mod common;

use std::collections::HashSet;
use std::time::Duration;

use common::brokers::{NatsStreamReader, NATS_EXAMPLES_STREAM, NATS_URL};
use common::{eventually, free_port, records_of, smtp, unique, Server, ServerConfig};
use serde_json::{json, Value};

const WAIT: Duration = Duration::from_secs(60);

/// `down.example` publishes to a NATS server that is not there (a port
/// nothing listens on), retrying hourly; `up.example` publishes to the real
/// JetStream; every other queue delivers into `<ACCEPT_DIR>/maildir/<queue's domain>`.
/// `rebind_message` moves a message to `data.target` (test two only).
fn policy(dead_port: u16, with_event: bool) -> String {
    let event = if with_event {
        "kumo.on('rebind_message', function(msg, data) msg:set_meta('queue', data.target) end)"
    } else {
        ""
    };
    format!(
        r#"
local function publisher(servers)
  return function(domain, tenant, campaign)
    local nats = kumo.nats.connect {{ servers = servers }}
    local conn = {{}}
    function conn:send(msg)
      nats:publish {{ subject = 'subject', payload = msg:get_data() }}
      return '250 ok'
    end
    function conn:close() nats:close() end
    return conn
  end
end
kumo.on('make.down', publisher {{ '127.0.0.1:{dead_port}' }})
kumo.on('make.up', publisher {{ '127.0.0.1:4222' }})
kumo.on('get_queue_config', function(domain, tenant, campaign, routing_domain)
  if domain == 'down.example' then
    return kumo.make_queue_config {{
      retry_interval = '1h', protocol = {{ custom_lua = {{ constructor = 'make.down' }} }},
    }}
  elseif domain == 'up.example' then
    return kumo.make_queue_config {{ protocol = {{ custom_lua = {{ constructor = 'make.up' }} }} }}
  end
  return kumo.make_queue_config {{
    protocol = {{ maildir_path = os.getenv('ACCEPT_DIR') .. '/maildir/' .. domain }},
  }}
end)
{event}
"#
    )
}

async fn start(with_event: bool) -> Server {
    let mut cfg = ServerConfig::with_p0(&policy(free_port(), with_event));
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

/// Call the admin API; returns the status and the body (JSON when it is).
async fn call(
    server: &Server,
    method: reqwest::Method,
    path: &str,
    body: Option<Value>,
) -> (u16, Value) {
    let url = format!("http://127.0.0.1:{}{path}", server.http_port);
    let mut req = client().request(method, url);
    if let Some(b) = body {
        req = req.json(&b);
    }
    let resp = req.send().await.expect("calling the admin API");
    let status = resp.status().as_u16();
    let text = resp.text().await.unwrap_or_default();
    (
        status,
        serde_json::from_str(&text).unwrap_or(Value::String(text)),
    )
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

async fn send(server: &Server, rcpt: &str, marker: &str, count: usize) -> HashSet<String> {
    smtp::send_messages(server.smtp_addr(), rcpt, marker, count, 1)
        .await
        .into_iter()
        .map(|s| s.id)
        .collect()
}

/// Wait until `ids` have each failed once and wait in the timer of
/// `down.example`, as inspect-sched-q shows them.
async fn wait_stuck(server: &Server, ids: &HashSet<String>) -> Value {
    server
        .wait_for_records(WAIT, "the first attempts to fail", |r| {
            records_of(r, "TransientFailure", ids).len() >= ids.len()
        })
        .await;
    eventually(
        WAIT,
        "inspect-sched-q to show the stuck messages",
        move || async move {
            let v = get(
                server,
                "/api/admin/inspect-sched-q/v1?queue_name=down.example",
            )
            .await;
            let ok = v["num_scheduled"] == ids.len()
                && v["messages"].as_array().is_some_and(|m| {
                    m.len() == ids.len()
                        && m.iter().all(|m| {
                            ids.contains(m["id"].as_str().unwrap_or_default())
                                && m["message"]["num_attempts"] == 1
                        })
                });
            ok.then_some(v)
        },
    )
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rebind_moves_messages_stuck_behind_a_broker_that_is_down_to_a_working_broker_where_they_arrive(
) {
    let server = start(false).await;
    let mut reader = NatsStreamReader::at_end(NATS_URL, NATS_EXAMPLES_STREAM).await;
    let marker = unique("rebind");
    let ids = send(&server, "user@down.example", &marker, 3).await;
    let stuck = wait_stuck(&server, &ids).await;
    assert_eq!(stuck["queue_name"], "down.example", "{stuck}");
    assert_eq!(
        stuck["queue_config"]["protocol"]["custom_lua"]["constructor"], "make.down",
        "{stuck}"
    );
    assert_eq!(
        stuck["messages"][0]["message"]["recipient"],
        "user@down.example"
    );
    let limited = get(
        &server,
        "/api/admin/inspect-sched-q/v1?queue_name=down.example&limit=1",
    )
    .await;
    assert_eq!(
        limited["messages"].as_array().map(Vec::len),
        Some(1),
        "{limited}"
    );
    assert_eq!(limited["num_scheduled"], 3, "{limited}");

    let v = post(
        &server,
        "/api/admin/rebind/v1",
        json!({"domain": "down.example", "data": {"queue": "up.example"}, "reason": "broker down"}),
    )
    .await;
    assert_eq!(v["matched"], 3, "{v}");
    assert!(v["id"].is_string(), "{v}");

    let got = reader.collect(&marker, 3, WAIT).await;
    let published: HashSet<String> = got.iter().filter_map(|m| m.message_id.clone()).collect();
    assert_eq!(
        published, ids,
        "each message published once, under its own id"
    );
    let records = server
        .wait_for_records(WAIT, "Delivery records from up.example", |r| {
            records_of(r, "Delivery", &ids).len() == 3
        })
        .await;
    // A finished rebind leaves the list of those in progress.
    let srv = &server;
    eventually(WAIT, "the rebind to finish", move || async move {
        (get(srv, "/api/admin/rebind/v1").await == json!([])).then_some(())
    })
    .await;
    let rebound = records_of(&records, "AdminRebind", &ids);
    assert_eq!(rebound.len(), 3, "one AdminRebind record each");
    let content = rebound[0]["response"]["content"]
        .as_str()
        .unwrap_or_default();
    assert_eq!(
        content,
        "Rebound from down.example to up.example: broker down"
    );
    assert_eq!(rebound[0]["queue"], "up.example", "{}", rebound[0]);
    assert!(records_of(&records, "Delivery", &ids)
        .iter()
        .all(|r| r["queue"] == "up.example"));
    let stderr = server.stderr();
    assert!(
        stderr
            .lines()
            .any(|l| l.contains("admin: rebind started") && l.contains("trusted host")),
        "the rebind is logged with who asked"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rebind_through_the_rebind_message_event_is_stored_and_the_new_queue_survives_a_restart()
{
    let mut server = start(true).await;
    let ids = send(&server, "user@down.example", &unique("restart"), 2).await;
    wait_stuck(&server, &ids).await;
    // The new queue holds them until the restart, which ends the suspension.
    post(
        &server,
        "/api/admin/suspend/v1",
        json!({"domain": "parked.example", "reason": "hold after rebind", "duration": "1h"}),
    )
    .await;
    let v = post(
        &server,
        "/api/admin/rebind/v1",
        json!({"queue_names": ["down.example"], "data": {"target": "parked.example"},
               "trigger_rebind_event": true, "reason": "moving to maildir"}),
    )
    .await;
    assert_eq!(v["matched"], 2, "{v}");

    // inspect-message reads the spool: the record names the new queue.
    for id in &ids {
        let path = format!("/api/admin/inspect-message/v1?id={id}");
        let (server, path) = (&server, path.as_str());
        eventually(
            WAIT,
            "the spool record to name parked.example",
            move || async move {
                let v = get(server, path).await;
                (v["message"]["meta"]["queue"] == "parked.example").then_some(())
            },
        )
        .await;
    }
    let parked = get(
        &server,
        "/api/admin/inspect-sched-q/v1?queue_name=parked.example",
    )
    .await;
    assert_eq!(parked["num_scheduled"], 2, "{parked}");
    let left = get(
        &server,
        "/api/admin/inspect-sched-q/v1?queue_name=down.example",
    )
    .await;
    assert_eq!(
        left["num_scheduled"], 0,
        "nothing is left behind the broker that is down: {left}"
    );

    server.restart().await;
    let records = server
        .wait_for_records(
            WAIT,
            "the Deliveries into parked.example after the restart",
            |r| records_of(r, "Delivery", &ids).len() == 2,
        )
        .await;
    assert!(records_of(&records, "Delivery", &ids)
        .iter()
        .all(|r| r["queue"] == "parked.example"));
    assert_eq!(
        records_of(&records, "TransientFailure", &ids).len(),
        2,
        "no attempt after the rebind went to the broker that is down"
    );
    let files = std::fs::read_dir(server.dir().join("maildir/parked.example/new"))
        .map(|d| d.count())
        .unwrap_or(0);
    assert_eq!(files, 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn inspect_ready_q_shows_a_suspended_queue_with_its_feeders_and_messages() {
    let server = start(false).await;
    let name = "unspecified->rq.example@maildir";
    post(
        &server,
        "/api/admin/suspend-ready-q/v1",
        json!({"name": name, "reason": "look before it goes", "duration": "10m"}),
    )
    .await;
    let ids = send(&server, "user@rq.example", &unique("rq"), 2).await;
    let path = format!(
        "/api/admin/inspect-ready-q/v1?queue_name={}&include_scheduled_queues=true&limit=5&want_body=true",
        "unspecified-%3Erq.example%40maildir"
    );
    let (srv, path) = (&server, path.as_str());
    let v = eventually(
        WAIT,
        "both messages in the ready queue",
        move || async move {
            let v = get(srv, path).await;
            (v["state"]["ready_count"] == 2).then_some(v)
        },
    )
    .await;
    assert_eq!(v["queue_name"], name, "{v}");
    assert_eq!(v["protocol"], "maildir", "{v}");
    assert_eq!(v["egress_source"], "unspecified", "{v}");
    assert_eq!(
        v["state"]["suspended"]["reason"], "look before it goes",
        "{v}"
    );
    assert_eq!(v["scheduled_queue_names"], json!(["rq.example"]), "{v}");
    let shown: HashSet<String> = v["messages"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|m| m["id"].as_str().map(String::from))
        .collect();
    assert_eq!(shown, ids, "{v}");
    assert!(v["messages"][0]["message"]["data"]
        .as_str()
        .is_some_and(|d| d.contains("Subject: e2e")));
    // Without `limit`, KumoMTA's shape: no messages.
    let plain = get(
        &server,
        "/api/admin/inspect-ready-q/v1?queue_name=unspecified-%3Erq.example%40maildir",
    )
    .await;
    assert!(plain.get("messages").is_none(), "{plain}");
    assert!(plain["scheduled_queue_names"].is_null(), "{plain}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_rebind_inspect_and_log_filter_requests_get_400_or_404_naming_the_field_and_change_nothing(
) {
    let server = start(false).await;
    let ids = send(&server, "user@down.example", &unique("bad"), 1).await;
    wait_stuck(&server, &ids).await;
    let posts = [
        (
            "/api/admin/rebind/v1",
            json!({"domian": "down.example", "data": {}, "reason": "r"}),
            400,
            "domian",
        ),
        (
            "/api/admin/rebind/v1",
            json!({"domain": "down.example", "reason": "r"}),
            400,
            "data",
        ),
        (
            "/api/admin/rebind/v1",
            json!({"domain": "down.example", "data": {"queue": 1}, "reason": "r"}),
            400,
            "data.queue",
        ),
        (
            "/api/admin/rebind/v1",
            json!({"domain": "down.example", "data": {}, "reason": " "}),
            400,
            "reason",
        ),
        (
            "/api/admin/rebind/v1",
            json!({"queue_names": ["nowhere.example"], "data": {"queue": "up.example"}, "reason": "r"}),
            404,
            "queue_names",
        ),
        (
            "/api/admin/rebind/v1",
            json!({"domain": "down.example", "data": {"queue": "up.example"}, "reason": "r", "trigger_rebind_event": true}),
            400,
            "trigger_rebind_event",
        ),
        (
            "/api/admin/rebind/v1",
            json!({"domain": "down.example", "data": {}, "reason": "r", "always_flush": "yes"}),
            400,
            "always_flush",
        ),
        (
            "/api/admin/set_diagnostic_log_filter/v1",
            json!({"filter": "hermod=loudest"}),
            400,
            "filter",
        ),
        (
            "/api/admin/set_diagnostic_log_filter/v1",
            json!({"filtre": "info"}),
            400,
            "filtre",
        ),
    ];
    for (path, body, want, field) in posts {
        let (status, answer) = call(&server, reqwest::Method::POST, path, Some(body.clone())).await;
        assert_eq!(status, want, "{path} {body}: {answer}");
        let text = answer.as_str().unwrap_or_default();
        assert!(
            text.contains(field),
            "{path} {body}: the answer must name {field}: {text}"
        );
    }
    let gets = [
        (
            "/api/admin/inspect-sched-q/v1?queue_name=nowhere.example",
            404,
            "queue_name",
        ),
        (
            "/api/admin/inspect-sched-q/v1?queue=down.example",
            400,
            "queue",
        ),
        (
            "/api/admin/inspect-sched-q/v1?queue_name=down.example&limit=many",
            400,
            "limit",
        ),
        (
            "/api/admin/inspect-ready-q/v1?queue_name=nowhere",
            404,
            "queue_name",
        ),
        (
            "/api/admin/inspect-ready-q/v1?queue_name=x&want_body=true",
            400,
            "want_body",
        ),
    ];
    for (path, want, field) in gets {
        let (status, answer) = call(&server, reqwest::Method::GET, path, None).await;
        assert_eq!(status, want, "{path}: {answer}");
        let text = answer.as_str().unwrap_or_default();
        assert!(
            text.contains(field),
            "{path}: the answer must name {field}: {text}"
        );
    }
    // Nothing moved.
    let v = get(
        &server,
        "/api/admin/inspect-sched-q/v1?queue_name=down.example",
    )
    .await;
    assert_eq!(v["num_scheduled"], 1, "{v}");
    assert_eq!(
        v["messages"][0]["message"]["meta"].get("queue"),
        None,
        "{v}"
    );
    assert!(records_of(&server.log_records(), "AdminRebind", &ids).is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn set_diagnostic_log_filter_changes_what_the_running_server_logs() {
    let mut cfg = ServerConfig::with_p0(&policy(free_port(), false)).env("HERMOD_LOG", "warn");
    cfg.spool_extra = "min_free_space = '1%'".into();
    let server = Server::launch(cfg).await;
    let suspend = json!({"domain": "quiet.example", "reason": "r"});
    let line = "admin: scheduled queues suspended";
    post(&server, "/api/admin/suspend/v1", suspend.clone()).await;
    assert!(
        !server.stderr().contains(line),
        "info is filtered out at first"
    );

    let (status, body) = call(
        &server,
        reqwest::Method::POST,
        "/api/admin/set_diagnostic_log_filter/v1",
        Some(json!({"filter": "info"})),
    )
    .await;
    assert_eq!(status, 200, "{body}");
    post(&server, "/api/admin/suspend/v1", suspend).await;
    let stderr = server.stderr();
    assert!(
        stderr.contains(line),
        "info shows once the filter allows it:\n{stderr}"
    );
    assert!(
        stderr
            .lines()
            .any(|l| l.contains("admin: diagnostic log filter changed")
                && l.contains("trusted host")),
        "the change is logged with who asked:\n{stderr}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kumo_set_diagnostic_log_filter_in_the_policy_changes_the_filter_too() {
    let scenario = format!(
        "{}\nkumo.on('init', function() kumo.set_diagnostic_log_filter 'info' end)\n",
        policy(free_port(), false)
    );
    let mut cfg = ServerConfig::with_p0(&scenario).env("HERMOD_LOG", "warn");
    cfg.spool_extra = "min_free_space = '1%'".into();
    let server = Server::launch(cfg).await;
    post(
        &server,
        "/api/admin/suspend/v1",
        json!({"domain": "lua.example", "reason": "r"}),
    )
    .await;
    let stderr = server.stderr();
    assert!(
        stderr.contains("admin: scheduled queues suspended"),
        "info shows after init set the filter:\n{stderr}"
    );
}
