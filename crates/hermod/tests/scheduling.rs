//! Per-message scheduling (`msg:set_scheduling`, `msg:import_scheduling_header` and the
//! queue helper's `scheduling_header`; crates/message/src/scheduling.rs and
//! crates/queue/src/schedule.rs) through the real `hermod` binary, delivering to maildirs.

mod common;

use std::collections::HashSet;
use std::path::Path;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use common::{records_of, smtp, unique, Server};
use serde_json::Value;

const WAIT: Duration = Duration::from_secs(30);
const EVERY_DAY: &str = "Mon,Tue,Wed,Thu,Fri,Sat,Sun";
const DAYS: [&str; 7] = ["Mon", "Tue", "Wed", "Thu", "Fri", "Sat", "Sun"];

/// The weekday `ahead` days from today in America/Phoenix (UTC-7 all year).
fn phoenix_weekday(ahead: u64) -> &'static str {
    let secs = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs();
    let days = (secs - 7 * 3600) / 86400;
    // 1970-01-01 was a Thursday.
    DAYS[((days + 3 + ahead) % 7) as usize]
}

fn window(dow: &str) -> String {
    format!(r#"{{"dow":"{dow}","tz":"America/Phoenix","start":"00:00:00","end":"23:59:59"}}"#)
}

fn message(marker: &str, to: &str, headers: &str) -> Vec<u8> {
    format!(
        "From: <sender@example.com>\r\nTo: <{to}>\r\nSubject: {marker}\r\n{headers}\r\n{marker}\r\n"
    )
    .into_bytes()
}

async fn send(server: &Server, to: &str, headers: &str) -> String {
    let mut c = smtp::Client::connect(server.smtp_addr()).await;
    c.command("EHLO test", 250).await;
    let id = c
        .send(
            "sender@example.com",
            to,
            &message(&unique("sched"), to, headers),
        )
        .await;
    c.quit().await;
    id
}

fn ids(id: &str) -> HashSet<String> {
    HashSet::from([id.to_string()])
}

fn maildir_files(dir: &Path, domain: &str) -> Vec<String> {
    let new = dir.join("maildir").join(domain).join("new");
    std::fs::read_dir(new)
        .map(|d| {
            d.filter_map(|e| std::fs::read_to_string(e.ok()?.path()).ok())
                .collect()
        })
        .unwrap_or_default()
}

fn http() -> reqwest::Client {
    let _ = rustls::crypto::ring::default_provider().install_default();
    reqwest::Client::builder()
        .timeout(Duration::from_secs(20))
        .no_proxy()
        .build()
        .expect("building the HTTP client")
}

fn kinds_of(records: &[Value], id: &str) -> Vec<String> {
    records
        .iter()
        .filter(|r| r["id"] == id)
        .map(|r| r["type"].as_str().unwrap_or("?").to_string())
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_queue_helpers_scheduling_header_holds_closed_windows_and_delays_first_attempts_across_a_restart(
) {
    let data = tempfile::tempdir().unwrap();
    let toml = r#"
scheduling_header = "X-Schedule"
[queue.default]
retry_interval = '1s'
max_retry_interval = '1s'
protocol = { maildir_path = 'DIR/maildir/{{ domain }}' }
"#
    .replace("DIR", &data.path().display().to_string());
    let toml_path = data.path().join("queues.toml");
    std::fs::write(&toml_path, toml).unwrap();
    let policy = format!(
        r#"
local queue_helper = require('policy-extras.queue'):setup {{ '{}' }}
kumo.on('smtp_server_message_received', function(msg)
  queue_helper:apply(msg)
end)
"#,
        toml_path.display()
    );
    let mut server = Server::start(&policy).await;

    let open = send(
        &server,
        "user@open.example",
        &format!("X-Schedule: {}\r\n", window(EVERY_DAY)),
    )
    .await;
    // Only the day after tomorrow (Phoenix time): closed for at least a day.
    let closed = send(
        &server,
        "user@closed.example",
        &format!("X-Schedule: {}\r\n", window(phoenix_weekday(2))),
    )
    .await;
    let first_attempt = SystemTime::now() + Duration::from_secs(8);
    let first_attempt_secs = first_attempt.duration_since(UNIX_EPOCH).unwrap().as_secs() + 1;
    let first_attempt = UNIX_EPOCH + Duration::from_secs(first_attempt_secs);
    let later = send(
        &server,
        "user@later.example",
        &format!(
            "X-Schedule: {{\"first_attempt\":\"{}\"}}\r\n",
            humantime::format_rfc3339_seconds(first_attempt)
        ),
    )
    .await;

    let records = server
        .wait_for_records(WAIT, "the open window's Delivery", |r| {
            records_of(r, "Delivery", &ids(&open)).len() == 1
        })
        .await;
    let delivered = maildir_files(data.path(), "open.example");
    assert_eq!(delivered.len(), 1);
    assert!(
        !delivered[0].contains("X-Schedule"),
        "the helper removes the header: {}",
        delivered[0]
    );
    for held in [&closed, &later] {
        let delayed = records_of(&records, "Delayed", &ids(held));
        assert_eq!(delayed.len(), 1, "{:?}", kinds_of(&records, held));
        let content = delayed[0]["response"]["content"]
            .as_str()
            .unwrap_or_default();
        assert!(
            content.starts_with("Context: Received, ScheduledForLater. Next due in"),
            "{content}"
        );
    }

    // The admin API shows the held message's scheduling, and no attempt.
    let inspect: Value = http()
        .get(format!(
            "http://127.0.0.1:{}/api/admin/inspect-message/v1?id={closed}",
            server.http_port
        ))
        .send()
        .await
        .expect("inspect-message")
        .json()
        .await
        .expect("inspect-message JSON");
    assert_eq!(
        inspect["message"]["scheduling"],
        serde_json::from_str::<Value>(&window(phoenix_weekday(2))).unwrap(),
        "{inspect}"
    );
    assert_eq!(inspect["message"]["num_attempts"], 0, "{inspect}");

    // Both held messages come back from the spool with their scheduling.
    server.restart().await;
    assert_eq!(server.enumerated_per_start().last(), Some(&2));
    let records = server
        .wait_for_records(WAIT, "the delayed first attempt's Delivery", |r| {
            records_of(r, "Delivery", &ids(&later)).len() == 1
        })
        .await;
    let at = records_of(&records, "Delivery", &ids(&later))[0]["timestamp"]
        .as_u64()
        .unwrap_or_default();
    assert!(
        at >= first_attempt_secs,
        "delivered at {at}, before first_attempt {first_attempt_secs}"
    );
    assert_eq!(maildir_files(data.path(), "later.example").len(), 1);
    // The closed window's message was never attempted, before or after the restart.
    assert_eq!(
        kinds_of(&records, &closed),
        ["Reception", "Delayed"],
        "only received and delayed"
    );
    assert!(maildir_files(data.path(), "closed.example").is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn set_scheduling_returns_its_table_expires_past_messages_and_bad_values_fail_the_event() {
    let data = tempfile::tempdir().unwrap();
    let policy = r#"
kumo.on('get_queue_config', function(domain, tenant, campaign, routing_domain)
  return kumo.make_queue_config {
    retry_interval = '1s', protocol = { maildir_path = 'DIR/maildir/{{ domain }}' },
  }
end)
kumo.on('smtp_server_message_received', function(msg)
  local case = msg:get_first_named_header_value 'X-Case'
  if case == 'open' then
    local t = msg:set_scheduling { dow = 'Mon,Tue,Wed,Thu,Fri,Sat,Sun', tz = 'Asia/Tokyo',
      start = '00:00:00', ['end'] = '23:59:59' }
    msg:append_header('X-Sched-Table', kumo.json_encode(t))
  elseif case == 'expired' then
    msg:set_scheduling { expires = '2001-02-03T04:05:06Z' }
  elseif case == 'bad' then
    msg:set_scheduling { dow = 'Mon', tz = 'Mars/Olympus', start = '09:00:00', ['end'] = '17:00:00' }
  elseif case == 'badheader' then
    msg:import_scheduling_header('X-Schedule', true)
  end
end)
"#
    .replace("DIR", &data.path().display().to_string());
    let server = Server::start(&policy).await;

    let open = send(&server, "user@open.example", "X-Case: open\r\n").await;
    let expired = send(&server, "user@expired.example", "X-Case: expired\r\n").await;
    let records = server
        .wait_for_records(WAIT, "a Delivery and an Expiration", |r| {
            records_of(r, "Delivery", &ids(&open)).len() == 1
                && records_of(r, "Expiration", &ids(&expired)).len() == 1
        })
        .await;
    let delivered = maildir_files(data.path(), "open.example");
    let table = delivered[0]
        .lines()
        .find_map(|l| l.strip_prefix("X-Sched-Table: "))
        .unwrap_or_else(|| panic!("no X-Sched-Table header in {}", delivered[0]));
    assert_eq!(
        serde_json::from_str::<Value>(table).unwrap(),
        serde_json::json!({"dow": "Mon,Tue,Wed,Thu,Fri,Sat,Sun", "tz": "Asia/Tokyo",
            "start": "00:00:00", "end": "23:59:59"}),
        "set_scheduling returns KumoMTA's table form"
    );
    let exp = records_of(&records, "Expiration", &ids(&expired))[0];
    let content = exp["response"]["content"].as_str().unwrap_or_default();
    assert!(
        content.contains(
            "exceeds the expiry time 2001-02-03T04:05:06+00:00 configured via set_scheduling"
        ),
        "{content}"
    );
    assert!(maildir_files(data.path(), "expired.example").is_empty());

    for (headers, want) in [
        (
            "X-Case: bad\r\n",
            "set_scheduling: 'tz': unknown time zone 'Mars/Olympus'",
        ),
        (
            "X-Case: badheader\r\nX-Schedule: {\"days\":\"Mon\"}\r\n",
            r#"import_scheduling_header: the X-Schedule header "{\"days\":\"Mon\"}": unknown scheduling field 'days'"#,
        ),
        (
            "X-Case: badheader\r\nX-Schedule: tomorrow\r\n",
            r#"import_scheduling_header: the X-Schedule header "tomorrow": is not JSON"#,
        ),
    ] {
        let mut c = smtp::Client::connect(server.smtp_addr()).await;
        c.command("EHLO test", 250).await;
        let reply = c
            .transaction(
                "sender@example.com",
                "user@bad.example",
                &message("bad", "user@bad.example", headers),
            )
            .await;
        assert_eq!(reply.code, 421, "{reply:?}");
        assert!(
            server.stderr().contains(want),
            "no {want:?} in stderr:\n{}",
            server.stderr_tail()
        );
    }
    // The server keeps serving.
    let after = send(&server, "user@open.example", "X-Case: open\r\n").await;
    server
        .wait_for_records(WAIT, "a Delivery after the errors", |r| {
            records_of(r, "Delivery", &ids(&after)).len() == 1
        })
        .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_window_that_closes_while_the_message_waits_in_its_ready_queue_holds_it_without_an_attempt(
) {
    // The window ends a few seconds from now (UTC), on the same day.
    let seconds_of_day = |t: SystemTime| t.duration_since(UNIX_EPOCH).unwrap().as_secs() % 86400;
    if seconds_of_day(SystemTime::now()) > 86400 - 30 {
        tokio::time::sleep(Duration::from_secs(40)).await;
    }
    let end = seconds_of_day(SystemTime::now() + Duration::from_secs(6));
    let end = format!("{:02}:{:02}:{:02}", end / 3600, end / 60 % 60, end % 60);
    let data = tempfile::tempdir().unwrap();
    let policy = r#"
kumo.on('get_queue_config', function(domain, tenant, campaign, routing_domain)
  return kumo.make_queue_config {
    retry_interval = '1s', protocol = { maildir_path = 'DIR/maildir/{{ domain }}' },
  }
end)
kumo.on('smtp_server_message_received', function(msg)
  msg:import_scheduling_header('X-Schedule', true)
end)
"#
    .replace("DIR", &data.path().display().to_string());
    let cfg = common::ServerConfig::with_p0(&policy).env("HERMOD_LOG", "info,hermod_queue=debug");
    let server = Server::launch(cfg).await;

    // The ready queue holds the message past the window's end.
    let suspend = http()
        .post(format!(
            "http://127.0.0.1:{}/api/admin/suspend-ready-q/v1",
            server.http_port
        ))
        .json(&serde_json::json!({
            "name": "unspecified->closing.example@maildir",
            "reason": "outlast the window",
            "duration": "8s",
        }))
        .send()
        .await
        .expect("suspending the ready queue");
    assert_eq!(suspend.status().as_u16(), 200);
    let id = send(
        &server,
        "user@closing.example",
        &format!(
            "X-Schedule: {}\r\n",
            serde_json::json!({"dow": EVERY_DAY, "tz": "Etc/UTC", "start": "00:00:00", "end": end})
        ),
    )
    .await;
    let deadline = std::time::Instant::now() + WAIT;
    while !server
        .stderr()
        .contains("outside its scheduling window; waiting")
    {
        assert!(
            std::time::Instant::now() < deadline,
            "the session never put the message back:\n{}",
            server.stderr_tail()
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    tokio::time::sleep(Duration::from_secs(2)).await;
    let records = server.log_records();
    assert_eq!(
        kinds_of(&records, &id),
        ["Reception"],
        "received in its window, then neither attempted nor delayed by a failure"
    );
    assert!(maildir_files(data.path(), "closing.example").is_empty());
}
