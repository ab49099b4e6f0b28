//! The live web dashboard (crates/http/src/dashboard/) against a real
//! `hermod serve`, in a real headless Chromium: the page shows what the
//! server did (100 messages delivered, their log records streamed live), its
//! suspend, resume and bounce buttons act through the admin API, and it is
//! refused to callers that are not trusted, like the admin API.

mod common;

use std::collections::HashSet;
use std::net::{IpAddr, Ipv4Addr};
use std::path::Path;
use std::time::Duration;

use common::webdriver::Browser;
use common::{eventually, records_of, smtp, unique, Server, ServerConfig};
use serde_json::Value;

const WAIT: Duration = Duration::from_secs(30);

/// Set to write the screenshot to docs/dashboard.png (the README's picture);
/// otherwise it goes to Cargo's scratch dir only, and the tree stays clean.
const UPDATE_SCREENSHOT: &str = "HERMOD_UPDATE_DASHBOARD_PNG";

async fn start() -> Server {
    let mut cfg = ServerConfig::with_p0(common::ADMIN_POLICY);
    cfg.spool_extra = "min_free_space = '1%'".into();
    Server::launch(cfg).await
}

fn url(server: &Server, path: &str) -> String {
    format!("http://127.0.0.1:{}{path}", server.http_port)
}

fn client(from: Ipv4Addr) -> reqwest::Client {
    let _ = rustls::crypto::ring::default_provider().install_default();
    reqwest::Client::builder()
        .local_address(IpAddr::V4(from))
        .timeout(Duration::from_secs(20))
        .no_proxy()
        .build()
        .expect("building the HTTP client")
}

async fn send(server: &Server, rcpt: &str, count: usize) -> HashSet<String> {
    smtp::send_messages(server.smtp_addr(), rcpt, &unique("dash"), count, 1)
        .await
        .into_iter()
        .map(|s| s.id)
        .collect()
}

/// Width and height from a PNG's IHDR chunk, after checking the signature.
fn png_size(png: &[u8]) -> (u32, u32) {
    assert!(
        png.len() > 24 && png.starts_with(b"\x89PNG\r\n\x1a\n") && &png[12..16] == b"IHDR",
        "not a PNG"
    );
    let be = |b: &[u8]| u32::from_be_bytes([b[0], b[1], b[2], b[3]]);
    (be(&png[16..20]), be(&png[20..24]))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_dashboard_shows_100_delivered_streams_their_records_and_its_buttons_suspend_resume_and_bounce_a_queue(
) {
    let server = start().await;
    // A scheduled queue with messages waiting, for the page to act on.
    let waiting = send(&server, "user@broken.example", 3).await;
    server
        .wait_for_records(WAIT, "the waiting messages' first attempts", |r| {
            records_of(r, "TransientFailure", &waiting).len() == 3
        })
        .await;

    let browser = Browser::start(1400, 1100).await;
    browser.goto(&url(&server, "/")).await;
    eventually(WAIT, "the page to read the server's state", || async {
        let s = browser.text("#status").await.ok()?;
        s.starts_with("live").then_some(())
    })
    .await;

    // In batches a moment apart, so the rates chart has a shape to show.
    let mut delivered = HashSet::new();
    for _ in 0..5 {
        delivered.extend(send(&server, "user@dash.example", 20).await);
        tokio::time::sleep(Duration::from_millis(800)).await;
    }
    eventually(WAIT, "the page to show 100 delivered", || async {
        let t = browser.text("#total-delivered").await.ok()?;
        (t == "100").then_some(())
    })
    .await;
    // The records reach the page through the event stream while it is open.
    let shown: Vec<String> = eventually(WAIT, "Delivery records in the log events", || async {
        let v = browser
            .eval("return [...document.querySelectorAll('#events tr.Delivery td:nth-child(3)')].map(td => td.textContent)")
            .await
            .ok()?;
        let ids: Vec<String> = serde_json::from_value(v).ok()?;
        (!ids.is_empty()).then_some(ids)
    })
    .await;
    assert!(
        shown.iter().all(|id| delivered.contains(id)),
        "the page shows Delivery records of messages this test sent: {shown:?}"
    );

    let row = r#"#scheduled tr[data-queue="broken.example"]"#;
    let count = eventually(WAIT, "the waiting queue in the table", || async {
        browser.text(&format!("{row} td:nth-child(2)")).await.ok()
    })
    .await;
    assert_eq!(count, "3", "the scheduled queue's message count");
    // The table is rebuilt only when its content changes; retry a click that met a rebuild.
    eventually(WAIT, "the suspend button to be clicked", || async {
        browser.click(&format!("{row} button.suspend")).await.ok()
    })
    .await;
    let list = eventually(WAIT, "the suspension in the admin API", || async {
        let v = suspensions(&server).await?;
        (v.as_array()?.len() == 1).then_some(v)
    })
    .await;
    assert_eq!(
        list[0]["queue_names"],
        serde_json::json!(["broken.example"]),
        "{list}"
    );
    assert_eq!(list[0]["reason"], "suspended from the dashboard", "{list}");
    eventually(WAIT, "the page to show the queue suspended", || async {
        let status = browser.text(&format!("{row} td:nth-child(3)")).await.ok()?;
        let resume = browser.text(&format!("{row} button.resume")).await.ok()?;
        (status == "suspended" && resume == "resume").then_some(())
    })
    .await;

    let png = browser.screenshot().await;
    let (width, height) = png_size(&png);
    // The window's size less the browser's own frame.
    assert!(
        width == 1400 && (600..=1100).contains(&height),
        "the screenshot is the viewport: {width}x{height}"
    );
    let scratch = Path::new(env!("CARGO_TARGET_TMPDIR")).join("dashboard.png");
    std::fs::write(&scratch, &png).expect("writing the screenshot");
    if std::env::var_os(UPDATE_SCREENSHOT).is_some() {
        let docs = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../docs/dashboard.png");
        std::fs::write(&docs, &png).expect("writing docs/dashboard.png");
    }

    // Resume: the suspension is cancelled.
    eventually(WAIT, "the resume button to be clicked", || async {
        browser.click(&format!("{row} button.resume")).await.ok()
    })
    .await;
    eventually(WAIT, "the suspension to be cancelled", || async {
        (suspensions(&server).await?.as_array()?.is_empty()).then_some(())
    })
    .await;
    // Bounce, after the page asks: the waiting messages leave with AdminBounce records.
    eventually(WAIT, "the bounce button to be clicked", || async {
        browser.click(&format!("{row} button.bounce")).await.ok()
    })
    .await;
    eventually(WAIT, "the bounce confirmation to be accepted", || async {
        browser.accept_dialog().await.ok()
    })
    .await;
    server
        .wait_for_records(WAIT, "AdminBounce records for the waiting messages", |r| {
            records_of(r, "AdminBounce", &waiting).len() == 3
        })
        .await;
    browser.quit().await;
}

async fn suspensions(server: &Server) -> Option<Value> {
    let r = client(Ipv4Addr::LOCALHOST)
        .get(url(server, "/api/admin/suspend/v1"))
        .send()
        .await
        .ok()?;
    r.json().await.ok()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_dashboard_is_refused_to_untrusted_callers_without_credentials_the_policy_accepts() {
    let server = start().await;
    // 127.0.0.2 is outside the listener's default trusted_hosts.
    let untrusted = client(Ipv4Addr::new(127, 0, 0, 2));
    for path in ["/", "/dashboard/app.js", "/dashboard/events"] {
        let r = untrusted
            .get(url(&server, path))
            .send()
            .await
            .expect("calling the listener");
        assert_eq!(r.status().as_u16(), 401, "GET {path} from 127.0.0.2");
        let text = r.text().await.unwrap_or_default();
        assert!(text.contains("authentication required"), "{text}");
    }
    let r = untrusted
        .get(url(&server, "/"))
        .basic_auth("api", Some("wrong"))
        .send()
        .await
        .expect("calling the listener");
    assert_eq!(r.status().as_u16(), 401);

    let r = untrusted
        .get(url(&server, "/"))
        .basic_auth("api", Some("s3cret"))
        .send()
        .await
        .expect("calling the listener");
    assert_eq!(r.status().as_u16(), 200);
    let csp = r
        .headers()
        .get("content-security-policy")
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_string();
    assert!(csp.contains("frame-ancestors 'none'"), "{csp}");
    assert!(r
        .text()
        .await
        .unwrap_or_default()
        .contains("/dashboard/app.js"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_state_change_a_browser_sends_for_another_site_is_refused_even_from_a_trusted_host() {
    let server = start().await;
    let trusted = client(Ipv4Addr::LOCALHOST);
    let body = serde_json::json!({"domain": "x.example", "reason": "r"});
    let r = trusted
        .post(url(&server, "/api/admin/suspend/v1"))
        .header("Origin", "https://attacker.example")
        .json(&body)
        .send()
        .await
        .expect("calling the admin API");
    assert_eq!(r.status().as_u16(), 403);
    let text = r.text().await.unwrap_or_default();
    assert!(text.contains("cross-site request refused"), "{text}");
    let list: Value = trusted
        .get(url(&server, "/api/admin/suspend/v1"))
        .send()
        .await
        .expect("listing suspensions")
        .json()
        .await
        .expect("a JSON list");
    assert_eq!(list, serde_json::json!([]), "nothing was suspended");

    // The dashboard's own requests name the listener as their origin.
    let r = trusted
        .post(url(&server, "/api/admin/suspend/v1"))
        .header("Origin", format!("http://127.0.0.1:{}", server.http_port))
        .json(&body)
        .send()
        .await
        .expect("calling the admin API");
    assert_eq!(r.status().as_u16(), 200);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_event_stream_carries_records_as_they_are_logged_and_ends_at_shutdown() {
    let mut server = start().await;
    let mut stream = client(Ipv4Addr::LOCALHOST)
        .get(url(&server, "/dashboard/events"))
        .send()
        .await
        .expect("opening the event stream");
    assert_eq!(stream.status().as_u16(), 200);
    let ids = send(&server, "user@stream.example", 2).await;
    let mut text = String::new();
    let seen = tokio::time::timeout(WAIT, async {
        loop {
            let chunk = stream.chunk().await.expect("reading the event stream");
            text.push_str(&String::from_utf8_lossy(
                &chunk.expect("the stream ended early"),
            ));
            let delivered: Vec<Value> = text
                .split("\n\n")
                .filter(|e| e.starts_with("event: record\n"))
                .filter_map(|e| e.strip_prefix("event: record\ndata: "))
                .filter_map(|d| serde_json::from_str(d).ok())
                .filter(|r: &Value| r["type"] == "Delivery")
                .collect();
            if delivered.len() == 2 {
                return delivered;
            }
        }
    })
    .await
    .unwrap_or_else(|_| panic!("no two Delivery records in 30s; stream so far:\n{text}"));
    for r in &seen {
        assert!(ids.contains(r["id"].as_str().unwrap_or_default()), "{r}");
    }

    // An open stream must not hold the listener's graceful stop.
    let started = std::time::Instant::now();
    let status = server.stop().await.expect("the server was running");
    assert!(status.success(), "hermod exited with {status}");
    assert!(
        started.elapsed() < common::STOP_TIMEOUT,
        "shutdown waited for the viewer"
    );
    let ended = tokio::time::timeout(WAIT, async {
        while let Ok(Some(_)) = stream.chunk().await {}
    })
    .await;
    assert!(ended.is_ok(), "the stream ends with the server");
}
