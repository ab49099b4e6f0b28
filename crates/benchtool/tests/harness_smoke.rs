//! The benchmark harness end to end, at toy size: `bench/run` pushes 1,000 mails through
//! scenario 2's A2 policy into the shared NATS stream, and every id Hermod accepted must be
//! found at the broker. Speed is not asserted; this proves that bench/run, the policies and
//! the three binaries still fit together.
//!
//! The stream is shared with other tests that publish to it at the same time, so arrival is
//! checked by message id (`--verify-ids`), never by a count delta.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

const MESSAGES: u64 = 1000;
const LIMIT: Duration = Duration::from_secs(150);

#[test]
fn bench_run_gets_every_mail_of_a_small_a2_run_to_the_nats_stream() {
    // Cargo puts every binary of the workspace in one directory; `cargo test --workspace`
    // builds hermod and hermod-loadgen too, because their packages have integration tests.
    let benchtool = PathBuf::from(env!("CARGO_BIN_EXE_hermod-benchtool"));
    let bins = benchtool.parent().expect("binary has a parent directory");
    for b in ["hermod", "hermod-loadgen"] {
        assert!(
            bins.join(b).exists(),
            "{} is missing: run this test through `cargo test --workspace` (or build the \
             workspace's binaries first)",
            bins.join(b).display()
        );
    }
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
    let work = tempfile::tempdir().expect("tempdir");
    let mut child = Command::new("python3")
        .arg(root.join("bench/run"))
        .args(["--scenario", "nats", "--cases", "A2", "--verify-ids"])
        .args(["--messages", &MESSAGES.to_string(), "--connections", "10"])
        .args(["--no-append", "--no-ceiling", "--scenario-timeout", "60"])
        .arg("--bin-dir")
        .arg(bins)
        .arg("--work-dir")
        .arg(work.path())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("python3 runs bench/run");
    let deadline = Instant::now() + LIMIT;
    while child.try_wait().expect("wait for bench/run").is_none() {
        if Instant::now() > deadline {
            let _ = child.kill();
            panic!("bench/run did not finish within {LIMIT:?}");
        }
        std::thread::sleep(Duration::from_millis(200));
    }
    let out = child.wait_with_output().expect("bench/run output");
    let log = format!(
        "stdout:\n{}\nstderr:\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(out.status.success(), "bench/run failed\n{log}");

    let last = std::fs::read_to_string(work.path().join("hermod-bench-last.json"))
        .unwrap_or_else(|e| panic!("bench/run wrote no hermod-bench-last.json: {e}\n{log}"));
    let last: serde_json::Value = serde_json::from_str(&last).expect("last run is JSON");
    let rows = last["results"]["nats"].as_array().expect("nats rows");
    assert_eq!(rows.len(), 1, "--cases A2 runs one case\n{log}");
    let row = &rows[0];
    assert_eq!(row["case"], "A2", "{row}");
    assert_eq!(
        row["accepted"], MESSAGES,
        "loadgen got a 250 for every mail: {row}"
    );
    assert_eq!(
        row["verified_at_broker"], MESSAGES,
        "every accepted id is at the broker: {row}\n{log}"
    );
}
