//! `hermod top` in a real terminal: tmux runs it in a detached session of a
//! fixed size, `capture-pane` reads the screen, `send-keys` types `q`.
//! tmux is installed by scripts/services.

mod common;

use std::path::PathBuf;
use std::process::Command;
use std::time::{Duration, Instant};

use common::{free_port, smtp, test_p0, Server, ServerConfig};

const WAIT: Duration = Duration::from_secs(40);

const POLICY: &str = r#"
kumo.on('get_queue_config', function(domain, tenant, campaign, routing_domain)
  return kumo.make_queue_config {
    protocol = { maildir_path = os.getenv('ACCEPT_DIR') .. '/maildir/{{ domain }}' },
  }
end)
"#;

/// A private tmux server (its own socket) with one detached session running
/// a plain shell; killed on drop.
struct Tmux {
    socket: PathBuf,
    _dir: tempfile::TempDir,
}

impl Tmux {
    fn start(width: u16, height: u16) -> Tmux {
        let dir = tempfile::tempdir().expect("tempdir for the tmux socket");
        let socket = dir.path().join("tmux.sock");
        let t = Tmux { socket, _dir: dir };
        let (w, h) = (width.to_string(), height.to_string());
        t.run(&[
            "-f",
            "/dev/null",
            "new-session",
            "-d",
            "-s",
            "top",
            "-x",
            &w,
            "-y",
            &h,
            "env",
            "-u",
            "HERMOD_ENDPOINT",
            "PS1=$ ",
            "bash",
            "--noprofile",
            "--norc",
        ]);
        t
    }

    fn run(&self, args: &[&str]) -> String {
        // -u: the screen is UTF-8 (box drawing) whatever the locale.
        let out = Command::new("tmux")
            .arg("-u")
            .arg("-S")
            .arg(&self.socket)
            .args(args)
            .output()
            .unwrap_or_else(|e| panic!("running tmux (scripts/services installs it): {e}"));
        assert!(
            out.status.success(),
            "tmux {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// Type a command line into the shell.
    fn type_line(&self, line: &str) {
        self.run(&["send-keys", "-t", "top", "-l", line]);
        self.run(&["send-keys", "-t", "top", "Enter"]);
    }

    fn key(&self, key: &str) {
        self.run(&["send-keys", "-t", "top", key]);
    }

    /// The visible screen, one string with a line per row.
    fn screen(&self) -> String {
        self.run(&["capture-pane", "-p", "-t", "top"])
    }

    fn alternate_screen(&self) -> bool {
        self.run(&["display-message", "-p", "-t", "top", "#{alternate_on}"])
            .trim()
            == "1"
    }

    /// Capture until `ok(screen)` gives a value; panics with the last screen.
    fn wait_for<T>(&self, what: &str, ok: impl Fn(&str) -> Option<T>) -> T {
        let deadline = Instant::now() + WAIT;
        loop {
            let s = self.screen();
            if let Some(v) = ok(&s) {
                return v;
            }
            assert!(
                Instant::now() < deadline,
                "timed out waiting for {what}; the screen:\n{s}"
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }
}

impl Drop for Tmux {
    fn drop(&mut self) {
        let _ = Command::new("tmux")
            .arg("-S")
            .arg(&self.socket)
            .arg("kill-server")
            .output();
    }
}

/// `hermod top --endpoint <endpoint>`, then the exit status and whether
/// the terminal is back in canonical (cooked) mode.
fn top_command(endpoint: &str) -> String {
    let bin = env!("CARGO_BIN_EXE_hermod");
    format!(
        "{bin} top --endpoint {endpoint}; echo \"top exited $?\"; \
         if stty -a | grep -q -- -icanon; then echo terminal RAW; else echo terminal COOKED; fi"
    )
}

/// The rate and total of a row of the rates table (`delivered 0.0 100`).
fn rates_row(screen: &str, name: &str) -> Option<(Option<f64>, u64)> {
    screen.lines().find_map(|l| {
        // Words without the table's borders.
        let mut w = l
            .split_whitespace()
            .map(|t| t.trim_matches(|c: char| !c.is_ascii_alphanumeric() && c != '.' && c != '-'))
            .filter(|t| !t.is_empty());
        while let Some(word) = w.next() {
            if word == name {
                let rate = w.next()?;
                let total = w.next()?.parse().ok()?;
                return Some((rate.parse().ok(), total));
            }
        }
        None
    })
}

fn delivered(recs: &[serde_json::Value]) -> usize {
    recs.iter().filter(|r| r["type"] == "Delivery").count()
}

/// Quit with `q`; the shell reports a clean exit and a restored terminal.
fn quit_and_check_restored(tmux: &Tmux) {
    tmux.key("q");
    // Whole lines: the typed command line holds these words too.
    let has = |s: &str, line: &str| s.lines().any(|l| l.trim() == line);
    let s = tmux.wait_for("top to exit", |s| {
        (has(s, "terminal COOKED") || has(s, "terminal RAW")).then(|| s.to_string())
    });
    assert!(has(&s, "top exited 0"), "{s}");
    assert!(has(&s, "terminal COOKED"), "raw mode is left: {s}");
    assert!(!tmux.alternate_screen(), "the alternate screen is left");
    assert!(
        !s.contains("(q quits)"),
        "the UI is gone from the screen: {s}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn top_shows_deliveries_and_their_rate_and_q_restores_the_terminal() {
    let server = Server::start(POLICY).await;
    let addr = server.smtp_addr();
    smtp::send_messages(addr, "user@example.com", "top-first", 100, 4).await;
    server
        .wait_for_records(WAIT, "100 deliveries", |r| delivered(r) >= 100)
        .await;

    let tmux = Tmux::start(120, 40);
    tmux.type_line(&top_command(&format!(
        "http://127.0.0.1:{}",
        server.http_port
    )));
    let s = tmux.wait_for("100 delivered on the screen", |s| {
        (rates_row(s, "delivered")?.1 == 100).then(|| s.to_string())
    });
    assert!(tmux.alternate_screen(), "top draws on the alternate screen");
    assert_eq!(rates_row(&s, "received").map(|r| r.1), Some(100), "{s}");
    assert!(
        s.contains("maildir:unspecified->example.com@maildir"),
        "the ready queue's row: {s}"
    );
    assert!(s.contains("paused queues none"), "{s}");
    // Every second a new poll: once there are two, rates are numbers.
    tmux.wait_for("a delivered rate", |s| rates_row(s, "delivered")?.0);

    // More mail while it runs: the rate goes above zero and the total follows.
    let more = tokio::spawn(async move {
        smtp::send_messages(addr, "user@example.com", "top-more", 50, 2).await;
    });
    let rate = tmux.wait_for("a delivered rate above zero", |s| {
        rates_row(s, "delivered")?.0.filter(|r| *r > 0.0)
    });
    assert!(rate <= 150.0, "{rate}");
    more.await.expect("sender task");
    tmux.wait_for("150 delivered on the screen", |s| {
        (rates_row(s, "delivered")?.1 == 150).then_some(())
    });
    quit_and_check_restored(&tmux);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn top_shows_an_endpoint_that_does_not_answer_and_recovers_when_it_does() {
    let http_port = free_port();
    let tmux = Tmux::start(100, 30);
    tmux.type_line(&top_command(&format!("http://127.0.0.1:{http_port}")));
    let s = tmux.wait_for("the failure on the screen", |s| {
        s.contains("not answering").then(|| s.to_string())
    });
    assert!(s.contains(&format!("127.0.0.1:{http_port}")), "{s}");

    // A server on that port: the next poll answers.
    let smtp_port = free_port();
    let mut cfg = ServerConfig::with_p0("");
    cfg.with_p0 = false;
    cfg.scenario = format!("{}\n{POLICY}", test_p0(smtp_port, http_port));
    cfg.smtp_port = Some(smtp_port);
    let server = Server::launch(cfg).await;
    smtp::send_messages(server.smtp_addr(), "user@example.com", "top-late", 3, 1).await;
    let s = tmux.wait_for("figures after the outage", |s| {
        (rates_row(s, "delivered")?.1 == 3).then(|| s.to_string())
    });
    assert!(!s.contains("not answering"), "{s}");
    quit_and_check_restored(&tmux);
    drop(server);
}
