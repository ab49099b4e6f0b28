use std::io::IsTerminal;
use std::process::ExitCode;

use anyhow::Context;
use hermod_logging::{RecordType, TailOptions};
use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};

use crate::cli::{LogsArgs, LogsCommand};

pub fn run(args: LogsArgs) -> anyhow::Result<ExitCode> {
    let LogsCommand::Tail(t) = args.command;
    let types = t
        .types
        .iter()
        .map(|s| s.parse::<RecordType>().map_err(|e| anyhow::anyhow!("{e}")))
        .collect::<anyhow::Result<Vec<_>>>()?;
    let opts = TailOptions {
        log_dir: t.dir.unwrap_or_else(|| t.data_dir.join("logs")),
        follow: t.follow,
        types,
        since: t.since,
        json: t.json,
    };
    let bar = segment_bar();
    let stdout = std::io::stdout();
    let mut out = stdout.lock();
    let progress = |done: usize, total: usize| {
        if let Some(bar) = &bar {
            bar.set_length(total as u64);
            bar.set_position(done as u64);
            if done == total {
                bar.finish_and_clear();
            }
        }
    };
    hermod_logging::tail_reporting(opts, &mut out, &|| false, &progress)
        .context("reading log segments")?;
    Ok(ExitCode::SUCCESS)
}

/// A bar counting the segments read, on stderr, when a person watches stderr while the
/// records go elsewhere (`hermod logs tail > file`). When the records themselves scroll on
/// the terminal they show the progress, and a pipe or a file gets no bar at all.
fn segment_bar() -> Option<ProgressBar> {
    if !std::io::stderr().is_terminal() || std::io::stdout().is_terminal() {
        return None;
    }
    let bar = ProgressBar::with_draw_target(Some(0), ProgressDrawTarget::stderr());
    let style = ProgressStyle::with_template("reading log segments {bar:30} {pos}/{len}")
        .unwrap_or_else(|_| ProgressStyle::default_bar());
    bar.set_style(style);
    Some(bar)
}
