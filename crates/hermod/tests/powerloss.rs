//! Power loss: every message Hermod answered `250` survives losing
//! everything that was not fsynced.
//!
//! A SIGKILL (tests/crash.rs) leaves the kernel's page cache intact, so it
//! cannot show that the spool's fsyncs are the right ones. Here Hermod's
//! spools and data dir live on lossyfs (crates/lossyfs), a FUSE file system
//! that keeps only what POSIX promises to keep: bytes fsynced with their
//! file, names fsynced with their directory. Under SMTP load, at random
//! moments, Hermod is frozen (SIGSTOP), the power of the file system is cut
//! (from that instant nothing more becomes durable), Hermod is SIGKILLed,
//! the file system remounts on its durable state alone, and Hermod starts
//! again on it. At the end a private NATS JetStream stream (seed A1) must
//! hold every id that got a 250.
//!
//! The same run with `--unsafe-no-fsync` must lose mail: that shows the
//! check can fail.
//!
//! Needs /dev/fuse and root (CI has both): without them the tests fail
//! saying so. `bench/crash --only powerloss` runs the `long_` test with
//! HERMOD_POWERLOSS_CYCLES and HERMOD_CRASH_CONNECTIONS.

mod common;
mod support_crash;

use std::collections::{BTreeMap, HashSet};
use std::path::Path;
use std::time::{Duration, Instant};

use support_crash::broker::{Broker, Contents, Kind};
use support_crash::load::{Load, LoadReport};
use support_crash::nats::PublishWatch;
use support_crash::{env_or, wait_for_broker, Hermod, Rng, Tally};

/// How long the broker may take to hold every acknowledged id at the end.
const DRAIN: Duration = Duration::from_secs(60);

/// Without fsync, losses are final: stop reading once nothing new arrived
/// for this long.
const QUIET: Duration = Duration::from_secs(5);

/// Longest a remount may take; it waits for the kernel to let go of the
/// old mount, which it does once Hermod's files are closed.
const REMOUNT: Duration = Duration::from_secs(30);

fn blocking<R>(f: impl FnOnce() -> R) -> R {
    tokio::task::block_in_place(f)
}

/// Field order is drop order: Hermod goes before the mount it uses, the
/// mount before its directory.
struct Run {
    hermod: Hermod,
    _fs: lossyfs::Mounted,
    _tmp: tempfile::TempDir,
    cycles: usize,
    /// Acknowledged ids the broker did not have yet when the power was
    /// cut (at any of the cuts): those only the spool could save.
    at_risk: usize,
    report: LoadReport,
    tally: Tally,
    republished: usize,
    refused: BTreeMap<&'static str, u64>,
}

fn mount(store: &Path, mnt: &Path) -> lossyfs::Mounted {
    lossyfs::mount(store, mnt).unwrap_or_else(|e| panic!("power-loss test cannot run: {e}"))
}

/// Unmount and mount again on the durable state; panics if the kernel does
/// not let go of the old mount in time.
fn remount(fs: lossyfs::Mounted) -> lossyfs::Mounted {
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let _ = tx.send(fs.restart());
    });
    match rx.recv_timeout(REMOUNT) {
        Ok(Ok(fs)) => fs,
        Ok(Err(e)) => panic!("remounting lossyfs: {e}"),
        Err(_) => panic!("lossyfs did not unmount within {REMOUNT:?}: something still holds it"),
    }
}

/// Read the broker until nothing new arrived for QUIET (or DRAIN passed).
async fn settled(broker: &Broker, accepted: &HashSet<String>) -> (Contents, Tally) {
    let mut contents = Contents::default();
    let (deadline, mut last_change, mut seen) = (Instant::now() + DRAIN, Instant::now(), 0);
    loop {
        if let Err(e) = broker.refresh(&mut contents).await {
            eprintln!("reading the broker: {e}");
        }
        if contents.next != seen {
            (seen, last_change) = (contents.next, Instant::now());
        }
        let tally = Tally::new(accepted, &contents.copies());
        let now = Instant::now();
        if tally.lost.is_empty() || now >= deadline || now - last_change >= QUIET {
            return (contents, tally);
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

/// SMTP load on `connections` clients while the power is cut `cycles`
/// times, each after 0.3–1.5 s of load; Hermod runs with `args`.
async fn power_loss_cycles(cycles: usize, connections: usize, args: &[&str]) -> Run {
    let label = format!("power loss x{cycles} {args:?}");
    let tmp = tempfile::tempdir().expect("creating a tempdir");
    let broker = Broker::start(Kind::Nats, tmp.path()).await;
    let Broker::Nats(nats) = &broker else {
        unreachable!("started NATS")
    };
    let watch = PublishWatch::start(nats).await;
    let (store, mnt) = (tmp.path().join("lossyfs"), tmp.path().join("mnt"));
    std::fs::create_dir_all(&mnt).expect("creating the mount point");
    let mut fs = mount(&store, &mnt);
    let mut hermod = Hermod::with_state(&tmp.path().join("hermod"), &mnt, &broker, args);
    blocking(|| hermod.start());
    let load = Load::start(hermod.smtp, connections, "powerloss@nats", None);
    let mut rng = Rng::seeded();
    let (mut seen, mut at_risk) = (Contents::default(), HashSet::new());
    for cycle in 1..=cycles {
        tokio::time::sleep(rng.millis(300, 1500)).await;
        blocking(|| hermod.assert_alive());
        // Frozen first, so the cut falls between two of Hermod's file
        // operations and Hermod sees none of its consequences.
        blocking(|| hermod.freeze());
        fs.cut_power();
        blocking(|| hermod.kill9());
        fs = blocking(|| remount(fs));
        // Hermod is gone: what the broker holds now is all it got before
        // the cut, and the acknowledged ids it lacks were in the spool only.
        let acknowledged = load.accepted_ids();
        if let Err(e) = broker.refresh(&mut seen).await {
            panic!("reading the broker after cut {cycle}: {e}");
        }
        let in_spool: Vec<&String> = acknowledged
            .iter()
            .filter(|id| !seen.positions.contains_key(*id))
            .collect();
        at_risk.extend(in_spool.iter().map(|id| id.to_string()));
        eprintln!(
            "cycle {cycle}/{cycles}: power cut with {} ids acknowledged, {} of them only in \
             the spool",
            acknowledged.len(),
            in_spool.len()
        );
        blocking(|| hermod.start());
    }
    // The last run accepts some mail too, then must deliver the backlog.
    tokio::time::sleep(Duration::from_millis(500)).await;
    let report = load.stop().await;
    let (contents, tally) = if args.is_empty() {
        wait_for_broker(&broker, &report.accepted, Contents::default(), DRAIN).await
    } else {
        settled(&broker, &report.accepted).await
    };
    blocking(|| hermod.assert_alive());
    let (publishes, republished) = watch.counts();
    let refused = fs.refused();
    eprintln!("{}", tally.line(&label));
    eprintln!(
        "RESULT {label}: cycles={cycles} acknowledged but only in the spool at a cut={} \
         250 replies={} refused={} broken connections={} publishes seen={publishes} \
         ids published more than once={republished} lossyfs operations refused={refused:?}",
        at_risk.len(),
        report.replies_250,
        report.refused,
        report.broken
    );
    assert!(
        tally.accepted > 0,
        "{label}: no message was accepted at all"
    );
    assert_eq!(
        contents.unparsable, 0,
        "{label}: broker messages without a Received id"
    );
    Run {
        hermod,
        _fs: fs,
        _tmp: tmp,
        cycles,
        at_risk: at_risk.len(),
        report,
        tally,
        republished,
        refused,
    }
}

/// Operations lossyfs refuses that the spool may ask for without harm:
/// RocksDB reads no xattrs, and its ioctl (FS_IOC_GETVERSION, for unique
/// ids of table files) falls back when the file system has none.
const HARMLESS_REFUSALS: &[&str] = &["getxattr", "listxattr", "ioctl"];

fn assert_every_250_arrived(run: &Run) {
    let label = format!("power loss x{}", run.cycles);
    assert_eq!(
        run.report.replies_250, run.tally.accepted,
        "{label}: Hermod returned the same id in two different 250 replies"
    );
    assert!(
        run.tally.lost.is_empty(),
        "{label}: {} of {} acknowledged ids never reached the broker within {DRAIN:?}: {:?}\n\
         hermod warnings:\n{}",
        run.tally.lost.len(),
        run.tally.accepted,
        &run.tally.lost[..run.tally.lost.len().min(20)],
        run.hermod.all_warnings()
    );
    assert_eq!(
        run.tally.duplicated_ids, 0,
        "{label}: ids stored more than once despite the duplicate window"
    );
    let unexpected: Vec<_> = run
        .refused
        .keys()
        .filter(|op| !HARMLESS_REFUSALS.contains(op))
        .collect();
    assert!(
        unexpected.is_empty(),
        "{label}: the spool needed operations lossyfs lacks: {:?}",
        run.refused
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn every_message_answered_250_survives_ten_power_losses() {
    let run = power_loss_cycles(10, 16, &[]).await;
    assert_every_250_arrived(&run);
    assert!(
        run.at_risk > 0,
        "no cut fell while acknowledged mail was only in the spool: the run proved nothing"
    );
    eprintln!(
        "RESULT power loss x10: ids re-published after a loss (dropped by the duplicate \
         window)={}",
        run.republished
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn without_fsync_power_losses_lose_acknowledged_messages() {
    let run = power_loss_cycles(10, 16, &["--unsafe-no-fsync"]).await;
    assert!(
        !run.tally.lost.is_empty(),
        "with --unsafe-no-fsync, {} acknowledged ids all survived 10 power losses ({} of them \
         only in the spool at a cut): the power-loss check would not notice a missing fsync",
        run.tally.accepted,
        run.at_risk
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
#[ignore = "long run: bench/crash --only powerloss"]
async fn long_power_loss() {
    let cycles = env_or("HERMOD_POWERLOSS_CYCLES", 50);
    let connections = env_or("HERMOD_CRASH_CONNECTIONS", 8);
    let run = power_loss_cycles(cycles, connections, &[]).await;
    assert_every_250_arrived(&run);
}
