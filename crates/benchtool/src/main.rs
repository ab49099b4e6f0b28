//! `hermod-benchtool`: the broker side of `bench/run`.
//!
//! `count` and `wait` read how many messages a broker holds for the example objects (JetStream
//! stream last sequence, RabbitMQ queue depth, Kafka end offsets); `ceiling` measures how fast
//! this client alone can publish with acknowledgements pipelined, which is the yardstick the
//! end-to-end numbers are divided by; `plot` draws a case's throughput and latency PNG from
//! the server's Delivery records; `create-stream` and `verify-ids` serve the backlog scenario
//! and the harness smoke test. Loopback only: the benchmark never touches other hosts.

mod brokers;
mod plot;
mod series;

use std::collections::HashSet;
use std::path::PathBuf;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::{bail, Context, Result};
use clap::{Parser, Subcommand, ValueEnum};
use serde_json::json;

use brokers::{Broker, Targets};

#[derive(Parser)]
#[command(about = "Broker counts and publish ceilings for bench/run")]
struct Cli {
    #[command(flatten)]
    targets: Targets,
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Clone, Copy, ValueEnum)]
enum Kind {
    Nats,
    Amqp,
    Kafka,
}

#[derive(Subcommand)]
enum Cmd {
    /// Print the broker's current count for the example object as JSON.
    Count { broker: Kind },
    /// Print the baseline count, then wait until `delta` more messages are held.
    Wait {
        broker: Kind,
        #[arg(long)]
        delta: u64,
        #[arg(long, default_value_t = 300.0)]
        timeout_secs: f64,
        #[arg(long, default_value_t = 50)]
        poll_ms: u64,
        /// Count from this value instead of the current count (a stream created just before,
        /// which may already have received a message when the baseline would be read).
        #[arg(long)]
        baseline: Option<u64>,
    },
    /// Draw a case's PNG and print latency figures from the server's Delivery records.
    Plot(plot::PlotArgs),
    /// Create the JetStream stream `--stream` capturing `--subject` if it does not exist.
    CreateStream,
    /// Wait until every id in `--ids` (one per line) is the Nats-Msg-Id of a message stored
    /// after sequence `--after`; print how many were found.
    VerifyIds {
        #[arg(long)]
        ids: PathBuf,
        #[arg(long)]
        after: u64,
        #[arg(long, default_value_t = 60.0)]
        timeout_secs: f64,
    },
    /// Empty the example AMQP queue (nothing consumes it, so runs would pile up in RabbitMQ)
    /// or the example stream (at its size limit, every publish makes NATS discard old data,
    /// which takes CPU from the server being measured).
    Purge { broker: Kind },
    /// Publish `messages` messages with up to `window` acknowledgements outstanding.
    Ceiling {
        broker: Kind,
        #[arg(long, default_value_t = 20_000)]
        messages: u64,
        #[arg(long, default_value_t = 1024)]
        size: usize,
        #[arg(long, default_value_t = 1000)]
        window: usize,
    },
}

fn unix_now() -> f64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs_f64())
        .unwrap_or(0.0)
}

fn secs(v: f64) -> Result<Duration> {
    Duration::try_from_secs_f64(v).with_context(|| format!("{v} is not a usable number of seconds"))
}

async fn open(kind: Kind, t: &Targets) -> Result<Broker> {
    match kind {
        Kind::Nats => Broker::nats(t).await,
        Kind::Amqp => Broker::amqp(t).await,
        Kind::Kafka => Broker::kafka(t),
    }
}

#[tokio::main]
async fn main() -> Result<()> {
    let cli = Cli::parse();
    match cli.cmd {
        Cmd::Count { broker } => {
            let b = open(broker, &cli.targets).await?;
            println!(
                "{}",
                json!({ "count": b.count().await?, "unix": unix_now() })
            );
        }
        Cmd::Purge { broker } => {
            let b = open(broker, &cli.targets).await?;
            println!("{}", json!({ "purged": b.purge().await? }));
        }
        Cmd::Wait {
            broker,
            delta,
            timeout_secs,
            poll_ms,
            baseline,
        } => {
            let b = open(broker, &cli.targets).await?;
            let baseline = match baseline {
                Some(v) => v,
                None => b.count().await?,
            };
            // The harness starts the load only after this line, so the baseline is clean.
            println!("{}", json!({ "baseline": baseline, "unix": unix_now() }));
            let deadline = Instant::now() + secs(timeout_secs)?;
            let (mut last, mut last_change) = (baseline, unix_now());
            loop {
                let c = b.count().await?;
                if c != last {
                    (last, last_change) = (c, unix_now());
                }
                let got = last.saturating_sub(baseline);
                if got >= delta || Instant::now() >= deadline {
                    println!(
                        "{}",
                        json!({ "reached": got >= delta, "delta": got, "count": last, "unix": last_change })
                    );
                    break;
                }
                tokio::time::sleep(Duration::from_millis(poll_ms)).await;
            }
        }
        Cmd::Plot(args) => println!("{}", plot::run(&args)?),
        Cmd::CreateStream => {
            Broker::nats(&cli.targets).await?.create_stream().await?;
            println!("{}", json!({ "created": true }));
        }
        Cmd::VerifyIds {
            ids,
            after,
            timeout_secs,
        } => {
            let text = std::fs::read_to_string(&ids)
                .with_context(|| format!("read ids from {}", ids.display()))?;
            let wanted: HashSet<String> = text
                .lines()
                .map(str::trim)
                .filter(|l| !l.is_empty())
                .map(String::from)
                .collect();
            let b = Broker::nats(&cli.targets).await?;
            let found = b.find_ids(&wanted, after, secs(timeout_secs)?).await?;
            println!(
                "{}",
                json!({ "ids": wanted.len(), "found": found, "all": found == wanted.len() })
            );
        }
        Cmd::Ceiling {
            broker,
            messages,
            size,
            window,
        } => {
            if window == 0 {
                bail!("--window must be at least 1");
            }
            let b = open(broker, &cli.targets).await?;
            let before = b.count().await?;
            let payload = vec![b'x'; size];
            let start = Instant::now();
            b.publish_pipelined(messages, &payload, window).await?;
            let secs = start.elapsed().as_secs_f64();
            let after = b.count().await?;
            println!(
                "{}",
                json!({
                    "messages": messages, "size": size, "window": window, "secs": secs,
                    "msgs_per_sec": messages as f64 / secs, "broker_delta": after.saturating_sub(before),
                })
            );
        }
    }
    Ok(())
}
