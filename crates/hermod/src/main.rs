//! `hermod`: the mail transfer agent's command line.

mod admin_cli;
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
    };
    match result {
        Ok(code) => code,
        Err(e) => {
            eprintln!("hermod: {e:#}");
            std::process::ExitCode::FAILURE
        }
    }
}

/// Diagnostics go to stderr; `HERMOD_LOG` (or `KUMOD_LOG`) sets the filter.
/// Colour only when stderr is a terminal and `NO_COLOR` is unset: escape codes in a log file,
/// a pipe or journald make the lines hard to read and to grep.
fn init_tracing() {
    use std::io::IsTerminal;
    let filter = std::env::var("HERMOD_LOG")
        .or_else(|_| std::env::var("KUMOD_LOG"))
        .unwrap_or_else(|_| "info".into());
    let colour = std::io::stderr().is_terminal()
        && std::env::var_os("NO_COLOR").is_none_or(|v| v.is_empty());
    let _ = tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::new(filter))
        .with_ansi(colour)
        .with_writer(std::io::stderr)
        .try_init();
}
