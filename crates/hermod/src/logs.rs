use std::process::ExitCode;

use anyhow::Context;
use hermod_logging::{RecordType, TailOptions};

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
    let stdout = std::io::stdout();
    let mut out = stdout.lock();
    hermod_logging::tail(opts, &mut out).context("reading log segments")?;
    Ok(ExitCode::SUCCESS)
}
