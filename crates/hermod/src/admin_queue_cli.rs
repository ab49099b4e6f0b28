//! The operator verbs that move or show queued messages and change the
//! diagnostic log (`hermod rebind`, `inspect-sched-q`, `inspect-ready-q`,
//! `set-log-filter`), beside the others in crates/hermod/src/admin_cli.rs,
//! whose plumbing they share.

use std::io::IsTerminal;
use std::process::ExitCode;
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use clap::Args;
use serde_json::{json, Value};

use crate::admin_cli::{print_json, s, Api, ApiArgs, TargetArgs};

#[derive(Args)]
pub struct RebindArgs {
    #[command(flatten)]
    pub api: ApiArgs,
    #[command(flatten)]
    pub target: TargetArgs,
    /// Logged in each moved message's AdminRebind record.
    #[arg(long)]
    pub reason: String,
    /// A JSON object of string keys and values: the meta to set, or what the
    /// policy's rebind_message event is given.
    #[arg(long)]
    pub data: Option<String>,
    /// One more key=value of data (repeatable), e.g. --set queue=other.example.
    #[arg(long = "set", value_name = "KEY=VALUE", value_parser = key_value)]
    pub set: Vec<(String, String)>,
    /// Make every matched message due now, not only those that changed queue.
    #[arg(long)]
    pub always_flush: bool,
    /// Write no AdminRebind records.
    #[arg(long)]
    pub suppress_logging: bool,
    /// Hand each message and the data to the policy's rebind_message event
    /// instead of setting the data as meta.
    #[arg(long)]
    pub trigger_rebind_event: bool,
}

fn key_value(arg: &str) -> Result<(String, String), String> {
    match arg.split_once('=') {
        Some((k, v)) if !k.trim().is_empty() => Ok((k.trim().into(), v.trim().into())),
        _ => Err(format!("expected KEY=VALUE, got {arg:?}")),
    }
}

#[derive(Args)]
pub struct InspectSchedArgs {
    #[command(flatten)]
    pub api: ApiArgs,
    /// The scheduled queue's name, as queue-summary lists it.
    pub queue_name: String,
    /// Include each message's content.
    #[arg(long)]
    pub want_body: bool,
    /// How many messages to show.
    #[arg(long, default_value_t = 5)]
    pub limit: usize,
    /// Show every message (can be large, with --want-body especially).
    #[arg(long, conflicts_with = "limit")]
    pub no_limit: bool,
}

#[derive(Args)]
pub struct InspectReadyArgs {
    #[command(flatten)]
    pub api: ApiArgs,
    /// The ready queue's name, as queue-summary lists it.
    pub queue_name: String,
    /// Also list the scheduled queues that feed it.
    #[arg(long)]
    pub sched_q: bool,
    /// How many of its messages to show.
    #[arg(long, default_value_t = 5)]
    pub limit: usize,
    /// Include each message's content.
    #[arg(long)]
    pub want_body: bool,
}

#[derive(Args)]
pub struct LogFilterArgs {
    #[command(flatten)]
    pub api: ApiArgs,
    /// A filter in HERMOD_LOG's syntax, e.g. `info,hermod_queue=debug`.
    pub filter: String,
}

/// A spinner on stderr while a request runs, when stderr is a terminal;
/// nothing otherwise, so scripts and pipes get clean output.
pub(crate) fn spinner(what: &str) -> Option<indicatif::ProgressBar> {
    if !std::io::stderr().is_terminal() {
        return None;
    }
    let pb = indicatif::ProgressBar::new_spinner();
    pb.set_message(what.to_string());
    pb.tick();
    pb.enable_steady_tick(Duration::from_millis(100));
    Some(pb)
}

/// An operation whose count has not moved this long is left to run unwatched.
const STALLED: Duration = Duration::from_secs(30);

/// A background operation the CLI can follow: where it is listed and
/// what its entry counts.
pub(crate) struct Follow<'a> {
    pub list: &'a str,
    pub count: &'a str,
    /// What leaving the list means: finished (a rebind) or stopped (a bounce).
    pub gone_means_done: bool,
    /// `bounced`, `rebound`.
    pub verb: &'a str,
}

/// On a terminal, a progress bar of a background operation (a bounce's
/// sweep, a rebind), fed by its list entry's count, until it reaches
/// `matched`, the entry is gone, or the count stops moving; nothing
/// otherwise, so scripts and pipes get clean output.
pub(crate) async fn follow(api: &Api, f: Follow<'_>, id: &str, matched: u64) -> anyhow::Result<()> {
    if matched == 0 || !std::io::stderr().is_terminal() {
        return Ok(());
    }
    let pb = indicatif::ProgressBar::new(matched);
    let template = format!(
        "{{bar:40}} {{pos}}/{{len}} {} ({{per_sec}}, {{eta}} left)",
        f.verb
    );
    let style = indicatif::ProgressStyle::with_template(&template)
        .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar());
    pb.set_style(style);
    let (mut done, mut moved) = (0, Instant::now());
    loop {
        let list = api.call(reqwest::Method::GET, f.list, None).await?;
        let now = list
            .as_array()
            .and_then(|l| l.iter().find(|e| s(&e["id"]) == id))
            .map(|e| e[f.count].as_u64().unwrap_or(0));
        let Some(now) = now else {
            if f.gone_means_done {
                done = matched;
            }
            break;
        };
        if now != done {
            (done, moved) = (now, Instant::now());
        }
        pb.set_position(done.min(matched));
        if done >= matched || moved.elapsed() > STALLED {
            break;
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    pb.finish_and_clear();
    eprintln!("{} {done} of {matched} queued messages", f.verb);
    Ok(())
}

pub async fn rebind(a: RebindArgs) -> anyhow::Result<ExitCode> {
    let mut data: serde_json::Map<String, Value> = match &a.data {
        None => serde_json::Map::new(),
        Some(text) => match serde_json::from_str::<Value>(text)
            .with_context(|| format!("--data {text:?} is not JSON"))?
        {
            Value::Object(o) => o,
            other => bail!("--data must be a JSON object of strings, got {other}"),
        },
    };
    for (k, v) in &a.set {
        data.insert(k.clone(), json!(v));
    }
    let api = Api::new(&a.api)?;
    let mut body = a.target.to_json();
    body.insert("reason".into(), json!(a.reason));
    body.insert("data".into(), Value::Object(data));
    body.insert("always_flush".into(), json!(a.always_flush));
    body.insert("suppress_logging".into(), json!(a.suppress_logging));
    body.insert("trigger_rebind_event".into(), json!(a.trigger_rebind_event));
    let pb = spinner("taking the matching messages");
    let v = api
        .call(
            reqwest::Method::POST,
            "/api/admin/rebind/v1",
            Some(Value::Object(body)),
        )
        .await;
    if let Some(pb) = pb {
        pb.finish_and_clear();
    }
    let v = v?;
    if a.api.json {
        print_json(&v);
        return Ok(ExitCode::SUCCESS);
    }
    let matched = v["matched"].as_u64().unwrap_or(0);
    println!(
        "rebinding {matched} messages in the background (AdminRebind records follow for those that change queue)"
    );
    let f = Follow {
        list: "/api/admin/rebind/v1",
        count: "done",
        gone_means_done: true,
        verb: "rebound",
    };
    follow(&api, f, s(&v["id"]), matched).await?;
    Ok(ExitCode::SUCCESS)
}

/// One message of an inspect answer, as one line.
fn message_line(m: &Value) -> String {
    let msg = &m["message"];
    let rcpt = match &msg["recipient"] {
        Value::Array(a) => a.iter().map(s).collect::<Vec<_>>().join(","),
        r => s(r).to_string(),
    };
    let queue = msg["meta"]["queue"].as_str().unwrap_or("-");
    format!(
        "{}  {} -> {}  attempts {}  due {}  meta.queue {}",
        s(&m["id"]),
        s(&msg["sender"]),
        rcpt,
        msg["num_attempts"].as_u64().unwrap_or(0),
        msg["due"].as_str().unwrap_or("now"),
        queue
    )
}

pub async fn inspect_sched_q(a: InspectSchedArgs) -> anyhow::Result<ExitCode> {
    let api = Api::new(&a.api)?;
    let limit = a.limit.to_string();
    let mut query = vec![
        ("queue_name", a.queue_name.as_str()),
        ("want_body", if a.want_body { "true" } else { "false" }),
    ];
    if !a.no_limit {
        query.push(("limit", limit.as_str()));
    }
    let v = api
        .call_with(
            reqwest::Method::GET,
            "/api/admin/inspect-sched-q/v1",
            &query,
            None,
        )
        .await?;
    if a.api.json || a.want_body {
        print_json(&v);
        return Ok(ExitCode::SUCCESS);
    }
    println!(
        "scheduled queue {}: {} waiting",
        s(&v["queue_name"]),
        v["num_scheduled"].as_u64().unwrap_or(0)
    );
    for m in v["messages"].as_array().into_iter().flatten() {
        println!("{}", message_line(m));
    }
    Ok(ExitCode::SUCCESS)
}

pub async fn inspect_ready_q(a: InspectReadyArgs) -> anyhow::Result<ExitCode> {
    let api = Api::new(&a.api)?;
    let limit = a.limit.to_string();
    let query = [
        ("queue_name", a.queue_name.as_str()),
        (
            "include_scheduled_queues",
            if a.sched_q { "true" } else { "false" },
        ),
        ("limit", limit.as_str()),
        ("want_body", if a.want_body { "true" } else { "false" }),
    ];
    let v = api
        .call_with(
            reqwest::Method::GET,
            "/api/admin/inspect-ready-q/v1",
            &query,
            None,
        )
        .await?;
    if a.api.json || a.want_body {
        print_json(&v);
        return Ok(ExitCode::SUCCESS);
    }
    let st = &v["state"];
    println!(
        "ready queue {}  protocol {}  source {}  pool {}",
        s(&v["queue_name"]),
        s(&v["protocol"]),
        s(&v["egress_source"]),
        s(&v["egress_pool"])
    );
    println!(
        "queued {}  connections {}  connection_limit {}",
        st["ready_count"].as_u64().unwrap_or(0),
        st["connection_count"].as_u64().unwrap_or(0),
        st["connection_limit"]
            .as_u64()
            .map_or("-".to_string(), |n| n.to_string())
    );
    for (name, c) in st["conditions"].as_object().into_iter().flatten() {
        println!("{name} since {}: {}", s(&c["since"]), s(&c["context"]));
    }
    if let Some(names) = v["scheduled_queue_names"].as_array() {
        let names: Vec<&str> = names.iter().map(s).collect();
        println!("fed by: {}", names.join(", "));
    }
    for m in v["messages"].as_array().into_iter().flatten() {
        println!("{}", message_line(m));
    }
    Ok(ExitCode::SUCCESS)
}

pub async fn set_log_filter(a: LogFilterArgs) -> anyhow::Result<ExitCode> {
    let api = Api::new(&a.api)?;
    api.call(
        reqwest::Method::POST,
        "/api/admin/set_diagnostic_log_filter/v1",
        Some(json!({ "filter": a.filter })),
    )
    .await?;
    if a.api.json {
        print_json(&json!({ "filter": a.filter }));
    } else {
        println!("diagnostic log filter set to {}", a.filter);
    }
    Ok(ExitCode::SUCCESS)
}
