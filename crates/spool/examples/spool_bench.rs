//! Spool store throughput and latency: N concurrent writers × message size,
//! with fsync on and off (off only shows what durability costs).
//!
//! cargo run --release -p hermod-spool --example spool_bench [-- seconds max_messages]
//! Set HERMOD_BENCH_DIR to benchmark a particular disk (default: system temp).

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use hermod_message::{EnvelopeAddress, Message, SpoolId};
use hermod_spool::{Spool, SpoolDefinition, SpoolName, SpoolOptions};

struct Run {
    /// Data and meta in one RocksDB instance (one fsync per group) instead
    /// of the default `dir/data` + `dir/meta` (two).
    shared: bool,
    writers: usize,
    size: usize,
    fsync: bool,
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    if sorted.is_empty() {
        return Duration::ZERO;
    }
    let idx = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[idx.min(sorted.len() - 1)]
}

async fn run(
    run: &Run,
    limit: Duration,
    max_messages: u64,
) -> Result<(), Box<dyn std::error::Error>> {
    let base = std::env::var_os("HERMOD_BENCH_DIR")
        .map(std::path::PathBuf::from)
        .unwrap_or_else(std::env::temp_dir);
    let dir = tempfile::tempdir_in(base)?;
    let opts = SpoolOptions { fsync: run.fsync };
    let spool = if run.shared {
        let defs = [
            SpoolDefinition::new(SpoolName::Data, dir.path().join("spool")),
            SpoolDefinition::new(SpoolName::Meta, dir.path().join("spool")),
        ];
        Spool::open(&defs, opts)?
    } else {
        Spool::open_dir(dir.path(), opts)?
    };
    let sender = EnvelopeAddress::parse("bench@example.com")?;
    let rcpt = EnvelopeAddress::parse("rcpt@example.net")?;
    let body: bytes::Bytes = vec![b'x'; run.size].into();
    let issued = Arc::new(AtomicU64::new(0));
    let start = Instant::now();
    let mut tasks = tokio::task::JoinSet::new();
    for _ in 0..run.writers {
        let (spool, issued) = (spool.clone(), issued.clone());
        let (sender, rcpt, body) = (sender.clone(), rcpt.clone(), body.clone());
        tasks.spawn(async move {
            let mut lat = Vec::new();
            while start.elapsed() < limit && issued.fetch_add(1, Ordering::Relaxed) < max_messages {
                let m = Message::new(
                    SpoolId::new(),
                    sender.clone(),
                    vec![rcpt.clone()],
                    serde_json::Map::new(),
                    body.clone(),
                );
                let t = Instant::now();
                spool.store(&m).await?;
                lat.push(t.elapsed());
            }
            Ok::<_, hermod_spool::SpoolError>(lat)
        });
    }
    let mut lat = Vec::new();
    while let Some(r) = tasks.join_next().await {
        lat.extend(r??);
    }
    let elapsed = start.elapsed();
    let stats = spool.stats();
    spool.shutdown().await;
    lat.sort();
    let n = lat.len() as f64;
    println!(
        "{:>7} {:>7} {:>7} {:>5} {:>9.0} {:>9.2} {:>9.2} {:>10.3} {:>9.3} {:>7}",
        if run.shared { "shared" } else { "split" },
        run.writers,
        format!("{}K", run.size / 1024),
        if run.fsync { "on" } else { "off" },
        n / elapsed.as_secs_f64(),
        percentile(&lat, 0.50).as_secs_f64() * 1e3,
        percentile(&lat, 0.99).as_secs_f64() * 1e3,
        stats.wal_syncs as f64 / (stats.messages_written.max(1)) as f64,
        stats.group_commits as f64 / (stats.messages_written.max(1)) as f64,
        lat.len(),
    );
    Ok(())
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut args = std::env::args().skip(1);
    let secs: u64 = args.next().and_then(|s| s.parse().ok()).unwrap_or(5);
    let max_messages: u64 = args.next().and_then(|s| s.parse().ok()).unwrap_or(20_000);
    let cores = std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(1);
    println!("cores: {cores}; each run stops after {secs}s or {max_messages} messages");
    println!(
        "{:>7} {:>7} {:>7} {:>5} {:>9} {:>9} {:>9} {:>10} {:>9} {:>7}",
        "layout",
        "writers",
        "size",
        "fsync",
        "msgs/s",
        "p50 ms",
        "p99 ms",
        "fsyncs/msg",
        "groups/msg",
        "msgs"
    );
    for (shared, fsync) in [(false, true), (true, true), (false, false)] {
        for size in [1024, 100 * 1024] {
            for writers in [1, 10, 100] {
                let r = Run {
                    shared,
                    writers,
                    size,
                    fsync,
                };
                run(&r, Duration::from_secs(secs), max_messages).await?;
            }
        }
    }
    Ok(())
}
