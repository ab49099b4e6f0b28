//! DKIM signing through the real `hermod` binary: a policy signs in
//! `smtp_server_message_received` as KumoMTA's examples do, the message is delivered into a
//! maildir, and dkimpy (Debian's python3-dkim, an independent verifier) checks the delivered
//! file against the test keys' records.

mod common;

use std::collections::HashSet;
use std::path::{Path, PathBuf};
use std::time::Duration;

use common::{records_of, smtp, Server, ServerConfig};

#[path = "../../dkim/tests/support/dkimpy.rs"]
mod dkimpy;

const WAIT: Duration = Duration::from_secs(30);

fn keys_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../dkim/tests/keys")
}

/// Two signatures per message, RSA then Ed25519 (KumoMTA's FAQ on multiple signatures does
/// the same), built per message as published policies do; mail goes to one maildir.
const POLICY: &str = r#"
local KEYS = os.getenv 'DKIM_KEYS'
kumo.on('smtp_server_message_received', function(msg)
  local domain = msg:sender().domain
  msg:dkim_sign(kumo.dkim.rsa_sha256_signer {
    domain = domain,
    selector = 'rsa',
    headers = { 'From', 'To', 'Subject' },
    key = KEYS .. '/rsa.pem',
  })
  msg:dkim_sign(kumo.dkim.ed25519_signer {
    domain = domain,
    selector = 'ed',
    headers = { 'From', 'To', 'Subject' },
    over_sign = true,
    key = { key_data = io.open(KEYS .. '/ed25519.pem'):read('a') },
  })
end)
kumo.on('get_queue_config', function(domain, tenant, campaign, routing_domain)
  return kumo.make_queue_config {
    protocol = { maildir_path = os.getenv('ACCEPT_DIR') .. '/maildir' },
  }
end)
"#;

/// The content of the one message in the server's `maildir/new`.
fn delivered_one(server: &Server) -> Vec<u8> {
    let new = server.dir().join("maildir/new");
    let files: Vec<PathBuf> = std::fs::read_dir(&new)
        .unwrap_or_else(|e| panic!("{}: {e}", new.display()))
        .filter_map(|e| e.ok().map(|e| e.path()))
        .collect();
    assert_eq!(files.len(), 1, "one delivered file in {}", new.display());
    std::fs::read(&files[0]).expect("reading the delivered message")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mail_signed_on_reception_is_delivered_with_signatures_dkimpy_verifies() {
    let keys = keys_dir();
    let cfg = ServerConfig::with_p0(POLICY).env("DKIM_KEYS", &keys.display().to_string());
    let server = Server::launch(cfg).await;

    let data = b"From: Sender <sender@signed.example>\r\n\
To: rcpt@dest.example\r\n\
Subject: signed in transit\r\n\
\r\n\
A body line.\r\n\
.A line that is dot-stuffed on the wire.\r\n";
    let mut client = smtp::Client::connect(server.smtp_addr()).await;
    let id = client
        .send("sender@signed.example", "rcpt@dest.example", data)
        .await;
    client.quit().await;
    let ids: HashSet<String> = [id].into_iter().collect();
    server
        .wait_for_records(WAIT, "the Delivery", |r| {
            records_of(r, "Delivery", &ids).len() == 1
        })
        .await;

    let delivered = delivered_one(&server);
    let text = String::from_utf8_lossy(&delivered);
    assert_eq!(
        text.matches("DKIM-Signature: v=1; a=").count(),
        2,
        "two signatures:\n{text}"
    );
    // Each signature is prepended, so the last one made comes first.
    let ed = text.find("DKIM-Signature: v=1; a=ed25519-sha256; s=ed; d=signed.example;");
    let rsa = text.find("DKIM-Signature: v=1; a=rsa-sha256; s=rsa; d=signed.example;");
    assert!(
        matches!((ed, rsa), (Some(ed), Some(rsa)) if ed < rsa),
        "the Ed25519 signature above the RSA one:\n{text}"
    );
    assert!(text.ends_with(std::str::from_utf8(data).unwrap()), "{text}");

    let rsa_record = keys.join("rsa.dns.txt");
    let ed_record = keys.join("ed25519.dns.txt");
    let records = [
        ("rsa._domainkey.signed.example", rsa_record.as_path()),
        ("ed._domainkey.signed.example", ed_record.as_path()),
    ];
    assert!(
        dkimpy::verifies(&delivered, &records),
        "dkimpy must verify both signatures:\n{text}"
    );

    // The same check must fail for a message changed after signing, so a pass above means
    // the signatures cover this content.
    let tampered = text.replace("A body line.", "A forged line.");
    assert!(!dkimpy::verifies(tampered.as_bytes(), &records));
    let resubjected = text.replace("Subject: signed in transit", "Subject: changed");
    assert!(!dkimpy::verifies(resubjected.as_bytes(), &records));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hermod_check_reports_an_unknown_dkim_parameter_at_its_line() {
    let dir = tempfile::tempdir().expect("tempdir");
    let policy = dir.path().join("policy.lua");
    std::fs::write(
        &policy,
        "local kumo = require 'kumo'\n\
         kumo.on('init', function()\n\
           kumo.dkim.rsa_sha256_signer { domain = 'example.com', selector = 's',\n\
             headers = { 'From' }, key = '/k.pem', atf = true }\n\
         end)\n",
    )
    .expect("writing the policy");
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_hermod"))
        .args(["check", "--policy"])
        .arg(&policy)
        .output()
        .expect("running hermod check");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "{stdout}{stderr}");
    let all = format!("{stdout}{stderr}");
    let line = all
        .lines()
        .find(|l| l.contains("unknown field `atf`"))
        .unwrap_or_else(|| panic!("no unknown-field error in:\n{all}"));
    assert!(
        line.contains("policy.lua:3: kumo.dkim.rsa_sha256_signer: "),
        "{line}"
    );
}

/// A signer built once in `init` and kept in a global (propagated to every Lua context), used
/// in `http_message_generated` for mail injected over HTTP.
const HTTP_POLICY: &str = r#"
kumo.on('init', function()
  SIGNER = kumo.dkim.ed25519_signer {
    domain = 'http.example',
    selector = 'ed',
    headers = { 'From', 'Subject' },
    key = os.getenv 'DKIM_KEYS' .. '/ed25519.der',
  }
end)
kumo.on('http_message_generated', function(msg)
  msg:dkim_sign(SIGNER)
end)
kumo.on('get_queue_config', function(domain, tenant, campaign, routing_domain)
  return kumo.make_queue_config {
    protocol = { maildir_path = os.getenv('ACCEPT_DIR') .. '/maildir' },
  }
end)
"#;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mail_injected_over_http_is_signed_by_a_signer_made_in_init() {
    let keys = keys_dir();
    let cfg = ServerConfig::with_p0(HTTP_POLICY).env("DKIM_KEYS", &keys.display().to_string());
    let server = Server::launch(cfg).await;

    let _ = rustls::crypto::ring::default_provider().install_default();
    let request = serde_json::json!({
        "envelope_sender": "news@http.example",
        "content": "From: <news@http.example>\r\nSubject: injected\r\n\r\nSigned after rendering.\r\n",
        "recipients": [{ "email": "reader@dest.example" }],
    });
    let resp = reqwest::Client::new()
        .post(format!(
            "http://127.0.0.1:{}/api/inject/v1",
            server.http_port
        ))
        .header("Content-Type", "application/json")
        .body(request.to_string())
        .send()
        .await
        .expect("POST /api/inject/v1");
    let status = resp.status().as_u16();
    let body = resp.text().await.unwrap_or_default();
    assert_eq!(status, 200, "{body}\n{}", server.stderr_tail());
    server
        .wait_for_records(WAIT, "the Delivery", |r| {
            r.iter().any(|r| r["type"] == "Delivery")
        })
        .await;

    let delivered = delivered_one(&server);
    let text = String::from_utf8_lossy(&delivered);
    assert!(
        text.contains("DKIM-Signature: v=1; a=ed25519-sha256; s=ed; d=http.example;"),
        "{text}"
    );
    let record = keys.join("ed25519.dns.txt");
    let records = [("ed._domainkey.http.example", record.as_path())];
    assert!(dkimpy::verifies(&delivered, &records), "{text}");
    let tampered = text.replace("Signed after rendering.", "Changed after signing.");
    assert!(!dkimpy::verifies(tampered.as_bytes(), &records));
}

/// KumoMTA's dkim_sign helper with a dkim_data.toml as its guide documents it: a domain
/// block for the From domain, and an additional signature for an ESP domain.
const HELPER_POLICY: &str = r#"
local dkim_sign = require 'policy-extras.dkim_sign'
local dkim_signer = dkim_sign:setup { os.getenv 'DKIM_DATA' }
kumo.on('smtp_server_message_received', function(msg)
  dkim_signer(msg)
end)
kumo.on('get_queue_config', function(domain, tenant, campaign, routing_domain)
  return kumo.make_queue_config {
    protocol = { maildir_path = os.getenv('ACCEPT_DIR') .. '/maildir' },
  }
end)
"#;

fn dkim_data(dir: &Path, keys: &Path, base_extra: &str) -> PathBuf {
    let path = dir.join("dkim_data.toml");
    let text = format!(
        r#"[base]
selector = "rsa"
headers = ["From", "To", "Subject"]
over_sign = true
additional_signatures = ["MyESPName"]
{base_extra}
[domain."helper.example"]
filename = "{keys}/rsa.pem"

[signature."MyESPName"]
policy = "Always"
domain = "esp.example"
selector = "ed"
algo = "ed25519"
filename = "{keys}/ed25519.pem"
"#,
        keys = keys.display()
    );
    std::fs::write(&path, text).expect("writing dkim_data.toml");
    path
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_dkim_sign_helper_signs_for_the_from_domain_and_an_additional_signature() {
    let keys = keys_dir();
    let data_dir = tempfile::tempdir().expect("tempdir");
    let data = dkim_data(data_dir.path(), &keys, "");
    let cfg = ServerConfig::with_p0(HELPER_POLICY).env("DKIM_DATA", &data.display().to_string());
    let server = Server::launch(cfg).await;

    let message = b"From: Someone <someone@helper.example>\r\n\
To: rcpt@dest.example\r\n\
Subject: signed by the helper\r\n\
\r\n\
Body.\r\n";
    let mut client = smtp::Client::connect(server.smtp_addr()).await;
    let id = client
        .send("bounces@helper.example", "rcpt@dest.example", message)
        .await;
    client.quit().await;
    let ids: HashSet<String> = [id].into_iter().collect();
    server
        .wait_for_records(WAIT, "the Delivery", |r| {
            records_of(r, "Delivery", &ids).len() == 1
        })
        .await;
    let delivered = delivered_one(&server);
    let text = String::from_utf8_lossy(&delivered);
    assert!(text.contains("s=rsa; d=helper.example;"), "{text}");
    assert!(text.contains("s=ed; d=esp.example;"), "{text}");
    let records = [
        ("rsa._domainkey.helper.example", keys.join("rsa.dns.txt")),
        ("ed._domainkey.esp.example", keys.join("ed25519.dns.txt")),
    ];
    let records: Vec<(&str, &Path)> = records.iter().map(|(n, p)| (*n, p.as_path())).collect();
    assert!(
        dkimpy::verifies(&delivered, &records),
        "dkimpy must verify both signatures:\n{text}"
    );
    let tampered = text.replace("Body.", "Forged.");
    assert!(!dkimpy::verifies(tampered.as_bytes(), &records));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hermod_check_names_the_dkim_data_line_of_a_misspelt_key() {
    let keys = keys_dir();
    let dir = tempfile::tempdir().expect("tempdir");
    let data = dkim_data(dir.path(), &keys, "oversign = true\n");
    let policy = dir.path().join("policy.lua");
    std::fs::write(&policy, HELPER_POLICY).expect("writing the policy");
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_hermod"))
        .args(["check", "--policy"])
        .arg(&policy)
        .env("DKIM_DATA", &data)
        .env("ACCEPT_DIR", dir.path())
        .output()
        .expect("running hermod check");
    let all = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(!out.status.success(), "{all}");
    assert!(
        all.contains(&format!(
            "{}:6: base: unknown key 'oversign'",
            data.display()
        )),
        "{all}"
    );
}
