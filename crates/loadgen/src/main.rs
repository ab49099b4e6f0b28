//! `hermod-loadgen`: a bounded, pipelining SMTP load generator for
//! benchmarking Hermod (and other MTAs) and for the reliability suite's
//! "every 250'd id reached the broker" checks.

mod reply;
mod report;
mod run;
mod smtp_client;
mod tls;
mod workload;

use std::io::IsTerminal;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::{bail, Context};
use clap::{ArgGroup, Parser};

use crate::report::RunMeta;
use crate::run::{Config, Limit};
use crate::workload::{build_body, parse_size, DomainPicker};

/// Exit status when the run completed but some messages failed.
const EXIT_FAILURES: u8 = 1;
/// Exit status when the run could not be set up or its output not written.
const EXIT_ERROR: u8 = 2;

#[derive(Debug, Parser)]
#[command(name = "hermod-loadgen", version, about)]
#[command(group(ArgGroup::new("bound").required(true).args(["messages", "duration"])))]
struct Args {
    /// SMTP server to drive (host:port). Must be loopback unless --allow-remote.
    #[arg(long, default_value = "127.0.0.1:2525")]
    target: String,
    /// Concurrent connections, each reused for many messages.
    #[arg(long, default_value_t = 8, value_parser = clap::value_parser!(u32).range(1..=10_000))]
    connections: u32,
    /// Total messages to send.
    #[arg(long, value_parser = clap::value_parser!(u64).range(1..))]
    messages: Option<u64>,
    /// Run for this long instead of a message count (e.g. 30s, 2m).
    #[arg(long, value_parser = parse_duration)]
    duration: Option<Duration>,
    /// Message size: bytes or binary units (512, 1KB, 100KB, 1MB).
    #[arg(long, default_value = "1KB", value_parser = |s: &str| parse_size(s))]
    size: usize,
    /// Recipient domains with weights, e.g. nats:3,amqp:1.
    #[arg(long, default_value = "example.com", value_parser = |s: &str| DomainPicker::parse(s))]
    domains: DomainPicker,
    /// Recipients per message, each with a domain drawn from --domains.
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u32).range(1..=1000))]
    recipients: u32,
    /// Total message rate limit in messages per second.
    #[arg(long, value_parser = parse_rate)]
    rate: Option<f64>,
    /// Upgrade every connection with STARTTLS (any certificate accepted).
    #[arg(long)]
    starttls: bool,
    /// TLS server name; defaults to the host part of --target.
    #[arg(long)]
    tls_server_name: Option<String>,
    /// EHLO name.
    #[arg(long, default_value = "loadgen.localhost")]
    helo: String,
    /// Envelope sender.
    #[arg(long, default_value = "loadgen@loadgen.localhost")]
    from: String,
    /// Local part of every recipient.
    #[arg(long, default_value = "loadgen")]
    rcpt_user: String,
    /// Timeout for connect and for each reply.
    #[arg(long, default_value = "30s", value_parser = parse_duration)]
    timeout: Duration,
    /// Write the summary as JSON to this file.
    #[arg(long)]
    json: Option<PathBuf>,
    /// Write per-second samples (second,ok,failed,p50_ms,p99_ms) as CSV.
    #[arg(long)]
    csv: Option<PathBuf>,
    /// Append every id from `250 OK ids=...` replies to this file, one per line.
    #[arg(long)]
    ids_out: Option<PathBuf>,
    /// Do not show the progress bar.
    #[arg(long, short)]
    quiet: bool,
    /// Exit 0 even when some messages failed (failures are still reported).
    #[arg(long)]
    keep_going: bool,
    /// Allow a non-loopback --target.
    #[arg(long)]
    allow_remote: bool,
}

fn parse_duration(s: &str) -> Result<Duration, String> {
    let d = humantime::parse_duration(s).map_err(|e| e.to_string())?;
    if d.is_zero() {
        return Err("duration must be positive".to_owned());
    }
    Ok(d)
}

fn parse_rate(s: &str) -> Result<f64, String> {
    match s.parse::<f64>() {
        Ok(r) if r.is_finite() && r > 0.0 => Ok(r),
        _ => Err(format!("invalid rate {s:?}: expected a positive number")),
    }
}

/// Resolves the target and enforces the loopback-only default, so a typo
/// cannot point a load test at someone else's server.
async fn resolve_target(target: &str, allow_remote: bool) -> anyhow::Result<SocketAddr> {
    let addrs: Vec<SocketAddr> = tokio::net::lookup_host(target)
        .await
        .with_context(|| format!("resolving --target {target:?}"))?
        .collect();
    let Some(first) = addrs.first().copied() else {
        bail!("--target {target:?} resolved to no address");
    };
    if !allow_remote && !addrs.iter().all(|a| a.ip().to_canonical().is_loopback()) {
        bail!("--target {target} is not a loopback address; pass --allow-remote to drive it");
    }
    Ok(first)
}

fn target_host(target: &str) -> String {
    let host = target.rsplit_once(':').map_or(target, |(h, _)| h);
    host.trim_start_matches('[')
        .trim_end_matches(']')
        .to_owned()
}

async fn execute(args: Args) -> anyhow::Result<bool> {
    let addr = resolve_target(&args.target, args.allow_remote).await?;
    let limit = match (args.messages, args.duration) {
        (Some(n), _) => Limit::Messages(n),
        (None, Some(d)) => Limit::Duration(d),
        (None, None) => bail!("one of --messages or --duration is required"),
    };
    let tls = if args.starttls {
        let connector = tls::insecure_tls_connector().context("building the TLS client config")?;
        let name = args
            .tls_server_name
            .clone()
            .unwrap_or_else(|| target_host(&args.target));
        Some((connector, name))
    } else {
        None
    };
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    let meta = RunMeta {
        target: addr.to_string(),
        connections: args.connections as usize,
        body_bytes: args.size,
        recipients_per_message: args.recipients as usize,
        starttls: args.starttls,
        rate_limit: args.rate,
        cores,
    };
    let cfg = Config {
        addr,
        connections: args.connections as usize,
        limit,
        rate: args.rate,
        tls,
        body: build_body(args.size, &args.from),
        helo: args.helo,
        from: args.from,
        rcpt_user: args.rcpt_user,
        recipients: args.recipients as usize,
        domains: args.domains,
        timeout: args.timeout,
        ids_out: args.ids_out,
        progress: !args.quiet && std::io::stdout().is_terminal(),
    };
    let summary = run::run(cfg, meta).await?;
    summary.print(&mut std::io::stdout().lock())?;
    if let Some(path) = &args.json {
        summary.write_json(path)?;
    }
    if let Some(path) = &args.csv {
        summary.write_csv(path)?;
    }
    Ok(summary.messages_failed == 0 || args.keep_going)
}

fn main() -> ExitCode {
    let args = Args::parse();
    tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn")),
        )
        .init();
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("hermod-loadgen: starting the runtime: {e}");
            return ExitCode::from(EXIT_ERROR);
        }
    };
    match runtime.block_on(execute(args)) {
        Ok(true) => ExitCode::SUCCESS,
        Ok(false) => {
            eprintln!("hermod-loadgen: some messages failed");
            ExitCode::from(EXIT_FAILURES)
        }
        Err(e) => {
            eprintln!("hermod-loadgen: {e:#}");
            ExitCode::from(EXIT_ERROR)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn non_loopback_targets_are_refused_without_allow_remote() {
        let err = resolve_target("192.0.2.1:25", false).await.unwrap_err();
        assert!(err.to_string().contains("--allow-remote"), "{err}");
        assert!(resolve_target("192.0.2.1:25", true).await.is_ok());
        assert!(resolve_target("127.0.0.1:25", false).await.is_ok());
        assert!(resolve_target("[::1]:25", false).await.is_ok());
    }

    #[test]
    fn tls_server_name_defaults_to_target_host() {
        assert_eq!(target_host("localhost:2525"), "localhost");
        assert_eq!(target_host("[::1]:2525"), "::1");
    }

    #[test]
    fn a_bound_is_required() {
        assert!(Args::try_parse_from(["hermod-loadgen"]).is_err());
        assert!(Args::try_parse_from(["hermod-loadgen", "--messages", "1"]).is_ok());
        assert!(Args::try_parse_from(["hermod-loadgen", "--duration", "0s"]).is_err());
        assert!(
            Args::try_parse_from(["hermod-loadgen", "--messages", "1", "--duration", "1s"])
                .is_err()
        );
    }
}
