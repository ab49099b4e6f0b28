//! Traffic shaping automation's publishing half (crates/policy/src/extras/tsa_publish.lua):
//! `shaping:setup_with_automation { publish = {URL} }` and `setup_publish()` POST the log
//! records whose response matches an automation rule of the shaping files to
//! `URL/publish_log_v1`, where KumoMTA's TSA daemon reads them; records of mail entering
//! Hermod, and responses no rule matches, are not sent.

mod common;

use std::sync::{Arc, Mutex};
use std::time::Duration;

use common::{read_log_records, smtp, Server, ServerConfig};
use serde_json::Value;

const WAIT: Duration = Duration::from_secs(60);

/// A stand-in for the TSA daemon's HTTP endpoint, keeping each POST's path and body.
struct Daemon {
    url: String,
    posts: Arc<Mutex<Vec<(String, Value)>>>,
    task: tokio::task::JoinHandle<()>,
}

impl Daemon {
    async fn start() -> Daemon {
        use axum::http::{HeaderMap, StatusCode, Uri};
        let posts = Arc::new(Mutex::new(Vec::new()));
        let kept = posts.clone();
        let app = axum::Router::new().fallback(axum::routing::post(
            move |uri: Uri, headers: HeaderMap, body: axum::body::Bytes| {
                let kept = kept.clone();
                async move {
                    let json = headers
                        .get("content-type")
                        .is_some_and(|v| v.as_bytes() == b"application/json");
                    let Ok(record) = serde_json::from_slice::<Value>(&body) else {
                        return (StatusCode::BAD_REQUEST, "not JSON");
                    };
                    if !json {
                        return (StatusCode::UNSUPPORTED_MEDIA_TYPE, "need json");
                    }
                    kept.lock().unwrap().push((uri.path().to_string(), record));
                    (StatusCode::OK, "ok")
                }
            },
        ));
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        let task = tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        Daemon { url, posts, task }
    }

    fn posts(&self) -> Vec<(String, Value)> {
        self.posts.lock().unwrap().clone()
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        self.task.abort();
    }
}

const SHAPING: &str = r#"["default"]
connection_limit = 3

[["default".automation]]
regex = "Not a directory"
action = "Suspend"
duration = "1 hour"
"#;

const POLICY: &str = r#"
local shaping = require 'policy-extras.shaping'
local shaper = shaping:setup_with_automation {
  publish = { '@TSA@' },
  subscribe = { '@TSA@' },
  extra_files = { '@SCRATCH@/shaping.toml' },
  no_default_files = true,
}
kumo.on('init', function()
  shaper.setup_publish()
end)
kumo.on('get_egress_path_config', shaper.get_egress_path_config)
kumo.on('get_queue_config', function(domain, tenant, campaign, routing_domain)
  -- broken.test's maildir lies under a plain file: every attempt fails transiently.
  local base = domain == 'broken.test' and '@SCRATCH@/a-file' or os.getenv('ACCEPT_DIR') .. '/maildir'
  return kumo.make_queue_config {
    retry_interval = '1 hour',
    protocol = { maildir_path = base .. '/{{ domain }}' },
  }
end)
"#;

fn message(to: &str) -> Vec<u8> {
    format!("From: <s@example.test>\r\nTo: <{to}>\r\nSubject: tsa\r\n\r\nhello\r\n").into_bytes()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn records_matching_an_automation_rule_are_published_to_the_tsa_endpoint_and_others_are_not()
{
    let daemon = Daemon::start().await;
    let scratch = tempfile::tempdir().expect("tempdir");
    std::fs::write(scratch.path().join("shaping.toml"), SHAPING).expect("shaping.toml");
    std::fs::write(scratch.path().join("a-file"), b"not a directory").expect("a-file");
    let policy = POLICY
        .replace("@TSA@", &daemon.url)
        .replace("@SCRATCH@", &scratch.path().display().to_string());
    let server = Server::launch(ServerConfig::with_p0(&policy)).await;

    // Delivered: its records match no rule, so nothing is published for it.
    let mut client = smtp::Client::connect(server.smtp_addr()).await;
    let good = client
        .send("s@example.test", "r@good.test", &message("r@good.test"))
        .await;
    client.quit().await;
    let logs = server.dir().join("logs");
    common::eventually(WAIT, "the good message's Delivery", || {
        let done = read_log_records(&logs)
            .iter()
            .any(|r| r["type"] == "Delivery" && r["id"] == good.as_str());
        async move { done.then_some(()) }
    })
    .await;

    // Fails transiently with a response the rule matches: published.
    let mut client = smtp::Client::connect(server.smtp_addr()).await;
    let broken = client
        .send("s@example.test", "r@broken.test", &message("r@broken.test"))
        .await;
    client.quit().await;
    let posts = common::eventually(WAIT, "a record POSTed to the TSA endpoint", || {
        let posts = daemon.posts();
        async move { (!posts.is_empty()).then_some(posts) }
    })
    .await;
    // Give any wrongly published record of the same mail time to arrive too.
    tokio::time::sleep(Duration::from_secs(2)).await;
    let posts = [posts, daemon.posts()].concat();
    for (path, record) in &posts {
        assert_eq!(path, "/publish_log_v1", "{record}");
        assert_eq!(
            record["type"], "TransientFailure",
            "only matching records: {record}"
        );
        assert_eq!(record["id"], broken.as_str(), "{record}");
        assert!(
            record["response"]["content"]
                .as_str()
                .is_some_and(|c| c.contains("Not a directory")),
            "{record}"
        );
    }

    // The example's subscribe endpoints cannot be followed: the server says so and serves on.
    let stderr = server.stderr();
    assert!(
        stderr.contains("automation subscriptions are not available"),
        "{stderr}"
    );
}
