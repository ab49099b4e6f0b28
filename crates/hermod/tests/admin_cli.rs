//! The operator verbs of the `hermod` binary (crates/hermod/src/admin_cli.rs,
//! admin_queue_cli.rs) against a running server: suspend, list, inspect,
//! bounce, cancel, queue-summary, rebind, inspect-sched-q, inspect-ready-q
//! and set-log-filter, in text and `--json` form.

mod common;

use std::collections::HashSet;
use std::process::{Command, Output};
use std::time::Duration;

use common::{free_port, records_of, smtp, Server, ServerConfig};
use serde_json::Value;

const WAIT: Duration = Duration::from_secs(30);

const POLICY: &str = r#"
kumo.on('get_queue_config', function(domain, tenant, campaign, routing_domain)
  return kumo.make_queue_config {
    protocol = { maildir_path = os.getenv('ACCEPT_DIR') .. '/maildir/{{ domain }}' },
  }
end)
"#;

/// A server running `POLICY`. The spool's free-space floor is lowered: these
/// tests are about operators' directives, not disk headroom, and run on
/// build machines whose disks other builds fill.
async fn start() -> Server {
    let mut cfg = ServerConfig::with_p0(POLICY);
    cfg.spool_extra = "min_free_space = '1%'".into();
    Server::launch(cfg).await
}

/// Run `hermod <args> --endpoint <server>`; the verb must succeed.
fn hermod(server: &Server, args: &[&str]) -> String {
    let out = run(server, args);
    assert!(
        out.status.success(),
        "hermod {args:?} failed: {}",
        text(&out)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn run(server: &Server, args: &[&str]) -> Output {
    let endpoint = format!("http://127.0.0.1:{}", server.http_port);
    run_at(&endpoint, args, &[])
}

/// Run `hermod <args> --endpoint <endpoint>` with `env` (and no inherited
/// HERMOD_* settings).
fn run_at(endpoint: &str, args: &[&str], env: &[(&str, &str)]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_hermod"))
        .args(args)
        .args(["--endpoint", endpoint])
        .env_remove("HERMOD_ENDPOINT")
        .env_remove("HERMOD_ADMIN_USER")
        .env_remove("HERMOD_ADMIN_PASSWORD")
        .envs(env.iter().copied())
        .output()
        .expect("running hermod")
}

fn text(o: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

fn json(s: &str) -> Value {
    serde_json::from_str(s).unwrap_or_else(|e| panic!("not JSON ({e}): {s}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_cli_verbs_suspend_inspect_bounce_and_cancel_on_a_running_server() {
    let server = start().await;
    let v = json(&hermod(
        &server,
        &[
            "suspend",
            "--domain",
            "cli.example",
            "--reason",
            "cli test",
            "--duration",
            "10m",
            "--json",
        ],
    ));
    let suspension = v["id"].as_str().expect("a suspension id").to_string();
    let listed = hermod(&server, &["suspend-list"]);
    assert!(
        listed.contains(&suspension) && listed.contains("domain=cli.example"),
        "{listed}"
    );

    let sent = smtp::send_messages(server.smtp_addr(), "u@cli.example", "cli", 2, 1).await;
    let ids: HashSet<String> = sent.iter().map(|s| s.id.clone()).collect();
    let inspected = json(&hermod(
        &server,
        &["inspect-message", &sent[0].id, "--want-body"],
    ));
    assert_eq!(
        inspected["message"]["recipient"], "u@cli.example",
        "{inspected}"
    );
    assert!(
        inspected["message"]["data"]
            .as_str()
            .is_some_and(|d| d.contains("Subject: e2e cli #0")),
        "{inspected}"
    );

    // The gauges queue-summary reads are refreshed every second.
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let summary = hermod(&server, &["queue-summary"]);
    assert!(
        summary.contains("READY QUEUE") && summary.contains("SCHEDULED QUEUE"),
        "{summary}"
    );
    let summary = json(&hermod(&server, &["queue-summary", "--json"]));
    assert!(summary["states_by_ready_queue"].is_object(), "{summary}");

    let out = hermod(
        &server,
        &[
            "bounce",
            "--domain",
            "cli.example",
            "--reason",
            "cli bounce",
        ],
    );
    assert!(out.contains("bounce started: id "), "{out}");
    server
        .wait_for_records(WAIT, "AdminBounce records for the held messages", |r| {
            records_of(r, "AdminBounce", &ids).len() == 2
        })
        .await;
    let bounces = json(&hermod(&server, &["bounce-list", "--json"]));
    assert_eq!(bounces[0]["total_bounced"], 2, "{bounces}");
    let bounce = bounces[0]["id"].as_str().expect("a bounce id").to_string();
    let listed = hermod(&server, &["bounce-list"]);
    assert!(
        listed.contains("bounced 2") && listed.contains("cli bounce"),
        "{listed}"
    );

    hermod(&server, &["bounce-cancel", "--id", &bounce]);
    hermod(&server, &["suspend-cancel", "--id", &suspension]);
    assert!(hermod(&server, &["suspend-list"]).contains("no suspensions"));
    assert!(hermod(&server, &["bounce-list"]).contains("no bounces"));

    let ready = json(&hermod(
        &server,
        &[
            "suspend-ready-q",
            "--name",
            "unspecified->cli.example@maildir",
            "--reason",
            "r",
            "--json",
        ],
    ));
    let ready_id = ready["id"]
        .as_str()
        .expect("a ready suspension id")
        .to_string();
    let listed = hermod(&server, &["suspend-list"]);
    assert!(
        listed.contains("unspecified->cli.example@maildir"),
        "{listed}"
    );
    hermod(&server, &["suspend-cancel", "--id", &ready_id]);

    // A cancelled id is refused, and the verb says so and fails.
    let out = run(&server, &["bounce-cancel", "--id", &bounce]);
    assert!(!out.status.success(), "{}", text(&out));
    assert!(text(&out).contains("404"), "{}", text(&out));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_cli_authenticates_with_basic_credentials_where_loopback_is_not_trusted() {
    // A second listener that trusts no loopback address: only credentials
    // the policy accepts let the CLI in.
    let port = free_port();
    let scenario = format!(
        r#"{POLICY}
kumo.on('init', function()
  kumo.start_http_listener {{ listen = '127.0.0.1:{port}', trusted_hosts = {{ '192.0.2.1' }} }}
end)
kumo.on('http_server_validate_auth_basic', function(user, password)
  return user == 'ops' and password == 'op-secret'
end)
"#
    );
    let mut cfg = ServerConfig::with_p0(&scenario);
    cfg.spool_extra = "min_free_space = '1%'".into();
    let server = Server::launch(cfg).await;
    let endpoint = format!("http://127.0.0.1:{port}");
    let args = ["suspend", "--domain", "auth.example", "--reason", "r"];

    let refused = run_at(&endpoint, &args, &[]);
    assert!(!refused.status.success(), "{}", text(&refused));
    assert!(text(&refused).contains("401"), "{}", text(&refused));
    let no_password = run_at(&endpoint, &[&args[..], &["--user", "ops"]].concat(), &[]);
    assert!(
        text(&no_password).contains("HERMOD_ADMIN_PASSWORD"),
        "{}",
        text(&no_password)
    );
    let wrong = run_at(
        &endpoint,
        &args,
        &[
            ("HERMOD_ADMIN_USER", "ops"),
            ("HERMOD_ADMIN_PASSWORD", "nope"),
        ],
    );
    assert!(text(&wrong).contains("401"), "{}", text(&wrong));
    assert!(hermod(&server, &["suspend-list"]).contains("no suspensions"));

    let ok = run_at(
        &endpoint,
        &args,
        &[
            ("HERMOD_ADMIN_USER", "ops"),
            ("HERMOD_ADMIN_PASSWORD", "op-secret"),
        ],
    );
    assert!(ok.status.success(), "{}", text(&ok));
    assert!(hermod(&server, &["suspend-list"]).contains("domain=auth.example"));
    let stderr = server.stderr();
    assert!(
        stderr.contains("by=user ops") && !stderr.contains("op-secret"),
        "the change is logged with the user and without the password"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_cli_rebinds_inspects_queues_and_sets_the_log_filter_on_a_running_server() {
    let server = start().await;
    hermod(
        &server,
        &["suspend", "--domain", "from.example", "--reason", "hold"],
    );
    let sent = smtp::send_messages(server.smtp_addr(), "u@from.example", "move", 2, 1).await;
    let ids: HashSet<String> = sent.iter().map(|s| s.id.clone()).collect();

    let sched = json(&hermod(
        &server,
        &["inspect-sched-q", "from.example", "--json"],
    ));
    assert_eq!(sched["num_scheduled"], 2, "{sched}");
    let listed = hermod(
        &server,
        &["inspect-sched-q", "from.example", "--limit", "1"],
    );
    assert!(
        listed.contains("scheduled queue from.example: 2 waiting"),
        "{listed}"
    );
    assert_eq!(
        listed
            .lines()
            .filter(|l| l.contains("u@from.example"))
            .count(),
        1,
        "{listed}"
    );

    let out = run(
        &server,
        &[
            "rebind",
            "--domain",
            "from.example",
            "--set",
            "queue=to.example",
            "--reason",
            "cli move",
        ],
    );
    assert!(out.status.success(), "{}", text(&out));
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(stdout.contains("rebinding 2 messages"), "{stdout}");
    assert!(
        out.stderr.is_empty(),
        "no progress output when stderr is not a terminal: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let records = server
        .wait_for_records(WAIT, "the rebound messages' Deliveries", |r| {
            records_of(r, "Delivery", &ids).len() == 2
        })
        .await;
    assert_eq!(records_of(&records, "AdminRebind", &ids).len(), 2);
    assert!(records_of(&records, "Delivery", &ids)
        .iter()
        .all(|r| r["queue"] == "to.example"));

    let ready = hermod(
        &server,
        &[
            "inspect-ready-q",
            "unspecified->to.example@maildir",
            "--sched-q",
        ],
    );
    assert!(
        ready.contains("ready queue unspecified->to.example@maildir  protocol maildir")
            && ready.contains("fed by: to.example"),
        "{ready}"
    );
    let missing = run(
        &server,
        &["inspect-ready-q", "unspecified->nowhere@maildir"],
    );
    assert!(
        !missing.status.success() && text(&missing).contains("404"),
        "{}",
        text(&missing)
    );

    let set = hermod(&server, &["set-log-filter", "info,hermod_queue=debug"]);
    assert!(
        set.contains("diagnostic log filter set to info,hermod_queue=debug"),
        "{set}"
    );
    let bad = run(&server, &["set-log-filter", "hermod=loudest"]);
    assert!(
        !bad.status.success() && text(&bad).contains("`filter`"),
        "{}",
        text(&bad)
    );

    // On a terminal the request shows a spinner on stderr (script(1) gives
    // the verb a pseudo-terminal).
    let endpoint = format!("http://127.0.0.1:{}", server.http_port);
    let cmd = format!(
        "{} rebind --domain none.example --set a=b --reason tty --endpoint {endpoint}",
        env!("CARGO_BIN_EXE_hermod")
    );
    let tty = Command::new("script")
        .args(["-qec", &cmd, "/dev/null"])
        .stdin(std::process::Stdio::null())
        .output()
        .expect("running script(1)");
    let shown = text(&tty);
    assert!(tty.status.success(), "{shown}");
    assert!(shown.contains("taking the matching messages"), "{shown}");
    assert!(shown.contains("rebinding 0 messages"), "{shown}");

    // A rebind on a terminal follows its progress to the end.
    hermod(
        &server,
        &["suspend", "--domain", "tty.example", "--reason", "hold"],
    );
    smtp::send_messages(server.smtp_addr(), "u@tty.example", "tty", 3, 1).await;
    let cmd = format!(
        "{} rebind --domain tty.example --set queue=tty2.example --reason tty --endpoint {endpoint}",
        env!("CARGO_BIN_EXE_hermod")
    );
    let tty = Command::new("script")
        .args(["-qec", &cmd, "/dev/null"])
        .stdin(std::process::Stdio::null())
        .output()
        .expect("running script(1)");
    let shown = text(&tty);
    assert!(tty.status.success(), "{shown}");
    assert!(shown.contains("rebound 3 of 3 queued messages"), "{shown}");

    // A bounce on a terminal follows its sweep to the end.
    hermod(
        &server,
        &["suspend", "--domain", "gone.example", "--reason", "hold"],
    );
    smtp::send_messages(server.smtp_addr(), "u@gone.example", "gone", 3, 1).await;
    let cmd = format!(
        "{} bounce --domain gone.example --reason tty --endpoint {endpoint}",
        env!("CARGO_BIN_EXE_hermod")
    );
    let tty = Command::new("script")
        .args(["-qec", &cmd, "/dev/null"])
        .stdin(std::process::Stdio::null())
        .output()
        .expect("running script(1)");
    let shown = text(&tty);
    assert!(tty.status.success(), "{shown}");
    assert!(shown.contains("bounced 3 of 3 queued messages"), "{shown}");
}
