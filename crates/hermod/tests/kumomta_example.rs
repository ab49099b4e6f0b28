//! KumoMTA's example production policy runs on Hermod: `tests/data/kumomta-example/init.lua`
//! is the policy of KumoMTA's "An Example Configuration" page, changed only in file paths and
//! listen ports (its header lists the lines), with the helpers' data files written in the
//! formats KumoMTA documents. `hermod check` passes it; `hermod serve` runs it, and mail
//! injected over SMTP (and over its HTTPS listener) is routed by the queue helper (tenant from a header) through the
//! sources and pools of sources.toml, signed by the dkim_sign helper (verified by dkimpy),
//! shaped by the shaping helper (the receiving MTA's port comes from shaping.toml, by MX
//! rollup), and delivered through DNS from a zone file to another `hermod` process.

mod common;

use std::collections::HashSet;
use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use common::{read_log_records, records_of, smtp, Server, ServerConfig};
use serde_json::Value;

#[path = "../../dkim/tests/support/dkimpy.rs"]
mod dkimpy;

const WAIT: Duration = Duration::from_secs(60);

fn data_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/data/kumomta-example")
}

fn keys_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../dkim/tests/keys")
}

/// A receiving MTA on 127.0.0.2 (the MX host of the zone file): files what it receives,
/// byte for byte, into `<dir>/sink/<domain>/new`.
async fn receiving_mta() -> Server {
    let mut cfg = ServerConfig::with_p0(
        r#"
kumo.on('get_queue_config', function(domain, tenant, campaign, routing_domain)
  return kumo.make_queue_config {
    protocol = { maildir_path = os.getenv('ACCEPT_DIR') .. '/sink/{{ domain }}' },
  }
end)
"#,
    );
    cfg.smtp_ip = Ipv4Addr::new(127, 0, 0, 2);
    cfg.listener_extra =
        "trace_headers = { received_header = false, supplemental_header = false }".into();
    Server::launch(cfg).await
}

/// The example's files in `dir`, placeholders filled in; the policy's text.
fn install(dir: &Path, ports: &[(&str, u16)]) -> String {
    let fill = |text: String| {
        let mut text = text
            .replace("@DIR@", &dir.display().to_string())
            .replace("@KEYS@", &keys_dir().display().to_string());
        for (name, port) in ports {
            text = text.replace(&format!("@{name}@"), &port.to_string());
        }
        text
    };
    let mut policy = String::new();
    for entry in std::fs::read_dir(data_dir()).expect("the example's data directory") {
        let path = entry.expect("entry").path();
        let text = fill(std::fs::read_to_string(&path).expect("reading example data"));
        assert!(
            !text.contains('@') || path.ends_with("init.lua"),
            "{} has a placeholder left",
            path.display()
        );
        let name = path.file_name().expect("a file name");
        std::fs::write(dir.join(name), &text).expect("writing example data");
        if name == "init.lua" {
            policy = text;
        }
    }
    policy
}

fn message(tenant: Option<&str>, subject: &str) -> Vec<u8> {
    let tenant = tenant
        .map(|t| format!("X-Tenant: {t}\r\n"))
        .unwrap_or_default();
    format!(
        "From: Sender <sender@examplecorp.test>\r\n\
         To: <rcpt@customer.test>\r\n\
         Subject: {subject}\r\n\
         Date: Sat, 05 Dec 2026 00:00:00 +0000\r\n\
         Message-ID: <{subject}@examplecorp.test>\r\n\
         {tenant}\
         \r\n\
         Hello from the example policy.\r\n"
    )
    .into_bytes()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kumomtas_example_policy_checks_serves_routes_signs_shapes_and_delivers() {
    let rx = receiving_mta().await;
    let scratch = tempfile::tempdir().expect("tempdir");
    let dir = scratch.path();
    let smtp_port = common::free_port();
    let https_port = common::free_port();
    let ports = [
        ("SMTP_PORT", smtp_port),
        ("SMTP6_PORT", common::free_port()),
        ("HTTP_PORT", common::free_port()),
        ("HTTPS_PORT", https_port),
        ("SINK_PORT", rx.smtp_port),
    ];
    let policy = install(dir, &ports);
    let zone = dir.join("zone.txt");

    let out = std::process::Command::new(env!("CARGO_BIN_EXE_hermod"))
        .arg("check")
        .arg("--policy")
        .arg(dir.join("init.lua"))
        .arg("--dns-zone-file")
        .arg(&zone)
        .output()
        .expect("running hermod check");
    assert!(
        out.status.success(),
        "hermod check must pass the example:\n{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );

    let mut cfg = ServerConfig::with_p0(&policy);
    cfg.with_p0 = false;
    cfg.smtp_port = Some(smtp_port);
    cfg.args = vec!["--dns-zone-file".into(), zone.display().to_string()];
    let tx = Server::launch(cfg).await;

    let mut client = smtp::Client::connect(tx.smtp_addr()).await;
    let tenant_id = client
        .send(
            "sender@examplecorp.test",
            "rcpt@customer.test",
            &message(Some("mytenant"), "tenant"),
        )
        .await;
    let default_id = client
        .send(
            "sender@examplecorp.test",
            "rcpt@customer.test",
            &message(None, "default"),
        )
        .await;
    client.quit().await;

    // The example's second HTTP listener has use_tls = true (a self-signed certificate):
    // inject a third message there, for http_message_generated.
    let _ = rustls::crypto::ring::default_provider().install_default();
    let https = reqwest::Client::builder()
        .tls_danger_accept_invalid_certs(true)
        .timeout(Duration::from_secs(20))
        .no_proxy()
        .build()
        .expect("an HTTPS client");
    let content = String::from_utf8(message(Some("mytenant"), "https")).expect("ASCII");
    let answer: Value = https
        .post(format!("https://127.0.0.1:{https_port}/api/inject/v1"))
        .json(&serde_json::json!({
            "envelope_sender": "sender@examplecorp.test",
            "recipients": [{ "email": "rcpt@customer.test" }],
            "content": content,
        }))
        .send()
        .await
        .expect("injecting over HTTPS")
        .json()
        .await
        .expect("the injection answer");
    assert_eq!(answer["success_count"], 1, "{answer}");

    let records = common::eventually(WAIT, "three Delivery records", || {
        let records = read_log_records(&dir.join("logs"));
        let done = records.iter().filter(|r| r["type"] == "Delivery").count() == 3;
        async move { done.then_some(records) }
    })
    .await;
    let http_id = records
        .iter()
        .find(|r| r["type"] == "Reception" && r["reception_protocol"] == "HTTP")
        .and_then(|r| r["id"].as_str())
        .expect("the HTTP Reception record")
        .to_string();
    let ids: HashSet<String> = [tenant_id.clone(), default_id.clone(), http_id.clone()].into();
    assert_eq!(records_of(&records, "Delivery", &ids).len(), 3);
    let delivery = |id: &str| -> Value {
        records
            .iter()
            .find(|r| r["type"] == "Delivery" && r["id"] == id)
            .cloned()
            .unwrap_or_else(|| panic!("no Delivery for {id}"))
    };
    let d = delivery(&tenant_id);
    assert_eq!(d["egress_pool"], "pool-2", "{d}");
    assert!(
        d["egress_source"] == "ip-2" || d["egress_source"] == "ip-3",
        "{d}"
    );
    assert!(
        d["queue"].as_str().is_some_and(|q| q.contains("mytenant")),
        "{d}"
    );
    assert_eq!(d["peer_address"]["addr"], "127.0.0.2", "{d}");
    // customer.test has no table in shaping.toml: the port came from dest.test's (MX rollup).
    assert!(
        d["site"]
            .as_str()
            .is_some_and(|s| s.ends_with("->mx.dest.test@smtp")),
        "{d}"
    );
    let d = delivery(&http_id);
    assert_eq!(d["egress_pool"], "pool-2", "{d}");
    let d = delivery(&default_id);
    assert_eq!(d["egress_pool"], "pool-1", "{d}");
    assert_eq!(d["egress_source"], "ip-1", "{d}");
    assert!(
        d["queue"]
            .as_str()
            .is_some_and(|q| q.contains("default-tenant")),
        "{d}"
    );

    // The receiving MTA has all three, signed by examplecorp.test's key, without the tenant header.
    let new = rx.dir().join("sink/customer.test/new");
    let files: Vec<PathBuf> = std::fs::read_dir(&new)
        .unwrap_or_else(|e| panic!("{}: {e}", new.display()))
        .filter_map(|e| e.ok().map(|e| e.path()))
        .collect();
    assert_eq!(files.len(), 3, "three messages in {}", new.display());
    let record = keys_dir().join("rsa.dns.txt");
    for f in files {
        let bytes = std::fs::read(&f).expect("reading a received message");
        let text = String::from_utf8_lossy(&bytes);
        assert!(
            text.contains("DKIM-Signature: v=1; a=rsa-sha256; s=rsa; d=examplecorp.test;"),
            "{text}"
        );
        assert!(
            !text.contains("X-Tenant"),
            "the helper removes the tenant header:\n{text}"
        );
        assert!(
            dkimpy::verifies(
                &bytes,
                &[("rsa._domainkey.examplecorp.test", record.as_path())]
            ),
            "dkimpy must verify the signature:\n{text}"
        );
    }

    // The example's TSA endpoints (127.0.0.1:8008) do not exist: the server said that
    // automation is unavailable and went on with the static rules.
    let stderr = tx.stderr();
    assert!(
        stderr.contains("traffic shaping automation is not available"),
        "{stderr}"
    );
}
