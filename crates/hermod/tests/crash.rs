//! Reliability suite: nothing Hermod acknowledged with a 250 is ever lost.
//!
//! Each test runs the real `hermod` binary with a seed policy from
//! `examples/` (A1 → NATS JetStream, B1 → RabbitMQ, C1 → Kafka; legacy
//! constructors) against a private broker, drives continuous SMTP load,
//! breaks something on purpose (SIGKILL of Hermod at random moments, or a
//! broker SIGKILL and restart), and then checks the broker holds every
//! acknowledged id, counting duplicates.
//!
//! CI runs the small versions; `bench/crash` runs the `long_` ones (ignored
//! here) with bigger numbers through environment variables:
//! HERMOD_CRASH_BROKER (nats|amqp|kafka), HERMOD_CRASH_KILLS,
//! HERMOD_CRASH_CONNECTIONS, HERMOD_CRASH_SEED, HERMOD_OUTAGE_SECS,
//! HERMOD_OUTAGES.

mod common;
mod support_crash;

use std::time::{Duration, Instant};

use support_crash::broker::{Broker, Contents, Kind};
use support_crash::kafka::Follower;
use support_crash::load::{Load, LoadReport};
use support_crash::nats::PublishWatch;
use support_crash::{cpu_time, env_or, extra_copies_by_event, wait_for_broker, Hermod, Rng, Tally};

/// How long the broker may take to hold every acknowledged id at the end.
const DRAIN: Duration = Duration::from_secs(60);

/// The most messages one kill or outage may make Hermod publish twice,
/// where the broker keeps every copy (RabbitMQ, Kafka). A message is
/// re-published when the broker stored it but Hermod had not yet removed
/// it from the spool: it was being published (at most one per delivery
/// session; the seeds' queues allow the default 32 sessions), or its
/// removal was still queued for the spool writer, which takes removals
/// only between fsyncs (sessions keep delivering meanwhile: up to ~30 such
/// removals were seen in one kill with a slow tansu). The bound catches
/// what matters: a restart re-publishing mail it had already finished.
const IN_FLIGHT: usize = 4 * 32;

struct Rig {
    broker: Broker,
    hermod: Hermod,
    // Last: the directories outlive the processes using them.
    _tmp: tempfile::TempDir,
}

async fn rig(kind: Kind) -> Rig {
    let tmp = tempfile::tempdir().expect("creating a tempdir");
    let broker = Broker::start(kind, tmp.path()).await;
    let hermod = Hermod::new(&tmp.path().join("hermod"), &broker);
    Rig {
        broker,
        hermod,
        _tmp: tmp,
    }
}

/// Blocking process control inside the async test, without starving the
/// load tasks of a worker thread.
fn blocking<R>(f: impl FnOnce() -> R) -> R {
    tokio::task::block_in_place(f)
}

/// The broker for the `long_` tests: HERMOD_CRASH_BROKER, NATS by default.
fn long_run_broker() -> Kind {
    let name = std::env::var("HERMOD_CRASH_BROKER").unwrap_or_else(|_| "nats".into());
    Kind::parse(&name).unwrap_or_else(|| panic!("HERMOD_CRASH_BROKER={name}: nats|amqp|kafka"))
}

/// The broker's message count once Hermod is dead: frames Hermod wrote
/// just before the kill may still be in the broker's hands, so wait until
/// two reads agree.
async fn settled_count(broker: &Broker) -> u64 {
    let mut last = None;
    for _ in 0..10 {
        match broker.stored().await {
            Ok(n) if last == Some(n) => return n,
            Ok(n) => last = Some(n),
            Err(e) => eprintln!("counting the broker's messages: {e}"),
        }
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
    last.unwrap_or_else(|| panic!("could not count the broker's messages"))
}

/// Kafka is read while the load runs: tansu answers a fetch from offset 0
/// of a topic with 20–35k records with nothing at all within 10 s (and then
/// times out metadata requests too), while fetches near the head are fast.
/// Reading is not destructive there, unlike an AMQP queue whose depth marks
/// the kill boundaries, and NATS reads any sequence cheaply at the end.
fn follow(broker: &Broker) -> Option<Follower> {
    match broker {
        Broker::Kafka(k) => Some(k.follow()),
        _ => None,
    }
}

async fn contents_so_far(follower: Option<Follower>) -> Contents {
    match follower {
        Some(f) => f.take().await,
        None => Contents::default(),
    }
}

/// The assertions every scenario shares: zero lost; each stored message
/// carries its Hermod id as its id property; duplicates only where the
/// broker keeps them, and at most IN_FLIGHT per kill or outage (`events`).
fn assert_nothing_lost(
    label: &str,
    rig: &Rig,
    load: &LoadReport,
    contents: &Contents,
    tally: &Tally,
    events: usize,
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
        "{label}: {} of {} acknowledged ids never reached the broker within {DRAIN:?}: {:?}\n\
         hermod warnings:\n{}",
        tally.lost.len(),
        tally.accepted,
        &tally.lost[..tally.lost.len().min(20)],
        rig.hermod.all_warnings()
    );
    if rig.broker.deduplicates() {
        assert_eq!(
            tally.duplicated_ids, 0,
            "{label}: ids stored more than once despite the duplicate window"
        );
    } else {
        assert!(
            tally.extra_copies <= IN_FLIGHT * events,
            "{label}: {} extra copies after {events} kills/outages, more than {IN_FLIGHT} each",
            tally.extra_copies
        );
    }
    assert!(
        contents.id_mismatches.is_empty(),
        "{label}: messages without their Hermod id as id property: {:?}",
        &contents.id_mismatches[..contents.id_mismatches.len().min(10)]
    );
    assert_eq!(
        contents.unparsable, 0,
        "{label}: broker messages without a Received id"
    );
}

/// Load on `connections` clients while Hermod is SIGKILLed `kills` times,
/// each after 0.5–2 s of load, and restarted on the same spool.
async fn crash_loop(kind: Kind, kills: usize, connections: usize) {
    let label = format!("{} sigkill x{kills}", kind.domain());
    let mut rig = rig(kind).await;
    let watch = match &rig.broker {
        Broker::Nats(n) => Some(PublishWatch::start(n).await),
        _ => None,
    };
    blocking(|| rig.hermod.start());
    let rcpt = format!("crash@{}", kind.domain());
    let load = Load::start(rig.hermod.smtp, connections, &rcpt, None);
    let follower = follow(&rig.broker);
    let mut rng = Rng::seeded();
    let mut boundaries = Vec::new();
    for kill in 1..=kills {
        tokio::time::sleep(rng.millis(500, 2000)).await;
        blocking(|| rig.hermod.assert_alive());
        let so_far = load.accepted_count();
        blocking(|| rig.hermod.kill9());
        let at_broker = settled_count(&rig.broker).await;
        boundaries.push(at_broker);
        eprintln!(
            "kill {kill}/{kills}: SIGKILL with {so_far} ids acknowledged, {at_broker} at the broker"
        );
        blocking(|| rig.hermod.start());
    }
    // The last run accepts some mail too, then must deliver the backlog.
    tokio::time::sleep(Duration::from_millis(500)).await;
    let report = load.stop().await;
    let so_far = contents_so_far(follower).await;
    let (contents, tally) = wait_for_broker(&rig.broker, &report.accepted, so_far, DRAIN).await;
    blocking(|| rig.hermod.assert_alive());
    let (per_kill, unexplained) = extra_copies_by_event(&contents.positions, &boundaries);
    eprintln!(
        "RESULT {label}: kills survived={kills}; extra copies per kill={per_kill:?}, \
         not separated by a kill={unexplained}"
    );
    if let Some(watch) = watch {
        let (publishes, republished) = watch.counts();
        eprintln!(
            "RESULT {label}: publishes seen by a core subscriber={publishes}, \
             ids published more than once (dropped by the duplicate window)={republished}"
        );
    }
    assert_nothing_lost(&label, &rig, &report, &contents, &tally, kills);
    if let Some(worst) = per_kill.iter().max() {
        assert!(
            *worst <= IN_FLIGHT,
            "{label}: one kill caused {worst} re-publishes, more than the {IN_FLIGHT} in flight"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn no_acknowledged_message_is_lost_or_duplicated_across_three_sigkills() {
    crash_loop(Kind::Nats, 3, 8).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn amqp_three_sigkills_lose_nothing_and_duplicate_only_what_was_in_flight() {
    crash_loop(Kind::Amqp, 3, 8).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn kafka_three_sigkills_lose_nothing_and_duplicate_only_what_was_in_flight() {
    crash_loop(Kind::Kafka, 3, 8).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
#[ignore = "long run: bench/crash"]
async fn long_crash_loop() {
    let kills = env_or("HERMOD_CRASH_KILLS", 10);
    let connections = env_or("HERMOD_CRASH_CONNECTIONS", 8);
    crash_loop(long_run_broker(), kills, connections).await;
}

/// Paced load (so the CPU figure is about retrying, not accepting) while
/// the broker is SIGKILLed `outages` times for `secs` each and restarted on
/// the same port and store. Hermod must reconnect by itself, lose nothing,
/// and back off instead of spinning while it waits.
async fn broker_outages(kind: Kind, outages: usize, secs: u64) {
    let label = format!("{} outages x{outages} of {secs}s", kind.domain());
    let mut rig = rig(kind).await;
    blocking(|| rig.hermod.start());
    let pid = rig.hermod.pid();
    let rcpt = format!("outage@{}", kind.domain());
    let load = Load::start(rig.hermod.smtp, 8, &rcpt, Some(Duration::from_millis(50)));
    let follower = follow(&rig.broker);
    let mut worst = 0.0f64;
    for outage in 1..=outages {
        // Deliveries flow normally first: a baseline to compare with.
        let (c0, t0) = (cpu_time(pid), Instant::now());
        tokio::time::sleep(Duration::from_secs(2)).await;
        let base = (cpu_time(pid) - c0).as_secs_f64() / t0.elapsed().as_secs_f64();

        let before = load.accepted_count();
        blocking(|| rig.broker.kill9());
        let (c1, t1) = (cpu_time(pid), Instant::now());
        tokio::time::sleep(Duration::from_secs(secs)).await;
        let cpu = cpu_time(pid) - c1;
        let wall = t1.elapsed();
        let during = load.accepted_count() - before;
        // Until it listens again the broker is still down for Hermod.
        blocking(|| rig.broker.restart());
        let down = t1.elapsed();
        blocking(|| rig.hermod.assert_alive());
        let share = cpu.as_secs_f64() / wall.as_secs_f64();
        worst = worst.max(share);
        eprintln!(
            "RESULT {label} outage {outage}/{outages}: broker down {down:.1?}, hermod cpu over \
             the first {wall:.1?} {cpu:.2?} = {:.1}% of one core (with the broker up: {:.1}%), \
             {during} ids acknowledged meanwhile",
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
    let so_far = contents_so_far(follower).await;
    let (contents, tally) = wait_for_broker(&rig.broker, &report.accepted, so_far, DRAIN).await;
    blocking(|| rig.hermod.assert_alive());
    eprintln!("RESULT {label}: broker outages survived={outages}");
    assert_nothing_lost(&label, &rig, &report, &contents, &tally, outages);
    assert!(
        worst < 0.5,
        "{label}: Hermod used {:.0}% of a core while the broker was down (spinning?)",
        worst * 100.0
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn broker_outage_loses_nothing_and_hermod_reconnects_without_spinning() {
    broker_outages(Kind::Nats, 1, 10).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn amqp_outage_loses_nothing_and_hermod_reconnects_without_spinning() {
    broker_outages(Kind::Amqp, 1, 5).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn kafka_outage_loses_nothing_and_hermod_reconnects_without_spinning() {
    broker_outages(Kind::Kafka, 1, 5).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
#[ignore = "long run: bench/crash"]
async fn long_broker_outages() {
    let outages = env_or("HERMOD_OUTAGES", 3);
    let secs = env_or("HERMOD_OUTAGE_SECS", 10);
    broker_outages(long_run_broker(), outages, secs).await;
}
