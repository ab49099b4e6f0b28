//! Support for the reliability suite (`tests/crash.rs`): the `hermod`
//! process under test (start, SIGKILL, restart on the same data), its CPU
//! time, private brokers (`broker.rs` and one file per broker), continuous
//! SMTP load that records every id acknowledged with a 250, and the tally
//! of what reached the broker.
#![allow(dead_code)]

pub mod amqp;
pub mod broker;
pub mod kafka;
pub mod load;
pub mod nats;

use std::collections::{HashMap, HashSet};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// Upper bound for start-up of any process the suite runs.
pub const STARTUP: Duration = Duration::from_secs(30);

// Ports and names come from `common`, which every test binary including
// this module also includes: one allocator per process, so two support
// modules cannot hand the same port to two servers.
pub use crate::common::{free_port, unique};

/// Wait until something accepts TCP connections on `addr`, or `child` exits.
pub fn wait_listening(
    child: &mut Child,
    addr: SocketAddr,
    what: &str,
    log: &Path,
    within: Duration,
) {
    let deadline = Instant::now() + within;
    loop {
        if std::net::TcpStream::connect_timeout(&addr, Duration::from_millis(200)).is_ok() {
            return;
        }
        if let Ok(Some(status)) = child.try_wait() {
            panic!(
                "{what} exited during start-up ({status}); log:\n{}",
                std::fs::read_to_string(log).unwrap_or_default()
            );
        }
        assert!(
            Instant::now() < deadline,
            "{what} did not listen on {addr} within {within:?}; log:\n{}",
            std::fs::read_to_string(log).unwrap_or_default()
        );
        std::thread::sleep(Duration::from_millis(25));
    }
}

/// `hermod serve` on a fixed policy and directory. Every (re)start keeps
/// the same ports, so SMTP clients simply reconnect; killed on drop.
pub struct Hermod {
    child: Option<Child>,
    pub dir: PathBuf,
    /// Where the spools and `--data-dir` live: `dir` unless the test puts
    /// them on a file system of its own (tests/powerloss.rs).
    state: PathBuf,
    pub smtp: SocketAddr,
    policy: PathBuf,
    starts: u32,
    args: Vec<String>,
}

impl Hermod {
    /// Hermod running the broker's seed policy (see [`broker::Broker::policy`]).
    pub fn new(dir: &Path, broker: &broker::Broker) -> Hermod {
        Hermod::with_state(dir, dir, broker, &[])
    }

    /// The same with the spools and the data dir below `state`, and `args`
    /// added to `hermod serve`; the policy, stderr and logs stay in `dir`.
    pub fn with_state(dir: &Path, state: &Path, broker: &broker::Broker, args: &[&str]) -> Hermod {
        std::fs::create_dir_all(dir).expect("creating the hermod dir");
        let smtp: SocketAddr = format!("127.0.0.1:{}", free_port()).parse().unwrap();
        let http: SocketAddr = format!("127.0.0.1:{}", free_port()).parse().unwrap();
        let policy = dir.join("policy.lua");
        let text = broker.policy(dir, &state.join("spool"), smtp, http);
        std::fs::write(&policy, text).expect("writing the policy");
        Hermod {
            child: None,
            dir: dir.to_path_buf(),
            state: state.to_path_buf(),
            smtp,
            policy,
            starts: 0,
            args: args.iter().map(|a| a.to_string()).collect(),
        }
    }

    /// Hermod running the policy `policy(smtp, http)` gives for its listen addresses.
    pub fn with_policy(
        dir: &Path,
        policy: impl FnOnce(SocketAddr, SocketAddr) -> String,
    ) -> Hermod {
        std::fs::create_dir_all(dir).expect("creating the hermod dir");
        let smtp: SocketAddr = format!("127.0.0.1:{}", free_port()).parse().unwrap();
        let http: SocketAddr = format!("127.0.0.1:{}", free_port()).parse().unwrap();
        let path = dir.join("policy.lua");
        std::fs::write(&path, policy(smtp, http)).expect("writing the policy");
        Hermod {
            child: None,
            dir: dir.to_path_buf(),
            state: dir.to_path_buf(),
            smtp,
            policy: path,
            starts: 0,
            args: Vec::new(),
        }
    }

    fn stderr_path(&self, n: u32) -> PathBuf {
        self.dir.join(format!("hermod-{n}.stderr"))
    }

    /// Start (or restart) on the same spool; returns once SMTP answers.
    pub fn start(&mut self) {
        assert!(self.child.is_none(), "hermod is already running");
        self.starts += 1;
        let log = self.stderr_path(self.starts);
        let err = std::fs::File::create(&log).expect("creating the stderr file");
        let child = Command::new(env!("CARGO_BIN_EXE_hermod"))
            .arg("serve")
            .arg("--policy")
            .arg(&self.policy)
            .arg("--data-dir")
            .arg(self.state.join("data"))
            .args(&self.args)
            .env("HERMOD_LOG", "info")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(err)
            .spawn()
            .expect("spawning hermod");
        // Held before the wait, so a start-up that panics still ends in Drop's kill.
        let child = self.child.insert(child);
        wait_listening(child, self.smtp, "hermod", &log, STARTUP);
    }

    pub fn pid(&self) -> u32 {
        self.child.as_ref().expect("hermod is not running").id()
    }

    /// SIGSTOP, returning once every thread has stopped: from then on the
    /// process does nothing at all, while its files and sockets stay open.
    pub fn freeze(&mut self) {
        let pid = self.pid();
        // SAFETY: kill(2) with a child's pid; it touches no memory.
        unsafe { libc::kill(pid as libc::pid_t, libc::SIGSTOP) };
        let deadline = Instant::now() + Duration::from_secs(10);
        while !all_threads_stopped(pid) {
            assert!(Instant::now() < deadline, "hermod did not stop on SIGSTOP");
            std::thread::sleep(Duration::from_millis(1));
        }
    }

    /// SIGKILL: no flush, no shutdown hook, whatever was in flight is cut.
    pub fn kill9(&mut self) {
        let mut child = self.child.take().expect("hermod is not running");
        child.kill().expect("SIGKILL hermod");
        child.wait().expect("reaping hermod");
    }

    /// Panic with the stderr of the current run if hermod died by itself.
    pub fn assert_alive(&mut self) {
        if let Some(child) = self.child.as_mut() {
            if let Ok(Some(status)) = child.try_wait() {
                panic!(
                    "hermod exited by itself ({status}); stderr:\n{}",
                    self.stderr_text()
                );
            }
        }
    }

    /// Stderr of the current (last) run.
    pub fn stderr_text(&self) -> String {
        std::fs::read_to_string(self.stderr_path(self.starts)).unwrap_or_default()
    }

    /// The warnings and errors of every run, for a failure message.
    pub fn all_warnings(&self) -> String {
        let mut out = String::new();
        for n in 1..=self.starts {
            let text = std::fs::read_to_string(self.stderr_path(n)).unwrap_or_default();
            for line in text
                .lines()
                .filter(|l| l.contains("WARN") || l.contains("ERROR"))
            {
                out.push_str(&format!("[run {n}] {line}\n"));
            }
        }
        out
    }
}

impl Drop for Hermod {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// Whether every thread of `pid` is stopped (state `T` in /proc), or gone.
fn all_threads_stopped(pid: u32) -> bool {
    let Ok(tasks) = std::fs::read_dir(format!("/proc/{pid}/task")) else {
        return true;
    };
    tasks.flatten().all(|t| {
        std::fs::read_to_string(t.path().join("stat")).map_or(true, |stat| {
            // The state follows the command name, which ends at the last ')'.
            let state = stat.rfind(')').and_then(|i| stat.get(i + 2..i + 3));
            matches!(state, Some("T") | Some("t") | Some("Z") | Some("X"))
        })
    })
}

/// CPU time (user + system) a process has used so far.
pub fn cpu_time(pid: u32) -> Duration {
    let stat =
        std::fs::read_to_string(format!("/proc/{pid}/stat")).expect("reading /proc/pid/stat");
    // The command name may contain spaces; the numeric fields follow the
    // last ')'. utime and stime are fields 14 and 15 of the whole line.
    let rest = &stat[stat.rfind(')').expect("malformed /proc/pid/stat") + 2..];
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let ticks: u64 = fields[11].parse::<u64>().unwrap() + fields[12].parse::<u64>().unwrap();
    Duration::from_secs_f64(ticks as f64 / clock_ticks() as f64)
}

fn clock_ticks() -> u64 {
    Command::new("getconf")
        .arg("CLK_TCK")
        .output()
        .ok()
        .and_then(|o| String::from_utf8(o.stdout).ok())
        .and_then(|s| s.trim().parse().ok())
        .unwrap_or(100)
}

/// What the broker holds compared with what Hermod acknowledged.
#[derive(Debug, Default)]
pub struct Tally {
    pub accepted: usize,
    /// Accepted ids found in the stream (at least once).
    pub delivered: usize,
    pub lost: Vec<String>,
    /// Ids stored more than once, and how many extra copies in total.
    pub duplicated_ids: usize,
    pub extra_copies: usize,
    /// Stream messages whose id no client saw a 250 for (the client may
    /// have been cut between Hermod's fsync and reading the reply: allowed).
    pub unacknowledged_in_stream: usize,
}

impl Tally {
    pub fn new(accepted: &HashSet<String>, in_stream: &HashMap<String, usize>) -> Tally {
        let mut lost: Vec<String> = accepted
            .iter()
            .filter(|id| !in_stream.contains_key(*id))
            .cloned()
            .collect();
        lost.sort();
        let dups: Vec<usize> = in_stream.values().filter(|n| **n > 1).copied().collect();
        Tally {
            accepted: accepted.len(),
            delivered: accepted.len() - lost.len(),
            lost,
            duplicated_ids: dups.len(),
            extra_copies: dups.iter().map(|n| n - 1).sum(),
            unacknowledged_in_stream: in_stream
                .keys()
                .filter(|id| !accepted.contains(*id))
                .count(),
        }
    }

    pub fn line(&self, label: &str) -> String {
        format!(
            "RESULT {label}: accepted={} delivered={} lost={} duplicated={} (extra copies {}) \
             in_stream_without_250={}",
            self.accepted,
            self.delivered,
            self.lost.len(),
            self.duplicated_ids,
            self.extra_copies,
            self.unacknowledged_in_stream
        )
    }
}

/// Extra copies split by the kill (or outage) that caused them.
/// `boundaries[k]` is the number of messages the broker held right after
/// event k, i.e. the position of the first message published after it.
/// A copy at position p followed by the next copy of the same id at q was
/// re-published because of the first event with p < boundary <= q. Extra
/// copies that no boundary separates are returned apart: a re-publish
/// within one Hermod run, which no kill explains.
pub fn extra_copies_by_event(
    positions: &HashMap<String, Vec<u64>>,
    boundaries: &[u64],
) -> (Vec<usize>, usize) {
    let mut per_event = vec![0; boundaries.len()];
    let mut unexplained = 0;
    for copies in positions.values() {
        let mut sorted = copies.clone();
        sorted.sort_unstable();
        for pair in sorted.windows(2) {
            match boundaries
                .iter()
                .position(|b| pair[0] < *b && *b <= pair[1])
            {
                Some(k) => per_event[k] += 1,
                None => unexplained += 1,
            }
        }
    }
    (per_event, unexplained)
}

/// A small deterministic generator, so a failing kill schedule can be
/// replayed with HERMOD_CRASH_SEED.
pub struct Rng(u64);

impl Rng {
    pub fn seeded() -> Rng {
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos() as u64)
            .unwrap_or(1);
        let seed = env_or("HERMOD_CRASH_SEED", now | 1);
        eprintln!("kill schedule seed: HERMOD_CRASH_SEED={seed}");
        Rng(seed)
    }

    pub fn millis(&mut self, lo: u64, hi: u64) -> Duration {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        Duration::from_millis(lo + self.0 % (hi - lo))
    }
}

/// Read the broker until it holds every accepted id or `drain` passes.
/// `contents` holds what a [`kafka::Follower`] already read during the run.
pub async fn wait_for_broker(
    broker: &broker::Broker,
    accepted: &HashSet<String>,
    mut contents: broker::Contents,
    drain: Duration,
) -> (broker::Contents, Tally) {
    let deadline = Instant::now() + drain;
    loop {
        if let Err(e) = broker.refresh(&mut contents).await {
            eprintln!("reading the broker: {e}");
        }
        let tally = Tally::new(accepted, &contents.copies());
        if tally.lost.is_empty() || Instant::now() >= deadline {
            return (contents, tally);
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

/// Read an environment knob with a default (the long run raises them).
pub fn env_or<T: std::str::FromStr>(name: &str, default: T) -> T {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tally_counts_missing_ids_as_lost_and_extra_copies_as_duplicates() {
        let accepted: HashSet<String> = ["a", "b", "c"].iter().map(|s| s.to_string()).collect();
        let in_stream: HashMap<String, usize> = [("a", 1), ("b", 3), ("z", 1)]
            .iter()
            .map(|(k, v)| (k.to_string(), *v))
            .collect();
        let t = Tally::new(&accepted, &in_stream);
        assert_eq!((t.accepted, t.delivered), (3, 2));
        assert_eq!(t.lost, vec!["c".to_string()]);
        assert_eq!((t.duplicated_ids, t.extra_copies), (1, 2));
        assert_eq!(t.unacknowledged_in_stream, 1);
    }

    #[test]
    fn extra_copies_are_charged_to_the_kill_between_the_two_copies() {
        let positions: HashMap<String, Vec<u64>> = [
            ("a", vec![9, 10]),     // kill 0: broker held 10 after it
            ("b", vec![25, 12]),    // kill 1 (held 20), order of reading aside
            ("c", vec![3, 4]),      // same run: no kill explains it
            ("d", vec![1, 15, 30]), // once per kill
            ("e", vec![7]),
        ]
        .iter()
        .map(|(k, v)| (k.to_string(), v.clone()))
        .collect();
        let (per_kill, unexplained) = extra_copies_by_event(&positions, &[10, 20]);
        assert_eq!(per_kill, vec![2, 2]);
        assert_eq!(unexplained, 1);
    }
}
