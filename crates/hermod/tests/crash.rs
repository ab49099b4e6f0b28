//! Reliability suite: nothing Hermod acknowledged with a 250 is ever lost.
//!
//! Each test runs the real `hermod` binary with seed A1 (legacy constructor
//! publishing to NATS JetStream) against a private nats-server, drives
//! continuous SMTP load, breaks something on purpose (SIGKILL of Hermod at
//! random moments, or a broker outage), and then checks the stream holds
//! every acknowledged id exactly once.
//!
//! CI runs the small versions; `bench/crash` runs the `long_` ones (ignored
//! here) with bigger numbers through environment variables:
//! HERMOD_CRASH_KILLS, HERMOD_CRASH_CONNECTIONS, HERMOD_CRASH_SEED,
//! HERMOD_OUTAGE_SECS, HERMOD_OUTAGES.

mod support_crash;

use std::collections::HashSet;
use std::time::{Duration, Instant};

use support_crash::broker::{create_stream, NatsServer, PublishWatch, StreamContents};
use support_crash::load::{Load, LoadReport};
use support_crash::{cpu_time, env_or, unique, Hermod, Tally};

/// How long the broker may take to hold every acknowledged id at the end.
const DRAIN: Duration = Duration::from_secs(60);

struct Rig {
    _tmp: tempfile::TempDir,
    nats: NatsServer,
    stream: String,
    subject: String,
    hermod: Hermod,
}

async fn rig() -> Rig {
    let tmp = tempfile::tempdir().expect("creating a tempdir");
    let nats = NatsServer::start(tmp.path());
    let stream = unique("CRASH");
    let subject = unique("crash").replace('_', ".");
    create_stream(&nats, &stream, &subject).await;
    let hermod = Hermod::new(&tmp.path().join("hermod"), nats.port, &subject);
    Rig {
        _tmp: tmp,
        nats,
        stream,
        subject,
        hermod,
    }
}

/// Blocking process control inside the async test, without starving the
/// load tasks of a worker thread.
fn blocking<R>(f: impl FnOnce() -> R) -> R {
    tokio::task::block_in_place(f)
}

/// A small deterministic generator, so a failing kill schedule can be
/// replayed with HERMOD_CRASH_SEED.
struct Rng(u64);

impl Rng {
    fn seeded() -> Rng {
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos() as u64)
            .unwrap_or(1);
        let seed = env_or("HERMOD_CRASH_SEED", now | 1);
        eprintln!("kill schedule seed: HERMOD_CRASH_SEED={seed}");
        Rng(seed)
    }

    fn millis(&mut self, lo: u64, hi: u64) -> Duration {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        Duration::from_millis(lo + self.0 % (hi - lo))
    }
}

/// Poll the stream until it holds every accepted id or DRAIN passes.
async fn wait_for_broker(rig: &Rig, accepted: &HashSet<String>) -> (StreamContents, Tally) {
    let deadline = Instant::now() + DRAIN;
    let mut contents = StreamContents::default();
    loop {
        if let Err(e) = contents.refresh(&rig.nats.url(), &rig.stream).await {
            eprintln!("reading the stream: {e}");
        }
        let tally = Tally::new(accepted, &contents.copies);
        if tally.lost.is_empty() || Instant::now() >= deadline {
            return (contents, tally);
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

/// The assertions every scenario shares: zero lost, zero duplicated, and
/// each stored message carries its Hermod id as Nats-Msg-Id.
fn assert_nothing_lost(
    label: &str,
    rig: &Rig,
    load: &LoadReport,
    contents: &StreamContents,
    tally: &Tally,
) {
    eprintln!("{}", tally.line(label));
    eprintln!(
        "load {label}: 250 replies={} refused={} broken connections={}",
        load.replies_250, load.refused, load.broken
    );
    assert!(
        tally.accepted > 0,
        "{label}: no message was accepted at all"
    );
    assert_eq!(
        load.replies_250, tally.accepted,
        "{label}: Hermod returned the same id in two different 250 replies"
    );
    assert!(
        tally.lost.is_empty(),
        "{label}: {} of {} acknowledged ids never reached the stream within {DRAIN:?}: {:?}\n\
         hermod warnings:\n{}",
        tally.lost.len(),
        tally.accepted,
        &tally.lost[..tally.lost.len().min(20)],
        rig.hermod.all_warnings()
    );
    assert_eq!(
        tally.duplicated_ids, 0,
        "{label}: ids stored more than once despite the duplicate window"
    );
    assert!(
        contents.msg_id_mismatches.is_empty(),
        "{label}: messages without their Hermod id as Nats-Msg-Id: {:?}",
        &contents.msg_id_mismatches[..contents.msg_id_mismatches.len().min(10)]
    );
    assert_eq!(
        contents.unparsable, 0,
        "{label}: stream messages without a Received id"
    );
}

/// Load on `connections` clients while Hermod is SIGKILLed `kills` times,
/// each after 0.5–2 s of load, and restarted on the same spool.
async fn crash_loop(label: &str, kills: usize, connections: usize) {
    let mut rig = rig().await;
    let watch = PublishWatch::start(&rig.nats, &rig.subject).await;
    blocking(|| rig.hermod.start());
    let load = Load::start(rig.hermod.smtp, connections, "crash@nats", None);
    let mut rng = Rng::seeded();
    for kill in 1..=kills {
        tokio::time::sleep(rng.millis(500, 2000)).await;
        blocking(|| rig.hermod.assert_alive());
        let so_far = load.accepted_count();
        blocking(|| rig.hermod.kill9());
        eprintln!("kill {kill}/{kills}: SIGKILL with {so_far} ids acknowledged so far");
        blocking(|| rig.hermod.start());
    }
    // The last run accepts some mail too, then must deliver the backlog.
    tokio::time::sleep(Duration::from_millis(500)).await;
    let report = load.stop().await;
    let (contents, tally) = wait_for_broker(&rig, &report.accepted).await;
    blocking(|| rig.hermod.assert_alive());
    let (publishes, republished) = watch.counts();
    eprintln!(
        "RESULT {label}: kills survived={kills}; publishes seen by a core subscriber={publishes}, \
         ids published more than once (dropped by the duplicate window)={republished}"
    );
    assert_nothing_lost(label, &rig, &report, &contents, &tally);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn no_acknowledged_message_is_lost_or_duplicated_across_three_sigkills() {
    crash_loop("sigkill x3", 3, 8).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
#[ignore = "long run: bench/crash"]
async fn long_crash_loop() {
    let kills = env_or("HERMOD_CRASH_KILLS", 10);
    let connections = env_or("HERMOD_CRASH_CONNECTIONS", 8);
    crash_loop(&format!("sigkill x{kills}"), kills, connections).await;
}

/// Paced load (so the CPU figure is about retrying, not accepting) while
/// the broker is SIGKILLed `outages` times for `secs` each and restarted on
/// the same port and store. Hermod must reconnect by itself, lose and
/// duplicate nothing, and back off instead of spinning while it waits.
async fn broker_outages(label: &str, outages: usize, secs: u64) {
    let mut rig = rig().await;
    blocking(|| rig.hermod.start());
    let pid = rig.hermod.pid();
    let load = Load::start(
        rig.hermod.smtp,
        8,
        "outage@nats",
        Some(Duration::from_millis(50)),
    );
    let mut worst = 0.0f64;
    for outage in 1..=outages {
        // Deliveries flow normally first: a baseline to compare with.
        let (c0, t0) = (cpu_time(pid), Instant::now());
        tokio::time::sleep(Duration::from_secs(2)).await;
        let base = (cpu_time(pid) - c0).as_secs_f64() / t0.elapsed().as_secs_f64();

        let before = load.accepted_count();
        blocking(|| rig.nats.kill9());
        let (c1, t1) = (cpu_time(pid), Instant::now());
        tokio::time::sleep(Duration::from_secs(secs)).await;
        let cpu = cpu_time(pid) - c1;
        let wall = t1.elapsed();
        let during = load.accepted_count() - before;
        blocking(|| rig.nats.restart());
        blocking(|| rig.hermod.assert_alive());
        let share = cpu.as_secs_f64() / wall.as_secs_f64();
        worst = worst.max(share);
        eprintln!(
            "RESULT {label} outage {outage}/{outages}: broker down {wall:.1?}, hermod cpu {cpu:.2?} \
             = {:.1}% of one core (with the broker up: {:.1}%), {during} ids acknowledged while down",
            share * 100.0,
            base * 100.0
        );
        assert!(
            during > 0,
            "{label}: Hermod stopped accepting while the broker was down"
        );
    }
    // Keep the load on for a moment after the broker returns.
    tokio::time::sleep(Duration::from_secs(2)).await;
    let report = load.stop().await;
    let (contents, tally) = wait_for_broker(&rig, &report.accepted).await;
    blocking(|| rig.hermod.assert_alive());
    eprintln!("RESULT {label}: broker outages survived={outages}");
    assert_nothing_lost(label, &rig, &report, &contents, &tally);
    assert!(
        worst < 0.5,
        "{label}: Hermod used {:.0}% of a core while the broker was down (spinning?)",
        worst * 100.0
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn broker_outage_loses_nothing_and_hermod_reconnects_without_spinning() {
    broker_outages("nats outage 10s", 1, 10).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
#[ignore = "long run: bench/crash"]
async fn long_broker_outages() {
    let outages = env_or("HERMOD_OUTAGES", 3);
    let secs = env_or("HERMOD_OUTAGE_SECS", 10);
    broker_outages(&format!("nats outages x{outages}"), outages, secs).await;
}
