use std::path::PathBuf;

use clap::{Args, Parser, Subcommand, ValueEnum};

pub use crate::admin_cli::{
    ApiArgs, BounceArgs, CancelArgs, InspectArgs, SuspendArgs, SuspendReadyArgs,
};
pub use crate::admin_queue_cli::{InspectReadyArgs, InspectSchedArgs, LogFilterArgs, RebindArgs};

#[derive(Parser)]
#[command(
    name = "hermod",
    version,
    about = "Hermod: a durable MTA with a KumoMTA-compatible Lua policy API"
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Subcommand)]
pub enum Command {
    /// Run the server: load the policy, start what it configures, serve until SIGINT/SIGTERM.
    Serve(ServeArgs),
    /// Load a policy and run pre_init/init without binding or connecting; report errors as file:line.
    Check(CheckArgs),
    /// Read local log segments.
    Logs(LogsArgs),
    /// Ready queues (depth, sessions, suspended or paused) and scheduled queues (waiting).
    QueueSummary(ApiArgs),
    /// Hold matching scheduled queues: their messages wait without using attempts.
    Suspend(SuspendArgs),
    /// List scheduled-queue and ready-queue suspensions.
    SuspendList(ApiArgs),
    /// Cancel a suspension (either kind) by id.
    SuspendCancel(CancelArgs),
    /// Hold a ready queue's delivery sessions.
    SuspendReadyQ(SuspendReadyArgs),
    /// Bounce matching queued messages (AdminBounce records), and new ones for a while.
    Bounce(BounceArgs),
    /// List administrative bounces with what each has bounced.
    BounceList(ApiArgs),
    /// Cancel an administrative bounce by id.
    BounceCancel(CancelArgs),
    /// Show a spooled message's envelope, meta and (with --want-body) content.
    InspectMessage(InspectArgs),
    /// Watch rates, queues, connections and broker latency live (polls /metrics; q quits).
    Top(crate::top::TopArgs),
    /// Move matching queued messages to the queue new meta gives (AdminRebind records).
    Rebind(RebindArgs),
    /// Show a scheduled queue: its config and a sample of its waiting messages.
    InspectSchedQ(InspectSchedArgs),
    /// Show a ready queue: its source, pool, state, limits and a sample of its messages.
    InspectReadyQ(InspectReadyArgs),
    /// Change the server's diagnostic log filter (HERMOD_LOG syntax) while it runs.
    SetLogFilter(LogFilterArgs),
}

#[derive(Clone, Copy, Debug, ValueEnum, Default)]
pub enum LegacyArg {
    /// Constructors that use the global `message` and return nothing deliver that message.
    #[default]
    Auto,
    /// Pure KumoMTA behaviour.
    Off,
}

#[derive(Args)]
pub struct ServeArgs {
    /// Policy file; without it an embedded policy delivers local mail into a Maildir under the data dir.
    #[arg(long)]
    pub policy: Option<PathBuf>,
    /// Where the default spool, logs and Maildir live.
    #[arg(long, default_value = "./data")]
    pub data_dir: PathBuf,
    /// Default ESMTP listener address, used when the policy starts none.
    #[arg(long)]
    pub smtp_listen: Option<String>,
    /// Default HTTP listener address, used when the policy starts none.
    #[arg(long)]
    pub http_listen: Option<String>,
    /// Legacy custom_lua constructor handling (also env HERMOD_LEGACY_CONSTRUCTORS).
    #[arg(
        long,
        value_enum,
        env = "HERMOD_LEGACY_CONSTRUCTORS",
        default_value = "auto"
    )]
    pub legacy_constructors: LegacyArg,
    /// BENCHMARKS ONLY: acknowledge messages without fsyncing the spool, to
    /// measure what group commit costs. A crash can lose acknowledged mail.
    #[arg(long, hide = true)]
    pub unsafe_no_fsync: bool,
    /// Longest a Lua handler may run without yielding before it is stopped (infinite loops).
    #[arg(long, env = "HERMOD_HANDLER_TIME_LIMIT", value_parser = humantime::parse_duration, default_value = "60s")]
    pub handler_time_limit: std::time::Duration,
    /// Idle timeout of delivery sessions (default 5s, as KumoMTA).
    #[arg(long, env = "HERMOD_SESSION_IDLE_TIMEOUT", value_parser = humantime::parse_duration)]
    pub session_idle_timeout: Option<std::time::Duration>,
    /// TESTS ONLY: look for idle queues this often and reap ready queues idle this long
    /// (default: every minute; ready queues after 10 minutes, scheduled queues after their
    /// `reap_interval`).
    #[arg(long, hide = true, value_parser = humantime::parse_duration)]
    pub queue_reap_interval: Option<std::time::Duration>,
    /// Answer every DNS query from this zone file instead of the system resolver (offline
    /// labs and tests); repeatable. The same as the policy calling
    /// `kumo.dns.configure_test_resolver` with the files' text.
    #[arg(long, value_name = "FILE")]
    pub dns_zone_file: Vec<PathBuf>,
}

#[derive(Args)]
pub struct CheckArgs {
    #[arg(long)]
    pub policy: PathBuf,
    /// Machine-readable output: {"ok": bool, "errors": [{"file","line","message"}]}.
    #[arg(long)]
    pub json: bool,
    /// Answer DNS from this zone file, as `hermod serve --dns-zone-file` does.
    #[arg(long, value_name = "FILE")]
    pub dns_zone_file: Vec<PathBuf>,
}

#[derive(Args)]
pub struct LogsArgs {
    #[command(subcommand)]
    pub command: LogsCommand,
}

#[derive(Subcommand)]
pub enum LogsCommand {
    /// Print log records, oldest first, including the segment being written.
    Tail(TailArgs),
}

#[derive(Args)]
pub struct TailArgs {
    /// Log directory (default: <data-dir>/logs).
    #[arg(long)]
    pub dir: Option<PathBuf>,
    #[arg(long, default_value = "./data")]
    pub data_dir: PathBuf,
    /// Keep printing new records.
    #[arg(long, short)]
    pub follow: bool,
    /// Only records of this type (repeatable), e.g. Bounce.
    #[arg(long = "type")]
    pub types: Vec<String>,
    /// Only records from this long ago, e.g. 10m.
    #[arg(long, value_parser = humantime::parse_duration)]
    pub since: Option<std::time::Duration>,
    /// Raw JSON lines.
    #[arg(long)]
    pub json: bool,
}
