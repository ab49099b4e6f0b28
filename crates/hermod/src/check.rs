//! `hermod check`: load a policy in validation mode and report problems as
//! `file:line: message`, for people and (with --json) for editors and CI.

use std::process::ExitCode;

use hermod_policy::mlua::Value;
use hermod_policy::{Engine, EngineOptions};

use crate::cli::CheckArgs;

#[derive(serde::Serialize)]
struct Problem {
    file: Option<String>,
    line: Option<u32>,
    message: String,
}

/// Split a leading `file:line:` off an error text.
fn locate(text: &str) -> Problem {
    let trimmed = text.trim();
    let mut parts = trimmed.splitn(3, ':');
    if let (Some(file), Some(line), Some(rest)) = (parts.next(), parts.next(), parts.next()) {
        if let Ok(n) = line.trim().parse::<u32>() {
            return Problem {
                file: Some(file.trim().to_string()),
                line: Some(n),
                message: rest.trim().to_string(),
            };
        }
    }
    Problem {
        file: None,
        line: None,
        message: trimmed.to_string(),
    }
}

async fn problems(args: &CheckArgs) -> Vec<Problem> {
    let mut opts = EngineOptions::new(&args.policy);
    opts.validating = true;
    opts.registrars = crate::serve::registrars();
    let engine = match Engine::start(opts).await {
        Ok((e, _)) => e,
        Err(e) => {
            let text = match &e {
                hermod_policy::PolicyError::Event { message, .. } => message.clone(),
                other => other.to_string(),
            };
            return vec![locate(&text)];
        }
    };
    let mut out = Vec::new();
    if let Err(e) = engine.call::<Value>("validate_config", ()).await {
        out.push(locate(&e.to_string()));
    }
    // Exercise the catch-all routing so a typo in make_queue_config there is
    // caught before the first message would hit it.
    if let Err(e) = engine
        .call::<Value>(
            "get_queue_config",
            ("hermod-check.invalid", Value::Nil, Value::Nil, Value::Nil),
        )
        .await
    {
        out.push(locate(&e.to_string()));
    }
    // Likewise the shaping catch-all: make_egress_path is nearly always called there, and a
    // key Hermod refuses would otherwise surface only at the first outbound connection.
    if let Err(e) = engine
        .call::<Value>(
            "get_egress_path_config",
            (
                "hermod-check.invalid",
                "unspecified",
                "hermod-check.invalid",
            ),
        )
        .await
    {
        out.push(locate(&e.to_string()));
    }
    out
}

pub async fn run(args: CheckArgs) -> anyhow::Result<ExitCode> {
    crate::serve::install_crypto();
    crate::serve::use_dns_zone_files(&args.dns_zone_file)?;
    let found = problems(&args).await;
    if args.json {
        let v = serde_json::json!({ "ok": found.is_empty(), "errors": found });
        println!("{v}");
    } else if found.is_empty() {
        println!("{}: OK", args.policy.display());
    } else {
        for p in &found {
            match (&p.file, p.line) {
                (Some(f), Some(l)) => println!("{f}:{l}: {}", p.message),
                _ => println!("{}: {}", args.policy.display(), p.message),
            }
        }
    }
    Ok(if found.is_empty() {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}
