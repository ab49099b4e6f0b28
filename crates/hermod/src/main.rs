//! `hermod`: the mail transfer agent's command line.

mod admin_cli;
mod admin_queue_cli;
mod check;
mod cli;
mod logs;
mod serve;
mod top;

use clap::Parser;

// glibc malloc showed up as ~13% of the server's CPU under load (perf, see
// BENCHMARKS.md); mimalloc's thread-local free lists avoid most of that.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> std::process::ExitCode {
    let cli = cli::Cli::parse();
    init_tracing();
    let rt = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("hermod: cannot start the async runtime: {e}");
            return std::process::ExitCode::FAILURE;
        }
    };
    let result = match cli.command {
        cli::Command::Serve(args) => rt.block_on(serve::run(args)),
        cli::Command::Check(args) => rt.block_on(check::run(args)),
        cli::Command::Logs(args) => logs::run(args),
        cli::Command::QueueSummary(a) => rt.block_on(admin_cli::queue_summary(a)),
        cli::Command::Suspend(a) => rt.block_on(admin_cli::suspend(a)),
        cli::Command::SuspendList(a) => rt.block_on(admin_cli::suspend_list(a)),
        cli::Command::SuspendCancel(a) => rt.block_on(admin_cli::suspend_cancel(a)),
        cli::Command::SuspendReadyQ(a) => rt.block_on(admin_cli::suspend_ready(a)),
        cli::Command::Bounce(a) => rt.block_on(admin_cli::bounce(a)),
        cli::Command::BounceList(a) => rt.block_on(admin_cli::bounce_list(a)),
        cli::Command::BounceCancel(a) => rt.block_on(admin_cli::bounce_cancel(a)),
        cli::Command::InspectMessage(a) => rt.block_on(admin_cli::inspect_message(a)),
        cli::Command::Top(a) => rt.block_on(top::run(a)),
        cli::Command::Rebind(a) => rt.block_on(admin_queue_cli::rebind(a)),
        cli::Command::InspectSchedQ(a) => rt.block_on(admin_queue_cli::inspect_sched_q(a)),
        cli::Command::InspectReadyQ(a) => rt.block_on(admin_queue_cli::inspect_ready_q(a)),
        cli::Command::SetLogFilter(a) => rt.block_on(admin_queue_cli::set_log_filter(a)),
    };
    match result {
        Ok(code) => code,
        Err(e) => {
            eprintln!("hermod: {e:#}");
            std::process::ExitCode::FAILURE
        }
    }
}

/// Diagnostics go to stderr; `HERMOD_LOG` (or `KUMOD_LOG`) sets the filter,
/// which the admin API and `kumo.set_diagnostic_log_filter` may change later
/// (crates/policy/src/diagnostic_log.rs).
/// Colour only when stderr is a terminal and `NO_COLOR` is unset: escape codes in a log file,
/// a pipe or journald make the lines hard to read and to grep.
fn init_tracing() {
    use std::io::IsTerminal;
    use tracing_subscriber::layer::SubscriberExt;
    use tracing_subscriber::util::SubscriberInitExt;
    use tracing_subscriber::{fmt, reload, EnvFilter};
    let filter = std::env::var("HERMOD_LOG")
        .or_else(|_| std::env::var("KUMOD_LOG"))
        .unwrap_or_else(|_| "info".into());
    let colour = std::io::stderr().is_terminal()
        && std::env::var_os("NO_COLOR").is_none_or(|v| v.is_empty());
    let (filter, handle) = reload::Layer::new(EnvFilter::new(filter));
    let installed = tracing_subscriber::registry()
        .with(filter)
        .with(fmt::layer().with_ansi(colour).with_writer(std::io::stderr))
        .try_init()
        .is_ok();
    if installed {
        hermod_policy::diagnostic_log::install(Box::new(move |spec| {
            let f = EnvFilter::try_new(spec).map_err(|e| e.to_string())?;
            handle.reload(f).map_err(|e| e.to_string())
        }));
    }
}
